"""The database store when its server goes silent, loses a connection, or is
purged under load. A loopback proxy (``tcp_proxy.py``) stands between the
store and PostgreSQL or MariaDB."""

from __future__ import annotations

import logging
import threading
import time
import typing as t
from pathlib import Path

import pytest
import sqlalchemy as sa
from flask import Flask
from flask import session

from flask_prancer_session.changes import ChangeSet
from flask_prancer_session.changes import USER_KEY
from flask_prancer_session.errors import SessionStoreError
from flask_prancer_session.store.database import DatabaseStore
from flask_prancer_session.store.database import DriverError
from flask_prancer_session.store.database import statements

from . import services
from .tcp_proxy import proxied
from .tcp_proxy import TCPProxy

pytestmark = pytest.mark.fault

KEY = "f" * 64


@pytest.fixture(params=list(services.DATABASE_SERVERS))
def server_url(request: pytest.FixtureRequest) -> str:
    server = services.DATABASE_SERVERS[request.param]
    server.require()
    return server.url


@pytest.fixture
def table(server_url: str) -> t.Iterator[str]:
    name = services.unique_name("sessions_fault")
    yield name
    engine = sa.create_engine(server_url)
    with engine.begin() as connection:
        connection.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    engine.dispose()


@pytest.fixture
def proxy(server_url: str) -> t.Iterator[TCPProxy]:
    parsed = sa.make_url(server_url)
    with TCPProxy((parsed.host or "127.0.0.1", parsed.port or 0), lifetime=60) as proxy:
        yield proxy


def _timed(call: t.Callable[[], object]) -> float:
    started = time.monotonic()
    with pytest.raises(SessionStoreError):
        call()
    return time.monotonic() - started


def test_silent_database_fails_in_time_and_recovers(
    server_url: str, table: str, proxy: TCPProxy
) -> None:
    store = DatabaseStore(
        url=proxied(server_url, proxy), table=table, connect_timeout=2, statement_timeout=1
    )
    try:
        store.apply(KEY, ChangeSet({"a": "1"}, created_at=store.clock()))
        proxy.silence()
        assert _timed(lambda: store.fetch(KEY)) < 2.5
        assert _timed(lambda: store.apply(KEY, ChangeSet({"b": "2"}))) < 4.5  # connect + statement
        proxy.forward()
        # The same store, without a restart.
        assert store.apply(KEY, ChangeSet({"b": "2"})) is True
        assert store.fetch(KEY).data == {"a": "1", "b": "2"}  # type: ignore[union-attr]
    finally:
        store.close()


