"""Encryption at rest, over every store."""

from __future__ import annotations

import secrets
import typing as t

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient

from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.encryption import Encryptor
from flask_prancer_session.encryption import PREFIX
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .stores import EVERY_STORE
from .stores import PERSISTENT_STORES
from .stores import StoreMaker

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)

SECRET = "the answer is 42"


def new_key() -> str:
    return secrets.token_urlsafe(32)


def make_app(store: StoreDriver, keys: list[str]) -> Flask:
    app = Flask(__name__)
    app.config.update(
        TESTING=True, SECRET_KEY="test secret", PRANCER_SESSION={"encryption": {"keys": keys}}
    )
    PrancerSession(app, store=store)

    @app.get("/write")
    def write() -> str:
        session["secret"] = SECRET
        session["cart"] = ["apple", {"n": 1}]
        session.bind_user("ann")
        return session.id

    @app.get("/read")
    def read() -> str:
        return f"{session.get('secret')} {session.get('cart')}"

    return app


def copy_cookie(source: FlaskClient, target: FlaskClient) -> None:
    cookie = source.get_cookie("PSESSION")
    assert cookie is not None
    target.set_cookie("PSESSION", cookie.value)


def test_the_store_holds_no_readable_value(store: StoreDriver) -> None:
    client = make_app(store, [new_key()]).test_client()
    session_id = client.get("/write").text
    assert client.get("/read").text == f"{SECRET} ['apple', {{'n': 1}}]"
    record = store.fetch(store_key(session_id))
    assert record is not None
    stored = " ".join(record.data.values())
    assert SECRET not in stored and "apple" not in stored
    sealed = {name: value for name, value in record.data.items() if name != USER_KEY}
    assert all(value.startswith(PREFIX) for value in sealed.values())
    assert record.data[USER_KEY] == '"ann"'  # readable for "log out everywhere"


@pytest.mark.parametrize("make_store", PERSISTENT_STORES, indirect=True)
def test_keys_rotate_and_rekey_reseals(make_store: StoreMaker) -> None:
    old, new = new_key(), new_key()
    writer = make_app(make_store(), [old]).test_client()
    session_id = writer.get("/write").text

    store = make_store()
    rotated = make_app(store, [new, old])
    reader = rotated.test_client()
    copy_cookie(writer, reader)
    assert reader.get("/read").text.startswith(SECRET)

    result = rotated.test_cli_runner().invoke(args=["session", "rekey"])
    if result.exit_code == 1 and "cannot list" in result.output:
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    assert result.exit_code == 0, result.output
    assert result.output.endswith("Re-encrypted 1 session.\n")
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert all(
        Encryptor([new]).is_current(value)
        for name, value in record.data.items()
        if name != USER_KEY
    )

    only_new = make_app(make_store(), [new]).test_client()
    copy_cookie(writer, only_new)
    assert only_new.get("/read").text.startswith(SECRET)


@pytest.mark.parametrize("make_store", PERSISTENT_STORES, indirect=True)
def test_a_value_sealed_with_an_unknown_key_is_dropped(
    make_store: StoreMaker, caplog: pytest.LogCaptureFixture
) -> None:
    writer = make_app(make_store(), [new_key()]).test_client()
    writer.get("/write")
    stranger = make_app(make_store(), [new_key()]).test_client()
    copy_cookie(writer, stranger)
    response = stranger.get("/read")
    assert (response.status_code, response.text) == (200, "None None")
    assert "sealed with a key that is not configured" in caplog.text


