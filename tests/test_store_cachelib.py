"""What is particular to the cachelib store: construction, the entry format,
cache timeouts, failures and locking. The shared behaviour is in
test_store_contract.py."""

from __future__ import annotations

import io
import json
import logging
import multiprocessing
import os
import pickle
import shutil
import struct
import typing as t
from pathlib import Path

import cachelib
import pytest

from flask_prancer_session.changes import ChangeSet
from flask_prancer_session.errors import ConfigurationError
from flask_prancer_session.errors import SessionStoreError
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.cachelib import CachelibStore
from flask_prancer_session.store.cachelib import JSONSerializer

from . import services

if t.TYPE_CHECKING:
    from .clock import FakeClock

LOGGER = "flask_prancer_session.store.cachelib"
PREFIX = "prancer:session:"


class RecordingCache(cachelib.SimpleCache):
    """A SimpleCache that remembers the timeout of each write."""

    def __init__(self) -> None:
        super().__init__(threshold=1000)
        self.timeouts: list[int | None] = []

    def set(self, key: str, value: t.Any, timeout: t.Any = None) -> bool | None:
        self.timeouts.append(timeout)
        return super().set(key, value, timeout)


class FailingCache(cachelib.SimpleCache):
    """A cache whose writes and deletes fail the way cachelib reports it."""

    def set(self, key: str, value: t.Any, timeout: t.Any = None) -> bool:
        return False

    def delete(self, key: str) -> bool:
        return False

    def has(self, key: str) -> bool:
        return True


class BrokenCache(cachelib.SimpleCache):
    """A cache whose client library raises, as RedisCache's does."""

    def get(self, key: str) -> t.Any:
        raise ConnectionError("connection refused")


def make(clock: FakeClock, **options: t.Any) -> CachelibStore:
    store = CachelibStore(**options)
    store.clock = clock
    return store


def created(clock: FakeClock, **data: str) -> ChangeSet:
    return ChangeSet(updated=data, created_at=clock())


def test_backends_are_made_from_names(tmp_path: Path) -> None:
    simple = CachelibStore(backend="simple")
    assert isinstance(simple.cache, cachelib.SimpleCache)
    # cachelib's default of 500 would evict the 501st visitor's session.
    assert simple.cache._threshold == 10000
    bounded = CachelibStore(backend="simple", threshold=50).cache
    assert isinstance(bounded, cachelib.SimpleCache) and bounded._threshold == 50
    files = CachelibStore(backend="filesystem", cache_dir=str(tmp_path / "c"), mode=0o640)
    assert isinstance(files.cache, cachelib.FileSystemCache)
    assert files.cache._path == str(tmp_path / "c")
    assert files.cache._mode == 0o640


def test_a_cache_is_used_as_given() -> None:
    cache = cachelib.SimpleCache()
    assert CachelibStore(cache=cache).cache is cache


def test_configuration_errors(tmp_path: Path) -> None:
    cases: list[tuple[dict[str, t.Any], str]] = [
        ({}, "backend"),
        ({"backend": "sqlite"}, "backend"),
        ({"backend": "simple", "cache_dir": str(tmp_path)}, "cache_dir"),
        ({"backend": "filesystem", "cache_dri": str(tmp_path)}, "cache_dri"),
        ({"backend": "filesystem"}, "backend"),
        ({"cache": cachelib.SimpleCache(), "backend": "simple"}, "backend"),
        ({"cache": cachelib.SimpleCache(), "threshold": 5}, "threshold"),
        ({"cache": cachelib.NullCache()}, "cache"),
        ({"cache": object()}, "cache"),
        ({"backend": "simple", "key_prefix": 5}, "key_prefix"),
    ]
    for options, key in cases:
        with pytest.raises(ConfigurationError) as info:
            CachelibStore(**options)
        assert info.value.key == key, options


def test_unknown_redis_client_option_is_named() -> None:
    services.require_module("redis", "redis")
    with pytest.raises(ConfigurationError) as info:
        CachelibStore(backend="redis", host="127.0.0.1", socket_timeot=1)
    assert info.value.key == "socket_timeot"


def test_entries_are_json_under_the_prefix(clock: FakeClock) -> None:
    cache = cachelib.SimpleCache()
    store = make(clock, cache=cache)
    key = store_key(new_id())
    store.apply(key, created(clock, user='"42"'))
    raw = cache.get(PREFIX + key)
    assert isinstance(raw, str)
    assert json.loads(raw) == {
        "key": key,
        "created": clock(),
        "expires": clock() + store.expiration_timeout,
        "data": {"user": '"42"'},
    }


