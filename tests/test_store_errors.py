"""A store that cannot be reached fails the request; it never hands out a fresh session."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask import session

from flask_prancer_session import PrancerSession
from flask_prancer_session import SessionStoreError
from flask_prancer_session.store.base import StoreDriver

from . import services


def _unreachable_redis() -> StoreDriver:
    services.require_module("redis", "redis")
    from flask_prancer_session.store.redis import RedisStore

    return RedisStore(url="redis://127.0.0.1:1/0", socket_connect_timeout=1)


def _unreachable_postgresql() -> StoreDriver:
    services.require_module("sqlalchemy", "database")
    services.require_module("psycopg", "postgres")
    from flask_prancer_session.store.database import DatabaseStore

    return DatabaseStore(
        url="postgresql+psycopg://postgres@127.0.0.1:1/test",
        create_table=False,
    )


@pytest.fixture(params=["redis", "postgresql"])
def down_store(request: pytest.FixtureRequest) -> StoreDriver:
    factories: dict[str, t.Callable[[], StoreDriver]] = {
        "redis": _unreachable_redis,
        "postgresql": _unreachable_postgresql,
    }
    return factories[request.param]()


def signed_cookie(app: Flask) -> str:
    """A validly signed cookie for an id the store would have to look up."""
    state = app.session_interface.state  # type: ignore[attr-defined]
    return t.cast(str, state._signer(app).sign("a" * 43).decode())


def test_unreadable_session_fails_the_views_that_use_it(
    app: Flask, down_store: StoreDriver
) -> None:
    app.testing = False
    PrancerSession(app, store=down_store)
    errors: list[SessionStoreError] = []

    @app.errorhandler(SessionStoreError)
    def store_down(error: SessionStoreError) -> tuple[str, int]:
        errors.append(error)
        return "sessions are down", 503

    @app.get("/")
    def index() -> str:
        return str(session.get("user"))

    @app.get("/health")
    def health() -> str:
        return "ok"

    client = app.test_client()
    client.set_cookie("PSESSION", signed_cookie(app))
    response = client.get("/")
    assert response.status_code == 503
    assert "Set-Cookie" not in response.headers
    assert errors[0].original_error is not None
    assert client.get("/health").text == "ok"


def test_unwritable_session_fails_the_request(app: Flask, down_store: StoreDriver) -> None:
    app.testing = False
    PrancerSession(app, store=down_store)
    errors: list[BaseException] = []

    @app.errorhandler(500)
    def server_error(error: t.Any) -> tuple[str, int]:
        errors.append(error.original_exception)
        return "failed", 500

    @app.get("/")
    def index() -> str:
        session["visited"] = True
        return "ok"

    response = app.test_client().get("/")
    assert response.status_code == 500
    assert "Set-Cookie" not in response.headers
    assert isinstance(errors[0], SessionStoreError)
