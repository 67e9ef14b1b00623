"""The Redis store when the server stalls, drops its connection, or removes a
session while other processes write to it.

These run against a Redis server started for this module on a private port,
so pausing it stalls no one else's tests.
"""

from __future__ import annotations

import json
import multiprocessing
import shutil
import socket
import subprocess
import time
import typing as t

import pytest

from flask_prancer_session.changes import ChangeSet
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.errors import SessionStoreError
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key

from . import services

if t.TYPE_CHECKING:
    from multiprocessing.sharedctypes import Synchronized
    from multiprocessing.synchronize import Event

    import redis

    from flask_prancer_session.store.redis import RedisStore

pytestmark = pytest.mark.fault


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[str]:
    """Start a Redis server on a free loopback port; yield its URL."""
    module = services.require_module("redis", "redis")
    server = shutil.which("redis-server")
    if server is None:
        services.unavailable("redis-server is needed for the fault tests")
        raise AssertionError("unreachable")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = int(probe.getsockname()[1])
    root = tmp_path_factory.mktemp("redis")
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(root)]
    command += ["--save", "", "--appendonly", "no", "--logfile", "redis.log"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        client = module.Redis.from_url(url, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except module.ConnectionError:
                if time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {port} did not start")
                time.sleep(0.05)
        client.close()
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


@pytest.fixture
def admin(redis_url: str) -> t.Iterator[redis.Redis]:
    """A second connection, for the commands that inject faults."""
    import redis

    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def prefix(admin: redis.Redis) -> t.Iterator[str]:
    prefix = services.unique_name("prancer_fault") + ":"
    yield prefix
    keys = list(admin.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        admin.delete(*keys)


def redis_store(url: str, prefix: str, **options: t.Any) -> RedisStore:
    from flask_prancer_session.store.redis import RedisStore

    return RedisStore(url=url, key_prefix=prefix, **options)


def test_a_paused_server_fails_fast_and_the_store_recovers(
    redis_url: str, admin: redis.Redis, prefix: str
) -> None:
    store = redis_store(redis_url, prefix, socket_timeout=1)
    key = store_key(new_id())
    assert store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    admin.execute_command("CLIENT", "PAUSE", 3000, "ALL")
    try:
        started = time.monotonic()
        with pytest.raises(SessionStoreError):
            store.apply(key, ChangeSet(updated={"b": "2"}))
        assert time.monotonic() - started < 2.5
    finally:
        # Redis 7.0 holds UNPAUSE itself until the pause ends: either way,
        # the server answers again once this returns.
        admin.execute_command("CLIENT", "UNPAUSE")
    assert store.apply(key, ChangeSet(updated={"c": "3"})) is True
    record = store.fetch(key)
    assert record is not None
    # The failed write may or may not have reached the server.
    assert {"a": "1", "c": "3"}.items() <= record.data.items()
    assert set(record.data) <= {"a", "b", "c"}


def test_a_killed_connection_loses_nothing(redis_url: str, admin: redis.Redis, prefix: str) -> None:
    store = redis_store(redis_url, prefix, socket_timeout=2)
    key = store_key(new_id())
    store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    expected = {"a": "1"}
    operations: list[tuple[str, t.Callable[[], object], object]] = [
        ("fetch", lambda: store.fetch(key), "record"),
        ("apply", lambda: store.apply(key, ChangeSet(updated={"b": "2"})), True),
        ("touch", lambda: store.touch(key, store.expiry_for(store.clock())), None),
        ("fetch", lambda: store.fetch(key), "record"),
    ]
    for name, operation, good in operations:
        client_id = store.client.client_id()
        assert admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
        try:
            result = operation()
        except SessionStoreError:
            continue
        if good == "record":
            # Never a "no session" for a connection that broke.
            assert result is not None, name
            assert expected.items() <= result.data.items()  # type: ignore[attr-defined]
        else:
            assert result == good, name
        if name == "apply":
            expected["b"] = "2"
    record = store.fetch(key)
    assert record is not None and expected.items() <= record.data.items()


def _write_until_stopped(
    url: str, prefix: str, key: str, writer: int, count: Synchronized[int], stop: Event
) -> None:
    store = redis_store(url, prefix)
    n = 0
    while not stop.is_set():
        store.apply(key, ChangeSet(updated={f"w{writer}": str(n)}))
        n += 1
        with count.get_lock():
            count.value += 1


def _wait_for(count: Synchronized[int], target: int) -> None:
    deadline = time.monotonic() + 30
    while count.value < target:
        assert time.monotonic() < deadline, "the writers stalled"
        time.sleep(0.01)


@pytest.mark.parametrize("ending", ["remove", "expire"])
def test_writers_in_other_processes_never_revive_a_session(
    redis_url: str, admin: redis.Redis, prefix: str, ending: str
) -> None:
    store = redis_store(redis_url, prefix)
    key = store_key(new_id())
    store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    # spawn, not fork: fresh interpreters, as separate workers would be.
    context = multiprocessing.get_context("spawn")
    count = context.Value("i", 0)
    stop = context.Event()
    writers = [
        context.Process(target=_write_until_stopped, args=(redis_url, prefix, key, n, count, stop))
        for n in range(2)
    ]
    for writer in writers:
        writer.start()
    try:
        _wait_for(count, 50)
        if ending == "remove":
            assert store.remove(key) is True
        else:
            # Expired a second ago, so every later script finds it expired,
            # even one whose writer read its clock just before this touch:
            # expiring it at exactly "now" let such a write extend it.
            store.touch(key, store.clock() - 1)
        ended_at = count.value
        assert store.fetch(key) is None
        _wait_for(count, ended_at + 200)
        assert store.fetch(key) is None
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
    assert [writer.exitcode for writer in writers] == [0, 0]
    assert store.fetch(key) is None
    if ending == "remove":
        assert not admin.exists(store.name_for(key))


def _log_in_and_out_until_stopped(
    url: str, prefix: str, writer: int, count: Synchronized[int], stop: Event
) -> None:
    store = redis_store(url, prefix)
    ann = json.dumps("ann")
    n = 0
    while not stop.is_set():
        key = store_key(new_id())
        store.apply(
            key, ChangeSet(updated={USER_KEY: ann, "w": str(writer)}, created_at=store.clock())
        )
        store.apply(key, ChangeSet(updated={"n": str(n)}))
        if n % 3 == 0:
            store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
        elif n % 3 == 1:
            store.remove(key)
        n += 1
        with count.get_lock():
            count.value += 1


def test_a_final_remove_user_leaves_no_session_and_no_entry(
    redis_url: str, admin: redis.Redis, prefix: str
) -> None:
    store = redis_store(redis_url, prefix)
    context = multiprocessing.get_context("spawn")
    count = context.Value("i", 0)
    stop = context.Event()
    writers = [
        context.Process(
            target=_log_in_and_out_until_stopped, args=(redis_url, prefix, n, count, stop)
        )
        for n in range(2)
    ]
    for writer in writers:
        writer.start()
    try:
        _wait_for(count, 30)
        # Ending ann's sessions while she logs in and out elsewhere.
        ended = 0
        while count.value < 600:
            ended += store.remove_user("ann")
        assert ended
    finally:
        stop.set()
        for writer in writers:
            writer.join(timeout=30)
    assert [writer.exitcode for writer in writers] == [0, 0]
    store.remove_user("ann")
    assert store.sessions_of("ann") == {}
    assert all(USER_KEY not in record.data for _, record in store.scan())
    # Nothing is left listed: the entries of sessions that logged out went
    # with the logout, the others with the sessions.
    assert not admin.exists(store.index_name_for("ann"))


def test_a_server_that_lost_its_scripts_still_ends_a_users_sessions(
    redis_url: str, admin: redis.Redis, prefix: str
) -> None:
    store = redis_store(redis_url, prefix)
    keys = [store_key(new_id()) for _ in range(5)]
    for key in keys:
        store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}, created_at=store.clock()))
    store.remove(store_key(new_id()))
    # As after a restart: the scripts run in a pipeline must be loaded again.
    admin.script_flush()
    assert store.remove_user("ann") == 5
    assert all(store.fetch(key) is None for key in keys)
    assert not admin.exists(store.index_name_for("ann"))