def test_cache_timeout_follows_expiry(clock: FakeClock) -> None:
    cache = RecordingCache()
    store = make(clock, cache=cache, expiration_timeout=1800, absolute_timeout=3600)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    for _ in range(2):  # used at +1500 s and +3000 s: 600 s left before the absolute cap
        clock.advance(1500)
        store.apply(key, ChangeSet(updated={"b": '"2"'}))
    store.touch(key, clock() + 100.25)
    # Whole seconds, rounded up, never 0 (which means "forever" to cachelib).
    store.touch(key, clock() + 0.001)
    assert cache.timeouts == [1800, 1800, 600, 101, 1]


def test_cachelib_redis_entries_expire_in_redis(clock: FakeClock) -> None:
    redis = services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    prefix = services.unique_name("prancer_cachelib") + ":"
    store = make(clock, backend="redis", host="127.0.0.1", port=6379, key_prefix=prefix)
    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        key = store_key(new_id())
        store.apply(key, created(clock, a='"1"'))
        assert 1790 < client.ttl(prefix + key) <= 1800
    finally:
        client.delete(prefix + key)
        client.close()


@pytest.mark.parametrize("backend", ["simple", "filesystem", "redis"])
def test_timeouts_are_capped_at_ten_years(
    backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    from flask_prancer_session.store.base import MAX_SECONDS

    options: dict[str, t.Any] = {"backend": backend}
    if backend == "filesystem":
        options["cache_dir"] = str(tmp_path / "cache")
    elif backend == "redis":
        services.require_module("redis", "redis")
        services.require_server("Redis", "127.0.0.1", 6379)
        options.update(host="127.0.0.1", port=6379)
        options["key_prefix"] = services.unique_name("prancer_cachelib") + ":"
    # FileSystemCache keeps the expiry in 32 bits: 1e10 s made every write fail.
    with pytest.raises(ConfigurationError) as info:
        make(clock, expiration_timeout=1e10, **options)
    assert info.value.key == "expiration_timeout"
    store = make(clock, expiration_timeout=MAX_SECONDS, **options)
    key = store_key(new_id())
    request.addfinalizer(lambda: store.cache.delete(store.key_prefix + key))
    assert store.apply(key, created(clock, a='"1"')) is True
    record = store.fetch(key)
    assert record is not None and record.expires_at == clock() + MAX_SECONDS
    assert store.apply(key, ChangeSet(updated={"b": '"2"'}, timeout=MAX_SECONDS)) is True
    assert store.fetch(key) is not None


def test_expiry_is_checked_against_the_clock(clock: FakeClock) -> None:
    cache = cachelib.SimpleCache()
    store = make(clock, cache=cache)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    clock.advance(store.expiration_timeout)
    assert cache.get(PREFIX + key) is not None  # the cache's timer runs on real time
    assert store.fetch(key) is None
    before = cache.get(PREFIX + key)
    store.touch(key, clock() + 60)
    store.apply(key, ChangeSet(updated={"b": '"2"'}))
    assert cache.get(PREFIX + key) == before
    store.apply(key, created(clock, c='"3"'))
    record = store.fetch(key)
    assert record is not None and record.data == {"c": '"3"'}
    assert record.created_at == clock()


def test_no_resurrection_after_remove(clock: FakeClock) -> None:
    cache = cachelib.SimpleCache()
    store = make(clock, cache=cache)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    store.remove(key)
    store.apply(key, ChangeSet(updated={"b": '"2"'}))
    store.touch(key, clock() + 60)
    assert cache.get(PREFIX + key) is None
    assert store.fetch(key) is None


def test_an_emptied_session_leaves_no_entry(clock: FakeClock) -> None:
    cache = cachelib.SimpleCache()
    store = make(clock, cache=cache)
    key = store_key(new_id())
    assert store.apply(key, ChangeSet(created_at=clock())) is False
    assert not cache.has(PREFIX + key)
    store.apply(key, created(clock, a='"1"'))
    assert store.apply(key, ChangeSet(removed=frozenset({"a"}))) is False
    assert not cache.has(PREFIX + key)


def test_remove_tells_whether_a_live_session_was_deleted(clock: FakeClock) -> None:
    cache = RecordingCache()
    store = make(clock, cache=cache)
    key = store_key(new_id())
    store.apply(key, ChangeSet(updated={"a": '"1"'}, created_at=clock(), timeout=60))
    assert cache.timeouts == [60]
    clock.advance(60)
    assert cache.has(PREFIX + key)  # the cache's timer runs on real time
    assert store.remove(key) is False
    assert not cache.has(PREFIX + key)
    store.apply(key, created(clock, a='"1"'))
    assert store.remove(key) is True


def test_corrupt_entries_are_no_session(clock: FakeClock, caplog: pytest.LogCaptureFixture) -> None:
    cache = cachelib.SimpleCache()
    store = make(clock, cache=cache)
    now = clock()
    corrupt: list[object] = [
        "not json",
        b"bytes",
        "[1, 2]",
        json.dumps({"created": now, "data": {}}),
        json.dumps({"created": True, "expires": now + 60, "data": {}}),
        json.dumps({"created": now, "expires": now + 60, "data": {"a": 1}}),
        json.dumps({"created": now, "expires": now + 60, "data": ["a"]}),
    ]
    for value in corrupt:
        key = store_key(new_id())
        cache.set(PREFIX + key, value)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=LOGGER):
            assert store.fetch(key) is None
        assert [r.name for r in caplog.records] == [LOGGER], value
        store.apply(key, ChangeSet(updated={"b": '"2"'}))
        assert cache.get(PREFIX + key) == value
        store.apply(key, created(clock, b='"2"'))
        record = store.fetch(key)
        assert record is not None and record.data == {"b": '"2"'}


