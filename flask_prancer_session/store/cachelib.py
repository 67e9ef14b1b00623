"""The cachelib store: sessions in any :class:`cachelib.BaseCache` (simple,
file system, Redis, memcached...), each a JSON entry, changed under a per-key
lock. The manual's cachelib page says what it guarantees across processes."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import inspect
import json
import logging
import math
import os
import re
import threading
import typing as t
import zlib

import cachelib
from cachelib.serializers import BaseSerializer

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from ..ids import is_store_key
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import Seconds
from .base import StoreDriver
from .common import glob_escape
from .common import is_seconds
from .common import unsafe_directory

logger = logging.getLogger(__name__)

#: Backend names and the cachelib classes they stand for.
BACKENDS: dict[str, str] = {
    "simple": "SimpleCache",
    "filesystem": "FileSystemCache",
    "redis": "RedisCache",
    "memcached": "MemcachedCache",
    "uwsgi": "UWSGICache",
    "dynamodb": "DynamoDbCache",
    "mongodb": "MongoDbCache",
}

#: How many locks the keys are spread over.
LOCK_STRIPES = 64

_BOUNDED = {"simple", "filesystem"}


class JSONSerializer(BaseSerializer):
    """Values as JSON, for the cachelib caches that would unpickle them.

    Pickle runs whatever code the stored bytes name, so with cachelib's
    default whoever can write the cache (a file in the directory, a key in
    Redis) can run code in the app. JSON holds our entries, which are
    strings, and the integers cachelib keeps itself (``FileSystemCache``'s
    entry count, ``RedisCache``'s counters, sent as plain digits as before).
    One class serves every flavour: cachelib only calls the serializer's
    ``dumps``, ``loads``, ``dump`` and ``load``.
    """

    def dumps(self, value: t.Any, *args: t.Any, **kwargs: t.Any) -> bytes:
        return json.dumps(value, separators=(",", ":")).encode()

    # cachelib's bases name the argument bvalue and value: no name fits both.
    def loads(self, value: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:  # type: ignore[override]
        if value is None:
            return None
        try:
            return json.loads(value)
        except (ValueError, TypeError, RecursionError) as error:
            logger.warning("A cache entry is not JSON (%s); ignoring it", error)
            return None

    def dump(self, value: t.Any, f: t.IO[bytes], *args: t.Any, **kwargs: t.Any) -> None:
        # FileSystemCache writes its expiry header before and reads it itself.
        f.write(self.dumps(value))

    def load(self, f: t.IO[bytes], *args: t.Any, **kwargs: t.Any) -> t.Any:
        return self.loads(f.read())


#: The cachelib caches that read values others can write through a
#: serializer: each one gets a :class:`JSONSerializer`.
UNPICKLING_CACHES: tuple[type[cachelib.BaseCache], ...] = tuple(
    getattr(cachelib, name)
    for name in (
        "FileSystemCache",
        "RedisCache",
        "ValkeyCache",  # cachelib 0.13 and newer
        "DynamoDbCache",
        "MongoDbCache",
        "UWSGICache",
    )
    if hasattr(cachelib, name)
)


#: The cachelib caches whose entries :meth:`CachelibStore.scan` can list.
LISTABLE_CACHES = (cachelib.SimpleCache, cachelib.FileSystemCache, cachelib.RedisCache)


class CachelibStore(StoreDriver):
    """Keep each session in one entry of a cachelib cache.

    :param cache: a cache to use as given.
    :param backend: or the name of a cache class to make one with
        ``backend_options``.
    :param key_prefix: prepended to every cache key.
    """

    #: Every entry is written with a cache timeout that follows the
    #: session's expiry, so the cache drops it by itself: :meth:`purge` has nothing to do.
    expires_natively = True

    def __init__(
        self,
        *,
        cache: cachelib.BaseCache | None = None,
        backend: str | None = None,
        key_prefix: str = "prancer:session:",
        expiration_timeout: Seconds = DEFAULT_EXPIRATION_TIMEOUT,
        permanent_timeout: Seconds | None = None,
        absolute_timeout: Seconds | None = None,
        autopurge: bool = False,
        autopurge_probability: float = 0.1,
        **backend_options: t.Any,
    ) -> None:
        super().__init__(
            expiration_timeout=expiration_timeout,
            permanent_timeout=permanent_timeout,
            absolute_timeout=absolute_timeout,
            autopurge=autopurge,
            autopurge_probability=autopurge_probability,
        )
        if not isinstance(key_prefix, str):
            raise ConfigurationError("must be a string", "key_prefix")
        self.key_prefix = key_prefix
        if cache is not None:
            if backend is not None:
                raise ConfigurationError("give either cache or backend, not both", "backend")
            if backend_options:
                raise ConfigurationError(
                    "only applies with backend; configure the cache instead",
                    next(iter(backend_options)),
                )
            if isinstance(cache, cachelib.NullCache) or not all(
                callable(getattr(cache, name, None)) for name in ("get", "set", "delete")
            ):
                raise ConfigurationError("must be a cachelib cache that keeps data", "cache")
            if isinstance(cache, cachelib.FileSystemCache):
                _check_private_dir(cache._path, "cache")
            #: The cachelib cache holding the sessions.
            self.cache: cachelib.BaseCache = cache
        elif backend is None:
            raise ConfigurationError(
                f"a cache instance, or a backend: one of {', '.join(BACKENDS)}", "backend"
            )
        else:
            self.cache = _make_cache(backend, backend_options)
        self._owns_cache = cache is None
        if isinstance(self.cache, UNPICKLING_CACHES):
            self.cache.serializer = JSONSerializer()  # type: ignore[attr-defined]
            if isinstance(self.cache, cachelib.FileSystemCache):
                # cachelib pickled its entry count on creation: write it anew.
                self.cache._update_count(value=len(list(self.cache._list_dir())))
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._lock_dir: str | None = None
        self._lock_suffix = ""
        if isinstance(self.cache, cachelib.FileSystemCache):
            # cachelib's listing, pruning and clear() skip names ending in its
            # temporary-file suffix, so lock files so named are never counted
            # or deleted by it.
            self._lock_dir = self.cache._path
            self._lock_suffix = f".prancer-lock{self.cache._fs_transaction_suffix}"

    def _after_fork(self) -> None:
        super()._after_fork()
        self._locks = [threading.Lock() for _ in range(LOCK_STRIPES)]

    @contextlib.contextmanager
    def _locked(self, key: str) -> t.Iterator[None]:
        stripe = zlib.crc32(key.encode()) % LOCK_STRIPES
        with self._locks[stripe]:
            if self._lock_dir is None:
                yield
                return
            path = os.path.join(self._lock_dir, f"{stripe:02x}{self._lock_suffix}")
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            except OSError as error:
                raise _failure("lock", key, error) from error
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

    def _call(self, action: str, key: str, method: str, *args: t.Any) -> t.Any:
        try:
            return getattr(self.cache, method)(self.key_prefix + key, *args)
        # cachelib passes on the exceptions of each backend's client library
        # (redis, pymemcache, boto3, pymongo...), which share no base class.
        except Exception as error:
            raise _failure(action, key, error) from error

    def _live(self, key: str) -> Record | None:
        raw = self._call("read", key, "get")
        if raw is None:
            return None
        record = _decode(key, raw)
        if record is None or record.expires_at <= self.clock():
            return None
        return record

    def _write(self, key: str, record: Record) -> None:
        # The key too: a FileSystemCache file is named by a digest of it, and
        # scan() must know whose session a file holds.
        value = json.dumps(
            {
                "key": key,
                "created": record.created_at,
                "expires": record.expires_at,
                "data": record.data,
            },
            separators=(",", ":"),
        )
        # cachelib wants whole seconds, and 0 would mean "never expires".
        timeout = max(1, math.ceil(record.expires_at - self.clock()))
        if not self._call("write", key, "set", value, timeout):
            raise _failure("write", key, None)

    def close(self) -> None:
        super().close()
        client: t.Any = getattr(self.cache, "_client", None)
        if self._owns_cache and hasattr(client, "disconnect_all"):
            client.disconnect_all()  # python-memcached's sockets

    def fetch(self, key: str) -> Record | None:
        return self._live(key)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        with self._locked(key):
            record = self._live(key)
            if record is None:
                if changes.created_at is None:
                    return False
                data = changes.merged_into({})
                created_at = changes.created_at
            else:
                data = changes.merged_into(record.data)
                created_at = record.created_at
            if not data:
                if record is not None:
                    self._delete(key)
                return False
            expires_at = self.expiry_for(created_at, timeout=changes.timeout)
            self._write(key, Record(data, created_at, expires_at))
            return True

    def touch(self, key: str, expires_at: float) -> None:
        with self._locked(key):
            record = self._live(key)
            if record is not None:
                self._write(key, Record(record.data, record.created_at, expires_at))

    def remove(self, key: str) -> bool:
        with self._locked(key):
            live = self._live(key) is not None
            self._delete(key)
            return live

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        """Yield every live session, for the ``simple``, ``filesystem`` and
        ``redis`` backends; the others cannot list their entries."""
        for key in self._keys():
            record = self._live(key)
            if record is not None:
                yield key, record

    def _keys(self) -> t.Iterator[str]:
        """Yield the store keys of the entries this store may have written."""
        cache, prefix = self.cache, self.key_prefix
        if not isinstance(cache, LISTABLE_CACHES):
            raise NotImplementedError(
                f"CachelibStore cannot list its sessions: cachelib's {type(cache).__name__}"
                " cannot list its entries (only SimpleCache, FileSystemCache and RedisCache can)."
            )
        names: t.Iterable[str]
        try:
            if isinstance(cache, cachelib.SimpleCache):
                # A copy: other threads change the dictionary meanwhile.
                names = list(cache._cache)
            elif isinstance(cache, cachelib.RedisCache):
                # A string, or since cachelib 0.12 a function returning one.
                outer = cache.key_prefix
                if not isinstance(outer, str):
                    outer = outer()
                pattern = glob_escape(outer + prefix) + "*"
                found = cache._read_client.scan_iter(match=pattern, count=500)
                names = (name.decode("utf-8", "replace")[len(outer) :] for name in found)
            else:
                paths = list(cache._list_dir())
                names = (name for name in map(self._file_key, paths) if name)
            for name in names:
                # The shape check skips the entries of stores whose prefix
                # starts with ours.
                if isinstance(name, str) and name.startswith(prefix):
                    key = name[len(prefix) :]
                    if is_store_key(key):
                        yield key
        # cachelib passes on the exceptions of its client libraries.
        except Exception as error:
            logger.error("cachelib could not list the sessions: %s", error)
            message = f"the cache could not list the sessions: {error}"
            raise SessionStoreError(message, error) from error

    def _file_key(self, path: str) -> str | None:
        """Return the cache key whose entry the file at ``path`` holds, or
        ``None`` for a file that is not one of our entries."""
        try:
            with open(path, "rb") as file:
                file.read(4)  # FileSystemCache's expiry, which get() checks
                entry = json.loads(json.loads(file.read()))
            name = self.key_prefix + entry["key"]
        # A file may vanish or be half-written meanwhile; older entries have
        # no key, and other data is not ours.
        except (OSError, ValueError, KeyError, TypeError, RecursionError):
            return None
        # Only if that key leads to this file: it names our entry.
        cache = t.cast(cachelib.FileSystemCache, self.cache)
        return name if cache._get_filename(name) == path else None

    def _delete(self, key: str) -> None:
        # delete() is also False when there was nothing to delete, so only
        # an entry still there afterwards is a failure.
        if not self._call("delete", key, "delete") and self._call("delete", key, "has"):
            raise _failure("delete", key, None)


def _make_cache(backend: str, options: dict[str, t.Any]) -> cachelib.BaseCache:
    class_name = BACKENDS.get(backend)
    if class_name is None:
        raise ConfigurationError(f"must be one of {', '.join(BACKENDS)}", "backend")
    cls: type[cachelib.BaseCache] = getattr(cachelib, class_name)
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        for name in options:
            if name not in parameters:
                raise ConfigurationError(f"not an option of cachelib's {class_name}", name)
    if backend in _BOUNDED:
        options = {"threshold": 10000, **options}
    if backend == "filesystem" and isinstance(options.get("cache_dir"), (str, os.PathLike)):
        # cachelib would make it 0755, or 0777 under umask 0.
        try:
            os.makedirs(options["cache_dir"], mode=0o700, exist_ok=True)
        except OSError as error:
            raise ConfigurationError(f"cannot be made: {error}", "cache_dir") from error
        _check_private_dir(options["cache_dir"], "cache_dir")
    if backend == "memcached":
        options = _memcached_without_unpickling(options)
    try:
        return cls(**options)
    except TypeError as error:
        match = re.search(r"keyword argument '(\w+)'", str(error))
        raise ConfigurationError(
            f"not an option of cachelib's {class_name}: {error}",
            match.group(1) if match else "backend",
        ) from error
    except (ValueError, RuntimeError, ImportError, OSError) as error:
        raise ConfigurationError(f"{class_name} cannot be made: {error}", "backend") from error


def _check_private_dir(path: str | os.PathLike[str], option: str) -> None:
    """Refuse a cache directory others could write into."""
    try:
        problem = unsafe_directory(path, os.lstat(path))
    except OSError as error:
        raise ConfigurationError(f"cannot be used: {error}", option) from error
    if problem is not None:
        raise ConfigurationError(f"is not safe for sessions: {problem}", option)


class _RefusedPickle:
    """An unpickler for python-memcached that unpickles nothing: the store
    writes only text, so a pickle in memcached was planted there."""

    def __init__(self, file: t.Any) -> None:
        pass

    def load(self) -> t.NoReturn:
        raise ValueError("a pickle in memcached is refused")


def _memcached_without_unpickling(options: dict[str, t.Any]) -> dict[str, t.Any]:
    """Return ``options`` for cachelib's ``MemcachedCache`` with a
    python-memcached client that never unpickles, where cachelib would make
    one that does: whoever can write to memcached would run code in the app.
    A client the app passes as ``servers``, or another library, is left alone."""
    servers = options.get("servers")
    if servers is not None and not isinstance(servers, (list, tuple)):
        return options
    if options.get("memcache_client_lib", "memcache") != "memcache":
        return options
    if importlib.util.find_spec("pylibmc") is not None:
        return options  # cachelib prefers it; it unpickles too (see the manual)
    try:
        import memcache  # type: ignore[import-untyped]
    except ImportError:
        return options
    client = memcache.Client(list(servers or ["127.0.0.1:11211"]), unpickler=_RefusedPickle)
    return {**options, "servers": client}


def _decode(key: str, raw: object) -> Record | None:
    try:
        if isinstance(raw, bytes):
            raw = raw.decode()  # pymemcache, say, hands back what it stored as bytes
        if not isinstance(raw, str):
            raise ValueError(f"a {type(raw).__name__}, not a string")
        decoded = json.loads(raw)
        created_at = decoded["created"]
        expires_at = decoded["expires"]
        data = decoded["data"]
        if not all(is_seconds(value) for value in (created_at, expires_at)):
            raise ValueError("bad times")
        if not isinstance(data, dict) or not all(isinstance(value, str) for value in data.values()):
            raise ValueError("bad data")
    except (ValueError, KeyError, TypeError, RecursionError) as error:
        logger.warning(
            "Session %.8s... in the cache cannot be decoded (%s); ignoring it", key, error
        )
        return None
    return Record(data, float(created_at), float(expires_at))


def _failure(action: str, key: str, error: BaseException | None) -> SessionStoreError:
    reason = error if error is not None else "the cache reported a failure"
    logger.error("cachelib could not %s session %.8s...: %s", action, key, reason)
    return SessionStoreError(f"the cache could not {action} the session: {reason}", error)
