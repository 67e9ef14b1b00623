"""The cookie state driver: cookie name and attributes, signing, and hostile cookies."""

from __future__ import annotations

import hashlib
import typing as t
from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask
from flask import make_response
from flask import Response
from flask import session
from flask.testing import FlaskClient
from itsdangerous import Signer
from werkzeug.http import parse_date

from flask_prancer_session import ConfigurationError
from flask_prancer_session import CookieState
from flask_prancer_session import MemoryStore
from flask_prancer_session import PrancerSession
from flask_prancer_session.changes import Record
from flask_prancer_session.ids import is_well_formed
from flask_prancer_session.ids import new_id
from flask_prancer_session.ids import store_key

from .clock import FakeClock


class SpyStore(MemoryStore):
    """A real memory store that records the keys it is asked to fetch."""

    def __init__(self, **options: t.Any) -> None:
        super().__init__(**options)
        self.fetched: list[str] = []

    def fetch(self, key: str) -> Record | None:
        self.fetched.append(key)
        return super().fetch(key)


def set_cookies(response: t.Any) -> dict[str, tuple[str, dict[str, str | None]]]:
    """Return the response's ``Set-Cookie`` headers as name -> (value, attributes).

    Attribute names are lower-cased; flags such as ``HttpOnly`` map to ``None``.
    """
    cookies = {}
    for header in response.headers.getlist("Set-Cookie"):
        pair, *parts = header.split("; ")
        name, _, value = pair.partition("=")
        attributes: dict[str, str | None] = {}
        for part in parts:
            attribute, sep, attribute_value = part.partition("=")
            attributes[attribute.lower()] = attribute_value if sep else None
        cookies[name] = (value, attributes)
    return cookies


def psession(response: t.Any, name: str = "PSESSION") -> tuple[str, dict[str, str | None]]:
    cookies = set_cookies(response)
    assert name in cookies, response.headers
    return cookies[name]


def sign(value: str, *keys: str) -> str:
    """Sign ``value`` as :mod:`flask_prancer_session.state.cookie` does."""
    signer = Signer(
        list(keys),  # type: ignore[arg-type]
        salt="flask-prancer-session",
        key_derivation="hmac",
        digest_method=hashlib.sha256,
    )
    return signer.sign(value).decode("ascii")


def add_write_view(app: Flask) -> None:
    @app.get("/write")
    def write() -> str:
        session["n"] = session.get("n", 0) + 1
        return f"{session['n']} {session.id}"


def raw_get(app: Flask, path: str, cookie_header: str) -> t.Any:
    """GET ``path`` with exactly this ``Cookie`` header, bypassing any cookie jar
    (a client with cookies enabled replaces ``HTTP_COOKIE`` with its jar)."""
    client = app.test_client(use_cookies=False)
    return client.get(path, environ_overrides={"HTTP_COOKIE": cookie_header})


def spy_app(app: Flask) -> SpyStore:
    store = SpyStore()
    PrancerSession(app, store=store)
    add_write_view(app)
    return store


def assert_close(moment: str | None, expected: datetime) -> None:
    assert moment is not None
    parsed = parse_date(moment)
    assert parsed is not None
    assert abs((parsed - expected).total_seconds()) <= 5


# Names and attributes


def test_default_cookie(app: Flask) -> None:
    PrancerSession(app)
    add_write_view(app)
    response = app.test_client().get("/write")
    value, attributes = psession(response)
    assert value
    assert attributes == {"httponly": None, "path": "/", "samesite": "Lax"}
    assert "session" not in set_cookies(response)


def test_session_key_option(app: Flask) -> None:
    PrancerSession(app, state={"driver": "cookie", "options": {"session_key": "MYAPP"}})
    add_write_view(app)
    client = app.test_client()
    assert set(set_cookies(client.get("/write"))) == {"MYAPP"}
    assert client.get("/write").text.startswith("2 ")


def test_key_is_an_alias_of_session_key(app: Flask) -> None:
    PrancerSession(app, state={"driver": "cookie", "options": {"key": "OTHER"}})
    add_write_view(app)
    assert set(set_cookies(app.test_client().get("/write"))) == {"OTHER"}


def test_cookie_name_does_not_follow_session_cookie_name(app: Flask) -> None:
    app.config["SESSION_COOKIE_NAME"] = "flask_session"
    PrancerSession(app)
    add_write_view(app)
    assert set(set_cookies(app.test_client().get("/write"))) == {"PSESSION"}


