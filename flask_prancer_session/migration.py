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
string keys, and the time-zone-aware ``datetime`` that MessagePack carries,
as long as our session stores them (a key with a NUL character, or an integer
of more than 4,300 digits, which JSON cannot write, is not); any other key is
left out, and one warning per session counts the keys left out and names the
first few.

Whoever can write to Flask-Session's store chooses what is read, so reading
an entry costs time and memory in proportion to its size. An entry larger than
:data:`~.pickle_reader.MAX_ENTRY_BYTES` (1 MiB) is not read. Once read, its
values are converted up to :data:`~.pickle_reader.MAX_VALUES` (100,000)
values, counting a value shared by several references once per reference, of
at most ``MAX_ENTRY_BYTES`` of strings, bytes and integers in all; a larger
session is not moved. A value nested more than
:data:`~flask_prancer_session.serializer.MAX_DEPTH` (64) levels deep is left
out. A dictionary keyed by a list in a MessagePack entry is read with ``None``
in place of that key (and so left out), since the hashes of tuples can be
chosen to collide.

A cookie that is forged, malformed or leads to no readable session gets a
fresh session, and that cookie is expired. An entry that is unreadable, or
none of whose values can be moved, is deleted with it, so the visitor is not
read again on every request. If the old store cannot be read
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
from .interface import PrancerSessionInterface
from .interface import vary_on_cookie
from .lifetime import EXPIRY_KEY
from .pickle_reader import brief
from .pickle_reader import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from .pickle_reader import MAX_VALUES as MAX_VALUES
from .pickle_reader import Placeholder as Placeholder
from .pickle_reader import read_pickle as read_pickle
from .pickle_reader import Unreadable as Unreadable
from .serializer import check_key
from .serializer import dumps_value
from .serializer import make_serializer
from .serializer import MAX_DEPTH
from .serializer import Serializer

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
#: Keys that only say how long to keep a session: a session holding nothing
#: else is not stored (see :meth:`.PrancerSessionInterface.save_session`), so
#: nothing would retire the old one.
_LIFETIME_KEYS = frozenset({"_permanent", EXPIRY_KEY})


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
            data = _session_values(entry, _serializer_of(app))
        except Unreadable as error:
            logger.warning("A Flask-Session session was not moved over: %s.", error)
            found, data = True, {}
        if _LIFETIME_KEYS.issuperset(data):
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
    msgpack = msgspec.msgpack.Decoder()
    json = msgspec.json.Decoder()

    def decode(raw: bytes) -> t.Any:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise Unreadable("it is not bytes")
        if len(raw) > MAX_ENTRY_BYTES:
            raise Unreadable(f"it is larger than {MAX_ENTRY_BYTES} bytes")
        raw = bytes(raw)
        packed = _without_compound_keys(raw)
        # JSON keys are strings; JSON is not one MessagePack value.
        for decoder, data in ((msgpack, packed), (json, raw)):
            if data is None:
                continue
            try:
                return decoder.decode(data)
            except (msgspec.DecodeError, RecursionError):
                pass
        raise Unreadable(
            "it is neither MessagePack nor JSON (perhaps a pickle from Flask-Session"
            " before 0.7, which is never unpickled)"
        )

    return decode


# The MessagePack formats by their first byte, apart from the fixed ranges:
# those of a fixed size, with the size after the first byte;
_FIXED_SIZE = {
    **dict.fromkeys((0xC0, 0xC2, 0xC3), 0),  # nil, false, true
    **{0xCA: 4, 0xCB: 8},  # floats
    **{0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8},  # integers
    **{0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17},  # fixext: a type byte, the data
}
# those of a length-prefixed size: the length's bytes, and the bytes before the data;
_SIZED = {
    **{0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0)},  # bin
    **{0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)},  # ext, with its type byte
    **{0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)},  # str
}
# and the arrays and maps: the count's bytes, and the items per count.
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def _without_compound_keys(raw: bytes) -> bytes | None:
    """Return the MessagePack value ``raw`` with nil in place of each map key
    that is an array or a map, or ``None`` if ``raw`` is not one MessagePack
    value.

    msgspec makes such keys tuples, and a tuple's hash is a function of its
    items' that can be inverted, so one entry could hold thousands of keys
    with one hash, and building the dictionary would take time in proportion
    to their square. A dictionary with a key that is not a string is never
    moved anyway. This walks the items without building them, in a loop.

    :raise Unreadable: if ``raw`` holds more than :data:`MAX_VALUES` values.
    """
    end = len(raw)
    position = 0
    # For each array or map being read, outermost first: the items left in
    # it (a map's keys and values both count), and whether it is a map.
    left = [1]
    in_map = [False]
    values = 0
    spans: list[tuple[int, int]] = []  # where the compound keys are
    key_level = -1  # how many were open when the compound key being read began
    key_start = 0
    while left:
        if left[-1] == 0:
            left.pop()
            in_map.pop()
            if len(left) == key_level:
                spans.append((key_start, position))
                key_level = -1
            continue
        is_key = in_map[-1] and left[-1] % 2 == 0
        left[-1] -= 1
        if position >= end:
            return None
        values += 1
        if values > MAX_VALUES:
            raise Unreadable(f"it holds more than {MAX_VALUES} values")
        byte = raw[position]
        start = position
        position += 1
        count = 0
        if byte <= 0x7F or byte >= 0xE0:  # fixint
            continue
        if byte <= 0x8F:
            count, per = byte & 0x0F, 2  # fixmap
        elif byte <= 0x9F:
            count, per = byte & 0x0F, 1  # fixarray
        elif byte <= 0xBF:
            position += byte & 0x1F  # fixstr
            continue
        elif byte in _FIXED_SIZE:
            position += _FIXED_SIZE[byte]
            continue
        elif byte in _SIZED:
            width, extra = _SIZED[byte]
            size = int.from_bytes(raw[position : position + width], "big")
            position += width + extra + size
            continue
        elif byte in _COUNTED:
            width, per = _COUNTED[byte]
            count = int.from_bytes(raw[position : position + width], "big")
            position += width
        else:
            return None  # 0xc1, which is never used
        if is_key and key_level < 0:
            key_level, key_start = len(left), start
        left.append(count * per)
        in_map.append(per == 2)
    if position != end:
        return None
    if not spans:
        return raw
    pieces = []
    previous = 0
    for start, stop in spans:
        pieces.append(raw[previous:start])
        previous = stop
    pieces.append(raw[previous:])
    return b"\xc0".join(pieces)