def test_operations_on_a_silent_database_fail_in_time(
    server_url: str, table: str, proxy: TCPProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(statements, "SCAN_BATCH", 2)
    store = DatabaseStore(
        url=proxied(server_url, proxy), table=table, connect_timeout=2, statement_timeout=1
    )
    try:
        for n in range(5):
            bound = {USER_KEY: '"ann"', "n": str(n)}
            store.apply(f"{n:064x}", ChangeSet(bound, created_at=store.clock()))
        scan = store.scan()
        next(scan)
        proxy.silence()
        # A scan cut short fails: it never passes for a shorter list.
        assert _timed(lambda: list(scan)) < 4.5
        assert _timed(lambda: store.sessions_of("ann")) < 4.5
        assert _timed(lambda: store.remove_user("ann")) < 4.5
        assert _timed(store.clear) < 4.5
        proxy.forward()
        assert store.remove_user("ann") == 5
    finally:
        store.close()


def test_reset_connections_are_replaced_once(server_url: str, table: str, proxy: TCPProxy) -> None:
    store = DatabaseStore(url=proxied(server_url, proxy), table=table)
    try:
        store.apply(KEY, ChangeSet({"a": "1"}, created_at=store.clock()))
        proxy.reset()
        assert store.apply(KEY, ChangeSet({"b": "2"})) is True
        proxy.reset()
        assert store.fetch(KEY).data == {"a": "1", "b": "2"}  # type: ignore[union-attr]
    finally:
        store.close()


@pytest.mark.parametrize("server_url", ["postgresql"], indirect=True)
@pytest.mark.parametrize("given_engine", [False, True], ids=["own engine", "given engine"])
def test_a_socket_closed_under_psycopg_is_a_lost_connection(
    server_url: str, table: str, given_engine: bool
) -> None:
    # psycopg reports a reset that its poll loop sees before libpq does as
    # "connection socket closed" without marking the connection broken, so
    # SQLAlchemy alone would hand the dead connection out again and fail.
    import psycopg

    class ResetSeenByPoll(psycopg.Cursor[t.Any]):
        def execute(self, *args: t.Any, **kwargs: t.Any) -> t.NoReturn:
            raise psycopg.OperationalError("connection socket closed")

    engine = sa.create_engine(server_url, pool_size=1) if given_engine else None
    store = DatabaseStore(url=None if engine else server_url, engine=engine, table=table)
    try:
        store.apply(KEY, ChangeSet({"a": "1"}, created_at=store.clock()))
        pooled = store.engine.raw_connection()
        pooled.dbapi_connection.cursor_factory = ResetSeenByPoll  # type: ignore[union-attr]
        pooled.close()
        assert store.fetch(KEY).data == {"a": "1"}  # type: ignore[union-attr]
        assert store.apply(KEY, ChangeSet({"b": "2"})) is True
    finally:
        store.close()
        store.engine.dispose()  # a given engine is its owner's to close


def _backend_waiting_on_a_lock(admin: sa.Connection, postgresql: bool, table: str) -> int | None:
    if postgresql:
        query = (
            "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            " AND query LIKE :pattern AND pid <> pg_backend_pid()"
        )
    else:
        query = (
            "SELECT id FROM information_schema.processlist"
            " WHERE info LIKE :pattern AND id <> CONNECTION_ID()"
        )
    return admin.execute(sa.text(query), {"pattern": f"UPDATE%{table}%"}).scalar()


def test_backend_killed_mid_transaction(server_url: str, table: str) -> None:
    store = DatabaseStore(url=server_url, table=table)
    postgresql = store.engine.dialect.name == "postgresql"
    results: list[object] = []
    admin_engine = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        store.apply(KEY, ChangeSet({"a": "1"}, created_at=store.clock()))
        with admin_engine.connect() as locker, admin_engine.connect() as admin:
            # Hold the row, so the store's UPDATE waits inside its transaction.
            locker.exec_driver_sql("BEGIN")
            locker.execute(sa.select(store.table).with_for_update())
            writer = threading.Thread(
                target=lambda: results.append(store.apply(KEY, ChangeSet({"b": "2"})))
            )
            writer.start()
            for _ in range(100):
                backend = _backend_waiting_on_a_lock(admin, postgresql, table)
                if backend is not None:
                    break
                time.sleep(0.05)
            assert backend is not None
            if postgresql:
                admin.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            else:
                admin.exec_driver_sql(f"KILL {int(backend)}")
            time.sleep(0.2)  # let the store see it and reconnect
            locker.exec_driver_sql("COMMIT")
            writer.join(timeout=10)
        assert results == [True]
        assert store.fetch(KEY).data == {"a": "1", "b": "2"}  # type: ignore[union-attr]
    finally:
        admin_engine.dispose()
        store.close()


def _add_expired(store: DatabaseStore, count: int) -> None:
    now = store.clock()
    with store.engine.begin() as connection:
        connection.execute(
            sa.insert(store.table),
            [
                {
                    "id": f"{n:064x}",
                    "application": "",
                    "created_at": now - 100,
                    "expires_at": now - 1,
                    "data": "{}",
                }
                for n in range(count)
            ],
        )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql", "mariadb"])
def test_autopurge_under_concurrent_requests(kind: str, tmp_path: Path) -> None:
    from flask_prancer_session import PrancerSession

    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'sessions.db'}"
    else:
        server = services.DATABASE_SERVERS[kind]
        server.require()
        url = server.url
    table = services.unique_name("sessions_autopurge")
    app = Flask(__name__)
    options = {"url": url, "table": table, "autopurge": True, "autopurge_probability": 1.0}
    app.config.update(
        SECRET_KEY="fault test",
        PRANCER_SESSION={"store": {"driver": "database", "options": options}},
    )
    extension = PrancerSession(app)

    @app.post("/<int:n>")
    def write(n: int) -> str:
        session[f"k{n}"] = 1
        return ""

    @app.get("/")
    def read() -> str:
        return ",".join(sorted(session))

    store = app.session_interface.store  # type: ignore[attr-defined]
    assert isinstance(store, DatabaseStore)
    try:
        _add_expired(store, 2000)
        first = app.test_client()
        assert first.post("/0").status_code == 200
        cookie = first.get_cookie("PSESSION")
        assert cookie is not None
        statuses: list[int] = []
        barrier = threading.Barrier(16)

        def visitor(number: int) -> None:
            client = app.test_client()
            client.set_cookie("PSESSION", cookie.value)
            barrier.wait()
            for i in range(25):
                statuses.append(client.post(f"/{1 + number * 25 + i}").status_code)

        threads = [threading.Thread(target=visitor, args=(n,)) for n in range(16)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [s for s in statuses if s != 200] == []
        assert len(statuses) == 400
        keys = first.get("/").text.split(",")
        assert sorted(keys) == sorted(f"k{n}" for n in range(401))
    finally:
        del extension
        store.close()
        engine = sa.create_engine(url)
        with engine.begin() as connection:
            connection.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


def _bound(user: str | None, **data: str) -> ChangeSet:
    if user is not None:
        data[USER_KEY] = f'"{user}"'
    return ChangeSet(data, created_at=1_800_000_000.0)


#: Every operation of the store, each with what it returns when the store
#: holds one session under KEY, bound to "ann" with the key "a" set to "1".
OPERATIONS: dict[str, tuple[t.Callable[[DatabaseStore], object], object]] = {
    "fetch": (lambda store: store.fetch(KEY) is not None, True),
    "apply": (lambda store: store.apply(KEY, ChangeSet({"b": "2"})), True),
    "apply-create": (lambda store: store.apply(KEY, _bound(None, b="2")), True),
    "apply-remove": (lambda store: store.apply(KEY, ChangeSet(removed=frozenset({"a"}))), True),
    "apply-expected": (
        lambda store: store.apply(KEY, ChangeSet({"a": "3"}, expected={"a": "1"})),
        True,
    ),
    "touch": (lambda store: store.touch(KEY, store.clock() + 100), None),
    "remove": (lambda store: store.remove(KEY), True),
    "purge": (lambda store: store.purge(), 0),
    "scan": (lambda store: [key for key, _ in store.scan()], [KEY]),
    "clear": (lambda store: store.clear(), 1),
    "sessions_of": (lambda store: list(store.sessions_of("ann")), [KEY]),
    "remove_user": (lambda store: store.remove_user("ann"), 1),
}


def _backend_ids(store: DatabaseStore) -> list[int]:
    """Return a list that fills with the server's id of each connection the
    store opens from now on."""
    ids: list[int] = []
    postgresql = store.engine.dialect.name == "postgresql"

    def remember(dbapi_connection: t.Any, record: t.Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("SELECT pg_backend_pid()" if postgresql else "SELECT CONNECTION_ID()")
        ids.append(int(cursor.fetchone()[0]))
        cursor.close()
        if postgresql:
            dbapi_connection.rollback()

    store.close()
    sa.event.listen(store.engine, "connect", remember)
    return ids


def _kill(server_url: str, ids: list[int]) -> int:
    """Close the server's side of the connections ``ids``, as a server
    restart or an idle timeout would, and return how many there were."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if admin.dialect.name == "postgresql":
                query = "SELECT pid FROM pg_stat_activity WHERE pid IN :ids"
            else:
                query = "SELECT ID FROM information_schema.PROCESSLIST WHERE ID IN :ids"
            statement = sa.text(query).bindparams(sa.bindparam("ids", expanding=True))
            live = connection.execute(statement, {"ids": ids}).scalars().all()
            for backend in live:
                if admin.dialect.name == "postgresql":
                    connection.execute(
                        sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}
                    )
                else:
                    connection.exec_driver_sql(f"KILL {int(backend)}")
            return len(live)
    finally:
        admin.dispose()


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_operation_replaces_connections_the_server_closed(
    server_url: str, table: str, operation: str
) -> None:
    # A database restart, or MariaDB's wait_timeout, closes pooled connections
    # while the app is idle; the next use of each must find a fresh one.
    call, expected = OPERATIONS[operation]
    store = DatabaseStore(url=server_url, table=table)
    try:
        ids = _backend_ids(store)
        store.apply(KEY, _bound("ann", a="1"))
        # Each engine of the store (autocommit, transactions, bulk) in turn.
        assert store.sessions_of("ann") != {}
        assert store.purge() == 0
        assert store.remove_user("nobody") == 0
        # A pool that served concurrent requests holds several connections,
        # and a restart closes them all: the retry must take a new one.
        held = [store.engine.raw_connection() for _ in range(3)]
        for connection in held:
            connection.close()
        assert _kill(server_url, ids) == len(ids) == 3
        assert call(store) == expected
        # No dead connection is left in the pool.
        held = [store.engine.raw_connection() for _ in range(3)]
        for connection in held:
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            connection.close()
    finally:
        store.close()


@pytest.mark.parametrize("operation", list(OPERATIONS))
def test_every_operation_fails_as_a_store_error_when_the_server_is_gone(
    server_url: str, table: str, proxy: TCPProxy, operation: str
) -> None:
    call, _ = OPERATIONS[operation]
    store = DatabaseStore(url=proxied(server_url, proxy), table=table, connect_timeout=2)
    try:
        store.apply(KEY, _bound("ann", a="1"))
        assert store.purge() == 0
        proxy.close()  # and refuse new connections
        with pytest.raises(SessionStoreError) as info:
            call(store)
        assert isinstance(info.value.__cause__, DriverError)
    finally:
        store.close()


#: An address where nothing listens: a proxy to it closes every connection
#: at once, as a database that is not up yet refuses it.
NOWHERE = ("127.0.0.1", 1)


@pytest.mark.parametrize("create_table", [True, False], ids=["create_table", "check only"])
def test_an_app_started_before_its_database_works_once_it_is_up(
    server_url: str, table: str, create_table: bool, caplog: pytest.LogCaptureFixture
) -> None:
    from flask_prancer_session import PrancerSession

    parsed = sa.make_url(server_url)
    with TCPProxy(NOWHERE, lifetime=60, max_connections=500) as proxy:
        app = Flask(__name__)
        options = {"url": proxied(server_url, proxy), "table": table, "create_table": create_table}
        app.config.update(
            TESTING=True,
            SECRET_KEY="fault test",
            PRANCER_SESSION={"store": {"driver": "database", "options": options}},
        )
        with caplog.at_level(logging.WARNING, logger="flask_prancer_session.store.database"):
            PrancerSession(app)
        assert [record.levelname for record in caplog.records] == ["WARNING"]
        store = app.extensions["prancer_session"].store

        @app.post("/")
        def count() -> str:
            session["n"] = session.get("n", 0) + 1
            return str(session["n"])

        client = app.test_client()
        try:
            for _ in range(2):
                with pytest.raises(SessionStoreError):
                    client.post("/")
            if not create_table:
                DatabaseStore(url=server_url, table=table).close()  # as its DBA would
            proxy.target = (parsed.host or "127.0.0.1", parsed.port or 0)
            assert client.post("/").text == "1"
            assert client.post("/").text == "2"
        finally:
            store.close()


@pytest.mark.parametrize("server_url", ["postgresql", "mariadb"], indirect=True)
def test_the_first_uses_create_the_table_once(server_url: str, table: str) -> None:
    parsed = sa.make_url(server_url)
    with TCPProxy(NOWHERE, lifetime=60, max_connections=500) as proxy:
        store = DatabaseStore(url=proxied(server_url, proxy), table=table)
        creations: list[threading.Thread] = []
        create = store._keeper.create

        def counted() -> None:
            creations.append(threading.current_thread())
            create()

        store._keeper.create = counted  # type: ignore[method-assign]
        proxy.target = (parsed.host or "127.0.0.1", parsed.port or 0)
        barrier = threading.Barrier(8)
        results: list[bool] = []

        def first_request(number: int) -> None:
            barrier.wait()
            results.append(store.apply(f"{number:064x}", ChangeSet({"a": "1"}, created_at=1e9)))

        threads = [threading.Thread(target=first_request, args=(n,)) for n in range(8)]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert results == [True] * 8
            assert len(creations) == 1
        finally:
            store.close()


@pytest.mark.parametrize("server_url", ["postgresql", "mariadb"], indirect=True)
def test_requests_queued_for_a_silent_database_share_one_attempt(
    server_url: str, table: str, proxy: TCPProxy
) -> None:
    # Each waiting its own connect timeout in turn, four requests would take
    # four times as long as one.
    proxy.silence()
    store = DatabaseStore(
        url=proxied(server_url, proxy), table=table, connect_timeout=2, statement_timeout=2
    )
    try:
        alone = _timed(lambda: store.fetch(KEY))
        failed: list[float] = []
        started = time.monotonic()
        threads = [
            threading.Thread(target=lambda: failed.append(_timed(lambda: store.fetch(KEY))))
            for _ in range(4)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(failed) == 4
        assert time.monotonic() - started < 1.8 * alone
    finally:
        store.close()
