"""What only :class:`.DatabaseStore` does: configuration, schema, pool recovery,
corrupt rows, and row locking under concurrent requests. The behaviour every
store shares is in ``test_store_contract.py``."""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import multiprocessing
import os
import sys
import threading
import traceback
import typing as t
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import session
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st

from flask_prancer_session.changes import ChangeSet
from flask_prancer_session.changes import user_id_of
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.errors import ConfigurationError
from flask_prancer_session.errors import SessionStoreError
from flask_prancer_session.registry import resolve
from flask_prancer_session.registry import STORE_DRIVERS
from flask_prancer_session.store.database import DatabaseStore
from flask_prancer_session.store.database import DriverError
from flask_prancer_session.store.database import execution
from flask_prancer_session.store.database import profiles
from flask_prancer_session.store.database import statements
from flask_prancer_session.store.database import watchdog

from . import services
from .forking import hold_while_forking
from .forking import run_forked

KEY = "a" * 64
OTHER_KEY = "b" * 64


class Clock(t.Protocol):
    now: float

    def __call__(self) -> float: ...

    def advance(self, seconds: float) -> None: ...


def _require(dialect: str) -> None:
    if dialect in services.DATABASE_SERVERS:
        services.DATABASE_SERVERS[dialect].require()


URLS = {name: server.url for name, server in services.DATABASE_SERVERS.items()}