def test_failed_writes_and_deletes_raise(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = make(clock, cache=FailingCache())
    key = store_key(new_id())
    with pytest.raises(SessionStoreError, match="could not write"):
        store.apply(key, created(clock, a='"1"'))
    with pytest.raises(SessionStoreError, match="could not delete"):
        store.remove(key)
    assert [(r.name, r.levelno) for r in caplog.records] == [(LOGGER, logging.ERROR)] * 2


def test_backend_exceptions_raise(clock: FakeClock) -> None:
    store = make(clock, cache=BrokenCache())
    with pytest.raises(SessionStoreError) as info:
        store.fetch(store_key(new_id()))
    assert isinstance(info.value.original_error, ConnectionError)
    assert info.value.__cause__ is info.value.original_error


def test_unreachable_cachelib_redis_raises(clock: FakeClock) -> None:
    redis = services.require_module("redis", "redis")
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    store = make(clock, backend="redis", host="127.0.0.1", port=1, retry=None)
    for operation in (lambda: store.fetch(store_key(new_id())), lambda: list(store.scan())):
        with pytest.raises(SessionStoreError) as info:
            operation()
        assert isinstance(info.value.original_error, redis.ConnectionError)


def test_vanished_cache_dir_raises(tmp_path: Path, clock: FakeClock) -> None:
    # Tests run as root, so a read-only directory would not stop a write:
    # replace the directory by a file instead, which nobody can write into.
    cache_dir = tmp_path / "cache"
    store = make(clock, backend="filesystem", cache_dir=str(cache_dir))
    shutil.rmtree(cache_dir)
    cache_dir.write_text("")
    with pytest.raises(SessionStoreError):
        store.apply(store_key(new_id()), created(clock, a='"1"'))
    with pytest.raises(SessionStoreError) as info:
        list(store.scan())
    assert isinstance(info.value.original_error, NotADirectoryError)


@pytest.mark.parametrize("backend", ["simple", "filesystem", "redis"])
def test_scan_keeps_to_its_prefix(
    backend: str, tmp_path: Path, clock: FakeClock, request: pytest.FixtureRequest
) -> None:
    cache: cachelib.BaseCache
    if backend == "simple":
        cache = cachelib.SimpleCache(threshold=1000)
    elif backend == "filesystem":
        cache = cachelib.FileSystemCache(str(tmp_path / "cache"), threshold=1000)
    else:
        redis = services.require_module("redis", "redis")
        services.require_server("Redis", "127.0.0.1", 6379)
        # Glob characters in RedisCache's own prefix too.
        unique = services.unique_name("prancer_cachelib")
        cache = cachelib.RedisCache(host="127.0.0.1", port=6379, key_prefix=unique + ":*?[x]\\:")

        def delete() -> None:
            client = redis.Redis.from_url(services.REDIS_URL)
            for name in client.scan_iter(match=unique + "*"):
                client.delete(name)
            client.close()

        request.addfinalizer(delete)
    # Prefixes that start with one another, or a glob of them would match.
    stores = [make(clock, cache=cache, key_prefix=p) for p in ("s:", "s:x:", "s*", "s?:")]
    keys = {store.key_prefix: {store_key(new_id()) for _ in range(3)} for store in stores}
    for store in stores:
        for key in keys[store.key_prefix]:
            store.apply(key, created(clock, a='"1"'))
    # Other data under our prefix is not a session.
    cache.set("s:not-a-session", '"x"')
    cache.set("s:" + "0" * 64, 42)
    for store in stores:
        assert set(dict(store.scan())) == keys[store.key_prefix]
    assert stores[0].clear() == 3
    assert list(stores[0].scan()) == []
    for store in stores[1:]:
        assert set(dict(store.scan())) == keys[store.key_prefix]
        assert store.clear() == 3


def test_scan_lists_only_the_filesystem_entries_it_wrote(tmp_path: Path, clock: FakeClock) -> None:
    store = make(clock, backend="filesystem", cache_dir=str(tmp_path / "cache"))
    cache = store.cache
    assert isinstance(cache, cachelib.FileSystemCache)
    live, expired, old = (store_key(new_id()) for _ in range(3))
    store.apply(expired, created(clock, a='"1"'))
    clock.advance(store.expiration_timeout)
    store.apply(live, created(clock, a='"1"'))
    # An entry written before entries kept their key: readable, not listed.
    entry = {"created": clock(), "expires": clock() + 60, "data": {"a": '"1"'}}
    cache.set(PREFIX + old, json.dumps(entry))
    assert store.fetch(old) is not None
    # A copy of an entry under another name is not that session.
    copied = Path(cache._get_filename(PREFIX + store_key(new_id())))
    copied.write_bytes(Path(cache._get_filename(PREFIX + live)).read_bytes())
    (tmp_path / "cache" / "garbage").write_bytes(b"\0\0\0\0{not json")
    assert list(dict(store.scan())) == [live]
    assert store.clear() == 1
    assert store.fetch(live) is None
    assert store.fetch(old) is not None


def test_other_backends_cannot_list_and_none_index_users(clock: FakeClock) -> None:
    unlisted = make(clock, cache=cachelib.BaseCache())
    with pytest.raises(NotImplementedError, match="BaseCache cannot list"):
        list(unlisted.scan())
    with pytest.raises(NotImplementedError):
        unlisted.clear()
    for store in (unlisted, make(clock, cache=cachelib.SimpleCache())):
        assert store.indexes_users is False
        with pytest.raises(NotImplementedError):
            store.sessions_of("ann")
        with pytest.raises(NotImplementedError):
            store.remove_user("ann")


def test_lock_files_are_invisible_to_cachelib(tmp_path: Path, clock: FakeClock) -> None:
    store = make(clock, backend="filesystem", cache_dir=str(tmp_path / "cache"))
    cache = store.cache
    assert isinstance(cache, cachelib.FileSystemCache)
    key = store_key(new_id())
    store.apply(key, created(clock, a='"1"'))
    assert any(".prancer-lock" in name.name for name in (tmp_path / "cache").iterdir())
    assert cache._file_count == 1
    assert all(".prancer-lock" not in name for name in cache._list_dir())


def _write_from_process(cache_dir: str, key: str, process: int) -> None:
    store = CachelibStore(backend="filesystem", cache_dir=cache_dir)
    for n in range(25):
        store.apply(key, ChangeSet(updated={f"p{process}k{n}": f'"{n}"'}))


def test_processes_sharing_a_cache_dir_lose_no_keys(tmp_path: Path) -> None:
    cache_dir = str(tmp_path / "cache")
    store = CachelibStore(backend="filesystem", cache_dir=cache_dir)
    key = store_key(new_id())
    store.apply(key, ChangeSet(updated={"start": "0"}, created_at=store.clock()))
    # spawn, not fork: a fresh interpreter, as separate workers would be.
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_write_from_process, args=(cache_dir, key, i)) for i in range(4)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    record = store.fetch(key)
    assert record is not None
    assert set(record.data) == {"start"} | {f"p{i}k{n}" for i in range(4) for n in range(25)}


