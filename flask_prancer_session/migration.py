"""Moving visitors over from Flask-Session without logging them out.

.. code-block:: python

    # Flask-Session's settings stay where they are; Session(app) goes.
    app.config["SESSION_TYPE"] = "redis"
    app.config["SESSION_REDIS"] = redis.Redis(...)
    app.config["PRANCER_SESSION"] = {
        "migrate_from": "flask-session",
        "store": {"driver": "redis", "options": {"url": "redis://..."}},
    }

A request that carries Flask-Session's cookie but not ours has its session
read from where Flask-Session 0.8 kept it. The data goes into a new session
with a new id, and once that is stored, the response deletes Flask-Session's
copy and expires its cookie. A visitor is moved over on their first request,
and every later request finds only our cookie, so nothing is read from the old
store again. Requests without the old cookie (bots, health checks, new
visitors) cost nothing.

Flask-Session's settings, read once by :meth:`FlaskSessionMigrator.from_config`:

``SESSION_TYPE``
    ``redis``, ``sqlalchemy``, ``filesystem`` or ``cachelib``.
``SESSION_KEY_PREFIX``
    Default ``"session:"``.
``SESSION_USE_SIGNER``
    Default false. When true the cookie is signed with ``SECRET_KEY`` (or one
    of ``SECRET_KEY_FALLBACKS``) as Flask-Session signed it, and a cookie
    without a valid signature is ignored.
``SESSION_REDIS``
    The redis client, required for ``redis``.
``SESSION_SQLALCHEMY``
    The Flask-SQLAlchemy ``db`` (or an SQLAlchemy ``Engine``), required for
    ``sqlalchemy``, with ``SESSION_SQLALCHEMY_TABLE`` (``"sessions"``),
    ``SESSION_SQLALCHEMY_SCHEMA`` and ``SESSION_SQLALCHEMY_BIND_KEY``.
``SESSION_FILE_DIR``
    For ``filesystem``; default ``flask_session`` in the working directory.
``SESSION_CACHELIB``
    The cachelib cache, required for ``cachelib``.

plus Flask's own ``SESSION_COOKIE_NAME`` (``"session"``), and its
``SESSION_COOKIE_DOMAIN``, ``SESSION_COOKIE_PATH`` and the like, read per
request as Flask-Session did, to expire the old cookie where it was set.

Nothing is ever unpickled. Flask-Session 0.8 keeps ``redis`` and
``sqlalchemy`` sessions in MessagePack (or JSON), which is read with msgspec
(the ``migrate`` extra); an entry in any other format, such as a pickle
written by Flask-Session before 0.7, is logged and treated as no session.
The ``filesystem`` and ``cachelib`` backends hand the session to cachelib,
which pickles it; those entries are read by a parser that takes only plain
data out of the pickle and runs no code, so an object that would need code
to rebuild (a ``datetime``, a dataclass) is left out. Values are moved when
they are ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes``, lists
(tuples and sets become lists, as MessagePack makes them), dictionaries with
string keys, and the time-zone-aware ``datetime`` that MessagePack carries;
any other key is left out with a warning naming it.

A cookie that is forged, malformed or leads to no readable session gets a
fresh session, and that cookie is expired. If the old store cannot be read
(server down), the first use of the session fails with
:class:`.SessionStoreError` rather than carrying on with a fresh session whose
cookie would replace the visitor's real one: the visitor is moved over once
the store is back. If only the
deletion of the old copy fails, that is logged and the copy stays until it
expires.

Caveats: two requests of one visitor that arrive at once, both with only the
old cookie, can each make a new session, and the browser keeps the cookie of
the last response. While some workers still run Flask-Session, a visitor
moved over by a new worker looks logged out to the old ones.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import os
import re
import typing as t
from datetime import datetime
from datetime import timezone

from cachelib.serializers import BaseSerializer
from flask import after_this_request
from flask import has_request_context
from flask import session as current_session
from flask.sessions import SessionInterface
from itsdangerous import BadSignature
from itsdangerous import Signer

from .config import CONFIG_KEY
from .errors import ConfigurationError
from .errors import SessionStoreError
from .interface import vary_on_cookie
from .pickle_reader import Budget as Budget
from .pickle_reader import MAX_VALUES as MAX_VALUES
from .pickle_reader import Placeholder as Placeholder
from .pickle_reader import read_pickle as read_pickle
from .pickle_reader import Unreadable as Unreadable
from .serializer import MAX_DEPTH

if t.TYPE_CHECKING:
    import sqlalchemy as sa
    from flask import Flask
    from flask import Request
    from flask import Response

logger = logging.getLogger(__name__)

#: The values of ``SESSION_TYPE`` whose sessions can be moved over.
SESSION_TYPES = ("redis", "sqlalchemy", "filesystem", "cachelib")

#: What Flask-Session's ids (``secrets.token_urlsafe``) look like; anything
#: else is refused before any store lookup.
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
_MAX_COOKIE_LENGTH = 4096
#: Flask's cookie settings, which Flask-Session used for its cookie.
_FLASK_COOKIE = SessionInterface()


class _Unsupported(Exception):
    """A value that cannot be moved."""


class _Source(t.Protocol):
    """Where Flask-Session kept its sessions."""

    #: What the backend raises when it cannot be reached.
    errors: tuple[type[BaseException], ...]

    def fetch(self, key: str) -> t.Any:
        """Return the entry under ``key`` as Python data, or ``None`` if there
        is none or it has expired.

        :raise Unreadable: if the entry is in a format that is not read.
        """

    def delete(self, key: str) -> None:
        """Delete the entry under ``key``."""


class FlaskSessionMigrator:
    """Move each visitor's Flask-Session 0.8 session into a new session on
    their first request; see the module documentation.

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
        source: _Source,
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
            _SOURCES[kind.lower()](config),
            key_prefix=key_prefix,
            cookie_name=config.get("SESSION_COOKIE_NAME") or "session",
            use_signer=use_signer,
        )

    def read(
        self, app: Flask, request: Request
    ) -> tuple[dict[str, t.Any], t.Callable[[Response], None]] | None:
        """Return the data of the visitor's Flask-Session session and a
        function that deletes the old copy and expires the old cookie, or
        ``None`` if the request leads to no session.

        :raise SessionStoreError: if the old store cannot be read.
        """
        value = request.cookies.get(self.cookie_name)
        if value is None:
            return None
        key = self._key_from(app, value)
        data: dict[str, t.Any] = {}
        if key is not None:
            try:
                data = _session_values(self._fetch(key))
            except Unreadable as error:
                logger.warning("A Flask-Session session was not moved over: %s.", error)
        if not data:
            self._when_responding(lambda response: self._expire_cookie(app, response))
            return None
        assert key is not None
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
        vary_on_cookie(response)

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


