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
from flask_prancer_session import PrancerSession
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
        store = app.extensions["prancer_session"].store
        if store.purge_thread is not None:
            store.purge_thread.join()  # else it may hold a connection past dispose
        engine = getattr(store, "engine", None)
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


def fingerprint(client: FlaskClient) -> str:
    return store_key(session_id(client))[:12]


def fingerprints(page: str) -> list[str]:
    """Return the session fingerprints a devices page lists, in order."""
    return re.findall(r"<code>([0-9a-f]{12})</code>", page)


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
    assert f'<code id="fingerprint">{fingerprint(client)}</code>' in page
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


MEMORY = {"PRANCER_SESSION": {"store": "memory", "devices": True}}
CACHELIB = {"PRANCER_SESSION": {"store": {"driver": "cachelib", "options": {"backend": "simple"}}}}


@pytest.fixture
def memory_app(make_app: t.Callable[..., Flask]) -> Flask:
    """The example app on the memory store, which indexes sessions by user."""
    return make_app(**MEMORY)


@pytest.fixture(params=["memory", "sqlite"])
def indexing_app(request: pytest.FixtureRequest, make_app: t.Callable[..., Flask]) -> Flask:
    """The example app on the memory store and on its default SQLite store."""
    return make_app(**MEMORY) if request.param == "memory" else make_app()


def post(client: FlaskClient, path: str) -> t.Any:
    return client.post(path, data={"csrf_token": csrf_token(client)})


def test_devices_lists_the_users_sessions(indexing_app: Flask) -> None:
    laptop, phone, other = (indexing_app.test_client() for _ in range(3))
    login(laptop, "alice")
    login(phone, "alice")
    login(other, "bob")
    indexing_app.test_client().get("/")  # an anonymous visitor
    for client in (laptop, phone, other):
        client.get("/")  # shows the flashed "Logged in" message: a write

    page = laptop.get("/devices").text
    assert fingerprints(page) == [fingerprint(laptop), fingerprint(phone)]
    assert page.count("This device") == 1
    assert re.search(rf'class="current">\s*<td>\s*<code>{fingerprint(laptop)}<', page)
    assert f'action="/devices/{fingerprint(phone)}/end"' in page
    assert f'action="/devices/{fingerprint(laptop)}/end"' not in page
    assert "Log out everywhere" in page

    page = phone.get("/devices").text
    assert fingerprints(page) == [fingerprint(phone), fingerprint(laptop)]
    assert fingerprints(other.get("/devices").text) == [fingerprint(other)]


def test_devices_needs_a_login(memory_app: Flask) -> None:
    client = memory_app.test_client()
    response = client.get("/devices")
    assert response.status_code == 302
    assert response.location == "/login"
    assert "Log in to see your devices." in client.get("/login").text
    assert post(client, "/devices/end-all").location == "/login"
    assert post(client, "/devices/0123456789ab/end").location == "/login"


def test_end_one_device(memory_app: Flask) -> None:
    laptop, phone = memory_app.test_client(), memory_app.test_client()
    login(laptop, "alice")
    login(phone, "alice")
    ended = fingerprint(phone)

    response = post(laptop, f"/devices/{ended}/end")
    assert response.status_code == 302
    assert response.location == "/devices"
    page = laptop.get("/devices").text
    assert f"Ended the session {ended}." in page
    assert fingerprints(page) == [fingerprint(laptop)]
    assert "Hello, stranger." in phone.get("/").text
    assert "Hello, alice." in laptop.get("/").text

    post(laptop, f"/devices/{ended}/end")
    assert f"The session {ended} had already ended." in laptop.get("/devices").text
    # The path takes only a whole fingerprint.
    assert post(laptop, f"/devices/{ended[:6]}/end").status_code == 404


def test_a_user_cannot_end_another_users_session(memory_app: Flask) -> None:
    alice, mallory = memory_app.test_client(), memory_app.test_client()
    login(alice, "alice")
    login(mallory, "mallory")
    post(mallory, f"/devices/{fingerprint(alice)}/end")
    assert "had already ended" in mallory.get("/devices").text
    assert "Hello, alice." in alice.get("/").text


def test_ending_this_device_logs_out(memory_app: Flask) -> None:
    client = memory_app.test_client()
    login(client, "alice")
    response = post(client, f"/devices/{fingerprint(client)}/end")
    assert response.location == "/login"
    assert "You are logged out." in client.get("/login").text
    assert PrancerSession.user_sessions("alice", memory_app) == {}


