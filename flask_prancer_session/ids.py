"""Session ids: how they are made, recognised, and hidden from stores."""

from __future__ import annotations

import hashlib
import re
import secrets

#: Random bytes in a new session id (256 bits).
ID_BYTES = 32

_WELL_FORMED = re.compile(r"[A-Za-z0-9_-]{43}")


def new_id() -> str:
    """Return a new session id: 256 random bits from :mod:`secrets`, URL-safe base64."""
    return secrets.token_urlsafe(ID_BYTES)


def is_well_formed(session_id: str) -> bool:
    """Tell whether ``session_id`` has the shape of an id made by :func:`new_id`.

    Checked before any store lookup, so garbage from a client never reaches a
    store, a file name or a query.
    """
    return _WELL_FORMED.fullmatch(session_id) is not None


def store_key(session_id: str) -> str:
    """Return the key a store files the session under: the SHA-256 hex digest of its id.

    Stores never see the id itself, so a leaked store or backup holds no usable
    cookie value, and every key is 64 characters of ``[0-9a-f]``.
    """
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


_STORE_KEY = re.compile(r"[0-9a-f]{64}")


def is_store_key(key: str) -> bool:
    """Tell whether ``key`` has the shape of a :func:`store_key`.

    Stores that turn keys into file names or key names check this first, so
    no key can ever point outside the store's own namespace.
    """
    return _STORE_KEY.fullmatch(key) is not None