class Planted:
    """Unpickling this touches a marker file: what an attacker's code would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[t.Any, ...]:
        return (Path.touch, (self.marker,))


def _payload(marker: Path) -> bytes:
    payload = pickle.dumps(Planted(marker))
    # The payload is live: cachelib's default serializer runs it.
    cachelib.serializers.FileSystemSerializer().load(io.BytesIO(payload))
    assert marker.exists()
    marker.unlink()
    return payload


def _check_planted_entry_is_ignored(
    store: CachelibStore, key: str, marker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.fetch(key) is None
    assert not marker.exists()
    assert [r.name for r in caplog.records] == [LOGGER]
    assert store.apply(key, ChangeSet(updated={"b": '"2"'})) is False
    assert store.remove(key) is False
    assert not marker.exists()


def test_a_pickle_planted_in_the_cache_dir_does_not_run(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "pwned"
    payload = _payload(marker)
    store = make(clock, backend="filesystem", cache_dir=str(tmp_path / "cache"))
    cache = store.cache
    assert isinstance(cache, cachelib.FileSystemCache)
    key = store_key(new_id())
    with caplog.at_level(logging.WARNING):
        store.apply(key, created(clock, a='"1"'))
    # The entry count, which cachelib keeps through the serializer, still works.
    assert cache._file_count == 1
    assert caplog.records == []
    # An expiry header of 0 (never), then the payload, where our entry was.
    Path(cache._get_filename(PREFIX + key)).write_bytes(struct.pack("I", 0) + payload)
    _check_planted_entry_is_ignored(store, key, marker, caplog)


def test_a_pickle_planted_in_redis_does_not_run(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    redis = services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    marker = tmp_path / "pwned"
    payload = _payload(marker)
    prefix = services.unique_name("prancer_cachelib") + ":"
    store = make(clock, backend="redis", host="127.0.0.1", port=6379, key_prefix=prefix)
    client = redis.Redis.from_url(services.REDIS_URL)
    key = store_key(new_id())
    try:
        store.apply(key, created(clock, a='"1"'))
        assert client.exists(prefix + key)
        # RedisCache's default serializer unpickles values that start with "!".
        client.set(prefix + key, b"!" + payload)
        _check_planted_entry_is_ignored(store, key, marker, caplog)
    finally:
        client.delete(prefix + key)
        client.close()


def test_given_caches_get_the_json_serializer(tmp_path: Path) -> None:
    files = cachelib.FileSystemCache(str(tmp_path / "cache"))
    assert isinstance(CachelibStore(cache=files).cache.serializer, JSONSerializer)  # type: ignore[attr-defined]
    redis_cache = cachelib.RedisCache(host="127.0.0.1", port=1)
    CachelibStore(cache=redis_cache)
    assert isinstance(redis_cache.serializer, JSONSerializer)
    # SimpleCache keeps objects in this process's memory: nobody else writes there.
    simple = cachelib.SimpleCache()
    CachelibStore(cache=simple)
    assert not isinstance(simple.serializer, JSONSerializer)


def test_the_serializer_round_trips_what_cachelib_stores() -> None:
    serializer = JSONSerializer()
    for value in ['{"created":1}', "é \ud800", 42, None, [1, "a"]]:
        assert serializer.loads(serializer.dumps(value)) == value
        stream = io.BytesIO()
        serializer.dump(value, stream)
        stream.seek(0)
        assert serializer.load(stream) == value
    # Counters stay plain digits, which RedisCache.inc() increments in Redis.
    assert serializer.dumps(42) == b"42"


def test_cache_dirs_are_private_under_umask_0(tmp_path: Path, clock: FakeClock) -> None:
    old = os.umask(0)
    try:
        cache_dir = tmp_path / "new" / "cache"
        store = make(clock, backend="filesystem", cache_dir=str(cache_dir))
        store.apply(store_key(new_id()), created(clock, a='"1"'))
        assert cache_dir.stat().st_mode & 0o777 == 0o700
        assert all(path.stat().st_mode & 0o077 == 0 for path in cache_dir.iterdir())

        # A directory cachelib made under umask 0 is writable by everyone.
        shared = cachelib.FileSystemCache(str(tmp_path / "shared"))
        with pytest.raises(ConfigurationError) as info:
            CachelibStore(cache=shared)
        assert info.value.key == "cache"
        with pytest.raises(ConfigurationError) as info:
            CachelibStore(backend="filesystem", cache_dir=str(tmp_path / "shared"))
        assert info.value.key == "cache_dir"
    finally:
        os.umask(old)


def test_cache_dirs_of_others_are_refused(tmp_path: Path) -> None:
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir(mode=0o700)
    if os.geteuid() == 0:
        os.chown(cache_dir, 65534, 65534)
    else:
        cache_dir.chmod(0o720)
    with pytest.raises(ConfigurationError) as info:
        CachelibStore(backend="filesystem", cache_dir=str(cache_dir))
    assert info.value.key == "cache_dir"
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(ConfigurationError) as info:
        CachelibStore(backend="filesystem", cache_dir=str(file))
    assert info.value.key == "cache_dir"


def test_a_symlinked_cache_dir_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(ConfigurationError) as caught:
        CachelibStore(backend="filesystem", cache_dir=str(link))
    assert caught.value.key == "cache_dir"
    assert "symbolic link" in str(caught.value)
