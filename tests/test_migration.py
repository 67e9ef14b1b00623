"""Moving visitors over from Flask-Session: the real Flask-Session 0.8 writes
each session, then an app with ``migrate_from`` serves the same browser."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import pickle
import struct
import sys
import time
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask import session
from hypothesis import given
from hypothesis import strategies as st

from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session import SessionStoreError
from flask_prancer_session.migration.msgpack import msgspec_decoder
from flask_prancer_session.migration.msgpack import without_compound_keys
from flask_prancer_session.migration.pickle_reader import MAX_ENTRY_BYTES
from flask_prancer_session.migration.pickle_reader import MAX_VALUES
from flask_prancer_session.migration.pickle_reader import Unreadable
from flask_prancer_session.migration.values import session_values

from . import services

pytestmark = [
    # Flask-Session's own warnings, as it writes the sessions to move.
    pytest.mark.filterwarnings("ignore:The 'use_signer' option is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:.*FileSystemSessionInterface is deprecated"),
    pytest.mark.filterwarnings("ignore:'SESSION_FILE_DIR' is deprecated"),
    pytest.mark.filterwarnings("ignore:datetime.datetime.utcnow:DeprecationWarning"),
]

SECRET = "test secret"
LOGGER = "flask_prancer_session.migration"
#: What the old app stores at login.
LOGGED_IN = {
    "user": "ann",
    "cart": [1, "two", None, [3.5]],
    "prefs": {"beta": True, "langs": ["en", "fr"]},
    "raw": b"\x00\xff",
}

Config = dict[str, t.Any]


@contextlib.contextmanager
def _redis(tmp_path: Path) -> t.Iterator[Config]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    import redis

    prefix = services.unique_name("flask_session") + ":"
    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        yield {"SESSION_TYPE": "redis", "SESSION_REDIS": client, "SESSION_KEY_PREFIX": prefix}
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


@contextlib.contextmanager
def _sqlalchemy(url: str) -> t.Iterator[Config]:
    import sqlalchemy as sa
    from flask_sqlalchemy import SQLAlchemy

    table = services.unique_name("flask_sessions")
    try:
        yield {
            "SESSION_TYPE": "sqlalchemy",
            "SESSION_SQLALCHEMY": SQLAlchemy(),
            "SESSION_SQLALCHEMY_TABLE": table,
            "SQLALCHEMY_DATABASE_URI": url,
            # No pooled connections outlive a request: nothing to dispose of.
            "SQLALCHEMY_ENGINE_OPTIONS": {"poolclass": sa.NullPool},
        }
    finally:
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))


@contextlib.contextmanager
def _sqlite(tmp_path: Path) -> t.Iterator[Config]:
    with _sqlalchemy(f"sqlite:///{tmp_path / 'app.db'}") as config:
        yield config


@contextlib.contextmanager
def _postgresql(tmp_path: Path) -> t.Iterator[Config]:
    services.require_module("psycopg", "postgres")
    services.require_server("PostgreSQL", "127.0.0.1", 5432)
    with _sqlalchemy(services.POSTGRES_URL) as config:
        yield config


@contextlib.contextmanager
def _filesystem(tmp_path: Path) -> t.Iterator[Config]:
    yield {"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": str(tmp_path / "flask_session")}


@contextlib.contextmanager
def _cachelib_filesystem(tmp_path: Path) -> t.Iterator[Config]:
    from cachelib import FileSystemCache

    cache = FileSystemCache(str(tmp_path / "cachelib"), threshold=500)
    yield {"SESSION_TYPE": "cachelib", "SESSION_CACHELIB": cache}


@contextlib.contextmanager
def _cachelib_redis(tmp_path: Path) -> t.Iterator[Config]:
    services.require_module("redis", "redis")
    services.require_server("Redis", "127.0.0.1", 6379)
    import redis
    from cachelib import RedisCache

    prefix = services.unique_name("flask_session_cachelib") + ":"
    client = redis.Redis.from_url(services.REDIS_URL)
    try:
        yield {
            "SESSION_TYPE": "cachelib",
            "SESSION_CACHELIB": RedisCache(client, key_prefix=prefix),
        }
    finally:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


BACKENDS: dict[str, t.Callable[[Path], t.ContextManager[Config]]] = {
    "redis": _redis,
    "sqlite": _sqlite,
    "postgresql": _postgresql,
    "filesystem": _filesystem,
    "cachelib-filesystem": _cachelib_filesystem,
    "cachelib-redis": _cachelib_redis,
}
#: The backends where Flask-Session 0.8 writes MessagePack; the others pickle.
MSGPACK_BACKENDS = ("redis", "sqlite", "postgresql")


@pytest.fixture(params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> t.Iterator[tuple[str, Config]]:
    """Each Flask-Session backend we move sessions from, with its
    Flask-Session settings, over an empty store."""
    with BACKENDS[request.param](tmp_path) as config:
        yield request.param, config


def old_app(config: Config, values: t.Mapping[str, t.Any] = LOGGED_IN) -> Flask:
    """An app on Flask-Session 0.8 that logs the visitor in, storing ``values``."""
    from flask_session import Session

    app = Flask("old_app")
    app.config.update(TESTING=True, SECRET_KEY=SECRET, **config)
    if "SESSION_SQLALCHEMY" in config:
        config["SESSION_SQLALCHEMY"].init_app(app)
    Session(app)

    @app.post("/login")
    def login() -> str:
        session.update(values)
        return ""

    return app


def new_app(config: Config, seen: list[dict[str, t.Any]] | None = None) -> Flask:
    """An app with the same settings that moves Flask-Session's visitors over;
    each request appends what the session holds to ``seen``."""
    app = Flask("new_app")
    app.config.update(
        TESTING=True,
        SECRET_KEY=SECRET,
        PRANCER_SESSION={"migrate_from": "flask-session", "store": "memory"},
        **config,
    )
    if "SESSION_SQLALCHEMY" in config:
        config["SESSION_SQLALCHEMY"].init_app(app)
    PrancerSession(app)

    @app.get("/")
    def index() -> str:
        if seen is not None:
            seen.append(dict(session))
        return ""

    @app.post("/logout")
    def logout() -> str:
        session.clear()
        return ""

    return app


def logged_in_cookie(config: Config, values: t.Mapping[str, t.Any] = LOGGED_IN) -> str:
    """Log in on the Flask-Session app, storing ``values``, and return its
    cookie's value."""
    client = old_app(config, values).test_client()
    client.post("/login")
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def old_key(config: Config, cookie: str) -> str:
    """Where Flask-Session keeps the session of ``cookie``."""
    session_id = cookie.split(".")[0]  # Without the signature, if signed.
    prefix: str = config.get("SESSION_KEY_PREFIX", "session:")
    return prefix + session_id


