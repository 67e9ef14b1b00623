"""The Flask-Login switch and "log out everywhere", over every store."""

from __future__ import annotations

import typing as t

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_login import current_user
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin

from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session import session
from flask_prancer_session.store.base import StoreDriver

from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


@pytest.fixture
def login_app(app: Flask, store: StoreDriver) -> Flask:
    app.config["PRANCER_SESSION"] = {"flask_login": True}
    if not store.indexes_users:
        with pytest.raises(ConfigurationError) as caught:
            PrancerSession(app, store=store)
        assert caught.value.key == "PRANCER_SESSION.flask_login"
        pytest.skip(f"{type(store).__name__} does not index sessions by user")
    PrancerSession(app, store=store)
    LoginManager(app).user_loader(User)

    @app.post("/login/<user_id>")
    def login(user_id: str) -> str:
        session["cart"] = ["apple"]
        before = session.id
        login_user(User(user_id))
        return f"{before} {session.id} {session.user_id}"

    @app.get("/me")
    def me() -> str:
        return current_user.get_id() if current_user.is_authenticated else "anonymous"

    @app.post("/shop")
    def shop() -> str:
        session["cart"].append("pear")
        session.pop("_flashes", None)
        return "ok"

    @app.post("/logout")
    def logout() -> str:
        logout_user()
        return str(session.user_id)

    @app.post("/everywhere")
    def everywhere() -> str:
        ended = PrancerSession.end_user_sessions(current_user.get_id())
        session.expire()
        return str(ended)

    @app.get("/devices")
    def devices() -> dict[str, object]:
        sessions = PrancerSession.user_sessions(current_user.get_id())
        return {"mine": session.fingerprint, "all": sorted(sessions)}

    @app.post("/end/<fingerprint>")
    def end(fingerprint: str) -> str:
        return str(PrancerSession.end_session(fingerprint, current_user.get_id()))

    return app


def test_login_user_binds_and_regenerates(login_app: Flask) -> None:
    client = login_app.test_client()
    client.get("/me")
    before, after, user = client.post("/login/ann").text.split()
    assert before != after
    assert user == "ann"
    assert client.get("/me").text == "ann"


def test_logout_user_unbinds(login_app: Flask) -> None:
    client = login_app.test_client()
    client.post("/login/ann")
    assert client.post("/logout").text == "None"
    assert client.get("/me").text == "anonymous"
    assert PrancerSession.user_sessions("ann", app=login_app) == {}


def logged_in(app: Flask, user_id: str, count: int) -> list[FlaskClient]:
    clients = [app.test_client() for _ in range(count)]
    for client in clients:
        client.post(f"/login/{user_id}")
    return clients


def test_log_out_everywhere(login_app: Flask) -> None:
    phone, laptop, tablet = logged_in(login_app, "ann", 3)
    [bob] = logged_in(login_app, "bob", 1)
    assert laptop.post("/everywhere").text == "3"
    assert [c.get("/me").text for c in (phone, laptop, tablet, bob)] == [
        "anonymous",
        "anonymous",
        "anonymous",
        "bob",
    ]


def test_sessions_stay_listed_after_later_writes(login_app: Flask) -> None:
    phone, laptop = logged_in(login_app, "ann", 2)
    phone.post("/shop")
    assert len(laptop.get("/devices").json["all"]) == 2  # type: ignore[index]
    assert laptop.post("/everywhere").text == "2"
    assert phone.get("/me").text == "anonymous"


def test_see_your_devices_and_end_one(login_app: Flask) -> None:
    phone, laptop = logged_in(login_app, "ann", 2)
    devices = laptop.get("/devices").json
    assert devices is not None
    assert len(devices["all"]) == 2
    assert devices["mine"] in devices["all"]
    [other] = [fp for fp in devices["all"] if fp != devices["mine"]]
    assert laptop.post(f"/end/{other}").text == "True"
    assert phone.get("/me").text == "anonymous"
    assert laptop.get("/me").text == "ann"
    assert laptop.post(f"/end/{other}").text == "False"


def test_another_users_device_cannot_be_ended(login_app: Flask) -> None:
    [ann] = logged_in(login_app, "ann", 1)
    [bob] = logged_in(login_app, "bob", 1)
    bob_device = bob.get("/devices").json["mine"]  # type: ignore[index]
    assert ann.post(f"/end/{bob_device}").text == "False"
    assert bob.get("/me").text == "bob"