def test_a_tampered_or_plain_value_is_never_read(
    store: StoreDriver, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_prancer_session import ChangeSet

    client = make_app(store, [new_key()]).test_client()
    session_id = client.get("/write").text
    record = store.fetch(store_key(session_id))
    assert record is not None
    token = record.data["secret"]
    middle = len(token) // 2
    flipped = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    store.apply(store_key(session_id), ChangeSet({"secret": flipped, "cart": '["planted"]'}))
    assert client.get("/read").text == "None None"
    assert "altered" in caplog.text
    assert "not encrypted" in caplog.text


@pytest.mark.parametrize("lifetime_key", ["_permanent", "_prancer_expiry"])
def test_an_unreadable_lifetime_value_never_locks_the_visitor_out(
    store: StoreDriver, lifetime_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Turning encryption on, dropping a key before rekey, or tampering leaves
    # a lifetime flag that cannot be opened; saves read it on every request.
    plain = Flask(__name__)
    plain.config.update(TESTING=True, SECRET_KEY="test secret")
    PrancerSession(plain, store=store)

    @plain.get("/start")
    def start() -> str:
        session.permanent = True
        session.set_expiry(3600)
        session["n"] = 1
        return session.id

    writer = plain.test_client()
    session_id = writer.get("/start").text
    key = new_key()
    sealed = make_app(store, [key])

    @sealed.get("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return f"{session['n']} {session.permanent}"

    reader = sealed.test_client()
    copy_cookie(writer, reader)
    record = store.fetch(store_key(session_id))
    assert record is not None
    # Only the lifetime value is unreadable; the others are sealed properly.
    sealer = Encryptor([key])
    reseal = {name: sealer.seal(value, name) for name, value in record.data.items()}
    from flask_prancer_session import ChangeSet

    store.apply(
        store_key(session_id), ChangeSet(reseal | {lifetime_key: record.data[lifetime_key]})
    )
    responses = [reader.get("/count") for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert f"Dropping session key {lifetime_key!r}" in caplog.text
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert lifetime_key not in record.data


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"keys": []}, "PRANCER_SESSION.encryption.keys"),
        ({"keys": "abc"}, "PRANCER_SESSION.encryption.keys"),
        ({"keys": ["short"]}, "PRANCER_SESSION.encryption.keys.0"),
        ({"keys": [new_key(), b"x" * 31]}, "PRANCER_SESSION.encryption.keys.1"),
        # Junk mixed into the base64 is not skipped over.
        ({"keys": [new_key()[:20] + "!*" + new_key()[20:41]]}, "PRANCER_SESSION.encryption.keys.0"),
        ({"keys": [" " + new_key()]}, "PRANCER_SESSION.encryption.keys.0"),
        ({"keys": [new_key() + "\n"]}, "PRANCER_SESSION.encryption.keys.0"),
        ({"keys": [new_key()[:42] + "B"]}, "PRANCER_SESSION.encryption.keys.0"),
        # Keys without entropy.
        ({"keys": ["A" * 43]}, "PRANCER_SESSION.encryption.keys.0"),
        ({"keys": [bytes(32)]}, "PRANCER_SESSION.encryption.keys.0"),
        ({"keys": [b"password" * 4]}, "PRANCER_SESSION.encryption.keys.0"),
        (
            {"keys": [new_key()], "accept_plaintext": "yes"},
            "PRANCER_SESSION.encryption.accept_plaintext",
        ),
        ({"key": new_key()}, "PRANCER_SESSION.encryption"),
        ("secret", "PRANCER_SESSION.encryption"),
    ],
)
def test_bad_encryption_config_names_the_key(app: Flask, section: t.Any, key: str) -> None:
    app.config["PRANCER_SESSION"] = {"encryption": section}
    with pytest.raises(ConfigurationError) as caught:
        PrancerSession(app)
    assert caught.value.key == key


def test_raw_keys_and_padded_base64_are_accepted(app: Flask) -> None:
    import base64

    raw = secrets.token_bytes(32)
    padded = base64.urlsafe_b64encode(raw).decode()
    assert padded.endswith("=")
    app.config["PRANCER_SESSION"] = {"encryption": {"keys": [raw, padded]}}
    PrancerSession(app)

    @app.get("/write")
    def write() -> str:
        session["secret"] = SECRET
        return session.id

    session_id = app.test_client().get("/write").text
    store = app.session_interface.store  # type: ignore[attr-defined]
    record = store.fetch(store_key(session_id))
    # Sealed with the raw key, opened by the same key given as text.
    assert Encryptor([padded]).open(record.data["secret"], "secret") == '"the answer is 42"'


@pytest.mark.parametrize("make_store", PERSISTENT_STORES, indirect=True)
def test_accept_plaintext_keeps_visitors_logged_in_until_rekey(make_store: StoreMaker) -> None:
    plain = Flask(__name__)
    plain.config.update(TESTING=True, SECRET_KEY="test secret")
    PrancerSession(plain, store=make_store())

    @plain.get("/write")
    def write() -> str:
        session["secret"] = SECRET
        session["cart"] = ["apple", {"n": 1}]
        return session.id

    writer = plain.test_client()
    session_id = writer.get("/write").text

    key = new_key()
    store = make_store()
    app = make_app(store, [key])
    transition = Flask(__name__)
    transition.config.update(
        TESTING=True,
        SECRET_KEY="test secret",
        PRANCER_SESSION={"encryption": {"keys": [key], "accept_plaintext": True}},
    )
    PrancerSession(transition, store=store)
    transition.add_url_rule("/read", "read", lambda: f"{session.get('secret')}")
    reader = transition.test_client()
    copy_cookie(writer, reader)
    assert reader.get("/read").text == SECRET

    result = transition.test_cli_runner().invoke(args=["session", "rekey"])
    if result.exit_code == 1 and "cannot list" in result.output:
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    assert result.output.endswith("Re-encrypted 1 session.\n"), result.output
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert all(value.startswith(PREFIX) for value in record.data.values())
    # Without the transition setting the sealed values are read as before.
    strict = app.test_client()
    copy_cookie(writer, strict)
    assert strict.get("/read").text.startswith(SECRET)


