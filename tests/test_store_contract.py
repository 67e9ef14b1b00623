"""What every store driver must do, run against each one through the ``store`` fixture."""

from __future__ import annotations

import json
import threading
import typing as t

import pytest

from flask_prancer_session import ChangeSet
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .clock import FakeClock
from .forking import hold_while_forking
from .stores import EVERY_STORE
from .stores import PERSISTENT_STORES
from .stores import StoreMaker

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)


def new_key() -> str:
    return store_key(new_id())


def create(store: StoreDriver, key: str, **data: str) -> None:
    store.apply(key, ChangeSet(updated=data, created_at=store.clock()))


def test_fetch_unknown_key_returns_none(store: StoreDriver) -> None:
    assert store.fetch(new_key()) is None


def test_apply_creates_a_session(store: StoreDriver, clock: FakeClock) -> None:
    key = new_key()
    create(store, key, a='"1"', b="[1,2]")
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"a": '"1"', "b": "[1,2]"}
    assert record.created_at == clock.now
    assert record.expires_at == clock.now + store.expiration_timeout


def test_values_are_kept_verbatim(store: StoreDriver) -> None:
    key = new_key()
    value = '"\\u00e9t\\u00e9 \\ud83c\\udf1e \\" \' \\\\ %s {} ' + "x" * 10_000 + '"'
    create(store, key, **{"k\u00e9y with spaces:and:colons": value, "": "0"})
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"k\u00e9y with spaces:and:colons": value, "": "0"}


def test_sessions_are_separate(store: StoreDriver) -> None:
    first, second = new_key(), new_key()
    create(store, first, a="1")
    create(store, second, a="2")
    assert store.fetch(first).data == {"a": "1"}  # type: ignore[union-attr]
    assert store.fetch(second).data == {"a": "2"}  # type: ignore[union-attr]


def test_apply_merges_onto_the_stored_copy(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, a="1", b="2", c="3")
    store.apply(key, ChangeSet(updated={"b": "20"}, removed=frozenset({"c"})))
    store.apply(key, ChangeSet(updated={"d": "4"}))
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"a": "1", "b": "20", "d": "4"}


def test_apply_keeps_created_at_and_slides_expiry(store: StoreDriver, clock: FakeClock) -> None:
    key = new_key()
    created = clock.now
    create(store, key, a="1")
    clock.advance(600)
    store.apply(key, ChangeSet(updated={"a": "2"}))
    record = store.fetch(key)
    assert record is not None
    assert record.created_at == created
    assert record.expires_at == clock.now + store.expiration_timeout


def test_apply_without_created_at_does_not_create(store: StoreDriver) -> None:
    key = new_key()
    store.apply(key, ChangeSet(updated={"a": "1"}))
    assert store.fetch(key) is None


def test_removed_session_is_not_revived_by_a_later_update(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, a="1")
    store.remove(key)
    assert store.fetch(key) is None
    store.apply(key, ChangeSet(updated={"b": "2"}))
    store.touch(key, store.expiry_for(store.clock()))
    assert store.fetch(key) is None


def test_compare_and_set_writes_only_values_still_as_read(store: StoreDriver) -> None:
    # What `flask session rekey` relies on: a value changed or removed after
    # it was read is never overwritten with the old one.
    key = new_key()
    create(store, key, same='"a"', changed='"b"', gone='"c"', other='"d"')
    store.apply(key, ChangeSet(updated={"changed": '"B2"'}, removed=frozenset({"gone"})))
    stored = store.apply(
        key,
        ChangeSet(
            updated={"same": '"A!"', "changed": '"B!"', "gone": '"C!"'},
            expected={"same": '"a"', "changed": '"b"', "gone": '"c"'},
        ),
    )
    assert stored
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"same": '"A!"', "changed": '"B2"', "other": '"d"'}


def test_compare_and_set_never_revives_a_removed_session(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, a='"1"')
    store.remove(key)
    assert not store.apply(key, ChangeSet(updated={"a": '"2"'}, expected={"a": '"1"'}))
    assert store.fetch(key) is None


def test_compare_and_set_keeps_a_user_binding_in_step(store: StoreDriver) -> None:
    require_users(store)
    key = bound(store, "ann", a='"1"')
    # A logout unbinds the session between rekey's read and its write.
    store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    store.apply(
        key,
        ChangeSet(updated={USER_KEY: json.dumps("ann")}, expected={USER_KEY: json.dumps("ann")}),
    )
    assert store.sessions_of("ann") == {}
    record = store.fetch(key)
    assert record is not None
    assert USER_KEY not in record.data


