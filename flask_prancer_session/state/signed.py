"""What the state drivers that carry a signed id share: signing, checking
and re-signing the id, wherever the request carries it."""

from __future__ import annotations

import abc
import base64
import functools
import hmac
import typing as t

from ..ids import is_well_formed
from .base import StateDriver

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request

#: Longer values are ignored without being parsed: a signed id is 87 characters.
MAX_CARRIED_LENGTH = 256


#: itsdangerous's salt for these ids; with ``key_derivation="hmac"`` and
#: SHA-256, an ``itsdangerous.Signer`` signs and checks the same values.
SALT = b"flask-prancer-session"


class _Keys:
    """The app's secret keys, derived once, signing and checking ids as
    ``itsdangerous.Signer(keys, salt=SALT, key_derivation="hmac",
    digest_method=hashlib.sha256)`` does, at under half its cost per request
    (one ``hmac.digest`` call): the check runs on every request with a cookie."""

    __slots__ = ("_derived",)

    def __init__(self, secrets: tuple[str | bytes, ...]) -> None:
        # Newest first, as itsdangerous tries them: the last one signs.
        self._derived = [
            hmac.digest(secret.encode() if isinstance(secret, str) else secret, SALT, "sha256")
            for secret in reversed(secrets)
        ]

    def _signature(self, key: bytes, value: bytes) -> bytes:
        return base64.urlsafe_b64encode(hmac.digest(key, value, "sha256")).rstrip(b"=")

    def sign(self, value: str) -> str:
        data = value.encode("ascii")
        return f"{value}.{self._signature(self._derived[0], data).decode('ascii')}"

    def unsign(self, signed: str) -> str | None:
        value, dot, signature = signed.rpartition(".")
        if not dot:
            return None
        data, given = value.encode("ascii"), signature.encode("ascii")
        for key in self._derived:
            if hmac.compare_digest(self._signature(key, data), given):
                return value
        return None


@functools.lru_cache(maxsize=8)
def _keys(secrets: tuple[str | bytes, ...]) -> _Keys:
    return _Keys(secrets)


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

    def _signer(self, app: Flask) -> _Keys | None:
        secret = app.secret_key
        if not secret:
            return None
        fallbacks = app.config.get("SECRET_KEY_FALLBACKS")
        return _keys((*fallbacks, secret) if fallbacks else (secret,))

    def sign(self, app: Flask, session_id: str) -> str:
        """Return ``session_id`` as the client is to carry it."""
        signer = self._signer(app)
        return session_id if signer is None else signer.sign(session_id)

    def extract(self, app: Flask, request: Request) -> str | None:
        value = self.carried(request)
        return None if value is None else self.id_from(app, value)

    def extract_lazily(self, app: Flask, request: Request) -> t.Callable[[], str | None] | None:
        value = self.carried(request)
        return None if value is None else functools.partial(self.id_from, app, value)

    def id_from(self, app: Flask, value: str) -> str | None:
        """Return the id ``value`` carries, if it is intact."""
        if not value or len(value) > MAX_CARRIED_LENGTH or not value.isascii():
            return None
        signer = self._signer(app)
        if signer is not None:
            unsigned = signer.unsign(value)
            if unsigned is None:
                return None
            value = unsigned
        return value if is_well_formed(value) else None

    def needs_refresh(self, app: Flask, request: Request, session_id: str) -> bool:
        """Re-sign an id that was signed with a key in ``SECRET_KEY_FALLBACKS``."""
        if not app.config.get("SECRET_KEY_FALLBACKS"):
            return False
        return self.carried(request) != self.sign(app, session_id)
