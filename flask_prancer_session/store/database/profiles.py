"""What differs between the databases the store runs on, gathered in one
profile per database: how its connections are set up, the isolation of its
transactions, the SQL that merges a session's changes, how it purges, and
which of its errors mean a lost connection or a conflict worth retrying."""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import typing as t

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from ...changes import ChangeSet
from ...errors import ConfigurationError
from . import events
from .watchdog import WATCHDOG

#: The connection poolers the ``pooler`` option names, by their pooling mode.
Pooler = t.Literal["session", "transaction"]

#: Builds the assignments of an upsert's update from the row it would have
#: inserted (``excluded`` or ``inserted``), in the order MySQL runs them.
Assignments = t.Callable[[t.Any], list[tuple[str, sa.ColumnElement[t.Any]]]]


class Timeouts(t.NamedTuple):
    #: Seconds to wait for a new connection, or ``None`` to leave it to the driver.
    connect: float | None
    #: Seconds an operation may take, or ``None`` for no limit.
    statement: float | None


class PurgeStatements(t.Protocol):
    """The statements of a purge (:class:`~.statements.Statements` has them)."""

    #: The ids of a batch of expired sessions.
    expired: sa.Select[t.Any]
    #: Deletes those of ``ids`` still expired.
    delete_expired: sa.Delete
    #: Deletes a batch of expired sessions (MySQL's ``DELETE ... LIMIT``).
    delete_expired_batch: sa.Delete
    #: The name of the lock that keeps MySQL's purges apart.
    purge_lock_name: str
    #: How many sessions a batch takes at most.
    purge_batch: int


class Engines(t.NamedTuple):
    """The store's engine under the execution options of each kind of work."""

    #: Operations of one statement: in autocommit mode with an engine of our own.
    single: sa.Engine
    #: Operations of several statements, in a real transaction.
    writer: sa.Engine
    #: Purges of expired sessions.
    purger: sa.Engine
    #: Deletes of many rows (``clear``, ``remove_user``) and the upgrade.
    bulk: sa.Engine
    #: Writes of one statement.
    single_writer: sa.Engine
    #: Reads of several rows (``scan``, ``sessions_of``) and of the schema.
    reader: sa.Engine