def test_rekey_without_encryption_says_so(app: Flask) -> None:
    PrancerSession(app)
    result = app.test_cli_runner().invoke(args=["session", "rekey"])
    assert result.exit_code == 1
    assert "Encryption is not configured" in result.output


def test_rekey_leaves_no_old_version_in_a_storable_file(tmp_path: t.Any) -> None:
    """The storable store keeps earlier versions in a session's file; after
    ``rekey`` neither the clear values stored before encryption was turned on
    nor those sealed with a retired key are anywhere in it."""
    from flask_prancer_session import StorableStore

    directory = str(tmp_path / "sessions")
    plain = Flask(__name__)
    plain.config.update(TESTING=True, SECRET_KEY="test secret")
    PrancerSession(plain, store=StorableStore(dir=directory))

    @plain.get("/write")
    def write() -> str:
        session["secret"] = SECRET
        session["n"] = session.get("n", 0) + 1
        return session.id

    writer = plain.test_client()
    session_id = writer.get("/write").text
    writer.get("/write")  # a second version, appended
    path = tmp_path / "sessions" / store_key(session_id)[:2] / store_key(session_id)
    assert SECRET.encode() in path.read_bytes()

    old, new = new_key(), new_key()
    store = StorableStore(dir=directory)
    for keys in ([old], [new, old]):
        sealed = make_app(store, keys)
        result = sealed.test_cli_runner().invoke(args=["session", "rekey"])
        assert result.output.endswith("Re-encrypted 1 session.\n")
    content = path.read_bytes()
    assert SECRET.encode() not in content
    # One version, sealed with the new key: the earlier ones went.
    assert content.count(b"\n") == 1
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert all(Encryptor([new]).is_current(value) for value in record.data.values())

    reader = make_app(store, [new]).test_client()
    copy_cookie(writer, reader)
    assert reader.get("/read").text.startswith(SECRET)


@pytest.mark.parametrize("make_store", PERSISTENT_STORES, indirect=True)
def test_rekey_never_undoes_a_logout_that_lands_during_it(
    make_store: StoreMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = new_key(), new_key()
    store = make_store()
    app = make_app(store, [new, old])

    @app.post("/logout")
    def logout() -> str:
        session.unbind_user()
        session.pop("secret")
        session["cart"] = ["emptied"]
        return "bye"

    writer = make_app(make_store(), [old]).test_client()
    session_id = writer.get("/write").text
    client = app.test_client()
    copy_cookie(writer, client)
    real_scan = store.scan

    def scan_then_log_out() -> t.Iterator[tuple[str, t.Any]]:
        for item in real_scan():
            # rekey has read the session; the visitor logs out before it writes.
            assert client.post("/logout").text == "bye"
            yield item

    monkeypatch.setattr(store, "scan", scan_then_log_out)
    result = app.test_cli_runner().invoke(args=["session", "rekey"])
    if result.exit_code == 1 and "cannot list" in result.output:
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    assert result.exit_code == 0, result.output
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert set(record.data) == {"cart"}
    assert Encryptor([new]).open(record.data["cart"], "cart") == '["emptied"]'
    if store.indexes_users:
        assert store.sessions_of("ann") == {}


@pytest.mark.parametrize("make_store", PERSISTENT_STORES, indirect=True)
def test_rekey_leaves_no_expired_session_behind(make_store: StoreMaker, clock: t.Any) -> None:
    old, new = new_key(), new_key()
    store = make_store()
    if store.expires_natively:
        pytest.skip(f"{type(store).__name__}'s backend deletes expired sessions by its own clock")
    writer = make_app(store, [old]).test_client()
    session_id = writer.get("/write").text
    clock.advance(store.expiration_timeout + 1)
    result = make_app(store, [new]).test_cli_runner().invoke(args=["session", "rekey"])
    if result.exit_code == 1 and "cannot list" in result.output:
        pytest.skip(f"{type(store).__name__} cannot list its sessions")
    assert result.exit_code == 0, result.output
    clock.advance(-store.expiration_timeout - 1)
    # Read back as it was stored, expired or not: nothing sealed with the
    # retired key is left.
    assert store.fetch(store_key(session_id)) is None
