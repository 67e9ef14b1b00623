"""The session API as views use it, over every store."""

from __future__ import annotations

import datetime
import typing as t
import uuid

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient
from markupsafe import Markup

from flask_prancer_session import ChangeSet
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .clock import FakeClock


def session_id(client: FlaskClient) -> str | None:
    cookie = client.get_cookie("PSESSION")
    return None if cookie is None else cookie.value.split(".")[0]


def test_counter_persists_and_id_is_stable(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/")
    def index() -> str:
        counter = session.get("counter", 0) + 1
        session.set("counter", counter)
        return f"{counter} {session.id}"

    ids = set()
    for expected in range(1, 4):
        count, sid = client.get("/").text.split()
        assert int(count) == expected
        ids.add(sid)
    assert len(ids) == 1
    assert session_id(client) in ids


def test_has_get_set_remove(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/write")
    def write() -> dict[str, object]:
        return {
            "had": session.has("k"),
            "first": session.set("k", 1),
            "second": session.set("k", 2),
            "has": session.has("k"),
            "missing": session.get("nope"),
            "default": session.get("nope", "dflt"),
        }

    @store_app.get("/remove")
    def remove() -> dict[str, object]:
        return {"removed": session.remove("k"), "again": session.remove("k"), "has": "k" in session}

    assert client.get("/write").json == {
        "had": False,
        "first": None,
        "second": 1,
        "has": True,
        "missing": None,
        "default": "dflt",
    }
    assert client.get("/remove").json == {"removed": 2, "again": None, "has": False}


def test_get_returns_copies_and_set_stores_copies(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/set")
    def set_() -> str:
        cart = ["apple"]
        session.set("cart", cart)
        cart.append("set after storing")
        session.get("cart").append("mutated copy")
        session.get("cart").append("mutated copy")
        return repr(session.get("cart"))

    @store_app.get("/read")
    def read() -> str:
        return repr(session.get("cart"))

    assert client.get("/set").text == "['apple']"
    assert client.get("/read").text == "['apple']"


def test_in_place_changes_through_the_mapping_are_saved(
    store_app: Flask, client: FlaskClient
) -> None:
    @store_app.get("/start")
    def start() -> str:
        session["cart"] = ["apple"]
        session["profile"] = {"tags": []}
        return ""

    @store_app.get("/append")
    def append() -> str:
        session["cart"].append("pear")
        session["profile"]["tags"].append("vip")
        assert not session.modified
        return ""

    @store_app.get("/read")
    def read() -> dict[str, object]:
        return {"cart": session["cart"], "profile": session["profile"]}

    client.get("/start")
    client.get("/append")
    assert client.get("/read").json == {"cart": ["apple", "pear"], "profile": {"tags": ["vip"]}}


def test_mapping_interface(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = 1
        session.update({"b": 2}, c=3)
        session.setdefault("d", [4])
        del session["a"]
        session.pop("b")
        session.permanent = True
        return ""

    @store_app.get("/read")
    def read() -> dict[str, object]:
        return {
            "items": sorted(session.items()),
            "permanent": session.permanent,
            "new": session.new,
        }

    client.get("/write")
    assert client.get("/read").json == {
        "items": [["_permanent", True], ["c", 3], ["d", [4]]],
        "permanent": True,
        "new": False,
    }


def test_rich_values_round_trip(store_app: Flask, client: FlaskClient) -> None:
    values = {
        "tuple": (1, "two"),
        "bytes": b"\x00\xff",
        "datetime": datetime.datetime(2026, 11, 29, 6, 30, 1, 123456, tzinfo=datetime.timezone.utc),
        "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"),
        "markup": Markup("<b>bold</b>"),
        "set": {1, 2, 3},
        "nested": {"list": [1, {"x": (2, 3)}], " t": "looks like a tag"},
        "unicode": "\u00e9t\u00e9 \U0001f31e",
    }

    @store_app.get("/write")
    def write() -> str:
        for key, value in values.items():
            session[key] = value
        return ""

    @store_app.get("/read")
    def read() -> str:
        assert {key: session[key] for key in values} == values
        return "same"

    client.get("/write")
    assert client.get("/read").text == "same"


def test_unserialisable_value_fails_naming_the_key(store_app: Flask, client: FlaskClient) -> None:
    store_app.testing = False

    @store_app.get("/set")
    def set_() -> str:
        with pytest.raises(TypeError, match="'bad'"):
            session.set("bad", object())
        with pytest.raises(TypeError, match="'bad'"):
            session["bad"] = object()
        assert "bad" not in session
        return "ok"

    @store_app.get("/in-place")
    def in_place() -> str:
        session["box"] = []
        session["box"].append(object())
        return "ok"

    errors: list[BaseException] = []

    @store_app.errorhandler(500)
    def record(error: Exception) -> tuple[str, int]:
        errors.append(error.original_exception)  # type: ignore[attr-defined]
        return "failed", 500

    assert client.get("/set").text == "ok"
    assert client.get("/in-place").status_code == 500
    assert isinstance(errors[0], TypeError)
    assert "'box'" in str(errors[0])


def test_empty_session_writes_nothing(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    seen: list[str] = []

    @store_app.get("/")
    def index() -> str:
        seen.append(session.id)
        return str(session.get("nothing"))

    response = client.get("/")
    assert response.headers.get("Set-Cookie") is None
    assert response.headers["Vary"] == "Cookie"
    assert store.fetch(store_key(seen[0])) is None


def test_unchanged_session_is_not_rewritten(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = [1]
        return session.id

    @store_app.get("/read")
    def read() -> str:
        return str(session["a"])

    sid = client.get("/write").text
    before = store.fetch(store_key(sid))
    clock.advance(1)  # Less than the touch interval.
    response = client.get("/read")
    assert response.text == "[1]"
    assert response.headers.get("Set-Cookie") is None
    assert store.fetch(store_key(sid)) == before


def test_reading_extends_the_idle_timeout(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = 1
        return session.id

    @store_app.get("/read")
    def read() -> str:
        return str(session.get("a"))

    sid = client.get("/write").text
    for _ in range(4):
        clock.advance(store.expiration_timeout * 0.75)
        assert client.get("/read").text == "1"
    record = store.fetch(store_key(sid))
    assert record is not None
    assert record.expires_at == clock.now + store.expiration_timeout
    clock.advance(store.expiration_timeout)
    assert client.get("/read").text == "None"


def test_expired_session_is_never_returned(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = 1
        return session.id

    @store_app.get("/read")
    def read() -> str:
        return f"{session.get('a')} {session.id}"

    sid = client.get("/write").text
    clock.advance(store.expiration_timeout + 1)
    value, new_sid = client.get("/read").text.split()
    assert value == "None"
    assert new_sid != sid


def test_absolute_timeout_ends_an_active_session(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    store.absolute_timeout = store.expiration_timeout * 2

    @store_app.get("/")
    def index() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    assert client.get("/").text == "1"
    for _ in range(3):
        clock.advance(store.expiration_timeout * 0.6)
        client.get("/")
    clock.advance(store.expiration_timeout * 0.6)
    assert client.get("/").text == "1"


def test_expire_blows_the_session_away(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["user"] = "ann"
        return session.id

    @store_app.get("/logout")
    def logout() -> dict[str, object]:
        session.expire()
        return {"empty": len(session) == 0, "user": session.get("user")}

    sid = client.get("/write").text
    response = client.get("/logout")
    assert response.json == {"empty": True, "user": None}
    assert "PSESSION=;" in response.headers["Set-Cookie"]
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert store.fetch(store_key(sid)) is None
    assert client.get_cookie("PSESSION") is None


def test_writes_after_expire_go_to_a_new_session(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["user"] = "ann"
        return session.id

    @store_app.get("/logout")
    def logout() -> str:
        old = session.id
        session.expire()
        session["flash"] = "bye"
        assert session.id != old
        return session.id

    @store_app.get("/read")
    def read() -> dict[str, object]:
        return {"id": session.id, "data": dict(session)}

    old = client.get("/write").text
    new = client.get("/logout").text
    assert new != old
    assert store.fetch(store_key(old)) is None
    assert client.get("/read").json == {"id": new, "data": {"flash": "bye"}}


def test_old_cookie_is_dead_after_expire(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["user"] = "ann"
        return ""

    @store_app.get("/logout")
    def logout() -> str:
        session.expire()
        return ""

    @store_app.get("/read")
    def read() -> str:
        return str(session.get("user"))

    client.get("/write")
    stolen = client.get_cookie("PSESSION").value  # type: ignore[union-attr]
    client.get("/logout")
    attacker = store_app.test_client()
    attacker.set_cookie("PSESSION", stolen)
    assert attacker.get("/read").text == "None"


def test_regenerate_keeps_data_under_a_new_id(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["cart"] = ["apple"]
        return session.id

    @store_app.get("/login")
    def login() -> str:
        old = session.id
        session.regenerate()
        assert session.id != old
        session["user"] = "ann"
        return session.id

    @store_app.get("/read")
    def read() -> dict[str, object]:
        return {"id": session.id, "data": dict(session)}

    old = client.get("/write").text
    new = client.get("/login").text
    assert new != old
    assert store.fetch(store_key(old)) is None
    assert client.get("/read").json == {"id": new, "data": {"cart": ["apple"], "user": "ann"}}


def test_regenerate_defeats_a_planted_id(store_app: Flask, store: StoreDriver) -> None:
    @store_app.get("/visit")
    def visit() -> str:
        session["seen"] = True
        return ""

    @store_app.get("/login")
    def login() -> str:
        session.regenerate()
        session["user"] = "victim"
        return ""

    @store_app.get("/whoami")
    def whoami() -> str:
        return str(session.get("user"))

    attacker = store_app.test_client()
    attacker.get("/visit")
    planted = attacker.get_cookie("PSESSION").value  # type: ignore[union-attr]
    victim = store_app.test_client()
    victim.set_cookie("PSESSION", planted)
    victim.get("/login")
    assert victim.get("/whoami").text == "victim"
    assert attacker.get("/whoami").text == "None"


def test_regenerate_an_empty_session(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/")
    def index() -> str:
        old = session.id
        session.regenerate()
        return str(session.id != old and len(session) == 0)

    response = client.get("/")
    assert response.text == "True"
    assert response.headers.get("Set-Cookie") is None


def test_regenerate_keeps_the_absolute_lifetime(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    store.absolute_timeout = store.expiration_timeout * 2

    @store_app.get("/write")
    def write() -> str:
        session["user"] = "ann"
        return ""

    @store_app.get("/again")
    def again() -> str:
        session.regenerate()
        return session.id

    created = clock.now
    client.get("/write")
    clock.advance(store.expiration_timeout * 0.5)
    sid = client.get("/again").text
    record = store.fetch(store_key(sid))
    assert record is not None
    assert record.created_at == created


def test_vary_cookie_only_when_accessed(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/touch")
    def touch() -> str:
        return str("x" in session)

    @store_app.get("/plain")
    def plain() -> str:
        return "plain"

    assert client.get("/touch").headers["Vary"] == "Cookie"
    assert "Vary" not in client.get("/plain").headers


def test_emptied_session_is_deleted_with_its_cookie(
    store_app: Flask, client: FlaskClient, store: StoreDriver
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = 1
        session["b"] = 2
        return session.id

    @store_app.get("/clear")
    def clear() -> str:
        session.clear()
        return ""

    @store_app.get("/read")
    def read() -> str:
        return f"{len(session)} {session.id}"

    sid = client.get("/write").text
    response = client.get("/clear")
    assert "Max-Age=0" in response.headers["Set-Cookie"]
    assert store.fetch(store_key(sid)) is None
    count, new_sid = client.get("/read").text.split()
    assert count == "0"
    assert new_sid != sid


def test_undecodable_stored_value_is_dropped_and_logged(
    store_app: Flask, client: FlaskClient, store: StoreDriver, caplog: pytest.LogCaptureFixture
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = 1
        session["b"] = 2
        return session.id

    @store_app.get("/read")
    def read() -> str:
        return f"{session.get('a')} {session['b']} {session.id}"

    sid = client.get("/write").text
    store.apply(store_key(sid), ChangeSet(updated={"a": "{not json"}))
    a, b, same_sid = client.get("/read").text.split()
    assert (a, b, same_sid) == ("None", "2", sid)
    assert [r.name for r in caplog.records] == ["flask_prancer_session.session"]
    record = store.fetch(store_key(sid))
    assert record is not None
    assert record.data == {"b": "2"}


@pytest.mark.parametrize(
    ("view", "expected"),
    [
        pytest.param(lambda: sorted(dict(session).items()), [("b", 2)], id="dict"),
        pytest.param(lambda: sorted(session.items()), [("b", 2)], id="items"),
        pytest.param(lambda: sorted(session.keys()), ["b"], id="keys"),
        pytest.param(lambda: [session[k] for k in sorted(session)], [2], id="iteration"),
        pytest.param(lambda: "a" in session and session["a"], False, id="membership"),
        pytest.param(lambda: (len(session), session.get("a")), (1, None), id="len"),
        pytest.param(lambda: session.setdefault("a", 3), 3, id="setdefault"),
    ],
)
def test_an_undecodable_value_is_absent_to_the_whole_mapping_api(
    store_app: Flask,
    client: FlaskClient,
    store: StoreDriver,
    view: t.Callable[[], object],
    expected: object,
) -> None:
    @store_app.get("/write")
    def write() -> str:
        session["a"] = 1
        session["b"] = 2
        return session.id

    store_app.add_url_rule("/view", "view", lambda: repr(view()))
    sid = client.get("/write").text
    store.apply(store_key(sid), ChangeSet(updated={"a": "{not json"}))
    response = client.get("/view")
    assert (response.status_code, response.text) == (200, repr(expected))
    record = store.fetch(store_key(sid))
    assert record is not None
    assert "{not json" not in record.data.values()


def test_the_user_key_is_written_only_by_bind_user(store_app: Flask, client: FlaskClient) -> None:
    @store_app.get("/forge")
    def forge() -> str:
        for write in (
            lambda: session.__setitem__("_prancer_user", 42),
            lambda: session.set("_prancer_user", "ann"),
            lambda: session.update({"_prancer_user": "ann"}),
            lambda: session.setdefault("_prancer_user", "ann"),
        ):
            with pytest.raises(TypeError, match="bind_user"):
                write()
        session.bind_user(42)
        return repr(session.user_id)

    assert client.get("/forge").text == "'42'"


def test_the_typed_proxy_is_flask_session(store_app: Flask, client: FlaskClient) -> None:
    from flask_prancer_session import session as typed_session

    @store_app.get("/typed")
    def typed() -> str:
        typed_session.set("a", 1)
        return f"{session['a']} {typed_session.id == session.id}"

    assert client.get("/typed").text == "1 True"


def test_a_copy_changed_in_place_is_pointed_out_in_testing(
    store_app: Flask, client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    @store_app.get("/start")
    def start() -> str:
        session["cart"] = ["apple"]
        session["tags"] = {"a"}
        return "ok"

    @store_app.get("/lost")
    def lost() -> str:
        session.get("cart").append("pear")  # Flask's session would keep it
        return "ok"

    @store_app.get("/kept")
    def kept() -> str:
        cart = session.get("cart")
        cart.append("plum")
        session["cart"] = cart
        tags = session.get("tags")
        tags.add("b")
        session.set("tags", tags)
        session.get("cart")  # read only
        return "ok"

    client.get("/start")
    client.get("/lost")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert "session.get('cart') returned a copy" in warnings[0]
    assert "session['cart'] = value" in warnings[0]
    caplog.clear()
    client.get("/kept")
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []

    store_app.testing = False  # production: nothing is watched
    client.get("/lost")
    assert [r for r in caplog.records if r.levelname == "WARNING"] == []
