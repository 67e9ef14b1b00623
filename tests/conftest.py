from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_prancer_session.store.base import StoreDriver

from . import services
from .clock import FakeClock


def _memory(tmp_path: Path) -> t.Iterator[StoreDriver]:
    from flask_prancer_session.store.memory import MemoryStore

    yield MemoryStore()


def _storable(tmp_path: Path) -> t.Iterator[StoreDriver]:
    from flask_prancer_session.store.storable import StorableStore

    yield StorableStore(dir=str(tmp_path / "sessions"))


def _database(url: str) -> t.Iterator[StoreDriver]:
    sqlalchemy = services.require_module("sqlalchemy", "database")
    from flask_prancer_session.store.database import DatabaseStore

    table = services.unique_name("sessions")
    store = DatabaseStore(url=url, table=table)
    try:
        yield store
    finally:
        with store.engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
        store.engine.dispose()


def _sqlite(tmp_path: Path) -> t.Iterator[StoreDriver]:
    yield from _database(f"sqlite:///{tmp_path / 'sessions.db'}")


def _postgresql(tmp_path: Path) -> t.Iterator[StoreDriver]:
    services.require_module("psycopg", "postgres")
    services.require_server("PostgreSQL", "127.0.0.1", 5432)
    yield from _database(services.POSTGRES_URL)


def _mariadb(tmp_path: Path) -> t.Iterator[StoreDriver]:
    services.require_module("pymysql", "mysql")
    services.require_server("MariaDB", "127.0.0.1", 3306)
    yield from _database(services.MARIADB_URL)


def _delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _redis(tmp_path: Path) -> t.Iterator[StoreDriver]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    from flask_prancer_session.store.redis import RedisStore

    prefix = services.unique_name("prancer_test") + ":"
    store = RedisStore(url=services.REDIS_URL, key_prefix=prefix)
    try:
        yield store
    finally:
        _delete_redis_prefix(prefix)


def _cachelib_simple(tmp_path: Path) -> t.Iterator[StoreDriver]:
    from cachelib import SimpleCache

    from flask_prancer_session.store.cachelib import CachelibStore

    yield CachelibStore(cache=SimpleCache(threshold=100_000))


def _cachelib_filesystem(tmp_path: Path) -> t.Iterator[StoreDriver]:
    from flask_prancer_session.store.cachelib import CachelibStore

    yield CachelibStore(backend="filesystem", cache_dir=str(tmp_path / "cache"))


def _cachelib_redis(tmp_path: Path) -> t.Iterator[StoreDriver]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    from flask_prancer_session.store.cachelib import CachelibStore

    prefix = services.unique_name("prancer_cachelib") + ":"
    try:
        yield CachelibStore(backend="redis", host="127.0.0.1", port=6379, key_prefix=prefix)
    finally:
        _delete_redis_prefix(prefix)


#: Every store the conformance suite runs against. A new store joins by adding
#: a factory here.
STORE_FACTORIES: dict[str, t.Callable[[Path], t.Iterator[StoreDriver]]] = {
    "memory": _memory,
    "storable": _storable,
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "mariadb": _mariadb,
    "redis": _redis,
    "cachelib-simple": _cachelib_simple,
    "cachelib-filesystem": _cachelib_filesystem,
    "cachelib-redis": _cachelib_redis,
}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(STORE_FACTORIES), ids=list(STORE_FACTORIES))
def store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> t.Iterator[StoreDriver]:
    """Each store driver we ship, empty, on the fake :func:`clock`."""
    factory = STORE_FACTORIES[request.param]
    for instance in factory(tmp_path):
        instance.clock = clock
        yield instance


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test secret")
    return app


@pytest.fixture
def store_app(app: Flask, store: StoreDriver) -> Flask:
    """:func:`app` with sessions in each shipped :func:`store`."""
    from flask_prancer_session import PrancerSession

    PrancerSession(app, store=store)
    return app


@pytest.fixture
def client(store_app: Flask) -> FlaskClient:
    return store_app.test_client()