def _serializer_of(app: Flask) -> Serializer:
    """Return the serializer of the app's sessions, which says what they store."""
    interface = app.session_interface
    if isinstance(interface, PrancerSessionInterface):
        return interface.serializer
    return make_serializer()


#: Integers of more digits than this are not moved: Python's default limit
#: for ``int`` to ``str``, without which writing one takes time that grows
#: faster than its length.
_INT_LIMIT = 10**4300
#: How many of the keys that were left out a warning names.
_NAMED = 3


class Budget:
    """Counts the values converted from one entry, and the size of their
    strings, bytes, names and integers, each shared value once per reference."""

    def __init__(self, values: int = MAX_VALUES, size: int = MAX_ENTRY_BYTES) -> None:
        self.values = values
        self.size = size

    def spend(self, size: int = 0) -> None:
        """Count one value of ``size`` bytes (or characters).

        :raise Unreadable: once past either limit.
        """
        self.values -= 1
        self.size -= size
        if self.values < 0:
            raise Unreadable(f"it holds more than {MAX_VALUES} values")
        if self.size < 0:
            raise Unreadable(f"its values hold more than {MAX_ENTRY_BYTES} bytes")


def _session_values(entry: t.Any, serializer: Serializer | None = None) -> dict[str, t.Any]:
    """Return the values of a Flask-Session entry that our sessions store
    exactly, leaving out the others with one warning.

    :param serializer: the serializer of our sessions, which must accept each
        value moved; the default one if not given.
    :raise Unreadable: if ``entry`` is not a session, or is too large.
    """
    if entry is None:
        return {}
    if type(entry) is not dict:
        raise Unreadable("it is not a mapping")
    if serializer is None:
        serializer = make_serializer()
    budget = Budget()
    values: dict[str, t.Any] = {}
    left_out: list[str] = []
    count = 0
    for key, value in entry.items():
        try:
            name = _session_key(key, budget)
            plain = _plain(value, MAX_DEPTH, budget)
            try:
                dumps_value(serializer, name, plain)
            except TypeError as error:
                cause = error.__cause__ or error
                raise _Unsupported(f"our sessions cannot store it ({brief(str(cause))})") from None
            values[name] = plain
        except _Unsupported as error:
            count += 1
            if len(left_out) < _NAMED:
                what = repr(brief(key)) if type(key) is str else "a key"
                left_out.append(f"{what} ({error})")
    if count:
        more = f", and {count - len(left_out)} more" if count > len(left_out) else ""
        logger.warning(
            "%d key(s) of a Flask-Session session were not moved over: %s%s.",
            count,
            ", ".join(left_out),
            more,
        )
    return values


def _session_key(key: t.Any, budget: Budget) -> str:
    """Return ``key`` if our sessions take it as a key.

    :raise _Unsupported: if they do not.
    """
    if type(key) is not str:
        budget.spend()
        raise _Unsupported("its name is not a string")
    budget.spend(len(key))
    try:
        check_key(key)
    except TypeError:
        raise _Unsupported("its name is not valid text without NUL characters") from None
    return key


def _plain(value: t.Any, depth: int, budget: Budget) -> t.Any:
    """Return ``value`` as the plain data our sessions store exactly.

    Each value, string and dictionary key is counted before it is looked at,
    so the work is bounded by ``budget`` however often the entry refers to
    one value.

    :raise _Unsupported: if it holds anything else.
    :raise Unreadable: once past the budget.
    """
    kind = type(value)
    if kind is str or kind is bytes:
        budget.spend(len(value))
        return value
    if kind is int:
        # Comparing costs little whatever its size; writing its digits does not.
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise _Unsupported("it holds an integer of more than 4300 digits")
        budget.spend(value.bit_length() // 8)
        return value
    budget.spend()
    if kind in (float, bool) or value is None:
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
        for name in value:
            if type(name) is not str:
                raise _Unsupported("it holds a dictionary with a key that is not a string")
            budget.spend(len(name))
            if not _is_text(name):
                raise _Unsupported("it holds a dictionary key that is not valid text")
        return {name: _plain(item, depth - 1, budget) for name, item in value.items()}
    return [_plain(item, depth - 1, budget) for item in value]


def _is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (a pickle may hold lone surrogates)."""
    if value.isascii():  # Known without looking at the characters.
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