class _RedisSource:
    """``SESSION_TYPE = "redis"``: MessagePack under the key, with a TTL."""

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        client = config.get("SESSION_REDIS")
        if client is None or not all(hasattr(client, name) for name in ("get", "delete")):
            raise ConfigurationError(
                "must be the redis client Flask-Session used, such as redis.Redis(...)",
                "SESSION_REDIS",
            )
        self.client = client
        self.decode = _msgspec_decoder()
        self.errors: tuple[type[BaseException], ...] = (OSError,)
        try:
            from redis.exceptions import RedisError
        except ImportError:  # A client that only resembles redis-py's.
            pass
        else:
            self.errors += (RedisError,)

    def fetch(self, key: str) -> t.Any:
        raw = self.client.get(key)
        return None if raw is None else self.decode(raw)

    def delete(self, key: str) -> None:
        self.client.delete(key)


class _SQLSource:
    """``SESSION_TYPE = "sqlalchemy"``: a row with MessagePack in ``data`` and
    a naive UTC ``expiry``, which Flask-Session checked itself."""

    def __init__(self, config: t.Mapping[str, t.Any]) -> None:
        try:
            import sqlalchemy as sa
        except ImportError as error:
            raise ConfigurationError(
                "needs SQLAlchemy: pip install 'flask-prancer-session[database]'",
                "SESSION_SQLALCHEMY",
            ) from error
        db = config.get("SESSION_SQLALCHEMY")
        # The type, not the object: Flask-SQLAlchemy's engines need an app context.
        if not isinstance(db, sa.Engine) and not hasattr(type(db), "engines"):
            raise ConfigurationError(
                "must be the Flask-SQLAlchemy db Flask-Session used, or an SQLAlchemy Engine",
                "SESSION_SQLALCHEMY",
            )
        self.db: t.Any = db
        self.bind_key = config.get("SESSION_SQLALCHEMY_BIND_KEY")
        self.table = sa.Table(
            config.get("SESSION_SQLALCHEMY_TABLE") or "sessions",
            sa.MetaData(),
            sa.Column("session_id", sa.String(255)),
            sa.Column("data", sa.LargeBinary),
            sa.Column("expiry", sa.DateTime),
            schema=config.get("SESSION_SQLALCHEMY_SCHEMA"),
        )
        self.decode = _msgspec_decoder()
        self.errors: tuple[type[BaseException], ...] = (sa.exc.SQLAlchemyError,)

    def _engine(self) -> sa.Engine:
        import sqlalchemy as sa

        if isinstance(self.db, sa.Engine):
            return self.db
        # Flask-SQLAlchemy's engines belong to the current app.
        engine: sa.Engine = self.db.engines[self.bind_key]
        return engine

    def fetch(self, key: str) -> t.Any:
        import sqlalchemy as sa

        columns = self.table.c
        with self._engine().connect() as connection:
            row = connection.execute(
                sa.select(columns.data, columns.expiry).where(columns.session_id == key)
            ).first()
        if row is None:
            return None
        data, expiry = row
        if expiry is None:
            return None
        if expiry.tzinfo is not None:
            expiry = expiry.astimezone(timezone.utc).replace(tzinfo=None)
        if expiry <= datetime.now(timezone.utc).replace(tzinfo=None):
            return None
        if data is None:
            raise Unreadable("its row holds no data")
        return self.decode(bytes(data))

    def delete(self, key: str) -> None:
        import sqlalchemy as sa

        with self._engine().begin() as connection:
            connection.execute(sa.delete(self.table).where(self.table.c.session_id == key))


