"""Moving visitors over from Flask-Session on their first request (see the
manual's migration page)."""

from __future__ import annotations

import hashlib
import logging
import re
import typing as t

from flask import after_this_request
from flask import has_request_context
from flask import session as current_session
from flask.sessions import SessionInterface
from itsdangerous import BadSignature
from itsdangerous import Signer

from ..errors import ConfigurationError
from ..errors import SessionStoreError
from ..interface import PrancerSessionInterface
from ..interface import vary_on
from ..lifetime import LIFETIME_KEYS
from ..serializer import make_serializer
from ..serializer import Serializer
from .pickle_reader import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from .pickle_reader import MAX_VALUES as MAX_VALUES
from .pickle_reader import Placeholder as Placeholder
from .pickle_reader import read_pickle as read_pickle
from .pickle_reader import Unreadable as Unreadable

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Request
    from flask import Response

from .sources import Source
from .sources import SOURCES
from .values import session_values

logger = logging.getLogger(__package__ or __name__)

#: The values of ``SESSION_TYPE`` whose sessions can be moved over.
SESSION_TYPES = ("redis", "sqlalchemy", "filesystem", "cachelib")

#: What Flask-Session's ids (``secrets.token_urlsafe``) look like; anything
#: else is refused before any store lookup.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_COOKIE_LENGTH = 4096
#: Flask's cookie settings, which Flask-Session used for its cookie.
_FLASK_COOKIE = SessionInterface()


