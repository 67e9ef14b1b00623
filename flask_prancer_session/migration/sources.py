"""Where Flask-Session kept its sessions: Redis, SQLAlchemy, cachelib and
its file system cache, each read without running code."""

from __future__ import annotations

import copy
import logging
import os
import typing as t
from datetime import datetime
from datetime import timezone

from cachelib.serializers import BaseSerializer

from ..errors import ConfigurationError
from .pickle_reader import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from .pickle_reader import MAX_VALUES as MAX_VALUES
from .pickle_reader import Placeholder as Placeholder
from .pickle_reader import read_pickle as read_pickle
from .pickle_reader import Unreadable as Unreadable

if t.TYPE_CHECKING:
    import sqlalchemy as sa

from .msgpack import msgspec_decoder

logger = logging.getLogger(__package__ or __name__)


class Source(t.Protocol):
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
        self.decode = msgspec_decoder()
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
        self.decode = msgspec_decoder()
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
        # Refused before it is copied; cachelib's Redis-like caches put "!"
        # before a pickle.
        if len(bvalue) > MAX_ENTRY_BYTES + 1:
            return Unreadable(f"it is larger than {MAX_ENTRY_BYTES} bytes")
        try:
            return read_pickle(bytes(bvalue).removeprefix(b"!"))
        except Unreadable as error:
            return error  # Not raised: cachelib takes some exceptions for a miss.

    def load(self, f: t.BinaryIO) -> t.Any:
        # One byte more than is read, so a larger file is refused unread.
        return self.loads(f.read(MAX_ENTRY_BYTES + 1))


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


SOURCES: dict[str, t.Callable[[t.Mapping[str, t.Any]], Source]] = {
    "redis": _RedisSource,
    "sqlalchemy": _SQLSource,
    "filesystem": _filesystem_source,
    "cachelib": _cachelib_source,
}
