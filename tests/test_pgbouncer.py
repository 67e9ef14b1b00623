"""The database store through PgBouncer, in transaction and in session pooling
mode, with psycopg and psycopg2: the conformance and concurrency suites,
counting visitors, and settings that reach no other client of a pooled
connection. ``.ci/pgbouncer`` starts PgBouncer on loopback in front of the
test PostgreSQL."""

from __future__ import annotations

import inspect
import threading
import typing as t

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import session

from flask_prancer_session import PrancerSession
from flask_prancer_session.changes import ChangeSet
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.store.base import StoreDriver
from flask_prancer_session.store.database import DatabaseStore

from . import services
from . import test_concurrency
from . import test_store_contract
from . import test_store_database
from .clock import FakeClock
from .stores import StoreMaker

#: PgBouncer's port for each pooling mode, as .ci/pgbouncer starts them.
PORTS = {"transaction": 6432, "session": 6433}
#: Each driver's server in services.DATABASE_SERVERS.
DRIVERS = {"psycopg": "postgresql", "psycopg2": "postgresql-psycopg2"}
VARIANTS = [(mode, driver) for mode in PORTS for driver in DRIVERS]
#: A database of PgBouncer's that reaches PostgreSQL's "test" through one
#: server connection, which every client then shares.
SINGLE = "test_single"

KEY = "c" * 64


def _url(mode: str, driver: str, database: str = "test") -> str:
    """Return the URL of PgBouncer in pooling ``mode``, for ``driver``."""
    parsed = sa.make_url(services.DATABASE_SERVERS[DRIVERS[driver]].url)
    return parsed.set(port=PORTS[mode], database=database).render_as_string(hide_password=False)


def _drop(*tables: str) -> None:
    engine = sa.create_engine(services.POSTGRES_URL)
    try:
        with engine.begin() as connection:
            for table in tables:
                connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    finally:
        engine.dispose()


@pytest.fixture(params=VARIANTS, ids=[f"{mode}-{driver}" for mode, driver in VARIANTS])
def variant(request: pytest.FixtureRequest) -> tuple[str, str]:
    """A pooling mode and a driver."""
    mode, driver = request.param
    services.DATABASE_SERVERS[DRIVERS[driver]].require()
    services.require_server(f"PgBouncer ({mode} pooling)", "127.0.0.1", PORTS[mode])
    return mode, driver


@pytest.fixture
def make_store(variant: tuple[str, str], clock: FakeClock) -> t.Iterator[StoreMaker]:
    """Makes database stores on one new table through PgBouncer, which
    :mod:`test_store_contract` and :mod:`test_concurrency` use here."""
    mode, driver = variant
    table = services.unique_name("sessions_pooled")
    made: list[DatabaseStore] = []

    def make() -> StoreDriver:
        made.append(DatabaseStore(url=_url(mode, driver), table=table, pooler=mode))
        made[-1].clock = clock
        return made[-1]

    try:
        yield make
    finally:
        for store in made:
            store.close()
        _drop(table)


def _suite(module: object) -> dict[str, t.Callable[..., None]]:
    """Return the tests of ``module`` that take a store from ``make_store``,
    to run here through PgBouncer (without those that pick their stores)."""
    return {
        name: test
        for name, test in vars(module).items()
        if name.startswith("test_")
        and "make_store" not in inspect.signature(test).parameters
        and not any(mark.name == "parametrize" for mark in getattr(test, "pytestmark", []))
    }


globals().update(_suite(test_store_contract))
globals().update(_suite(test_concurrency))
cookie = test_concurrency.cookie


# Keys of every kind, in the parameters psycopg binds itself in transaction
# pooling mode.
@pytest.fixture
def make_database_store(make_store: StoreMaker) -> StoreMaker:
    """What the tests taken from test_store_database make their stores with."""
    return make_store


test_odd_key_names = test_store_database.test_odd_key_names
test_keys_are_set_and_removed_as_in_a_dict = (
    test_store_database.test_keys_are_set_and_removed_as_in_a_dict
)
one_store = test_store_database.one_store


def test_the_suites_run_here() -> None:
    assert "test_removed_session_is_not_revived_by_a_later_update" in globals()
    assert "test_threaded_server_eight_clients_one_cookie" in globals()