def old_entry_exists(config: Config, key: str) -> bool:
    kind = config["SESSION_TYPE"]
    if kind == "redis":
        return bool(config["SESSION_REDIS"].exists(key))
    if kind == "sqlalchemy":
        import sqlalchemy as sa

        engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.NullPool)
        table = sa.table(config["SESSION_SQLALCHEMY_TABLE"], sa.column("session_id"))
        with engine.connect() as connection:
            query = sa.select(sa.func.count()).select_from(table)
            return bool(connection.scalar(query.where(table.c.session_id == key)))
    return bool(cache_of(config).has(key))  # has() reads the expiry, not the pickle


def plant(config: Config, key: str, value: dict[str, t.Any]) -> None:
    """Replace the entry under ``key`` by a pickle of ``value``."""
    if config["SESSION_TYPE"] in ("redis", "sqlalchemy"):
        plant_raw(config, key, pickle.dumps(value))
    else:
        cache_of(config).set(key, value)  # cachelib pickles it


def plant_native(config: Config, key: str, value: dict[t.Any, t.Any]) -> None:
    """Replace the entry under ``key`` by ``value`` in the format Flask-Session
    0.8 writes there: MessagePack, or cachelib's pickle."""
    if config["SESSION_TYPE"] in ("redis", "sqlalchemy"):
        import msgspec

        plant_raw(config, key, msgspec.msgpack.encode(value))
    else:
        cache_of(config).set(key, value)


def plant_raw(config: Config, key: str, raw: bytes) -> None:
    """Replace the entry under ``key`` by ``raw``: the MessagePack of the
    redis and sqlalchemy backends, the pickle of the cachelib ones."""
    kind = config["SESSION_TYPE"]
    if kind == "redis":
        config["SESSION_REDIS"].set(key, raw)
    elif kind == "sqlalchemy":
        import sqlalchemy as sa

        engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.NullPool)
        table = sa.table(
            config["SESSION_SQLALCHEMY_TABLE"], sa.column("session_id"), sa.column("data")
        )
        with engine.begin() as connection:
            connection.execute(table.update().where(table.c.session_id == key).values(data=raw))
    else:
        from cachelib import FileSystemCache

        cache = cache_of(config)
        if isinstance(cache, FileSystemCache):
            # cachelib's file: the expiry (0 for never), then the pickle.
            Path(cache._get_filename(key)).write_bytes(struct.pack("I", 0) + raw)
        else:  # RedisCache: "!" before a pickle
            cache._write_client.set(cache._get_prefix() + key, b"!" + raw)


