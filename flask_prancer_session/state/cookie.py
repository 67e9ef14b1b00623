"""The session id in a signed cookie, named ``PSESSION`` by default; its
options fall back to Flask's ``SESSION_COOKIE_*`` settings (see the manual's
configuration page)."""

from __future__ import annotations

import math
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

from ..errors import ConfigurationError
from .signed import SignedIdState

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

_SAMESITE = {"lax": "Lax", "strict": "Strict", "none": "None"}


class CookieState(SignedIdState):
    """Carry the session id in a cookie; the manual's configuration page lists the options."""

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

    def carried(self, request: Request) -> str | None:
        return request.cookies.get(self.name)

    def finalize(
        self,
        app: Flask,
        response: Response,
        session_id: str,
        *,
        expires: datetime,
        persistent: bool,
    ) -> None:
        value = self.sign(app, session_id)
        cookie_expires: datetime | None = expires if persistent else None
        if self.expires is not None and not persistent:
            cookie_expires = min(
                expires, datetime.now(timezone.utc) + timedelta(seconds=self.expires)
            )
        response.set_cookie(self.name, value, expires=cookie_expires, **self._cookie_options(app))

    def expire(self, app: Flask, response: Response) -> None:
        response.delete_cookie(self.name, **self._cookie_options(app))
