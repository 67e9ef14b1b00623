"""The header state: the signed id in ``X-Session-Token``, for API and mobile
clients, over every store."""

from __future__ import annotations

import contextlib
import threading
import typing as t

import pytest
from flask import Flask
from flask import Response
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from flask_prancer_session import ConfigurationError
from flask_prancer_session import HeaderState
from flask_prancer_session import PrancerSession
from flask_prancer_session import session
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from . import services
from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)

TOKEN = "X-Session-Token"


def add_views(app: Flask) -> None:
    @app.get("/count")
    def count() -> dict[str, t.Any]:
        session["n"] = session.get("n", 0) + 1
        return {"n": session["n"], "id": session.id}

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session.regenerate()
        session.bind_user(user)
        return session.id

    @app.post("/logout")
    def logout() -> str:
        session.expire()
        return "bye"

    @app.post("/everywhere/<user>")
    def everywhere(user: str) -> str:
        return str(PrancerSession.end_user_sessions(user))


@pytest.fixture
def api(app: Flask, store: StoreDriver) -> Flask:
    app.config["PRANCER_SESSION"] = {"state": {"driver": "header"}}
    PrancerSession(app, store=store)
    add_views(app)
    return app


def call(client: FlaskClient, method: str, path: str, token: str | None) -> t.Any:
    headers = {} if token is None else {TOKEN: token}
    response = client.open(path, method=method, headers=headers)
    assert "Set-Cookie" not in response.headers
    assert response.status_code == 200, response.text
    return response


def test_the_token_travels_in_the_header(api: Flask, store: StoreDriver) -> None:
    client = api.test_client(use_cookies=False)
    first = call(client, "GET", "/count", None)
    token = first.headers[TOKEN]
    assert first.json["n"] == 1
    assert "X-Session-Token" in first.headers["Vary"]
    assert "X-Session-Token" in first.headers["Access-Control-Expose-Headers"]
    second = call(client, "GET", "/count", token)
    assert (second.json["n"], second.json["id"]) == (2, first.json["id"])
    assert TOKEN not in second.headers  # unchanged: nothing to send
    # A response that hands out a token is for its client alone.
    assert first.headers["Cache-Control"] == "private"
    # Without the token, or with a forged one, a fresh session.
    assert call(client, "GET", "/count", None).json["n"] == 1
    forged = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    fresh = call(client, "GET", "/count", forged)
    assert fresh.json["n"] == 1
    assert fresh.json["id"] != first.json["id"]
    assert call(client, "GET", "/count", token).json["n"] == 3


def test_regenerate_expire_and_log_out_everywhere(api: Flask, store: StoreDriver) -> None:
    client = api.test_client(use_cookies=False)
    token = call(client, "GET", "/count", None).headers[TOKEN]
    old_id = call(client, "GET", "/count", token).json["id"]
    login = call(client, "POST", "/login/ann", token)
    new_token = login.headers[TOKEN]
    assert new_token != token
    assert store.fetch(store_key(old_id)) is None
    assert call(client, "GET", "/count", new_token).json["n"] == 3
    assert call(client, "GET", "/count", token).json["n"] == 1  # the old id is dead

    logout = call(client, "POST", "/logout", new_token)
    assert logout.headers[TOKEN] == ""  # forget the token
    assert call(client, "GET", "/count", new_token).json["n"] == 1

    if store.indexes_users:
        phone = call(client, "POST", "/login/bob", None).headers[TOKEN]
        assert call(client, "POST", "/everywhere/bob", None).text == "1"
        assert call(client, "GET", "/count", phone).json["n"] == 1


def test_the_cli_reads_a_token(api: Flask, store: StoreDriver) -> None:
    client = api.test_client(use_cookies=False)
    token = call(client, "GET", "/count", None).headers[TOKEN]
    result = api.test_cli_runner().invoke(args=["session", "show", token])
    assert result.exit_code == 0, result.output
    assert '"n": 1' in result.output


@pytest.mark.stores("memory")
def test_a_permanent_session_does_not_send_its_token_again(api: Flask) -> None:
    @api.before_request
    def make_permanent() -> None:
        session.permanent = True

    @api.get("/public")
    def public() -> Response:
        session["seen"] = True
        response = Response("hello")
        response.cache_control.public = True
        response.cache_control.max_age = 60
        return response

    client = api.test_client(use_cookies=False)
    first = call(client, "GET", "/count", None)
    token = first.headers[TOKEN]
    # A cookie is sent again to move its expiry; a token has none to move.
    again = call(client, "GET", "/count", token)
    assert again.json["n"] == 2
    assert TOKEN not in again.headers
    # A page the app made cacheable is made private when it hands out a token.
    fresh = call(client, "GET", "/public", None)
    assert fresh.headers[TOKEN]
    assert fresh.headers["Cache-Control"] == "max-age=60, private"
    assert call(client, "GET", "/public", fresh.headers[TOKEN]).headers["Cache-Control"] == (
        "public, max-age=60"
    )


@pytest.mark.stores("memory")
def test_the_token_is_exposed_beside_headers_the_app_exposes(api: Flask) -> None:
    exposes = ["X-Request-Id, x-session-token"]

    # As Flask-CORS does with expose_headers, in an after_request function,
    # which runs before the session is saved.
    @api.after_request
    def cors(response: Response) -> Response:
        response.headers["Access-Control-Expose-Headers"] = exposes[0]
        return response

    client = api.test_client(use_cookies=False)
    first = call(client, "GET", "/count", None)
    assert first.headers["Access-Control-Expose-Headers"] == "X-Request-Id, x-session-token"
    exposes[0] = "X-Request-Id"
    response = call(client, "POST", "/login/ann", first.headers[TOKEN])
    exposed = response.headers["Access-Control-Expose-Headers"]
    assert [name.strip() for name in exposed.split(",")] == ["X-Request-Id", TOKEN]


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({"header": "X Session"}, "PRANCER_SESSION.state.options.header"),
        ({"header": ""}, "PRANCER_SESSION.state.options.header"),
        ({"header": "Cookie"}, "PRANCER_SESSION.state.options.header"),
        ({"expose": "yes"}, "PRANCER_SESSION.state.options.expose"),
        ({"name": "X-Token"}, "PRANCER_SESSION.state.options.name"),
    ],
)
def test_bad_header_options_name_the_key(app: Flask, options: dict[str, t.Any], key: str) -> None:
    app.config["PRANCER_SESSION"] = {"state": {"driver": "header", "options": options}}
    with pytest.raises(ConfigurationError) as caught:
        PrancerSession(app)
    assert caught.value.key == key


@contextlib.contextmanager
def serve(app: Flask) -> t.Iterator[str]:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join()
        server.server_close()


def test_a_live_client_with_requests(app: Flask) -> None:
    requests = services.require_module("requests", "test")
    app.testing = False
    PrancerSession(app, state=HeaderState(header="X-Api-Session"))
    add_views(app)
    with serve(app) as url, requests.Session() as http:
        first = http.get(f"{url}/count", timeout=10)
        token = first.headers["X-Api-Session"]
        assert not http.cookies
        counts = [
            http.get(f"{url}/count", headers={"X-Api-Session": token}, timeout=10).json()["n"]
            for _ in range(3)
        ]
        assert counts == [2, 3, 4]
        bye = http.post(f"{url}/logout", headers={"X-Api-Session": token}, timeout=10)
        assert bye.headers["X-Api-Session"] == ""
        again = http.get(f"{url}/count", headers={"X-Api-Session": token}, timeout=10)
        assert again.json()["n"] == 1
