"""Sessions in a SQL table, through SQLAlchemy Core.

.. code-block:: python

    app.config["PRANCER_SESSION"] = {
        "store": {
            "driver": "Prancer::Session::Store::Database::Driver::Pg",
            "options": {
                "database": "myapp", "username": "myapp", "password": "secret",
                "hostname": "db.internal", "port": 5432, "table": "sessions",
            },
        },
    }

One row per session in a table that every worker and host shares: the store
for production. Give a ``url`` (``postgres://`` and ``postgresql://`` use
psycopg, ``mysql://`` and ``mariadb://`` PyMySQL unless mysqlclient is
installed), an ``engine`` (Flask-SQLAlchemy's ``db.engine``), or Prancer's
split options and a ``dialect``. With a URL or split options the store has its
own pool, apart from the app's transactions.

Each operation is one short transaction, built once per store:

- ``fetch``: ``SELECT created_at, expires_at, data ... WHERE expires_at > now``.
- ``apply`` that may create: ``INSERT ... ON CONFLICT (id, application) DO
  UPDATE`` (``ON DUPLICATE KEY UPDATE`` on MySQL), which merges the changes
  into a live row in the database itself (``(data::jsonb - removed) ||
  updated`` on PostgreSQL, ``json_patch`` on SQLite, ``JSON_REMOVE`` and
  ``JSON_MERGE_PATCH`` on MySQL) and replaces an expired one; other applies:
  ``UPDATE ... WHERE expires_at > now``, so an expired or removed session is
  not revived. When a request only removed keys, a second statement deletes
  the row if its data became ``{}``. Concurrent requests changing different
  keys keep them all: the row lock orders them. An ``apply`` with expected
  values (``flask session rekey``): ``SELECT ... FOR UPDATE`` of the live row
  (SQLite: under ``BEGIN IMMEDIATE``), merged in Python, then ``UPDATE``, in
  one transaction.
- ``touch``: ``UPDATE ... SET expires_at`` on a live row.
- ``remove``: ``DELETE`` of the live row (its count is the result), then of an
  expired one.
- ``purge``: batches of 100 expired rows, each its own transaction: ``SELECT
  id ... FOR UPDATE SKIP LOCKED`` then ``DELETE`` by those ids on PostgreSQL
  (and SQLite, without the locking clause); ``DELETE ... LIMIT`` in READ
  COMMITTED under a ``GET_LOCK`` on MySQL, so that a purge never deadlocks
  with requests nor with another process's purge.
- ``scan``: ``SELECT ... WHERE id > last ORDER BY id LIMIT 500``, each batch
  its own read. ``clear``: batches of 100 ids by key, each deleted in its own
  transaction.
- ``sessions_of`` and ``remove_user``: ``SELECT`` and ``DELETE ... WHERE
  user_id = ...`` on the ``(user_id, application)`` index. The ``user_id``
  column is set by the statements of ``apply`` that bind or unbind a user (the
  ``_prancer_user`` key), so it changes, and goes, with the row's data.

A pooled connection found dead (the database restarted, or closed it when
idle) is replaced and the operation run once more, whichever the operation;
a deadlock or serialisation failure is retried up to three times; neither
after the statement timeout, so no connection is pinged before use. Any other
failure is a :exc:`.SessionStoreError`, whose message carries the driver's
first line only, never parameters.

Options: ``url``; ``engine``; or ``dialect`` (``postgresql``, ``mysql``,
``sqlite``) with ``database`` (the file for SQLite), ``username``,
``password``, ``hostname``, ``port``, ``charset``, ``dsn_extra`` (DBAPI
connect arguments). ``table`` (``"sessions"``; may be ``"schema.table"``; with
``_expires_at`` appended it must fit the database's name limit),
``application`` (``""``; apps sharing a table keep apart by it; no control
characters), ``create_table`` (true: create the table, or add what one of
an earlier version lacks; workers starting together may all try),
``on_connect`` (SQL run on each new connection, after the store's own),
``connection_check_threshold`` (replace pooled connections older than this;
none), ``connect_timeout`` (5 seconds to connect), ``statement_timeout`` (10
seconds an operation may take, and at most 5 of it waiting for a lock; ``None``
for no limit), ``synchronous_commit`` (false: a crash of the database server
may lose the last moments of session writes, never corrupt them, and no write
waits for a disk flush; true: every write is on disk when the request ends.
PostgreSQL's ``synchronous_commit`` and SQLite's ``synchronous`` follow it;
MySQL and MariaDB follow the server's ``innodb_flush_log_at_trx_commit``),
and the common ``expiration_timeout`` (1800),
``permanent_timeout``, ``absolute_timeout``, ``autopurge`` (true, as in
Prancer) and ``autopurge_probability`` (0.1). Durations are seconds or
``timedelta``.

The timeouts: PostgreSQL gets ``connect_timeout`` and ``SET statement_timeout,
lock_timeout`` on each connection, and, as psycopg has no read timeout, a
watchdog thread that closes the socket of an operation past its deadline (a
server gone silent); MySQL gets the driver's (PyMySQL's or mysqlclient's)
``connect_timeout``, ``read_timeout`` and ``write_timeout``, in whole seconds,
and ``innodb_lock_wait_timeout``. A value given in the URL or ``dsn_extra``
wins.

SQLite: the file is created readable by its owner only (0600), in WAL mode
(readers never block the writer), and a writer waits up to 15 seconds for
another's lock. A file replaced while the app runs (a restored
backup; remove its ``-wal`` and ``-shm`` files with it) is noticed at the next
use of each pooled connection.

The table, for DBAs who create it themselves (``create_table: false``)::

    CREATE TABLE sessions (
        id          VARCHAR(64)  NOT NULL,  -- SHA-256 of the session id, hex
        application VARCHAR(128) NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,  -- epoch seconds
        expires_at  DOUBLE PRECISION NOT NULL,
        data        TEXT NOT NULL,          -- MEDIUMTEXT on MySQL; a JSON object
        user_id     VARCHAR(255),           -- the user the session is bound to
        PRIMARY KEY (id, application)
    );
    CREATE INDEX sessions_expires_at ON sessions (expires_at);
    CREATE INDEX sessions_user_id ON sessions (user_id, application)
        WHERE user_id IS NOT NULL;  -- the whole column on MySQL

A table of an earlier version lacks ``user_id``: when ``create_table`` is true
the store adds the column, sets it from the data of the sessions bound before
(in batches of 100, each locking its rows), then adds the index; a worker
stopped before the index finishes the job at its next start. Otherwise it
refuses to start, giving the statements to run (``ALTER TABLE sessions ADD
COLUMN user_id VARCHAR(255)`` and the ``CREATE INDEX`` above). On a large
PostgreSQL table, run them yourself beforehand, with ``CREATE INDEX
CONCURRENTLY``: building the index blocks writes and may outlast
``statement_timeout``. Run by hand, they leave ``user_id`` empty on the
sessions bound before, which ``sessions_of`` and ``remove_user`` then miss.

Caveats: times come from the app servers' clocks, not the database's. Only
PostgreSQL (extra ``postgres``), MySQL 5.7.22+ or MariaDB 10.3+ (``mysql``)
and SQLite 3.24+ with its JSON functions (built in since 3.38; extra
``database``) are supported. On PostgreSQL a session key with a
NUL character cannot be stored (JSONB refuses it). A given ``engine`` is
configured by its owner: ``on_connect``, the pool options and the timeouts do
not apply to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import random
import socket
import threading
import time
import typing as t
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from ..changes import ChangeSet
from ..changes import Record
from ..changes import user_id_of
from ..changes import USER_KEY
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import positive_seconds
from .base import Seconds
from .base import StoreDriver

logger = logging.getLogger(__name__)

_T = t.TypeVar("_T")

#: How many expired sessions one purge transaction deletes at most.
PURGE_BATCH = 100
#: How many sessions one read of :meth:`DatabaseStore.scan` returns at most.
SCAN_BATCH = 500
#: How many times an operation is retried after a deadlock.
CONFLICT_RETRIES = 3

Dialect = t.Literal["postgresql", "mysql", "sqlite"]

#: A ``dialect`` option mapped to its SQLAlchemy driver name.
_DRIVERNAMES: dict[str, str] = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
}
#: A SQLAlchemy backend name mapped to the extra that installs its DBAPI module.
_EXTRAS: dict[str, str] = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
_SPLIT_OPTIONS = ("database", "username", "password", "hostname", "port", "charset", "dsn_extra")


class DatabaseStore(StoreDriver):
    """Keep sessions in a SQL table, one row per session and application.

    :param url: a SQLAlchemy database URL.
    :param engine: an existing :class:`sqlalchemy.engine.Engine` to use instead.
    :param dialect: ``"postgresql"``, ``"mysql"`` or ``"sqlite"``; required with
        the split options ``database`` .. ``dsn_extra``.
    :param table: the table name, optionally ``"schema.table"``.
    :param application: the name that keeps apps sharing the table apart.
    :param create_table: create the table and its indexes if missing, and add
        the ``user_id`` column and index to a table of an earlier version.
    :param on_connect: SQL statements run on each new connection.
    :param connection_check_threshold: replace pooled connections older than
        this many seconds.
    """

    def __init__(
        self,
        *,
        url: str | sa.URL | None = None,
        engine: sa.Engine | None = None,
        dialect: Dialect | None = None,
        database: str | None = None,
        username: str | None = None,
        password: str | None = None,
        hostname: str | None = None,
        port: int | None = None,
        charset: str | None = None,
        dsn_extra: t.Mapping[str, t.Any] | None = None,
        table: str = "sessions",
        application: str = "",
        create_table: bool = True,
        on_connect: t.Sequence[str] = (),
        connection_check_threshold: Seconds | None = None,
        connect_timeout: Seconds = 5,
        statement_timeout: Seconds | None = 10,
        synchronous_commit: bool = False,
        expiration_timeout: Seconds = DEFAULT_EXPIRATION_TIMEOUT,
        permanent_timeout: Seconds | None = None,
        absolute_timeout: Seconds | None = None,
        autopurge: bool = True,
        autopurge_probability: float = 0.1,
    ) -> None:
        super().__init__(
            expiration_timeout=expiration_timeout,
            permanent_timeout=permanent_timeout,
            absolute_timeout=absolute_timeout,
            autopurge=autopurge,
            autopurge_probability=autopurge_probability,
        )
        values = (database, username, password, hostname, port, charset, dsn_extra)
        split = {k: v for k, v in zip(_SPLIT_OPTIONS, values, strict=True) if v is not None}
        sources = [name for name, value in (("url", url), ("engine", engine)) if value is not None]
        sources += list(split)[:1]
        if not sources:
            raise ConfigurationError("give one of url, engine or dialect with database", "url")
        if len(sources) > 1:
            raise ConfigurationError(f"cannot be combined with {sources[0]}", sources[1])
        for name, value in split.items():
            kind = int if name == "port" else Mapping if name == "dsn_extra" else str
            if not isinstance(value, kind) or isinstance(value, bool):
                raise ConfigurationError(
                    f"must be a {kind.__name__}, not {type(value).__name__}", name
                )
        if dialect is not None and dialect not in _DRIVERNAMES:
            raise ConfigurationError(f"must be one of {', '.join(_DRIVERNAMES)}", "dialect")
        if not isinstance(on_connect, (list, tuple)) or not all(
            isinstance(s, str) for s in on_connect
        ):
            raise ConfigurationError("must be a list of SQL statements", "on_connect")
        if connection_check_threshold is not None:
            connection_check_threshold = positive_seconds(
                connection_check_threshold, "connection_check_threshold"
            )
        timeouts = _Timeouts(
            positive_seconds(connect_timeout, "connect_timeout"),
            None
            if statement_timeout is None
            else positive_seconds(statement_timeout, "statement_timeout"),
        )
        if not isinstance(application, str) or len(application) > 128:
            raise ConfigurationError("must be a string of at most 128 characters", "application")
        if any(ord(char) < 32 or ord(char) == 127 for char in application):
            raise ConfigurationError("must not contain control characters", "application")
        if not isinstance(synchronous_commit, bool):
            raise ConfigurationError("must be true or false", "synchronous_commit")
        if not isinstance(create_table, bool):
            raise ConfigurationError("must be true or false", "create_table")
        #: The name that keeps the sessions of apps sharing the table apart.
        self.application = application
        #: The session table.
        self.table = _define_table(table)

        if engine is not None:
            if on_connect or connection_check_threshold is not None:
                name = "on_connect" if on_connect else "connection_check_threshold"
                raise ConfigurationError("does not apply to a given engine; configure it", name)
            _check_dialect(engine.dialect.name, dialect, "engine")
            #: The engine the store runs its statements on.
            self.engine = engine
        else:
            self.engine = _create_engine(
                url,
                dialect,
                split,
                on_connect,
                connection_check_threshold,
                timeouts,
                synchronous_commit,
            )
        if not sa.event.contains(self.engine, "handle_error", _flag_lost_socket):
            sa.event.listen(self.engine, "handle_error", _flag_lost_socket)
        self._backend = (
            "mysql" if self.engine.dialect.name == "mariadb" else self.engine.dialect.name
        )
        _check_table_name(self.table, self.engine.dialect, create_table)
        self._build_statements()
        self._timeouts = timeouts if engine is None else _Timeouts(None, None)
        # Retries happen only this soon after an operation started, so that a
        # database gone silent fails the request in about the statement timeout.
        self._retry_window = self._timeouts.statement or math.inf
        #: Runs operations of one statement; with an engine of our own on
        #: PostgreSQL or MySQL, in autocommit mode.
        self._single = self.engine
        self._writer = self.engine
        if engine is None and self._backend != "sqlite":
            # Operations of several statements need a real transaction.
            level = "READ COMMITTED" if self._backend == "postgresql" else "REPEATABLE READ"
            self._writer = self.engine.execution_options(isolation_level=level)
        # Without gap locks a purge does not block requests creating sessions.
        self._purger = self._writer
        if self._backend == "mysql":
            self._purger = self.engine.execution_options(isolation_level="READ COMMITTED")
        # Deletes of many rows (clear, remove_user): without gap locks on
        # MySQL, and taking SQLite's write lock at BEGIN like other writes.
        self._bulk = self._purger
        if self.engine.dialect.name == "sqlite":
            # Writers take the write lock at BEGIN and queue under the busy
            # timeout, where a deferred transaction could fail at once.
            self._writer = self.engine.execution_options()
            sa.event.listen(self._writer, "begin", _begin_immediate)
            self._bulk = self._writer
        #: Writes of one statement: the writer on SQLite (whose lock it takes
        #: up front), autocommit elsewhere.
        self._single_writer = self._writer if self._backend == "sqlite" else self._single
        #: Hot-path statements run on DBAPI cursors (see :meth:`_run_statement`).
        self._direct = engine is None
        self._compiled: dict[sa.ClauseElement, _Compiled] = {}
        try:
            if create_table:
                self._create_table()
            else:
                self._check_table()
        finally:
            if engine is None:
                # No pooled connection may outlive a store that failed to start.
                self.engine.dispose()

    def _after_fork(self) -> None:
        """Also give the child a pool of its own, if the engine is ours: a
        connection shared by two processes hands one the other's replies.
        The parent keeps its connections."""
        super()._after_fork()
        if getattr(self, "_direct", False):  # not set by a store that failed to start
            self.engine.dispose(close=False)

    def fetch(self, key: str) -> Record | None:
        params = {"key": key, "now": self.clock()}
        row = self._run_statement("read a session", self._fetch, params, "first", self.engine)
        if row is None:
            return None
        created_at, expires_at, raw = row
        data = self._decode(key, raw)
        return None if data is None else Record(data, created_at, expires_at)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        now = self.clock()
        timeout = self.expiration_timeout if changes.timeout is None else changes.timeout
        if changes.expected:
            return self._apply_expected(key, changes, now, timeout)
        params: dict[str, t.Any] = {
            "key": key,
            "now": now,
            "idle": now + timeout,
            "absolute": self.absolute_timeout,
            # Only read by statements of changes that bind or unbind a user,
            # and by the INSERT of a new row, which then has no user unless so.
            # Not named user_id: SQLAlchemy would add a parameter named after
            # a column to an UPDATE's SET clause, and unbind the session.
            "user": changes.user_id,
        }
        removals = 0
        if self._backend == "sqlite":
            # A JSON merge patch: null removes a key; the values, serialised
            # session values, are JSON strings and never null.
            params["patch"] = _dumps(dict.fromkeys(changes.removed) | dict(changes.updated))
        else:
            params["patch"] = _dumps(changes.updated)
            params["removed"] = sorted(changes.removed)
        if self._backend == "mysql" and changes.removed:
            # Padded to a power of two with repeated paths, so that a few
            # statements serve every number of keys removed.
            paths = [_json_path(name) for name in params.pop("removed")]
            removals = 1 << (len(paths) - 1).bit_length()
            paths += paths[-1:] * (removals - len(paths))
            params.update((f"path_{n}", path) for n, path in enumerate(paths))
        update, upsert = self._merge_statements(removals, changes.binds_user)
        if changes.updated and changes.created_at is not None:
            params["created_at"] = changes.created_at
            params["fresh_expiry"] = self.expiry_for(changes.created_at, now, timeout)
            params["fresh"] = _dumps(changes.updated)

            self._run_statement("write a session", upsert, params, "rowcount", self._single_writer)
            return True

        if changes.updated or not changes.removed:
            count = self._run_statement(
                "write a session", update, params, "rowcount", self._single_writer
            )
            return bool(count > 0)

        # Only removals can leave the session empty; gone, then. The DELETE
        # checks the row is still empty, so it needs no transaction with the
        # UPDATE: a key another request adds in between keeps the session.
        if self._backend == "sqlite":

            def merge(connection: sa.Connection) -> bool:
                if connection.execute(update, params).rowcount == 0:
                    return False
                return connection.execute(self._delete_empty, params).rowcount == 0

            return self._run("write a session", merge)
        if self._run_statement("write a session", update, params, "rowcount", self._single) == 0:
            return False
        deleted = self._run_statement(
            "write a session", self._delete_empty, params, "rowcount", self._single
        )
        return bool(deleted == 0)

    def _apply_expected(self, key: str, changes: ChangeSet, now: float, timeout: float) -> bool:
        """Apply ``changes`` that hold :attr:`~.ChangeSet.expected` values: in
        one transaction that locks the row, merged in Python by
        :meth:`.ChangeSet.merged_into`. Only ``flask session rekey`` asks for
        it, so the requests' single statements stay as they are."""
        params = {"key": key, "now": now}

        def merge(connection: sa.Connection) -> bool | None:
            row = connection.execute(self._fetch_for_update, params).first()
            data = None if row is None else self._decode(key, row.data)
            if row is None or data is None:
                return None
            merged = changes.merged_into(data)
            if not merged:
                connection.execute(self._delete, params)
                return False
            user = merged.get(USER_KEY)
            values = {
                "merged": _dumps(merged),
                # Derived from the data written, so the index agrees with it.
                "user": None if user is None else user_id_of(user),
                "new_expiry": self.expiry_for(row.created_at, now, timeout),
            }
            connection.execute(self._rewrite, params | values)
            return True

        stored = self._run("write a session", merge, engine=self._writer)
        if stored is not None:
            return stored
        if changes.created_at is None:
            return False
        # No live session holds the values expected, so only the other
        # updates apply, to the session this creates (or to one created
        # meanwhile, whose values of the expected keys are then kept).
        others = {n: v for n, v in changes.updated.items() if n not in changes.expected}
        return self.apply(key, dataclasses.replace(changes, updated=others, expected={}))

    def touch(self, key: str, expires_at: float) -> None:
        params = {"key": key, "now": self.clock(), "new_expiry": expires_at}
        self._run_statement("touch a session", self._touch, params, "rowcount", self._single_writer)

    def remove(self, key: str) -> bool:
        params = {"key": key, "now": self.clock()}
        if self._backend == "sqlite":

            def remove(connection: sa.Connection) -> bool:
                live = connection.execute(self._delete_live, params).rowcount > 0
                connection.execute(self._delete, params)
                return live

            return self._run("remove a session", remove)
        # Each DELETE is atomic on its own: the first tells whether a live
        # session went, the second takes an expired row left behind.
        action = "remove a session"
        live = self._run_statement(action, self._delete_live, params, "rowcount", self._single)
        self._run_statement(action, self._delete, params, "rowcount", self._single)
        return bool(live > 0)

    def purge(self) -> int:
        """Delete expired sessions in batches of :data:`PURGE_BATCH`, each in a
        short transaction that leaves alone rows a request holds, so that a
        purge does not deadlock with requests and holds little memory."""
        deleted = 0
        now = self.clock()

        def purge_batch(connection: sa.Connection) -> tuple[int, bool]:
            if self._backend == "mysql":
                # In READ COMMITTED, without gap locks, a row a request holds
                # is passed over once its committed version is live. Purges of
                # other processes, which could deadlock with this one, skip.
                lock = {"name": self._purge_lock_name}
                if not connection.execute(sa.text("SELECT GET_LOCK(:name, 0)"), lock).scalar():
                    return 0, False
                try:
                    count = connection.execute(self._delete_expired_batch, {"now": now}).rowcount
                finally:
                    connection.execute(sa.text("SELECT RELEASE_LOCK(:name)"), lock)
                return count, count == PURGE_BATCH
            query = self._expired
            if self._backend == "postgresql":
                query = query.with_for_update(skip_locked=True)
            ids = connection.execute(query, {"now": now}).scalars().all()
            if not ids:
                return 0, False
            count = connection.execute(self._delete_expired, {"now": now, "ids": ids}).rowcount
            return count, len(ids) == PURGE_BATCH and count > 0

        more = True
        while more:
            count, more = self._run("purge expired sessions", purge_batch, engine=self._purger)
            deleted += count
        return deleted

    indexes_users = True

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        """Yield this application's live sessions in batches of
        :data:`SCAN_BATCH` by key, each batch a short read of its own, so that
        a scan of many sessions holds neither a transaction nor much memory."""

        def read(after: str) -> t.Sequence[t.Any]:
            params = {"after": after, "now": self.clock(), "limit": SCAN_BATCH}
            return self._run("list sessions", lambda c: c.execute(self._scan, params).all(), False)

        after = ""
        while True:
            rows = read(after)
            for row in rows:
                data = self._decode(row.id, row.data)
                if data is not None:
                    yield row.id, Record(data, row.created_at, row.expires_at)
            if len(rows) < SCAN_BATCH:
                return
            after = rows[-1].id

    def clear(self) -> int:
        """Delete this application's sessions in batches by key, each in a
        short transaction, and return how many live ones were deleted."""
        deleted = 0
        now = self.clock()
        after = ""

        def clear_batch(connection: sa.Connection) -> tuple[int, list[str]]:
            ids = connection.execute(self._batch, {"after": after}).scalars().all()
            if not ids:
                return 0, []
            params = {"ids": ids, "now": now}
            count = connection.execute(self._delete_live_ids, params).rowcount
            connection.execute(self._delete_ids, params)
            return count, list(ids)

        while True:
            count, ids = self._run("clear the sessions", clear_batch, engine=self._bulk)
            deleted += count
            if len(ids) < PURGE_BATCH:
                return deleted
            after = ids[-1]

    def sessions_of(self, user_id: str) -> dict[str, Record]:
        params = {"user": user_id, "now": self.clock()}
        rows = self._run(
            "read the sessions of a user", lambda c: c.execute(self._of_user, params).all(), False
        )
        records = {}
        for row in rows:
            data = self._decode(row.id, row.data)
            if data is not None:
                records[row.id] = Record(data, row.created_at, row.expires_at)
        return records

    def remove_user(self, user_id: str) -> int:
        params = {"user": user_id, "now": self.clock()}

        def remove(connection: sa.Connection) -> int:
            live = connection.execute(self._delete_user_live, params).rowcount
            connection.execute(self._delete_user, params)
            return live

        return self._run("remove the sessions of a user", remove, engine=self._bulk)

    def _run(
        self,
        action: str,
        operation: t.Callable[[sa.Connection], _T],
        write: bool = True,
        engine: sa.Engine | None = None,
    ) -> _T:
        """Run ``operation`` in a transaction and return its result, retried
        as :meth:`_retrying` says."""
        chosen = engine or (self._writer if write else self.engine)

        def attempt() -> _T:
            with self._connect(chosen) as connection:
                with self._deadline(connection.connection.dbapi_connection), connection.begin():
                    return operation(connection)

        return self._retrying(action, attempt)

    def _connect(self, engine: sa.Engine) -> sa.Connection:
        """Check out a connection of ``engine``, as ``engine.connect()`` does.

        Setting up a pooled connection for ``engine`` (its isolation level)
        talks to the server on some drivers (PyMySQL, mysqlclient, psycopg2),
        where SQLAlchemy lets the driver's error through and returns a dead
        connection to the pool; here it is discarded and the error is one
        :meth:`_retrying` knows.
        """
        pooled = None
        try:
            pooled = engine.raw_connection()
            with self._deadline(pooled.dbapi_connection):
                return sa.Connection(engine, pooled)
        except engine.dialect.loaded_dbapi.Error as error:
            # A connection whose settings failed halfway is not reused either.
            raise self._driver_failure(error, pooled, None, invalidate=True) from None

    def _run_statement(
        self,
        action: str,
        statement: sa.Select[t.Any] | sa.Update | sa.Insert | sa.Delete,
        params: dict[str, t.Any],
        result: t.Literal["first", "rowcount"],
        engine: sa.Engine,
    ) -> t.Any:
        """Run the one ``statement`` of a hot-path operation and return its
        first row or its row count.

        Where the store made the engine (its options are then known), the
        statement's SQL, compiled once, goes straight to a pooled DBAPI
        cursor: SQLAlchemy's execution layer costs about as much as the round
        trip to a database on the same machine.
        """
        if not self._direct or engine is not self.engine:
            if result == "first":
                return self._run(action, lambda c: c.execute(statement, params).first(), False)
            return self._run(action, lambda c: c.execute(statement, params).rowcount, True, engine)
        compiled = self._compiled.get(statement)
        if compiled is None:
            compiled = self._compiled[statement] = _Compiled.of(statement, self.engine.dialect)
        return self._retrying(action, lambda: self._execute_direct(compiled, params, result))

    def _execute_direct(
        self, compiled: _Compiled, params: dict[str, t.Any], result: t.Literal["first", "rowcount"]
    ) -> t.Any:
        dialect = self.engine.dialect
        connection = cursor = None
        try:
            connection = self.engine.raw_connection()
            cursor = connection.cursor()
            with self._deadline(connection.dbapi_connection):
                cursor.execute(compiled.sql, compiled.parameters(params))
                return cursor.fetchone() if result == "first" else cursor.rowcount
        except dialect.loaded_dbapi.Error as error:
            raise self._driver_failure(error, connection, cursor) from None
        finally:
            if cursor is not None:
                with contextlib.suppress(Exception):
                    cursor.close()
            if connection is not None:
                connection.close()

    def _driver_failure(
        self,
        error: t.Any,
        connection: sa.PoolProxiedConnection | None,
        cursor: t.Any,
        invalidate: bool = False,
    ) -> sa.exc.StatementError:
        """Return the driver's ``error`` as SQLAlchemy would wrap it, after
        discarding ``connection`` if the error says it is lost (or always,
        with ``invalidate``)."""
        dialect = self.engine.dialect
        dbapi_connection = None if connection is None else connection.dbapi_connection
        lost = dialect.is_disconnect(error, dbapi_connection, cursor) or _socket_lost(
            error, dialect
        )
        if lost and connection is not None:
            # The pooled connections opened before it are likely dead too (a
            # restart): replaced at their next checkout, so that the retry
            # gets a new one. SQLAlchemy does so for the statements it runs.
            self.engine.pool._invalidate(connection, error)
        elif invalidate and connection is not None:
            connection.invalidate(error)
        wrapped: sa.exc.StatementError = sa.exc.DBAPIError.instance(
            None,
            None,
            error,
            dialect.loaded_dbapi.Error,
            hide_parameters=True,
            connection_invalidated=lost,
            dialect=dialect,
        )
        return wrapped

    def _retrying(self, action: str, attempt: t.Callable[[], _T]) -> _T:
        """Return what ``attempt`` returns, trying again where that can help.

        A pooled connection found dead (the database restarted) is replaced and
        the operation run once more, which is why no connection is pinged
        before use. A deadlock or serialisation failure is retried a few times
        after a short random pause. Both only while the operation is within
        its statement timeout, so that a database gone silent fails the
        request in about that time.
        """
        started = time.monotonic()
        reconnected = False
        conflicts = 0
        while True:
            try:
                return attempt()
            except sa.exc.SQLAlchemyError as error:
                in_time = time.monotonic() - started < self._retry_window
                if isinstance(error, sa.exc.DBAPIError) and in_time:
                    if error.connection_invalidated and not reconnected:
                        reconnected = True
                        logger.info("Retrying on a new connection: the pooled one was closed.")
                        continue
                    if conflicts < CONFLICT_RETRIES and _is_conflict(error):
                        conflicts += 1
                        logger.info("Retrying to %s after %s.", action, type(error.orig).__name__)
                        time.sleep(random.uniform(0.001, 0.02) * conflicts)
                        continue
                failure = error
            # Raised outside the except clause, so that SQLAlchemy's error,
            # whose text may quote the parameters, is not even its context.
            raise self._error(action, failure)

    def _build_statements(self) -> None:
        """Build the statements that take no variable part once; SQLAlchemy
        then caches their compiled form."""
        c = self.table.c
        now: sa.BindParameter[float] = sa.bindparam("now", type_=sa.Double())
        this = sa.and_(
            c.id == sa.bindparam("key", type_=sa.String()), c.application == self.application
        )
        self._fetch = sa.select(c.created_at, c.expires_at, c.data).where(this, c.expires_at > now)
        self._delete_empty = sa.delete(self.table).where(this, c.data == "{}")
        self._fetch_for_update = (
            sa.select(c.created_at, c.data).where(this, c.expires_at > now).with_for_update()
        )
        self._rewrite = (
            sa.update(self.table)
            .where(this)
            .values(
                data=sa.bindparam("merged", type_=sa.Text()),
                user_id=sa.bindparam("user", type_=sa.String()),
                expires_at=sa.bindparam("new_expiry", type_=sa.Double()),
            )
        )
        self._touch = (
            sa.update(self.table)
            .where(this, c.expires_at > now)
            .values(expires_at=sa.bindparam("new_expiry", type_=sa.Double()))
        )
        self._delete_live = sa.delete(self.table).where(this, c.expires_at > now)
        self._delete = sa.delete(self.table).where(this)
        self._expired = (
            sa.select(c.id)
            .where(c.application == self.application, c.expires_at <= now)
            .limit(PURGE_BATCH)
        )
        self._delete_expired = sa.delete(self.table).where(
            c.application == self.application,
            c.id.in_(sa.bindparam("ids", expanding=True)),
            c.expires_at <= now,
        )
        digest = hashlib.sha256(f"{self.table.fullname}\0{self.application}".encode())
        self._purge_lock_name = f"prancer_purge_{digest.hexdigest()[:40]}"
        self._delete_expired_batch = (
            sa.delete(self.table)
            .where(c.application == self.application, c.expires_at <= now)
            .with_dialect_options(mysql_limit=PURGE_BATCH)
        )
        after = sa.bindparam("after", type_=sa.String())
        mine = c.application == self.application
        self._scan = (
            sa.select(c.id, c.created_at, c.expires_at, c.data)
            .where(mine, c.id > after, c.expires_at > now)
            .order_by(c.id)
            .limit(sa.bindparam("limit", type_=sa.Integer()))
        )
        self._batch = sa.select(c.id).where(mine, c.id > after).order_by(c.id).limit(PURGE_BATCH)
        ids = c.id.in_(sa.bindparam("ids", expanding=True))
        self._delete_live_ids = sa.delete(self.table).where(mine, ids, c.expires_at > now)
        self._delete_ids = sa.delete(self.table).where(mine, ids)
        user = c.user_id == sa.bindparam("user", type_=sa.String())
        self._of_user = sa.select(c.id, c.created_at, c.expires_at, c.data).where(
            mine, user, c.expires_at > now
        )
        self._delete_user_live = sa.delete(self.table).where(mine, user, c.expires_at > now)
        self._delete_user = sa.delete(self.table).where(mine, user)
        self._merges: dict[tuple[int, bool], tuple[sa.Update, sa.Insert]] = {}

    def _merge_statements(self, removals: int, binds: bool) -> tuple[sa.Update, sa.Insert]:
        """Return the UPDATE that merges changes into a live row and the INSERT
        that creates the row or merges into it, for MySQL with ``removals``
        JSON paths to remove, and setting ``user_id`` if the changes ``binds``
        a user (the variable parts), built once each."""
        statements = self._merges.get((removals, binds))
        if statements is not None:
            return statements
        c = self.table.c
        backend = self._backend
        now: sa.BindParameter[float] = sa.bindparam("now", type_=sa.Double())
        idle: sa.BindParameter[float] = sa.bindparam("idle", type_=sa.Double())
        absolute: sa.BindParameter[float] = sa.bindparam("absolute", type_=sa.Double())
        this = sa.and_(
            c.id == sa.bindparam("key", type_=sa.String()), c.application == self.application
        )
        least = sa.func.min if backend == "sqlite" else sa.func.least

        def expiry(created_at: sa.ColumnElement[t.Any]) -> sa.ColumnElement[t.Any]:
            return least(idle, sa.func.coalesce(created_at + absolute, idle))

        merged: sa.ColumnElement[t.Any]
        patch = sa.bindparam("patch", type_=sa.Text())
        if backend == "postgresql":
            removed = sa.bindparam("removed", type_=postgresql.ARRAY(sa.Text()))
            merged = sa.cast(
                sa.cast(c.data, postgresql.JSONB)
                .op("-")(sa.cast(removed, postgresql.ARRAY(sa.Text())))
                .op("||")(sa.cast(patch, postgresql.JSONB)),
                sa.Text(),
            )
            # A cheap guard that keeps an array or a scalar out of the merge;
            # PostgreSQL before 16 has no cast that cannot fail.
            valid = sa.func.left(c.data, 1) == "{"
        elif backend == "sqlite":
            merged = sa.func.json_patch(c.data, patch)
            kind = sa.case((sa.func.json_valid(c.data) == 1, sa.func.json_type(c.data)))
            valid = kind == "object"
        else:
            # MariaDB's JSON_MERGE_PATCH can keep keys that several nulls
            # remove, so keys go through JSON_REMOVE.
            paths = [sa.bindparam(f"path_{n}", type_=sa.Text()) for n in range(removals)]
            remaining = sa.func.json_remove(c.data, *paths) if paths else c.data
            merged = sa.func.json_merge_patch(remaining, patch)
            kind = sa.case((sa.func.json_valid(c.data) == 1, sa.func.json_type(c.data)))
            valid = kind == "OBJECT"
        live = sa.and_(c.expires_at > now, valid)

        user_id = sa.bindparam("user", type_=sa.String())
        update = (
            sa.update(self.table)
            .where(this, live)
            .values(data=merged, expires_at=expiry(c.created_at))
        )
        if binds:
            update = update.values(user_id=user_id)
        values = {
            "id": sa.bindparam("key", type_=sa.String()),
            "application": self.application,
            "created_at": sa.bindparam("created_at", type_=sa.Double()),
            "expires_at": sa.bindparam("fresh_expiry", type_=sa.Double()),
            "data": sa.bindparam("fresh", type_=sa.Text()),
            "user_id": user_id,
        }
        upsert: sa.Insert
        if backend == "postgresql" or backend == "sqlite":
            dialect_insert = postgresql.insert if backend == "postgresql" else sqlite.insert
            insert = dialect_insert(self.table).values(values)
            created_at = sa.case((live, c.created_at), else_=insert.excluded.created_at)
            fresh_user: sa.ColumnElement[t.Any] = insert.excluded.user_id
            upsert = insert.on_conflict_do_update(
                index_elements=[c.id, c.application],
                set_={
                    "user_id": fresh_user
                    if binds
                    else sa.case((live, c.user_id), else_=fresh_user),
                    "created_at": created_at,
                    "data": sa.case((live, merged), else_=insert.excluded.data),
                    "expires_at": expiry(created_at),
                },
            )
        else:
            # MySQL assigns in this order and later expressions see the new
            # created_at and data; they stay right, as created_at only changes
            # when the row was not live, and then to what they would use.
            # user_id comes first, while live still reads the stored row.
            my_insert = mysql.insert(self.table).values(values)
            created_at = sa.case((live, c.created_at), else_=my_insert.inserted.created_at)
            fresh_user = my_insert.inserted.user_id
            upsert = my_insert.on_duplicate_key_update(
                [
                    (
                        "user_id",
                        fresh_user if binds else sa.case((live, c.user_id), else_=fresh_user),
                    ),
                    ("created_at", created_at),
                    ("data", sa.case((live, merged), else_=my_insert.inserted.data)),
                    ("expires_at", expiry(created_at)),
                ]
            )
        self._merges[removals, binds] = update, upsert
        return update, upsert

    def _create_table(self) -> None:
        """Create the table, or add what a table of an earlier version lacks."""

        def create(connection: sa.Connection) -> None:
            self.table.metadata.create_all(connection, checkfirst=True)

        index = f"{self.table.name}_user_id"
        add_column, create_index = self._upgrade

        def run(
            action: str, operation: t.Callable[[sa.Connection], object]
        ) -> t.Callable[[], object]:
            return lambda: self._run(action, operation, engine=self.engine)

        def indexed(schema: _Schema) -> bool:
            return index in schema.indexes

        steps: list[tuple[t.Callable[[], object], t.Callable[[_Schema], bool]]] = [
            (run("create the session table", create), lambda s: s.exists),
            (run("add the user_id column", _execute(add_column)), lambda s: "user_id" in s.columns),
            # Before the index, whose presence marks the upgrade done: a worker
            # stopped in between fills the column at its next start.
            (self._fill_user_ids, indexed),
            (run("create the user_id index", _execute(create_index)), indexed),
        ]
        schema = self._schema()
        for step, done in steps:
            if done(schema):
                continue
            try:
                step()
            except SessionStoreError:
                # Workers starting together race; one wins, and the others'
                # statements fail on what now exists.
                if not done(self._schema()):
                    raise
            schema = self._schema()

    def _fill_user_ids(self) -> None:
        """Set ``user_id`` from the data of the sessions of every application
        that were bound to a user before the column existed, so that
        :meth:`sessions_of` and :meth:`remove_user` find them.

        In batches by key, each a transaction that locks its rows: a request
        writing one of them meanwhile waits, and then sets ``user_id`` itself
        if it binds or unbinds. Rows already filled are passed over, so two
        workers upgrading at once, or a worker that stopped halfway and
        starts again, leave the same result.
        """
        c = self.table.c
        longest = t.cast(sa.String, c.user_id.type).length or math.inf
        previous = sa.tuple_(
            sa.bindparam("after", type_=sa.String()), sa.bindparam("app", type_=sa.String())
        )
        unfilled = (
            sa.select(c.id, c.application, c.data)
            .where(
                c.user_id.is_(None),
                c.data.contains(f'"{USER_KEY}"', autoescape=True),
                sa.tuple_(c.id, c.application) > previous,
            )
            .order_by(c.id, c.application)
            .limit(PURGE_BATCH)
            .with_for_update()
        )
        fill = (
            sa.update(self.table)
            .where(
                c.id == sa.bindparam("key", type_=sa.String()),
                c.application == sa.bindparam("app", type_=sa.String()),
            )
            .values(user_id=sa.bindparam("user", type_=sa.String()))
        )

        def fill_batch(connection: sa.Connection) -> tuple[str, str] | None:
            rows = connection.execute(unfilled, {"after": after[0], "app": after[1]}).all()
            bound = [
                {"key": row.id, "app": row.application, "user": user}
                for row in rows
                # A longer id, bound by an earlier version, does not fit.
                if (user := _user_in(row.data)) is not None and len(user) <= longest
            ]
            if bound:
                connection.execute(fill, bound)
            return (rows[-1].id, rows[-1].application) if len(rows) == PURGE_BATCH else None

        after = ("", "")
        while True:
            last = self._run("fill user_id from the data", fill_batch, engine=self._bulk)
            if last is None:
                return
            after = last

    def _check_table(self) -> None:
        """Refuse a table of an earlier version, without the user_id column.

        A database that cannot be reached is let be: the app may start before
        it, and each operation will report the failure.
        """
        try:
            schema = self._schema()
        except SessionStoreError as error:
            logger.warning("Could not check the session table: %s", error)
            return
        if schema.exists and "user_id" not in schema.columns:
            dialect = self.engine.dialect
            statements = "".join(f"{s.compile(dialect=dialect)};\n" for s in self._upgrade)
            raise ConfigurationError(
                f"{self.table.fullname!r} lacks the user_id column and index of this"
                f" version: run\n{statements}or set create_table to true",
                "table",
            )

    def _schema(self) -> _Schema:
        def inspect(connection: sa.Connection) -> _Schema:
            inspector = sa.inspect(connection)
            name, schema = self.table.name, self.table.schema
            if not inspector.has_table(name, schema=schema):
                return _Schema(False, set(), set())
            columns = {column["name"] for column in inspector.get_columns(name, schema=schema)}
            indexes = {index["name"] for index in inspector.get_indexes(name, schema=schema)}
            return _Schema(True, columns, indexes)

        return self._run("inspect the session table", inspect, engine=self.engine)

    @property
    def _upgrade(self) -> tuple[sa.TextClause, sa.schema.CreateIndex]:
        """The statements that bring a table of an earlier version up to date."""
        dialect = self.engine.dialect
        column = sa.schema.CreateColumn(self.table.c.user_id).compile(dialect=dialect)
        table = dialect.identifier_preparer.format_table(self.table)
        index = next(i for i in self.table.indexes if i.name == f"{self.table.name}_user_id")
        add_column = f"ALTER TABLE {table} ADD COLUMN {column}".replace(":", "\\:")
        return sa.text(add_column), sa.schema.CreateIndex(index)

    def _decode(self, key: str, raw: object) -> dict[str, str] | None:
        try:
            data = json.loads(raw) if isinstance(raw, str) else None
        except (ValueError, RecursionError):
            data = None
        if isinstance(data, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            return data
        logger.warning(
            "Ignoring session %s... in table %s: its data is not a JSON object of strings.",
            key[:12],
            self.table.fullname,
        )
        return None

    def _deadline(self, dbapi_connection: t.Any) -> t.ContextManager[object]:
        if self._backend != "postgresql" or self._timeouts.statement is None:
            return contextlib.nullcontext()
        return _WATCHDOG.guard(dbapi_connection, self._timeouts.statement)

    def _error(self, action: str, error: sa.exc.SQLAlchemyError) -> SessionStoreError:
        cause = DriverError(error.orig if isinstance(error, sa.exc.StatementError) else error)
        failure = SessionStoreError(
            f"could not {action} in table {self.table.fullname!r}: {cause}", cause
        )
        failure.__cause__ = cause
        return failure


class DriverError(Exception):
    """What the database driver raised, reduced to its class and the first line
    of its message: SQLAlchemy's error quotes the statement's parameters, and
    drivers' detail lines (PostgreSQL's "Failing row contains ...") may quote
    values, which would put session data in logs.
    """

    def __init__(self, error: BaseException | None) -> None:
        lines = str(error).strip().splitlines()
        super().__init__(f"{type(error).__name__}: {lines[0] if lines else ''}")
        #: The SQLSTATE (PostgreSQL) or error number (MySQL), if any.
        self.code: str | int | None = getattr(error, "sqlstate", None)
        args = getattr(error, "args", ())
        if self.code is None and args and isinstance(args[0], int):
            self.code = args[0]


class _Compiled(t.NamedTuple):
    """A statement compiled once for a dialect, to run on a DBAPI cursor."""

    sql: str
    #: The parameters in the order of the SQL, for a positional paramstyle.
    order: tuple[str, ...] | None
    #: The parameters the statement holds itself (literal values).
    fixed: dict[str, t.Any]
    #: Conversions of parameters the driver does not take as they are.
    conversions: dict[str, t.Callable[[t.Any], t.Any]]

    @classmethod
    def of(cls, statement: sa.ClauseElement, dialect: sa.Dialect) -> _Compiled:
        compiled = t.cast(sa.sql.compiler.SQLCompiler, statement.compile(dialect=dialect))
        conversions: dict[str, t.Callable[[t.Any], t.Any]] = {}
        for name, bind in compiled.binds.items():
            conversion = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if conversion is not None:
                conversions[name] = conversion
        fixed = {name: value for name, value in compiled.params.items() if value is not None}
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        return cls(compiled.string, order, fixed, conversions)

    def parameters(self, params: dict[str, t.Any]) -> t.Any:
        """Return ``params`` laid out for the driver."""
        values = self.fixed | params
        for name, conversion in self.conversions.items():
            if values.get(name) is not None:
                values[name] = conversion(values[name])
        return values if self.order is None else tuple(values[name] for name in self.order)


def _execute(statement: sa.Executable) -> t.Callable[[sa.Connection], object]:
    return lambda connection: connection.execute(statement)


def _socket_lost(error: BaseException, dialect: sa.Dialect) -> bool:
    """Tell whether ``error`` says the connection's socket is gone although the
    driver did not mark the connection broken, as psycopg 3 reports a reset
    that its poll loop sees before libpq does."""
    return isinstance(error, dialect.loaded_dbapi.OperationalError) and (
        str(error) == "connection socket closed"
    )


def _flag_lost_socket(context: sa.engine.ExceptionContext) -> None:
    """Have SQLAlchemy discard a connection whose socket :func:`_socket_lost`
    says is gone, as it does for the disconnects it recognises."""
    if _socket_lost(context.original_exception, context.dialect):
        context.is_disconnect = True


def _is_conflict(error: sa.exc.DBAPIError) -> bool:
    """Tell whether ``error`` is a deadlock or serialisation failure, which
    running the transaction again resolves."""
    # PostgreSQL's, as psycopg 3 and psycopg2 name them.
    state = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    if state in ("40001", "40P01"):
        return True
    # MySQL's deadlock error, and SQLite's lock still held after its busy timeout.
    args: tuple[object, ...] = getattr(error.orig, "args", ())
    return bool(args) and args[0] in (1213, "database is locked")


def _dumps(data: t.Mapping[str, str | None]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _user_in(raw: object) -> str | None:
    """Return the user a stored session's data binds it to, or ``None``."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
        value = data.get(USER_KEY) if isinstance(data, dict) else None
        return user_id_of(value) if isinstance(value, str) else None
    except (ValueError, RecursionError):
        return None


def _json_path(name: str) -> str:
    """Return the MySQL JSON path of the key ``name`` of an object.

    MariaDB refuses a quoted key that starts with ``-`` (error 4042), but
    reads escapes in it: a ``-`` goes as ``\\u002d``, which no other escape
    contains.
    """
    return "$." + json.dumps(name).replace("-", "\\u002d")


def _define_table(name: str) -> sa.Table:
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigurationError("must be 'table' or 'schema.table'", "table")
    schema, table = (None, parts[0]) if len(parts) == 1 else parts
    user_id = sa.Column("user_id", sa.String(255), nullable=True)
    bound = user_id.is_not(None)
    return sa.Table(
        table,
        sa.MetaData(),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("application", sa.String(128), primary_key=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column(
            "data", sa.Text().with_variant(mysql.MEDIUMTEXT(), "mysql", "mariadb"), nullable=False
        ),
        # The user a session is bound to (changes.USER_KEY), for "log out
        # everywhere"; kept by the statements that write the data.
        user_id,
        sa.Index(f"{table}_expires_at", "expires_at"),
        # Only the bound sessions, where the database can (not MySQL): smaller,
        # and no planner can take it for a scan of every session by
        # application, which PostgreSQL did without statistics on a new table.
        sa.Index(
            f"{table}_user_id",
            "user_id",
            "application",
            postgresql_where=bound,
            sqlite_where=bound,
        ),
        schema=schema,
    )


def _check_table_name(table: sa.Table, dialect: sa.Dialect, create_table: bool) -> None:
    # PostgreSQL would cut a longer name short; MySQL refuses it.
    limit = {"postgresql": 63, "mysql": 64, "mariadb": 64}.get(dialect.name)
    names = [table.name] + ([f"{table.name}_expires_at"] if create_table else [])
    if table.schema is not None:
        names.append(table.schema)
    if limit is not None and any(len(name.encode()) > limit for name in names):
        raise ConfigurationError(
            f"is too long for {dialect.name}, whose names have at most {limit} bytes"
            + (f" (the index {names[1]!r} counts too)" if create_table else ""),
            "table",
        )


def _check_dialect(backend: str, dialect: str | None, key: str) -> None:
    if backend not in ("postgresql", "mysql", "mariadb", "sqlite"):
        raise ConfigurationError(f"{backend!r} databases are not supported", key)
    if dialect is not None and backend != dialect and (dialect, backend) != ("mysql", "mariadb"):
        raise ConfigurationError(f"is {dialect!r} but the {key} is for {backend!r}", "dialect")


class _Schema(t.NamedTuple):
    #: Whether the table exists.
    exists: bool
    #: The names of its columns.
    columns: set[str]
    #: The names of its indexes.
    indexes: set[str | None]


class _Timeouts(t.NamedTuple):
    #: Seconds to wait for a new connection, or ``None`` to leave it to the driver.
    connect: float | None
    #: Seconds an operation may take, or ``None`` for no limit.
    statement: float | None


def _normalise_url(parsed: sa.URL) -> sa.URL:
    """Map the URLs hosting platforms hand out (``postgres://``) and URLs
    without a driver to the drivers the extras install."""
    backend, _, driver = parsed.drivername.partition("+")
    if backend == "postgres":
        backend = "postgresql"
    if backend == "postgresql" and not driver:
        driver = "psycopg"
    if backend in ("mysql", "mariadb") and not driver and not importlib.util.find_spec("MySQLdb"):
        driver = "pymysql"
    return parsed.set(drivername=f"{backend}+{driver}" if driver else backend)


def _create_engine(
    url: str | sa.URL | None,
    dialect: str | None,
    split: dict[str, t.Any],
    on_connect: t.Sequence[str],
    connection_check_threshold: float | None,
    timeouts: _Timeouts,
    synchronous_commit: bool,
) -> sa.Engine:
    connect_args: dict[str, t.Any] = {}
    if url is not None:
        key = "url"
        try:
            parsed = _normalise_url(sa.make_url(url))
        except sa.exc.ArgumentError as error:
            raise ConfigurationError("is not a valid database URL", "url") from error
        _check_dialect(parsed.get_backend_name(), dialect, "url")
    else:
        key = "dialect"
        if dialect is None:
            raise ConfigurationError("is required with database options", "dialect")
        if "database" not in split:
            raise ConfigurationError(f"is required with {', '.join(split)}", "database")
        if "charset" in split and dialect == "sqlite":
            raise ConfigurationError("is not supported by sqlite", "charset")
        if "charset" in split and dialect == "postgresql":
            connect_args["client_encoding"] = split.pop("charset")
        connect_args.update(split.get("dsn_extra", {}))
        parsed = sa.URL.create(
            _DRIVERNAMES[dialect],
            username=split.get("username"),
            password=split.get("password"),
            host=split.get("hostname"),
            port=split.get("port"),
            database=split["database"],
            query={"charset": split["charset"]} if "charset" in split else {},
        )
    backend = parsed.get_backend_name()
    statements: list[str] = []  # run before on_connect, which may override them
    path = None
    if backend == "sqlite":
        # pysqlite's busy timeout: how long a writer waits for another's lock.
        connect_args.setdefault("timeout", 15)
        if parsed.database and parsed.database != ":memory:" and "uri" not in parsed.query:
            path = os.path.abspath(parsed.database)
            # Readers do not block the writer, and a commit waits for no fsync
            # (a power cut may lose the last sessions written, never corrupt).
            statements += [
                "PRAGMA journal_mode = WAL",
                f"PRAGMA synchronous = {'FULL' if synchronous_commit else 'NORMAL'}",
            ]
    else:
        _set_timeouts(backend, timeouts, connect_args, statements, parsed.query)
        if backend == "postgresql":
            # psycopg prepares statements it sees often; a generic plan made
            # while the table was small (a sequential scan) would otherwise
            # stay cached as the table grows, at a millisecond per request.
            statements.append("SET plan_cache_mode = force_custom_plan")
        if backend == "postgresql" and not synchronous_commit:
            # A crash of the server may lose the last moments of session
            # writes, never corrupt them; each write then waits for no flush.
            statements.append("SET synchronous_commit = off")
    options: dict[str, t.Any] = {"hide_parameters": True}
    if backend != "sqlite":
        # Most operations are one statement: without a transaction around it
        # that is one round trip, instead of BEGIN, the statement and COMMIT
        # (and a ROLLBACK when the connection goes back to the pool).
        options.update(isolation_level="AUTOCOMMIT", pool_reset_on_return=None)
    if connection_check_threshold is not None:
        options["pool_recycle"] = connection_check_threshold
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except ImportError as error:
        extra = _EXTRAS.get(backend, "database")
        family = "mysql" if backend == "mariadb" else backend
        raise ConfigurationError(
            f"the {parsed.drivername!r} driver is not installed: use a"
            f" {_DRIVERNAMES.get(family, family)}:// URL"
            f" (pip install 'flask-prancer-session[{extra}]')",
            key,
        ) from error
    if path is not None:
        _watch_file(engine, path)
    if backend in ("mysql", "mariadb"):
        _skip_autocommit_commits(engine.dialect)
    statements += on_connect
    if statements:
        guard = timeouts.statement if backend == "postgresql" else None
        listener = functools.partial(_run_on_connect, tuple(statements), guard)
        sa.event.listen(engine, "connect", listener)
    return engine


def _skip_autocommit_commits(dialect: sa.Dialect) -> None:
    """Send no COMMIT or ROLLBACK on a PyMySQL connection in autocommit mode,
    where they do nothing but cost a round trip (psycopg skips them itself)."""
    commit, rollback = dialect.do_commit, dialect.do_rollback

    def do_commit(dbapi_connection: t.Any) -> None:
        if not dbapi_connection.get_autocommit():
            commit(dbapi_connection)

    def do_rollback(dbapi_connection: t.Any) -> None:
        if not dbapi_connection.get_autocommit():
            rollback(dbapi_connection)

    dialect.do_commit = do_commit  # type: ignore[method-assign]
    dialect.do_rollback = do_rollback  # type: ignore[method-assign]


def _set_timeouts(
    backend: str,
    timeouts: _Timeouts,
    connect_args: dict[str, t.Any],
    statements: list[str],
    query: t.Mapping[str, t.Any],
) -> None:
    """Bound how long a request waits for a connection, a statement and a lock,
    unless the URL or ``dsn_extra`` says otherwise."""

    def default(name: str, value: object) -> None:
        if name not in query:
            connect_args.setdefault(name, value)

    statement = timeouts.statement
    lock = None if statement is None else min(5.0, statement)
    if backend == "postgresql":
        if timeouts.connect is not None:
            default("connect_timeout", math.ceil(timeouts.connect))
        if statement is not None and lock is not None:
            # The server's own limits; the client's is the watchdog.
            statements += [
                f"SET statement_timeout = {math.ceil(statement * 1000)}",
                f"SET lock_timeout = {math.ceil(lock * 1000)}",
            ]
    elif backend in ("mysql", "mariadb"):
        # Whole seconds: mysqlclient takes nothing else.
        if timeouts.connect is not None:
            default("connect_timeout", math.ceil(timeouts.connect))
        if statement is not None and lock is not None:
            default("read_timeout", math.ceil(statement))
            default("write_timeout", math.ceil(statement))
            statements.append(f"SET SESSION innodb_lock_wait_timeout = {math.ceil(lock)}")


def _watch_file(engine: sa.Engine, path: str) -> None:
    """Create the SQLite file readable by its owner only, and replace pooled
    connections to a file that was since replaced (a restored backup)."""

    def create_private(*args: t.Any) -> None:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))

    def remember(dbapi_connection: t.Any, record: t.Any) -> None:
        with contextlib.suppress(OSError):
            stat = os.stat(path)
            record.info["prancer_file"] = stat.st_dev, stat.st_ino

    def check(dbapi_connection: t.Any, record: t.Any, proxy: t.Any) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return  # Let SQLite report it.
        if record.info.get("prancer_file") != (stat.st_dev, stat.st_ino):
            logger.warning("The SQLite file %s was replaced; reconnecting.", path)
            raise sa.exc.DisconnectionError("the database file was replaced")

    sa.event.listen(engine, "do_connect", create_private)
    sa.event.listen(engine, "connect", remember)
    sa.event.listen(engine, "checkout", check)


class _Watchdog:
    """Shut the socket of a PostgreSQL connection whose operation outlives its
    deadline: psycopg has no read timeout, so a server gone silent (a paused
    host, a dropped link) would hold the request for good. One thread per
    process, waking about once per deadline."""

    def __init__(self) -> None:
        self._reset()
        # A fork may copy the lock while the thread holds it; the child's
        # first guard starts a thread of its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._due: dict[object, tuple[float, int]] = {}
        self._wake_at = math.inf
        self._pid = 0

    @contextlib.contextmanager
    def guard(self, dbapi_connection: t.Any, seconds: float) -> t.Iterator[None]:
        token = object()
        deadline = time.monotonic() + seconds
        with self._condition:
            if self._pid != os.getpid():  # none yet
                self._pid = os.getpid()
                threading.Thread(target=self._watch, name="prancer-watchdog", daemon=True).start()
            self._due[token] = deadline, dbapi_connection.fileno()
            if deadline < self._wake_at:
                self._condition.notify()
        try:
            yield
        finally:
            with self._condition:
                self._due.pop(token, None)

    def _watch(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for token, (deadline, fd) in list(self._due.items()):
                    if deadline <= now:
                        del self._due[token]
                        _shut(fd)
                self._wake_at = min((d for d, _ in self._due.values()), default=math.inf)
                self._condition.wait(None if self._wake_at == math.inf else self._wake_at - now)


def _shut(fd: int) -> None:
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # The driver owns the descriptor.


_WATCHDOG = _Watchdog()


def _run_on_connect(
    statements: tuple[str, ...], deadline: float | None, dbapi_connection: t.Any, record: t.Any
) -> None:
    guard = (
        contextlib.nullcontext()
        if deadline is None
        else _WATCHDOG.guard(dbapi_connection, deadline)
    )
    cursor = dbapi_connection.cursor()
    try:
        with guard:
            for statement in statements:
                cursor.execute(statement)
    finally:
        cursor.close()
    # Else the pool's rollback on return would undo a transactional SET (PostgreSQL).
    dbapi_connection.commit()


def _begin_immediate(connection: sa.Connection) -> None:
    if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")
