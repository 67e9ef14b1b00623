"""``flask session purge`` and purging from within requests."""

from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask import session

from flask_prancer_session import MemoryStore
from flask_prancer_session import PrancerSession
from flask_prancer_session import StorableStore
from flask_prancer_session import StoreDriver
from flask_prancer_session.ids import store_key

from .clock import FakeClock


def store_of_kind(kind: str, tmp_path: Path, **options: t.Any) -> StoreDriver:
    if kind == "memory":
        return MemoryStore(expiration_timeout=60, **options)
    return StorableStore(dir=str(tmp_path / "sessions"), expiration_timeout=60, **options)


def stored(store: StoreDriver) -> int:
    """How many sessions the store holds, expired ones included."""
    if isinstance(store, MemoryStore):
        return len(store)
    assert isinstance(store, StorableStore)
    return sum(1 for path in Path(store.dir).glob("??/*") if not path.name.startswith("."))


def session_app(app: Flask, store: StoreDriver, clock: FakeClock) -> Flask:
    store.clock = clock
    PrancerSession(app, store=store)

    @app.get("/")
    def counter() -> str:
        session["n"] = session.get("n", 0) + 1
        return f"{session['n']} {session.id}"

    return app


def new_visitor(app: Flask) -> str:
    """Create a session with a fresh client and return its id, once any
    purge the request started has finished."""
    session_id = app.test_client().get("/").text.split()[1]
    store = app.extensions["prancer_session"].store
    if store.purge_thread is not None:
        store.purge_thread.join()
    return session_id


def purge(app: Flask) -> str:
    result = app.test_cli_runner().invoke(args=["session", "purge"])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("kind", ["memory", "storable"])
def test_purge_removes_expired_sessions_and_reports_the_count(
    app: Flask, tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    store = store_of_kind(kind, tmp_path)
    session_app(app, store, clock)
    expired = [new_visitor(app) for _ in range(3)]
    clock.advance(40)
    live_client = app.test_client()
    live_id = live_client.get("/").text.split()[1]
    clock.advance(30)  # 70s for the first three, 30s for the last: timeout is 60s.
    assert stored(store) == 4

    assert purge(app) == "Removed 3 expired sessions.\n"
    assert stored(store) == 1
    assert all(store.fetch(store_key(session_id)) is None for session_id in expired)
    assert live_client.get("/").text == f"2 {live_id}"

    assert purge(app) == "Removed 0 expired sessions.\n"
    clock.advance(61)
    assert purge(app) == "Removed 1 expired session.\n"
    assert stored(store) == 0


def test_purge_on_a_store_that_expires_natively(app: Flask, clock: FakeClock) -> None:
    class NativeStore(MemoryStore):
        expires_natively = True

        def purge(self) -> int:
            return 0

    session_app(app, NativeStore(), clock)
    new_visitor(app)
    clock.advance(3600)
    assert purge(app) == (
        "Removed 0 expired sessions.\nNativeStore deletes expired sessions by itself.\n"
    )


def test_session_command_group_is_listed(app: Flask) -> None:
    PrancerSession(app)
    result = app.test_cli_runner().invoke(args=["session", "--help"])
    assert result.exit_code == 0
    assert "purge" in result.output


@pytest.mark.parametrize("kind", ["memory", "storable"])
def test_autopurge_with_probability_one_purges_during_a_request(
    app: Flask, tmp_path: Path, clock: FakeClock, kind: str
) -> None:
    store = store_of_kind(kind, tmp_path, autopurge=True, autopurge_probability=1.0)
    session_app(app, store, clock)
    new_visitor(app)
    new_visitor(app)
    clock.advance(61)
    assert stored(store) == 2

    new_visitor(app)
    assert stored(store) == 1


@pytest.mark.parametrize("kind", ["memory", "storable"])
@pytest.mark.parametrize(
    "options",
    [
        {"autopurge": True, "autopurge_probability": 0.0},
        {"autopurge": False, "autopurge_probability": 1.0},
    ],
    ids=["probability-0", "autopurge-off"],
)
def test_no_autopurge_never_purges(
    app: Flask, tmp_path: Path, clock: FakeClock, kind: str, options: dict[str, t.Any]
) -> None:
    store = store_of_kind(kind, tmp_path, **options)
    session_app(app, store, clock)
    new_visitor(app)
    new_visitor(app)
    clock.advance(61)
    for _ in range(50):
        new_visitor(app)
    assert stored(store) == 52
    assert purge(app) == "Removed 2 expired sessions.\n"


def test_autopurge_from_config(app: Flask, clock: FakeClock) -> None:
    app.config["PRANCER_SESSION"] = {
        "store": {
            "driver": "memory",
            "options": {
                "expiration_timeout": 60,
                "autopurge": True,
                "autopurge_probability": 1,
            },
        }
    }
    PrancerSession(app)
    store = app.extensions["prancer_session"].store
    store.clock = clock

    @app.get("/")
    def write() -> str:
        session["x"] = 1
        return ""

    app.test_client().get("/")
    clock.advance(61)
    app.test_client().get("/")
    store.purge_thread.join()
    assert len(store) == 1


def test_autopurge_runs_at_most_once_a_minute(app: Flask, tmp_path: Path, clock: FakeClock) -> None:
    store = store_of_kind("memory", tmp_path, autopurge=True, autopurge_probability=1.0)
    session_app(app, store, clock)
    new_visitor(app)
    first = store.purge_thread
    clock.advance(59)
    new_visitor(app)
    assert store.purge_thread is first
    clock.advance(1)
    new_visitor(app)
    assert store.purge_thread is not first


class FailingPurgeStore(MemoryStore):
    def purge(self) -> int:
        raise OSError("disk on fire")


def test_a_failed_purge_is_logged_and_never_fails_a_request(
    app: Flask, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = FailingPurgeStore(autopurge=True, autopurge_probability=1.0)
    session_app(app, store, clock)
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert store.purge_thread is not None
    store.purge_thread.join()
    assert "Purging expired sessions failed" in caplog.text
    clock.advance(60)
    assert app.test_client().get("/").status_code == 200
    store.purge_thread.join()


def test_autopurge_never_runs_for_requests_without_a_session(app: Flask, clock: FakeClock) -> None:
    store = MemoryStore(autopurge=True, autopurge_probability=1.0)
    session_app(app, store, clock)

    @app.get("/plain")
    def plain() -> str:
        return "no session here"

    client = app.test_client()
    for _ in range(5):
        assert client.get("/plain").status_code == 200
    assert store.purge_thread is None
