"""The stores the benchmarks run on, each over its own empty backend.

Every entry of :data:`STORES` is a context manager that checks the store can
run here (its client library is installed and its server answers on
loopback), yields the ``PRANCER_SESSION["store"]`` config for a fresh
backend (a temp directory, a table or key prefix unique to this run), and
removes that backend afterwards. Nothing outside it is touched, so a benchmark
can share a database or Redis with the tests or another run.

The servers are found through the variables the tests use
(``PRANCER_TEST_POSTGRES_URL``, ``PRANCER_TEST_MARIADB_URL``,
``PRANCER_TEST_REDIS_URL``), with the same loopback defaults.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import typing as t
import uuid
from pathlib import Path

POSTGRES_URL = os.environ.get(
    "PRANCER_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MARIADB_URL = os.environ.get("PRANCER_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
REDIS_URL = os.environ.get("PRANCER_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

#: A store's config, as it goes under ``PRANCER_SESSION["store"]``. Only
#: strings, numbers and booleans, so it can be written to a TOML file.
StoreConfig = dict[str, t.Any]


class Unavailable(Exception):
    """A store or contender cannot run here; the message says why."""


def require_module(name: str, install: str) -> None:
    """Raise :class:`Unavailable` unless ``name`` can be imported."""
    try:
        importlib.import_module(name)
    except ImportError as error:
        raise Unavailable(f"{name} is not installed (pip install {install!r})") from error


def require_server(name: str, url: str) -> None:
    """Raise :class:`Unavailable` unless something listens where ``url`` points."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port
    if port is None:
        raise Unavailable(f"{name}: no port in {url!r}")
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError as error:
        raise Unavailable(f"{name} is not reachable at {host}:{port}: {error}") from error


def unique_name(prefix: str) -> str:
    """Return a table name or key prefix no other run uses."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def drop_table(url: str, table: str) -> None:
    """Drop ``table`` from the database at ``url``, if it exists."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


def delete_redis_prefix(prefix: str) -> None:
    """Delete every Redis key that starts with ``prefix``."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) == 1000:
                client.delete(*batch)
                batch.clear()
        if batch:
            client.delete(*batch)
    finally:
        client.close()


@contextlib.contextmanager
def memory(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    yield {"driver": "memory", "options": options}


@contextlib.contextmanager
def storable(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    yield {"driver": "storable", "options": {"dir": str(workdir / "storable"), **options}}


@contextlib.contextmanager
def _database(url: str, **options: t.Any) -> t.Iterator[StoreConfig]:
    table = unique_name("bench_sessions")
    try:
        yield {"driver": "database", "options": {"url": url, "table": table, **options}}
    finally:
        drop_table(url, table)


@contextlib.contextmanager
def sqlite(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    require_module("sqlalchemy", "flask-prancer-session[database]")
    with _database(f"sqlite:///{workdir / 'sessions.db'}", **options) as config:
        yield config


@contextlib.contextmanager
def postgresql(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    require_module("sqlalchemy", "flask-prancer-session[postgres]")
    require_module("psycopg", "flask-prancer-session[postgres]")
    require_server("PostgreSQL", POSTGRES_URL)
    with _database(POSTGRES_URL, **options) as config:
        yield config


@contextlib.contextmanager
def mariadb(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    require_module("sqlalchemy", "flask-prancer-session[mysql]")
    require_module("pymysql", "flask-prancer-session[mysql]")
    require_server("MariaDB", MARIADB_URL)
    with _database(MARIADB_URL, **options) as config:
        yield config


@contextlib.contextmanager
def redis(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    require_module("redis", "flask-prancer-session[redis]")
    require_server("Redis", REDIS_URL)
    prefix = unique_name("prancer_bench") + ":"
    try:
        yield {"driver": "redis", "options": {"url": REDIS_URL, "key_prefix": prefix, **options}}
    finally:
        delete_redis_prefix(prefix)


@contextlib.contextmanager
def cachelib_filesystem(workdir: Path, **options: t.Any) -> t.Iterator[StoreConfig]:
    yield {
        "driver": "cachelib",
        "options": {"backend": "filesystem", "cache_dir": str(workdir / "cachelib"), **options},
    }


#: The stores by name, in the order the reports list them.
STORES: dict[str, t.Callable[..., t.ContextManager[StoreConfig]]] = {
    "memory": memory,
    "storable": storable,
    "sqlite": sqlite,
    "postgresql": postgresql,
    "mariadb": mariadb,
    "redis": redis,
    "cachelib-filesystem": cachelib_filesystem,
}