def test_every_option_reaches_set_cookie(app: Flask) -> None:
    options = {
        "path": "/app",
        "domain": "example.org",
        "expires": 600,
        "secure": True,
        "httponly": False,
        "samesite": "strict",
        "partitioned": True,
    }
    PrancerSession(app, state={"driver": "cookie", "options": options})
    add_write_view(app)
    response = app.test_client().get("/write", base_url="https://example.org/app/")
    _, attributes = psession(response)
    assert_close(attributes.pop("expires"), datetime.now(timezone.utc) + timedelta(minutes=10))
    assert attributes == {
        "domain": "example.org",
        "secure": None,
        "path": "/app",
        "samesite": "Strict",
        "partitioned": None,
    }


@pytest.mark.parametrize(
    ("options", "flask_config", "key"),
    [
        ({"samesite": "None"}, {}, "PRANCER_SESSION.state.options.samesite"),
        (
            {"samesite": "none"},
            {"SESSION_COOKIE_SECURE": False},
            "PRANCER_SESSION.state.options.samesite",
        ),
        ({}, {"SESSION_COOKIE_SAMESITE": "None"}, "SESSION_COOKIE_SAMESITE"),
        ({"secure": False}, {"SESSION_COOKIE_SAMESITE": "None"}, "SESSION_COOKIE_SAMESITE"),
    ],
)
def test_samesite_none_needs_secure_at_init_app(
    app: Flask, options: dict[str, t.Any], flask_config: dict[str, t.Any], key: str
) -> None:
    app.config.update(flask_config)
    with pytest.raises(ConfigurationError) as caught:
        PrancerSession(app, state={"driver": "cookie", "options": options})
    assert caught.value.key == key
    assert "secure" in caught.value.message


@pytest.mark.parametrize(
    ("options", "flask_config"),
    [
        ({"samesite": "None", "secure": True}, {}),
        ({"samesite": "None"}, {"SESSION_COOKIE_SECURE": True}),
        ({"secure": True}, {"SESSION_COOKIE_SAMESITE": "None"}),
    ],
)
def test_samesite_none_with_secure_is_sent(
    app: Flask, options: dict[str, t.Any], flask_config: dict[str, t.Any]
) -> None:
    app.config.update(flask_config)
    PrancerSession(app, state={"driver": "cookie", "options": options})
    add_write_view(app)
    _, attributes = psession(app.test_client().get("/write", base_url="https://localhost/"))
    assert (attributes["samesite"], "secure" in attributes) == ("None", True)


def test_options_beat_flask_settings(app: Flask) -> None:
    app.config.update(
        SESSION_COOKIE_PATH="/flask",
        SESSION_COOKIE_DOMAIN="flask.example",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    options = {
        "path": "/mine",
        "domain": "mine.example",
        "secure": False,
        "httponly": False,
        "samesite": "Lax",
        "partitioned": False,
    }
    PrancerSession(app, state={"driver": "cookie", "options": options})
    add_write_view(app)
    _, attributes = psession(app.test_client().get("/write"))
    assert attributes == {"domain": "mine.example", "path": "/mine", "samesite": "Lax"}


def test_unset_options_fall_back_to_flask_settings(app: Flask) -> None:
    app.config.update(
        SESSION_COOKIE_PATH="/flask",
        SESSION_COOKIE_DOMAIN="flask.example",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=False,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PARTITIONED=True,
    )
    PrancerSession(app)
    add_write_view(app)
    _, attributes = psession(app.test_client().get("/write", base_url="https://flask.example/"))
    assert attributes == {
        "domain": "flask.example",
        "secure": None,
        "path": "/flask",
        "samesite": "Strict",
        "partitioned": None,
    }


def test_path_falls_back_to_application_root(app: Flask) -> None:
    app.config["APPLICATION_ROOT"] = "/root"
    PrancerSession(app)
    add_write_view(app)
    assert psession(app.test_client().get("/write"))[1]["path"] == "/root"


def test_flask_settings_are_read_per_request(app: Flask) -> None:
    PrancerSession(app)
    add_write_view(app)
    client = app.test_client()
    assert "secure" not in psession(client.get("/write"))[1]
    app.config["SESSION_COOKIE_SECURE"] = True
    client.delete_cookie("PSESSION")
    assert "secure" in psession(client.get("/write"))[1]


def test_expires_option_is_relative_to_each_response(app: Flask) -> None:
    PrancerSession(app, state={"driver": "cookie", "options": {"expires": 600}})
    add_write_view(app)
    _, attributes = psession(app.test_client().get("/write"))
    assert_close(attributes.get("expires"), datetime.now(timezone.utc) + timedelta(minutes=10))


def test_expires_option_never_outlives_the_stored_session(app: Flask) -> None:
    PrancerSession(
        app,
        state={"driver": "cookie", "options": {"expires": 86400}},
        store={"driver": "memory", "options": {"expiration_timeout": 3600}},
    )
    add_write_view(app)
    _, attributes = psession(app.test_client().get("/write"))
    assert_close(attributes.get("expires"), datetime.now(timezone.utc) + timedelta(hours=1))


def test_permanent_session_follows_permanent_session_lifetime(app: Flask) -> None:
    app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=3)
    PrancerSession(app)

    @app.get("/remember")
    def remember() -> str:
        session.permanent = True
        session["user"] = "alice"
        return ""

    add_write_view(app)
    client = app.test_client()
    _, attributes = psession(client.get("/remember"))
    assert_close(attributes.get("expires"), datetime.now(timezone.utc) + timedelta(days=3))
    # A later request that does not ask for it gets a browser-session cookie.
    client.delete_cookie("PSESSION")
    assert "expires" not in psession(client.get("/write"))[1]


