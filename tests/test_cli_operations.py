"""``flask session stats|show|delete|clear`` over every store."""

from __future__ import annotations

import json
import typing as t

import pytest
from click.testing import Result
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from flask_prancer_session.store.base import StoreDriver

from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)


def run(app: Flask, *args: str, input: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=["session", *args], input=input)


def can_scan(store: StoreDriver) -> bool:
    try:
        next(store.scan(), None)
    except NotImplementedError:
        return False
    return True


@pytest.fixture
def visitors(store_app: Flask) -> list[FlaskClient]:
    """Three visitors with sessions; ann is logged in on two of them."""

    @store_app.get("/visit/<user>")
    def visit(user: str) -> str:
        session["cart"] = ["apple"] * (1 + len(user))
        if user != "anonymous":
            session.bind_user(user)
        return session.id

    clients = [store_app.test_client() for _ in range(3)]
    for client, user in zip(clients, ["ann", "ann", "anonymous"], strict=True):
        client.get(f"/visit/{user}")
    return clients


def cookie(client: FlaskClient) -> str:
    value = client.get_cookie("PSESSION")
    assert value is not None
    return value.value


def test_stats(store_app: Flask, store: StoreDriver, visitors: list[FlaskClient]) -> None:
    result = run(store_app, "stats", "--json")
    if not can_scan(store):
        assert result.exit_code == 1
        assert "cannot list its sessions" in result.output
        return
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout.splitlines()[-1])
    assert numbers["sessions"] == 3
    assert numbers["largest_bytes"] > 0
    assert numbers["total_bytes"] >= numbers["largest_bytes"] * 2
    assert numbers["oldest_created_at"] <= numbers["newest_created_at"]
    text = run(store_app, "stats")
    assert text.exit_code == 0
    assert "3 live sessions" in text.output


def test_show_takes_the_cookie_value_or_the_bare_id(
    store_app: Flask, visitors: list[FlaskClient]
) -> None:
    signed = cookie(visitors[0])
    for value in (signed, signed.split(".")[0]):
        result = run(store_app, "show", value)
        assert result.exit_code == 0, result.output
        shown = json.loads(result.output)
        assert shown["data"]["cart"] == ["apple"] * 4
        assert shown["data"]["_prancer_user"] == "ann"
        assert shown["created_at"] <= shown["expires_at"]


@pytest.mark.parametrize("value", ["nonsense", "x" * 43 + ".badsignature"])
def test_show_refuses_what_is_not_an_id_of_this_app(store_app: Flask, value: str) -> None:
    result = run(store_app, "show", value)
    assert result.exit_code == 2
    assert "not a session id issued by this app" in result.output


def test_delete_one_session(store_app: Flask, visitors: list[FlaskClient]) -> None:
    value = cookie(visitors[2])
    assert run(store_app, "delete", value).output == "Deleted the session.\n"
    assert run(store_app, "show", value).exit_code == 1
    assert run(store_app, "delete", value).exit_code == 1


def test_delete_every_session_of_a_user(
    store_app: Flask, store: StoreDriver, visitors: list[FlaskClient]
) -> None:
    result = run(store_app, "delete", "--user", "ann")
    if not store.indexes_users:
        assert result.exit_code == 1
        assert "does not index sessions by user" in result.output
        return
    assert result.output == "Deleted 2 sessions of user 'ann'.\n"
    assert run(store_app, "show", cookie(visitors[0])).exit_code == 1
    assert run(store_app, "show", cookie(visitors[1])).exit_code == 1
    assert run(store_app, "show", cookie(visitors[2])).exit_code == 0


def test_delete_needs_an_id_or_a_user(store_app: Flask) -> None:
    assert run(store_app, "delete").exit_code == 2
    assert run(store_app, "delete", "x", "--user", "ann").exit_code == 2


def test_clear_asks_first(
    store_app: Flask, store: StoreDriver, visitors: list[FlaskClient]
) -> None:
    refused = run(store_app, "clear", input="n\n")
    assert refused.exit_code == 1
    assert run(store_app, "show", cookie(visitors[0])).exit_code == 0
    result = run(store_app, "clear", "--yes")
    if not can_scan(store):
        assert result.exit_code == 1
        return
    assert result.output == "Deleted 3 sessions.\n"
    assert all(run(store_app, "show", cookie(c)).exit_code == 1 for c in visitors)


def test_clear_after_confirmation(
    store_app: Flask, store: StoreDriver, visitors: list[FlaskClient]
) -> None:
    if not can_scan(store):
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    result = run(store_app, "clear", input="y\n")
    assert result.exit_code == 0
    assert result.output.endswith("Deleted 3 sessions.\n")


def test_stats_of_an_empty_store(store_app: Flask, store: StoreDriver) -> None:
    if not can_scan(store):
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    result = run(store_app, "stats", "--json")
    assert json.loads(result.output)["sessions"] == 0


def test_long_scans_show_progress(
    store_app: Flask, store: StoreDriver, visitors: list[FlaskClient]
) -> None:
    if not can_scan(store):
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    result = run(store_app, "stats")
    assert "Reading sessions" in t.cast(str, result.stderr)


def test_ids_that_look_like_options(store_app: Flask, store: StoreDriver) -> None:
    from flask_prancer_session import ChangeSet
    from flask_prancer_session.ids import store_key

    session_id = "-r" + "A" * 41
    store.apply(store_key(session_id), ChangeSet({"a": "1"}, created_at=store.clock()))
    shown = run(store_app, "show", session_id)
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["data"] == {"a": 1}
    assert run(store_app, "delete", session_id).output == "Deleted the session.\n"


def test_a_store_that_is_down_ends_the_command_with_a_message(app: Flask) -> None:
    pytest.importorskip("redis")
    from flask_prancer_session import PrancerSession
    from flask_prancer_session.store.redis import RedisStore

    # Nothing listens on port 1 of the loopback.
    PrancerSession(app, store=RedisStore(url="redis://127.0.0.1:1/0", socket_timeout=1))
    for args in (["stats"], ["delete", "--user", "ann"], ["clear", "--yes"]):
        result = run(app, *args)
        assert result.exit_code == 1, result.output
        assert result.output.startswith("Error: "), result.output
        assert "Traceback" not in result.output
        assert len(result.output.splitlines()) == 1
        assert "ConnectionError" in result.output