class _CachelibSource:
    """``SESSION_TYPE = "cachelib"`` or ``"filesystem"``: the session dict,
    pickled by the cache, which also expires it.

    The cache is read through a copy whose serializer takes only plain data
    out of pickles, so cachelib's own code finds the entry and checks its
    expiry, and the user's cache object is left as it is.
    """

    #: cachelib's backends raise their own client's errors.
    errors: tuple[type[BaseException], ...] = (Exception,)

    def __init__(self, cache: t.Any, key: str) -> None:
        get = getattr(type(cache), "get", None)
        module = getattr(get, "__module__", "")
        if (
            not module.startswith("cachelib.")
            or module == "cachelib.memcached"  # Its client pickles by itself.
            or not isinstance(getattr(cache, "serializer", None), BaseSerializer)
        ):
            raise ConfigurationError(
                "must be a cachelib cache whose entries cachelib's serializer reads"
                " (not memcached, nor a subclass with its own get)",
                key,
            )
        self.cache = copy.copy(cache)
        self.cache.serializer = _DataOnlySerializer()

    def fetch(self, key: str) -> t.Any:
        entry = self.cache.get(key)
        if isinstance(entry, Unreadable):
            raise entry
        return entry

    def delete(self, key: str) -> None:
        self.cache.delete(key)


class _DataOnlySerializer(BaseSerializer):
    """Reads the plain data out of cachelib's pickles; writes as cachelib does."""

    def loads(self, bvalue: bytes) -> t.Any:
        if bvalue is None:
            return None
        try:
            # cachelib's Redis-like caches put "!" before a pickle.
            return read_pickle(bytes(bvalue).removeprefix(b"!"))
        except Unreadable as error:
            return error  # Not raised: cachelib takes some exceptions for a miss.

    def load(self, f: t.BinaryIO) -> t.Any:
        return self.loads(f.read())