def test_expire_deletes_the_cookie_with_the_same_path_and_domain(app: Flask) -> None:
    options = {"path": "/app", "domain": "example.org"}
    PrancerSession(app, state={"driver": "cookie", "options": options})
    add_write_view(app)

    @app.get("/app/logout")
    def logout() -> str:
        session.expire()
        return ""

    client = app.test_client()
    client.get("/write", base_url="http://example.org/app/")
    _, attributes = psession(client.get("/app/logout", base_url="http://example.org/"))
    assert attributes["path"] == "/app"
    assert attributes["domain"] == "example.org"
    assert attributes["max-age"] == "0"


# Signing


def test_signed_cookie_is_id_dot_signature(app: Flask) -> None:
    PrancerSession(app)
    add_write_view(app)
    response = app.test_client().get("/write")
    session_id = response.text.split()[1]
    value = psession(response)[0]
    assert value == sign(session_id, "test secret")
    assert value.startswith(session_id + ".")


def test_without_secret_key_the_cookie_is_the_bare_id(app: Flask) -> None:
    app.config["SECRET_KEY"] = None
    PrancerSession(app)
    add_write_view(app)
    client = app.test_client()
    response = client.get("/write")
    session_id = response.text.split()[1]
    assert is_well_formed(session_id)
    assert psession(response)[0] == session_id
    assert client.get("/write").text == f"2 {session_id}"


def test_a_secret_key_set_after_init_app_signs_the_ids(app: Flask) -> None:
    # As app factories that load their secrets after setting up extensions do.
    app.config["SECRET_KEY"] = None
    PrancerSession(app)
    add_write_view(app)
    app.config["SECRET_KEY"] = "set later"
    client = app.test_client()
    response = client.get("/write")
    session_id = response.text.split()[1]
    assert psession(response)[0] == sign(session_id, "set later")
    assert client.get("/write").text == f"2 {session_id}"
    client.set_cookie("PSESSION", session_id)  # the bare id, unsigned
    assert client.get("/write").text.startswith("1 ")


def test_secret_key_rotation_accepts_old_signatures(app: Flask) -> None:
    app.config["SECRET_KEY"] = "old key"
    PrancerSession(app)
    add_write_view(app)
    client = app.test_client()
    session_id = client.get("/write").text.split()[1]

    app.config.update(SECRET_KEY="new key", SECRET_KEY_FALLBACKS=["older key", "old key"])
    response = client.get("/write")
    assert response.text == f"2 {session_id}"
    # Cookies written from now on are signed with the current key.
    assert psession(response)[0] == sign(session_id, "new key")