def test_remove_unknown_key_is_quiet(store: StoreDriver) -> None:
    assert store.remove(new_key()) is False


def test_remove_tells_whether_a_live_session_was_there(
    store: StoreDriver, clock: FakeClock
) -> None:
    key, expired = new_key(), new_key()
    create(store, key, a="1")
    create(store, expired, a="1")
    clock.advance(store.expiration_timeout)
    create(store, key, a="1")
    assert store.remove(key) is True
    assert store.remove(key) is False
    assert store.remove(expired) is False


def test_apply_tells_whether_the_session_is_stored(store: StoreDriver) -> None:
    key = new_key()
    assert store.apply(key, ChangeSet(updated={"a": "1"})) is False
    assert store.apply(key, ChangeSet(updated={"a": "1"}, created_at=store.clock())) is True
    assert store.apply(key, ChangeSet(updated={"b": "2"})) is True


def test_removing_the_last_key_deletes_the_session(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, a="1")
    assert store.apply(key, ChangeSet(removed=frozenset({"a"}))) is False
    assert store.fetch(key) is None
    assert store.apply(key, ChangeSet(updated={"a": "1"})) is False
    assert store.fetch(key) is None


def test_emptying_keeps_a_key_another_request_added(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, flash="1")
    store.apply(key, ChangeSet(updated={"cart": "[1]"}))  # another request, meanwhile
    assert store.apply(key, ChangeSet(removed=frozenset({"flash"}))) is True
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"cart": "[1]"}


def test_creating_an_empty_session_stores_nothing(store: StoreDriver) -> None:
    key = new_key()
    assert store.apply(key, ChangeSet(created_at=store.clock())) is False
    assert store.fetch(key) is None


def test_changes_carry_the_session_timeout(store: StoreDriver, clock: FakeClock) -> None:
    key = new_key()
    store.apply(key, ChangeSet(updated={"a": "1"}, created_at=clock.now, timeout=86400))
    record = store.fetch(key)
    assert record is not None
    assert record.expires_at == clock.now + 86400
    clock.advance(store.expiration_timeout + 1)
    assert store.fetch(key) is not None
    store.apply(key, ChangeSet(updated={"a": "2"}, timeout=60))
    assert store.fetch(key).expires_at == clock.now + 60  # type: ignore[union-attr]


def remove_during_writes(store: StoreDriver) -> str:
    """Remove a session while four threads write to it; return its key."""
    key = new_key()
    create(store, key, a="1")
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            barrier.wait()
            for i in range(20):
                store.apply(key, ChangeSet(updated={f"w{n}": str(i)}))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    barrier.wait()
    store.remove(key)
    for thread in threads:
        thread.join()
    assert errors == []
    return key


def test_no_write_in_flight_revives_a_removed_session(store: StoreDriver) -> None:
    for _ in range(5):
        assert store.fetch(remove_during_writes(store)) is None


def test_idle_session_expires(store: StoreDriver, clock: FakeClock) -> None:
    key = new_key()
    create(store, key, a="1")
    clock.advance(store.expiration_timeout - 1)
    assert store.fetch(key) is not None
    clock.advance(1)
    assert store.fetch(key) is None


def test_expired_session_is_not_revived(store: StoreDriver, clock: FakeClock) -> None:
    key = new_key()
    create(store, key, a="1")
    clock.advance(store.expiration_timeout + 1)
    store.touch(key, store.expiry_for(clock.now))
    store.apply(key, ChangeSet(updated={"b": "2"}))
    assert store.fetch(key) is None


def test_expired_session_is_replaced_when_created_again(
    store: StoreDriver, clock: FakeClock
) -> None:
    key = new_key()
    create(store, key, a="1")
    clock.advance(store.expiration_timeout + 1)
    create(store, key, b="2")
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"b": "2"}
    assert record.created_at == clock.now


