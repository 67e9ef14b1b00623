"""What is particular to the Redis store: key layout, round trips, TTLs,
failures, and Redis Cluster. The shared behaviour is in test_store_contract.py."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import time
import typing as t
from dataclasses import replace
from pathlib import Path

import pytest

from flask_prancer_session.changes import ChangeSet
from flask_prancer_session.changes import Record
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.errors import ConfigurationError
from flask_prancer_session.errors import SessionStoreError
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key

from . import services

if t.TYPE_CHECKING:
    import redis

    from flask_prancer_session.store.redis import RedisStore

    from .clock import FakeClock

LOGGER = "flask_prancer_session.store.redis"


@pytest.fixture
def redis_client() -> t.Iterator[redis.Redis]:
    module = services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    client: redis.Redis = module.Redis.from_url(services.REDIS_URL)
    yield client
    client.close()


@pytest.fixture
def prefix(redis_client: redis.Redis) -> t.Iterator[str]:
    prefix = services.unique_name("prancer_test") + ":"
    yield prefix
    keys = list(redis_client.scan_iter(match=f"{prefix}*", count=1000))
    if keys:
        redis_client.delete(*keys)


@pytest.fixture
def make_redis_store(prefix: str, clock: FakeClock) -> t.Callable[..., RedisStore]:
    from flask_prancer_session.store.redis import RedisStore

    def make(**options: t.Any) -> RedisStore:
        if "client" not in options:
            options.setdefault("url", services.REDIS_URL)
        store = RedisStore(key_prefix=prefix, **options)
        store.clock = clock
        return store

    return make


@pytest.fixture
def rstore(make_redis_store: t.Callable[..., RedisStore]) -> RedisStore:
    return make_redis_store()


def created(clock: FakeClock, **data: str) -> ChangeSet:
    return ChangeSet(updated=data, created_at=clock())


def test_one_hash_per_session_with_hash_tag(
    rstore: RedisStore, redis_client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    from redis.crc import key_slot

    key = store_key(new_id())
    rstore.apply(key, created(clock, user='"42"', csrf='"abc"'))
    name = f"{prefix}{{{key}}}"
    assert rstore.name_for(key) == name
    assert list(redis_client.scan_iter(match=f"{prefix}*")) == [name.encode()]
    assert redis_client.type(name) == b"hash"
    fields = redis_client.hgetall(name)
    assert set(fields) == {b"d:user", b"d:csrf", b"created", b"expires"}
    assert (fields[b"d:user"], fields[b"d:csrf"]) == (b'"42"', b'"abc"')
    assert float(fields[b"created"]) == clock()
    assert float(fields[b"expires"]) == clock() + rstore.expiration_timeout
    # In a cluster the slot depends on the store key alone, not the prefix.
    assert key_slot(name.encode()) == key_slot(key.encode())
    assert key_slot(b"other:{" + key.encode() + b"}") == key_slot(name.encode())


def test_fields_outside_the_data_namespace_are_not_data(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, created(clock, a='"1"'))
    redis_client.hset(rstore.name_for(key), "future-metadata", "x")
    record = rstore.fetch(key)
    assert record is not None and record.data == {"a": '"1"'}


def test_configuration_errors(prefix: str) -> None:
    services.require_module("redis", "redis")
    import redis

    from flask_prancer_session.store.redis import RedisStore

    cases: list[tuple[dict[str, t.Any], str]] = [
        ({}, "url"),
        ({"url": "http://127.0.0.1:6379"}, "url"),
        ({"url": "redis://127.0.0.1:notaport"}, "url"),
        ({"url": services.REDIS_URL, "client": redis.Redis()}, "client"),
        ({"client": redis.Redis(), "socket_timeout": 1}, "socket_timeout"),
        ({"url": services.REDIS_URL, "socket_timeot": 1}, "socket_timeot"),
        ({"url": services.REDIS_URL, "key_prefix": "app:{x}:"}, "key_prefix"),
    ]
    for options, key in cases:
        with pytest.raises(ConfigurationError) as info:
            RedisStore(**options)
        assert info.value.key == key, options


def test_missing_redis_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask_prancer_session.store.redis import RedisStore

    monkeypatch.setitem(sys.modules, "redis", None)
    with pytest.raises(ConfigurationError, match=r"flask-prancer-session\[redis\]"):
        RedisStore(url="redis://127.0.0.1:6379")


def test_connection_options(make_redis_store: t.Callable[..., RedisStore]) -> None:
    defaults = make_redis_store().client.connection_pool.connection_kwargs
    assert defaults["socket_timeout"] == 5.0
    assert defaults["socket_connect_timeout"] == 5.0
    given = make_redis_store(socket_timeout=2.5, health_check_interval=30)
    kwargs = given.client.connection_pool.connection_kwargs
    assert kwargs["socket_timeout"] == 2.5
    assert kwargs["health_check_interval"] == 30


def test_client_is_used_as_given(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock
) -> None:
    import redis

    # decode_responses=True: the store must read str as well as bytes.
    client = redis.Redis.from_url(services.REDIS_URL, decode_responses=True)
    store = make_redis_store(client=client)
    assert store.client is client
    key = store_key(new_id())
    store.apply(key, created(clock, a='"é"'))
    record = store.fetch(key)
    assert record is not None and record.data == {"a": '"é"'}
    client.close()


def _counting(make_redis_store: t.Callable[..., RedisStore]) -> tuple[RedisStore, list[object]]:
    """Return a store whose connections note each round trip (a command, or
    a pipeline's commands, sent at once) in the list returned with it."""
    import redis

    sent: list[object] = []

    class CountingConnection(redis.Connection):
        def send_packed_command(self, command: t.Any, check_health: bool = True) -> None:
            sent.append(command)
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

    return make_redis_store(connection_class=CountingConnection), sent


def test_every_operation_is_one_round_trip(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock
) -> None:
    store, sent = _counting(make_redis_store)
    key = store_key(new_id())
    operations: list[t.Callable[[], object]] = [
        lambda: store.apply(key, created(clock, a='"1"')),
        lambda: store.fetch(key),
        lambda: store.apply(key, ChangeSet(updated={"b": '"2"'}, removed=frozenset({"a"}))),
        # What rekey writes: a compare-and-set, in the same script.
        lambda: store.apply(key, ChangeSet(updated={"b": '"3"'}, expected={"b": '"2"'})),
        lambda: store.touch(key, clock() + 60),
        lambda: store.apply(key, ChangeSet(removed=frozenset({"b"}))),
        lambda: store.apply(key, created(clock, a='"1"')),
        lambda: store.remove(key),
    ]
    # The first round connects and may load the scripts (NOSCRIPT, SCRIPT LOAD).
    for operation in operations:
        operation()
    counts = []
    for operation in operations:
        sent.clear()
        operation()
        counts.append(len(sent))
    assert counts == [1] * len(operations)


def test_replies_are_parsed_by_hiredis(rstore: RedisStore) -> None:
    # redis-py's pure-Python parser costs more than the round trip itself.
    services.require_module("hiredis", "redis")
    from redis.utils import HIREDIS_AVAILABLE

    assert HIREDIS_AVAILABLE
    # A connection like those the pool hands out (get_connection's signature
    # changed within redis-py 5).
    connection = rstore.client.connection_pool.make_connection()
    try:
        assert type(connection._parser).__name__ == "_HiredisParser"
    finally:
        connection.disconnect()
    # And the commands each request sends are packed by hiredis alone.
    import hiredis

    assert rstore._pack is hiredis.pack_command


def test_values_are_encoded_as_the_clients_own_commands_encode_them(
    make_redis_store: t.Callable[..., RedisStore],
    redis_client: redis.Redis,
    prefix: str,
    clock: FakeClock,
) -> None:
    import redis

    client = redis.Redis.from_url(services.REDIS_URL, encoding="latin-1", decode_responses=True)
    store = make_redis_store(client=client)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    store.apply(key, ChangeSet(updated={"a": '"é"'}))
    reference = f"{prefix}reference"
    client.hset(reference, "v", '"é"')
    assert redis_client.hget(store.name_for(key), "d:a") == redis_client.hget(reference, "v")
    record = store.fetch(key)
    assert record is not None and record.data == {"a": client.hget(reference, "v")}
    client.close()


def test_the_common_write_is_one_short_script(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock
) -> None:
    store, sent = _counting(make_redis_store)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    store.apply(key, ChangeSet(updated={"a": '"2"'}))  # loads the script
    sent.clear()
    clock.advance(10)
    assert store.apply(key, ChangeSet(updated={"a": '"3"', "b": '"4"'}, timeout=60)) is True
    assert len(sent) == 1
    # Not the general script: a third of its server time.
    assert store._update_script.sha.encode() in b"".join(sent[0])
    assert store.fetch(key) == Record({"a": '"3"', "b": '"4"'}, clock() - 10, clock() + 60)


def test_the_short_script_never_revives_a_session(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    name = rstore.name_for(key)
    rstore.apply(key, created(clock, a='"1"'))
    clock.advance(rstore.expiration_timeout)
    # Expired, though Redis still has the hash: the general script decides.
    assert rstore.apply(key, ChangeSet(updated={"b": '"2"'})) is False
    assert redis_client.hgetall(name).keys() == {b"d:a", b"created", b"expires"}
    redis_client.delete(name)
    assert rstore.apply(key, ChangeSet(updated={"b": '"2"'})) is False
    assert not redis_client.exists(name)


def test_the_short_script_leaves_a_due_index_entry_to_the_general_one(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    index = rstore.index_name_for("ann")
    timeout = rstore.expiration_timeout
    rstore.apply(key, bind(clock, "ann"))
    listed_until = clock() + 2 * timeout
    clock.advance(timeout / 2)
    rstore.apply(key, ChangeSet(updated={"n": "1"}))
    assert redis_client.zscore(index, key) == listed_until
    # Now the session would outlive its entry: the entry moves with it.
    clock.advance(timeout * 0.9)
    assert rstore.apply(key, ChangeSet(updated={"n": "2"})) is True
    record = rstore.fetch(key)
    assert record is not None and record.data["n"] == "2"
    score = redis_client.zscore(index, key)
    assert score is not None and score >= record.expires_at > listed_until
    assert set(rstore.sessions_of("ann")) == {key}


def test_changes_beyond_the_short_script_take_the_general_one(
    rstore: RedisStore, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, bind(clock, "ann", a='"1"', b='"1"'))

    def data() -> dict[str, str]:
        record = rstore.fetch(key)
        assert record is not None
        return record.data

    assert rstore.apply(key, ChangeSet(updated={"c": '"1"'}, removed=frozenset({"a"})))
    assert data().keys() == {USER_KEY, "b", "c"}
    # A compare-and-set that fails leaves the value.
    assert rstore.apply(key, ChangeSet(updated={"b": '"2"'}, expected={"b": '"0"'}))
    assert data()["b"] == '"1"'
    rstore.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    assert (rstore.sessions_of("ann").keys(), rstore.sessions_of("bob").keys()) == (set(), {key})
    rstore.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    assert rstore.sessions_of("bob") == {}
    # More values than Lua's unpack() takes at once.
    many = {f"k{n}": str(n) for n in range(5000)}
    assert rstore.apply(key, ChangeSet(updated=many))
    assert data() == {"b": '"1"', "c": '"1"', **many}


@pytest.mark.parametrize("protocol", [2, 3])
@pytest.mark.parametrize("decode_responses", [False, True], ids=["bytes", "str"])
def test_replies_are_read_alike_in_either_protocol(
    make_redis_store: t.Callable[..., RedisStore],
    clock: FakeClock,
    protocol: int,
    decode_responses: bool,
) -> None:
    import redis

    # RESP2 answers HGETALL with a flat list, RESP3 with a map.
    client = redis.Redis.from_url(
        services.REDIS_URL, protocol=protocol, decode_responses=decode_responses
    )
    store = make_redis_store(client=client)
    key = store_key(new_id())
    assert store.apply(key, created(clock, a='"é"')) is True
    assert store.apply(key, ChangeSet(updated={"b": '"2"'})) is True
    store.touch(key, clock() + 60)
    assert store.fetch(key) == Record({"a": '"é"', "b": '"2"'}, clock(), clock() + 60)
    assert store.fetch(store_key(new_id())) is None
    client.close()


def test_a_command_that_loses_its_connection_is_retried_on_a_new_one(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock
) -> None:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    failing: list[redis.Connection] = []
    disconnected: list[redis.Connection] = []

    class FlakyConnection(redis.Connection):
        fail = False

        def send_packed_command(self, command: t.Any, check_health: bool = True) -> None:
            if FlakyConnection.fail:
                FlakyConnection.fail = False
                failing.append(self)
                raise redis.ConnectionError("lost on the way")
            super().send_packed_command(command, check_health)  # type: ignore[no-untyped-call]

        def disconnect(self, *args: t.Any, **kwargs: t.Any) -> None:
            disconnected.append(self)
            super().disconnect(*args, **kwargs)  # type: ignore[no-untyped-call]

    key = store_key(new_id())
    retrying = make_redis_store(connection_class=FlakyConnection, retry=Retry(NoBackoff(), 1))
    retrying.apply(key, created(clock, a='"1"'))
    operations: list[tuple[t.Callable[[], object], object]] = [
        (lambda: retrying.apply(key, ChangeSet(updated={"b": '"2"'})), True),
        (lambda: retrying.touch(key, clock() + 60), None),
        (lambda: retrying.fetch(key), Record({"a": '"1"', "b": '"2"'}, clock(), clock() + 60)),
    ]
    for operation, result in operations:
        FlakyConnection.fail = True
        disconnected.clear()
        assert operation() == result
        # The connection in an unknown state was closed before the retry.
        assert failing[-1] in disconnected
    # Without retries, it fails, and the connection is not reused as it was.
    once = make_redis_store(connection_class=FlakyConnection, retry=Retry(NoBackoff(), 0))
    once.fetch(key)
    FlakyConnection.fail = True
    disconnected.clear()
    with pytest.raises(SessionStoreError):
        once.fetch(key)
    assert failing[-1] in disconnected
    assert once.fetch(key) is not None
    for store in (retrying, once):
        store.client.close()


def test_traced_clients_send_every_command_through_execute_command(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    traced: list[object] = []
    execute_command = redis.Redis.execute_command

    # What tracing such as OpenTelemetry's redis instrumentation does.
    @functools.wraps(execute_command)
    def tracing(self: redis.Redis, *args: t.Any, **options: t.Any) -> t.Any:
        traced.append(args[0])
        return execute_command(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", tracing)
    store = make_redis_store()
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    traced.clear()
    store.fetch(key)
    store.apply(key, ChangeSet(updated={"b": '"2"'}))
    store.touch(key, clock() + 60)
    assert traced == ["HGETALL", "EVALSHA", "EVALSHA"]


def test_a_forked_process_makes_its_own_connections(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock
) -> None:
    import redis

    made: list[redis.Connection] = []

    class NotedConnection(redis.Connection):
        def __init__(self, **kwargs: t.Any) -> None:
            super().__init__(**kwargs)
            made.append(self)

    store = make_redis_store(connection_class=NotedConnection)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    inherited = list(made)
    # As in a child process after fork(): the pool was made by another pid.
    pool = store.client.connection_pool
    pool.pid = -1
    try:
        assert store.fetch(key) is not None
        assert store.apply(key, ChangeSet(updated={"b": '"2"'})) is True
        assert len(made) > len(inherited)
    finally:
        for connection in made:
            connection.disconnect()


def test_ttl_follows_expiry(
    make_redis_store: t.Callable[..., RedisStore], redis_client: redis.Redis, clock: FakeClock
) -> None:
    store = make_redis_store(expiration_timeout=1800, absolute_timeout=3600)
    key = store_key(new_id())
    name = store.name_for(key)
    store.apply(key, created(clock, a='"1"'))
    assert 1_799_000 < redis_client.pttl(name) <= 1_800_000

    for _ in range(2):  # used at +1500 s and +3000 s: 600 s left before the absolute cap
        clock.advance(1500)
        store.apply(key, ChangeSet(updated={"b": '"2"'}))
    assert 599_000 < redis_client.pttl(name) <= 600_000

    store.touch(key, clock() + 100.25)
    assert 99_000 < redis_client.pttl(name) <= 100_250
    record = store.fetch(key)
    assert record is not None and record.expires_at == clock() + 100.25

    # Never a TTL of zero or less, which would delete the key at once.
    store.touch(key, clock() + 0.001)
    assert 0 < redis_client.pttl(name) <= 1000


def test_timeouts_are_capped_at_ten_years(
    make_redis_store: t.Callable[..., RedisStore], redis_client: redis.Redis, clock: FakeClock
) -> None:
    from flask_prancer_session.store.base import MAX_SECONDS

    # 1e17 s overflowed PEXPIRE's milliseconds: the write "succeeded" and the
    # session was gone.
    with pytest.raises(ConfigurationError) as info:
        make_redis_store(expiration_timeout=1e17)
    assert info.value.key == "expiration_timeout"
    store = make_redis_store(expiration_timeout=MAX_SECONDS, absolute_timeout=MAX_SECONDS)
    key = store_key(new_id())
    assert store.apply(key, created(clock, a='"1"')) is True
    record = store.fetch(key)
    assert record is not None and record.expires_at == clock() + MAX_SECONDS
    assert (
        MAX_SECONDS * 1000 - 60_000 < redis_client.pttl(store.name_for(key)) <= MAX_SECONDS * 1000
    )
    assert store.apply(key, ChangeSet(updated={"b": '"2"'}, timeout=MAX_SECONDS)) is True
    assert redis_client.pttl(store.name_for(key)) > 0


def test_expiry_is_checked_against_the_clock(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, created(clock, a='"1"'))
    clock.advance(rstore.expiration_timeout)
    # Redis still has the hash (its TTL runs on real time), the store does not.
    assert redis_client.exists(rstore.name_for(key))
    assert rstore.fetch(key) is None
    rstore.touch(key, clock() + 60)
    assert rstore.fetch(key) is None

    # Neither an update nor a touch revives it; a new session starts empty.
    rstore.apply(key, ChangeSet(updated={"b": '"2"'}))
    assert rstore.fetch(key) is None
    rstore.apply(key, created(clock, c='"3"'))
    record = rstore.fetch(key)
    assert record is not None and record.data == {"c": '"3"'}
    assert record.created_at == clock()


def test_no_resurrection_after_remove(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, created(clock, a='"1"'))
    rstore.remove(key)
    rstore.apply(key, ChangeSet(updated={"b": '"2"'}, removed=frozenset({"a"})))
    rstore.touch(key, clock() + 60)
    assert not redis_client.exists(rstore.name_for(key))
    assert rstore.fetch(key) is None


def test_a_session_without_data_leaves_no_key(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    name = rstore.name_for(key)
    assert rstore.apply(key, ChangeSet(created_at=clock())) is False
    assert not redis_client.exists(name)
    assert rstore.apply(key, created(clock, a='"1"', b='"2"')) is True
    # Fields outside the data namespace do not keep an emptied session.
    redis_client.hset(name, "future-metadata", "x")
    assert rstore.apply(key, ChangeSet(removed=frozenset({"a", "b"}))) is False
    assert not redis_client.exists(name)


def test_remove_of_an_expired_hash_deletes_it(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, created(clock, a='"1"'))
    clock.advance(rstore.expiration_timeout)
    assert redis_client.exists(rstore.name_for(key))  # Redis's TTL runs on real time
    assert rstore.remove(key) is False
    assert not redis_client.exists(rstore.name_for(key))


def test_the_session_timeout_sets_the_ttl(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, ChangeSet(updated={"a": '"1"'}, created_at=clock(), timeout=86400))
    assert 86_399_000 < redis_client.pttl(rstore.name_for(key)) <= 86_400_000
    rstore.apply(key, ChangeSet(updated={"a": '"2"'}, timeout=60))
    assert 59_000 < redis_client.pttl(rstore.name_for(key)) <= 60_000


def test_many_fields_in_one_apply(rstore: RedisStore, clock: FakeClock) -> None:
    # More than Lua's unpack() takes at once.
    key = store_key(new_id())
    rstore.apply(key, created(clock, **{f"k{n}": str(n) for n in range(10_000)}))
    removed = frozenset(f"k{n}" for n in range(9_000))
    assert rstore.apply(key, ChangeSet(removed=removed)) is True
    record = rstore.fetch(key)
    assert record is not None and len(record.data) == 1000
    # What rekey writes for such a session: every value, each compared.
    expected = {**record.data, "k9999": '"read before a change"'}
    rstore.apply(key, ChangeSet(updated=dict.fromkeys(record.data, "0"), expected=expected))
    record = rstore.fetch(key)
    assert record is not None
    assert record.data == {**dict.fromkeys(record.data, "0"), "k9999": "9999"}
    assert rstore.apply(key, ChangeSet(removed=frozenset(record.data))) is False


def test_corrupt_hashes_are_no_session(
    rstore: RedisStore,
    redis_client: redis.Redis,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad_metadata: list[dict[t.Any, str | bytes]] = [
        {"d:a": '"1"'},
        {"d:a": '"1"', "created": "yesterday", "expires": "tomorrow"},
        {"d:a": '"1"', "created": repr(clock()), "expires": "nan"},
    ]
    bad_data: dict[t.Any, str | bytes] = {
        "d:a": b"\xff\xfe",
        "created": repr(clock()),
        "expires": repr(clock() + 60),
    }
    for fields in [*bad_metadata, bad_data]:
        key = store_key(new_id())
        redis_client.hset(rstore.name_for(key), mapping=fields)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert rstore.fetch(key) is None
        assert [r.name for r in caplog.records] == [LOGGER], fields
        if fields is bad_data:
            # The metadata is fine, so the script, which does not read data
            # values, takes it for live; the interface gives such a visitor a
            # new id, so nothing writes here again.
            continue
        rstore.apply(key, ChangeSet(updated={"b": '"2"'}))
        assert redis_client.hget(rstore.name_for(key), "d:b") is None
        rstore.apply(key, created(clock, b='"2"'))
        record = rstore.fetch(key)
        assert record is not None and record.data == {"b": '"2"'}


def test_a_key_of_another_type_is_no_session(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    redis_client.set(rstore.name_for(key), "not a hash")
    assert rstore.fetch(key) is None
    rstore.touch(key, clock() + 60)
    assert rstore.apply(key, ChangeSet(updated={"a": '"1"'})) is False
    assert rstore.remove(key) is False
    assert not redis_client.exists(rstore.name_for(key))
    redis_client.set(rstore.name_for(key), "not a hash")
    rstore.apply(key, created(clock, a='"1"'))
    record = rstore.fetch(key)
    assert record is not None and record.data == {"a": '"1"'}


def test_unreachable_server_raises(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    services.require_module("redis", "redis")
    import redis

    from flask_prancer_session.store.redis import RedisStore

    # Port 1 on loopback: nothing listens, the connection is refused at once.
    store = RedisStore(url="redis://127.0.0.1:1/0", socket_connect_timeout=1)
    store.clock = clock
    key = store_key(new_id())
    operations: list[t.Callable[[], object]] = [
        lambda: store.fetch(key),
        lambda: store.apply(key, created(clock, a='"1"')),
        lambda: store.touch(key, clock() + 60),
        lambda: store.remove(key),
        lambda: list(store.scan()),
        lambda: store.clear(),
        lambda: store.sessions_of("ann"),
        lambda: store.remove_user("ann"),
    ]
    for operation in operations:
        caplog.clear()
        with pytest.raises(SessionStoreError) as info:
            operation()
        assert isinstance(info.value.original_error, redis.ConnectionError)
        assert info.value.__cause__ is info.value.original_error
        assert [(r.name, r.levelno) for r in caplog.records] == [(LOGGER, logging.ERROR)]


def test_timeout_raises(clock: FakeClock) -> None:
    services.require_module("redis", "redis")
    import redis

    from flask_prancer_session.store.redis import RedisStore

    # A server that accepts connections and never answers.
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        store = RedisStore(
            url=f"redis://127.0.0.1:{port}/0",
            socket_timeout=0.05,
            retry=None,
            protocol=2,
        )
        store.clock = clock
        with pytest.raises(SessionStoreError) as info:
            store.fetch(store_key(new_id()))
        assert isinstance(info.value.original_error, redis.TimeoutError)


def bind(clock: FakeClock, user: str, **data: str) -> ChangeSet:
    return ChangeSet(updated={USER_KEY: json.dumps(user), **data}, created_at=clock())


def test_the_user_index_is_a_sorted_set_with_a_ttl(
    rstore: RedisStore, redis_client: redis.Redis, prefix: str, clock: FakeClock
) -> None:
    key = store_key(new_id())
    rstore.apply(key, bind(clock, "ann", a='"1"', b='"2"'))
    index = f"{prefix}user:{{{hashlib.sha256(b'ann').hexdigest()}}}"
    assert rstore.index_name_for("ann") == index
    assert redis_client.type(index) == b"zset"
    # Listed until twice the timeout, so an active session's sliding expiry
    # rarely has to move it; the set lasts as long as its latest entry.
    horizon = clock() + 2 * rstore.expiration_timeout
    assert redis_client.zrange(index, 0, -1, withscores=True) == [(key.encode(), horizon)]
    assert 2 * 1_799_000 < redis_client.pttl(index) <= 2 * 1_800_000
    fields = redis_client.hgetall(rstore.name_for(key))
    assert fields[b"user"] == hashlib.sha256(b"ann").hexdigest().encode()
    assert float(fields[b"indexed"]) == horizon
    # A longer session of the same user lengthens the set's life, a shorter
    # one never shortens it.
    rstore.apply(store_key(new_id()), replace(bind(clock, "ann"), timeout=7200))
    assert 4 * 3_599_000 < redis_client.pttl(index) <= 4 * 3_600_000
    rstore.apply(store_key(new_id()), replace(bind(clock, "ann"), timeout=60))
    assert 4 * 3_599_000 < redis_client.pttl(index) <= 4 * 3_600_000
    # Unbound sessions are in no set.
    rstore.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    assert set(redis_client.hgetall(rstore.name_for(key))) == {
        b"d:a",
        b"d:b",
        b"created",
        b"expires",
    }


def test_sliding_expiry_keeps_the_session_listed(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    key = store_key(new_id())
    index = rstore.index_name_for("ann")
    rstore.apply(key, bind(clock, "ann"))
    # Used for ten idle timeouts, never idle for one: without moving its
    # horizon the session would outlive its entry.
    for step in range(20):
        clock.advance(rstore.expiration_timeout / 2)
        if step % 2:
            rstore.touch(key, clock() + rstore.expiration_timeout)
        else:
            rstore.apply(key, ChangeSet(updated={"n": str(step)}))
        record = rstore.fetch(key)
        assert record is not None
        score = redis_client.zscore(index, key)
        assert score is not None and score >= record.expires_at
        assert redis_client.pttl(index) >= redis_client.pttl(rstore.name_for(key))
        assert set(rstore.sessions_of("ann")) == {key}


def test_single_server_binding_is_one_round_trip(
    make_redis_store: t.Callable[..., RedisStore], redis_client: redis.Redis, clock: FakeClock
) -> None:
    store, sent = _counting(make_redis_store)
    for _ in range(2):  # The first round loads the scripts.
        key = store_key(new_id())
        sent.clear()
        store.apply(key, bind(clock, "ann"))
    assert len(sent) == 1
    counts = []
    for change in (bind(clock, "bob"), ChangeSet(removed=frozenset({USER_KEY}))):
        sent.clear()
        store.apply(key, change)
        counts.append(len(sent))
    assert counts == [1, 1]
    # Once per idle timeout of activity, the horizon moves, by the same script.
    index = store.index_name_for("ann")
    store.apply(key, bind(clock, "ann"))
    for _ in range(3):
        clock.advance(store.expiration_timeout - 1)
        sent.clear()
        store.touch(key, clock() + store.expiration_timeout)
        assert len(sent) == 1
        score = redis_client.zscore(index, key)
        assert score is not None and score >= clock() + store.expiration_timeout
    sent.clear()
    store.remove(key)
    assert len(sent) == 1
    assert redis_client.zscore(index, key) is None


def test_stale_index_entries_are_not_reported_then_dropped(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    # Entries of sessions that Redis expired by itself (no script sees that),
    # or that an earlier version left when a binding ended.
    index = rstore.index_name_for("ann")
    moved, unbound, removed, emptied, expired = (store_key(new_id()) for _ in range(5))
    for key in (moved, unbound, removed, emptied, expired):
        rstore.apply(key, bind(clock, "ann", a='"1"'))
    rstore.apply(moved, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    rstore.apply(unbound, ChangeSet(removed=frozenset({USER_KEY})))
    rstore.remove(removed)
    rstore.apply(emptied, ChangeSet(removed=frozenset({USER_KEY, "a"})))
    redis_client.delete(rstore.name_for(expired))
    assert redis_client.zrange(index, 0, -1) == [expired.encode()]
    horizon = clock() + 2 * rstore.expiration_timeout
    redis_client.zadd(index, dict.fromkeys((moved, unbound, removed, emptied), horizon))
    # Never reported for her nor ended with her; on a single server
    # remove_user drops them, since binding and listing are one step.
    assert rstore.sessions_of("ann") == {}
    assert redis_client.zcard(index) == 5
    assert rstore.remove_user("ann") == 0
    assert not redis_client.exists(index)
    assert set(rstore.sessions_of("bob")) == {moved}
    assert rstore.fetch(unbound) is not None
    # Past their horizon the entries are dropped, and then the set.
    redis_client.zadd(index, dict.fromkeys((moved, expired), horizon))
    clock.advance(2 * rstore.expiration_timeout)
    assert rstore.sessions_of("ann") == {}
    assert not redis_client.exists(index)


def test_entries_of_deleted_sessions_are_dropped_at_once(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    keys = [store_key(new_id()) for _ in range(3)]
    for key in keys:
        rstore.apply(key, bind(clock, "ann"))
    rstore.apply(keys[0], ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    assert rstore.remove_user("ann") == 2
    assert not redis_client.exists(rstore.index_name_for("ann"))
    assert rstore.fetch(keys[0]) is not None
    assert rstore.clear() == 1
    assert list(redis_client.scan_iter(match=f"{rstore.key_prefix}*")) == []


def _end(store: RedisStore, clock: FakeClock, key: str, how: int) -> None:
    """End the binding of ``key`` in one of the ways a session stops being a
    user's: logout, logout with a new id, another user's login, emptied,
    expired then removed, expired then started afresh."""
    if how == 0:
        store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    elif how == 1:
        store.remove(key)
    elif how == 2:
        store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    elif how == 3:
        store.apply(key, ChangeSet(removed=frozenset({USER_KEY, "a"})))
    else:
        clock.advance(2)
        assert store.fetch(key) is None
        if how == 4:
            store.remove(key)
        else:
            store.apply(key, created(clock, b='"2"'))


def test_ended_bindings_leave_the_user_index(
    rstore: RedisStore, redis_client: redis.Redis, clock: FakeClock
) -> None:
    # 2,000 logins and logouts used to leave 2,000 entries, each one read
    # again by every remove_user.
    kept = store_key(new_id())
    rstore.apply(kept, bind(clock, "ann"))
    for n in range(300):
        key = store_key(new_id())
        rstore.apply(key, replace(bind(clock, "ann", a='"1"'), timeout=1 if n % 6 > 3 else None))
        _end(rstore, clock, key, n % 6)
    assert redis_client.zrange(rstore.index_name_for("ann"), 0, -1) == [kept.encode()]
    assert set(rstore.sessions_of("ann")) == {kept}
    bobs = rstore.sessions_of("bob")
    assert len(bobs) == 50
    assert redis_client.zcard(rstore.index_name_for("bob")) == 50


def test_a_users_sessions_are_read_and_ended_in_batches(
    make_redis_store: t.Callable[..., RedisStore],
    redis_client: redis.Redis,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask_prancer_session.store import redis as module

    monkeypatch.setattr(module, "SCAN_BATCH", 100)
    store, sent = _counting(make_redis_store)
    keys = [store_key(new_id()) for _ in range(450)]
    for key in keys:
        store.apply(key, bind(clock, "ann"))
    # Sessions whose TTL ran out are deleted by Redis alone, no script runs.
    for key in keys[:50]:
        redis_client.delete(store.name_for(key))
    store.remove(store_key(new_id()))  # loads the script
    sent.clear()
    assert set(store.sessions_of("ann")) == set(keys[50:])
    assert len(sent) <= 1 + 5
    sent.clear()
    assert store.remove_user("ann") == 400
    assert len(sent) <= 1 + 5
    assert not redis_client.exists(store.index_name_for("ann"))
    assert list(store.scan()) == []


def test_user_ids_with_glob_characters_braces_or_surrogates(
    make_redis_store: t.Callable[..., RedisStore], clock: FakeClock
) -> None:
    import redis

    # decode_responses=True: replies are str, which the store reads as well.
    client = redis.Redis.from_url(services.REDIS_URL, decode_responses=True)
    store = make_redis_store(client=client)
    users = ["*", "a*", "[ab]", "{x}", "}{", "user:{1}", "\\", "\ud800", "", "é"]
    keys = {user: store_key(new_id()) for user in users}
    for user, key in keys.items():
        store.apply(key, bind(clock, user, who=json.dumps(user)))
    for user, key in keys.items():
        assert set(store.sessions_of(user)) == {key}, user
        tag = store.index_name_for(user).rsplit("{", 1)[1]
        assert re.fullmatch(r"[0-9a-f]{64}\}", tag)
    assert dict(store.scan()).keys() == set(keys.values())
    assert store.remove_user("a*") == 1
    assert store.remove_user("[ab]") == 1
    assert len(list(store.scan())) == len(users) - 2
    assert set(store.sessions_of("*")) == {keys["*"]}
    client.close()


@pytest.mark.parametrize("glob", ["", "*?[x]\\"])
def test_scan_keeps_to_its_prefix(
    redis_client: redis.Redis,
    prefix: str,
    glob: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask_prancer_session.store import redis as module
    from flask_prancer_session.store.redis import RedisStore

    monkeypatch.setattr(module, "SCAN_BATCH", 7)  # several batches
    ours = RedisStore(url=services.REDIS_URL, key_prefix=prefix + glob)
    # Prefixes a glob of ours would match, and one that names our user sets.
    others = [
        RedisStore(url=services.REDIS_URL, key_prefix=prefix + name)
        for name in ("x", "user:", "*?[x]")
    ]
    for store in (ours, *others):
        store.clock = clock
    mine = {store_key(new_id()) for _ in range(20)}
    for key in mine:
        ours.apply(key, bind(clock, "ann", a='"1"'))
    for store in others:
        for _ in range(5):
            store.apply(store_key(new_id()), bind(clock, "ann", a='"2"'))
    # Not a session: other data must not look like ours, but is skipped.
    redis_client.set(ours.name_for(store_key(new_id())), "not a hash")
    assert set(dict(ours.scan())) == mine
    assert ours.clear() == 20
    assert list(ours.scan()) == []
    for store in others:
        assert len(list(store.scan())) == 5
        assert len(store.sessions_of("ann")) == 5
    for store in (ours, *others):
        store.client.close()


def _free_port() -> int:
    # The cluster bus listens on port + 10000, which must be free too.
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair")


@pytest.fixture(scope="module")
def cluster_port(tmp_path_factory: pytest.TempPathFactory) -> t.Iterator[int]:
    """Start a three-master Redis Cluster on loopback; yield one node's port."""
    services.require_module("redis", "redis")
    server, cli = shutil.which("redis-server"), shutil.which("redis-cli")
    if server is None or cli is None:
        services.unavailable("redis-server and redis-cli are needed for the cluster test")
        raise AssertionError("unreachable")
    import redis

    root = tmp_path_factory.mktemp("cluster")
    processes: list[subprocess.Popen[bytes]] = []
    ports: list[int] = []
    try:
        for _ in range(3):
            port = _free_port()
            node: Path = root / str(port)
            node.mkdir()
            command = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node)]
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--save", "", "--appendonly", "no", "--logfile", "redis.log"]
            processes.append(subprocess.Popen(command, stdout=subprocess.DEVNULL))
            ports.append(port)
        deadline = time.monotonic() + 15
        for port in ports:
            while not _answers(redis, port):
                if time.monotonic() > deadline:
                    pytest.fail(f"cluster node on port {port} did not start")
                time.sleep(0.05)
        subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{p}" for p in ports)]
            + ["--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=30,
        )
        for port in ports:
            client = redis.Redis(port=port)
            while client.cluster("info").get("cluster_state") != "ok":
                if time.monotonic() > deadline:
                    pytest.fail("the cluster did not become ready")
                time.sleep(0.05)
            client.close()
        yield ports[0]
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=10)


def _answers(redis: t.Any, port: int) -> bool:
    client = redis.Redis(port=port, socket_connect_timeout=0.5)
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False
    finally:
        client.close()


def test_redis_cluster(cluster_port: int, clock: FakeClock) -> None:
    from redis.cluster import RedisCluster

    from flask_prancer_session.store.redis import RedisStore

    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    store = RedisStore(client=client)
    store.clock = clock
    # Enough sessions to land on every node; each one's script runs on its node.
    keys = [store_key(new_id()) for _ in range(30)]
    nodes = {client.get_node_from_key(store.name_for(k)).port for k in keys}  # type: ignore[no-untyped-call]
    assert len(nodes) == 3
    for key in keys:
        store.apply(key, created(clock, a='"1"'))
        store.apply(key, ChangeSet(updated={"b": '"2"'}, removed=frozenset({"a"})))
        store.touch(key, clock() + 60)
        record = store.fetch(key)
        assert record is not None and record.data == {"b": '"2"'}
        assert record.expires_at == clock() + 60
        slot = client.keyslot(store.name_for(key))  # type: ignore[no-untyped-call]
        assert slot == client.keyslot(key)  # type: ignore[no-untyped-call]
        store.remove(key)
        assert store.fetch(key) is None
    client.close()


def test_redis_cluster_lists_and_indexes_on_every_node(
    cluster_port: int, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.cluster import RedisCluster

    from flask_prancer_session.store import redis as module
    from flask_prancer_session.store.redis import RedisStore

    monkeypatch.setattr(module, "SCAN_BATCH", 4)
    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    store = RedisStore(client=client, key_prefix=services.unique_name("cluster") + ":")
    store.clock = clock
    ann: set[str] = set()
    nodes: set[int] = set()
    # Random ids miss a node now and then; draw until ann has sessions on all three.
    while len(ann) < 12 or len(nodes) < 3:
        key = store_key(new_id())
        ann.add(key)
        nodes.add(client.get_node_from_key(store.name_for(key)).port)  # type: ignore[no-untyped-call]
    bob = {store_key(new_id()) for _ in range(12)}
    for key in ann:
        store.apply(key, bind(clock, "ann"))
    for key in bob:
        store.apply(key, created(clock, a='"1"'))
    assert set(dict(store.scan())) == ann | bob
    # The user's set lives on one node, the sessions on all three.
    assert set(store.sessions_of("ann")) == ann
    moved = next(iter(ann))
    store.apply(moved, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    assert set(store.sessions_of("bob")) == {moved}
    assert store.remove_user("ann") == len(ann) - 1
    assert set(dict(store.scan())) == bob | {moved}
    assert store.clear() == len(bob) + 1
    assert list(store.scan()) == []
    # The session that moved to bob left ann's set as it moved.
    assert list(client.scan_iter(match=f"{store.key_prefix}*")) == []
    client.close()


def test_redis_cluster_drops_entries_of_ended_bindings(
    cluster_port: int, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis
    from redis.cluster import RedisCluster

    from flask_prancer_session.store import redis as module
    from flask_prancer_session.store.redis import RedisStore

    sent: list[object] = []
    send = redis.Connection.send_packed_command

    def counting(self: redis.Connection, command: t.Any, check_health: bool = True) -> None:
        sent.append(command)
        send(self, command, check_health)  # type: ignore[no-untyped-call]

    # Patched on the class: redis-py 5.0 takes no connection_class for
    # a cluster's nodes.
    monkeypatch.setattr(redis.Connection, "send_packed_command", counting)
    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    store = RedisStore(client=client, key_prefix=services.unique_name("cluster") + ":")
    store.clock = clock
    kept = store_key(new_id())
    store.apply(kept, bind(clock, "ann"))
    for n in range(60):
        key = store_key(new_id())
        store.apply(key, replace(bind(clock, "ann", a='"1"'), timeout=1 if n % 6 > 3 else None))
        _end(store, clock, key, n % 6)
    # The set lives in another slot than the sessions: each ending unlists its
    # entry with a command of its own.
    index = store.index_name_for("ann")
    assert [member[:64] for member in client.zrange(index, 0, -1)] == [kept.encode()]
    assert set(store.sessions_of("ann")) == {kept}
    assert client.zcard(store.index_name_for("bob")) == len(store.sessions_of("bob")) == 10

    keys = [store_key(new_id()) for _ in range(120)]
    for key in keys:
        store.apply(key, bind(clock, "ann"))
    sent.clear()
    monkeypatch.setattr(module, "SCAN_BATCH", 50)
    assert store.remove_user("ann") == 121
    # The set's node, then per batch of 50 one pipeline to each node and one
    # command to the set's node.
    assert len(sent) <= 1 + 3 * (3 + 1)
    assert not client.exists(index)
    client.close()


def test_redis_cluster_never_unlists_a_binding_made_meanwhile(
    cluster_port: int, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from redis.cluster import RedisCluster

    from flask_prancer_session.store.redis import RedisStore

    prefix = services.unique_name("cluster") + ":"
    client, other = (RedisCluster(host="127.0.0.1", port=cluster_port) for _ in range(2))
    store, rival = (
        RedisStore(client=client, key_prefix=prefix),
        RedisStore(client=other, key_prefix=prefix),
    )
    store.clock = rival.clock = clock
    key = store_key(new_id())
    store.apply(key, bind(clock, "ann", a='"1"'))
    zrem = client.zrem

    def zrem_after_a_login(name: str, *members: str) -> t.Any:
        # Another request binds the session to ann again between the
        # logout's script and the command that unlists its entry.
        rival.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}))
        return zrem(name, *members)

    monkeypatch.setattr(client, "zrem", zrem_after_a_login)
    store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    monkeypatch.setattr(client, "zrem", zrem)
    record = store.fetch(key)
    assert record is not None and record.data[USER_KEY] == json.dumps("ann")
    assert set(store.sessions_of("ann")) == {key}
    assert store.remove_user("ann") == 1
    assert store.fetch(key) is None
    client.close()
    other.close()


def test_redis_cluster_compare_and_set_keeps_the_index_in_step(
    cluster_port: int, clock: FakeClock
) -> None:
    from redis.cluster import RedisCluster

    from flask_prancer_session.store.redis import RedisStore

    client = RedisCluster(host="127.0.0.1", port=cluster_port)
    store = RedisStore(client=client, key_prefix=services.unique_name("cluster") + ":")
    store.clock = clock
    ann, bob = json.dumps("ann"), json.dumps("bob")
    key = store_key(new_id())
    store.apply(key, bind(clock, "ann", a='"1"'))
    # What rekey writes: every value, each only if still as read.
    store.apply(
        key, ChangeSet(updated={USER_KEY: ann, "a": '"2"'}, expected={USER_KEY: ann, "a": '"1"'})
    )
    record = store.fetch(key)
    assert record is not None and record.data == {USER_KEY: ann, "a": '"2"'}
    assert client.zcard(store.index_name_for("ann")) == 1
    # A logout between rekey's read and its write: the session stays unbound
    # and unlisted.
    store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    store.apply(
        key, ChangeSet(updated={USER_KEY: ann, "a": '"3"'}, expected={USER_KEY: ann, "a": '"2"'})
    )
    record = store.fetch(key)
    assert record is not None and record.data == {"a": '"3"'}
    assert store.sessions_of("ann") == {}
    assert not client.exists(store.index_name_for("ann"))
    # A compare-and-set that would bind another user, and fails, lists nothing.
    store.apply(key, ChangeSet(updated={USER_KEY: bob}, expected={USER_KEY: ann}))
    assert store.sessions_of("bob") == {}
    assert not client.exists(store.index_name_for("bob"))
    client.close()


def test_a_write_no_replica_confirms_fails(clock: FakeClock) -> None:
    # The shared test server has no replica: WAIT 1 times out.
    from flask_prancer_session.store.redis import RedisStore

    prefix = services.unique_name("prancer_wait") + ":"
    store = RedisStore(url=services.REDIS_URL, key_prefix=prefix, replicas=1, replica_timeout=0.05)
    store.clock = clock
    key = store_key(new_id())
    try:
        with pytest.raises(SessionStoreError, match="0 of 1 replicas"):
            store.apply(key, ChangeSet({"a": "1"}, created_at=clock()))
        # Written, but unconfirmed: the common write waits as well.
        with pytest.raises(SessionStoreError, match="0 of 1 replicas"):
            store.apply(key, ChangeSet({"b": "2"}))
        with pytest.raises(SessionStoreError, match="0 of 1 replicas"):
            store.remove(key)
    finally:
        store.clear()
        store.close()


@pytest.mark.parametrize("replicas", [-1, True, 1.5, "1"])
def test_replicas_must_be_a_whole_number(replicas: object) -> None:
    from flask_prancer_session.store.redis import RedisStore

    with pytest.raises(ConfigurationError) as caught:
        RedisStore(url=services.REDIS_URL, replicas=replicas)
    assert caught.value.key == "replicas"
