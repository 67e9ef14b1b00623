"""Moving visitors over from Flask-Session: the real Flask-Session 0.8 writes
each session, then an app with ``migrate_from`` serves the same browser."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import pickle
import sys
import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask import session
from hypothesis import assume
from hypothesis import given
from hypothesis import strategies as st

from flask_prancer_session import ConfigurationError
from flask_prancer_session import PrancerSession
from flask_prancer_session import SessionStoreError
from flask_prancer_session.migration import _session_values
from flask_prancer_session.pickle_reader import read_pickle
from flask_prancer_session.pickle_reader import Unreadable

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


def old_app(config: Config) -> Flask:
    """An app on Flask-Session 0.8 that logs the visitor in."""
    from flask_session import Session

    app = Flask("old_app")
    app.config.update(TESTING=True, SECRET_KEY=SECRET, **config)
    if "SESSION_SQLALCHEMY" in config:
        config["SESSION_SQLALCHEMY"].init_app(app)
    Session(app)

    @app.post("/login")
    def login() -> str:
        session.update(LOGGED_IN)
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


def logged_in_cookie(config: Config) -> str:
    """Log in on the Flask-Session app and return its cookie's value."""
    client = old_app(config).test_client()
    client.post("/login")
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def old_key(config: Config, cookie: str) -> str:
    """Where Flask-Session keeps the session of ``cookie``."""
    session_id = cookie.split(".")[0]  # Without the signature, if signed.
    return config.get("SESSION_KEY_PREFIX", "session:") + session_id


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
    kind = config["SESSION_TYPE"]
    if kind == "redis":
        config["SESSION_REDIS"].set(key, pickle.dumps(value))
    elif kind == "sqlalchemy":
        import sqlalchemy as sa

        engine = sa.create_engine(config["SQLALCHEMY_DATABASE_URI"], poolclass=sa.NullPool)
        table = sa.table(
            config["SESSION_SQLALCHEMY_TABLE"], sa.column("session_id"), sa.column("data")
        )
        with engine.begin() as connection:
            connection.execute(
                table.update().where(table.c.session_id == key).values(data=pickle.dumps(value))
            )
    else:
        cache_of(config).set(key, value)  # cachelib pickles it


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


# The pickle reader, on its own.

TEXT = st.text(st.characters(blacklist_categories=["Cs"]))
PLAIN = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | TEXT | st.binary(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(TEXT, inner, max_size=4)
    ),
    max_leaves=20,
)


def _as_lists(value: t.Any) -> t.Any:
    if isinstance(value, (list, tuple)):
        return [_as_lists(item) for item in value]
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    return value


@given(st.dictionaries(TEXT, PLAIN, max_size=5), st.integers(0, 5))
def test_pickle_reader_reads_plain_data_in_every_protocol(
    data: dict[str, t.Any], protocol: int
) -> None:
    # Before protocol 3, bytes are pickled as a call to _codecs.encode.
    assume(protocol >= 3 or not _holds_bytes(data))
    assert _session_values(read_pickle(pickle.dumps(data, protocol))) == _as_lists(data)


def _holds_bytes(value: t.Any) -> bool:
    if isinstance(value, (list, tuple)):
        return any(map(_holds_bytes, value))
    if isinstance(value, dict):
        return any(map(_holds_bytes, value.values()))
    return isinstance(value, bytes)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"garbage",
        pickle.dumps({"a": 1})[:-3],  # truncated
        b"\x80\x05s.",  # SETITEM on an empty stack
        b"\x80\x05e.",  # APPENDS without a mark
        b"\x80\x05h\x07.",  # a memo entry that does not exist
    ],
)
def test_pickle_reader_refuses_what_is_not_a_pickle(data: bytes) -> None:
    with pytest.raises(Unreadable):
        read_pickle(data)


def test_shared_lists_cannot_blow_up() -> None:
    # Each level refers twice to the one below: 2**40 values once expanded.
    value: list[t.Any] = ["x"]
    for _ in range(40):
        value = [value, value]
    with pytest.raises(Unreadable, match="more than"):
        _session_values(read_pickle(pickle.dumps({"bomb": value}, 5)))


def test_deep_values_are_left_out(caplog: pytest.LogCaptureFixture) -> None:
    deep: list[t.Any] = []
    for _ in range(100):
        deep = [deep]
    data = read_pickle(pickle.dumps({"deep": deep, "ok": 1}, 5))
    with caplog.at_level(logging.WARNING, LOGGER):
        assert _session_values(data) == {"ok": 1}
    assert "levels deep" in caplog.records[0].getMessage()


def test_deeply_nested_tuple_key_is_not_hashed() -> None:
    # TUPLE1 a hundred thousand times, then used as a dictionary key.
    data = b"\x80\x05}K\x01" + b"\x85" * 100_000 + b"K\x02s."
    assert _session_values(read_pickle(data)) == {}


def test_self_containing_list_is_left_out() -> None:
    loop: list[t.Any] = []
    loop.append(loop)
    assert _session_values(read_pickle(pickle.dumps({"loop": loop, "ok": "yes"}))) == {"ok": "yes"}
