"""Flask-Login, Flask-WTF and message flashing over Prancer sessions, on every store."""

from __future__ import annotations

import pytest
from flask import flash
from flask import Flask
from flask import get_flashed_messages
from flask import session
from flask.testing import FlaskClient
from flask_login import current_user
from flask_login import login_required
from flask_login import login_user
from flask_login import LoginManager
from flask_login import logout_user
from flask_login import UserMixin
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from flask_wtf.csrf import generate_csrf
from wtforms import StringField
from wtforms.validators import DataRequired

from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)

USERS = {"alice", "bob"}


class User(UserMixin):
    def __init__(self, user_id: str) -> None:
        self.id = user_id


def add_login_manager(app: Flask) -> LoginManager:
    manager = LoginManager(app)

    @manager.user_loader
    def load_user(user_id: str) -> User | None:
        return User(user_id) if user_id in USERS else None

    return manager


def session_id(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("PSESSION")
    return None if cookie is None else cookie.value.split(".")[0]


def stored(store: StoreDriver, client: FlaskClient) -> dict[str, str] | None:
    """Return the serialised data the store holds for the client's session."""
    sid = session_id(client)
    record = None if sid is None else store.fetch(store_key(sid))
    return None if record is None else dict(record.data)


def test_login_persists_and_logout_clears(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    add_login_manager(store_app)

    @store_app.post("/login/<name>")
    def login(name: str) -> str:
        login_user(User(name))
        return "in"

    @store_app.post("/logout")
    def logout() -> str:
        logout_user()
        return "out"

    @store_app.get("/me")
    def me() -> str:
        return current_user.get_id() or "anonymous"

    @store_app.get("/private")
    @login_required
    def private() -> str:
        return f"secret for {current_user.id}"

    assert client.get("/me").text == "anonymous"
    assert client.get("/private").status_code == 401

    client.post("/login/alice")
    sid = session_id(client)
    assert client.get("/me").text == "alice"
    assert client.get("/private").text == "secret for alice"
    assert client.get("/me").text == "alice"
    assert session_id(client) == sid
    data = stored(store, client)
    assert data is not None and "_user_id" in data and "_fresh" in data

    client.post("/logout")
    # logout_user() removed every key Flask-Login had set: the session is gone.
    assert store.fetch(store_key(sid)) is None
    assert client.get_cookie("PSESSION") is None
    assert client.get("/me").text == "anonymous"
    assert client.get("/private").status_code == 401


def test_login_then_regenerate_keeps_the_user(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    add_login_manager(store_app)

    @store_app.get("/visit")
    def visit() -> str:
        session["visited"] = True
        return "ok"

    @store_app.post("/login/<name>")
    def login(name: str) -> str:
        login_user(User(name))
        session.regenerate()
        return "in"

    @store_app.get("/me")
    def me() -> str:
        return current_user.get_id() or "anonymous"

    client.get("/visit")
    before = client.get_cookie("PSESSION")
    assert before is not None

    client.post("/login/bob")
    assert session_id(client) != before.value.split(".")[0]
    assert client.get("/me").text == "bob"
    assert store.fetch(store_key(before.value.split(".")[0])) is None

    planted = store_app.test_client()
    planted.set_cookie("PSESSION", before.value)
    assert planted.get("/me").text == "anonymous"


def test_csrf_protect_checks_the_token_in_the_session(
    store_app: Flask, client: FlaskClient
) -> None:
    CSRFProtect(store_app)

    @store_app.get("/token")
    def new_token() -> str:
        return generate_csrf()

    @store_app.post("/submit")
    def submit() -> str:
        return "accepted"

    @store_app.post("/regenerate")
    def regenerate() -> str:
        session.regenerate()
        return "regenerated"

    @store_app.post("/expire")
    def expire() -> str:
        session.expire()
        return "expired"

    token = client.get("/token").text
    assert client.post("/submit", data={"csrf_token": token}).text == "accepted"
    assert client.post("/submit", headers={"X-CSRFToken": token}).text == "accepted"
    assert client.post("/submit").status_code == 400
    assert client.post("/submit", data={"csrf_token": "forged"}).status_code == 400

    other = store_app.test_client()
    other.get("/token")
    assert other.post("/submit", data={"csrf_token": token}).status_code == 400

    # The token lives in the session, so it follows it to a new id ...
    assert client.post("/regenerate", data={"csrf_token": token}).status_code == 200
    assert client.post("/submit", data={"csrf_token": token}).text == "accepted"
    # ... and dies with it.
    assert client.post("/expire", data={"csrf_token": token}).status_code == 200
    assert client.post("/submit", data={"csrf_token": token}).status_code == 400


class NameForm(FlaskForm):
    name = StringField(validators=[DataRequired()])


def test_flask_form_validates_with_the_session_token(store_app: Flask, client: FlaskClient) -> None:
    @store_app.route("/form", methods=["GET", "POST"])
    def form() -> str:
        form = NameForm()
        if form.validate_on_submit():
            return f"hello {form.name.data}"
        return form.csrf_token.current_token or ""

    token = client.get("/form").text
    assert client.post("/form", data={"name": "alice", "csrf_token": token}).text == "hello alice"
    assert client.post("/form", data={"name": "alice"}).text != "hello alice"


@pytest.mark.parametrize("category", ["message", "error"])
def test_flash_messages_show_once(
    store_app: Flask, client: FlaskClient, store: StoreDriver, category: str
) -> None:
    @store_app.post("/flash")
    def add() -> str:
        flash("Saved.", category)
        flash("<b>Bold</b>", category)
        return "flashed"

    @store_app.get("/messages")
    def messages() -> list[list[str]]:
        return [list(pair) for pair in get_flashed_messages(with_categories=True)]

    assert client.get("/messages").json == []
    client.post("/flash")
    data = stored(store, client)
    assert data is not None and "_flashes" in data
    assert client.get("/messages").json == [[category, "Saved."], [category, "<b>Bold</b>"]]
    assert client.get("/messages").json == []
    # The flashes were all the session held: once shown, nothing is kept.
    assert stored(store, client) is None
    assert client.get_cookie("PSESSION") is None
