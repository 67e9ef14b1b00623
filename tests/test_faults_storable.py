"""The storable store when the disk fails it: a directory it cannot write, a full
disk, a process killed mid-write or mid-login, and processes racing a removal."""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing
import os
import random
import resource
import signal
import time
import types
import typing as t
from pathlib import Path

import pytest

from flask_prancer_session import ChangeSet
from flask_prancer_session import SessionStoreError
from flask_prancer_session import StorableStore
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.storable import store as storable

from .clock import FakeClock
from .storable_files import newest
from .storable_files import versions

pytestmark = pytest.mark.fault

#: Child processes start afresh, so they inherit no threads or locks of pytest's.
spawn = multiprocessing.get_context("spawn")


def create(store: StorableStore, key: str, **data: str) -> None:
    store.apply(key, ChangeSet(updated=data, created_at=store.clock()))


def temp_files(directory: Path) -> list[Path]:
    return list(directory.rglob(".tmp-*"))


def join(*processes: t.Any) -> list[int | None]:
    for process in processes:
        process.join(timeout=120)
        if process.exitcode is None:
            process.kill()
            process.join()
    return [process.exitcode for process in processes]


# A directory the store cannot write, even as root, then repaired


def _shard_is_a_file(shard: Path) -> t.Callable[[], None]:
    aside = shard.with_name(shard.name + ".aside")
    shard.rename(aside)
    shard.write_text("in the way")

    def repair() -> None:
        shard.unlink()
        aside.rename(shard)

    return repair


def _lock_is_a_directory(shard: Path) -> t.Callable[[], None]:
    (shard / ".lock").unlink()
    (shard / ".lock").mkdir()
    return (shard / ".lock").rmdir


@pytest.mark.parametrize("breakage", [_shard_is_a_file, _lock_is_a_directory])
def test_unwritable_directory_fails_loudly_and_recovers(
    tmp_path: Path, clock: FakeClock, breakage: t.Callable[[Path], t.Callable[[], None]]
) -> None:
    store = StorableStore(dir=str(tmp_path / "sessions"))
    store.clock = clock
    key = store_key(new_id())
    create(store, key, n="1")
    path = Path(store.dir, key[:2], key)
    before = path.read_bytes(), path.stat().st_mtime_ns

    repair = breakage(path.parent)
    for call in (
        lambda: store.apply(key, ChangeSet(updated={"n": "2"})),
        lambda: store.touch(key, clock.now + 60),
        lambda: store.remove(key),
    ):
        with pytest.raises(SessionStoreError, match=key[:2]):
            call()
    repair()

    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert store.apply(key, ChangeSet(updated={"m": "3"})) is True
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"n": "1", "m": "3"}
    assert temp_files(tmp_path) == []


# A full disk: files may grow to a few kilobytes only


def _write_past_file_size_limit(directory: str, key: str, results: t.Any) -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.RLIM_INFINITY))
    store = StorableStore(dir=directory)
    try:
        store.apply(key, ChangeSet(updated={"big": "x" * 100_000}))
    except SessionStoreError as error:
        original = error.original_error
        results.put(original.errno if isinstance(original, OSError) else repr(original))
    else:
        results.put("stored")
    results.put(store.apply(key, ChangeSet(updated={"small": "y"})))