def test_signature_from_a_dropped_key_is_rejected(app: Flask) -> None:
    app.config["SECRET_KEY"] = "old key"
    store = spy_app(app)
    client = app.test_client()
    session_id = client.get("/write").text.split()[1]
    store.fetched.clear()

    app.config["SECRET_KEY"] = "new key"
    count, new = client.get("/write").text.split()
    assert (count, store.fetched) == ("1", [])
    assert new != session_id


# Hostile cookies: a fresh session with a new server-made id, and no lookup


def hostile_values() -> dict[str, str]:
    good = new_id()
    signed = sign(good, "test secret")
    return {
        "tampered-signature": signed[:-4] + ("AAAA" if not signed.endswith("AAAA") else "BBBB"),
        "tampered-id": ("B" if good[0] != "B" else "C") + signed[1:],
        "unsigned-id": good,
        "forged-signature": f"{good}.{'A' * 43}",
        "signed-by-another-key": sign(good, "attacker key"),
        "signed-malformed-id": sign("not-an-id", "test secret"),
        "signed-traversal": sign("../../etc/passwd", "test secret"),
        "signed-id-too-long": sign(good + "A", "test secret"),
        "signed-bad-character": sign(good[:-1] + "/", "test secret"),
        "empty": "",
        "oversized": "A" * 5000,
        "oversized-signed": sign("A" * 4500, "test secret"),
        "traversal": "../../etc/passwd",
        "dot": ".",
        "only-signature": "." + signed.split(".")[1],
    }


@pytest.mark.parametrize("name", list(hostile_values()))
def test_hostile_cookie_gets_a_fresh_session_without_lookup(app: Flask, name: str) -> None:
    value = hostile_values()[name]
    store = spy_app(app)
    response = raw_get(app, "/write", f"PSESSION={value}")
    assert response.status_code == 200
    count, session_id = response.text.split()
    assert count == "1"
    assert store.fetched == []
    assert is_well_formed(session_id)
    assert session_id not in value
    assert psession(response)[0] == sign(session_id, "test secret")


def test_raw_cookie_header_reaches_the_app(app: Flask) -> None:
    """The control for the hostile-cookie tests: the same path with a good cookie."""
    store = spy_app(app)
    session_id = app.test_client().get("/write").text.split()[1]
    response = raw_get(app, "/write", f"PSESSION={sign(session_id, 'test secret')}")
    assert response.text == f"2 {session_id}"
    assert store.fetched == [store_key(session_id)]


@pytest.mark.parametrize(
    "raw",
    [
        # WSGI environ strings are latin-1 decoded bytes; these are UTF-8 and latin-1.
        "PSESSION=" + "\u00e9t\u00e9".encode().decode("latin-1"),
        "PSESSION=\u00e9" + new_id()[1:],
        'PSESSION="\\303\\251"',
    ],
    ids=["utf-8", "latin-1", "quoted-escape"],
)
def test_non_ascii_cookie_gets_a_fresh_session_without_lookup(app: Flask, raw: str) -> None:
    store = spy_app(app)
    response = raw_get(app, "/write", raw)
    assert response.status_code == 200
    assert response.text.startswith("1 ")
    assert store.fetched == []


@pytest.mark.parametrize("value", ["../../etc/passwd", "", "x" * 5000, "abc"])
def test_malformed_id_without_secret_key_is_never_looked_up(app: Flask, value: str) -> None:
    app.config["SECRET_KEY"] = None
    store = spy_app(app)
    response = raw_get(app, "/write", f"PSESSION={value}")
    assert response.status_code == 200
    count, session_id = response.text.split()
    assert count == "1"
    assert store.fetched == []
    assert psession(response)[0] == session_id != value


def test_hostile_cookie_does_not_disturb_the_real_session(app: Flask) -> None:
    store = spy_app(app)
    client = app.test_client()
    session_id = client.get("/write").text.split()[1]
    hostile = raw_get(app, "/write", "PSESSION=../x")
    assert hostile.text.split()[0] == "1"
    assert client.get("/write").text == f"2 {session_id}"
    assert len(store) == 2


def test_unknown_valid_id_is_not_adopted(app: Flask) -> None:
    """An intact cookie whose session the store no longer has (expired,
    removed) gets a new id: the client's id is looked up but never reused."""
    store = spy_app(app)
    planted = new_id()
    response = raw_get(app, "/write", f"PSESSION={sign(planted, 'test secret')}")
    count, session_id = response.text.split()
    assert count == "1"
    assert store.fetched == [store_key(planted)]
    assert session_id != planted
    assert store.fetch(store_key(planted)) is None