def test_log_out_everywhere(memory_app: Flask) -> None:
    laptop, phone, other = (memory_app.test_client() for _ in range(3))
    login(laptop, "alice")
    login(phone, "alice")
    login(other, "bob")
    before = laptop.get_cookie("PSESSION")
    assert before is not None

    response = post(phone, "/devices/end-all")
    assert response.status_code == 302
    assert response.location == "/login"
    assert "Logged out everywhere: 2 sessions ended." in phone.get("/login").text
    assert "Hello, stranger." in phone.get("/").text
    assert "Hello, stranger." in laptop.get("/").text
    assert PrancerSession.user_sessions("alice", memory_app) == {}
    assert "Hello, bob." in other.get("/").text

    stale = memory_app.test_client()
    stale.set_cookie("PSESSION", before.value)
    assert stale.get("/devices").location == "/login"


def test_devices_page_when_the_store_cannot_index_users(make_app: t.Callable[..., Flask]) -> None:
    app = make_app(**CACHELIB)
    client = app.test_client()
    login(client, "alice")
    response = client.get("/devices")
    assert response.status_code == 200
    assert "cannot list sessions by user" in response.text
    assert "Log out everywhere" not in response.text
    # Hand-made posts are sent back to the page that explains.
    assert post(client, "/devices/end-all").location == "/devices"
    assert post(client, "/devices/0123456789ab/end").location == "/devices"
    assert "Hello, alice." in client.get("/").text


def test_devices_on_the_default_store(app: Flask) -> None:
    """Works once the database store indexes sessions by user."""
    laptop, phone = app.test_client(), app.test_client()
    login(laptop, "alice")
    login(phone, "alice")
    page = laptop.get("/devices").text
    assert fingerprints(page) == [fingerprint(laptop), fingerprint(phone)]
    post(laptop, "/devices/end-all")
    assert "Hello, stranger." in phone.get("/").text


@pytest.mark.parametrize("config", [{}, MEMORY, CACHELIB], ids=["sqlite", "memory", "cachelib"])
def test_no_page_shows_the_session_id(
    make_app: t.Callable[..., Flask], config: dict[str, t.Any]
) -> None:
    client = make_app(**config).test_client()
    login(client, "alice")
    cookie = client.get_cookie("PSESSION")
    assert cookie is not None
    secrets = {session_id(client), cookie.value}
    for path in ("/", "/session", "/devices", "/login"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert not any(secret in response.text for secret in secrets), path
    assert fingerprint(client) in client.get("/session").text


def test_templates_never_print_the_session_id() -> None:
    templates = sorted((EXAMPLE_DIR / "templates").glob("*.html"))
    assert templates
    pattern = re.compile(r"""session\s*(\.\s*id\b|\[\s*["']id["']\s*\]|_id\b)|\bsid\b""")
    for template in templates:
        assert pattern.search(template.read_text()) is None, template.name


def test_style_is_local(client: FlaskClient) -> None:
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert response.mimetype == "text/css"
    response.close()
    page = client.get("/").text
    assert '<link rel="stylesheet" href="/static/style.css">' in page
    # No fonts, scripts or styles from other sites.
    for path in [*(EXAMPLE_DIR / "templates").glob("*.html"), EXAMPLE_DIR / "static/style.css"]:
        assert re.search(r"https?:|//[a-z]|@import|url\(", path.read_text()) is None, path.name


def test_the_devices_page_shows_each_device(indexing_app: Flask) -> None:
    laptop, phone = indexing_app.test_client(), indexing_app.test_client()
    laptop.environ_base.update(
        HTTP_USER_AGENT="Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        REMOTE_ADDR="203.0.113.77",
    )
    phone.environ_base.update(
        HTTP_USER_AGENT="Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X)"
        " AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
        REMOTE_ADDR="2001:db8:1234:5678::1",
    )
    login(laptop, "alice")
    login(phone, "alice")
    page = laptop.get("/devices").text
    assert "Firefox 128 on Linux" in page
    assert "Safari 17 on iOS" in page
    assert "203.0.113.0/24" in page and "2001:db8:1234::/48" in page
    assert "203.0.113.77" not in page  # coarse, never the address
    assert "Last seen" in page


def test_the_api_client_works_through_the_header_state(
    make_app: t.Callable[..., Flask], tmp_path: Path
) -> None:
    import io
    import json
    import threading

    from werkzeug.serving import make_server

    from example_app.api_client import main

    app = make_app(
        PRANCER_SESSION={
            "state": {"driver": "header"},
            "store": {"driver": "storable", "options": {"dir": str(tmp_path / "api")}},
            "devices": True,
        }
    )
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    out = io.StringIO()
    try:
        main(f"http://127.0.0.1:{server.server_port}", "alice", out=out)
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
    answers = [json.loads(line.split(": ", 1)[1]) for line in out.getvalue().splitlines()]
    assert [a.get("count") for a in answers] == [1, 2, None, 3, None, None, 1]
    assert answers[2] == {"user": "alice"}
    assert answers[3]["user"] == "alice"
    [device] = answers[4]["devices"]
    assert device["this_device"] is True
    assert device["network"] == "127.0.0.0/24"
    assert answers[6]["user"] is None  # logged out: a fresh session