def test_visitors_counting_at_once(make_store: StoreMaker) -> None:
    # Through PgBouncer in transaction pooling mode, 270 of these 600
    # requests failed: psycopg prepares a statement it has seen five times,
    # on whichever server connection the transaction had, shared with others.
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "pooled"
    PrancerSession(app, store=make_store())

    @app.post("/")
    def count() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])

    statuses: list[int] = []
    counts: dict[int, str] = {}
    barrier = threading.Barrier(6)

    def visitor(number: int) -> None:
        client = app.test_client()
        barrier.wait()
        for _ in range(100):
            response = client.post("/")
            statuses.append(response.status_code)
        counts[number] = response.text

    threads = [threading.Thread(target=visitor, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [status for status in statuses if status != 200] == []
    assert counts == {n: "100" for n in range(6)}


def _exercise(store: DatabaseStore, clock: FakeClock) -> None:
    """Run every operation of ``store``, each more than psycopg's threshold
    for preparing a statement, and leave a session under KEY."""
    for n in range(7):
        key = f"{n:064x}"
        store.apply(key, ChangeSet({USER_KEY: '"ann"', "a": "1"}, created_at=clock()))
        store.apply(key, ChangeSet({"b": "2"}, removed=frozenset({"a"})))
        store.apply(key, ChangeSet(removed=frozenset({"b"})))
        store.apply(key, ChangeSet({"b": "3"}, expected={"b": "2"}))
        assert store.fetch(key) is not None
        store.touch(key, clock() + 100)
        store.remove(key)
    store.apply(KEY, ChangeSet({USER_KEY: '"bob"', "a": "1"}, created_at=clock()))
    assert list(store.sessions_of("bob")) == [KEY]
    assert [key for key, _ in store.scan()] == [KEY]
    store.remove_user("nobody")
    store.clear()
    store.apply(KEY, ChangeSet({"a": "1"}, created_at=clock()))
    clock.advance(store.expiration_timeout)
    assert store.purge() == 1
    store.apply(KEY, ChangeSet({USER_KEY: '"bob"', "a": "1"}, created_at=clock()))
    assert store.remove_user("bob") == 1


def test_nothing_of_the_store_reaches_another_client(
    variant: tuple[str, str], clock: FakeClock
) -> None:
    # Every client of PgBouncer's test_single shares its one server
    # connection: a setting or prepared statement the store left on it would
    # be the next client's (in session pooling mode, once the store leaves).
    mode, driver = variant
    other = sa.create_engine(
        _url(mode, "psycopg2", SINGLE), poolclass=sa.NullPool, isolation_level="AUTOCOMMIT"
    )
    with other.connect() as connection:
        connection.exec_driver_sql("DISCARD ALL")  # what an earlier client left
    table = services.unique_name("sessions_pooled")
    store = DatabaseStore(url=_url(mode, driver, SINGLE), table=table, pooler=mode)
    store.clock = clock
    query = (
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'),"
        " current_setting('enable_seqscan'), current_setting('synchronous_commit'),"
        " (SELECT count(*) FROM pg_prepared_statements)"
    )
    direct = sa.create_engine(services.POSTGRES_PSYCOPG2_URL, poolclass=sa.NullPool)
    try:
        _exercise(store, clock)
        if mode == "session":
            store.close()
        with other.connect() as connection, direct.connect() as fresh:
            assert connection.exec_driver_sql(query).one() == fresh.exec_driver_sql(query).one()
    finally:
        store.close()
        _drop(table)


def test_the_store_s_settings_hold_for_each_of_its_writes(
    variant: tuple[str, str], clock: FakeClock
) -> None:
    # A trigger logs the settings each write of the store runs under: its
    # one-statement writes and its transactions, over the pooled connections.
    mode, driver = variant
    table = services.unique_name("sessions_pooled")
    log = f"{table}_log"
    store = DatabaseStore(url=_url(mode, driver), table=table, pooler=mode, statement_timeout=3)
    store.clock = clock
    admin = sa.create_engine(services.POSTGRES_URL)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(
                f"CREATE TABLE {log} (op TEXT, statement_timeout TEXT, lock_timeout TEXT,"
                " synchronous_commit TEXT, enable_seqscan TEXT)"
            )
            connection.exec_driver_sql(
                f"CREATE FUNCTION {log}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                f" INSERT INTO {log} VALUES (TG_OP, current_setting('statement_timeout'),"
                " current_setting('lock_timeout'), current_setting('synchronous_commit'),"
                " current_setting('enable_seqscan'));"
                " RETURN NULL; END $$"
            )
            connection.exec_driver_sql(
                f"CREATE TRIGGER {log} AFTER INSERT OR UPDATE OR DELETE ON {table}"
                f" FOR EACH ROW EXECUTE FUNCTION {log}()"
            )
        _exercise(store, clock)
        with admin.connect() as connection:
            rows = connection.exec_driver_sql(f"SELECT * FROM {log}").all()
        assert {row.op for row in rows} == {"INSERT", "UPDATE", "DELETE"}
        assert {tuple(row)[1:] for row in rows} == {("3s", "3s", "off", "off")}
    finally:
        store.close()
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP TABLE IF EXISTS {table}, {log}")
            connection.exec_driver_sql(f"DROP FUNCTION IF EXISTS {log}()")
        admin.dispose()
