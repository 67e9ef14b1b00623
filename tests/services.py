"""Where the test servers are, and what to do when one is missing.

Each server's address comes from an environment variable with a loopback
default. When ``PRANCER_REQUIRE_SERVICES=1`` (as in CI) a missing server or
client library fails the test; otherwise the test is skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import types

import pytest

# The servers the benchmarks use too, defined once.
from benchmarks.stores import MARIADB_URL as MARIADB_URL
from benchmarks.stores import POSTGRES_URL as POSTGRES_URL
from benchmarks.stores import REDIS_URL as REDIS_URL
from benchmarks.stores import unique_name as unique_name

POSTGRES_PSYCOPG2_URL = os.environ.get(
    "PRANCER_TEST_POSTGRES_PSYCOPG2_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)
MARIADB_MYSQLCLIENT_URL = os.environ.get(
    "PRANCER_TEST_MARIADB_MYSQLCLIENT_URL", "mysql+mysqldb://root@127.0.0.1:3306/test"
)
#: ``host:port`` of the memcached server, which .ci/run starts.
MEMCACHED_ADDRESS = os.environ.get("PRANCER_TEST_MEMCACHED", "127.0.0.1:11211")

REQUIRED = os.environ.get("PRANCER_REQUIRE_SERVICES") == "1"


def unavailable(reason: str) -> None:
    """Skip the current test, or fail it when services are required."""
    if REQUIRED:
        pytest.fail(f"{reason} (PRANCER_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(reason)


def require_module(name: str, extra: str) -> types.ModuleType:
    """Import ``name``, or skip/fail naming the extra that installs it."""
    try:
        return importlib.import_module(name)
    except ImportError:
        unavailable(f"{name} is not installed (pip install 'flask-prancer-session[{extra}]')")
        raise  # unreachable: unavailable() always raises


def require_server(name: str, host: str, port: int) -> None:
    """Skip/fail unless something listens on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=1):
            pass
    except OSError as error:
        unavailable(f"{name} is not reachable at {host}:{port}: {error}")


def require_memcached() -> str:
    """Skip/fail unless python-memcached is installed and memcached answers;
    return the server's ``host:port``."""
    require_module("memcache", "test")
    host, _, port = MEMCACHED_ADDRESS.rpartition(":")
    require_server("memcached", host, int(port))
    return MEMCACHED_ADDRESS


@dataclasses.dataclass(frozen=True)
class DatabaseServer:
    """A database server on loopback, reached through one driver."""

    url: str
    module: str  # the driver's
    extra: str  # that installs the driver
    name: str
    port: int

    def require(self) -> None:
        """Skip/fail unless the driver is installed and the server answers."""
        require_module(self.module, self.extra)
        require_server(self.name, "127.0.0.1", self.port)


#: Every database server and driver the tests run the database store on.
DATABASE_SERVERS = {
    "postgresql": DatabaseServer(POSTGRES_URL, "psycopg", "postgres", "PostgreSQL", 5432),
    "postgresql-psycopg2": DatabaseServer(
        POSTGRES_PSYCOPG2_URL, "psycopg2", "test", "PostgreSQL", 5432
    ),
    "mariadb": DatabaseServer(MARIADB_URL, "pymysql", "mysql", "MariaDB", 3306),
    "mariadb-mysqlclient": DatabaseServer(
        MARIADB_MYSQLCLIENT_URL, "MySQLdb", "mysqlclient", "MariaDB", 3306
    ),
}
