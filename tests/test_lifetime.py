"""One lifetime model for cookie and store: idle, permanent, per-session and
absolute timeouts, over every store."""

from __future__ import annotations

from datetime import datetime
from datetime import timedelta
from datetime import timezone

import pytest
from flask import Flask
from flask import request
from flask import session
from flask.testing import FlaskClient

from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .clock import FakeClock
from .stores import EVERY_STORE

DAY = 86400.0


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def cookie_expiry(client: FlaskClient) -> datetime | None:
    cookie = client.get_cookie("PSESSION")
    assert cookie is not None
    return cookie.expires


def stored_expiry(store: StoreDriver, session_id: str) -> float | None:
    record = store.fetch(store_key(session_id))
    return None if record is None else record.expires_at


@pytest.fixture
def views(store_app: Flask) -> Flask:
    store_app.config["PERMANENT_SESSION_LIFETIME"] = timedelta(days=14)

    @store_app.get("/count")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return f"{session['n']} {session.id}"

    @store_app.get("/read")
    def read() -> str:
        return f"{session.get('n')} {session.id}"

    @store_app.get("/permanent/<int:on>")
    def permanent(on: int) -> str:
        session.permanent = bool(on)
        session["n"] = session.get("n", 0) + 1
        return f"{session['n']} {session.id}"

    return store_app


