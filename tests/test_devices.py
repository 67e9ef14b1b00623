"""The devices page: what a session bound to a user records of its device."""

from __future__ import annotations

import typing as t
from datetime import datetime
from datetime import timezone

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session import session
from flask_prancer_session.devices import coarse_network
from flask_prancer_session.devices import DEVICE_KEY
from flask_prancer_session.devices import summarise_user_agent
from flask_prancer_session.ids import store_key
from flask_prancer_session.store.base import StoreDriver

from .clock import FakeClock
from .stores import EVERY_STORE

#: Every test here runs on every store: the store matters.
pytestmark = pytest.mark.stores(*EVERY_STORE)

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)


@pytest.mark.parametrize(
    ("header", "browser", "system"),
    [
        (FIREFOX_LINUX, "Firefox 128", "Linux"),
        (SAFARI_IPHONE, "Safari 17", "iOS"),
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge 126",
            "Windows",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/126.0.6478.71 Mobile Safari/537.36",
            "Chrome 126",
            "Android 14",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML,"
            " like Gecko) Version/17.4 Safari/605.1.15",
            "Safari 17",
            "macOS",
        ),
        ("curl/8.5.0", "curl 8", None),
        ("Edg/" + "9" * 500, "Edge 9999", None),  # labels stay short
        ("", None, None),
        ("x" * 100_000, None, None),
    ],
)
def test_user_agents_are_summarised(header: str, browser: str, system: str | None) -> None:
    assert summarise_user_agent(header) == (browser, system)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("2001:db8:1234:5678::1", "2001:db8:1234::/48"),
        ("::ffff:198.51.100.9", "198.51.100.0/24"),
        # 6to4 and Teredo addresses carry the client's IPv4 address.
        ("2002:cb00:7109::1", "203.0.113.0/24"),
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "192.0.2.0/24"),
        ("not an address", None),
        (None, None),
    ],
)
def test_networks_are_coarse(address: str | None, network: str | None) -> None:
    assert coarse_network(address) == network


def devices_app(app: Flask, store: StoreDriver, devices: t.Any = True) -> Flask:
    app.config["PRANCER_SESSION"] = {"devices": devices}
    PrancerSession(app, store=store)

    @app.post("/login/<user>")
    def login(user: str) -> str:
        session.regenerate()
        session.bind_user(user)
        return session.id

    @app.post("/logout")
    def logout() -> str:
        session.unbind_user()
        return session.id

    @app.get("/page")
    def page() -> str:
        return str(session.user_id)

    @app.post("/cart")
    def cart() -> str:
        session["cart"] = ["apple"]
        return session.id

    return app


def visit(client: FlaskClient, method: str, path: str, agent: str = FIREFOX_LINUX) -> str:
    response = client.open(
        path,
        method=method,
        headers={"User-Agent": agent},
        environ_base={"REMOTE_ADDR": "203.0.113.77"},
    )
    assert response.status_code == 200, response.text
    return response.text


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def require_users(store: StoreDriver) -> None:
    if not store.indexes_users:
        pytest.skip(f"{type(store).__name__} does not index sessions by user")


def test_the_devices_page_sees_each_device(
    app: Flask, store: StoreDriver, clock: FakeClock
) -> None:
    require_users(store)
    app = devices_app(app, store)
    laptop, phone = app.test_client(), app.test_client()
    signed_in = clock.now
    visit(laptop, "POST", "/login/ann")
    clock.advance(10)
    visit(phone, "POST", "/login/ann", SAFARI_IPHONE)
    records = PrancerSession.user_sessions("ann", app=app).values()
    devices = sorted(
        (r.device for r in records if r.device is not None), key=lambda d: d.signed_in_at
    )
    assert len(devices) == 2
    first, second = devices
    assert (first.browser, first.os, first.network) == ("Firefox 128", "Linux", "203.0.113.0/24")
    assert (second.browser, second.os) == ("Safari 17", "iOS")
    assert first.signed_in_at == first.last_seen_at == at(signed_in)
    assert second.signed_in_at == at(signed_in + 10)
    assert first.user_agent is None  # never the raw header unless asked