def cache_of(config: Config) -> t.Any:
    from cachelib import FileSystemCache

    if config["SESSION_TYPE"] == "filesystem":
        return FileSystemCache(config["SESSION_FILE_DIR"], threshold=0)
    return config["SESSION_CACHELIB"]


def cookie_headers(headers: t.Any) -> dict[str, str]:
    """The Set-Cookie headers of a response, by cookie name."""
    return {value.split("=", 1)[0]: value for value in headers.getlist("Set-Cookie")}


def flask_session_signer(secret: str) -> t.Any:
    """Signs as Flask-Session 0.8 does with SESSION_USE_SIGNER."""
    from itsdangerous import Signer

    return Signer(secret, salt="flask-session", key_derivation="hmac")


def is_expired(header: str) -> bool:
    return "Expires=Thu, 01 Jan 1970 00:00:00 GMT" in header


@pytest.mark.parametrize("use_signer", [False, True], ids=["unsigned", "signed"])
def test_visitor_keeps_their_session(backend: tuple[str, Config], use_signer: bool) -> None:
    _, config = backend
    config["SESSION_USE_SIGNER"] = use_signer
    cookie = logged_in_cookie(config)
    assert ("." in cookie) is use_signer
    key = old_key(config, cookie)
    assert old_entry_exists(config, key)

    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)
    response = client.get("/")

    assert seen == [{**LOGGED_IN, "_permanent": True}]
    headers = cookie_headers(response.headers)
    assert is_expired(headers["session"])
    assert "Expires=" in headers["PSESSION"]  # permanent, as Flask-Session made it
    assert not is_expired(headers["PSESSION"])
    assert not old_entry_exists(config, key)
    assert client.get_cookie("session") is None

    client.get("/")
    assert seen[1] == seen[0]


def test_logout_on_the_first_request_ends_the_old_session(backend: tuple[str, Config]) -> None:
    _, config = backend
    cookie = logged_in_cookie(config)
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)

    headers = cookie_headers(client.post("/logout").headers)

    assert is_expired(headers["session"])
    assert "PSESSION" not in headers  # nothing left to store
    assert not old_entry_exists(config, old_key(config, cookie))
    client.set_cookie("session", cookie)  # even if the browser sends it again
    client.get("/")
    assert seen == [{}]


@pytest.mark.parametrize("use_signer", [False, True], ids=["unsigned", "signed"])
def test_forged_or_garbage_cookie_gets_a_fresh_session(
    backend: tuple[str, Config], use_signer: bool
) -> None:
    _, config = backend
    config["SESSION_USE_SIGNER"] = use_signer
    cookie = logged_in_cookie(config)
    key = old_key(config, cookie)
    session_id = key.removeprefix(config.get("SESSION_KEY_PREFIX", "session:"))
    forged = [
        "garbage value",
        "!" * 10,
        # well-formed, but no such session
        "A" * 43 if not use_signer else flask_session_signer(SECRET).sign("A" * 43).decode(),
        "x" * 4000,
        "é",
    ]
    if use_signer:
        forged += [
            session_id,  # no signature
            f"{session_id}.AAAAAAAAAAAAAAAAAAAAAAAAAAA",
            flask_session_signer("another secret").sign(session_id).decode(),
        ]
    else:
        forged.append(f"{session_id}.tail")
    seen: list[dict[str, t.Any]] = []
    app = new_app(config, seen)
    for value in forged:
        client = app.test_client()
        client.set_cookie("session", value)
        headers = cookie_headers(client.get("/").headers)
        assert is_expired(headers["session"]), value
        assert "PSESSION" not in headers
    assert seen == [{}] * len(forged)
    assert old_entry_exists(config, key)  # the real session is left alone


def test_pickled_entry_is_never_unpickled(
    backend: tuple[str, Config], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, config = backend
    cookie = logged_in_cookie(config)
    marker = tmp_path / "unpickled"
    plant(config, old_key(config, cookie), {"user": MakeDirectory(marker), "theme": "dark"})
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)

    with caplog.at_level(logging.WARNING, LOGGER):
        client.get("/")

    assert not marker.exists()
    [record] = caplog.records
    if name in MSGPACK_BACKENDS:  # a pickle where MessagePack belongs: no session
        assert seen == [{}]
        assert "neither MessagePack nor JSON" in record.getMessage()
        assert not old_entry_exists(config, old_key(config, cookie))  # nor read again
    else:  # the plain data in cachelib's pickle is read, the object is not built
        assert seen == [{"theme": "dark"}]
        assert "'user'" in record.getMessage()
        assert "os.mkdir" in record.getMessage() or "posix.mkdir" in record.getMessage()


