"""Sessions as files in a private directory, Prancer's ``Storable`` store."""

from .store import StorableStore as StorableStore

__all__ = ["StorableStore"]
