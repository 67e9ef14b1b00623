"""One visitor's session shared by two app processes through Redis or PostgreSQL."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import typing as t
from pathlib import Path

import pytest

from . import services

ROOT = Path(__file__).resolve().parent.parent


def _redis_store() -> t.Iterator[dict[str, t.Any]]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    import redis

    prefix = services.unique_name("prancer_mp") + ":"
    yield {"driver": "redis", "options": {"url": services.REDIS_URL, "key_prefix": prefix}}
    client = redis.Redis.from_url(services.REDIS_URL)
    keys = list(client.scan_iter(match=f"{prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _postgresql_store() -> t.Iterator[dict[str, t.Any]]:
    sqlalchemy = services.require_module("sqlalchemy", "database")
    services.require_module("psycopg", "postgres")
    services.require_server("PostgreSQL", "127.0.0.1", 5432)
    table = services.unique_name("sessions_mp")
    yield {"driver": "database", "options": {"url": services.POSTGRES_URL, "table": table}}
    engine = sqlalchemy.create_engine(services.POSTGRES_URL)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f"DROP TABLE IF EXISTS {table}"))
    engine.dispose()


@pytest.fixture(params=["redis", "postgresql"])
def shared_store(request: pytest.FixtureRequest) -> t.Iterator[dict[str, t.Any]]:
    factory = _redis_store if request.param == "redis" else _postgresql_store
    yield from factory()


class AppProcess:
    """The app of ``multiprocess_app.py`` serving in a separate Python process."""

    def __init__(self, store: dict[str, t.Any]) -> None:
        env = {**os.environ, "PRANCER_TEST_STORE": json.dumps(store)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.multiprocess_app"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            self.process.wait(10)
            pytest.fail(f"the app process exited with {self.process.returncode}")
        self.port = int(line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
        assert self.process.stdout is not None
        self.process.stdout.close()

    def get(self, path: str, cookie: str | None = None) -> tuple[str, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.request(
                "GET", path, headers={"Cookie": f"PSESSION={cookie}"} if cookie else {}
            )
            response = connection.getresponse()
            assert response.status == 200, response.read()
            return response.read().decode(), response.getheader("Set-Cookie")
        finally:
            connection.close()


def test_two_processes_share_and_update_one_session(shared_store: dict[str, t.Any]) -> None:
    first, second = AppProcess(shared_store), AppProcess(shared_store)
    try:
        _, set_cookie = first.get("/set/origin")
        assert set_cookie is not None
        cookie = set_cookie.split(";")[0].partition("=")[2]

        seen = json.loads(second.get("/keys", cookie)[0])
        assert seen["pid"] == second.process.pid
        assert seen["session"] == {"origin": first.process.pid}

        failures: list[BaseException] = []

        def client(n: int) -> None:
            server = (first, second)[n % 2]
            try:
                for i in range(5):
                    server.get(f"/set/c{n}r{i}", cookie)
            except BaseException as error:  # reported below
                failures.append(error)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert failures == []

        expected = {f"c{n}r{i}" for n in range(8) for i in range(5)} | {"origin"}
        for server in (first, second):
            data = json.loads(server.get("/keys", cookie)[0])["session"]
            assert set(data) == expected
        writers = {pid for key, pid in data.items() if key != "origin"}
        assert writers == {first.process.pid, second.process.pid}
    finally:
        first.stop()
        second.stop()
