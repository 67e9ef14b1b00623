"""``client.session_transaction()``, as Flask's testing docs use it, over every store."""

from __future__ import annotations

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)


@pytest.fixture
def show_client(store_app: Flask, client: FlaskClient) -> FlaskClient:
    @store_app.get("/set")
    def set_() -> str:
        session["a"] = 1
        session["cart"] = ["apple"]
        return ""

    @store_app.get("/show")
    def show() -> dict[str, object]:
        return dict(session)

    client.get("/set")
    return client


def test_setting_a_key_of_an_existing_session(show_client: FlaskClient) -> None:
    with show_client.session_transaction() as sess:
        sess["b"] = 2
    assert show_client.get("/show").json == {"a": 1, "cart": ["apple"], "b": 2}


def test_changing_a_value_in_place(show_client: FlaskClient) -> None:
    with show_client.session_transaction() as sess:
        sess["cart"].append("pear")
    assert show_client.get("/show").json == {"a": 1, "cart": ["apple", "pear"]}


def test_removing_a_key(show_client: FlaskClient) -> None:
    with show_client.session_transaction() as sess:
        del sess["a"]
    assert show_client.get("/show").json == {"cart": ["apple"]}


def test_clearing_ends_the_session(show_client: FlaskClient) -> None:
    with show_client.session_transaction() as sess:
        sess.clear()
    assert show_client.get_cookie("PSESSION") is None
    assert show_client.get("/show").json == {}


def test_reading_sees_what_views_stored(show_client: FlaskClient) -> None:
    with show_client.session_transaction() as sess:
        assert dict(sess) == {"a": 1, "cart": ["apple"]}
        assert sess.get("a") == 1


def test_starting_a_session_before_the_first_request(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/show")
    def show() -> dict[str, object]:
        return dict(session)

    with client.session_transaction() as sess:
        sess["user_id"] = "42"
    assert client.get("/show").json == {"user_id": "42"}
    with client.session_transaction() as sess:
        sess["_fresh"] = True
    assert client.get("/show").json == {"user_id": "42", "_fresh": True}