class Profile:
    """The differences of one database, chosen once per store from its URL or
    engine. The base class holds what most of them share.

    :param timeouts: the store's timeouts (none for an engine it was given).
    :param synchronous_commit: the store's option.
    :param pooler: the connection pooler between the store and the database.
    """

    #: The longest name of a table, index or schema, in bytes (PostgreSQL
    #: would cut a longer one short; MySQL refuses it).
    name_limit: t.ClassVar[int | None] = None
    #: Whether an engine of the store's own runs in autocommit mode, so that
    #: an operation of one statement is one round trip (no ``BEGIN`` and
    #: ``COMMIT``), and one of two statements, each atomic, sends them apart.
    autocommit: t.ClassVar[bool] = True
    #: The isolation of operations of several statements, with an engine of
    #: the store's own.
    isolation: t.ClassVar[str | None] = None
    #: The isolation of purges and bulk deletes, if it differs.
    bulk_isolation: t.ClassVar[str | None] = None
    #: Whether a purge's ``SELECT`` passes over rows that others hold.
    skip_locked: t.ClassVar[bool] = False
    #: The connection poolers the database may be reached through.
    poolers: t.ClassVar[tuple[str, ...]] = ()

    def __init__(
        self, timeouts: Timeouts, synchronous_commit: bool = False, pooler: Pooler | None = None
    ) -> None:
        self.timeouts = timeouts
        self.synchronous_commit = synchronous_commit
        self.pooler = pooler
        #: A statement that applies the store's settings to the transaction it
        #: runs in, where they cannot be set on each connection; it then
        #: starts every transaction, and precedes each hot-path statement.
        self.transaction_settings: str | None = None

    def configure(self, url: sa.URL, connect_args: dict[str, t.Any]) -> list[str]:
        """Fill in the DBAPI ``connect_args`` of an engine the store makes for
        ``url``, unless the URL sets them, and return the statements to run
        on each new connection."""
        return []

    def engine_options(self) -> dict[str, t.Any]:
        """Return the options of an engine the store makes."""
        if not self.autocommit:
            return {}
        # Most operations are one statement: without a transaction around it
        # that is one round trip, instead of BEGIN, the statement and COMMIT
        # (and a ROLLBACK when the connection goes back to the pool).
        return {"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None}

    def prepare(self, engine: sa.Engine, url: sa.URL) -> None:
        """Set up an engine the store made, once."""

    def watch(self, engine: sa.Engine) -> None:
        """Set up any engine the store runs on, its own or a given one."""

    def engines(self, engine: sa.Engine, own: bool) -> Engines:
        """Return ``engine`` under the options each kind of work runs with."""
        writer = engine
        if own and self.isolation is not None:
            writer = engine.execution_options(isolation_level=self.isolation)
        purger = writer
        if self.bulk_isolation is not None:
            purger = engine.execution_options(isolation_level=self.bulk_isolation)
        # Settings of a transaction need one, where autocommit has none.
        reader = engine if self.transaction_settings is None else writer
        return Engines(engine, writer, purger, purger, engine, reader)

    def deadline(self, dbapi_connection: t.Any) -> t.ContextManager[object]:
        """Bound the time the block may talk to the server on
        ``dbapi_connection``, where the driver does not."""
        return contextlib.nullcontext()

    def cursor(self, connection: sa.PoolProxiedConnection) -> t.Any:
        """Return a DBAPI cursor for a hot-path statement, which
        :attr:`transaction_settings` precede in the same string."""
        return connection.cursor()

    def direct_dialect(self, dialect: sa.Dialect) -> sa.Dialect:
        """Return the dialect to compile hot-path statements with, for
        :meth:`cursor`."""
        return dialect

    def skip_settings(self, cursor: t.Any) -> None:
        """Move ``cursor`` past the result of :attr:`transaction_settings`, to
        the statement's."""

    def lost(
        self, error: t.Any, dialect: sa.Dialect, dbapi_connection: t.Any, cursor: t.Any
    ) -> bool:
        """Tell whether the driver's ``error`` says the connection is gone."""
        return bool(dialect.is_disconnect(error, dbapi_connection, cursor))

    def is_conflict(self, error: sa.exc.DBAPIError) -> bool:
        """Tell whether ``error`` is a deadlock or serialisation failure, which
        running the transaction again resolves."""
        return False

    def least(self, *values: sa.ColumnElement[t.Any]) -> sa.ColumnElement[t.Any]:
        return sa.func.least(*values)

    def merged(
        self, data: sa.ColumnElement[t.Any], removals: int
    ) -> tuple[sa.ColumnElement[t.Any], sa.ColumnElement[bool]]:
        """Return the stored ``data`` with the changes merged in (the
        parameters :meth:`changes` fills) and the condition that the stored
        data is a JSON object, which a merge keeps out of anything else."""
        raise NotImplementedError

    def changes(self, changes: ChangeSet, params: dict[str, t.Any]) -> int:
        """Put the parameters of :meth:`merged` for ``changes`` in ``params``
        and return the number of removals its statement is built for."""
        params["patch"] = dumps(changes.updated)
        return 0

    def upsert(
        self, table: sa.Table, values: dict[str, t.Any], assignments: Assignments
    ) -> sa.Insert:
        """Return the ``INSERT`` of ``values`` that runs ``assignments`` on
        the row of the same key instead, if there is one."""
        insert = self._insert(table).values(values)
        return insert.on_conflict_do_update(
            index_elements=[table.c.id, table.c.application],
            set_=dict(assignments(insert.excluded)),
        )

    def _insert(self, table: sa.Table) -> postgresql.Insert | sqlite.Insert:
        raise NotImplementedError

    def purge_batch(
        self, connection: sa.Connection, statements: PurgeStatements, now: float
    ) -> tuple[int, bool]:
        """Delete a batch of expired sessions and return how many, and whether
        there may be more."""
        query = statements.expired
        if self.skip_locked:
            query = query.with_for_update(skip_locked=True)
        ids = connection.execute(query, {"now": now}).scalars().all()
        if not ids:
            return 0, False
        count = connection.execute(statements.delete_expired, {"now": now, "ids": ids}).rowcount
        return count, len(ids) == statements.purge_batch and count > 0


class SQLiteProfile(Profile):
    """SQLite, in a file or in memory."""

    autocommit = False

    def configure(self, url: sa.URL, connect_args: dict[str, t.Any]) -> list[str]:
        # pysqlite's busy timeout: how long a writer waits for another's lock.
        _default(url, connect_args, "timeout", 15)
        if _file_of(url) is None:
            return []
        # Readers do not block the writer, and a commit waits for no fsync
        # (a power cut may lose the last sessions written, never corrupt).
        return [
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {'FULL' if self.synchronous_commit else 'NORMAL'}",
        ]

    def prepare(self, engine: sa.Engine, url: sa.URL) -> None:
        path = _file_of(url)
        if path is not None:
            events.watch_file(engine, path)

    def engines(self, engine: sa.Engine, own: bool) -> Engines:
        # Writers take the write lock at BEGIN and queue under the busy
        # timeout, where a deferred transaction could fail at once.
        writer = engine.execution_options()
        sa.event.listen(writer, "begin", events.begin_immediate)
        return Engines(engine, writer, engine, writer, writer, engine)

    def is_conflict(self, error: sa.exc.DBAPIError) -> bool:
        # The lock still held after the busy timeout.
        args: tuple[object, ...] = getattr(error.orig, "args", ())
        return bool(args) and args[0] == "database is locked"

    def least(self, *values: sa.ColumnElement[t.Any]) -> sa.ColumnElement[t.Any]:
        return sa.func.min(*values)

    def merged(
        self, data: sa.ColumnElement[t.Any], removals: int
    ) -> tuple[sa.ColumnElement[t.Any], sa.ColumnElement[bool]]:
        merged = sa.func.json_patch(data, sa.bindparam("patch", type_=sa.Text()))
        kind = sa.case((sa.func.json_valid(data) == fixed(1), sa.func.json_type(data)))
        return merged, kind == fixed("object")

    def changes(self, changes: ChangeSet, params: dict[str, t.Any]) -> int:
        # A JSON merge patch: null removes a key; the values, serialised
        # session values, are JSON strings and never null.
        params["patch"] = dumps(dict.fromkeys(changes.removed) | dict(changes.updated))
        return 0

    def _insert(self, table: sa.Table) -> sqlite.Insert:
        return sqlite.insert(table)


class PostgreSQLProfile(Profile):
    """PostgreSQL, directly or through a pooler.

    A pooler in transaction mode (PgBouncer's ``pool_mode = transaction``)
    hands each transaction whichever server connection is free, shared with
    other clients: a statement prepared on one is missing on the next, and a
    ``SET`` applies to whoever gets that connection next. Then psycopg
    prepares nothing, and the settings go with each transaction instead of
    each connection (:attr:`transaction_settings`).
    """

    name_limit = 63
    isolation = "READ COMMITTED"
    skip_locked = True
    poolers = ("session", "transaction")

    def __init__(
        self, timeouts: Timeouts, synchronous_commit: bool = False, pooler: Pooler | None = None
    ) -> None:
        super().__init__(timeouts, synchronous_commit, pooler)
        self._client_cursor = False
        settings = self._settings()
        if pooler == "transaction" and settings:
            values = ", ".join(f"set_config('{n}', '{v}', true)" for n, v in settings.items())
            self.transaction_settings = f"SELECT {values}"

    def _settings(self) -> dict[str, str]:
        """Return the store's settings of each session or transaction."""
        settings = {}
        if self.timeouts.statement is not None:
            # The server's own limits; the client's is the watchdog.
            statement = self.timeouts.statement
            settings["statement_timeout"] = str(math.ceil(statement * 1000))
            settings["lock_timeout"] = str(math.ceil(_lock_timeout(statement) * 1000))
        # psycopg prepares statements it sees often, and PostgreSQL may then
        # keep a generic plan, made with whatever the statistics said when it
        # was made: a sequential scan of a table analysed while it was small
        # would stay as it grows, at milliseconds per request. The statements
        # of one session compare an expression no index holds to the time
        # (statements.unindexed), which leaves the primary key as the only
        # plan that is not a scan. Planning each execution anew would cost
        # about 50 µs per statement.
        settings["enable_seqscan"] = "off"
        if not self.synchronous_commit:
            # A crash of the server may lose the last moments of session
            # writes, never corrupt them; each write then waits for no flush.
            settings["synchronous_commit"] = "off"
        return settings

    def configure(self, url: sa.URL, connect_args: dict[str, t.Any]) -> list[str]:
        if self.timeouts.connect is not None:
            _default(url, connect_args, "connect_timeout", math.ceil(self.timeouts.connect))
        if self.pooler != "transaction":
            return [f"SET {name} = {value}" for name, value in self._settings().items()]
        driver = url.get_driver_name()
        if driver not in ("psycopg", "psycopg2"):
            raise ConfigurationError("'transaction' needs psycopg or psycopg2", "pooler")
        # psycopg2 never prepares; psycopg does once it saw a statement
        # five times, unless told otherwise.
        if driver == "psycopg":
            _default(url, connect_args, "prepare_threshold", None)
            # Binding the parameters itself, it sends the settings and the
            # statement as one string, in one round trip (psycopg2 always does).
            self._client_cursor = self.transaction_settings is not None
        return []

    def watch(self, engine: sa.Engine) -> None:
        if not sa.event.contains(engine, "handle_error", events.flag_lost_socket):
            sa.event.listen(engine, "handle_error", events.flag_lost_socket)

    def deadline(self, dbapi_connection: t.Any) -> t.ContextManager[object]:
        if self.timeouts.statement is None:
            return contextlib.nullcontext()
        return WATCHDOG.guard(dbapi_connection, self.timeouts.statement)

    def cursor(self, connection: sa.PoolProxiedConnection) -> t.Any:
        if not self._client_cursor:
            return connection.cursor()
        import psycopg

        return psycopg.ClientCursor(t.cast(psycopg.Connection[t.Any], connection.dbapi_connection))

    def direct_dialect(self, dialect: sa.Dialect) -> sa.Dialect:
        if not self._client_cursor:
            return dialect
        # psycopg 3.1.0's ClientCursor fails on a named parameter that the
        # statement holds twice; positional ones it takes.
        positional = copy.copy(dialect)
        positional.paramstyle, positional.positional = "format", True
        return positional

    def skip_settings(self, cursor: t.Any) -> None:
        # psycopg2 keeps the last result alone.
        if self._client_cursor:
            cursor.nextset()

    def lost(
        self, error: t.Any, dialect: sa.Dialect, dbapi_connection: t.Any, cursor: t.Any
    ) -> bool:
        return super().lost(error, dialect, dbapi_connection, cursor) or events.socket_lost(
            error, dialect
        )

    def is_conflict(self, error: sa.exc.DBAPIError) -> bool:
        # As psycopg 3 and psycopg2 name the SQLSTATE.
        state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
        return state in ("40001", "40P01")

    def merged(
        self, data: sa.ColumnElement[t.Any], removals: int
    ) -> tuple[sa.ColumnElement[t.Any], sa.ColumnElement[bool]]:
        removed = sa.bindparam("removed", type_=postgresql.ARRAY(sa.Text()))
        patch = sa.bindparam("patch", type_=sa.Text())
        merged = sa.cast(
            sa.cast(data, postgresql.JSONB)
            .op("-")(sa.cast(removed, postgresql.ARRAY(sa.Text())))
            .op("||")(sa.cast(patch, postgresql.JSONB)),
            sa.Text(),
        )
        # A cheap guard that keeps an array or a scalar out of the merge;
        # PostgreSQL before 16 has no cast that cannot fail.
        return merged, sa.func.left(data, fixed(1)) == fixed("{")

    def changes(self, changes: ChangeSet, params: dict[str, t.Any]) -> int:
        params["removed"] = sorted(changes.removed)
        return super().changes(changes, params)

    def _insert(self, table: sa.Table) -> postgresql.Insert:
        return postgresql.insert(table)


class MySQLProfile(Profile):
    """MySQL and MariaDB."""

    name_limit = 64
    isolation = "REPEATABLE READ"
    # Without gap locks a purge does not block requests creating sessions.
    bulk_isolation = "READ COMMITTED"

    def configure(self, url: sa.URL, connect_args: dict[str, t.Any]) -> list[str]:
        connect, statement = self.timeouts
        # Whole seconds: mysqlclient takes nothing else.
        if connect is not None:
            _default(url, connect_args, "connect_timeout", math.ceil(connect))
        if statement is None:
            return []
        _default(url, connect_args, "read_timeout", math.ceil(statement))
        _default(url, connect_args, "write_timeout", math.ceil(statement))
        return [f"SET SESSION innodb_lock_wait_timeout = {math.ceil(_lock_timeout(statement))}"]

    def prepare(self, engine: sa.Engine, url: sa.URL) -> None:
        events.skip_autocommit_commits(engine.dialect)

    def direct_dialect(self, dialect: sa.Dialect) -> sa.Dialect:
        # The drivers quote each parameter they are given in Python: by name,
        # a value the statement holds several times (the upsert's) is quoted once.
        named = copy.copy(dialect)
        named.paramstyle, named.positional = "pyformat", False
        return named

    def is_conflict(self, error: sa.exc.DBAPIError) -> bool:
        args: tuple[object, ...] = getattr(error.orig, "args", ())
        return bool(args) and args[0] == 1213  # a deadlock

    def merged(
        self, data: sa.ColumnElement[t.Any], removals: int
    ) -> tuple[sa.ColumnElement[t.Any], sa.ColumnElement[bool]]:
        # MariaDB's JSON_MERGE_PATCH can keep keys that several nulls
        # remove, so keys go through JSON_REMOVE.
        paths = [sa.bindparam(f"path_{n}", type_=sa.Text()) for n in range(removals)]
        remaining = sa.func.json_remove(data, *paths) if paths else data
        merged = sa.func.json_merge_patch(remaining, sa.bindparam("patch", type_=sa.Text()))
        kind = sa.case((sa.func.json_valid(data) == fixed(1), sa.func.json_type(data)))
        return merged, kind == fixed("OBJECT")

    def changes(self, changes: ChangeSet, params: dict[str, t.Any]) -> int:
        super().changes(changes, params)
        if not changes.removed:
            return 0
        # Padded to a power of two with repeated paths, so that a few
        # statements serve every number of keys removed.
        paths = [_json_path(name) for name in sorted(changes.removed)]
        removals = 1 << (len(paths) - 1).bit_length()
        paths += paths[-1:] * (removals - len(paths))
        params.update((f"path_{n}", path) for n, path in enumerate(paths))
        return removals

    def upsert(
        self, table: sa.Table, values: dict[str, t.Any], assignments: Assignments
    ) -> sa.Insert:
        # MySQL assigns in this order and later expressions see the new
        # created_at and data; they stay right, as created_at only changes
        # when the row was not live, and then to what they would use.
        # user_id comes first, while live still reads the stored row.
        insert = mysql.insert(table).values(values)
        return insert.on_duplicate_key_update(assignments(insert.inserted))

    def purge_batch(
        self, connection: sa.Connection, statements: PurgeStatements, now: float
    ) -> tuple[int, bool]:
        # In READ COMMITTED, without gap locks, a row a request holds is
        # passed over once its committed version is live. Purges of other
        # processes, which could deadlock with this one, skip.
        lock = {"name": statements.purge_lock_name}
        if not connection.execute(sa.text("SELECT GET_LOCK(:name, 0)"), lock).scalar():
            return 0, False
        try:
            count = connection.execute(statements.delete_expired_batch, {"now": now}).rowcount
        finally:
            connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), lock)
        return count, count == statements.purge_batch