def test_unknown_bare_id_without_secret_key_is_not_adopted(app: Flask) -> None:
    app.config["SECRET_KEY"] = None
    store = spy_app(app)
    planted = new_id()
    response = raw_get(app, "/write", f"PSESSION={planted}")
    session_id = response.text.split()[1]
    assert store.fetched == [store_key(planted)]
    assert session_id != planted
    assert psession(response)[0] == session_id


def test_expired_session_gets_a_new_id(app: Flask, clock: FakeClock) -> None:
    store = spy_app(app)
    store.clock = clock
    client = app.test_client()
    old = client.get("/write").text.split()[1]
    clock.advance(store.expiration_timeout + 1)
    response = client.get("/write")
    count, new = response.text.split()
    assert count == "1"
    assert new != old
    assert psession(response)[0] == sign(new, "test secret")


def test_removed_session_gets_a_new_id(app: Flask) -> None:
    store = spy_app(app)
    client = app.test_client()
    old = client.get("/write").text.split()[1]
    store.remove(store_key(old))
    count, new = client.get("/write").text.split()
    assert (count, new != old) == ("1", True)


# Vary and empty sessions


def test_vary_cookie_when_the_session_is_read(app: Flask) -> None:
    PrancerSession(app)

    @app.get("/read")
    def read() -> str:
        return str(session.get("n"))

    @app.get("/untouched")
    def untouched() -> str:
        return "static"

    client = app.test_client()
    assert "Cookie" in client.get("/read").vary
    assert "Cookie" not in client.get("/untouched").vary


@pytest.mark.parametrize(
    ("vary", "expected"),
    [
        ("Accept-Encoding", "Accept-Encoding, Cookie"),
        ("Cookie", "Cookie"),
        ("accept-language, cookie", "accept-language, cookie"),
    ],
)
def test_vary_cookie_joins_the_views_own_vary(app: Flask, vary: str, expected: str) -> None:
    PrancerSession(app)

    @app.get("/read")
    def read() -> Response:
        response = make_response(str(session.get("n")))
        response.headers["Vary"] = vary
        return response

    assert app.test_client().get("/read").headers.getlist("Vary") == [expected]


def test_vary_cookie_when_the_session_is_written(app: Flask) -> None:
    PrancerSession(app)
    add_write_view(app)
    assert "Cookie" in app.test_client().get("/write").vary


def test_untouched_view_leaves_a_live_session_alone(app: Flask) -> None:
    PrancerSession(app)
    add_write_view(app)

    @app.get("/untouched")
    def untouched() -> str:
        return "static"

    client = app.test_client()
    client.get("/write")
    response = client.get("/untouched")
    assert "Vary" not in response.headers
    assert "Set-Cookie" not in response.headers


def test_empty_session_sets_no_cookie_and_stores_nothing(app: Flask) -> None:
    PrancerSession(app)
    store = app.extensions["prancer_session"].store
    assert isinstance(store, MemoryStore)

    @app.get("/read")
    def read() -> str:
        return f"{session.get('n')} {'n' in session} {len(session)}"

    @app.get("/set-and-remove")
    def set_and_remove() -> str:
        session["n"] = 1
        del session["n"]
        return ""

    client = app.test_client()
    for path in ("/read", "/set-and-remove", "/read"):
        response = client.get(path)
        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
    assert client.get_cookie("PSESSION") is None
    assert len(store) == 0


def test_hostile_cookie_on_a_read_only_view_sets_nothing(app: Flask) -> None:
    store = spy_app(app)

    @app.get("/read")
    def read() -> str:
        return str(session.get("n"))

    response = raw_get(app, "/read", "PSESSION=../../etc/passwd")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers
    assert len(store) == 0


# Option checking


