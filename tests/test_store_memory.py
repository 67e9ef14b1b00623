"""What only the memory store does: a bound on the number of sessions."""

from __future__ import annotations

from flask import Flask
from flask import session

from flask_prancer_session import ChangeSet
from flask_prancer_session import MemoryStore
from flask_prancer_session import PrancerSession
from flask_prancer_session.ids import store_key


def test_least_recently_used_session_is_evicted_when_full() -> None:
    store = MemoryStore(max_sessions=3)
    keys = [store_key(str(n)) for n in range(4)]
    for key in keys[:3]:
        store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    store.fetch(keys[0])  # now the most recently used
    store.apply(keys[3], ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    assert len(store) == 3
    assert store.fetch(keys[1]) is None
    assert all(store.fetch(key) is not None for key in (keys[0], keys[2], keys[3]))


def test_visitors_beyond_the_bound_do_not_grow_memory(app: Flask) -> None:
    store = MemoryStore(max_sessions=10)
    PrancerSession(app, store=store)

    @app.get("/")
    def index() -> str:
        session["visited"] = True
        return ""

    for _ in range(50):
        app.test_client().get("/")
    assert len(store) == 10


def test_fetched_record_is_a_copy() -> None:
    store = MemoryStore()
    key = store_key("x")
    store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock()))
    record = store.fetch(key)
    assert record is not None
    record.data["a"] = "changed"
    assert store.fetch(key).data == {"a": "1"}  # type: ignore[union-attr]


def test_the_size_of_the_data_is_bounded_too() -> None:
    store = MemoryStore(max_bytes=100_000)
    active = store_key("logged in")
    store.apply(active, ChangeSet(updated={"user": '"ann"'}, created_at=store.clock()))
    big = "x" * 20_000
    for n in range(20):
        store.apply(store_key(str(n)), ChangeSet(updated={"blob": big}, created_at=store.clock()))
        store.fetch(active)  # the active visitor keeps using the site
    assert store.size <= 100_000
    assert len(store) <= 6
    assert store.fetch(active) is not None


def test_size_follows_updates_and_removals() -> None:
    store = MemoryStore()
    key = store_key("x")
    store.apply(key, ChangeSet(updated={"a": "12345"}, created_at=store.clock()))
    assert store.size == 6
    store.apply(key, ChangeSet(updated={"a": "1"}))
    assert store.size == 2
    store.remove(key)
    assert store.size == 0


def test_a_single_session_larger_than_the_bound_is_kept() -> None:
    store = MemoryStore(max_bytes=10)
    key = store_key("x")
    store.apply(key, ChangeSet(updated={"a": "x" * 100}, created_at=store.clock()))
    assert store.fetch(key) is not None
