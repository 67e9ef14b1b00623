"""memcached through the cachelib store, on the server .ci/run starts: what
cachelib's ``MemcachedCache`` keeps, and what it cannot. The conformance suite
runs on it too (``cachelib-memcached`` in tests/stores.py)."""

from __future__ import annotations

import socket
import time
import typing as t

import pytest

from flask_prancer_session import ChangeSet
from flask_prancer_session.errors import SessionStoreError
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.cachelib import CachelibStore

from . import services

DAY = 24 * 60 * 60


@pytest.fixture
def address() -> str:
    return services.require_memcached()


@pytest.fixture
def stores(address: str) -> t.Iterator[t.Callable[..., CachelibStore]]:
    """Makes stores over one key prefix with ``backend="memcached"``, each
    with its own client, as in separate processes."""
    prefix = services.unique_name("prancer_memcached") + ":"
    made: list[CachelibStore] = []

    def make(**options: t.Any) -> CachelibStore:
        store = CachelibStore(backend="memcached", servers=[address], key_prefix=prefix, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        store.cache._client.disconnect_all()  # type: ignore[attr-defined]


def new_key() -> str:
    return store_key(new_id())


def create(store: CachelibStore, key: str, timeout: float | None = None, **data: str) -> None:
    store.apply(key, ChangeSet(updated=data, created_at=store.clock(), timeout=timeout))


def server_ttl(address: str, name: str) -> int | None:
    """Return the seconds memcached will keep the entry ``name``, as its meta
    command reports them, or ``None`` if it has no such entry."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=2) as connection:
        connection.sendall(f"mg {name} t\r\n".encode())
        reply = connection.makefile("rb").readline().decode().split()
    if reply[0] == "EN":
        return None
    assert reply[0] == "HD", reply
    return int(reply[1][1:])


def test_backend_memcached_uses_python_memcached(stores: t.Callable[..., CachelibStore]) -> None:
    import memcache

    store = stores()
    assert isinstance(store.cache._client, memcache.Client)  # type: ignore[attr-defined]
    key = new_key()
    create(store, key, a='"1"')
    record = stores().fetch(key)
    assert record is not None and record.data == {"a": '"1"'}


def test_a_permanent_session_of_40_days_is_kept_40_days(
    stores: t.Callable[..., CachelibStore], address: str
) -> None:
    # memcached reads a timeout over 30 days as a date: 40 days would be
    # 1970, and the entry would be gone at once. cachelib sends a date.
    store = stores(permanent_timeout=40 * DAY)
    key = new_key()
    create(store, key, timeout=40 * DAY, a="1")
    record = store.fetch(key)
    assert record is not None
    assert record.expires_at == pytest.approx(time.time() + 40 * DAY, abs=5)
    ttl = server_ttl(address, store.key_prefix + key)
    assert ttl is not None and 40 * DAY - 5 <= ttl <= 40 * DAY + 2


def test_memcached_cannot_list_sessions_or_index_users(
    stores: t.Callable[..., CachelibStore],
) -> None:
    store = stores()
    create(store, new_key(), a="1")
    with pytest.raises(NotImplementedError, match="cannot list"):
        next(store.scan())
    with pytest.raises(NotImplementedError):
        store.clear()
    with pytest.raises(NotImplementedError):
        store.sessions_of("ann")
    with pytest.raises(NotImplementedError):
        store.remove_user("ann")


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: python-memcached leaves the socket of a failed connection to the garbage
#: collector, which warns.
leaks_a_socket = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@leaks_a_socket
def test_a_write_to_memcached_that_is_down_raises() -> None:
    services.require_module("memcache", "test")
    store = CachelibStore(backend="memcached", servers=[f"127.0.0.1:{closed_port()}"])
    with pytest.raises(SessionStoreError):
        create(store, new_key(), a="1")


@pytest.mark.xfail(
    strict=True,
    reason="python-memcached answers a read it could not make with None, which the store"
    " takes for a missing session: a visitor looks logged out while memcached is down",
)
@leaks_a_socket
def test_a_read_from_memcached_that_is_down_raises() -> None:
    services.require_module("memcache", "test")
    store = CachelibStore(backend="memcached", servers=[f"127.0.0.1:{closed_port()}"])
    with pytest.raises(SessionStoreError):
        store.fetch(new_key())


#: What the pickle planted below ran.
ran: list[str] = []


def _run(what: str) -> None:
    ran.append(what)


class Planted:
    """Unpickling this calls :func:`_run`: it stands for any code."""

    def __reduce__(self) -> tuple[t.Callable[[str], None], tuple[str]]:
        return _run, ("code planted in memcached",)


def test_a_pickle_planted_in_memcached_runs_no_code(
    stores: t.Callable[..., CachelibStore],
) -> None:
    # python-memcached unpickles a value stored with its pickle flag; the
    # client backend="memcached" makes refuses it.
    store = stores()
    key = new_key()
    ran.clear()
    store.cache._client.set(store.key_prefix + key, Planted())  # type: ignore[attr-defined]
    assert store.fetch(key) is None
    assert ran == []


@pytest.mark.xfail(
    strict=True,
    reason="a request in another process can change the session between this one's read"
    " and write: the store's locks reach the threads of one process only",
)
def test_writes_from_two_processes_are_both_kept(
    stores: t.Callable[..., CachelibStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = stores(), stores()
    key = new_key()
    create(here, key, a="1")
    read = here.cache.get

    def read_then_other_process_writes(name: str) -> t.Any:
        value = read(name)
        monkeypatch.setattr(here.cache, "get", read)
        there.apply(key, ChangeSet(updated={"there": "1"}))
        return value

    monkeypatch.setattr(here.cache, "get", read_then_other_process_writes)
    here.apply(key, ChangeSet(updated={"here": "1"}))
    record = there.fetch(key)
    assert record is not None
    assert record.data == {"a": "1", "here": "1", "there": "1"}


def test_a_pymemcache_client_keeps_sessions(address: str) -> None:
    pymemcache = services.require_module("pymemcache", "test")
    from cachelib import MemcachedCache

    host, _, port = address.rpartition(":")
    # default_noreply=False: otherwise a set is not checked.
    client = pymemcache.Client((host, int(port)), default_noreply=False)
    store = CachelibStore(
        cache=MemcachedCache(client), key_prefix=services.unique_name("prancer_memcached") + ":"
    )
    key = new_key()
    try:
        create(store, key, a="1")
        record = store.fetch(key)
    finally:
        client.close()
    assert record is not None and record.data == {"a": "1"}
