from .changes import ChangeSet as ChangeSet
from .changes import Record as Record
from .encryption import Encryptor as Encryptor
from .errors import ConfigurationError as ConfigurationError
from .errors import PrancerSessionError as PrancerSessionError
from .errors import SessionStoreError as SessionStoreError
from .extension import PrancerSession as PrancerSession
from .interface import PrancerSessionInterface as PrancerSessionInterface
from .lifetime import no_refresh as no_refresh
from .session import ServerSession as ServerSession
from .session import session as session
from .state.base import StateDriver as StateDriver
from .state.cookie import CookieState as CookieState
from .state.header import HeaderState as HeaderState
from .store.base import StoreDriver as StoreDriver
from .store.memory import MemoryStore as MemoryStore
from .store.storable import StorableStore as StorableStore

__all__ = [
    "ChangeSet",
    "ConfigurationError",
    "CookieState",
    "Encryptor",
    "HeaderState",
    "MemoryStore",
    "PrancerSession",
    "PrancerSessionError",
    "PrancerSessionInterface",
    "Record",
    "ServerSession",
    "SessionStoreError",
    "StateDriver",
    "StorableStore",
    "StoreDriver",
    "no_refresh",
    "session",
]