class MakeDirectory:
    """Unpickling this makes a directory: proof that something was unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[t.Any, ...]:
        return os.mkdir, (str(self.path),)


def test_the_planted_pickle_would_run(tmp_path: Path) -> None:
    marker = tmp_path / "unpickled"
    pickle.loads(pickle.dumps({"user": MakeDirectory(marker)}))  # our own payload
    assert marker.is_dir()


@pytest.mark.parametrize("name", ["redis", "sqlite"])
def test_values_become_what_the_session_stores(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    when = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc)
    with BACKENDS[name](tmp_path) as config:
        app = old_app(config)

        @app.post("/store")
        def store() -> str:
            session.update(
                when=when,
                pair=(1, 2),
                tags={"a"},
                numbered={1: "one"},
                big=2**64 - 1,
                nested={"deep": [{"x": (None,)}]},
            )
            return ""

        old = app.test_client()
        old.post("/store")
        cookie = old.get_cookie("session")
        assert cookie is not None
        seen: list[dict[str, t.Any]] = []
        client = new_app(config, seen).test_client()
        client.set_cookie("session", cookie.value)

        with caplog.at_level(logging.WARNING, LOGGER):
            client.get("/")
            client.get("/")

    assert seen[0] == {
        "_permanent": True,
        "when": when,
        "pair": [1, 2],
        "tags": ["a"],
        "big": 2**64 - 1,
        "nested": {"deep": [{"x": [None]}]},
    }
    assert seen[1] == seen[0]  # as stored and loaded again
    [record] = caplog.records
    assert "'numbered'" in record.getMessage()
    assert "not a string" in record.getMessage()


def test_expired_row_is_not_moved(tmp_path: Path) -> None:
    import sqlalchemy as sa

    with _sqlite(tmp_path) as config:
        cookie = logged_in_cookie(config)
        key = old_key(config, cookie)
        engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.NullPool)
        table = sa.table(
            config["SESSION_SQLALCHEMY_TABLE"],
            sa.column("session_id"),
            sa.column("expiry", sa.DateTime()),  # as Flask-Session declares it
        )
        with engine.begin() as connection:
            connection.execute(
                table.update()
                .where(table.c.session_id == key)
                .values(expiry=dt.datetime(2000, 1, 1))
            )
        seen: list[dict[str, t.Any]] = []
        client = new_app(config, seen).test_client()
        client.set_cookie("session", cookie)
        headers = cookie_headers(client.get("/").headers)

    assert seen == [{}]
    assert is_expired(headers["session"])


def test_unreachable_old_store_fails_the_request_instead_of_a_fresh_session() -> None:
    redis = services.require_module("redis", "redis")
    # Port 1 on loopback: nothing listens, the connection is refused at once.
    client = redis.Redis(host="127.0.0.1", port=1, retry_on_error=[], retry=None)
    app = new_app({"SESSION_TYPE": "redis", "SESSION_REDIS": client}, seen=[])

    @app.get("/health")
    def health() -> str:
        return "ok"

    visitor = app.test_client()
    assert visitor.get("/").status_code == 200  # no old cookie: nothing is read

    visitor.set_cookie("session", "A" * 43)
    assert visitor.get("/health").text == "ok"  # views without the session still work
    with pytest.raises(SessionStoreError) as info:
        visitor.get("/")
    assert isinstance(info.value.original_error, redis.ConnectionError)
    client.close()


def test_old_copy_that_cannot_be_deleted_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _redis(tmp_path) as config:
        import redis

        real = config["SESSION_REDIS"]
        cookie = logged_in_cookie(config)

        class DeleteFails:
            def get(self, key: str) -> t.Any:
                return real.get(key)

            def delete(self, key: str) -> t.Any:
                raise redis.ConnectionError("connection lost")

        seen: list[dict[str, t.Any]] = []
        client = new_app({**config, "SESSION_REDIS": DeleteFails()}, seen).test_client()
        client.set_cookie("session", cookie)
        with caplog.at_level(logging.WARNING, LOGGER):
            headers = cookie_headers(client.get("/").headers)
        assert old_entry_exists(config, old_key(config, cookie))

    assert seen == [{**LOGGED_IN, "_permanent": True}]
    assert "PSESSION" in headers
    assert is_expired(headers["session"])
    [record] = caplog.records
    assert "could not be deleted" in record.getMessage()


def test_old_cookie_name_and_place_follow_flask_settings(tmp_path: Path) -> None:
    with _filesystem(tmp_path) as config:
        config.update(SESSION_COOKIE_NAME="sid", SESSION_COOKIE_PATH="/app")
        app = old_app(config)
        old = app.test_client()
        old.post("/login")
        cookie = old.get_cookie("sid", path="/app")
        assert cookie is not None
        seen: list[dict[str, t.Any]] = []
        client = new_app(config, seen).test_client()
        client.set_cookie("sid", cookie.value, path="/")
        headers = cookie_headers(client.get("/").headers)

    assert seen[0]["user"] == "ann"
    assert is_expired(headers["sid"])
    assert "Path=/app" in headers["sid"]


@pytest.mark.parametrize(
    ("settings", "key"),
    [
        ({}, "SESSION_TYPE"),
        ({"SESSION_TYPE": "mongodb"}, "SESSION_TYPE"),
        ({"SESSION_TYPE": "redis"}, "SESSION_REDIS"),
        ({"SESSION_TYPE": "redis", "SESSION_REDIS": "localhost"}, "SESSION_REDIS"),
        ({"SESSION_TYPE": "sqlalchemy"}, "SESSION_SQLALCHEMY"),
        ({"SESSION_TYPE": "cachelib"}, "SESSION_CACHELIB"),
        ({"SESSION_TYPE": "filesystem", "SESSION_FILE_DIR": "/nonexistent"}, "SESSION_FILE_DIR"),
        ({"SESSION_TYPE": "filesystem", "SESSION_KEY_PREFIX": 1}, "SESSION_KEY_PREFIX"),
        ({"SESSION_TYPE": "filesystem", "SESSION_USE_SIGNER": "yes"}, "SESSION_USE_SIGNER"),
        (
            {"SESSION_TYPE": "filesystem", "SESSION_USE_SIGNER": True, "SECRET_KEY": None},
            "SECRET_KEY",
        ),
    ],
)
def test_flask_session_settings_are_checked_at_start(
    app: Flask, tmp_path: Path, settings: Config, key: str
) -> None:
    (tmp_path / "flask_session").mkdir()
    app.config.update(
        SESSION_FILE_DIR=str(tmp_path / "flask_session"),
        PRANCER_SESSION={"migrate_from": "flask-session"},
    )
    app.config.update(settings)
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == key


def test_cache_that_unpickles_by_itself_is_refused(app: Flask, tmp_path: Path) -> None:
    from cachelib import FileSystemCache

    class OwnGet(FileSystemCache):
        def get(self, key: str) -> t.Any:
            return super().get(key)

    app.config.update(
        SESSION_TYPE="cachelib",
        SESSION_CACHELIB=OwnGet(str(tmp_path)),
        PRANCER_SESSION={"migrate_from": "flask-session"},
    )
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == "SESSION_CACHELIB"


def test_unknown_library_is_refused(app: Flask) -> None:
    app.config["PRANCER_SESSION"] = {"migrate_from": "beaker"}
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == "PRANCER_SESSION.migrate_from"
    assert "'flask-session'" in info.value.message


def test_our_cookie_cannot_take_the_old_cookies_name(app: Flask, tmp_path: Path) -> None:
    app.config.update(
        SESSION_TYPE="filesystem",
        SESSION_FILE_DIR=str(tmp_path),
        PRANCER_SESSION={
            "migrate_from": "flask-session",
            "state": {"driver": "cookie", "options": {"session_key": "session"}},
        },
    )
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == "PRANCER_SESSION.state.options.session_key"


def test_missing_msgspec_names_the_extra(
    app: Flask, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "msgspec", None)
    app.config.update(
        SESSION_TYPE="redis",
        SESSION_REDIS=type("Client", (), {"get": None, "delete": None})(),
        PRANCER_SESSION={"migrate_from": "flask-session"},
    )
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == "PRANCER_SESSION.migrate_from"
    assert "flask-prancer-session[migrate]" in info.value.message


def test_refusal_without_prancer_session_mentions_migration(app: Flask) -> None:
    app.config["SESSION_TYPE"] = "redis"
    with pytest.raises(ConfigurationError, match="migrate_from"):
        PrancerSession(app)


# Values our sessions refuse, and entries that are too much to read.


def retired(config: Config, cookie: str, headers: dict[str, str]) -> bool:
    """Whether the response expired the old cookie and its entry is gone."""
    return is_expired(headers["session"]) and not old_entry_exists(config, old_key(config, cookie))


def test_key_our_session_refuses_is_left_out(
    backend: tuple[str, Config], caplog: pytest.LogCaptureFixture
) -> None:
    _, config = backend
    # A NUL in a key: Flask-Session stores it, PostgreSQL (for one) cannot.
    cookie = logged_in_cookie(config, {**LOGGED_IN, "bad\x00key": 1})
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)

    with caplog.at_level(logging.WARNING, LOGGER):
        responses = [client.get("/") for _ in range(5)]

    assert [response.status_code for response in responses] == [200] * 5
    assert seen == [{**LOGGED_IN, "_permanent": True}] * 5
    assert retired(config, cookie, cookie_headers(responses[0].headers))
    [record] = caplog.records
    assert "'bad\\x00key'" in record.getMessage()
    assert "NUL" in record.getMessage()


@pytest.mark.parametrize("name", ["filesystem", "cachelib-filesystem", "cachelib-redis"])
def test_integer_json_cannot_write_is_left_out(
    name: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Only the pickled backends can hold it: MessagePack's integers are 64-bit.
    with BACKENDS[name](tmp_path) as config:
        cookie = logged_in_cookie(config, {**LOGGED_IN, "huge": 10**5000})
        seen: list[dict[str, t.Any]] = []
        client = new_app(config, seen).test_client()
        client.set_cookie("session", cookie)
        with caplog.at_level(logging.WARNING, LOGGER):
            responses = [client.get("/") for _ in range(3)]
        assert retired(config, cookie, cookie_headers(responses[0].headers))

    assert [response.status_code for response in responses] == [200] * 3
    assert seen == [{**LOGGED_IN, "_permanent": True}] * 3
    [record] = caplog.records
    assert "'huge'" in record.getMessage()
    assert "4300 digits" in record.getMessage()


@pytest.mark.parametrize("permanent", [True, False], ids=["permanent", "not-permanent"])
def test_session_with_nothing_to_move_is_retired(
    backend: tuple[str, Config], permanent: bool, caplog: pytest.LogCaptureFixture
) -> None:
    name, config = backend
    # Permanent (the default), Flask-Session stores "_permanent" too, which
    # our session does not store on its own.
    config["SESSION_PERMANENT"] = permanent
    values: dict[str, t.Any] = {"bad\x00key": 1}
    if name not in MSGPACK_BACKENDS:
        values["huge"] = 10**5000
    cookie = logged_in_cookie(config, values)
    assert old_entry_exists(config, old_key(config, cookie))
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)

    with caplog.at_level(logging.WARNING, LOGGER):
        first = client.get("/")
        second = client.get("/")

    assert first.status_code == second.status_code == 200
    headers = cookie_headers(first.headers)
    assert retired(config, cookie, headers)
    assert client.get_cookie("session") is None  # so the second request did not read it
    assert seen == [{}, {}]
    assert "PSESSION" not in headers  # nothing to store
    [record] = caplog.records  # the first request only: the second has no old cookie
    assert f"{len(values)} key(s)" in record.getMessage()


def test_one_warning_counts_the_keys_left_out(
    backend: tuple[str, Config], caplog: pytest.LogCaptureFixture
) -> None:
    _, config = backend
    cookie = logged_in_cookie(config)
    # One line per key was 50,000 lines for a 300 KB entry.
    plant_native(config, old_key(config, cookie), {"user": "ann", **dict.fromkeys(range(5000))})
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)

    with caplog.at_level(logging.WARNING, LOGGER):
        client.get("/")

    assert seen == [{"user": "ann"}]
    [record] = caplog.records
    assert record.getMessage().startswith("5000 key(s) of a Flask-Session session")
    assert "and 4997 more" in record.getMessage()


def test_entry_too_large_to_read_is_retired(
    backend: tuple[str, Config], caplog: pytest.LogCaptureFixture
) -> None:
    _, config = backend
    cookie = logged_in_cookie(config)
    plant_native(config, old_key(config, cookie), {"user": "x" * MAX_ENTRY_BYTES})
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)

    with caplog.at_level(logging.WARNING, LOGGER):
        response = client.get("/")

    assert response.status_code == 200
    assert seen == [{}]
    assert retired(config, cookie, cookie_headers(response.headers))
    [record] = caplog.records
    assert "larger than" in record.getMessage()


def _shared_list_named(levels: int) -> bytes:
    """A pickle of {"user": ...} whose value looks a global up with, as its
    module, a list that refers twice to one list, ``levels`` deep: 237 bytes
    once took 2 minutes and 3.5 GB to read, as the list was rendered whole."""
    body = b"]\x940"
    for level in range(levels):
        body += b"(" + (b"j" + struct.pack("<I", level)) * 2 + b"l\x940"
    body += b"j" + struct.pack("<I", levels)
    return b"\x80\x05}\x8c\x04user" + body + b"\x8c\x01x\x93s."


def _colliding_tuple_keys(count: int) -> bytes:
    """MessagePack of {"user": "ann", "x": {...}}, with ``count`` keys that
    are pairs of integers whose tuples all have one hash (CPython's tuple
    hash, xxHash's round, inverted for the second item)."""
    import msgspec

    mask = 2**64 - 1
    prime1, prime2, prime5 = 11400714785074694791, 14029467366897019727, 2870177450012600261

    def round_(acc: int, lane: int) -> int:
        acc = (acc + lane * prime2) & mask
        return ((acc << 31 | acc >> 33) & mask) * prime1 & mask

    target = round_(round_(prime5, 1), 0)
    inverse1, inverse2 = pow(prime1, -1, 2**64), pow(prime2, -1, 2**64)
    rotated = target * inverse1 & mask
    wanted = (rotated >> 31 | rotated << 33) & mask
    pairs = [(1, 0)]
    first = 1
    while len(pairs) < count:
        first += 1
        second = (wanted - round_(prime5, first)) * inverse2 & mask
        if second >= 2**63:
            second -= 2**64
        if abs(second) < 2**61 - 1 and second != -1:  # an int whose hash is itself
            pairs.append((first, second))
    assert len({hash(pair) for pair in pairs[:100]}) == 1
    # Written by hand: a dict of them would take the time this is about.
    keys = b"".join(msgspec.msgpack.encode(pair) + b"\xc0" for pair in pairs)
    return b"\x82\xa4user\xa3ann\xa1x\xdf" + struct.pack(">I", count) + keys


@pytest.mark.parametrize(
    "entry",
    ["shared list as a name", "deep tuple as a name", "colliding integer keys"],
)
def test_hostile_pickle_answers_quickly(
    entry: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    payloads = {
        "shared list as a name": _shared_list_named(30),
        # Rendering it raised RecursionError: every request answered 500.
        "deep tuple as a name": b"\x80\x05}\x8c\x04user)"
        + b"\x85" * 50_000
        + b"\x8c\x01x\x93s\x8c\x02ok\x88s.",
        # All hash to 0: 1 MB took 44 s.
        "colliding integer keys": b"\x80\x05}\x8c\x04user}("
        + b"".join(
            b"\x8a\x0a" + (number * (2**61 - 1)).to_bytes(10, "little") + b"N"
            for number in range(1, 40_000)
        )
        + b"us\x8c\x02ok\x88s.",
    }
    with _filesystem(tmp_path) as config:
        cookie = logged_in_cookie(config)
        plant_raw(config, old_key(config, cookie), payloads[entry])
        seen: list[dict[str, t.Any]] = []
        client = new_app(config, seen).test_client()
        client.set_cookie("session", cookie)
        start = time.thread_time()
        with caplog.at_level(logging.WARNING, LOGGER):
            response = client.get("/")
        took = time.thread_time() - start
        assert retired(config, cookie, cookie_headers(response.headers))

    assert response.status_code == 200
    assert took < 10  # 0.1 s here: a backstop, the reader's tests measure its work
    assert seen == ([{}] if entry == "shared list as a name" else [{"ok": True}])
    [record] = caplog.records
    assert "'user'" in record.getMessage()


def test_colliding_tuple_keys_in_messagepack_are_never_hashed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # msgspec makes array keys tuples, whose hashes can be made to collide:
    # 20,000 took 4.5 s to decode, and the time grew with their square.
    raw = _colliding_tuple_keys(20_000)
    assert msgspec_decoder()(raw)["x"] == {None: None}  # no tuple was a key
    with _sqlite(tmp_path) as config:
        cookie = logged_in_cookie(config)
        plant_raw(config, old_key(config, cookie), raw)
        seen: list[dict[str, t.Any]] = []
        client = new_app(config, seen).test_client()
        client.set_cookie("session", cookie)
        start = time.thread_time()
        with caplog.at_level(logging.WARNING, LOGGER):
            response = client.get("/")
        took = time.thread_time() - start
        assert retired(config, cookie, cookie_headers(response.headers))

    assert took < 5  # 0.2 s here
    assert seen == [{"user": "ann"}]
    [record] = caplog.records
    assert "'x'" in record.getMessage()


# Flask-Session's values, on every backend.

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=dt.timezone.utc)
#: What Flask-Session stores, and what moves over from MessagePack and from a
#: pickle (None where the key is left out).
VALUE_SETS: dict[str, tuple[dict[str, t.Any], dict[str, t.Any], dict[str, t.Any]]] = {
    "text": ({"s": "ann", "u": "é✓😀", "e": ""},) * 3,
    "integers": ({"z": 0, "n": -7, "big": 2**64 - 1, "low": -(2**63)},) * 3,
    "floats": ({"f": 1.5, "inf": float("inf"), "tiny": 5e-324},) * 3,
    "constants": ({"t": True, "f": False, "n": None},) * 3,
    "bytes": ({"b": b"\x00\xff", "empty": b""},) * 3,
    "lists": ({"l": [1, "two", None, [3.5, []]]},) * 3,
    "dictionaries": ({"d": {"a": {"b": [1]}, "e": {}}},) * 3,
    "tuples": ({"t": (1, "x"), "e": ()}, {"t": [1, "x"], "e": []}, {"t": [1, "x"], "e": []}),
    "sets": ({"s": {"a"}, "f": frozenset({1})}, {"s": ["a"], "f": [1]}, {"s": ["a"], "f": [1]}),
    "datetime": ({"when": WHEN, "k": 1}, {"when": WHEN, "k": 1}, {"k": 1}),
    "keys that are not strings": ({"m": {1: "one"}, "k": 1}, {"k": 1}, {"k": 1}),
}


@pytest.mark.parametrize("values", list(VALUE_SETS))
def test_values_move_as_documented(backend: tuple[str, Config], values: str) -> None:
    name, config = backend
    config["SESSION_PERMANENT"] = False
    stored, from_msgpack, from_pickle = VALUE_SETS[values]
    cookie = logged_in_cookie(config, stored)
    seen: list[dict[str, t.Any]] = []
    client = new_app(config, seen).test_client()
    client.set_cookie("session", cookie)
    logging.disable(logging.WARNING)
    try:
        client.get("/")
        client.get("/")  # as stored and loaded again
    finally:
        logging.disable(logging.NOTSET)

    expected = from_msgpack if name in MSGPACK_BACKENDS else from_pickle
    assert seen == [expected, expected]


# Reading Flask-Session's MessagePack.


def test_messagepack_keys_that_are_arrays_are_read_as_none() -> None:
    decode = msgspec_decoder()
    # {"x": {[1, [2, {}]]: 3, "y": [{[4]: 5}]}, "z": 1}
    raw = b"\x82\xa1x\x82\x92\x01\x92\x02\x80\x03\xa1y\x91\x81\x91\x04\x05\xa1z\x01"
    assert decode(raw) == {"x": {None: 3, "y": [{None: 5}]}, "z": 1}
    assert session_values(decode(raw)) == {"z": 1}


@given(
    st.dictionaries(
        st.text(),
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**64 - 1)
            | st.floats(allow_nan=False)
            | st.text()
            | st.binary(),
            lambda inner: (
                st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4)
            ),
            max_leaves=20,
        ),
    )
)
def test_messagepack_without_array_keys_is_read_as_it_is(data: dict[str, t.Any]) -> None:
    import msgspec

    raw = msgspec.msgpack.encode(data)
    assert without_compound_keys(raw) == raw
    assert msgspec_decoder()(raw) == msgspec.msgpack.decode(raw)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"\x81\xa1a", "neither"),  # truncated
        (b"\xc1", "neither"),  # never used
        (b"\x81\xa1a\xc0\xc0", "neither"),  # trailing data
        (b"\xdd\xff\xff\xff\xff" + b"\xc0" * (MAX_VALUES + 1), f"more than {MAX_VALUES}"),
        (b"\xc6" + struct.pack(">I", MAX_ENTRY_BYTES) + b"x" * MAX_ENTRY_BYTES, "larger than"),
        ("{}", "not bytes"),
    ],
)
def test_messagepack_beyond_the_limits_is_unreadable(raw: t.Any, message: str) -> None:
    with pytest.raises(Unreadable, match=message):
        msgspec_decoder()(raw)


def test_flask_session_json_is_read() -> None:
    assert msgspec_decoder()(b'{"user": "ann", "n": [1]}') == {"user": "ann", "n": [1]}