def test_a_session_that_is_not_permanent_has_a_browser_cookie(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    session_id = client.get("/count").text.split()[1]
    assert cookie_expiry(client) is None
    assert stored_expiry(store, session_id) == clock.now + store.expiration_timeout
    clock.advance(store.expiration_timeout + 1)
    assert client.get("/count").text.split()[0] == "1"


def test_a_permanent_session_lives_as_long_as_its_cookie(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    session_id = client.get("/permanent/1").text.split()[1]
    assert cookie_expiry(client) == at(clock.now + 14 * DAY)
    assert stored_expiry(store, session_id) == clock.now + 14 * DAY
    # Far past the idle timeout of sessions that are not permanent.
    clock.advance(3 * DAY)
    assert client.get("/count").text == f"2 {session_id}"
    assert cookie_expiry(client) == at(clock.now + 14 * DAY)
    assert stored_expiry(store, session_id) == clock.now + 14 * DAY


def test_permanent_timeout_overrides_the_flask_lifetime(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    store.permanent_timeout = 2 * DAY
    session_id = client.get("/permanent/1").text.split()[1]
    assert cookie_expiry(client) == at(clock.now + 2 * DAY)
    assert stored_expiry(store, session_id) == clock.now + 2 * DAY


def test_absolute_timeout_caps_cookie_and_store(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    store.absolute_timeout = DAY
    created = clock.now
    session_id = client.get("/permanent/1").text.split()[1]
    assert cookie_expiry(client) == at(created + DAY)
    assert stored_expiry(store, session_id) == created + DAY
    clock.advance(DAY)
    assert client.get("/read").text.split()[0] == "None"


def test_leaving_permanence_turns_the_cookie_into_a_browser_cookie(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    client.get("/permanent/1")
    assert cookie_expiry(client) is not None
    session_id = client.get("/permanent/0").text.split()[1]
    assert cookie_expiry(client) is None
    assert stored_expiry(store, session_id) == clock.now + store.expiration_timeout


@pytest.mark.parametrize("refresh", [True, False])
def test_refresh_each_request_resends_a_permanent_cookie(
    views: Flask, client: FlaskClient, refresh: bool
) -> None:
    views.config["SESSION_REFRESH_EACH_REQUEST"] = refresh
    client.get("/permanent/1")
    response = client.get("/read")
    assert ("PSESSION=" in response.headers.get("Set-Cookie", "")) is refresh


def test_a_change_resends_a_permanent_cookie_without_refresh_each_request(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    # As Flask does: the store's expiry slides with the change, and the
    # browser must keep the cookie as long.
    views.config["SESSION_REFRESH_EACH_REQUEST"] = False
    session_id = client.get("/permanent/1").text.split()[1]
    clock.advance(DAY)
    response = client.get("/count")
    assert "PSESSION=" in response.headers.get("Set-Cookie", "")
    assert cookie_expiry(client) == at(clock.now + 14 * DAY)
    assert stored_expiry(store, session_id) == clock.now + 14 * DAY


def test_a_touch_resends_a_permanent_cookie_without_refresh_each_request(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    views.config["SESSION_REFRESH_EACH_REQUEST"] = False
    session_id = client.get("/permanent/1").text.split()[1]
    assert "Set-Cookie" not in client.get("/read").headers  # the expiry did not move
    clock.advance(DAY)
    assert "PSESSION=" in client.get("/read").headers.get("Set-Cookie", "")
    assert cookie_expiry(client) == at(clock.now + 14 * DAY)
    assert stored_expiry(store, session_id) == clock.now + 14 * DAY


def test_a_view_that_never_touches_the_session_leaves_it_alone(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    keep_alive = False

    @views.get("/plain")
    def plain() -> str:
        return "plain"

    # The README's recipe to count every request as activity.
    @views.before_request
    def count_every_request_as_activity() -> None:
        if keep_alive:
            session.permanent  # noqa: B018 (loading the session is the point)

    session_id = client.get("/permanent/1").text.split()[1]
    created = stored_expiry(store, session_id)
    clock.advance(DAY)
    response = client.get("/plain")
    assert "Set-Cookie" not in response.headers and "Vary" not in response.headers
    assert stored_expiry(store, session_id) == created

    keep_alive = True
    response = client.get("/plain")
    assert "PSESSION=" in response.headers.get("Set-Cookie", "")
    assert cookie_expiry(client) == at(clock.now + 14 * DAY)
    assert stored_expiry(store, session_id) == clock.now + 14 * DAY


def test_a_browser_cookie_is_sent_only_when_it_changes(views: Flask, client: FlaskClient) -> None:
    assert "Set-Cookie" in client.get("/count").headers
    assert "Set-Cookie" not in client.get("/count").headers
    assert "Set-Cookie" not in client.get("/read").headers


def test_a_read_only_request_slides_the_expiry(
    views: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    session_id = client.get("/count").text.split()[1]
    clock.advance(store.expiration_timeout - 10)
    client.get("/read")
    assert stored_expiry(store, session_id) == clock.now + store.expiration_timeout
    clock.advance(store.expiration_timeout - 10)
    assert client.get("/read").text == f"1 {session_id}"


@pytest.mark.parametrize(
    "lifetime", [7200, 7200.0, timedelta(hours=2)], ids=["int", "float", "timedelta"]
)
def test_set_expiry_gives_a_session_its_own_idle_timeout(
    store_app: Flask,
    client: FlaskClient,
    store: StoreDriver,
    clock: FakeClock,
    lifetime: float | timedelta,
) -> None:
    @store_app.get("/remember")
    def remember() -> str:
        session.set_expiry(lifetime)
        session["user"] = "ann"
        return session.id

    @store_app.get("/who")
    def who() -> str:
        return str(session.get("user"))

    session_id = client.get("/remember").text
    assert cookie_expiry(client) == at(clock.now + 7200)
    assert stored_expiry(store, session_id) == clock.now + 7200
    clock.advance(7000)
    assert client.get("/who").text == "ann"
    assert stored_expiry(store, session_id) == clock.now + 7200
    clock.advance(7200)
    assert client.get("/who").text == "None"


def test_set_expiry_at_a_moment_does_not_slide(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    end = clock.now + 5000

    @store_app.get("/until")
    def until() -> str:
        session.set_expiry(at(end))
        session["user"] = "ann"
        return session.id

    @store_app.get("/who")
    def who() -> str:
        session["seen"] = session.get("seen", 0) + 1
        return str(session.get("user"))

    session_id = client.get("/until").text
    assert cookie_expiry(client) == at(end)
    clock.advance(4000)
    assert client.get("/who").text == "ann"
    assert stored_expiry(store, session_id) == pytest.approx(end)
    clock.advance(1001)
    assert client.get("/who").text == "None"


def test_set_expiry_none_goes_back_to_the_app_lifetime(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    @store_app.get("/expiry/<int:seconds>")
    def expiry(seconds: int) -> str:
        session.set_expiry(seconds or None)
        session["user"] = "ann"
        return session.id

    client.get("/expiry/7200")
    session_id = client.get("/expiry/0").text
    assert cookie_expiry(client) is None
    assert stored_expiry(store, session_id) == clock.now + store.expiration_timeout


@pytest.mark.parametrize("bad", [0, -1, timedelta(0), True, "3600"])
def test_set_expiry_refuses_what_is_not_a_positive_duration(
    store_app: Flask, client: FlaskClient, bad: object
) -> None:
    @store_app.get("/bad")
    def set_bad() -> str:
        with pytest.raises((ValueError, TypeError)):
            session.set_expiry(bad)  # type: ignore[arg-type]
        return "ok"

    assert client.get("/bad").text == "ok"


def test_created_at_and_expires_at_are_readable(
    views: Flask, store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    @store_app.get("/times")
    def times() -> dict[str, object]:
        created, expires = session.created_at, session.expires_at
        return {
            "created": None if created is None else created.timestamp(),
            "expires": None if expires is None else expires.timestamp(),
        }

    start = clock.now
    assert client.get("/times").json == {"created": None, "expires": None}
    client.get("/count")
    clock.advance(100)
    assert client.get("/times").json == {
        "created": start,
        "expires": clock.now + store.expiration_timeout,
    }


@pytest.mark.stores(*EVERY_STORE)
def test_bots_and_health_checks_store_no_session(store_app: Flask, store: StoreDriver) -> None:
    # The common idiom: every session permanent, set before each request.
    @store_app.before_request
    def make_permanent() -> None:
        session.permanent = True

    @store_app.get("/health")
    def health() -> str:
        if "touch" in request.args:
            session.modified = True
            session.set_expiry(3600)
        return session.id

    @store_app.get("/login")
    def login() -> str:
        session["user"] = "ann"
        return session.id

    bot = store_app.test_client(use_cookies=False)
    ids = []
    for query in ["", "?touch"] * 10:
        response = bot.get(f"/health{query}")
        assert "Set-Cookie" not in response.headers
        ids.append(response.text)
    assert all(store.fetch(store_key(session_id)) is None for session_id in ids)
    try:
        assert list(store.scan()) == []
    except NotImplementedError:
        pass

    visitor = store_app.test_client()
    response = visitor.get("/login")
    assert "Expires=" in response.headers["Set-Cookie"]  # permanent, as asked
    record = store.fetch(store_key(response.text))
    assert record is not None
    assert set(record.data) == {"_permanent", "user"}


@pytest.mark.stores(*EVERY_STORE)
def test_bots_store_no_session_behind_flask_login(store_app: Flask, store: StoreDriver) -> None:
    # Flask-Login's session protection marks a session that holds anything
    # (here _permanent) and no login as not fresh: still nothing to store.
    from flask_login import current_user
    from flask_login import LoginManager

    LoginManager(store_app).user_loader(lambda user_id: None)

    @store_app.before_request
    def make_permanent() -> None:
        session.permanent = True

    @store_app.get("/")
    def index() -> str:
        return "user" if current_user.is_authenticated else "anonymous"

    bot = store_app.test_client(use_cookies=False)
    for _ in range(5):
        response = bot.get("/")
        assert response.text == "anonymous"
        assert "Set-Cookie" not in response.headers
    try:
        assert list(store.scan()) == []
    except NotImplementedError:
        pass


@pytest.mark.stores(*EVERY_STORE)
def test_polling_often_or_under_a_new_id_does_not_keep_a_session_alive(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock
) -> None:
    from flask_prancer_session import no_refresh

    @store_app.get("/login")
    def login() -> str:
        session["user"] = "ann"
        return session.id

    @store_app.get("/poll")
    @no_refresh
    def poll() -> str:
        session["polls"] = session.get("polls", 0) + 1
        if "new-id" in request.args:
            session.regenerate()
        return session.id

    session_id = client.get("/login").text
    record = store.fetch(store_key(session_id))
    assert record is not None
    expires_at = record.expires_at
    # A new id is not a longer life.
    clock.advance(100)
    session_id = client.get("/poll?new-id").text
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert record.expires_at == pytest.approx(expires_at, abs=0.25)
    # Nor is polling more than once a second near the end.
    clock.advance(expires_at - clock.now - 1.5)
    for _ in range(2):
        clock.advance(0.5)
        assert client.get("/poll").text == session_id
        record = store.fetch(store_key(session_id))
        assert record is not None
        assert record.expires_at == pytest.approx(expires_at, abs=0.25)
    clock.advance(1)
    assert store.fetch(store_key(session_id)) is None


@pytest.mark.stores(*EVERY_STORE)
@pytest.mark.parametrize("how", ["decorator", "per request"])
def test_polling_does_not_keep_an_idle_session_alive(
    store_app: Flask, client: FlaskClient, store: StoreDriver, clock: FakeClock, how: str
) -> None:
    from flask_prancer_session import no_refresh

    @store_app.get("/login")
    def login() -> str:
        session.permanent = True
        session["user"] = "ann"
        return session.id

    def poll() -> str:
        if how == "per request":
            session.no_refresh()
        # Read, and write too: neither extends the session.
        session["polls"] = session.get("polls", 0) + 1
        return f"{session.get('user')} {session['polls']}"

    store_app.permanent_session_lifetime = timedelta(hours=1)
    store_app.add_url_rule("/poll", "poll", no_refresh(poll) if how == "decorator" else poll)
    store_app.add_url_rule("/page", "page", lambda: str(session.get("user")))

    session_id = client.get("/login").text
    record = store.fetch(store_key(session_id))
    assert record is not None
    expires_at = record.expires_at
    polls = 0
    while clock.now + 600 < expires_at:
        clock.advance(600)
        response = client.get("/poll")
        polls += 1
        assert response.text == f"ann {polls}"
        assert "Set-Cookie" not in response.headers  # the cookie is not refreshed
        record = store.fetch(store_key(session_id))
        assert record is not None
        assert record.expires_at == pytest.approx(expires_at, abs=1)
    clock.advance(600)
    assert client.get("/poll").text == "None 1"  # expired: the visitor is logged out
    assert polls == 5

    # A page the visitor opens extends the session, as before.
    client.get("/login")
    clock.advance(600)
    assert client.get("/page").text == "ann"
