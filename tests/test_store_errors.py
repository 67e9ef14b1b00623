"""A store that cannot be reached fails the request; it never hands out a fresh session."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask import session

from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session import SessionStoreError
from flask_prancer_session.store.base import StoreDriver

from . import services
from .tcp_proxy import proxied
from .tcp_proxy import TCPProxy


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
    return t.cast(str, state.sign(app, "a" * 43))


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

    @app.get("/read-then-write")
    def read_then_write() -> str:
        try:
            session.get("user")
        except SessionStoreError:
            pass  # a view that goes on: its write still fails
        session["user"] = "ann"
        return "written"

    client = app.test_client()
    client.set_cookie("PSESSION", signed_cookie(app))
    response = client.get("/")
    assert response.status_code == 503
    assert "Set-Cookie" not in response.headers
    assert client.get("/read-then-write").status_code == 503
    assert "Set-Cookie" not in response.headers
    # As the manual says: the backend's error, also chained as __cause__.
    for error in errors:
        assert error.original_error is not None
        assert error.__cause__ is error.original_error
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


@pytest.fixture
def login_app(app: Flask, down_store: StoreDriver) -> Flask:
    """An app with Flask-Login and Flask-WTF whose session store is down."""
    from flask_login import current_user
    from flask_login import LoginManager
    from flask_login import UserMixin
    from flask_wtf.csrf import CSRFProtect

    app.testing = False
    app.config["REMEMBER_COOKIE_REFRESH_EACH_REQUEST"] = True
    PrancerSession(app, store=down_store)
    login_manager = LoginManager(app)
    CSRFProtect(app)

    class User(UserMixin):
        id = "1"

    @login_manager.user_loader
    def load_user(user_id: str) -> User:
        return User()

    @app.errorhandler(SessionStoreError)
    def store_down(error: SessionStoreError) -> tuple[str, int]:
        return f"sessions are down ({current_user.is_authenticated})", 503

    @app.get("/me")
    def me() -> str:
        return str(current_user.is_authenticated)

    @app.post("/form")
    def form() -> str:
        return "posted"

    @app.get("/health")
    def health() -> str:
        return "ok"

    return app


def test_error_handler_answers_503_with_flask_login_installed(login_app: Flask) -> None:
    client = login_app.test_client()
    client.set_cookie("PSESSION", signed_cookie(login_app))
    response = client.get("/me")
    assert (response.status_code, response.text) == (503, "sessions are down (False)")
    assert "Set-Cookie" not in response.headers


def test_csrf_protected_form_answers_503_when_the_store_is_down(login_app: Flask) -> None:
    client = login_app.test_client()
    client.set_cookie("PSESSION", signed_cookie(login_app))
    assert client.post("/form", data={"csrf_token": "x"}).status_code == 503


def test_views_that_never_use_the_session_survive_an_outage(login_app: Flask) -> None:
    client = login_app.test_client()
    client.set_cookie("PSESSION", signed_cookie(login_app))
    response = client.get("/health")
    assert (response.status_code, response.text) == (200, "ok")
    assert "Set-Cookie" not in response.headers


def test_writes_after_a_reported_failure_still_raise(app: Flask, down_store: StoreDriver) -> None:
    PrancerSession(app, store=down_store)

    @app.get("/")
    def index() -> str:
        with pytest.raises(SessionStoreError):
            session.get("user")
        assert session.get("user") is None  # reported once; now reads as empty
        with pytest.raises(SessionStoreError):
            session["user"] = "ann"
        return "handled"

    client = app.test_client()
    client.set_cookie("PSESSION", signed_cookie(app))
    assert client.get("/").text == "handled"


def test_a_failed_save_is_attempted_once(app: Flask, down_store: StoreDriver) -> None:
    app.testing = False
    attempts: list[str] = []
    original_apply = down_store.apply

    def counting_apply(*args: t.Any) -> bool:
        attempts.append("apply")
        return original_apply(*args)

    down_store.apply = counting_apply  # type: ignore[method-assign]
    PrancerSession(app, store=down_store)

    @app.get("/")
    def index() -> str:
        session["visited"] = True
        return "ok"

    assert app.test_client().get("/").status_code == 500
    assert attempts == ["apply"]


def _proxied_redis(proxy: TCPProxy) -> StoreDriver:
    from flask_prancer_session.store.redis import RedisStore

    return RedisStore(
        url=f"redis://127.0.0.1:{proxy.port}/0",
        key_prefix=services.unique_name("prancer_outage") + ":",
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )


def _proxied_postgresql(proxy: TCPProxy) -> StoreDriver:
    from flask_prancer_session.store.database import DatabaseStore

    server = services.DATABASE_SERVERS["postgresql"]
    return DatabaseStore(
        url=proxied(server.url, proxy),
        table=services.unique_name("sessions_outage"),
        connect_timeout=1,
        statement_timeout=1,
    )


@pytest.fixture(params=["redis", "postgresql"])
def flaky_store(request: pytest.FixtureRequest) -> t.Iterator[tuple[StoreDriver, TCPProxy]]:
    """A store behind a loopback proxy that the test can silence."""
    if request.param == "redis":
        services.require_module("redis", "redis")
        services.require_server("Redis", "127.0.0.1", 6379)
        target = ("127.0.0.1", 6379)
    else:
        services.require_module("sqlalchemy", "database")
        services.DATABASE_SERVERS["postgresql"].require()
        target = ("127.0.0.1", 5432)
    with TCPProxy(target, lifetime=60) as proxy:
        store = (_proxied_redis if request.param == "redis" else _proxied_postgresql)(proxy)
        try:
            yield store, proxy
        finally:
            proxy.forward()
            store.clear()
            if request.param == "postgresql":
                import sqlalchemy as sa

                engine = store.engine  # type: ignore[attr-defined]
                with engine.begin() as connection:
                    connection.execute(sa.text(f"DROP TABLE {store.table.name}"))  # type: ignore[attr-defined]
                engine.dispose()


def test_anonymous_on_store_error_keeps_public_pages_up(
    app: Flask, flaky_store: tuple[StoreDriver, TCPProxy], caplog: pytest.LogCaptureFixture
) -> None:
    store, proxy = flaky_store
    app.testing = False
    app.config["PRANCER_SESSION"] = {"on_store_error": "anonymous"}
    PrancerSession(app, store=store)

    @app.get("/login")
    def login() -> str:
        session["user"] = "ann"
        return "ok"

    @app.get("/")
    def index() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return f"{session.get('user', 'guest')} {session['visits']}"

    @app.post("/logout")
    def logout() -> str:
        session.expire()
        return "bye"

    client = app.test_client()
    client.get("/login")
    assert client.get("/").text == "ann 1"
    cookie = client.get_cookie("PSESSION")
    assert cookie is not None

    proxy.silence()
    for _ in range(3):
        response = client.get("/")
        # Public pages work; the visitor looks signed out, keeps their cookie.
        assert (response.status_code, response.text) == (200, "guest 1")
        assert "Set-Cookie" not in response.headers
    outage_lines = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
    assert len(outage_lines) == 1  # once per outage, not per request

    proxy.forward()
    proxy.reset()  # connections opened during the outage
    for _ in range(3):
        response = client.get("/")
        if response.text != "guest 1":
            break
    # Back: the session is intact, and the dropped writes never landed.
    assert response.text == "ann 2"
    assert "answers again" in caplog.text

    # A logout during an outage cannot delete the stored session, but the
    # browser forgets its cookie, as the manual says.
    proxy.silence()
    response = client.post("/logout")
    assert response.status_code == 200
    assert "PSESSION=;" in response.headers["Set-Cookie"]
    assert client.get_cookie("PSESSION") is None
    assert "could not be deleted" in caplog.text


def test_on_store_error_is_checked_at_init_app(app: Flask) -> None:
    app.config["PRANCER_SESSION"] = {"on_store_error": "ignore"}
    with pytest.raises(ConfigurationError) as caught:
        PrancerSession(app)
    assert caught.value.key == "PRANCER_SESSION.on_store_error"
