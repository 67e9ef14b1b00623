"""How the database store runs its statements: in short transactions, or
straight on a DBAPI cursor for the hot path, retried where that helps, and
failing as :exc:`.SessionStoreError` with nothing of the session data."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
import typing as t

import sqlalchemy as sa

from ...errors import SessionStoreError
from .profiles import Engines
from .profiles import Profile

logger = logging.getLogger(__package__ or __name__)

_T = t.TypeVar("_T")

#: How many times an operation is retried after a deadlock.
CONFLICT_RETRIES = 3

#: The key of a pooled connection's hot-path cursor in its ``info``.
_CURSOR = "prancer_cursor"

#: A statement the hot path runs.
Statement: t.TypeAlias = "sa.Select[t.Any] | sa.Update | sa.Insert | sa.Delete"


class DriverError(Exception):
    """What the database driver raised, reduced to its class and the first line
    of its message: SQLAlchemy's error quotes the statement's parameters, and
    drivers' detail lines (PostgreSQL's "Failing row contains ...") may quote
    values, which would put session data in logs.
    """

    def __init__(self, error: BaseException | None) -> None:
        lines = str(error).strip().splitlines()
        super().__init__(f"{type(error).__name__}: {lines[0] if lines else ''}")
        args = getattr(error, "args", ())
        #: MySQL's error number (from either driver), or PostgreSQL's SQLSTATE
        #: (psycopg's ``sqlstate``, psycopg2's ``pgcode``), if any.
        self.code: str | int | None
        if args and isinstance(args[0], int):
            self.code = args[0]
        else:
            self.code = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)


class Runner:
    """Run a store's operations on ``engine``.

    :param engine: the store's engine.
    :param profile: what differs on its database.
    :param own: whether the store made the engine, so that its options are
        known and the hot path may bypass SQLAlchemy's execution layer.
    :param table: the table's name, for error messages.
    """

    def __init__(self, engine: sa.Engine, profile: Profile, own: bool, table: str) -> None:
        self.engine = engine
        self.profile = profile
        #: The engine under the options of each kind of work.
        self.engines: Engines = profile.engines(engine, own)
        self._table = table
        #: Hot-path statements run on DBAPI cursors (see :meth:`run_statement`).
        self._direct = own
        self._compiled: dict[sa.ClauseElement, _Compiled] = {}
        # Retries happen only this soon after an operation started, so that a
        # database gone silent fails the request in about the statement timeout.
        self._retry_window = profile.timeouts.statement or math.inf

    def run(
        self,
        action: str,
        operation: t.Callable[[sa.Connection], _T],
        engine: sa.Engine,
    ) -> _T:
        """Run ``operation`` in a transaction on ``engine`` and return its
        result, retried as :meth:`retrying` says."""
        settings = self.profile.transaction_settings

        def attempt() -> _T:
            with self._connect(engine) as connection:
                dbapi_connection = connection.connection.dbapi_connection
                with self.profile.deadline(dbapi_connection), connection.begin():
                    if settings is not None:
                        connection.exec_driver_sql(settings)
                    return operation(connection)

        return self.retrying(action, attempt)

    def _connect(self, engine: sa.Engine) -> sa.Connection:
        """Check out a connection of ``engine``, as ``engine.connect()`` does.

        Setting up a pooled connection for ``engine`` (its isolation level)
        talks to the server on some drivers (PyMySQL, mysqlclient, psycopg2),
        where SQLAlchemy lets the driver's error through and returns a dead
        connection to the pool; here it is discarded and the error is one
        :meth:`retrying` knows.
        """
        pooled = None
        try:
            pooled = engine.raw_connection()
            with self.profile.deadline(pooled.dbapi_connection):
                return sa.Connection(engine, pooled)
        except engine.dialect.loaded_dbapi.Error as error:
            # A connection whose settings failed halfway is not reused either.
            raise self._driver_failure(error, pooled, None, invalidate=True) from None

    def unreachable(self, action: str) -> SessionStoreError | None:
        """Return the error of ``action`` if no connection to the database can
        be made, or ``None`` (and the new connection is pooled)."""
        try:
            self.engine.raw_connection().close()
        except self.engine.dialect.loaded_dbapi.Error as error:
            return self.error(action, self._driver_failure(error, None, None))
        except sa.exc.DBAPIError as error:
            return self.error(action, error)
        return None

    def run_statement(
        self,
        action: str,
        statement: Statement,
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
                return self.run(action, lambda c: c.execute(statement, params).first(), engine)
            return self.run(action, lambda c: c.execute(statement, params).rowcount, engine)
        compiled = self._compiled.get(statement)
        if compiled is None:
            dialect = self.profile.direct_dialect(self.engine.dialect)
            compiled = _Compiled.of(statement, dialect, self.profile.transaction_settings)
            self._compiled[statement] = compiled
        return self.retrying(action, lambda: self._execute_direct(compiled, params, result))

    def _execute_direct(
        self, compiled: _Compiled, params: dict[str, t.Any], result: t.Literal["first", "rowcount"]
    ) -> t.Any:
        dialect = self.engine.dialect
        connection = cursor = None
        try:
            connection = self.engine.raw_connection()
            cursor = self._cursor(connection)
            with self.profile.deadline(connection.dbapi_connection):
                cursor.execute(compiled.sql, compiled.parameters(params))
                if compiled.after_settings:
                    self.profile.skip_settings(cursor)
                return cursor.fetchone() if result == "first" else cursor.rowcount
        except dialect.loaded_dbapi.Error as error:
            failure = self._driver_failure(error, connection, cursor)
            kept = None if connection is None else connection.info.pop(_CURSOR, None)
            if kept is not None:
                # A cursor whose statement failed is not reused.
                with contextlib.suppress(Exception):
                    kept[1].close()
            raise failure from None
        finally:
            if connection is not None:
                connection.close()

    def _cursor(self, connection: sa.PoolProxiedConnection) -> t.Any:
        """Return the hot path's cursor of the pooled ``connection``, made at
        its first use: a new one per statement costs more than decoding the
        row. The pool forgets it with the DBAPI connection it belongs to."""
        info = connection.info
        kept = info.get(_CURSOR)
        if kept is not None and kept[0] is connection.dbapi_connection:
            return kept[1]
        cursor = self.profile.cursor(connection)
        info[_CURSOR] = connection.dbapi_connection, cursor
        return cursor

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
        lost = self.profile.lost(error, dialect, dbapi_connection, cursor)
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

    def retrying(self, action: str, attempt: t.Callable[[], _T]) -> _T:
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
                    if conflicts < CONFLICT_RETRIES and self.profile.is_conflict(error):
                        conflicts += 1
                        logger.info("Retrying to %s after %s.", action, type(error.orig).__name__)
                        time.sleep(random.uniform(0.001, 0.02) * conflicts)
                        continue
                failure = error
            # Raised outside the except clause, so that SQLAlchemy's error,
            # whose text may quote the parameters, is not even its context.
            raise self.error(action, failure)

    def error(self, action: str, error: sa.exc.SQLAlchemyError) -> SessionStoreError:
        """Return the :exc:`.SessionStoreError` of ``error``, raised by ``action``."""
        cause = DriverError(error.orig if isinstance(error, sa.exc.StatementError) else error)
        failure = SessionStoreError(f"could not {action} in table {self._table!r}: {cause}", cause)
        failure.__cause__ = cause
        return failure


class _Compiled(t.NamedTuple):
    """A statement compiled once for a dialect, to run on a DBAPI cursor."""

    #: The statement's SQL, after the settings of its transaction if any.
    sql: str
    #: The names of its parameters.
    names: tuple[str, ...]
    #: Their order in the SQL (a name may be there more than once), for a
    #: positional paramstyle.
    order: tuple[str, ...] | None
    #: The parameters the statement holds itself (literal values).
    fixed: dict[str, t.Any]
    #: Conversions of parameters the driver does not take as they are.
    conversions: dict[str, t.Callable[[t.Any], t.Any]]
    #: Whether the SQL starts with the settings of its transaction.
    after_settings: bool

    @classmethod
    def of(
        cls, statement: sa.ClauseElement, dialect: sa.Dialect, settings: str | None = None
    ) -> _Compiled:
        compiled = t.cast(sa.sql.compiler.SQLCompiler, statement.compile(dialect=dialect))
        sql = compiled.string
        names: list[str] = []
        for name in compiled.params:
            bind = compiled.binds[name]
            if bind.literal_execute:
                # Rendered as SQLAlchemy renders it when it runs the statement.
                literal = compiled.render_literal_value(bind.value, bind.type)
                sql = sql.replace(f"__[POSTCOMPILE_{name}]", literal)
            else:
                names.append(name)
        order = None
        if compiled.positional:
            order = tuple(n for n in compiled.positiontup or () if n in names)
        conversions: dict[str, t.Callable[[t.Any], t.Any]] = {}
        for name in names:
            conversion = compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect)
            if conversion is not None:
                conversions[name] = conversion
        fixed = {name: compiled.params[name] for name in names if compiled.params[name] is not None}
        # In one string, the statements run in one transaction (PostgreSQL's
        # simple query protocol), in one round trip.
        sql = sql if settings is None else f"{settings}; {sql}"
        return cls(sql, tuple(names), order, fixed, conversions, settings is not None)

    def parameters(self, params: dict[str, t.Any]) -> t.Any:
        """Return those of ``params`` the statement takes, laid out for the
        driver: a driver that binds them in the client (PyMySQL) quotes
        every value it is given."""
        fixed = self.fixed
        values = {name: fixed[name] if name in fixed else params[name] for name in self.names}
        for name, conversion in self.conversions.items():
            if values[name] is not None:
                values[name] = conversion(values[name])
        return values if self.order is None else tuple(values[name] for name in self.order)
