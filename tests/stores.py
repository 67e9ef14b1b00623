"""The stores the conformance suite runs against, each over an empty backend.

Each factory is a context manager giving a function that makes store instances
over one backend (a table, a key prefix, a directory) and removes what the test
left there afterwards.
"""

from __future__ import annotations

import contextlib
import typing as t
from pathlib import Path

from flask_prancer_session.store.base import StoreDriver

from . import services

#: Makes store instances over one backend; every instance sees the same sessions
#: (except for the stores that live in one process).
StoreMaker = t.Callable[[], StoreDriver]


@contextlib.contextmanager
def _memory(tmp_path: Path) -> t.Iterator[StoreMaker]:
    from flask_prancer_session.store.memory import MemoryStore

    yield MemoryStore


@contextlib.contextmanager
def _storable(tmp_path: Path) -> t.Iterator[StoreMaker]:
    from flask_prancer_session.store.storable import StorableStore

    yield lambda: StorableStore(dir=str(tmp_path / "sessions"))


@contextlib.contextmanager
def _database(url: str) -> t.Iterator[StoreMaker]:
    sqlalchemy = services.require_module("sqlalchemy", "database")
    from flask_prancer_session.store.database import DatabaseStore

    table = services.unique_name("sessions")
    made: list[DatabaseStore] = []

    def make() -> StoreDriver:
        made.append(DatabaseStore(url=url, table=table))
        return made[-1]

    try:
        yield make
    finally:
        for store in made:
            store.close()  # waits for a purge in the background, which holds a connection
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


@contextlib.contextmanager
def _sqlite(tmp_path: Path) -> t.Iterator[StoreMaker]:
    with _database(f"sqlite:///{tmp_path / 'sessions.db'}") as make:
        yield make


def _on_server(name: str) -> t.Callable[[Path], t.ContextManager[StoreMaker]]:
    """Return the factory of database stores on the server and driver ``name``
    of :data:`services.DATABASE_SERVERS`."""

    @contextlib.contextmanager
    def factory(tmp_path: Path) -> t.Iterator[StoreMaker]:
        server = services.DATABASE_SERVERS[name]
        server.require()
        with _database(server.url) as make:
            yield make

    return factory


def _delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@contextlib.contextmanager
def _redis(tmp_path: Path) -> t.Iterator[StoreMaker]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    from flask_prancer_session.store.redis import RedisStore

    prefix = services.unique_name("prancer_test") + ":"
    try:
        yield lambda: RedisStore(url=services.REDIS_URL, key_prefix=prefix)
    finally:
        _delete_redis_prefix(prefix)


@contextlib.contextmanager
def _cachelib_simple(tmp_path: Path) -> t.Iterator[StoreMaker]:
    from cachelib import SimpleCache

    from flask_prancer_session.store.cachelib import CachelibStore

    yield lambda: CachelibStore(cache=SimpleCache(threshold=100_000))


@contextlib.contextmanager
def _cachelib_filesystem(tmp_path: Path) -> t.Iterator[StoreMaker]:
    from flask_prancer_session.store.cachelib import CachelibStore

    yield lambda: CachelibStore(backend="filesystem", cache_dir=str(tmp_path / "cache"))


@contextlib.contextmanager
def _cachelib_redis(tmp_path: Path) -> t.Iterator[StoreMaker]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    from flask_prancer_session.store.cachelib import CachelibStore

    prefix = services.unique_name("prancer_cachelib") + ":"
    try:
        yield lambda: CachelibStore(backend="redis", host="127.0.0.1", port=6379, key_prefix=prefix)
    finally:
        _delete_redis_prefix(prefix)


@contextlib.contextmanager
def _cachelib_memcached(tmp_path: Path) -> t.Iterator[StoreMaker]:
    address = services.require_memcached()
    import memcache
    from cachelib import MemcachedCache

    from flask_prancer_session.store.cachelib import CachelibStore

    # python-memcached's client is thread-local: each thread that uses it
    # opens its own connections, which only this list can reach to close.
    hosts: list[t.Any] = []

    class Client(memcache.Client):  # type: ignore[misc]
        def __init__(self, *args: t.Any, **kwargs: t.Any) -> None:
            super().__init__(*args, **kwargs)  # in every thread that uses it
            hosts.extend(self.servers)

    # memcached cannot list its entries, so what a test leaves there stays
    # until its timeout or until memcached evicts it; the prefix keeps it
    # apart from every other test's.
    prefix = services.unique_name("prancer_memcached") + ":"
    try:
        # The cache backend="memcached" makes, with python-memcached.
        yield lambda: CachelibStore(cache=MemcachedCache(Client([address])), key_prefix=prefix)
    finally:
        for host in hosts:
            host.close_socket()


#: Every store the conformance suite runs against. A new store joins by adding
#: a factory here.
STORE_FACTORIES: dict[str, t.Callable[[Path], t.ContextManager[StoreMaker]]] = {
    "memory": _memory,
    "storable": _storable,
    "sqlite": _sqlite,
    **{name: _on_server(name) for name in services.DATABASE_SERVERS},
    "redis": _redis,
    "cachelib-simple": _cachelib_simple,
    "cachelib-filesystem": _cachelib_filesystem,
    "cachelib-redis": _cachelib_redis,
    "cachelib-memcached": _cachelib_memcached,
}

#: Every store, for the suites where the store matters (``pytest.mark.stores``).
EVERY_STORE = list(STORE_FACTORIES)

#: The stores whose sessions outlive the process that wrote them.
PERSISTENT_STORES = [name for name in STORE_FACTORIES if name not in ("memory", "cachelib-simple")]