def test_touch_extends_expiry_and_keeps_data(store: StoreDriver, clock: FakeClock) -> None:
    key = new_key()
    create(store, key, a="1")
    clock.advance(1000)
    store.touch(key, store.expiry_for(store.fetch(key).created_at))  # type: ignore[union-attr]
    clock.advance(1000)
    record = store.fetch(key)
    assert record is not None
    assert record.data == {"a": "1"}
    assert record.expires_at == clock.now - 1000 + store.expiration_timeout


def test_absolute_timeout_caps_the_lifetime(store: StoreDriver, clock: FakeClock) -> None:
    store.absolute_timeout = 3000
    key = new_key()
    created = clock.now
    create(store, key, a="1")
    for _ in range(3):
        clock.advance(900)
        store.apply(key, ChangeSet(updated={"a": "2"}))
    record = store.fetch(key)
    assert record is not None
    assert record.expires_at == created + 3000
    clock.advance(301)
    assert store.fetch(key) is None


def test_purge_deletes_only_expired_sessions(store: StoreDriver, clock: FakeClock) -> None:
    old = [new_key() for _ in range(3)]
    for key in old:
        create(store, key, a="1")
    clock.advance(store.expiration_timeout - 10)
    live = new_key()
    create(store, live, a="2")
    clock.advance(20)
    removed = store.purge()
    if store.expires_natively:
        assert removed == 0
    else:
        assert removed == len(old)
    assert all(store.fetch(key) is None for key in old)
    assert store.fetch(live) is not None
    assert store.purge() == 0


def test_concurrent_applies_lose_no_keys(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, start="0")
    threads_count, keys_each = 8, 10
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            for i in range(keys_each):
                store.apply(key, ChangeSet(updated={f"t{n}k{i}": str(i)}))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    record = store.fetch(key)
    assert record is not None
    assert len(record.data) == 1 + threads_count * keys_each


def test_concurrent_creates_of_one_session_lose_no_keys(store: StoreDriver) -> None:
    key = new_key()
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            barrier.wait()
            store.apply(key, ChangeSet(updated={f"k{n}": "1"}, created_at=store.clock()))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    record = store.fetch(key)
    assert record is not None
    assert set(record.data) == {f"k{n}" for n in range(threads_count)}


@pytest.mark.parametrize("make_store", PERSISTENT_STORES, indirect=True)
def test_sessions_survive_a_restart(make_store: StoreMaker) -> None:
    key = new_key()
    create(make_store(), key, a="1")
    restarted = make_store()
    restarted.apply(key, ChangeSet(updated={"b": "2"}))
    record = make_store().fetch(key)
    assert record is not None
    assert record.data == {"a": "1", "b": "2"}


def bound(store: StoreDriver, user: str | None, **data: str) -> str:
    """Create a session, bound to ``user`` unless None; return its key."""
    key = new_key()
    if user is not None:
        data[USER_KEY] = json.dumps(user)
    create(store, key, **data)
    return key


def require_scan(store: StoreDriver) -> None:
    try:
        next(store.scan(), None)
    except NotImplementedError:
        pytest.skip(f"{type(store).__name__} cannot list its sessions")


def require_users(store: StoreDriver) -> None:
    if not store.indexes_users:
        with pytest.raises(NotImplementedError):
            store.sessions_of("ann")
        with pytest.raises(NotImplementedError):
            store.remove_user("ann")
        pytest.skip(f"{type(store).__name__} does not index sessions by user")


def test_scan_yields_every_live_session(store: StoreDriver, clock: FakeClock) -> None:
    require_scan(store)
    expired = bound(store, None, a="1")
    clock.advance(store.expiration_timeout - 1)
    live = {bound(store, None, n=str(n)) for n in range(5)}
    clock.advance(1)
    found = dict(store.scan())
    assert set(found) == live
    assert expired not in found
    assert {record.data["n"] for record in found.values()} == {str(n) for n in range(5)}


def test_clear_deletes_every_session(store: StoreDriver) -> None:
    require_scan(store)
    keys = [bound(store, None, a="1") for _ in range(3)]
    assert store.clear() == 3
    assert all(store.fetch(key) is None for key in keys)
    assert list(store.scan()) == []


def test_sessions_of_a_user(store: StoreDriver, clock: FakeClock) -> None:
    require_users(store)
    phone, laptop = bound(store, "ann", a="1"), bound(store, "ann", a="2")
    other = bound(store, "bob", a="3")
    bound(store, None, a="4")
    sessions = store.sessions_of("ann")
    assert set(sessions) == {phone, laptop}
    assert sessions[phone].data["a"] == "1"
    assert set(store.sessions_of("bob")) == {other}
    assert store.sessions_of("nobody") == {}