def test_last_seen_moves_once_per_interval_on_writes_made_anyway(
    app: Flask, store: StoreDriver, clock: FakeClock
) -> None:
    require_users(store)
    app = devices_app(app, store, {"last_seen_interval": 300})
    client = app.test_client()
    session_id = visit(client, "POST", "/login/ann")
    signed_in = clock.now

    def last_seen() -> datetime:
        [record] = PrancerSession.user_sessions("ann", app=app).values()
        assert record.device is not None
        return record.device.last_seen_at

    clock.advance(120)  # a touch is due, the interval is not over
    visit(client, "GET", "/page")
    assert last_seen() == at(signed_in)
    record = store.fetch(store_key(session_id))
    assert record is not None
    assert record.expires_at == clock.now + store.expiration_timeout  # touched
    clock.advance(200)  # the interval is over: the touch carries it
    visit(client, "GET", "/page")
    assert last_seen() == at(clock.now)
    clock.advance(400)
    visit(client, "POST", "/cart")  # a write carries it too
    assert last_seen() == at(clock.now)


def test_nothing_is_recorded_without_a_user_or_the_setting(app: Flask, store: StoreDriver) -> None:
    app = devices_app(app, store)
    client = app.test_client()
    session_id = visit(client, "POST", "/cart")
    record = store.fetch(store_key(session_id))
    assert record is not None and DEVICE_KEY not in record.data
    session_id = visit(client, "POST", "/login/ann")
    record = store.fetch(store_key(session_id))
    assert record is not None and DEVICE_KEY in record.data
    session_id = visit(client, "POST", "/logout")
    record = store.fetch(store_key(session_id))
    assert record is not None and DEVICE_KEY not in record.data


def test_without_the_setting_no_device_is_kept(app: Flask, store: StoreDriver) -> None:
    require_users(store)
    app = devices_app(app, store, devices=False)
    session_id = visit(app.test_client(), "POST", "/login/ann")
    record = store.fetch(store_key(session_id))
    assert record is not None and DEVICE_KEY not in record.data
    [listed] = PrancerSession.user_sessions("ann", app=app).values()
    assert listed.device is None


def test_the_raw_header_only_when_asked(app: Flask, store: StoreDriver) -> None:
    require_users(store)
    app = devices_app(app, store, {"raw_user_agent": True, "network": False})
    visit(app.test_client(), "POST", "/login/ann")
    [record] = PrancerSession.user_sessions("ann", app=app).values()
    assert record.device is not None
    assert record.device.user_agent == FIREFOX_LINUX
    assert record.device.network is None


def test_the_device_key_is_written_only_by_binding(app: Flask, store: StoreDriver) -> None:
    app = devices_app(app, store)

    @app.get("/forge")
    def forge() -> str:
        with pytest.raises(TypeError, match="bind_user"):
            session[DEVICE_KEY] = {"browser": "forged"}
        return "ok"

    assert app.test_client().get("/forge").text == "ok"


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("yes", "PRANCER_SESSION.devices"),
        ({"networks": True}, "PRANCER_SESSION.devices.networks"),
        ({"network": "no"}, "PRANCER_SESSION.devices.network"),
        ({"last_seen_interval": 0}, "PRANCER_SESSION.devices.last_seen_interval"),
    ],
)
def test_bad_device_settings_name_the_key(app: Flask, value: object, key: str) -> None:
    app.config["PRANCER_SESSION"] = {"devices": value}
    with pytest.raises(ConfigurationError) as caught:
        PrancerSession(app)
    assert caught.value.key == key


def test_an_encrypted_device_is_sealed_in_the_store_and_shown(app: Flask) -> None:
    import secrets

    from flask_prancer_session import MemoryStore

    app.config["PRANCER_SESSION"] = {
        "devices": True,
        "encryption": {"keys": [secrets.token_urlsafe(32)]},
    }
    store = MemoryStore()
    PrancerSession(app, store=store)
    app.add_url_rule("/login", "login", lambda: session.bind_user("ann") or session.id)
    session_id = visit(app.test_client(), "GET", "/login")
    record = store.fetch(store_key(session_id))
    assert record is not None and "Firefox" not in record.data[DEVICE_KEY]
    [listed] = PrancerSession.user_sessions("ann", app=app).values()
    assert listed.device is not None and listed.device.browser == "Firefox 128"
