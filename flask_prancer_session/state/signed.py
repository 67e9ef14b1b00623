"""What the state drivers that carry a signed id share: signing, checking
and re-signing the id, wherever the request carries it."""

from __future__ import annotations

import abc
import functools
import hashlib
import typing as t

from itsdangerous import BadSignature
from itsdangerous import Signer

from ..ids import is_well_formed
from .base import StateDriver

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request

#: Longer values are ignored without being parsed: a signed id is 87 characters.
MAX_CARRIED_LENGTH = 256


class _Signer(Signer):
    """itsdangerous's signer, deriving each key once instead of per request."""

    def __init__(self, keys: list[str | bytes]) -> None:
        super().__init__(
            keys,  # type: ignore[arg-type]
            salt="flask-prancer-session",
            key_derivation="hmac",
            digest_method=hashlib.sha256,
        )
        self._derived: dict[str | bytes | None, bytes] = {}

    def derive_key(self, secret_key: str | bytes | None = None) -> bytes:
        key = self._derived.get(secret_key)
        if key is None:
            key = self._derived[secret_key] = super().derive_key(secret_key)
        return key


@functools.lru_cache(maxsize=8)
def _signer(keys: tuple[str | bytes, ...]) -> Signer:
    return _Signer(list(keys))


class SignedIdState(StateDriver):
    """Base class for state drivers that carry the id signed with the app's
    ``SECRET_KEY`` (``SECRET_KEY_FALLBACKS`` are accepted, for key rotation),
    so a forged id is refused before any store lookup. Without a secret key
    the id travels unsigned.

    Subclasses say where the request carries the value (:meth:`carried`) and
    put :meth:`sign`'s result in the response.
    """

    @abc.abstractmethod
    def carried(self, request: Request) -> str | None:
        """Return the value the request carries, as the client sent it."""

    def _signer(self, app: Flask) -> Signer | None:
        if not app.secret_key:
            return None
        keys: list[str | bytes] = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
        keys.append(app.secret_key)  # itsdangerous signs with the last key
        return _signer(tuple(keys))

    def sign(self, app: Flask, session_id: str) -> str:
        """Return ``session_id`` as the client is to carry it."""
        signer = self._signer(app)
        return session_id if signer is None else signer.sign(session_id).decode("ascii")

    def extract(self, app: Flask, request: Request) -> str | None:
        value = self.carried(request)
        return None if value is None else self.id_from(app, value)

    def id_from(self, app: Flask, value: str) -> str | None:
        """Return the id ``value`` carries, if it is intact."""
        if not value or len(value) > MAX_CARRIED_LENGTH or not value.isascii():
            return None
        signer = self._signer(app)
        if signer is not None:
            try:
                value = signer.unsign(value).decode("ascii")
            except BadSignature:
                return None
        return value if is_well_formed(value) else None

    def needs_refresh(self, app: Flask, request: Request, session_id: str) -> bool:
        """Re-sign an id that was signed with a key in ``SECRET_KEY_FALLBACKS``."""
        if not app.config.get("SECRET_KEY_FALLBACKS"):
            return False
        return self.carried(request) != self.sign(app, session_id)
