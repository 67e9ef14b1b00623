"""Requests of one visitor running at the same time, over every store."""

from __future__ import annotations

import http.client
import threading
import typing as t

import pytest
from flask import Flask
from flask import Response
from flask import session
from werkzeug.serving import make_server

from flask_prancer_session import ServerSession
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)


def open_session(app: Flask, cookie: str | None) -> ServerSession:
    """Open the session a request with ``cookie`` would see, as a view does."""
    headers = {"Cookie": f"PSESSION={cookie}"} if cookie else {}
    with app.test_request_context(headers=headers):
        opened = session._get_current_object()  # type: ignore[attr-defined]
    assert isinstance(opened, ServerSession)
    return opened


def save(app: Flask, opened: ServerSession) -> Response:
    response = app.response_class()
    app.session_interface.save_session(app, opened, response)
    return response


def cookie_of(response: Response) -> str:
    value = response.headers["Set-Cookie"].split(";")[0].partition("=")[2]
    assert value
    return value


@pytest.fixture
def cookie(store_app: Flask) -> str:
    """The cookie of a stored session holding ``{"start": 0}``."""
    first = open_session(store_app, None)
    first["start"] = 0
    return cookie_of(save(store_app, first))


def test_overlapping_requests_keep_each_others_keys(store_app: Flask, cookie: str) -> None:
    a = open_session(store_app, cookie)
    b = open_session(store_app, cookie)
    a["from_a"] = 1
    del a["start"]
    b["from_b"] = 2
    save(store_app, a)
    save(store_app, b)
    assert dict(open_session(store_app, cookie)) == {"from_a": 1, "from_b": 2}


def test_same_key_last_writer_wins(store_app: Flask, cookie: str) -> None:
    a = open_session(store_app, cookie)
    b = open_session(store_app, cookie)
    a["start"] = "a"
    b["start"] = "b"
    save(store_app, a)
    save(store_app, b)
    assert open_session(store_app, cookie)["start"] == "b"


def test_in_place_change_does_not_clobber_other_keys(store_app: Flask, cookie: str) -> None:
    a = open_session(store_app, cookie)
    b = open_session(store_app, cookie)
    a["cart"] = ["apple"]
    save(store_app, a)
    b["start"] += 1
    save(store_app, b)
    assert dict(open_session(store_app, cookie)) == {"start": 1, "cart": ["apple"]}


def test_expired_session_is_not_revived_by_a_running_request(
    store_app: Flask, store: StoreDriver, cookie: str
) -> None:
    slow = open_session(store_app, cookie)
    old_id = slow.id
    logout = open_session(store_app, cookie)
    logout.expire()
    save(store_app, logout)
    slow["late"] = "write"
    response = save(store_app, slow)
    assert store.fetch(store_key(old_id)) is None
    assert open_session(store_app, cookie).new
    assert "late" not in open_session(store_app, cookie)
    # The browser may hold a newer cookie by now (a new login): left alone.
    assert "Set-Cookie" not in response.headers


def test_regenerated_session_old_id_stays_dead(
    store_app: Flask, store: StoreDriver, cookie: str
) -> None:
    slow = open_session(store_app, cookie)
    old_id = slow.id  # loaded before the login saves
    login = open_session(store_app, cookie)
    login.regenerate()
    login["user"] = "ann"
    new_cookie = cookie_of(save(store_app, login))
    slow["late"] = "write"
    response = save(store_app, slow)
    assert store.fetch(store_key(old_id)) is None
    assert dict(open_session(store_app, new_cookie)) == {"start": 0, "user": "ann"}
    # Answered after the login, it must not make the browser drop the new cookie.
    assert "Set-Cookie" not in response.headers


class ServerThread:
    """A real threaded WSGI server on a free loopback port."""

    def __init__(self, app: Flask) -> None:
        self.server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.thread.join()
        self.server.server_close()

    def get(self, path: str, cookie: str | None = None) -> tuple[int, str, str | None]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            headers = {"Cookie": f"PSESSION={cookie}"} if cookie else {}
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            return response.status, response.read().decode(), response.getheader("Set-Cookie")
        finally:
            connection.close()


def test_threaded_server_eight_clients_one_cookie(store_app: Flask) -> None:
    @store_app.get("/start")
    def start() -> str:
        session["start"] = True
        return session.id

    @store_app.get("/set/<name>")
    def set_key(name: str) -> str:
        session[name] = name
        return "ok"

    @store_app.get("/keys")
    def keys() -> str:
        return ",".join(sorted(session))

    clients, requests_each = 8, 5
    failures: list[t.Any] = []
    with ServerThread(store_app) as server:
        status, _, set_cookie = server.get("/start")
        assert status == 200 and set_cookie
        cookie = set_cookie.split(";")[0].partition("=")[2]
        barrier = threading.Barrier(clients)

        def client(n: int) -> None:
            barrier.wait()
            for i in range(requests_each):
                result = server.get(f"/set/c{n}r{i}", cookie)
                if result[0] != 200:
                    failures.append(result)

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _, body, _ = server.get("/keys", cookie)
    assert failures == []
    expected = {f"c{n}r{i}" for n in range(clients) for i in range(requests_each)} | {"start"}
    assert set(body.split(",")) == expected


def test_emptying_keeps_a_key_another_request_added(store_app: Flask, cookie: str) -> None:
    flash = open_session(store_app, cookie)
    other = open_session(store_app, cookie)
    assert flash.pop("start") == 0  # the last key, as a flash message is read
    other["cart"] = ["apple"]
    save(store_app, other)
    response = save(store_app, flash)
    assert "Set-Cookie" not in response.headers
    assert dict(open_session(store_app, cookie)) == {"cart": ["apple"]}


def test_emptying_alone_deletes_the_session_and_its_cookie(
    store_app: Flask, store: StoreDriver, cookie: str
) -> None:
    emptied = open_session(store_app, cookie)
    session_id = emptied.id
    del emptied["start"]
    response = save(store_app, emptied)
    assert "PSESSION=;" in response.headers["Set-Cookie"]
    assert store.fetch(store_key(session_id)) is None


def test_regenerate_after_a_logout_stays_logged_out(
    store_app: Flask, store: StoreDriver, cookie: str
) -> None:
    login = open_session(store_app, cookie)
    login["user"] = "ann"  # loaded before the logout
    logout = open_session(store_app, cookie)
    logout.expire()
    save(store_app, logout)
    login.regenerate()
    response = save(store_app, login)
    assert "PSESSION=;" in response.headers["Set-Cookie"]
    assert store.fetch(store_key(login.id)) is None
