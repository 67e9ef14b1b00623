"""What only the storable (file) store does: modes, layout, atomic writes, corrupt files,
purge of files, and processes sharing one directory."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import secrets
import stat
import sys
import threading
import time
import types
import typing as t
import zlib
from pathlib import Path

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from flask_prancer_session import ChangeSet
from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session import SessionStoreError
from flask_prancer_session import StorableStore
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.encryption import Encryptor
from flask_prancer_session.encryption import PREFIX
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.storable import store as storable

from .clock import FakeClock
from .storable_files import newest
from .storable_files import versions

LOGGER = "flask_prancer_session.store.storable"


def storable_store(
    directory: Path, clock: FakeClock | None = None, **options: t.Any
) -> StorableStore:
    store = StorableStore(dir=str(directory), **options)
    if clock is not None:
        store.clock = clock
    return store


def session_app(app: Flask, store: StorableStore) -> Flask:
    PrancerSession(app, store=store)

    @app.get("/")
    def counter() -> str:
        session["n"] = session.get("n", 0) + 1
        return f"{session['n']} {session.id}"

    @app.get("/read")
    def read() -> str:
        return str(session.get("n"))

    return app


def path_of(store: StorableStore, session_id: str) -> Path:
    key = store_key(session_id)
    return Path(store.dir, key[:2], key)


def _file_state(path: Path) -> tuple[bytes, int, int]:
    """What a failed write must leave as it was: content, inode and expiry."""
    return path.read_bytes(), path.stat().st_ino, path.stat().st_mtime_ns


def _one_session(
    app: Flask, directory: Path, clock: FakeClock, **options: t.Any
) -> tuple[StorableStore, FlaskClient, str, Path]:
    """A store serving ``app`` with one session of one request, and the
    client, id and file of that session."""
    store = storable_store(directory, clock, **options)
    session_app(app, store)
    client = app.test_client()
    session_id = client.get("/").text.split()[1]
    return store, client, session_id, path_of(store, session_id)


def create(store: StorableStore, key: str, **data: str) -> None:
    store.apply(key, ChangeSet(updated=data, created_at=store.clock()))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def temp_files(directory: Path) -> list[Path]:
    return [path for path in directory.rglob(".tmp-*")]


# Directory, modes and layout


def test_missing_directory_is_created_private(tmp_path: Path) -> None:
    directory = tmp_path / "deep" / "sessions"
    store = storable_store(directory)
    assert store.dir == str(directory)
    assert mode(directory) == 0o700
    # The writability probe leaves nothing behind.
    assert list(directory.iterdir()) == []


def test_relative_directory_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = storable_store(Path("rel"))
    assert store.dir == str(tmp_path / "rel")


NOBODY = 65534


def _world_writable(path: Path) -> None:
    path.mkdir()
    path.chmod(0o777)


def _group_writable(path: Path) -> None:
    path.mkdir()
    path.chmod(0o770)


def _sticky_like_tmp(path: Path) -> None:
    path.mkdir()
    path.chmod(0o1777)


def _owned_by_nobody(path: Path) -> None:
    path.mkdir(mode=0o700)
    os.chown(path, NOBODY, NOBODY)


def _symlink(path: Path) -> None:
    target = path.with_name(path.name + "-target")
    target.mkdir(mode=0o700)
    path.symlink_to(target)


UNSAFE_DIRECTORIES = {
    "world-writable": (_world_writable, "chmod 700"),
    "group-writable": (_group_writable, "chmod 700"),
    "sticky-world-writable": (_sticky_like_tmp, "chmod 700"),
    "other-owner": (_owned_by_nobody, "chown"),
    "symlink": (_symlink, "symbolic link"),
}


@pytest.mark.parametrize("name", list(UNSAFE_DIRECTORIES))
def test_unsafe_directory_is_refused(tmp_path: Path, name: str) -> None:
    prepare, fix = UNSAFE_DIRECTORIES[name]
    directory = tmp_path / "sessions"
    prepare(directory)
    with pytest.raises(ConfigurationError) as info:
        storable_store(directory)
    assert info.value.key == "dir"
    assert str(directory) in info.value.message
    assert fix in info.value.message
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("permissions", [0o700, 0o755])
def test_private_directory_is_accepted(tmp_path: Path, permissions: int) -> None:
    directory = tmp_path / "sessions"
    directory.mkdir()
    directory.chmod(permissions)
    store = storable_store(directory)
    key = store_key(new_id())
    create(store, key, n="1")
    assert store.fetch(key) is not None


def test_files_are_private_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        store = storable_store(tmp_path / "sessions")
        key = store_key(new_id())
        create(store, key, n="1")
    finally:
        os.umask(old)
    path = Path(store.dir, key[:2], key)
    assert (mode(path.parent.parent), mode(path.parent)) == (0o700, 0o700)
    assert (mode(path), mode(path.parent / ".lock")) == (0o600, 0o600)


@pytest.mark.parametrize("name", list(UNSAFE_DIRECTORIES))
def test_unsafe_subdirectory_is_refused(tmp_path: Path, clock: FakeClock, name: str) -> None:
    prepare, fix = UNSAFE_DIRECTORIES[name]
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    shard = Path(store.dir, key[:2])
    prepare(shard)
    calls: list[t.Callable[[], object]] = [
        lambda: store.fetch(key),
        lambda: create(store, key, n="1"),
        lambda: store.touch(key, clock.now + 60),
        lambda: store.remove(key),
    ]
    for call in calls:
        with pytest.raises(SessionStoreError, match=fix):
            call()
    assert list(shard.iterdir()) == []


def test_session_file_of_another_user_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1")
    os.chown(Path(store.dir, key[:2], key), NOBODY, NOBODY)
    with pytest.raises(SessionStoreError, match="planted"):
        store.fetch(key)
    with pytest.raises(SessionStoreError, match="planted"):
        store.apply(key, ChangeSet(updated={"n": "2"}))


def test_a_symbolic_link_to_another_session_is_refused(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    victim, attacker = store_key(new_id()), store_key(new_id())
    create(store, victim, user="admin")
    link = Path(store.dir, attacker[:2], attacker)
    link.parent.mkdir(mode=0o700, exist_ok=True)
    link.symlink_to(Path(store.dir, victim[:2], victim))
    with pytest.raises(SessionStoreError, match="symbolic link"):
        store.fetch(attacker)
    assert store.fetch(victim) is not None


def test_a_fifo_in_place_of_a_session_file_does_not_block(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    path = Path(store.dir, key[:2], key)
    path.parent.mkdir(mode=0o700)
    os.mkfifo(path, 0o600)
    assert store.fetch(key) is None  # returns at once: no writer is waited for
    assert "not a regular file" in caplog.text
    os.chown(path, NOBODY, NOBODY)
    with pytest.raises(SessionStoreError, match="planted"):
        store.fetch(key)


def test_files_are_private(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    session_app(app, store)
    session_id = app.test_client().get("/").text.split()[1]
    path = path_of(store, session_id)
    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700
    assert mode(path.parent / ".lock") == 0o600


def test_files_are_named_by_the_sha256_of_the_id(
    app: Flask, tmp_path: Path, clock: FakeClock
) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock)
    session_app(app, store)
    ids = []
    for _ in range(5):
        client = app.test_client()
        ids.append(client.get("/").text.split()[1])
        client.get("/")
    cookies = []
    for session_id in ids:
        digest = hashlib.sha256(session_id.encode()).hexdigest()
        assert (directory / digest[:2] / digest).is_file()
        cookies.append(session_id)

    for shard in directory.iterdir():
        assert shard.is_dir()
        assert len(shard.name) == 2
        assert all(c in "0123456789abcdef" for c in shard.name)
        for entry in shard.iterdir():
            assert entry.name == ".lock" or (
                len(entry.name) == 64 and entry.name.startswith(shard.name)
            )
    # The raw id appears in no file name and no file content.
    everything = list(directory.rglob("*"))
    assert len([p for p in everything if p.is_file() and p.name != ".lock"]) == 5
    for session_id in cookies:
        for path in everything:
            assert session_id not in str(path)
            if path.is_file():
                assert session_id.encode() not in path.read_bytes()


def test_file_content_and_mtime_is_the_expiry(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=600)
    session_app(app, store)
    created = clock.now
    session_id = app.test_client().get("/").text.split()[1]
    path = path_of(store, session_id)
    assert versions(path) == [
        {"created_at": created, "expires_at": created + 600, "data": {"n": "1"}}
    ]
    assert path.stat().st_mtime_ns == round((created + 600) * 1e9)
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert record.expires_at == created + 600


def test_a_write_appends_a_version_in_place(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    _, client, session_id, path = _one_session(
        app, tmp_path / "sessions", clock, expiration_timeout=600
    )
    inode = path.stat().st_ino
    clock.advance(10)
    assert client.get("/").text == f"2 {session_id}"
    assert path.stat().st_ino == inode
    assert [version["data"]["n"] for version in versions(path)] == ["1", "2"]
    assert newest(path)["expires_at"] == clock.now + 600
    assert path.stat().st_mtime_ns == round((clock.now + 600) * 1e9)


def _rewritten(path: Path, inode: int) -> bool:
    """Whether the file at ``path`` was replaced by one holding a single version."""
    return path.stat().st_ino != inode and len(versions(path)) == 1


def test_a_removal_or_a_new_user_rewrites_the_file(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1", secret="s")
    path = Path(store.dir, key[:2], key)
    inode = path.stat().st_ino
    store.apply(key, ChangeSet(updated={"n": "2"}))
    assert path.stat().st_ino == inode
    # Removed values do not linger in earlier lines.
    store.apply(key, ChangeSet(removed=frozenset({"secret"})))
    assert _rewritten(path, inode)
    assert b'"s"' not in path.read_bytes()
    inode = path.stat().st_ino
    store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}))
    assert _rewritten(path, inode)
    assert newest(path)["data"] == {"n": "2", USER_KEY: json.dumps("ann")}


def test_a_file_is_rewritten_before_it_grows_large(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="0")
    path = Path(store.dir, key[:2], key)
    sizes = []
    for number in range(1, 2000):
        store.apply(key, ChangeSet(updated={"n": str(number)}))
        sizes.append(path.stat().st_size)
    assert max(sizes) <= storable.COMPACT_AT
    assert min(sizes) < 200
    assert newest(path)["data"] == {"n": "1999"}
    # A large session is rewritten after a few versions, not kept many times.
    big = "x" * 100_000
    for number in range(10):
        store.apply(key, ChangeSet(updated={"big": big, "n": str(number)}))
        assert path.stat().st_size <= 4 * 100_100


def test_a_torn_last_line_is_ignored_then_rewritten(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1")
    store.apply(key, ChangeSet(updated={"n": "2"}))
    path = Path(store.dir, key[:2], key)
    whole = path.read_bytes()
    lines = whole.splitlines(keepends=True)
    torn_versions = [
        lines[0] + lines[1][: len(lines[1]) // 2],  # killed mid-append
        lines[0] + lines[1][:-1],  # the newline missing
        lines[0] + lines[1].replace(b'"2"', b'"3"'),  # CRC does not match
    ]
    for torn in torn_versions:
        corrupt(path, torn)
        record = store.fetch(key)
        assert record is not None
        assert record.data == {"n": "1"}
        inode = path.stat().st_ino
        store.apply(key, ChangeSet(updated={"m": "x"}))
        assert _rewritten(path, inode)
        assert newest(path)["data"] == {"n": "1", "m": "x"}
        corrupt(path, whole)


def test_a_line_s_expiry_counts_when_the_file_time_lags(tmp_path: Path, clock: FakeClock) -> None:
    """A process that died between appending a line and setting the file's
    time left an older time: the line's expiry holds, for reads, touches and
    purge."""
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=600)
    key = store_key(new_id())
    create(store, key, n="1")
    path = Path(store.dir, key[:2], key)
    os.utime(path, ns=(0, round((clock.now - 1) * 1e9)))
    record = store.fetch(key)
    assert record is not None
    assert record.expires_at == clock.now + 600
    assert store.purge() == 0
    store.touch(key, clock.now + 900)
    assert path.stat().st_mtime_ns == round((clock.now + 900) * 1e9)
    clock.advance(901)
    assert store.fetch(key) is None
    assert store.purge() == 1


# Atomic writes


def test_writes_leave_no_temporary_files(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock)
    session_app(app, store)
    client = app.test_client()
    for _ in range(20):
        client.get("/")
    assert client.get("/").text.startswith("21 ")
    assert temp_files(directory) == []


def test_failed_rename_keeps_the_old_file(
    app: Flask, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "sessions"
    store, client, session_id, path = _one_session(app, directory, clock)
    before = _file_state(path)
    clock.advance(10)

    real_replace = os.replace
    calls = []

    def failing_replace(src: t.Any, dst: t.Any) -> None:
        calls.append(dst)
        if os.fspath(dst) == str(path):
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", failing_replace)
        # A removal rewrites the file.
        changes = ChangeSet(updated={"n": "99"}, removed=frozenset({"gone"}))
        with pytest.raises(SessionStoreError) as info:
            store.apply(store_key(session_id), changes)
    assert len(calls) == 1
    assert isinstance(info.value.original_error, OSError)
    assert info.value.__cause__ is info.value.original_error
    assert _file_state(path) == before
    assert temp_files(directory) == []
    assert client.get("/").text == f"2 {session_id}"


@pytest.mark.parametrize("written", [0, 10])
def test_failed_append_keeps_the_old_version(
    app: Flask,
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    written: int,
) -> None:
    _, client, session_id, path = _one_session(app, tmp_path / "sessions", clock)
    before = _file_state(path)
    clock.advance(10)

    real_pwrite = os.pwrite

    def full_disk(fd: int, data: bytes, offset: int) -> int:
        # Part of the line fits, then the disk is full.
        if written and offset == len(before[0]):
            return real_pwrite(fd, data[:written], offset)
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(os, "pwrite", full_disk)
        with pytest.raises(SessionStoreError) as info:
            client.get("/")
    assert isinstance(info.value.original_error, OSError)
    assert info.value.original_error.errno == 28
    assert _file_state(path) == before
    assert client.get("/").text == f"2 {session_id}"


# Corrupt files


CORRUPT = {
    "garbage": b"\x00\xff\xfe not json at all",
    "empty": b"",
    "truncated": b'{"created_at": 1800000000.0, "data": {"n": "1"',
    "list": b"[1, 2, 3]",
    "string": b'"hello"',
    "null": b"null",
    "no-created-at": b'{"data": {"n": "1"}}',
    "created-at-text": b'{"created_at": "yesterday", "data": {}}',
    "data-list": b'{"created_at": 1, "data": ["n"]}',
    "non-str-value": b'{"created_at": 1, "data": {"n": 1}}',
    "nested-value": b'{"created_at": 1, "data": {"n": {"a": "b"}}}',
}


def corrupt(path: Path, content: bytes) -> None:
    """Overwrite ``path`` and keep its mtime, which is the session's expiry."""
    times = path.stat()
    path.write_bytes(content)
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_file_is_logged_and_gives_a_fresh_session(
    app: Flask, tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture, name: str
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    session_app(app, store)
    client = app.test_client()
    old = client.get("/").text.split()[1]
    path = path_of(store, old)
    corrupt(path, CORRUPT[name])

    with caplog.at_level(logging.WARNING, logger=LOGGER):
        response = client.get("/")
    assert response.status_code == 200
    count, new = response.text.split()
    assert count == "1"
    assert new != old
    warnings = [r for r in caplog.records if r.name == LOGGER and r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(path) in warnings[0].getMessage()
    assert client.get("/").text == f"2 {new}"


def test_directory_in_place_of_a_file_is_logged(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    Path(store.dir, key[:2], key).mkdir(parents=True)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.fetch(key) is None
    assert [r.name for r in caplog.records] == [LOGGER]


def test_deeply_nested_file_is_logged_and_ignored(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1")
    corrupt(Path(store.dir, key[:2], key), b"[" * 100_000)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert store.fetch(key) is None
    assert [r.name for r in caplog.records] == [LOGGER]


def test_corrupt_file_is_replaced_when_the_session_is_created_again(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1")
    corrupt(Path(store.dir, key[:2], key), b"garbage")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        store.apply(key, ChangeSet(updated={"m": "2"}))  # an update does not create
        assert store.fetch(key) is None
        create(store, key, m="3")
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"m": "3"}


# Keys that are not store keys


@pytest.mark.parametrize(
    "key",
    [
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "",
        "0" * 63,
        "0" * 65,
        "A" * 64,
        "g" * 64,
        "0" * 64 + "\n",
        "00/" + "0" * 61,
        "0" * 62 + "/.",
    ],
)
@pytest.mark.parametrize("method", ["fetch", "apply", "touch", "remove"])
def test_non_key_is_refused_before_any_file_access(
    tmp_path: Path, clock: FakeClock, key: str, method: str
) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock)
    outside = tmp_path / "x"
    outside.write_text("keep me")
    arguments: dict[str, tuple[t.Any, ...]] = {
        "fetch": (key,),
        "apply": (key, ChangeSet(updated={"a": "1"}, created_at=clock.now)),
        "touch": (key, clock.now + 100),
        "remove": (key,),
    }
    with pytest.raises(ValueError, match="not a store key"):
        getattr(store, method)(*arguments[method])
    assert outside.read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sessions", "x"]
    assert list(directory.iterdir()) == []


# Restart and processes sharing the directory


def test_sessions_survive_a_restart(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    directory = tmp_path / "sessions"
    session_app(app, storable_store(directory, clock))
    client = app.test_client()
    session_id = client.get("/").text.split()[1]
    client.get("/")
    cookie = client.get_cookie("PSESSION")
    assert cookie is not None

    restarted = Flask("restarted")
    restarted.config.update(TESTING=True, SECRET_KEY="test secret")
    session_app(restarted, storable_store(directory, clock))
    new_client = restarted.test_client()
    new_client.set_cookie("PSESSION", cookie.value)
    assert new_client.get("/").text == f"3 {session_id}"


def _apply_keys(directory: str, key: str, worker: int, count: int, barrier: t.Any) -> None:
    store = StorableStore(dir=directory)
    barrier.wait()
    for index in range(count):
        store.apply(key, ChangeSet(updated={f"w{worker}-{index}": str(index)}))


def test_processes_sharing_a_directory_lose_no_keys(tmp_path: Path) -> None:
    directory = str(tmp_path / "sessions")
    store = StorableStore(dir=directory)
    key = store_key(new_id())
    create(store, key, start="0")

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [
        context.Process(target=_apply_keys, args=(directory, key, worker, 20, barrier))
        for worker in range(4)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0, 0, 0, 0]

    record = store.fetch(key)
    assert record is not None
    expected = {f"w{w}-{i}" for w in range(4) for i in range(20)} | {"start"}
    assert set(record.data) == expected
    assert temp_files(Path(directory)) == []


def _write_growing_versions(directory: str, key: str, count: int, started: t.Any) -> None:
    store = StorableStore(dir=directory)
    for version in range(1, count + 1):
        # Large enough to span many pages, and to be rewritten every few versions.
        blob = str(version % 10) * 150_000
        store.apply(key, ChangeSet(updated={"v": str(version), "blob": blob}))
        started.set()


def test_a_reader_beside_a_writing_process_sees_whole_versions_in_order(
    tmp_path: Path,
) -> None:
    directory = str(tmp_path / "sessions")
    store = StorableStore(dir=directory)
    key = store_key(new_id())
    create(store, key, v="0", blob="")
    context = multiprocessing.get_context("spawn")
    started = context.Event()
    writer = context.Process(target=_write_growing_versions, args=(directory, key, 300, started))
    writer.start()
    assert started.wait(timeout=60)
    seen = []
    while writer.is_alive() or not seen:
        record = store.fetch(key)
        assert record is not None
        version = int(record.data["v"])
        assert record.data["blob"] == str(version % 10) * 150_000
        seen.append(version)
    writer.join(timeout=60)
    assert writer.exitcode == 0
    assert seen == sorted(seen)
    assert len(set(seen)) > 10
    record = store.fetch(key)
    assert record is not None
    assert record.data["v"] == "300"


# Files opened: one per lookup, however many there are, and one read per write


#: What the audit hook saw; it records only while this is a list.
_opened: list[tuple[str, t.Any]] | None = None
_hook_installed = False


def _audit(event: str, args: tuple[t.Any, ...]) -> None:
    if _opened is not None and event in ("open", "os.listdir", "os.scandir", "glob.glob"):
        _opened.append((event, args[0]))


@contextlib.contextmanager
def opened() -> t.Iterator[list[tuple[str, t.Any]]]:
    """Record the files and directories opened or listed in the block."""
    global _opened, _hook_installed
    if not _hook_installed:
        # Audit hooks cannot be removed, so it is installed once and kept idle.
        sys.addaudithook(_audit)
        _hook_installed = True
    events: list[tuple[str, t.Any]] = []
    _opened = events
    try:
        yield events
    finally:
        _opened = None


def test_fetch_opens_exactly_one_path(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    keys = [key for key in (store_key(new_id()) for _ in range(300)) if key[:2] != "ff"]
    for key in keys:
        create(store, key, n='"x"')
    missing = keys[0][:2] + store_key(new_id())[2:]  # in a subdirectory that exists
    for key in (keys[0], keys[-1], missing):
        with opened() as events:
            store.fetch(key)
        # An int is a descriptor wrapped in a file object, not a file opened again.
        paths = [(event, name) for event, name in events if not isinstance(name, int)]
        assert paths == [("open", str(Path(store.dir, key[:2], key)))]
    assert store.fetch(keys[150]) is not None
    with opened() as events:
        assert store.fetch("ff" + store_key(new_id())[2:]) is None
    assert [name for _, name in events] == []  # no subdirectory, nothing to open


def test_apply_reads_the_session_file_once(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1")
    path = str(Path(store.dir, key[:2], key))
    with opened() as events:
        assert store.apply(key, ChangeSet(updated={"n": "2"}))
    # An int is a descriptor wrapped in a file object, not a file opened again.
    opens = [name for event, name in events if event == "open" and isinstance(name, str)]
    # The lock file, then the session file, read and appended to.
    assert opens == [str(Path(store.dir, key[:2], ".lock")), path]
    with opened() as events:
        assert store.apply(key, ChangeSet(updated={"n": "3"}, removed=frozenset({"m"})))
    opens = [name for event, name in events if event == "open" and isinstance(name, str)]
    # A removal rewrites it: the temporary file written then renamed.
    assert opens[:2] == [str(Path(store.dir, key[:2], ".lock")), path]
    assert len(opens) == 3
    assert Path(opens[2]).name.startswith(".tmp-")


# Durability


@pytest.mark.parametrize("fsync", [False, True])
def test_fsync_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: bool) -> None:
    store = storable_store(tmp_path / "sessions", fsync=fsync)
    key = store_key(new_id())
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    create(store, key, n="1")
    path = Path(store.dir, key[:2], key)
    # The new subdirectory's entry in dir, the file under its temporary name,
    # then the directory it was renamed in.
    assert synced == ([store.dir, synced[1], str(path.parent)] if fsync else [])
    if fsync:
        assert Path(synced[1]).parent == path.parent
        assert Path(synced[1]).name.startswith(".tmp-")
    synced.clear()
    create(store, key, n="2")
    # Appended: the file itself.
    assert synced == ([str(path)] if fsync else [])
    synced.clear()
    store.apply(key, ChangeSet(removed=frozenset({"m"})))
    # Rewritten: the temporary file, then the directory.
    assert len(synced) == (2 if fsync else 0)
    synced.clear()
    assert store.remove(key) is True
    assert synced == ([str(path.parent)] if fsync else [])
    assert store.fetch(key) is None


def test_fsync_must_be_a_bool(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError) as info:
        storable_store(tmp_path / "sessions", fsync="yes")
    assert info.value.key == "fsync"


# Touch and purge


def test_touch_moves_the_mtime_without_rewriting(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    create(store, key, n="1")
    path = Path(store.dir, key[:2], key)
    before = path.stat()
    content = path.read_bytes()

    store.touch(key, clock.now + 5000)
    after = path.stat()
    assert after.st_ino == before.st_ino
    assert path.read_bytes() == content
    assert after.st_mtime_ns == round((clock.now + 5000) * 1e9)
    assert temp_files(Path(store.dir)) == []


def test_read_only_request_touches_in_place(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    _, client, session_id, path = _one_session(
        app, tmp_path / "sessions", clock, expiration_timeout=600
    )
    inode, content = path.stat().st_ino, path.read_bytes()

    clock.advance(120)
    assert client.get("/read").text == "1"
    assert (path.stat().st_ino, path.read_bytes()) == (inode, content)
    assert path.stat().st_mtime_ns == round((clock.now + 600) * 1e9)


def test_touch_does_not_revive_or_create(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=60)
    key = store_key(new_id())
    create(store, key, n="1")
    path = Path(store.dir, key[:2], key)
    clock.advance(61)
    mtime = path.stat().st_mtime_ns
    store.touch(key, clock.now + 60)
    assert path.stat().st_mtime_ns == mtime
    assert store.fetch(key) is None

    missing = store_key(new_id())
    store.touch(missing, clock.now + 60)
    assert not Path(store.dir, missing[:2], missing).exists()


def test_purge_removes_expired_files_and_stale_temporary_files(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock, expiration_timeout=60)
    expired = [store_key(new_id()) for _ in range(3)]
    for key in expired:
        create(store, key, n="1")
    clock.advance(30)
    live = [store_key(new_id()) for _ in range(2)]
    for key in live:
        create(store, key, n="2")
    clock.advance(31)

    shard = directory / live[0][:2]
    shard.mkdir(exist_ok=True)
    # A crash leftover; and one a writer has just stamped with a future expiry.
    leftover = shard / ".tmp-leftover"
    leftover.write_bytes(b"{}")
    two_hours_ago = time.time() - 7200
    os.utime(leftover, (two_hours_ago, two_hours_ago))
    in_flight = shard / ".tmp-in-flight"
    in_flight.write_bytes(b"{}")
    os.utime(in_flight, (clock.now + 60, clock.now + 60))
    foreign = [shard / "README", directory / "notes.txt", directory / "zz" / ("f" * 64)]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_text("not a session")
        os.utime(path, (0, 0))

    assert store.purge() == 3
    assert all(not Path(store.dir, k[:2], k).exists() for k in expired)
    assert all(store.fetch(k) is not None for k in live)
    assert all(path.exists() for path in foreign)
    # A temporary file's age is its ctime, which os.utime cannot set back (the
    # writer itself sets the mtime to the expiry): both are recent, both stay.
    assert leftover.exists() and in_flight.exists()

    # An hour and more later, by the wall clock purge measures temp files with.
    later = time.time() + 3601
    monkeypatch.setattr(storable, "time", types.SimpleNamespace(time=lambda: later))
    assert store.purge() == 0
    assert temp_files(directory) == []
    assert all(store.fetch(k) is not None for k in live)

    clock.advance(60)
    assert store.purge() == 2
    assert store.purge() == 0


class RenewingStore(StorableStore):
    """Renews one session file just before the next lock is taken, as a request
    landing between purge's scan and its locked re-check would."""

    renew: Path | None = None

    @contextlib.contextmanager
    def _locked(self, shard: str) -> t.Iterator[None]:
        if self.renew is not None:
            expires = round((self.clock() + 60) * 1e9)
            os.utime(self.renew, ns=(expires, expires))
            self.renew = None
        with super()._locked(shard):
            yield


def test_purge_keeps_a_session_renewed_after_it_was_listed(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = RenewingStore(dir=str(tmp_path / "sessions"), expiration_timeout=60)
    store.clock = clock
    # Two sessions in one subdirectory, so purge lists both before it locks.
    by_shard: dict[str, str] = {}
    while True:
        key = store_key(new_id())
        if key[:2] in by_shard:
            renewed, expired = by_shard[key[:2]], key
            break
        by_shard[key[:2]] = key
    create(store, renewed, n="1")
    create(store, expired, n="2")
    clock.advance(61)
    store.renew = Path(store.dir, renewed[:2], renewed)
    removed = store.purge()
    assert store.fetch(renewed) is not None
    assert store.fetch(expired) is None
    assert removed == 1


# Races


def _write_while_removing(store: StorableStore, key: str, writers: int = 4) -> bool:
    """Remove ``key`` while ``writers`` threads are applying updates to it, and
    return what remove returned."""
    started = threading.Barrier(writers + 1)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            store.apply(key, ChangeSet(updated={f"w{n}": "0"}))
            started.wait()
            for i in range(100):
                store.apply(key, ChangeSet(updated={f"w{n}": str(i)}))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    # Every writer is in its loop, most of them waiting for the lock.
    started.wait()
    removed = store.remove(key)
    for thread in threads:
        thread.join()
    assert errors == []
    return removed


def test_remove_is_not_undone_by_writes_in_flight(tmp_path: Path) -> None:
    store = storable_store(tmp_path / "sessions")
    for _ in range(20):
        key = store_key(new_id())
        create(store, key, a="1")
        removed = _write_while_removing(store, key)
        assert store.fetch(key) is None
        assert removed is True
        assert not Path(store.dir, key[:2], key).exists()


def _run_all(*targets: t.Callable[[], object]) -> list[BaseException]:
    """Run each target in a thread at once, and return what they raised."""
    errors: list[BaseException] = []

    def guarded(target: t.Callable[[], object]) -> None:
        try:
            target()
        except BaseException as error:  # returned
            errors.append(error)

    threads = [threading.Thread(target=guarded, args=(target,)) for target in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def test_purge_survives_writers_and_another_purge(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=60)
    # Few subdirectories, so the purges and the writers meet in the same ones.
    keys = [k for k in (store_key(new_id()) for _ in range(4000)) if k[0] == "0"][:80]

    def write() -> None:
        for key in keys[::2]:
            create(store, key, n="2")

    def purge() -> None:
        for _ in range(3):
            store.purge()

    for _ in range(10):
        for key in keys:
            create(store, key, n="1")
        clock.advance(61)
        assert _run_all(write, purge, purge) == []
        clock.advance(61)
        store.purge()
        assert [k for k in keys if store.fetch(k) is not None] == []


def test_purge_skips_files_that_vanish_while_it_scans(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock, expiration_timeout=60)
    shard = "00"
    keys = sorted(k for k in (store_key(new_id()) for _ in range(3000)) if k[:2] == shard)[:3]
    for key in keys:
        create(store, key, n="1")
    clock.advance(61)
    for name in ("gone-before-stat", "gone-before-unlink"):
        (directory / shard / f".tmp-{name}").write_bytes(b"{}")
    (directory / "ff").mkdir()
    # What vanishes once the scan has listed it: "stat" before it is looked at,
    # "unlink" after (the scan has its status already).
    vanish = {
        ".tmp-gone-before-stat": "stat",
        ".tmp-gone-before-unlink": "unlink",
        keys[0]: "stat",
        keys[1]: "unlink",
        "ff": "stat",
    }
    real_scandir = os.scandir

    class VanishingScandir:
        def __init__(self, path: str) -> None:
            self.entries = real_scandir(path)

        def __enter__(self) -> VanishingScandir:
            return self

        def __exit__(self, *exc_info: object) -> None:
            self.entries.close()

        def __iter__(self) -> t.Iterator[os.DirEntry[str]]:
            with self.entries:
                for entry in self.entries:
                    when = vanish.get(entry.name)
                    if when == "unlink":
                        entry.stat(follow_symlinks=False)
                    if when is not None:
                        (os.rmdir if entry.is_dir() else os.unlink)(entry.path)
                    yield entry

    later = time.time() + 3601
    monkeypatch.setattr(storable, "time", types.SimpleNamespace(time=lambda: later))
    monkeypatch.setattr(os, "scandir", VanishingScandir)
    assert store.purge() == 1
    monkeypatch.undo()
    assert sorted(p.name for p in (directory / shard).iterdir()) == [".lock"]
    assert sorted(p.name for p in directory.iterdir()) == [shard]


# Listing, clearing, and sessions by user


def bind(store: StorableStore, key: str, user: str | None, **data: str) -> None:
    """Create the session under ``key`` bound to ``user`` (or to no one)."""
    if user is not None:
        data[USER_KEY] = json.dumps(user)
    create(store, key, **data)


def markers(store: StorableStore, user: str) -> set[str]:
    """The keys listed among the sessions of ``user``, read from the disk."""
    directory = Path(store.dir, "users", hashlib.sha256(user.encode()).hexdigest())
    return {path.name for path in directory.iterdir()} if directory.exists() else set()


def keys_in_shard(count: int, shard: str = "0") -> list[str]:
    """``count`` new store keys whose subdirectory starts with ``shard``."""
    keys: list[str] = []
    while len(keys) < count:
        key = store_key(new_id())
        if key.startswith(shard):
            keys.append(key)
    return keys


def test_scan_and_clear_see_only_session_files(tmp_path: Path, clock: FakeClock) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock, expiration_timeout=60)
    expired, live, bound = store_key(new_id()), store_key(new_id()), store_key(new_id())
    create(store, expired, n="0")
    clock.advance(30)
    create(store, live, n="1")
    bind(store, bound, "ann", n="2")
    clock.advance(31)
    shard = directory / live[:2]
    elsewhere = store_key(new_id())
    foreign = [
        shard / "README",
        shard / ".tmp-in-flight",
        # A key in the wrong subdirectory, and one outside any.
        shard / (f"{int(live[0], 16) ^ 1:x}" + elsewhere[1:]),
        directory / "zz" / elsewhere,
    ]
    for path in foreign:
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"created_at": 1, "data": {"x": "1"}}))
        os.utime(path, (clock.now + 60, clock.now + 60))
    # A symbolic link named like a session, to a live session's file.
    link = Path(store.dir, elsewhere[:2], elsewhere)
    link.parent.mkdir(exist_ok=True)
    link.symlink_to(shard / live)

    found = dict(store.scan())
    assert set(found) == {live, bound}
    assert found[live].data == {"n": "1"}
    assert markers(store, "ann") == {bound}

    assert store.clear() == 2
    assert list(store.scan()) == []
    assert not Path(store.dir, expired[:2], expired).exists()
    assert all(path.exists() for path in foreign)
    assert link.is_symlink()
    assert not (directory / "users" / hashlib.sha256(b"ann").hexdigest()).exists()
    assert store.clear() == 0


def test_scan_reads_one_subdirectory_at_a_time(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    first, second = keys_in_shard(1, "00")[0], keys_in_shard(1, "ff")[0]
    create(store, first, n="1")
    create(store, second, n="2")
    with opened() as events:
        scan = store.scan()
        next(scan)
    # The list of subdirectories, then the first one and its session.
    assert [event for event, name in events if not isinstance(name, int)] == [
        "os.scandir",
        "os.scandir",
        "open",
    ]


def test_the_user_index_follows_every_change(tmp_path: Path, clock: FakeClock) -> None:
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=60)
    users = Path(store.dir, "users")
    key = store_key(new_id())
    bind(store, key, "ann", n="1")
    ann = users / hashlib.sha256(b"ann").hexdigest()
    assert (mode(users), mode(ann), mode(ann / key)) == (0o700, 0o700, 0o600)
    assert (ann / key).read_bytes() == b""

    store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    assert (markers(store, "ann"), markers(store, "bob")) == (set(), {key})
    # The user's last marker takes the user's directory with it.
    assert not ann.exists()
    store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    assert markers(store, "bob") == set()
    assert store.fetch(key) is not None
    store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}))
    assert markers(store, "ann") == {key}

    # Emptied, removed, purged.
    store.apply(key, ChangeSet(removed=frozenset({"n", USER_KEY})))
    assert markers(store, "ann") == set()

    def expire_and_purge(key: str) -> None:
        clock.advance(61)
        store.purge()

    for end in (store.remove, expire_and_purge):
        bind(store, key, "ann", n="1")
        assert markers(store, "ann") == {key}
        end(key)
        assert store.fetch(key) is None
        assert markers(store, "ann") == set()
    assert list(users.iterdir()) == []


def test_an_expired_session_replaced_by_another_user_moves_its_marker(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=60)
    key = store_key(new_id())
    bind(store, key, "ann", n="1")
    clock.advance(61)
    assert store.sessions_of("ann") == {}
    # Expired, the file is still bound: its marker stays until purge.
    assert markers(store, "ann") == {key}
    bind(store, key, "bob", n="2")
    assert (markers(store, "ann"), set(store.sessions_of("bob"))) == (set(), {key})


def test_stale_markers_are_not_reported_and_are_cleaned(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    live, gone, unbound, rebound, broken = (store_key(new_id()) for _ in range(5))
    bind(store, live, "ann", n="1")
    bind(store, unbound, None, n="2")
    bind(store, rebound, "bob", n="3")
    bind(store, broken, "ann", n="4")
    corrupt(Path(store.dir, broken[:2], broken), b"not json")
    # Left by processes that died between a marker and its session file.
    directory = Path(store.dir, "users", hashlib.sha256(b"ann").hexdigest())
    for key in (gone, unbound, rebound):
        (directory / key).touch()
    not_a_key = directory / "README"
    not_a_key.touch()

    with caplog.at_level(logging.ERROR, logger=LOGGER):
        assert set(store.sessions_of("ann")) == {live}
    assert markers(store, "ann") == {live, not_a_key.name}
    assert markers(store, "bob") == {rebound}
    assert not Path(store.dir, gone[:2], gone).exists()

    for key in (gone, unbound, rebound):
        (directory / key).touch()
    assert store.remove_user("ann") == 1
    assert markers(store, "ann") == {not_a_key.name}
    assert store.fetch(unbound) is not None
    assert set(store.sessions_of("bob")) == {rebound}


class BindingStore(StorableStore):
    """Runs ``before_lock`` once, just before the next lock is taken, as a
    request landing between a read and a locked re-check would."""

    before_lock: t.Callable[[], object] | None = None

    @contextlib.contextmanager
    def _locked(self, shard: str) -> t.Iterator[None]:
        hook, self.before_lock = self.before_lock, None
        if hook is not None:
            hook()
        with super()._locked(shard):
            yield


def test_a_stale_marker_bound_again_meanwhile_is_kept(tmp_path: Path, clock: FakeClock) -> None:
    store = BindingStore(dir=str(tmp_path / "sessions"))
    store.clock = clock
    key = store_key(new_id())
    bind(store, key, "ann", n="1")
    store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    # A marker left by a crash, read as stale, then the session is bound.
    Path(store.dir, "users", hashlib.sha256(b"ann").hexdigest()).mkdir()
    Path(store.dir, "users", hashlib.sha256(b"ann").hexdigest(), key).touch()
    store.before_lock = lambda: store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}))
    assert store.sessions_of("ann") == {}
    assert markers(store, "ann") == {key}
    assert set(store.sessions_of("ann")) == {key}