def test_scripts_lost_between_requests_cost_no_error(
    redis_url: str, admin: redis.Redis, prefix: str
) -> None:
    store = redis_store(redis_url, prefix)
    key = store_key(new_id())
    operations: list[tuple[str, t.Callable[[], object], object]] = [
        ("create", lambda: store.apply(key, ChangeSet({"a": "1"}, created_at=store.clock())), True),
        ("update", lambda: store.apply(key, ChangeSet(updated={"b": "2"})), True),
        ("touch", lambda: store.touch(key, store.expiry_for(store.clock())), None),
        ("remove a", lambda: store.apply(key, ChangeSet(removed=frozenset({"a"}))), True),
        ("update", lambda: store.apply(key, ChangeSet(updated={"c": "3"})), True),
    ]
    for name, operation, result in operations:
        # As after a restart, a failover, or an operator's SCRIPT FLUSH.
        admin.script_flush()
        assert operation() == result, name
    record = store.fetch(key)
    assert record is not None and record.data == {"b": "2", "c": "3"}


@pytest.mark.parametrize("retry", ["default", "none"])
def test_a_connection_the_server_closed_between_requests_costs_no_error(
    redis_url: str, admin: redis.Redis, prefix: str, retry: str
) -> None:
    # Without retries, the pool's check of the connection it hands out is
    # what replaces it.
    store = redis_store(redis_url, prefix, **({} if retry == "default" else {"retry": None}))
    key = store_key(new_id())
    store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))

    def data() -> dict[str, str] | None:
        record = store.fetch(key)
        return None if record is None else record.data

    operations: list[tuple[str, t.Callable[[], object], object]] = [
        ("fetch", data, {"a": "1"}),
        ("update", lambda: store.apply(key, ChangeSet(updated={"b": "2"})), True),
        ("touch", lambda: store.touch(key, store.expiry_for(store.clock())), None),
        ("remove a", lambda: store.apply(key, ChangeSet(removed=frozenset({"a"}))), True),
        ("fetch", data, {"b": "2"}),
    ]
    for name, operation, result in operations:
        client_id = store.client.client_id()
        assert admin.execute_command("CLIENT", "KILL", "ID", client_id) == 1
        assert operation() == result, name
    store.close()
