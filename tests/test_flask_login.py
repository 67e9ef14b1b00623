"""The Flask-Login switch and "log out everywhere", over every store."""

from __future__ import annotations

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