def test_binding_follows_the_changes(store: StoreDriver) -> None:
    require_users(store)
    key = bound(store, None, a="1")
    store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("ann")}))
    assert set(store.sessions_of("ann")) == {key}
    store.apply(key, ChangeSet(updated={USER_KEY: json.dumps("bob")}))
    assert store.sessions_of("ann") == {}
    assert set(store.sessions_of("bob")) == {key}
    store.apply(key, ChangeSet(removed=frozenset({USER_KEY})))
    assert store.sessions_of("bob") == {}
    assert store.fetch(key) is not None


@pytest.mark.parametrize(
    "later",
    [
        ChangeSet(updated={"cart": "1"}),
        ChangeSet(updated={"cart": "2"}, created_at=1_000.0),
        ChangeSet(removed=frozenset({"a"})),
        ChangeSet(updated={"cart": "3"}, removed=frozenset({"a"})),
    ],
    ids=["update", "update-or-create", "remove-a-key", "update-and-remove"],
)
def test_writes_that_leave_the_binding_alone_keep_the_session_listed(
    store: StoreDriver, later: ChangeSet
) -> None:
    # The requests after a login (a cart, a consumed flash message) must not
    # hide the session from "log out everywhere".
    require_users(store)
    key = bound(store, "ann", a="1", b="2")
    store.apply(key, later)
    assert set(store.sessions_of("ann")) == {key}
    assert store.remove_user("ann") == 1
    assert store.fetch(key) is None


def test_removed_and_expired_sessions_leave_the_index(store: StoreDriver, clock: FakeClock) -> None:
    require_users(store)
    removed, expiring = bound(store, "ann", a="1"), bound(store, "ann", a="2")
    store.remove(removed)
    clock.advance(store.expiration_timeout)
    assert store.sessions_of("ann") == {}
    emptied = bound(store, "ann")
    store.apply(emptied, ChangeSet(removed=frozenset({USER_KEY})))
    assert store.sessions_of("ann") == {}
    assert store.fetch(expiring) is None


def test_remove_user_ends_every_session_of_the_user(store: StoreDriver) -> None:
    require_users(store)
    keys = [bound(store, "ann", a=str(n)) for n in range(3)]
    other = bound(store, "bob", a="x")
    assert store.remove_user("ann") == 3
    assert all(store.fetch(key) is None for key in keys)
    assert store.sessions_of("ann") == {}
    assert store.fetch(other) is not None
    assert store.remove_user("ann") == 0
    # Writes of requests that were running do not bring them back.
    store.apply(keys[0], ChangeSet(updated={"late": "1"}))
    assert store.fetch(keys[0]) is None


def _locks_of(store: StoreDriver) -> list[t.Any]:
    """Return the thread locks a store holds, alone or in lists."""
    lock_type = type(threading.Lock())
    found = []
    for value in vars(store).values():
        values = value if isinstance(value, list) else [value]
        found += [item for item in values if isinstance(item, lock_type)]
    return found


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_fork_while_another_thread_holds_the_store_s_locks(
    store: StoreDriver, clock: FakeClock
) -> None:
    # A gunicorn worker forked from a --preload master copies its locks as
    # they are; one held by a thread of the master would never be released.
    key = store_key(new_id())
    store.apply(key, ChangeSet({"a": "1"}, created_at=clock()))
    locks = _locks_of(store)
    assert locks  # at least the autopurge lock

    def use() -> None:
        store.autopurge, store.autopurge_probability = True, 1.0
        purge = store.maybe_purge()
        assert purge is not None
        purge.join()
        assert store.apply(key, ChangeSet({"b": "2"}))
        assert store.fetch(key) is not None

    hold_while_forking(locks, use)


def test_a_closed_store_waits_for_its_purge_and_reopens_on_use(store: StoreDriver) -> None:
    key = new_key()
    create(store, key, a="1")
    store.autopurge, store.autopurge_probability = True, 1.0
    purge = store.maybe_purge()
    assert purge is not None
    store.close()
    assert not purge.is_alive()
    store.close()  # twice is fine
    assert store.fetch(key) is not None
    create(store, new_key(), b="2")
    store.close()