#: Each profile by the backend names SQLAlchemy gives.
PROFILES: dict[str, type[Profile]] = {
    "sqlite": SQLiteProfile,
    "postgresql": PostgreSQLProfile,
    "mysql": MySQLProfile,
    "mariadb": MySQLProfile,
}


def fixed(value: str | int) -> sa.BindParameter[t.Any]:
    """Return ``value`` as a literal of the statement's SQL: the drivers that
    bind parameters in the client (PyMySQL, mysqlclient) quote each one at
    every execution."""
    return sa.literal(value, sa.String() if isinstance(value, str) else sa.Integer(), True)


def dumps(data: t.Mapping[str, str | None]) -> str:
    """Serialise a session's data (or a patch of it) as the table stores it."""
    return json.dumps(data, separators=(",", ":"))


def _lock_timeout(statement: float) -> float:
    """Return how long an operation may wait for a row lock."""
    return min(5.0, statement)


def _default(url: sa.URL, connect_args: dict[str, t.Any], name: str, value: object) -> None:
    """Set a connect argument unless the URL or ``dsn_extra`` sets it."""
    if name not in url.query:
        connect_args.setdefault(name, value)


def _json_path(name: str) -> str:
    """Return the MySQL JSON path of the key ``name`` of an object.

    MariaDB refuses a quoted key that starts with ``-`` (error 4042), but
    reads escapes in it: a ``-`` goes as ``\\u002d``, which no other escape
    contains.
    """
    return "$." + json.dumps(name).replace("-", "\\u002d")


def _file_of(url: sa.URL) -> str | None:
    """Return the absolute path of a SQLite database file, or ``None``."""
    if url.database and url.database != ":memory:" and "uri" not in url.query:
        return os.path.abspath(url.database)
    return None