def test_remove_user_spares_a_session_bound_elsewhere_meanwhile(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = BindingStore(dir=str(tmp_path / "sessions"))
    store.clock = clock
    key = store_key(new_id())
    bind(store, key, "ann", n="1")
    store.before_lock = lambda: store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    assert store.remove_user("ann") == 0
    assert set(store.sessions_of("bob")) == {key}
    assert markers(store, "ann") == set()


def test_a_marker_survives_its_directory_vanishing(
    tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = storable_store(tmp_path / "sessions", clock)
    directory = Path(store.dir, "users", hashlib.sha256(b"ann").hexdigest())
    key = store_key(new_id())
    real_open = os.open
    vanished: list[str] = []

    def open_after_rmdir(path: t.Any, *args: t.Any, **kwargs: t.Any) -> int:
        # As if another process unlisted the user's last other session
        # between the directory's creation and this marker's.
        if Path(path).parent == directory and not vanished:
            vanished.append(path)
            directory.rmdir()
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_after_rmdir)
    bind(store, key, "ann", n="1")
    monkeypatch.undo()
    assert vanished == [str(directory / key)]
    assert set(store.sessions_of("ann")) == {key}


@pytest.mark.parametrize("where", ["users", "users/<user>"])
@pytest.mark.parametrize("name", list(UNSAFE_DIRECTORIES))
def test_unsafe_user_directory_is_refused(
    tmp_path: Path, clock: FakeClock, name: str, where: str
) -> None:
    prepare, fix = UNSAFE_DIRECTORIES[name]
    store = storable_store(tmp_path / "sessions", clock)
    users = Path(store.dir, "users")
    directory = users / hashlib.sha256(b"ann").hexdigest()
    if where == "users":
        prepare(users)
    else:
        users.mkdir(mode=0o700)
        prepare(directory)
    key = store_key(new_id())
    calls: list[t.Callable[[], object]] = [
        lambda: bind(store, key, "ann", n="1"),
        lambda: store.sessions_of("ann"),
        lambda: store.remove_user("ann"),
    ]
    for call in calls:
        with pytest.raises(SessionStoreError, match=fix):
            call()
    # The session was not written without its marker.
    assert store.fetch(key) is None
    if where != "users":
        # Other users are not concerned.
        bind(store, key, "bob", n="1")
        assert set(store.sessions_of("bob")) == {key}


def _bind_new_sessions(
    store: StorableStore, stop: threading.Event, ready: threading.Event, keys: list[str]
) -> None:
    while not stop.is_set():
        key = store_key(new_id())
        bind(store, key, "ann", n="1")
        keys.append(key)
        if len(keys) == 20:
            ready.set()


def test_remove_user_never_unlists_a_new_login(tmp_path: Path) -> None:
    store = storable_store(tmp_path / "sessions")
    for _ in range(10):
        stop, ready = threading.Event(), threading.Event()
        created: list[str] = []
        thread = threading.Thread(target=_bind_new_sessions, args=(store, stop, ready, created))
        thread.start()
        assert ready.wait(timeout=60)
        # Every session in created[:before] was there before remove_user.
        before = len(created)
        store.remove_user("ann")
        stop.set()
        thread.join()
        assert [key for key in created[:before] if store.fetch(key) is not None] == []
        # Sessions created meanwhile may remain, but then they are listed.
        survivors = {key for key in created if store.fetch(key) is not None}
        assert survivors <= markers(store, "ann")
        assert set(store.sessions_of("ann")) == survivors
        store.remove_user("ann")


def _log_in_and_out(directory: str, worker: int, rounds: int, barrier: t.Any) -> None:
    store = StorableStore(dir=directory)
    barrier.wait()
    for index in range(rounds):
        key = store_key(new_id())
        bind(store, key, "ann", n=str(index))
        if index % 3 == 0:
            store.apply(key, ChangeSet(updated={USER_KEY: json.dumps(f"bob{worker}")}))
        elif index % 5 == 0:
            store.remove_user("ann")
        elif index % 7 == 0:
            store.apply(key, ChangeSet(removed=frozenset({USER_KEY, "n"})))


def test_processes_binding_and_removing_one_user(tmp_path: Path) -> None:
    directory = str(tmp_path / "sessions")
    store = StorableStore(dir=directory)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=_log_in_and_out, args=(directory, worker, 300, barrier))
        for worker in range(2)
    ]
    for process in workers:
        process.start()
    for process in workers:
        process.join(timeout=120)
    assert [process.exitcode for process in workers] == [0, 0]

    by_user: dict[str | None, set[str]] = {}
    for key, record in store.scan():
        user = record.data.get(USER_KEY)
        by_user.setdefault(None if user is None else json.loads(user), set()).add(key)
    assert set(by_user) == {"ann", "bob0", "bob1"}
    for user in ("ann", "bob0", "bob1"):
        assert set(store.sessions_of(user)) == by_user[user]
        assert markers(store, user) == by_user[user]
    assert store.remove_user("ann") == len(by_user["ann"])
    assert markers(store, "ann") == set()
    users = [record.data.get(USER_KEY) for _, record in store.scan()]
    assert json.dumps("ann") not in users