class FlaskSessionMigrator:
    """Move each visitor's Flask-Session 0.8 session into a new session on
    their first request; the manual's migration page says how.

    Built by :meth:`.PrancerSession.init_app` when ``PRANCER_SESSION`` has
    ``"migrate_from": "flask-session"``, and passed to
    :class:`.PrancerSessionInterface` as its ``migrator``.

    :param source: where Flask-Session kept its sessions.
    :param key_prefix: Flask-Session's ``SESSION_KEY_PREFIX``.
    :param cookie_name: the name of Flask-Session's cookie.
    :param use_signer: whether the cookie is signed (``SESSION_USE_SIGNER``).
    """

    def __init__(
        self,
        source: Source,
        *,
        key_prefix: str = "session:",
        cookie_name: str = "session",
        use_signer: bool = False,
    ) -> None:
        self.source = source
        self.key_prefix = key_prefix
        self.cookie_name = cookie_name
        self.use_signer = use_signer

    @classmethod
    def from_config(cls, config: t.Mapping[str, t.Any]) -> FlaskSessionMigrator:
        """Build a migrator from Flask-Session's settings in ``config``.

        Only the settings of the chosen ``SESSION_TYPE`` are read.

        :raise ConfigurationError: naming the setting, if one is missing or wrong.
        """
        kind = config.get("SESSION_TYPE")
        if not isinstance(kind, str) or kind.lower() not in SESSION_TYPES:
            raise ConfigurationError(
                f"must be {', '.join(map(repr, SESSION_TYPES))} to move Flask-Session's"
                f" sessions over, not {kind!r}",
                "SESSION_TYPE",
            )
        key_prefix = config.get("SESSION_KEY_PREFIX", "session:")
        if not isinstance(key_prefix, str):
            raise ConfigurationError("must be a string", "SESSION_KEY_PREFIX")
        use_signer = config.get("SESSION_USE_SIGNER", False)
        if not isinstance(use_signer, bool):
            raise ConfigurationError("must be true or false", "SESSION_USE_SIGNER")
        if use_signer and not config.get("SECRET_KEY"):
            raise ConfigurationError(
                "is needed to check Flask-Session's cookies (SESSION_USE_SIGNER)", "SECRET_KEY"
            )
        return cls(
            SOURCES[kind.lower()](config),
            key_prefix=key_prefix,
            cookie_name=config.get("SESSION_COOKIE_NAME") or "session",
            use_signer=use_signer,
        )

    def read(
        self, app: Flask, request: Request
    ) -> tuple[dict[str, t.Any], t.Callable[[Response], None]] | None:
        """Return the data of the visitor's Flask-Session session and a
        function that deletes the old copy and expires the old cookie, or
        ``None`` if the request leads to no session to move.

        With ``None`` the old cookie is expired all the same, and an old copy
        that was unreadable, or held nothing that could be moved, is deleted,
        so that it is not read again on every request.

        :raise SessionStoreError: if the old store cannot be read.
        """
        value = request.cookies.get(self.cookie_name)
        if value is None:
            return None
        key = self._key_from(app, value)
        if key is None:
            self._when_responding(lambda response: self._expire_cookie(app, response))
            return None
        try:
            entry = self._fetch(key)
            found = entry is not None
            data = session_values(entry, _serializer_of(app))
        except Unreadable as error:
            logger.warning("A Flask-Session session was not moved over: %s.", error)
            found, data = True, {}
        # Nothing but its lifetime: our session would not store it, so
        # nothing would retire the old one.
        if LIFETIME_KEYS.issuperset(data):
            if not found:  # No such session, or it has expired.
                self._when_responding(lambda response: self._expire_cookie(app, response))
            else:
                # Nothing in it can be moved (a permanent session of
                # Flask-Session's holds "_permanent" anyway, which our session
                # does not store on its own): it goes, with its cookie, so it
                # is not read again on every request.
                self._when_responding(lambda response: self._retire(app, key, response))
            return None
        done = False

        def finish(response: Response) -> None:
            nonlocal done
            if not done:
                done = True
                self._retire(app, key, response)

        def finish_if_emptied(response: Response) -> None:
            # A view that clears or ends the session (a logout) stores nothing,
            # so the interface never calls finish: the old copy goes anyway.
            if not current_session:
                finish(response)

        self._when_responding(finish_if_emptied)
        return data, finish

    def _key_from(self, app: Flask, value: str) -> str | None:
        """Return the store key the cookie value names, if it is intact."""
        if len(value) > _MAX_COOKIE_LENGTH or not value.isascii():
            return None
        if self.use_signer:
            keys: list[str | bytes] = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
            keys.append(t.cast("str | bytes", app.secret_key))  # the newest key goes last
            # Flask-Session's salt, and itsdangerous's default digest, which it used.
            signer = Signer(
                keys,  # type: ignore[arg-type]
                salt="flask-session",
                key_derivation="hmac",
                digest_method=hashlib.sha1,
            )
            try:
                value = signer.unsign(value).decode("ascii")
            except BadSignature:
                return None
        if _SESSION_ID.fullmatch(value) is None:
            return None
        return self.key_prefix + value

    def _fetch(self, key: str) -> t.Any:
        try:
            return self.source.fetch(key)
        except Unreadable:
            raise
        except self.source.errors as error:
            raise SessionStoreError(
                f"Flask-Session's store could not be read to move a session over: {error}",
                error,
            ) from error

    def _retire(self, app: Flask, key: str, response: Response) -> None:
        """Delete the old copy of a session that was moved, and its cookie."""
        try:
            self.source.delete(key)
        except self.source.errors as error:
            logger.warning(
                "Flask-Session's copy of a session that was moved over could not be"
                " deleted; it stays until it expires: %s",
                error,
            )
        self._expire_cookie(app, response)

    def _expire_cookie(self, app: Flask, response: Response) -> None:
        response.delete_cookie(
            self.cookie_name,
            domain=_FLASK_COOKIE.get_cookie_domain(app),
            path=_FLASK_COOKIE.get_cookie_path(app),
            secure=_FLASK_COOKIE.get_cookie_secure(app),
            httponly=_FLASK_COOKIE.get_cookie_httponly(app),
            samesite=_FLASK_COOKIE.get_cookie_samesite(app),
            partitioned=_FLASK_COOKIE.get_cookie_partitioned(app),
        )
        vary_on(response, "Cookie")

    @staticmethod
    def _when_responding(function: t.Callable[[Response], None]) -> None:
        """Call ``function`` with this request's response before the session
        is saved."""
        # Outside a request there is no response to change.
        if not has_request_context():
            return

        def call(response: Response) -> Response:
            function(response)
            return response

        after_this_request(call)


def _serializer_of(app: Flask) -> Serializer:
    """Return the serializer of the app's sessions, which says what they store."""
    interface = app.session_interface
    if isinstance(interface, PrancerSessionInterface):
        return interface.serializer
    return make_serializer()