def count_sessions(app: Flask, user_id: str) -> int:
    return len(PrancerSession.user_sessions(user_id, app=app))


# Flask-Login 0.6.3 sets its remember cookie with datetime.utcnow(), which
# Python 3.12 and newer deprecate.
@pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning")
def test_a_session_restored_by_the_remember_cookie_is_bound_with_a_new_id(
    login_app: Flask,
) -> None:
    @login_app.post("/remember/<user_id>")
    def remember(user_id: str) -> str:
        login_user(User(user_id), remember=True)
        return "ok"

    @login_app.post("/visit")
    def visit() -> str:
        session["seen"] = True
        return session.id

    phone = login_app.test_client()
    phone.post("/remember/ann")
    remember_me = phone.get_cookie("remember_token")
    assert remember_me is not None
    laptop = login_app.test_client()
    planted = laptop.post("/visit").text  # say, an id an attacker planted
    laptop.set_cookie("remember_token", remember_me.value)
    assert laptop.get("/me").text == "ann"
    assert laptop.post("/visit").text != planted
    assert count_sessions(login_app, "ann") == 2
    laptop.delete_cookie("remember_token")  # it would log the laptop in again
    assert PrancerSession.end_user_sessions("ann", app=login_app) == 2
    assert laptop.get("/me").text == "anonymous"


def test_a_session_holding_flask_login_s_user_id_is_bound(login_app: Flask) -> None:
    client = login_app.test_client()
    with client.session_transaction() as stored:
        stored["_user_id"] = "ann"
        stored["_fresh"] = True
    assert count_sessions(login_app, "ann") == 0
    assert client.get("/me").text == "ann"
    assert count_sessions(login_app, "ann") == 1
    assert PrancerSession.end_user_sessions("ann", app=login_app) == 1
    assert client.get("/me").text == "anonymous"


def log_in_by_token(app: Flask) -> None:
    """Authenticate API calls by the user id in ``X-Token``, as a request loader."""

    @app.login_manager.request_loader  # type: ignore[attr-defined]
    def from_token(request: t.Any) -> User | None:
        token = request.headers.get("X-Token")
        return None if token is None else User(token)


def test_a_request_loader_binds_only_sessions_that_store_something(login_app: Flask) -> None:
    log_in_by_token(login_app)

    @login_app.post("/api/cart")
    def cart() -> str:
        session["cart"] = ["apple"]
        return current_user.get_id()

    api = login_app.test_client(use_cookies=False)
    for _ in range(3):
        response = api.get("/me", headers={"X-Token": "ann"})
        assert response.text == "ann"
        assert "Set-Cookie" not in response.headers
    assert count_sessions(login_app, "ann") == 0

    browser = login_app.test_client()
    assert browser.post("/api/cart", headers={"X-Token": "ann"}).text == "ann"
    assert count_sessions(login_app, "ann") == 1
    assert PrancerSession.end_user_sessions("ann", app=login_app) == 1


@pytest.mark.parametrize("protection", [None, "basic"])
def test_api_calls_of_an_app_whose_sessions_are_permanent_bind_no_session(
    login_app: Flask, protection: str | None
) -> None:
    login_app.config["SESSION_PROTECTION"] = protection
    log_in_by_token(login_app)

    @login_app.before_request
    def make_permanent() -> None:
        session.permanent = True

    api = login_app.test_client(use_cookies=False)
    for _ in range(3):
        response = api.get("/me", headers={"X-Token": "ann"})
        assert response.text == "ann"
        assert "Set-Cookie" not in response.headers
    assert count_sessions(login_app, "ann") == 0


def test_strong_session_protection_unbinds(login_app: Flask) -> None:
    login_app.login_manager.session_protection = "strong"  # type: ignore[attr-defined]
    client = login_app.test_client()
    client.post("/login/ann", headers={"User-Agent": "phone"})
    assert count_sessions(login_app, "ann") == 1
    # Another browser presents the cookie: Flask-Login drops the login.
    assert client.get("/me", headers={"User-Agent": "thief"}).text == "anonymous"
    assert count_sessions(login_app, "ann") == 0
