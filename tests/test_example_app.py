"""The example app, driven as a visitor would drive it."""

from __future__ import annotations

import os
import re
import shutil
import stat
import sys
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

import example_app
from example_app import create_app
from flask_prancer_session import StorableStore
from flask_prancer_session.ids import store_key

EXAMPLE_DIR = Path(example_app.__file__).parent


@pytest.fixture(autouse=True)
def _environ(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXAMPLE_SECRET_KEY", raising=False)
    monkeypatch.delenv("PRANCER_SESSION_CONFIG", raising=False)


@pytest.fixture
def make_app(tmp_path: Path) -> t.Iterator[t.Callable[..., Flask]]:
    """Return ``create_app`` with its instance folder under ``tmp_path``."""
    apps: list[Flask] = []

    def make_app(**config: t.Any) -> Flask:
        app = create_app({"TESTING": True, **config}, instance_path=tmp_path / "instance")
        apps.append(app)
        return app

    yield make_app
    for app in apps:
        engine = getattr(app.extensions["prancer_session"].store, "engine", None)
        if engine is not None:
            engine.dispose()


@pytest.fixture
def app(make_app: t.Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def count(response: t.Any) -> int:
    match = re.search(r'id="count">(\d+)<', response.text)
    assert match is not None, response.text
    return int(match.group(1))


def csrf_token(client: FlaskClient) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text)
    assert match is not None
    return match.group(1)


def session_id(client: FlaskClient) -> str:
    cookie = client.get_cookie("PSESSION")
    assert cookie is not None
    return cookie.value.split(".")[0]


def login(client: FlaskClient, username: str) -> t.Any:
    token = csrf_token(client)
    return client.post("/login", data={"username": username, "csrf_token": token})


def test_counter_increments_and_persists(app: Flask, client: FlaskClient) -> None:
    assert [count(client.get("/")) for _ in range(3)] == [1, 2, 3]
    first = session_id(client)
    assert count(client.get("/")) == 4
    assert session_id(client) == first
    assert app.extensions["prancer_session"].store.fetch(store_key(first)) is not None
    assert count(app.test_client().get("/")) == 1


def test_login_regenerates_the_id(app: Flask, client: FlaskClient) -> None:
    client.get("/")
    before = client.get_cookie("PSESSION")
    assert before is not None

    response = login(client, "alice")
    assert response.status_code == 302
    assert response.location == "/"
    assert session_id(client) != before.value.split(".")[0]

    page = client.get("/")
    assert "Logged in as alice." in page.text
    assert "Hello, alice." in page.text
    assert count(page) == 2  # the data moved to the new id
    assert "Logged in as alice." not in client.get("/").text

    # The pre-login cookie, as an attacker who planted it would send it.
    planted = app.test_client()
    planted.set_cookie("PSESSION", before.value)
    page = planted.get("/")
    assert count(page) == 1
    assert "Hello, stranger." in page.text
    assert session_id(planted) != before.value.split(".")[0]


def test_empty_username_is_refused(client: FlaskClient) -> None:
    response = login(client, "  ")
    assert response.status_code == 200
    assert "Please enter a username." in response.text
    assert "Hello, stranger." in client.get("/").text


def test_forms_need_the_session_csrf_token(app: Flask, client: FlaskClient) -> None:
    csrf_token(client)
    assert client.post("/login", data={"username": "alice"}).status_code == 400
    assert (
        client.post("/login", data={"username": "alice", "csrf_token": "forged"}).status_code == 400
    )
    # A token from another visitor's session is no good either.
    other = app.test_client()
    token = csrf_token(other)
    assert client.post("/login", data={"username": "a", "csrf_token": token}).status_code == 400
    assert "Hello, stranger." in client.get("/").text


def test_session_page_shows_the_data_escaped(client: FlaskClient) -> None:
    client.get("/")
    login(client, '<script>alert("hi")</script>')
    page = client.get("/session").text
    assert f"<code>{session_id(client)}</code>" in page
    assert "<code>count</code></td><td><code>1</code>" in page
    assert "<code>username</code>" in page
    assert "&lt;script&gt;alert(&#34;hi&#34;)&lt;/script&gt;" in page
    assert "<script>" not in page


def test_logout_expires_the_session(app: Flask, client: FlaskClient) -> None:
    login(client, "alice")
    before = client.get_cookie("PSESSION")
    assert before is not None
    old_id = before.value.split(".")[0]
    token = csrf_token(client)

    assert client.get("/logout").status_code == 405
    response = client.post("/logout", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.location == "/login"
    assert app.extensions["prancer_session"].store.fetch(store_key(old_id)) is None
    # The cookie now names a new session, made only to carry the flash message.
    assert session_id(client) != old_id

    page = client.get("/login").text
    assert "You are logged out." in page
    assert 'name="username"' in page
    assert "You are logged out." not in client.get("/login").text

    stale = app.test_client()
    stale.set_cookie("PSESSION", before.value)
    assert "Hello, stranger." in stale.get("/").text


def test_default_store_is_sqlite_in_the_instance_folder(app: Flask, client: FlaskClient) -> None:
    from flask_prancer_session.store.database import DatabaseStore

    store = app.extensions["prancer_session"].store
    assert isinstance(store, DatabaseStore)
    client.get("/")
    assert store.fetch(store_key(session_id(client))) is not None
    assert os.path.isfile(os.path.join(app.instance_path, "sessions.db"))


def test_a_restarted_app_sees_the_sessions(make_app: t.Callable[..., Flask]) -> None:
    first = make_app().test_client()
    login(first, "alice")
    cookie = first.get_cookie("PSESSION")
    assert cookie is not None

    second = make_app().test_client()
    second.set_cookie("PSESSION", cookie.value)
    page = second.get("/")
    assert "Hello, alice." in page.text
    assert count(page) == 1


def test_secret_key_is_made_once_and_kept_private(
    make_app: t.Callable[..., Flask], tmp_path: Path
) -> None:
    app = make_app()
    path = tmp_path / "instance" / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert isinstance(app.secret_key, str) and len(app.secret_key) >= 43
    assert path.read_text() == app.secret_key
    assert make_app().secret_key == app.secret_key
    assert [p.name for p in path.parent.iterdir() if p.name != "sessions.db"] == ["secret_key"]


def test_secret_key_from_the_environment(
    make_app: t.Callable[..., Flask], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXAMPLE_SECRET_KEY", "from the environment")
    assert make_app().secret_key == "from the environment"
    assert not (tmp_path / "instance" / "secret_key").exists()
    assert make_app(SECRET_KEY="from the config").secret_key == "from the config"


@pytest.mark.parametrize(
    "name",
    [
        "prancer_session.example.yml",
        pytest.param(
            "prancer_session.example.toml",
            marks=pytest.mark.skipif(sys.version_info < (3, 11), reason="tomllib is new in 3.11"),
        ),
    ],
)
def test_session_config_file(
    make_app: t.Callable[..., Flask],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
) -> None:
    # The example's relative dir lands under tmp_path; so does the relative
    # config path, which must be read from the working directory.
    monkeypatch.chdir(tmp_path)
    shutil.copy(EXAMPLE_DIR / name, tmp_path / name)
    monkeypatch.setenv("PRANCER_SESSION_CONFIG", name)
    app = make_app()

    store = app.extensions["prancer_session"].store
    assert isinstance(store, StorableStore)
    assert store.dir == str(tmp_path / "instance" / "sessions")
    assert store.expiration_timeout == 3600

    client = app.test_client()
    response = client.get("/")
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("PSESSION=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    key = store_key(session_id(client))
    assert (tmp_path / "instance" / "sessions" / key[:2] / key).is_file()
    assert count(client.get("/")) == 2
    assert not (tmp_path / "instance" / "sessions.db").exists()


def test_session_config_file_of_unknown_kind(
    make_app: t.Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRANCER_SESSION_CONFIG", "session.json")
    with pytest.raises(RuntimeError, match=r"\.yml or \.toml"):
        make_app()