def test_full_disk_keeps_the_old_session(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    store = StorableStore(dir=str(directory))
    key = store_key(new_id())
    create(store, key, n="1")
    path = Path(store.dir, key[:2], key)
    before = path.read_bytes()
    # The cut-back append, once the file holds room for a small one again.
    results = spawn.Queue()
    child = spawn.Process(target=_write_past_file_size_limit, args=(str(directory), key, results))
    child.start()
    assert join(child) == [0]
    assert results.get(timeout=10) == errno.EFBIG
    # The disk has room for a small write again.
    assert results.get(timeout=10) is True

    record = store.fetch(key)
    assert record is not None
    assert record.data == {"n": "1", "small": "y"}
    assert path.read_bytes().startswith(before)
    assert newest(path)["data"] == {"n": "1", "small": "y"}
    assert temp_files(directory) == []


# A process killed with SIGKILL while it writes

BLOB = 500_000


def _write_versions(
    directory: str, keys: list[str], first: int, die_at: tuple[str, int] | None, started: t.Any
) -> None:
    """Write ever newer versions of the sessions under ``keys`` until killed;
    with ``die_at`` = ("rename", n), kill itself just before the n-th rename,
    once the new version is written under its temporary name; with
    ("append", n), in the middle of the n-th append."""
    calls = 0
    real_replace, real_pwrite = os.replace, os.pwrite

    def replace(source: str, target: str) -> None:
        nonlocal calls
        calls += die_at is not None and die_at[0] == "rename"
        if die_at is not None and calls == die_at[1]:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(source, target)

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        nonlocal calls
        calls += die_at is not None and die_at[0] == "append"
        if die_at is not None and calls == die_at[1]:
            real_pwrite(fd, data[: len(data) // 2], offset)
            os.kill(os.getpid(), signal.SIGKILL)
        return real_pwrite(fd, data, offset)

    os.replace = replace  # type: ignore[assignment]
    os.pwrite = pwrite
    store = StorableStore(dir=directory)
    version = first
    while True:
        for key in keys:
            blob = str(version % 10) * BLOB
            store.apply(key, ChangeSet(updated={"v": str(version), "blob": blob}, created_at=0.0))
        started.set()
        version += 1


def test_process_killed_mid_write_leaves_old_or_new_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = tmp_path / "sessions"
    store = StorableStore(dir=str(directory))
    keys = [store_key(new_id()) for _ in range(6)]
    first = 0
    for number in range(9):
        # A third of the rounds are killed at a random time, a third
        # mid-append, a third between writing a temporary file and renaming it.
        die_at = (None, ("append", 0), ("rename", 0))[number % 3]
        if die_at is not None:
            die_at = (die_at[0], random.randint(len(keys) + 1, 3 * len(keys)))
        started = spawn.Event()
        child = spawn.Process(
            target=_write_versions, args=(str(directory), keys, first, die_at, started)
        )
        child.start()
        assert started.wait(timeout=60)
        if die_at is None:
            time.sleep(random.uniform(0, 0.05))
            os.kill(t.cast(int, child.pid), signal.SIGKILL)
        assert join(child) == [-signal.SIGKILL]

        versions = []
        for key in keys:
            content = newest(Path(store.dir, key[:2], key))
            version = int(content["data"]["v"])
            assert content["data"]["blob"] == str(version % 10) * BLOB
            record = store.fetch(key)
            assert record is not None
            assert record.data == content["data"]
            versions.append(version)
        # Each round starts above what the last one may have written.
        assert min(versions) >= first
        first = max(versions) + 1
        # One temporary name per session: the kills leave at most one each,
        # which the session's next rewrite replaces.
        leftovers = {path.name for path in temp_files(directory)}
        assert leftovers <= {f".tmp-{key}" for key in keys}
        assert leftovers or die_at is None or die_at[0] != "rename"
    assert temp_files(directory)

    # Temporary files left by the kills are not sessions: they are purged as
    # leftovers once stale, and never counted.
    later = time.time() + 3601
    monkeypatch.setattr(storable, "time", types.SimpleNamespace(time=lambda: later))
    store.clock = FakeClock(later + 10 * 365 * 86400)
    assert store.purge() == len(keys)
    assert [p.name for p in directory.rglob("*") if p.is_file()] == [".lock"] * len(
        {key[:2] for key in keys}
    )


def test_rekey_leaves_nothing_a_process_killed_before_its_rename_left(tmp_path: Path) -> None:
    """What a killed rewrite left under the temporary name, and the earlier
    versions in the file, go when ``rekey`` erases the session's old values."""
    directory = tmp_path / "sessions"
    store = StorableStore(dir=str(directory))
    key = store_key(new_id())
    # The first rename creates the file; three versions are appended, and the
    # fifth does not fit: the file is rewritten, and the process killed.
    started = spawn.Event()
    child = spawn.Process(
        target=_write_versions, args=(str(directory), [key], 0, ("rename", 2), started)
    )
    child.start()
    assert join(child) == [-signal.SIGKILL]
    path = Path(store.dir, key[:2], key)
    # How many versions fit before the rewrite depends on the digits of the
    # expiry times in each line: a few bytes either way.
    kept = [version["data"]["v"] for version in versions(path)]
    assert len(kept) >= 2
    assert kept == [str(n) for n in range(len(kept))]
    (leftover,) = temp_files(directory)
    assert [version["data"]["v"] for version in versions(leftover)] == [str(len(kept))]

    assert store.apply(key, ChangeSet(erase_old_values=True))
    assert temp_files(directory) == []
    assert [version["data"]["v"] for version in versions(path)] == [kept[-1]]


# Processes writing while another removes or purges


def _write_until_gone(directory: str, keys: list[str], worker: int) -> None:
    store = StorableStore(dir=directory)
    live = list(keys)
    for index in range(100_000):
        live = [
            key for key in live if store.apply(key, ChangeSet(updated={f"w{worker}": str(index)}))
        ]
        if not live:
            return
    raise AssertionError("the sessions were never removed")


@pytest.mark.parametrize("how", ["remove", "purge"])
def test_no_process_revives_a_removed_session(tmp_path: Path, how: str) -> None:
    directory = tmp_path / "sessions"
    store = StorableStore(dir=str(directory))
    keys = [store_key(new_id()) for _ in range(20)]
    for key in keys:
        create(store, key, a="1")
    writers = [
        spawn.Process(target=_write_until_gone, args=(str(directory), keys, worker))
        for worker in range(2)
    ]
    for process in writers:
        process.start()
    try:
        deadline = time.monotonic() + 60
        while not all({"w0", "w1"} <= set(getattr(store.fetch(key), "data", {})) for key in keys):
            assert time.monotonic() < deadline, "the writers did not start"
            time.sleep(0.01)

        if how == "remove":
            assert [store.remove(key) for key in keys] == [True] * len(keys)
        else:
            # Every session has expired, by this store's clock only.
            store.clock = lambda: time.time() + 86400
            assert store.purge() == len(keys)
        assert [key for key in keys if store.fetch(key) is not None] == []
    finally:
        exitcodes = join(*writers)
    assert exitcodes == [0, 0]
    assert [key for key in keys if store.fetch(key) is not None] == []
    assert [p.name for p in directory.rglob("*") if p.is_file()] == [".lock"] * len(
        {key[:2] for key in keys}
    )


# A process killed between a session's rename and its user markers


def _log_in_and_out_until_killed(directory: str, die_after_rename: int, started: t.Any) -> None:
    """Bind, rebind, unbind and remove sessions, killing itself just after
    rename number ``die_after_rename``, between a session file and its markers."""
    renames = 0
    real_replace = os.replace

    def replace(source: str, target: str) -> None:
        nonlocal renames
        real_replace(source, target)
        renames += 1
        if renames == die_after_rename:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace  # type: ignore[assignment]
    store = StorableStore(dir=directory)
    started.set()
    while True:
        key = store_key(new_id())
        create(store, key, **{USER_KEY: json.dumps("ann"), "n": "1"})
        store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
        store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}))
        store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
        store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
        if random.random() < 0.5:
            store.remove(key)


def test_process_killed_mid_login_leaves_every_bound_session_listed(tmp_path: Path) -> None:
    directory = tmp_path / "sessions"
    store = StorableStore(dir=str(directory))
    for number in range(12):
        started = spawn.Event()
        child = spawn.Process(
            target=_log_in_and_out_until_killed,
            args=(str(directory), random.randint(1, 10) + 5 * number, started),
        )
        child.start()
        assert started.wait(timeout=60)
        assert join(child) == [-signal.SIGKILL]

        bound: dict[str, set[str]] = {"ann": set(), "bob": set()}
        for key, record in store.scan():
            if USER_KEY in record.data:
                bound[json.loads(record.data[USER_KEY])].add(key)
        for user, keys in bound.items():
            marked = Path(directory, "users", hashlib.sha256(user.encode()).hexdigest())
            # Markers may outlive a binding, never the other way round.
            assert keys <= {path.name for path in marked.glob("*")}
            assert set(store.sessions_of(user)) == keys
            assert {path.name for path in marked.glob("*")} == keys