@pytest.mark.parametrize(
    ("options", "name"),
    [
        ({"session_key": "has space"}, "session_key"),
        ({"session_key": "semi;colon"}, "session_key"),
        ({"session_key": ""}, "session_key"),
        ({"session_key": 5}, "session_key"),
        ({"key": "a=b"}, "key"),
        ({"session_key": "A", "key": "B"}, "key"),
        ({"path": 1}, "path"),
        ({"domain": ["example.org"]}, "domain"),
        ({"expires": 0}, "expires"),
        ({"expires": -5}, "expires"),
        ({"expires": "3600"}, "expires"),
        ({"expires": True}, "expires"),
        ({"expires": float("inf")}, "expires"),
        ({"expires": float("nan")}, "expires"),
        ({"secure": "yes"}, "secure"),
        ({"secure": 1}, "secure"),
        ({"httponly": "false"}, "httponly"),
        ({"partitioned": 0}, "partitioned"),
        ({"samesite": "sideways"}, "samesite"),
        ({"samesite": True}, "samesite"),
        ({"samesite": "None", "secure": False}, "samesite"),
    ],
)
def test_bad_option_names_its_key(app: Flask, options: dict[str, t.Any], name: str) -> None:
    app.config["PRANCER_SESSION"] = {"state": {"driver": "cookie", "options": options}}
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == f"PRANCER_SESSION.state.options.{name}"
    assert "prancer_session" not in app.extensions


def test_unknown_option_names_its_key(app: Flask) -> None:
    app.config["PRANCER_SESSION"] = {"state": {"options": {"max_age": 10}}}
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == "PRANCER_SESSION.state.options.max_age"
    assert "session_key" in str(info.value)


@pytest.mark.parametrize("samesite", ["lax", "LAX", "Strict", "none"])
def test_samesite_is_case_insensitive(samesite: str) -> None:
    state = CookieState(samesite=samesite, secure=True)
    assert state.samesite == samesite.capitalize()


def test_samesite_none_is_sent_with_secure(app: Flask) -> None:
    options = {"samesite": "None", "secure": True}
    PrancerSession(app, state={"driver": "cookie", "options": options})
    add_write_view(app)
    _, attributes = psession(app.test_client().get("/write", base_url="https://localhost/"))
    assert attributes["samesite"] == "None"
    assert "secure" in attributes


def test_client_keeps_the_signed_cookie(app: Flask) -> None:
    PrancerSession(app)
    add_write_view(app)
    client: FlaskClient = app.test_client()
    session_id = client.get("/write").text.split()[1]
    cookie = client.get_cookie("PSESSION")
    assert cookie is not None
    assert cookie.value == sign(session_id, "test secret")


def test_ids_are_signed_as_itsdangerous_signs_them(app: Flask) -> None:
    # Cookies issued before the signing moved to one hmac call still open
    # their sessions, and the other way round.
    import hashlib

    from itsdangerous import Signer

    from flask_prancer_session.ids import new_id
    from flask_prancer_session.state.signed import SALT

    app.config["SECRET_KEY_FALLBACKS"] = ["an old secret"]
    PrancerSession(app)
    state = app.session_interface.state  # type: ignore[attr-defined]
    theirs = Signer(
        ["an old secret", app.secret_key],
        salt=SALT,
        key_derivation="hmac",
        digest_method=hashlib.sha256,
    )
    session_id = new_id()
    assert state.sign(app, session_id) == theirs.sign(session_id).decode()
    old = Signer(
        "an old secret", salt=SALT, key_derivation="hmac", digest_method=hashlib.sha256
    ).sign(session_id)
    assert state.id_from(app, old.decode()) == session_id
    assert theirs.unsign(state.sign(app, session_id)).decode() == session_id
    signed = state.sign(app, session_id)
    tampered = signed[:-1] + ("A" if signed[-1] != "A" else "B")
    assert state.id_from(app, tampered) is None
    assert state.id_from(app, session_id + ".") is None
    assert state.id_from(app, session_id) is None  # unsigned, where a key is set


def test_the_signature_is_checked_only_when_the_view_uses_the_session(app: Flask) -> None:
    from flask_prancer_session import CookieState

    checked: list[str] = []

    class CountingCookieState(CookieState):
        def id_from(self, app: Flask, value: str) -> str | None:
            checked.append(value)
            return super().id_from(app, value)

    PrancerSession(app, state=CountingCookieState())
    app.add_url_rule("/count", "count", lambda: str(session.setdefault("n", 1)))
    app.add_url_rule("/health", "health", lambda: "ok")
    client = app.test_client()
    client.get("/count")
    checked.clear()
    for _ in range(3):
        assert client.get("/health").text == "ok"
    assert checked == []
    assert client.get("/count").text == "1"
    assert len(checked) == 1