def _cachelib_source(config: t.Mapping[str, t.Any]) -> _CachelibSource:
    cache = config.get("SESSION_CACHELIB")
    if cache is None:
        raise ConfigurationError(
            "must be the cachelib cache Flask-Session used", "SESSION_CACHELIB"
        )
    return _CachelibSource(cache, "SESSION_CACHELIB")


def _filesystem_source(config: t.Mapping[str, t.Any]) -> _CachelibSource:
    from cachelib.file import FileSystemCache

    directory = config.get("SESSION_FILE_DIR") or os.path.join(os.getcwd(), "flask_session")
    if not isinstance(directory, (str, os.PathLike)) or not os.path.isdir(directory):
        raise ConfigurationError(
            f"must be the directory of Flask-Session's sessions; {directory!r} is not one",
            "SESSION_FILE_DIR",
        )
    # No threshold: the cache then writes no file count into the directory.
    return _CachelibSource(FileSystemCache(os.fspath(directory), threshold=0), "SESSION_FILE_DIR")


_SOURCES: dict[str, t.Callable[[t.Mapping[str, t.Any]], _Source]] = {
    "redis": _RedisSource,
    "sqlalchemy": _SQLSource,
    "filesystem": _filesystem_source,
    "cachelib": _cachelib_source,
}


def _msgspec_decoder() -> t.Callable[[bytes], t.Any]:
    """Return a function that decodes Flask-Session's MessagePack, or its JSON
    (``SESSION_SERIALIZATION_FORMAT = "json"``), as Flask-Session tried both."""
    try:
        import msgspec
    except ImportError as error:
        raise ConfigurationError(
            "needs msgspec to read Flask-Session's sessions:"
            " pip install 'flask-prancer-session[migrate]'",
            f"{CONFIG_KEY}.migrate_from",
        ) from error
    decoders = (msgspec.msgpack.Decoder(), msgspec.json.Decoder())

    def decode(raw: bytes) -> t.Any:
        for decoder in decoders:
            try:
                return decoder.decode(raw)
            except (msgspec.DecodeError, RecursionError):
                pass
        raise Unreadable(
            "it is neither MessagePack nor JSON (perhaps a pickle from Flask-Session"
            " before 0.7, which is never unpickled)"
        )

    return decode


def _session_values(entry: t.Any) -> dict[str, t.Any]:
    """Return the values of a Flask-Session entry that our sessions store
    exactly, leaving out the others with a warning.

    :raise Unreadable: if ``entry`` is not a session.
    """
    if entry is None:
        return {}
    if type(entry) is not dict:
        raise Unreadable("it is not a mapping")
    budget = Budget(MAX_VALUES)
    values: dict[str, t.Any] = {}
    for key, value in entry.items():
        try:
            if type(key) is not str or not _is_text(key):
                raise _Unsupported("its name is not a string")
            values[key] = _plain(value, MAX_DEPTH, budget)
        except _Unsupported as error:
            logger.warning("Flask-Session session key %r was not moved over: %s.", key, error)
    return values


def _plain(value: t.Any, depth: int, budget: Budget) -> t.Any:
    """Return ``value`` as the plain data our sessions store exactly.

    :raise _Unsupported: if it holds anything else.
    """
    budget.spend()
    kind = type(value)
    if kind in (str, int, float, bool, bytes) or value is None:
        return value
    if kind is datetime and value.tzinfo is not None:
        return value  # MessagePack's timestamp, which the session stores exactly.
    if isinstance(value, Placeholder):
        raise _Unsupported(f"it holds {value.what}")
    if kind not in (list, tuple, set, frozenset, dict):
        raise _Unsupported(f"{kind.__module__}.{kind.__qualname__} values are not moved")
    if depth == 0:
        raise _Unsupported(f"it is nested more than {MAX_DEPTH} levels deep")
    if kind is dict:
        if not all(type(name) is str and _is_text(name) for name in value):
            raise _Unsupported("it holds a dictionary with a key that is not a string")
        return {name: _plain(item, depth - 1, budget) for name, item in value.items()}
    return [_plain(item, depth - 1, budget) for item in value]


def _is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (a pickle may hold lone surrogates)."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
