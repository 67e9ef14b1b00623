"""The example app under gunicorn and concurrent visitors loses no session state.

Each store gets a few seconds of load from ``benchmarks.load``: no request may
fail, no visitor's count may go wrong, and no cookie may open its session
again after a logout or a login. Deselect with ``-m "not load"``.
"""

from __future__ import annotations

import pytest

from benchmarks.load import LOAD_STORES
from benchmarks.load import run_load

from . import services

pytestmark = pytest.mark.load

#: What each store needs beyond the test extra: (module, extra, server, port).
NEEDS: dict[str, tuple[str, str, str, int] | None] = {
    "storable": None,
    "sqlite": None,
    "postgresql": ("psycopg", "postgres", "PostgreSQL", 5432),
    "mariadb": ("pymysql", "mysql", "MariaDB", 3306),
    "redis": ("redis", "redis", "Redis", 6379),
}


@pytest.fixture(params=LOAD_STORES)
def load_store(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    services.require_module("gunicorn", "test")
    services.require_module("sqlalchemy", "database")
    need = NEEDS[name]
    if need is not None:
        module, extra, server, port = need
        services.require_module(module, extra)
        services.require_server(server, "127.0.0.1", port)
    return name


def test_no_session_goes_wrong_under_load(load_store: str) -> None:
    result = run_load(load_store, workers=4, clients=8, seconds=3, max_requests=20_000)
    tally = result.tally
    assert tally.failures == []
    assert tally.lost_updates == []
    assert tally.alive_after_logout == []
    assert tally.alive_after_login == []
    # The checks did run.
    assert tally.checked["count"] > 0
    assert tally.checked["replay-login"] > 0
    assert tally.checked["replay-logout"] > 0
