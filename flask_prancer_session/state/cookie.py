"""The session id in a signed cookie.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "state": {"driver": "cookie", "options": {"session_key": "PSESSION", "secure": True}},
    }

The cookie holds the session id and nothing else. When the app has a
``SECRET_KEY`` the id is signed with :mod:`itsdangerous` (and
``SECRET_KEY_FALLBACKS`` are accepted, for key rotation), so a forged id is
rejected before any store lookup.

Options; each one not given falls back to Flask's own ``SESSION_COOKIE_*``
setting, read on every request as Flask does:

``session_key`` (alias ``key``)
    the cookie name, default ``PSESSION`` (this one does not fall back).
``path``, ``domain``, ``secure``, ``httponly``, ``samesite``, ``partitioned``
    the cookie attributes; defaults ``/``, none, off, on, ``Lax``, off.
``expires``
    seconds for which the cookie outlives the browser session, even for a
    session that is not permanent; never past the stored session's own expiry.
    Unset, the cookie ends with the browser session, unless the session is
    permanent (or has its own lifetime): then the cookie expires with it.
"""

from __future__ import annotations

import functools
import hashlib
import math
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from itsdangerous import BadSignature
from itsdangerous import Signer

from ..errors import ConfigurationError
from ..ids import is_well_formed
from .base import StateDriver

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

#: Longer cookie values are ignored without being parsed: a signed id is 87
#: characters.
MAX_COOKIE_LENGTH = 256

_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


class _Signer(Signer):
    """itsdangerous's signer, deriving each key once instead of per cookie."""

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


class CookieState(StateDriver):
    """Carry the session id in a cookie; see the module documentation for the options."""

    def __init__(
        self,
        *,
        session_key: str | None = None,
        key: str | None = None,
        path: str | None = None,
        domain: str | None = None,
        expires: float | None = None,
        secure: bool | None = None,
        httponly: bool | None = None,
        samesite: str | None = None,
        partitioned: bool | None = None,
    ) -> None:
        if session_key is not None and key is not None:
            raise ConfigurationError("give session_key or its alias key, not both", "key")
        name = session_key if session_key is not None else key
        if name is not None and (not isinstance(name, str) or not name.isidentifier()):
            raise ConfigurationError(
                f"must be a cookie name of letters, digits and '_', not {name!r}",
                "session_key" if session_key is not None else "key",
            )
        #: The cookie name. Unlike the other options it does not fall back to
        #: ``SESSION_COOKIE_NAME``, whose default belongs to Flask's own session.
        self.name = name or "PSESSION"
        for option, value in (("path", path), ("domain", domain)):
            if value is not None and not isinstance(value, str):
                raise ConfigurationError("must be a string", option)
        for option, flag in (
            ("secure", secure),
            ("httponly", httponly),
            ("partitioned", partitioned),
        ):
            if flag is not None and not isinstance(flag, bool):
                raise ConfigurationError("must be true or false", option)
        if expires is not None and (
            isinstance(expires, bool)
            or not isinstance(expires, (int, float))
            or not math.isfinite(expires)
            or expires <= 0
        ):
            raise ConfigurationError("must be a positive number of seconds", "expires")
        if samesite is not None:
            if not isinstance(samesite, str) or samesite.lower() not in _SAMESITE:
                raise ConfigurationError("must be 'Lax', 'Strict' or 'None'", "samesite")
            samesite = _SAMESITE[samesite.lower()]
            if samesite == "None" and secure is False:
                raise ConfigurationError(
                    "browsers drop SameSite=None cookies without secure", "samesite"
                )
        self.path = path
        self.domain = domain
        self.expires = expires
        self.secure = secure
        self.httponly = httponly
        self.samesite = samesite
        self.partitioned = partitioned

    def check_app(self, app: Flask) -> None:
        """Refuse cookie options that only make sense together with ``app``'s
        ``SESSION_COOKIE_*`` config: a ``SameSite=None`` cookie without
        ``Secure``, which browsers drop, so that no session would ever stick.

        :raise ConfigurationError: naming the option, or the Flask config key.
        """
        options = self._cookie_options(app)
        if options["samesite"] == "None" and not options["secure"]:
            key = "samesite" if self.samesite is not None else "SESSION_COOKIE_SAMESITE"
            raise ConfigurationError(
                "browsers drop SameSite=None cookies without secure; set secure: true"
                " (or SESSION_COOKIE_SECURE = True)",
                key,
            )

    def _cookie_options(self, app: Flask) -> dict[str, t.Any]:
        config = app.config
        return {
            "path": self.path or config["SESSION_COOKIE_PATH"] or config["APPLICATION_ROOT"],
            "domain": self.domain or config["SESSION_COOKIE_DOMAIN"] or None,
            "secure": config["SESSION_COOKIE_SECURE"] if self.secure is None else self.secure,
            "httponly": config["SESSION_COOKIE_HTTPONLY"]
            if self.httponly is None
            else self.httponly,
            "samesite": self.samesite or config["SESSION_COOKIE_SAMESITE"] or "Lax",
            "partitioned": (
                config.get("SESSION_COOKIE_PARTITIONED", False)
                if self.partitioned is None
                else self.partitioned
            ),
        }

    def _signer(self, app: Flask) -> Signer | None:
        if not app.secret_key:
            return None
        keys: list[str | bytes] = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
        keys.append(app.secret_key)  # itsdangerous signs with the last key
        return _signer(tuple(keys))

    def extract(self, app: Flask, request: Request) -> str | None:
        value = request.cookies.get(self.name)
        return None if value is None else self.id_from(app, value)

    def id_from(self, app: Flask, value: str) -> str | None:
        """Return the id a cookie value carries, if it is intact."""
        if not value or len(value) > MAX_COOKIE_LENGTH or not value.isascii():
            return None
        signer = self._signer(app)
        if signer is not None:
            try:
                value = signer.unsign(value).decode("ascii")
            except BadSignature:
                return None
        return value if is_well_formed(value) else None

    def finalize(
        self,
        app: Flask,
        response: Response,
        session_id: str,
        *,
        expires: datetime,
        persistent: bool,
    ) -> None:
        signer = self._signer(app)
        value = session_id if signer is None else signer.sign(session_id).decode("ascii")
        cookie_expires: datetime | None = expires if persistent else None
        if self.expires is not None and not persistent:
            cookie_expires = min(
                expires, datetime.now(timezone.utc) + timedelta(seconds=self.expires)
            )
        response.set_cookie(self.name, value, expires=cookie_expires, **self._cookie_options(app))

    def needs_refresh(self, app: Flask, request: Request, session_id: str) -> bool:
        """Re-sign a cookie that was signed with a key in ``SECRET_KEY_FALLBACKS``."""
        if not app.config.get("SECRET_KEY_FALLBACKS"):
            return False
        signer = self._signer(app)
        return signer is not None and request.cookies.get(self.name) != signer.sign(
            session_id
        ).decode("ascii")

    def expire(self, app: Flask, response: Response) -> None:
        response.delete_cookie(self.name, **self._cookie_options(app))