def test_a_session_file_the_app_cannot_read_is_a_store_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = StorableStore(dir=str(tmp_path / "sessions"))
    key = store_key("x" * 43)
    store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    path = str(Path(store.dir) / key[:2] / key)
    original_open = os.open

    def denied(file: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
        if str(file) == path:
            raise PermissionError(13, "Permission denied", path)
        return original_open(file, *args, **kwargs)

    # Root reads any file, so the denial is simulated at the OS boundary.
    monkeypatch.setattr("os.open", denied)
    with pytest.raises(SessionStoreError):
        store.fetch(key)


# Compare-and-set


def test_a_compare_and_set_that_fails_on_the_user_leaves_the_index(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A stale ``rekey`` write of the user binding, after a login as another
    user, neither lists the session under the old user nor unlists it, and
    leaves the file as a plain change would."""
    store = storable_store(tmp_path / "sessions", clock)
    key = store_key(new_id())
    bind(store, key, "bob", n="1")
    path = Path(store.dir, key[:2], key)
    inode = path.stat().st_ino
    assert store.apply(
        key,
        ChangeSet(
            updated={USER_KEY: json.dumps("ann"), "n": "2"},
            expected={USER_KEY: json.dumps("ann"), "n": "1"},
        ),
    )
    assert newest(path)["data"] == {USER_KEY: json.dumps("bob"), "n": "2"}
    assert (markers(store, "ann"), markers(store, "bob")) == (set(), {key})
    assert set(store.sessions_of("bob")) == {key}
    # The binding did not change, so nothing needs to go from earlier lines.
    assert path.stat().st_ino == inode
    assert len(versions(path)) == 2


# Rekey and the append-only log: no value it replaces stays on the disk

SECRET = "the answer is 42"


class Killed(BaseException):
    """Stands for SIGKILL in the middle of a write: no handler runs."""


def rekey_app(store: StorableStore, keys: list[str]) -> Flask:
    """An app over ``store``, encrypting with ``keys`` if any, whose ``/write``
    sets every value of the session anew."""
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test secret")
    if keys:
        app.config["PRANCER_SESSION"] = {"encryption": {"keys": keys}}
    PrancerSession(app, store=store)

    @app.get("/write")
    def write() -> str:
        number = session.get("n", 0) + 1
        session["n"] = number
        session["secret"] = f"{SECRET} #{number}"
        session["cart"] = ["apple", number]
        session.bind_user("ann")
        return session.id

    @app.get("/read")
    def read() -> str:
        return f"{session.get('secret')} {session.get('cart')}"

    return app


def copy_cookie(source: FlaskClient, target: FlaskClient) -> None:
    cookie = source.get_cookie("PSESSION")
    assert cookie is not None
    target.set_cookie("PSESSION", cookie.value)


def rekey(app: Flask) -> str:
    result = app.test_cli_runner().invoke(args=["session", "rekey"])
    assert result.exit_code == 0, result.output
    return result.output


def files_holding(directory: Path, text: str) -> list[Path]:
    """Every file under ``directory`` (temporary files and markers included)
    whose bytes hold ``text``."""
    return [
        path
        for path in directory.rglob("*")
        if path.is_file() and text.encode() in path.read_bytes()
    ]


def sealed_values(directory: Path) -> list[tuple[str, str]]:
    """The name and value of every sealed value in every version of every
    file under ``directory``, temporary files included."""
    return [
        (name, value)
        for path in directory.rglob("*")
        if path.is_file()
        for version in versions(path)
        for name, value in version["data"].items()
        if name != USER_KEY
    ]


def test_rekey_after_encryption_is_turned_on_leaves_no_clear_value_on_disk(
    tmp_path: Path,
) -> None:
    """The reviewer's case: a request re-set every value once encryption was
    on, so the newest version needs nothing and ``rekey`` re-seals nothing,
    yet the earlier versions in the file hold the values in the clear."""
    directory = tmp_path / "sessions"
    store = storable_store(directory)
    client = rekey_app(store, []).test_client()
    session_id = client.get("/write").text
    path = path_of(store, session_id)

    sealed = rekey_app(store, [secrets.token_urlsafe(32)])
    encrypted = sealed.test_client()
    copy_cookie(client, encrypted)
    assert encrypted.get("/write").text == session_id
    assert all(
        value.startswith(PREFIX) for name, value in newest(path)["data"].items() if name != USER_KEY
    )
    assert files_holding(directory, SECRET) == [path]

    assert rekey(sealed).endswith("Re-encrypted 0 sessions.\n")
    assert files_holding(directory, SECRET) == []
    assert files_holding(directory, "apple") == []
    assert len(versions(path)) == 1
    assert encrypted.get("/read").text == f"{SECRET} #1 ['apple', 1]"
    assert set(store.sessions_of("ann")) == {store_key(session_id)}


def test_rekey_after_a_key_rotation_leaves_nothing_the_old_key_opens(tmp_path: Path) -> None:
    """The newest version was sealed under the new key by a request, the
    earlier ones under the retired key, which must open none of them."""
    directory = tmp_path / "sessions"
    store = storable_store(directory)
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    client = rekey_app(store, [old]).test_client()
    session_id = client.get("/write").text
    rotated = rekey_app(store, [new, old])
    reader = rotated.test_client()
    copy_cookie(client, reader)
    assert reader.get("/write").text == session_id
    assert len(versions(path_of(store, session_id))) == 2

    assert rekey(rotated).endswith("Re-encrypted 0 sessions.\n")
    retired = Encryptor([old])
    values = sealed_values(directory)
    assert values
    for name, value in values:
        assert Encryptor([new]).is_current(value)
        with pytest.raises(ValueError, match="not configured"):
            retired.open(value, name)
    only_new = rekey_app(store, [new]).test_client()
    copy_cookie(client, only_new)
    assert only_new.get("/read").text == f"{SECRET} #2 ['apple', 2]"


def test_rekey_drops_a_torn_last_line(tmp_path: Path) -> None:
    """A process of the app still running without encryption died while
    appending: its torn line, never read, still holds clear values."""
    directory = tmp_path / "sessions"
    store = storable_store(directory)
    sealed = rekey_app(store, [secrets.token_urlsafe(32)])
    client = sealed.test_client()
    path = path_of(store, client.get("/write").text)
    data = {"secret": json.dumps(SECRET), "cart": '["apple"]'}
    torn = json.dumps({"created_at": 0, "expires_at": 0, "data": data}).encode()
    with path.open("ab") as file:
        file.write(b"%08x %s" % (zlib.crc32(torn), torn[:-5]))
    assert files_holding(directory, SECRET) == [path]
    assert client.get("/read").text == f"{SECRET} #1 ['apple', 1]"

    assert rekey(sealed).endswith("Re-encrypted 0 sessions.\n")
    assert files_holding(directory, SECRET) == []
    assert len(versions(path)) == 1
    assert client.get("/read").text == f"{SECRET} #1 ['apple', 1]"


def _kill_before_rename(
    monkeypatch: pytest.MonkeyPatch, store: StorableStore, key: str, changes: ChangeSet
) -> None:
    """Apply ``changes`` as a process killed once it has written the new
    version under its temporary name, before renaming it."""

    def killed(source: t.Any, target: t.Any) -> None:
        raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", killed)
        with pytest.raises(Killed):
            store.apply(key, changes)


def test_rekey_removes_what_a_write_killed_before_its_rename_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "sessions"
    store = storable_store(directory)
    client = rekey_app(store, []).test_client()
    session_id = client.get("/write").text
    key = store_key(session_id)
    # A removal rewrites the file, aside first.
    _kill_before_rename(monkeypatch, store, key, ChangeSet(removed=frozenset({"gone"})))
    assert len(temp_files(directory)) == 1

    sealed = rekey_app(store, [secrets.token_urlsafe(32)])
    assert rekey(sealed).endswith("Re-encrypted 1 session.\n")
    assert files_holding(directory, SECRET) == []
    assert temp_files(directory) == []


def _end_by_rewrite(store: StorableStore, key: str, clock: FakeClock) -> None:
    store.apply(key, ChangeSet(removed=frozenset({"gone"})))


def _end_by_erasing(store: StorableStore, key: str, clock: FakeClock) -> None:
    store.apply(key, ChangeSet(erase_old_values=True))


def _end_by_emptying(store: StorableStore, key: str, clock: FakeClock) -> None:
    store.apply(key, ChangeSet(removed=frozenset({"n", "secret"})))


def _end_by_removing(store: StorableStore, key: str, clock: FakeClock) -> None:
    store.remove(key)


def _end_by_clearing(store: StorableStore, key: str, clock: FakeClock) -> None:
    store.clear()


def _end_by_purging(store: StorableStore, key: str, clock: FakeClock) -> None:
    clock.advance(store.expiration_timeout)
    assert store.purge() == 1


@pytest.mark.parametrize(
    "end",
    [
        _end_by_rewrite,
        _end_by_erasing,
        _end_by_emptying,
        _end_by_removing,
        _end_by_clearing,
        _end_by_purging,
    ],
)
def test_a_temporary_file_left_by_a_killed_write_goes_with_the_next_rewrite(
    tmp_path: Path,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
    end: t.Callable[[StorableStore, str, FakeClock], None],
) -> None:
    """One temporary name per session: the session's next rewrite replaces
    what a killed one left, and deleting the session deletes it, without
    waiting an hour for purge to call it stale."""
    directory = tmp_path / "sessions"
    store = storable_store(directory, clock)
    key = store_key(new_id())
    create(store, key, n="1", secret=json.dumps(SECRET))
    _kill_before_rename(
        monkeypatch, store, key, ChangeSet(updated={"n": "2"}, removed=frozenset({"m"}))
    )
    (leftover,) = temp_files(directory)
    assert mode(leftover) == 0o600
    record = store.fetch(key)
    assert record is not None and record.data["n"] == "1"

    end(store, key, clock)
    assert temp_files(directory) == []


def test_erasing_old_values_rewrites_the_file_even_without_a_change(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = storable_store(tmp_path / "sessions", clock, expiration_timeout=600)
    key = store_key(new_id())
    create(store, key, n="1", secret=json.dumps(SECRET))
    store.apply(key, ChangeSet(updated={"secret": '"sealed"'}))
    path = Path(store.dir, key[:2], key)
    inode = path.stat().st_ino
    assert len(versions(path)) == 2
    assert SECRET.encode() in path.read_bytes()
    clock.advance(100)

    assert store.apply(key, ChangeSet(timeout=500, erase_old_values=True))
    assert _rewritten(path, inode)
    assert SECRET.encode() not in path.read_bytes()
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"n": "1", "secret": '"sealed"'}
    assert record.expires_at == clock.now + 500

    # A session gone or ended meanwhile is not created again; an expired
    # file goes, as purge would delete it, and its marker with it.
    missing = store_key(new_id())
    assert not store.apply(missing, ChangeSet(erase_old_values=True))
    assert not Path(store.dir, missing[:2], missing).exists()
    bind(store, key, "ann", n="1", secret=json.dumps(SECRET))
    clock.advance(601)
    assert not store.apply(key, ChangeSet(erase_old_values=True))
    assert not path.exists()
    assert markers(store, "ann") == set()