@pytest.fixture(params=["sqlite", *URLS])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for each dialect, and each MySQL driver."""
    _require(request.param)
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'sessions.db'}"
    return URLS[request.param]


@pytest.fixture
def make_database_store(url: str, clock: Clock) -> t.Iterator[t.Callable[..., DatabaseStore]]:
    """Build stores on :func:`url` and the fake clock, by default all on one
    new table, and drop their tables afterwards."""
    table = services.unique_name("sessions")
    stores: list[DatabaseStore] = []

    def make(**options: t.Any) -> DatabaseStore:
        if not {"url", "engine", "dialect"} & options.keys():
            options["url"] = url
        options.setdefault("table", table)
        store = DatabaseStore(**options)
        store.clock = clock
        stores.append(store)
        return store

    yield make
    for store in stores:
        if store.purge_thread is not None:
            store.purge_thread.join()  # else it would hold a connection past dispose
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            for store in {s.table.fullname: s for s in stores}.values():
                store.table.drop(connection, checkfirst=True)
    finally:
        engine.dispose()
        for store in stores:
            store.engine.dispose()


def _row(store: DatabaseStore, key: str) -> sa.Row[t.Any] | None:
    with store.engine.connect() as connection:
        query = sa.select(store.table).where(store.table.c.id == key)
        return connection.execute(query).first()


def _record_statements(store: DatabaseStore) -> list[str]:
    """Return a list that fills with every statement the store sends from now
    on, whether through SQLAlchemy or straight to a DBAPI cursor."""
    statements: list[str] = []
    if store.engine.dialect.name == "sqlite":
        # sqlite3 cursors cannot be replaced; the store writes through SQLAlchemy there.
        sa.event.listen(
            store.engine, "before_cursor_execute", lambda *args: statements.append(args[2])
        )
        return statements

    def count_cursor(dbapi_connection: t.Any, record: t.Any) -> None:
        attribute = (
            "cursor_factory" if hasattr(dbapi_connection, "cursor_factory") else "cursorclass"
        )
        # psycopg2 leaves its cursor_factory unset.
        base = getattr(dbapi_connection, attribute) or type(dbapi_connection.cursor())

        class Counting(base):  # type: ignore[misc,valid-type]
            def execute(self, query: t.Any, *args: t.Any, **kwargs: t.Any) -> t.Any:
                statements.append(str(query))
                return super().execute(query, *args, **kwargs)

        setattr(dbapi_connection, attribute, Counting)

    store.engine.dispose()
    sa.event.listen(store.engine, "connect", count_cursor)
    return statements


def _new(**updated: str) -> ChangeSet:
    return ChangeSet(updated, created_at=1_800_000_000.0)


def _split_options(url: str) -> dict[str, t.Any]:
    parsed = sa.make_url(url)
    return {
        "username": parsed.username,
        "password": parsed.password,
        "hostname": parsed.host,
        "port": parsed.port,
        "database": parsed.database,
    }


# Each dialect's on_connect statement and a query that shows its effect.
ON_CONNECT = {
    "sqlite": ("PRAGMA cache_size = -1234", "PRAGMA cache_size", -1234),
    "postgresql": ("SET statement_timeout = 12345", "SHOW statement_timeout", "12345ms"),
    "mariadb": ("SET SESSION wait_timeout = 1234", "SELECT @@session.wait_timeout", 1234),
}
PRANCER_NAMES = {
    "sqlite": "Prancer::Session::Store::Database::Driver::SQLite",
    "postgresql": "Prancer::Session::Store::Database::Driver::Pg",
    "mariadb": "Prancer::Session::Store::Database::Driver::MySQL",
}


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql", "mariadb"])
def test_prancer_split_options(dialect: str, tmp_path: Path, clock: Clock) -> None:
    _require(dialect)
    cls, entry = resolve(PRANCER_NAMES[dialect], STORE_DRIVERS, "store.driver")
    statement, query, expected = ON_CONNECT[dialect]
    if dialect == "sqlite":
        options: dict[str, t.Any] = {"database": str(tmp_path / "prancer.db")}
    elif dialect == "postgresql":
        options = _split_options(services.POSTGRES_URL)
        options["dsn_extra"] = {"application_name": "prancer-split-test"}
        query = "SHOW application_name"
        expected = "prancer-split-test"
    else:
        options = _split_options(services.MARIADB_URL) | {"charset": "utf8mb4"}
    table = services.unique_name("sessions")
    store = cls(**entry.preset, **options, table=table, on_connect=[statement])
    assert isinstance(store, DatabaseStore)
    try:
        store.clock = clock
        store.apply(KEY, _new(x="1"))
        assert store.fetch(KEY) is not None
        # The pool rolls back on return; the statement's effect must outlast it.
        with store.engine.connect() as connection:
            assert (
                connection.exec_driver_sql(ON_CONNECT[dialect][1]).scalar()
                == (ON_CONNECT[dialect][2])
            )
            assert connection.exec_driver_sql(query).scalar() == expected
            if dialect == "mariadb":
                charset = connection.exec_driver_sql("SELECT @@character_set_client").scalar()
                assert charset == "utf8mb4"
    finally:
        with store.engine.begin() as connection:
            store.table.drop(connection)
        store.engine.dispose()


def test_app_config(app: Flask, tmp_path: Path) -> None:
    from flask_prancer_session import PrancerSession

    driver = "Prancer::Session::Store::Database::Driver::SQLite"
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(
            app, store={"driver": driver, "options": {"url": "sqlite://", "database": "x"}}
        )
    assert info.value.key is not None and info.value.key.endswith("store.options.database")
    options = {"database": str(tmp_path / "app.db"), "application": "shop"}
    PrancerSession(app, store={"driver": driver, "options": options})

    @app.post("/")
    def set_value() -> str:
        session["x"] = "1"
        return ""

    @app.get("/")
    def get_value() -> str:
        return str(session.get("x"))

    client = app.test_client()
    try:
        client.post("/")
        assert client.get("/").text == "1"
    finally:
        store = app.extensions["prancer_session"].store
        if store.purge_thread is not None:
            store.purge_thread.join()
        store.engine.dispose()


def test_a_given_engine_keeps_the_binding_through_later_writes(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    # An engine the app made (Flask-SQLAlchemy's) runs the statements through
    # SQLAlchemy's execution layer, where a parameter named after a column
    # would join an UPDATE's SET clause.
    engine = sa.create_engine(url)
    try:
        store = make_database_store(engine=engine)
        store.apply(KEY, _bind("ann", a="1"))
        store.apply(KEY, ChangeSet({"b": "2"}))
        store.apply(KEY, ChangeSet(removed=frozenset({"a"})))
        assert set(store.sessions_of("ann")) == {KEY}
        assert _row(store, KEY).user_id == "ann"  # type: ignore[union-attr]
    finally:
        engine.dispose()


def test_given_engine(make_database_store: t.Callable[..., DatabaseStore], url: str) -> None:
    engine = sa.create_engine(url)
    try:
        store = make_database_store(engine=engine)
        assert store.engine is engine
        store.apply(KEY, _new(x="1"))
        assert store.fetch(KEY) is not None
        with pytest.raises(ConfigurationError) as info:
            DatabaseStore(engine=engine, on_connect=["SELECT 1"])
        assert info.value.key == "on_connect"
        other = "sqlite" if engine.dialect.name != "sqlite" else "postgresql"
        with pytest.raises(ConfigurationError) as info:
            DatabaseStore(engine=engine, dialect=other)  # type: ignore[arg-type]
        assert info.value.key == "dialect"
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ({}, "url"),
        ({"url": "sqlite://", "engine": sa.create_engine("sqlite://")}, "engine"),
        ({"url": "sqlite://", "database": "x"}, "database"),
        ({"url": "sqlite://", "username": "x"}, "username"),
        ({"url": "::not a url::"}, "url"),
        ({"url": "sqlite://", "dialect": "postgresql"}, "dialect"),
        ({"dialect": "oracle", "database": "x"}, "dialect"),
        ({"database": "x"}, "dialect"),
        ({"dialect": "postgresql", "hostname": "db"}, "database"),
        ({"dialect": "sqlite", "database": "x", "charset": "utf8"}, "charset"),
        ({"dialect": "mysql", "database": "x", "dsn_extra": ["x"]}, "dsn_extra"),
        ({"dialect": "mysql", "database": "x", "port": "3306"}, "port"),
        ({"dialect": "mysql", "database": "x", "password": 1234}, "password"),
        ({"url": "sqlite://", "table": "a.b.c"}, "table"),
        ({"url": "sqlite://", "table": ""}, "table"),
        ({"url": "sqlite://", "application": 1}, "application"),
        ({"url": "sqlite://", "create_table": "yes"}, "create_table"),
        ({"url": "sqlite://", "on_connect": "SELECT 1"}, "on_connect"),
        ({"url": "sqlite://", "connection_check_threshold": 0}, "connection_check_threshold"),
        ({"url": "sqlite://", "autopurge_probability": 2}, "autopurge_probability"),
        ({"url": "mssql+pyodbc://db/x"}, "url"),
        ({"url": "sqlite://", "pooler": "transaction"}, "pooler"),
        ({"url": "mysql+pymysql://db/x", "pooler": "session"}, "pooler"),
        ({"url": "postgresql+psycopg://db/x", "pooler": "pgbouncer"}, "pooler"),
        ({"url": "postgresql+pg8000://db/x", "pooler": "transaction"}, "pooler"),
        ({"engine": sa.create_engine("sqlite://"), "pooler": "session"}, "pooler"),
        (
            {
                "url": "postgresql+psycopg://db/x",
                "pooler": "transaction",
                "on_connect": ["SET a=1"],
            },
            "on_connect",
        ),
    ],
)
def test_bad_config(options: dict[str, t.Any], key: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseStore(**options)
    assert info.value.key == key


@pytest.mark.parametrize(
    ("module", "dialect", "extra"),
    [("psycopg", "postgresql", "postgres"), ("pymysql", "mysql", "mysql")],
)
def test_missing_driver_names_extra(
    monkeypatch: pytest.MonkeyPatch, module: str, dialect: str, extra: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(ConfigurationError) as info:
        DatabaseStore(dialect=dialect, database="x")  # type: ignore[arg-type]
    assert info.value.key == "dialect"
    assert f"flask-prancer-session[{extra}]" in str(info.value)


def test_defaults() -> None:
    store = DatabaseStore(url="sqlite://", create_table=False)
    assert (store.autopurge, store.autopurge_probability) == (True, 0.1)
    assert (store.table.name, store.application) == ("sessions", "")
    # Dead pooled connections are replaced when found, not pinged for.
    assert not store.engine.pool._pre_ping
    store.engine.dispose()


def test_application_isolation(
    make_database_store: t.Callable[..., DatabaseStore], clock: Clock
) -> None:
    short = make_database_store(application="shop", expiration_timeout=100)
    long = make_database_store(application="blog", expiration_timeout=10_000)
    short.apply(KEY, _new(app="shop"))
    long.apply(KEY, _new(app="blog"))
    assert short.fetch(KEY).data == {"app": "shop"}  # type: ignore[union-attr]
    assert long.fetch(KEY).data == {"app": "blog"}  # type: ignore[union-attr]
    short.apply(OTHER_KEY, _new(app="shop"))
    assert long.fetch(OTHER_KEY) is None
    long.remove(OTHER_KEY)
    assert short.fetch(OTHER_KEY) is not None
    clock.advance(500)
    assert long.purge() == 0
    assert short.purge() == 2
    assert long.fetch(KEY) is not None


def test_missing_table_without_create(make_database_store: t.Callable[..., DatabaseStore]) -> None:
    store = make_database_store(create_table=False)
    for call in (lambda: store.fetch(KEY), lambda: store.apply(KEY, _new(x="1"))):
        with pytest.raises(SessionStoreError) as info:
            call()
        # The driver's error in short: SQLAlchemy's would quote the parameters.
        assert isinstance(info.value.__cause__, DriverError)
        assert info.value.original_error is info.value.__cause__
        assert store.table.name in str(info.value)


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)
def test_schema_qualified_table(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    schema = services.unique_name("prancer")
    engine = sa.create_engine(url)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        store = make_database_store(table=f"{schema}.sessions")
        store.apply(KEY, _new(x="1"))
        assert store.fetch(KEY).data == {"x": "1"}  # type: ignore[union-attr]
        assert sa.inspect(engine).has_table("sessions", schema=schema)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        engine.dispose()


@pytest.mark.parametrize("url", list(URLS), indirect=True)
def test_pool_replaces_killed_connections(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    store = make_database_store()
    store.apply(KEY, _new(x="1"))
    # Used one request at a time, the pool holds a single connection.
    assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    postgresql = store.engine.dialect.name == "postgresql"
    with store.engine.connect() as connection:
        backend = connection.exec_driver_sql(
            "SELECT pg_backend_pid()" if postgresql else "SELECT CONNECTION_ID()"
        ).scalar()
    admin = sa.create_engine(url)
    try:
        with admin.begin() as connection:
            if postgresql:
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            else:
                connection.exec_driver_sql(f"KILL {int(t.cast(int, backend))}")
    finally:
        admin.dispose()
    assert store.fetch(KEY).data == {"x": "1"}  # type: ignore[union-attr]


@pytest.mark.parametrize("garbage", ["not json", "[1, 2]", '{"x": 1}', '"text"'])
def test_corrupt_row_is_logged_and_ignored(
    make_database_store: t.Callable[..., DatabaseStore],
    caplog: pytest.LogCaptureFixture,
    garbage: str,
) -> None:
    store = make_database_store()
    store.apply(KEY, _new(x="1"))
    with store.engine.begin() as connection:
        connection.execute(sa.update(store.table).values(data=garbage))
    with caplog.at_level(logging.WARNING, logger="flask_prancer_session.store.database"):
        assert store.fetch(KEY) is None
    assert [r.name for r in caplog.records] == ["flask_prancer_session.store.database"]
    assert KEY not in caplog.text
    if garbage.startswith("{"):
        return  # An object with other values than strings is merged into.
    # Data that is no JSON object counts as no session: an update that may not
    # create leaves it alone, a new session replaces it.
    assert store.apply(KEY, ChangeSet({"y": "2"})) is False
    assert _row(store, KEY).data == garbage  # type: ignore[union-attr]
    store.apply(KEY, _new(y="2"))
    assert store.fetch(KEY).data == {"y": "2"}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://postgres:hunter2@127.0.0.1:1/test",
        "mysql+pymysql://root:hunter2@127.0.0.1:1/test",
    ],
)
@pytest.mark.parametrize("create_table", [True, False], ids=["create_table", "check only"])
def test_unreachable_database(
    url: str, create_table: bool, caplog: pytest.LogCaptureFixture
) -> None:
    services.require_module("psycopg" if url.startswith("postgresql") else "pymysql", "test")
    # The app starts, as containers started before their database must: the
    # table will be checked at its first use.
    with caplog.at_level(logging.WARNING, logger="flask_prancer_session.store.database"):
        store = DatabaseStore(url=url, create_table=create_table)
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    assert "checked at its first use" in caplog.text
    assert "hunter2" not in caplog.text
    try:
        for call in (lambda: store.fetch(KEY), lambda: store.apply(KEY, _new(x="1"))):
            with pytest.raises(SessionStoreError) as info:
                call()
            assert str(info.value.__cause__).startswith("OperationalError: ")
            assert "hunter2" not in str(info.value)
    finally:
        store.close()


@pytest.mark.parametrize("server", list(URLS))
def test_a_driver_error_keeps_the_servers_code(server: str) -> None:
    _require(server)
    engine = sa.create_engine(URLS[server])
    try:
        with engine.connect() as connection, pytest.raises(sa.exc.DBAPIError) as info:
            connection.exec_driver_sql("SELEC 1")
    finally:
        engine.dispose()
    # A syntax error: SQLSTATE 42601 on PostgreSQL, error 1064 on MariaDB.
    expected = "42601" if server.startswith("postgresql") else 1064
    assert DriverError(info.value.orig).code == expected


def test_a_table_of_an_earlier_version_found_at_first_use(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    # With create_table false, a table the database (down at start) turns
    # out to hold without user_id fails every request until it is upgraded.
    store = make_database_store()
    late = make_database_store(create_table=False)
    _create_old_table(store)
    late._ready = False  # as if the database had been down when it started
    for _ in range(2):
        with pytest.raises(SessionStoreError) as info:
            late.fetch(KEY)
        assert isinstance(info.value.original_error, ConfigurationError)
        assert "ADD COLUMN user_id" in str(info.value)
    make_database_store()  # upgrades it
    assert late.fetch(KEY).data == {"x": "1"}  # type: ignore[union-attr]


def test_close_closes_the_pool_of_its_own_engine(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    store = make_database_store()
    store.apply(KEY, _new(x="1"))
    assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    store.close()
    assert store.engine.pool.checkedin() == 0  # type: ignore[attr-defined]
    # Used again, it opens a connection.
    assert store.fetch(KEY).data == {"x": "1"}  # type: ignore[union-attr]
    store.close()
    engine = sa.create_engine(url)
    try:
        given = make_database_store(engine=engine)
        given.fetch(KEY)
        given.close()
        # A given engine belongs to the caller.
        assert engine.pool.checkedin() == 1  # type: ignore[attr-defined]
    finally:
        engine.dispose()


def test_purge_deletes_only_expired(
    make_database_store: t.Callable[..., DatabaseStore], clock: Clock
) -> None:
    store = make_database_store(expiration_timeout=1000)
    store.apply(KEY, _new(x="1"))
    clock.advance(600)
    store.apply(OTHER_KEY, _new(x="2"))
    clock.advance(400)  # KEY expires exactly now
    assert store.purge() == 1
    assert store.purge() == 0
    assert _row(store, KEY) is None
    assert store.fetch(OTHER_KEY) is not None
    indexes = sa.inspect(store.engine).get_indexes(store.table.name)
    assert sorted(i["column_names"] for i in indexes) == [
        ["expires_at"],
        ["user_id", "application"],
    ]


def test_touch_changes_only_expiry(
    make_database_store: t.Callable[..., DatabaseStore], clock: Clock
) -> None:
    store = make_database_store()
    store.apply(KEY, _new(x="1"))
    before = _row(store, KEY)
    assert before is not None
    store.touch(KEY, before.expires_at + 100)
    after = _row(store, KEY)
    assert after is not None
    assert (after.data, after.created_at) == (before.data, before.created_at)
    assert after.expires_at == before.expires_at + 100
    store.touch(OTHER_KEY, clock() + 100)
    assert _row(store, OTHER_KEY) is None
    clock.advance(store.expiration_timeout + 200)
    store.touch(KEY, clock() + 100)
    assert _row(store, KEY).expires_at == after.expires_at  # type: ignore[union-attr]
    assert store.fetch(KEY) is None


def _run_threads(count: int, target: t.Callable[[int], None]) -> None:
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(number: int) -> None:
        try:
            barrier.wait()
            target(number)
        except BaseException as error:  # reported below, in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_concurrent_creates_lose_nothing(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    store = make_database_store()
    keys = [f"{n:064x}" for n in range(5)]

    def create(number: int) -> None:
        for key in keys:
            store.apply(key, _new(**{f"k{number}": "1"}))

    _run_threads(8, create)
    for key in keys:
        assert sorted(store.fetch(key).data) == [f"k{n}" for n in range(8)]  # type: ignore[union-attr]


def test_timedelta_options() -> None:
    from datetime import timedelta

    store = DatabaseStore(
        url="sqlite://",
        create_table=False,
        permanent_timeout=timedelta(days=1),
        connection_check_threshold=timedelta(hours=1),
    )
    assert store.permanent_timeout == 86400
    assert store.engine.pool._recycle == 3600
    store.engine.dispose()


ODD_KEYS = [
    *("a.b", 'a"b', "$", "", "\u00e9", "*", "a b", "[0]", "$.a", "\\", "null"),
    # MariaDB refused a JSON path to these.
    *("-1", "-", "--x", "-a", "a-b"),
]


def test_odd_key_names(make_database_store: t.Callable[..., DatabaseStore]) -> None:
    store = make_database_store()
    created = {k: f'"{n}"' for n, k in enumerate(ODD_KEYS)} | {"keep": "1"}
    store.apply(KEY, ChangeSet(created, frozenset({"gone"}), created_at=1_800_000_000.0))
    store.apply(KEY, ChangeSet({"$": "10", "new": "1"}, removed=frozenset(ODD_KEYS[:2])))
    store.apply(KEY, ChangeSet(removed=frozenset(ODD_KEYS[3:] + ["absent"])))
    assert store.fetch(KEY).data == {"$": "10", "new": "1", "keep": "1"}  # type: ignore[union-attr]
    removed = frozenset({"$", "new", "keep"})
    assert store.apply(KEY, ChangeSet(removed=removed)) is False
    assert _row(store, KEY) is None


#: Session keys as ``serializer.check_key`` lets them through: any text of
#: valid Unicode without NUL, with more of the characters JSON paths treat
#: specially than chance would give.
SESSION_KEYS = (
    st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=8)
    | st.text(st.sampled_from("-$.\"'[]*\\ 0a_\u00e9\U0001f600"), max_size=5)
    | st.sampled_from(ODD_KEYS)
)
#: Each step of a request: the keys it sets, the keys it removes, whether it
#: may create the session.
STEPS = st.lists(
    st.tuples(
        st.dictionaries(SESSION_KEYS, st.sampled_from(['"1"', "2", '"-"']), max_size=3),
        st.frozensets(SESSION_KEYS, max_size=3),
        st.booleans(),
    ),
    min_size=1,
    max_size=5,
)


@pytest.fixture
def one_store(make_database_store: t.Callable[..., DatabaseStore]) -> DatabaseStore:
    """A store on :func:`url`, shared by the examples of a property test."""
    return make_database_store()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=STEPS)
def test_keys_are_set_and_removed_as_in_a_dict(
    one_store: DatabaseStore, steps: list[tuple[dict[str, str], frozenset[str], bool]]
) -> None:
    key = uuid.uuid4().hex * 2
    model: dict[str, str] | None = None
    for number, (updated, removed, create) in enumerate(steps):
        created_at = one_store.clock() if create or number == 0 else None
        changes = ChangeSet(updated, removed, created_at=created_at)
        expected = (
            None if model is None and created_at is None else changes.merged_into(model or {})
        )
        model = expected or None
        assert one_store.apply(key, changes) is (model is not None)
        record = one_store.fetch(key)
        assert (record and record.data) == model


def test_apply_is_one_statement(make_database_store: t.Callable[..., DatabaseStore]) -> None:
    store = make_database_store()
    sent = _record_statements(store)

    def count() -> int:
        return len([s for s in sent if not s.startswith("BEGIN")])

    assert store.apply(KEY, _new(a="1", b="2")) is True
    assert store.apply(KEY, ChangeSet({"c": "3"}, removed=frozenset({"a"}))) is True
    assert store.apply(KEY, _new(d="4")) is True
    assert count() == 3
    # Only removals can empty a session: a second statement deletes it if so.
    assert store.apply(KEY, ChangeSet(removed=frozenset({"b", "c", "d"}))) is False
    assert count() == 5
    assert _row(store, KEY) is None


def _add_expired(store: DatabaseStore, count: int) -> None:
    now = store.clock()
    rows = [
        {
            "id": uuid.uuid4().hex * 2,
            "application": store.application,
            "created_at": now - 100,
            "expires_at": now - 1 - n % 50,
            "data": '{"x":"1"}',
        }
        for n in range(count)
    ]
    with store.engine.begin() as connection:
        connection.execute(sa.insert(store.table), rows)


def test_purge_runs_beside_writers(make_database_store: t.Callable[..., DatabaseStore]) -> None:
    # As with autopurge at probability 1 in several processes: purges keep
    # running while 16 requests write to one session.
    store = make_database_store()
    store.apply(KEY, _new(start="1"))
    _add_expired(store, 1200)
    done = threading.Event()
    purged: list[int] = []
    errors: list[BaseException] = []

    def purge_in_a_loop() -> None:
        try:
            while not done.is_set():
                _add_expired(store, 50)
                purged.append(store.purge())
        except BaseException as error:  # reported below
            errors.append(error)

    def write(number: int) -> None:
        for i in range(15):
            store.apply(KEY, ChangeSet({f"t{number}k{i}": "1"}))

    purgers = [threading.Thread(target=purge_in_a_loop) for _ in range(4)]
    for purger in purgers:
        purger.start()
    try:
        _run_threads(16, write)
    finally:
        done.set()
        for purger in purgers:
            purger.join()
    assert errors == []
    assert sum(purged) >= 1200
    assert len(store.fetch(KEY).data) == 1 + 16 * 15  # type: ignore[union-attr]


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_sqlite_file_is_private_and_in_wal_mode(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    path = Path(sa.make_url(url).database or "")
    old_umask = os.umask(0o022)
    try:
        store = make_database_store()
        store.apply(KEY, _new(x="1"))
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o600
    assert Path(f"{path}-wal").stat().st_mode & 0o777 == 0o600
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_sqlite_file_replaced_while_running(
    make_database_store: t.Callable[..., DatabaseStore], url: str, tmp_path: Path
) -> None:
    path = sa.make_url(url).database or ""
    store = make_database_store()
    store.apply(KEY, _new(x="old"))
    backup = make_database_store(url=f"sqlite:///{tmp_path / 'backup.db'}")
    backup.apply(OTHER_KEY, _new(x="restored"))
    backup.engine.dispose()
    # A restore in WAL mode replaces the file and drops its -wal and -shm.
    os.replace(tmp_path / "backup.db", path)
    os.remove(f"{path}-wal")
    os.remove(f"{path}-shm")
    assert store.fetch(OTHER_KEY).data == {"x": "restored"}  # type: ignore[union-attr]
    assert store.fetch(KEY) is None


def _create_store(url: str, table: str, barrier: t.Any) -> None:
    barrier.wait()
    DatabaseStore(url=url, table=table).engine.dispose()


@pytest.mark.parametrize("url", ["sqlite", "postgresql"], indirect=True)
def test_workers_starting_together_create_the_table_once(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    table = services.unique_name("sessions")
    make_database_store(table=table, create_table=False)  # to drop the table afterwards
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(8)
    workers = [context.Process(target=_create_store, args=(url, table, barrier)) for _ in range(8)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * 8


def test_failures_never_show_session_data(
    make_database_store: t.Callable[..., DatabaseStore], url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Flask-SQLAlchemy's engine shows parameters in its errors, and a failing
    # CHECK makes PostgreSQL quote the row.
    engine = sa.create_engine(url, hide_parameters=False)
    try:
        store = make_database_store(engine=engine, create_table=False)
        checked = store.table.to_metadata(sa.MetaData())
        checked.append_constraint(sa.CheckConstraint("length(data) < 40"))
        checked.create(engine)
        secret = "hunter2-secret-value"
        store.apply(KEY, _new(x="1"))
        with caplog.at_level(logging.DEBUG), pytest.raises(SessionStoreError) as info:
            store.apply(KEY, ChangeSet({"token": f'"{secret}"'}))
        text = "".join(traceback.format_exception(info.value))
        assert store.table.name in text
        assert secret not in text
        assert secret not in caplog.text
        assert secret not in repr(info.value.original_error)
    finally:
        engine.dispose()


@pytest.mark.parametrize("application", ["a\x00b", "tab\there", "del\x7f"])
def test_application_with_control_characters(application: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseStore(url="sqlite://", application=application)
    assert info.value.key == "application"


@pytest.mark.parametrize(
    ("url", "length"),
    [
        ("postgresql+psycopg://127.0.0.1:1/x", 52),
        ("mysql+pymysql://root@127.0.0.1:1/x", 53),
    ],
)
def test_table_name_must_fit_with_its_index(url: str, length: int) -> None:
    services.require_module("psycopg" if "psycopg" in url else "pymysql", "test")
    store = DatabaseStore(url=url, table="t" * length, create_table=False)
    store.engine.dispose()
    with pytest.raises(ConfigurationError) as info:
        DatabaseStore(url=url, table="t" * (length + 1))
    assert info.value.key == "table"
    assert "_expires_at" in str(info.value)


@pytest.mark.parametrize(
    ("url", "drivername"),
    [
        ("postgres://u:p@127.0.0.1:1/x", "postgresql+psycopg"),
        ("postgresql://u:p@127.0.0.1:1/x", "postgresql+psycopg"),
        ("postgres+psycopg://u:p@127.0.0.1:1/x", "postgresql+psycopg"),
        ("mysql://u:p@127.0.0.1:1/x", "mysql+pymysql"),
        ("mariadb://u:p@127.0.0.1:1/x", "mariadb+pymysql"),
    ],
)
def test_url_forms_hosting_platforms_hand_out(url: str, drivername: str) -> None:
    services.require_module("psycopg" if "postgres" in url else "pymysql", "test")
    if importlib.util.find_spec("MySQLdb") and "pymysql" in drivername:
        pytest.skip("MySQLdb is installed")
    store = DatabaseStore(url=url, create_table=False)
    assert store.engine.url.drivername == drivername
    store.engine.dispose()


def test_url_with_a_missing_driver_says_what_to_use() -> None:
    with pytest.raises(ConfigurationError) as info:
        DatabaseStore(url="postgresql+pg8000://u@127.0.0.1:1/x")
    assert info.value.key == "url"
    assert "postgresql+psycopg://" in str(info.value)
    assert "flask-prancer-session[postgres]" in str(info.value)


@pytest.mark.parametrize("url", ["postgresql"], indirect=True)
def test_postgres_url_scheme_works(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    store = make_database_store(url=url.replace("postgresql+psycopg://", "postgres://"))
    assert store.apply(KEY, _new(x="1")) is True
    assert store.fetch(KEY).data == {"x": "1"}  # type: ignore[union-attr]


def _bind(user: str | None, created: bool = True, **data: str) -> ChangeSet:
    if user is not None:
        data[USER_KEY] = json.dumps(user)
    return ChangeSet(data, created_at=1_800_000_000.0 if created else None)


def test_user_id_is_kept_by_the_statement_that_writes_the_data(
    make_database_store: t.Callable[..., DatabaseStore], clock: Clock
) -> None:
    store = make_database_store()
    sent = _record_statements(store)
    store.apply(KEY, _bind("ann", a="1"))
    assert _row(store, KEY).user_id == "ann"  # type: ignore[union-attr]
    # A request that does not bind keeps the user, creating or not.
    store.apply(KEY, _bind(None, b="2"))
    assert _row(store, KEY).user_id == "ann"  # type: ignore[union-attr]
    store.apply(KEY, _bind(None, created=False, c="3"))
    assert _row(store, KEY).user_id == "ann"  # type: ignore[union-attr]
    store.apply(KEY, _bind("bob", created=False))
    assert _row(store, KEY).user_id == "bob"  # type: ignore[union-attr]
    store.apply(KEY, ChangeSet({USER_KEY: "42"}))  # not a JSON string: no user
    assert _row(store, KEY).user_id is None  # type: ignore[union-attr]
    store.apply(KEY, _bind("ann", created=False))
    store.apply(KEY, ChangeSet(removed=frozenset({USER_KEY})))
    assert _row(store, KEY).user_id is None  # type: ignore[union-attr]
    # One statement each; the last only removed keys: a second deletes an empty row.
    writes = [s for s in sent if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]
    assert len(writes) == 7 + 1
    store.apply(KEY, _bind("ann", created=False))
    # An expired row replaced by a new session loses its user.
    clock.advance(store.expiration_timeout)
    store.apply(KEY, _bind(None, x="1"))
    row = _row(store, KEY)
    assert row is not None
    assert (row.data, row.user_id) == ('{"x":"1"}', None)


def test_compare_and_set_holds_the_session_until_it_writes(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    # flask session rekey writes only values still as read. A logout landing
    # after the store compared them must wait for the write, not be undone by it.
    store = make_database_store()
    other = make_database_store()  # another process's pool
    store.apply(KEY, _bind("ann", a='"1"'))
    logouts: list[threading.Thread] = []
    results: list[bool] = []

    def logout() -> None:
        results.append(other.apply(KEY, ChangeSet({"a": '"2"'}, frozenset({USER_KEY}))))

    def log_out_after_the_read(
        connection: t.Any, cursor: t.Any, statement: str, *args: t.Any
    ) -> None:
        if not logouts and statement.lstrip().upper().startswith("SELECT"):
            logouts.append(threading.Thread(target=logout))
            logouts[0].start()
            # Long enough for the logout to land, were the session not held.
            logouts[0].join(timeout=0.5)

    sa.event.listen(store.engine, "after_cursor_execute", log_out_after_the_read)
    try:
        changes = ChangeSet(
            {"a": '"A"', USER_KEY: '"ann"'}, expected={"a": '"1"', USER_KEY: '"ann"'}
        )
        assert store.apply(KEY, changes) is True
    finally:
        sa.event.remove(store.engine, "after_cursor_execute", log_out_after_the_read)
    assert len(logouts) == 1
    logouts[0].join()
    assert results == [True]
    assert store.fetch(KEY).data == {"a": '"2"'}  # type: ignore[union-attr]
    assert store.sessions_of("ann") == {}
    assert _index_mismatches(store) == []


def test_compare_and_set_keeps_the_index_in_step(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    store = make_database_store()
    store.apply(KEY, _bind("ann", a='"1"'))
    store.apply(OTHER_KEY, _bind("ann", a='"1"'))
    # Bound to another user meanwhile: the old binding is not written back.
    store.apply(KEY, _bind("bob", created=False))
    for key in (KEY, OTHER_KEY):
        store.apply(
            key,
            ChangeSet({USER_KEY: '"cy"', "a": '"2"'}, expected={USER_KEY: '"ann"', "a": '"1"'}),
        )
    assert set(store.sessions_of("bob")) == {KEY}
    assert set(store.sessions_of("cy")) == {OTHER_KEY}
    # Removing every key ends the session, as any other change does.
    removed = frozenset({USER_KEY, "a"})
    assert store.apply(KEY, ChangeSet(removed=removed, expected={"a": "x"})) is False
    assert _row(store, KEY) is None
    assert _index_mismatches(store) == []


def test_scan_reads_in_batches_by_key(
    make_database_store: t.Callable[..., DatabaseStore],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(statements, "SCAN_BATCH", 3)
    store = make_database_store()
    expired = f"{0:064x}"
    store.apply(expired, _new(x="old"))
    clock.advance(store.expiration_timeout)
    keys = [f"{n:064x}" for n in range(1, 9)]
    for key in reversed(keys):
        store.apply(key, _new(x=key[-1]))
    reads = _record_statements(store)
    scan = store.scan()
    assert next(scan) == (keys[0], store.fetch(keys[0]))
    reads.clear()
    # No transaction is held between batches: another can write meanwhile.
    store.apply(keys[5], ChangeSet({"y": "1"}))
    rest = list(scan)
    assert [key for key, _ in rest] == keys[1:]
    assert rest[4][1].data == {"x": "6", "y": "1"}
    assert len([s for s in reads if s.lstrip().upper().startswith("SELECT")]) == 2


def test_clear_deletes_in_batches(
    make_database_store: t.Callable[..., DatabaseStore],
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(statements, "PURGE_BATCH", 2)
    store = make_database_store()
    for n in range(2):
        store.apply(f"{n:064x}", _new(x="expiring"))
    clock.advance(store.expiration_timeout)
    for n in range(2, 7):
        store.apply(f"{n:064x}", _new(x="live"))
    transactions: list[object] = []
    sa.event.listen(store.engine, "commit", lambda connection: transactions.append(connection))
    assert store.clear() == 5
    assert len(transactions) == 4
    with store.engine.connect() as connection:
        assert connection.execute(sa.select(sa.func.count()).select_from(store.table)).scalar() == 0


def test_application_names_that_sql_quotes_keep_their_sessions_apart(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    # The statements hold the application's name as a literal, quoted once
    # for all: quotes, backslashes and percent signs stay what they are.
    names = ["it's", "it\\'s", "100%", "%(key)s", "\\", "a\\%s", ""]
    stores = [make_database_store(application=name) for name in names]
    for store in stores:
        store.apply(KEY, _new(app=store.application))
        store.apply(KEY, ChangeSet({"n": "1"}))
        store.touch(KEY, store.clock() + 5000)
    with stores[0].engine.connect() as connection:
        rows = connection.execute(sa.select(stores[0].table.c.application)).scalars().all()
    assert sorted(rows) == sorted(names)
    for store in stores:
        record = store.fetch(KEY)
        assert record is not None and record.data == {"app": store.application, "n": "1"}
        assert record.expires_at == store.clock() + 5000
    assert stores[1].remove(KEY)
    assert stores[1].fetch(KEY) is None
    assert all(store.fetch(KEY) is not None for store in stores if store is not stores[1])


def test_applications_sharing_a_table_keep_their_users_apart(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    shop = make_database_store(application="shop")
    blog = make_database_store(application="blog")
    for store in (shop, blog):
        store.apply(KEY, _bind("ann", app=store.application))
        store.apply(OTHER_KEY, _bind(None, app=store.application))
    assert [(k, r.data["app"]) for k, r in shop.scan()] == [(KEY, "shop"), (OTHER_KEY, "shop")]
    assert {k: r.data["app"] for k, r in blog.sessions_of("ann").items()} == {KEY: "blog"}
    assert shop.remove_user("ann") == 1
    assert shop.sessions_of("ann") == {}
    assert set(blog.sessions_of("ann")) == {KEY}
    assert blog.clear() == 2
    assert [k for k, _ in shop.scan()] == [OTHER_KEY]
    assert list(blog.scan()) == []


def _explain(store: DatabaseStore, statement: sa.Select[t.Any]) -> str:
    dialect = store.engine.dialect
    bound = statement.params(user="ann", now=0.0, after="", limit=500)
    sql = str(bound.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = {"sqlite": "EXPLAIN QUERY PLAN ", "postgresql": "EXPLAIN "}[dialect.name]
    with store.engine.connect() as connection:
        if dialect.name == "postgresql":
            # On a table this small a sequential scan would win.
            connection.exec_driver_sql("SET enable_seqscan = off")
        rows = connection.exec_driver_sql(prefix + sql).all()
        connection.rollback()
    return "\n".join(str(tuple(row)) for row in rows)


@pytest.mark.parametrize("url", ["sqlite", "postgresql"], indirect=True)
def test_sessions_of_a_user_are_found_by_the_index(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    store = make_database_store()
    for n in range(20):
        store.apply(f"{n:064x}", _bind("ann" if n % 10 == 0 else f"u{n}", a="1"))
    index = f"{store.table.name}_user_id"
    # remove_user's DELETE has the same WHERE clause.
    assert index in _explain(store, store._sql.of_user)


@pytest.mark.parametrize("url", ["sqlite"], indirect=True)
def test_purge_and_listing_walk_their_own_index(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    # Each batch must start where it is needed, not scan and sort every row
    # of the application (a million-session purge would take hours). SQLite
    # plans without statistics, so the columns of each index decide; the
    # servers plan by their statistics.
    store = make_database_store()
    for n in range(20):
        store.apply(f"{n:064x}", _bind(None, a="1"))
    name = store.table.name
    expired = _explain(store, store._sql.expired)
    assert f"{name}_expires_at" in expired
    for listing in (store._sql.batch, store._sql.scan):
        plan = _explain(store, listing)
        assert f"{name}_user_id" not in plan
        assert "TEMP B-TREE" not in plan


#: Sessions an earlier version wrote, before the user_id column: key mapped
#: to the application, the data, and whether the session has expired.
_OLD_SESSIONS: dict[str, tuple[str, str, bool]] = {
    f"{1:064x}": ("", json.dumps({USER_KEY: '"ann"', "a": "1"}), False),
    f"{2:064x}": ("blog", json.dumps({USER_KEY: '"ann"'}), False),
    f"{3:064x}": ("", json.dumps({USER_KEY: '"b\\u00e9"'}), False),
    f"{4:064x}": ("", json.dumps({USER_KEY: '"ann"'}), True),
    # No user: a value that is no JSON string, or no such key.
    f"{5:064x}": ("", json.dumps({USER_KEY: "42"}), False),
    f"{6:064x}": ("", json.dumps({USER_KEY: "not json"}), False),
    f"{7:064x}": ("", json.dumps({"x": json.dumps(USER_KEY)}), False),
    f"{8:064x}": ("", f'not json "{USER_KEY}"', False),
}


def _create_old_table(
    store: DatabaseStore, sessions: t.Mapping[str, tuple[str, str, bool]] = {}
) -> None:
    """Replace the store's table by one of an earlier version, holding one
    session under KEY and ``sessions``."""
    name = store.table.name
    old = sa.Table(
        name,
        sa.MetaData(),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("application", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Index(f"{name}_expires_at", "expires_at"),
    )
    now = store.clock()
    rows = [{"id": KEY, "application": "", "data": '{"x":"1"}', "expires_at": now + 100}]
    rows += [
        {
            "id": key,
            "application": application,
            "data": data,
            "expires_at": now + (-1 if expired else 100),
        }
        for key, (application, data, expired) in sessions.items()
    ]
    with store.engine.begin() as connection:
        store.table.drop(connection)
        old.create(connection)
        connection.execute(sa.insert(old).values(created_at=0.0), rows)
    store.engine.dispose()


def _index_mismatches(store: DatabaseStore) -> list[str]:
    """Return the keys of the sessions, of any application, whose user_id
    is not the user their data binds them to."""
    with store.engine.connect() as connection:
        rows = connection.execute(sa.select(store.table)).all()
    mismatches = []
    for row in rows:
        try:
            value = json.loads(row.data).get(USER_KEY)
        except (ValueError, AttributeError):
            value = None
        if row.user_id != (None if value is None else user_id_of(value)):
            mismatches.append(row.id)
    return mismatches


def test_a_table_of_an_earlier_version_is_upgraded(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    _create_old_table(make_database_store())
    with pytest.raises(ConfigurationError) as info:
        make_database_store(create_table=False)
    assert info.value.key == "table"
    assert "ADD COLUMN user_id VARCHAR(255)" in str(info.value)
    assert "(user_id, application)" in str(info.value)
    store = make_database_store()
    inspector = sa.inspect(store.engine)
    assert "user_id" in {column["name"] for column in inspector.get_columns(store.table.name)}
    indexes = {i["name"]: i["column_names"] for i in inspector.get_indexes(store.table.name)}
    assert indexes[f"{store.table.name}_user_id"] == ["user_id", "application"]
    assert store.fetch(KEY).data == {"x": "1"}  # type: ignore[union-attr]
    store.apply(KEY, _bind("ann", created=False))
    assert set(store.sessions_of("ann")) == {KEY}
    make_database_store(create_table=False)


def test_an_upgrade_fills_user_id_from_the_data(
    make_database_store: t.Callable[..., DatabaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Sessions bound before the column existed must be found by user, or
    # "log out everywhere" would leave them logged in.
    monkeypatch.setattr(statements, "PURGE_BATCH", 2)
    # A user id too long for the column stays out of the index.
    too_long = f"{9:064x}"
    sessions = _OLD_SESSIONS | {
        too_long: ("", json.dumps({USER_KEY: json.dumps("u" * 256)}), False)
    }
    _create_old_table(make_database_store(), sessions)
    store = make_database_store()
    blog = make_database_store(application="blog")
    assert _index_mismatches(store) == [too_long]
    assert set(store.sessions_of("ann")) == {f"{1:064x}"}
    assert set(blog.sessions_of("ann")) == {f"{2:064x}"}
    assert set(store.sessions_of("b\u00e9")) == {f"{3:064x}"}
    assert store.remove_user("ann") == 1
    assert _row(store, f"{4:064x}") is None  # expired, and gone with the others
    assert set(blog.sessions_of("ann")) == {f"{2:064x}"}
    # Filling again changes nothing.
    store._keeper.fill_user_ids()
    assert _index_mismatches(store) == [too_long]


def test_an_upgrade_stopped_before_the_index_is_finished_at_the_next_start(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    old = make_database_store()
    _create_old_table(old, _OLD_SESSIONS)
    with old.engine.begin() as connection:
        connection.execute(old._keeper.upgrade[0])
    old.engine.dispose()
    store = make_database_store()
    assert _index_mismatches(store) == []
    indexes = {i["name"] for i in sa.inspect(store.engine).get_indexes(store.table.name)}
    assert f"{store.table.name}_user_id" in indexes


def _start_worker(url: str, table: str, barrier: t.Any) -> None:
    barrier.wait()
    DatabaseStore(url=url, table=table).engine.dispose()


def test_workers_starting_together_upgrade_the_table_once(
    make_database_store: t.Callable[..., DatabaseStore], url: str
) -> None:
    store = make_database_store()
    _create_old_table(store, _OLD_SESSIONS)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(4)
    workers = [
        context.Process(target=_start_worker, args=(url, store.table.name, barrier))
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0] * 4
    assert _index_mismatches(make_database_store(create_table=False)) == []


def test_clear_and_remove_user_run_beside_writers(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    store = make_database_store()
    keys = [f"{n:064x}" for n in range(8)]
    done = threading.Event()
    errors: list[BaseException] = []

    def end_sessions() -> None:
        try:
            while not done.is_set():
                store.remove_user("ann")
                store.clear()
        except BaseException as error:  # reported below
            errors.append(error)

    def write(number: int) -> None:
        for i in range(20):
            key = keys[(number + i) % len(keys)]
            store.apply(key, _bind("ann" if i % 2 else None, True, **{f"t{number}": str(i)}))
            store.apply(key, ChangeSet({f"u{number}": str(i)}))

    enders = [threading.Thread(target=end_sessions) for _ in range(2)]
    for ender in enders:
        ender.start()
    try:
        _run_threads(8, write)
    finally:
        done.set()
        for ender in enders:
            ender.join()
    assert errors == []
    # The index is in step with the data.
    assert _index_mismatches(store) == []
    bound = {key for key, record in store.scan() if USER_KEY in record.data}
    assert set(store.sessions_of("ann")) == bound
    assert store.remove_user("ann") == len(bound)


@pytest.mark.parametrize(
    ("operation", "statements"), [("remove_user", 2), ("clear", 3)], ids=["remove_user", "clear"]
)
def test_a_write_between_the_statements_of_a_bulk_delete(
    make_database_store: t.Callable[..., DatabaseStore], operation: str, statements: int
) -> None:
    # The interleavings the test above leaves to chance, one at a time: a
    # request binding, unbinding or creating a bound session lands, from
    # another pool, after each statement of the bulk delete's transaction.
    # It waits where a row it writes is locked (and on SQLite, always).
    store = make_database_store()
    other = make_database_store()
    landed: list[threading.Thread] = []
    sent: list[str] = []
    plan: list[tuple[int, str, ChangeSet]] = []  # after which statement, the write

    def write_meanwhile(connection: t.Any, cursor: t.Any, statement: str, *args: t.Any) -> None:
        if statement.lstrip().upper().startswith(("SELECT", "DELETE")):
            sent.append(statement)
        if plan and len(sent) == plan[0][0] and not landed:
            landed.append(threading.Thread(target=other.apply, args=plan[0][1:]))
            landed[0].start()
            landed[0].join(timeout=0.2)

    sa.event.listen(store.engine, "after_cursor_execute", write_meanwhile)
    for after in range(1, statements + 1):
        for key, changes in [
            (OTHER_KEY, _bind("ann", created=False)),
            (KEY, ChangeSet(removed=frozenset({USER_KEY}))),
            (f"{3:064x}", _bind("ann", a="1")),
        ]:
            store.apply(KEY, _bind("ann", a="1"))
            store.apply(OTHER_KEY, _bind(None, a="1"))
            landed.clear()
            sent.clear()
            plan[:] = [(after, key, changes)]
            store.remove_user("ann") if operation == "remove_user" else store.clear()
            assert len(landed) == 1
            landed[0].join()
            plan.clear()
            assert _index_mismatches(store) == []
            bound = {key for key, record in store.scan() if USER_KEY in record.data}
            assert set(store.sessions_of("ann")) == bound
            store.clear()


@pytest.mark.parametrize(
    ("url", "milliseconds"),
    [("sqlite:///{}", 15000), ("sqlite:///{}?timeout=2", 2000)],
    ids=["default", "from the URL"],
)
def test_sqlite_busy_timeout(tmp_path: Path, url: str, milliseconds: int) -> None:
    store = DatabaseStore(url=url.format(tmp_path / "s.db"))
    try:
        with store.engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == milliseconds
    finally:
        store.close()


@pytest.mark.parametrize("durable", [False, True])
def test_synchronous_commit_option(tmp_path: Path, durable: bool) -> None:
    store = DatabaseStore(url=f"sqlite:///{tmp_path / 's.db'}", synchronous_commit=durable)
    with store.engine.connect() as connection:
        level = connection.exec_driver_sql("PRAGMA synchronous").scalar()
    store.engine.dispose()
    assert level == (2 if durable else 1)  # FULL, NORMAL


@pytest.mark.parametrize("durable", [False, True])
def test_postgresql_synchronous_commit_follows_the_option(durable: bool) -> None:
    services.require_module("psycopg", "postgres")
    services.require_server("PostgreSQL", "127.0.0.1", 5432)
    store = DatabaseStore(url=services.POSTGRES_URL, synchronous_commit=durable, create_table=False)
    try:
        with store.engine.connect() as connection:
            level = connection.exec_driver_sql("SHOW synchronous_commit").scalar()
    finally:
        store.engine.dispose()
    assert level == ("on" if durable else "off")


@pytest.mark.parametrize("url", ["postgresql", "postgresql-psycopg2"], indirect=True)
def test_postgresql_plans_stay_on_the_primary_key_with_stale_statistics(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    # A plan PostgreSQL keeps for a prepared statement (a generic plan, which
    # it may pick after five executions), made while the table held one
    # session, and still used once it holds thousands: it scanned the table
    # or the expires_at index, at milliseconds per request.
    store = make_database_store(autopurge=False)
    name = store.table.name
    store.apply(KEY, _new(x="1"))
    with store.engine.begin() as connection:
        connection.exec_driver_sql(f"ALTER TABLE {name} SET (autovacuum_enabled = false)")
        connection.exec_driver_sql(f"ANALYZE {name}")
    sql = store._sql
    hot = {
        "fetch": sql.fetch,
        "fetch_for_update": sql.fetch_for_update,
        "touch": sql.touch,
        "delete_live": sql.delete_live,
        "delete_empty": sql.delete_empty,
        "merge": sql.merges(0, False)[0],
        "merge_binding": sql.merges(0, True)[0],
    }
    numbered = copy.copy(store.engine.dialect)
    numbered.paramstyle, numbered.positional = "numeric_dollar", True
    values = {
        "key": KEY,
        "now": 1.0,
        "new_expiry": 2.0,
        "idle": 2.0,
        "absolute": None,
        "user": None,
        "removed": [],
        "patch": "{}",
    }
    executions = {}
    plans = {}
    # The store's own connection, under its settings.
    with store.engine.connect() as connection:
        connection.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        for label, statement in hot.items():
            compiled = execution._Compiled.of(statement, numbered)
            arguments = ", ".join(_pg_literal(values[n]) for n in compiled.order or ())
            connection.exec_driver_sql(f"PREPARE prancer_{label} AS {compiled.sql}")
            executions[label] = f"EXPLAIN EXECUTE prancer_{label}({arguments})"
            connection.exec_driver_sql(executions[label])  # plans it, while the table is small
        connection.rollback()
        with store.engine.begin() as other:
            other.exec_driver_sql(
                f"INSERT INTO {name} (id, application, created_at, expires_at, data)"
                " SELECT md5(n::text) || md5(n::text), '', 0, 1e12, '{}'"
                " FROM generate_series(1, 20000) AS n"
            )
        for label, explain in executions.items():
            plan = connection.exec_driver_sql(explain).scalars().all()
            plans[label] = "\n".join(plan)
        connection.invalidate()  # not back to the pool with that setting
    for label, plan in plans.items():
        assert f"Index Scan using {name}_pkey" in plan, f"{label}:\n{plan}"
        assert "Seq Scan" not in plan and f"{name}_expires_at" not in plan, f"{label}:\n{plan}"


def _pg_literal(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, list):
        return "ARRAY[]::text[]"
    return f"'{value}'"


@pytest.mark.parametrize("url", list(URLS), indirect=True)
def test_every_driver_s_deadlock_is_recognised_as_a_conflict(url: str) -> None:
    # A real deadlock between two transactions: whichever the server picks
    # as the victim must be recognised, whatever driver reports it.
    table = services.unique_name("deadlock")
    engine = sa.create_engine(url)
    postgresql = engine.dialect.name == "postgresql"
    barrier = threading.Barrier(2, timeout=10)
    errors: list[sa.exc.DBAPIError] = []

    def lock_both(first: int, second: int) -> None:
        with engine.connect() as connection:
            try:
                if postgresql:
                    connection.exec_driver_sql("SET deadlock_timeout = '10ms'")
                connection.exec_driver_sql(f"UPDATE {table} SET n = n + 1 WHERE id = {first}")
                barrier.wait()
                connection.exec_driver_sql(f"UPDATE {table} SET n = n + 1 WHERE id = {second}")
                connection.commit()
            except sa.exc.DBAPIError as error:
                errors.append(error)

    try:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, n INTEGER)")
            connection.exec_driver_sql(f"INSERT INTO {table} VALUES (1, 0), (2, 0)")
        threads = [threading.Thread(target=lock_both, args=pair) for pair in ((1, 2), (2, 1))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(errors) == 1
        profile = profiles.PROFILES[engine.dialect.name](profiles.Timeouts(None, None))
        assert profile.is_conflict(errors[0])
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
        engine.dispose()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("url", ["sqlite", *URLS], indirect=True)
def test_a_forked_worker_opens_its_own_connections(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    # gunicorn --preload forks workers from a master that may have used the
    # store: a pooled connection shared by two processes mixes their replies.
    store = make_database_store()
    store.apply(KEY, _new(x="parent"))
    assert store.engine.pool.checkedin() == 1  # type: ignore[attr-defined]

    def write(prefix: str) -> None:
        for n in range(200):
            record = store.fetch(KEY)
            assert record is not None and record.data["x"] == "parent"
            store.apply(KEY, ChangeSet({f"{prefix}{n % 5}": str(n)}))

    run_forked(lambda: write("c"), lambda: write("p"))


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("url", ["sqlite", "postgresql"], indirect=True)
def test_a_fork_while_a_first_use_prepares_the_table(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    # A store that started while its database was down prepares its table
    # at its first use, under a lock that a fork may copy held.
    store = make_database_store()
    store.apply(KEY, _new(x="1"))
    store._ready = False

    def fetch() -> None:
        assert store.fetch(KEY) is not None

    hold_while_forking([store._ready_lock], fetch)


def test_the_watchdog_shuts_the_sockets_of_operations_past_their_deadline_only() -> None:
    import socket

    ended, ended_peer = socket.socketpair()
    late, late_peer = socket.socketpair()
    try:
        # Operations of many threads at once, each ended in time.
        def operate() -> None:
            for _ in range(200):
                with watchdog.WATCHDOG.guard(ended, 30):
                    pass

        threads = [threading.Thread(target=operate) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with watchdog.WATCHDOG.guard(late, 0.05):
            late.settimeout(10)
            assert late.recv(1) == b""  # shut while it waited for a reply
        ended.sendall(b"x")
        assert ended_peer.recv(1) == b"x"
    finally:
        for sock in (ended, ended_peer, late, late_peer):
            sock.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("url", ["postgresql", "postgresql-psycopg2"], indirect=True)
def test_a_fork_while_the_watchdog_holds_its_locks(
    make_database_store: t.Callable[..., DatabaseStore],
) -> None:
    # The child gets a copy of the locks, held by a thread it does not have.
    store = make_database_store()
    store.apply(KEY, _new(x="1"))

    def fetch() -> None:
        assert store.fetch(KEY) is not None

    dog = watchdog.WATCHDOG
    hold_while_forking([dog._start_lock, dog._shut_lock, dog._wake._cond], fetch)
