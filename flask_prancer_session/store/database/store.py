"""The database store's operations: each one or a few statements of
:mod:`.statements`, run by :mod:`.execution` in a short transaction. The
manual's database pages say what it guarantees and which statements it
sends."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
import typing as t

import sqlalchemy as sa

from ...changes import ChangeSet
from ...changes import Record
from ...changes import user_id_of
from ...changes import USER_KEY
from ...errors import ConfigurationError
from ...errors import SessionStoreError
from ..base import DEFAULT_EXPIRATION_TIMEOUT
from ..base import positive_seconds
from ..base import Seconds
from ..base import StoreDriver
from .engine import check_dialect
from .engine import check_split_options
from .engine import create_engine
from .engine import Dialect
from .engine import DRIVERNAMES
from .engine import split_options
from .execution import Runner
from .profiles import dumps
from .profiles import Pooler
from .profiles import Timeouts
from .schema import check_table_name
from .schema import define_table
from .schema import TableKeeper
from .statements import Statements

logger = logging.getLogger(__package__ or __name__)


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
    :param pooler: the pooling mode, ``"transaction"`` or ``"session"``, of a
        pooler such as PgBouncer between the store and PostgreSQL.
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
        pooler: Pooler | None = None,
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
        split = split_options((database, username, password, hostname, port, charset, dsn_extra))
        sources = [name for name, value in (("url", url), ("engine", engine)) if value is not None]
        sources += list(split)[:1]
        if not sources:
            raise ConfigurationError("give one of url, engine or dialect with database", "url")
        if len(sources) > 1:
            raise ConfigurationError(f"cannot be combined with {sources[0]}", sources[1])
        check_split_options(split)
        if dialect is not None and dialect not in DRIVERNAMES:
            raise ConfigurationError(f"must be one of {', '.join(DRIVERNAMES)}", "dialect")
        if not isinstance(on_connect, (list, tuple)) or not all(
            isinstance(s, str) for s in on_connect
        ):
            raise ConfigurationError("must be a list of SQL statements", "on_connect")
        if connection_check_threshold is not None:
            connection_check_threshold = positive_seconds(
                connection_check_threshold, "connection_check_threshold"
            )
        timeouts = Timeouts(
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
        if pooler not in (None, "session", "transaction"):
            raise ConfigurationError("must be 'session', 'transaction' or none", "pooler")
        if pooler == "transaction" and on_connect:
            # A SET would reach the other clients of the pooled connection.
            raise ConfigurationError(
                "cannot be used through a transaction pooler: set the role's defaults"
                " (ALTER ROLE ... SET) instead",
                "on_connect",
            )
        #: The name that keeps the sessions of apps sharing the table apart.
        self.application = application
        #: The session table.
        self.table = define_table(table)

        if engine is not None:
            given = {
                "on_connect": on_connect,
                "connection_check_threshold": connection_check_threshold,
            }
            for name, value in (given | {"pooler": pooler}).items():
                if value:
                    raise ConfigurationError("does not apply to a given engine; configure it", name)
            # Its owner configures it: none of the store's timeouts apply.
            profile = check_dialect(engine.dialect.name, dialect, "engine")(Timeouts(None, None))
            #: The engine the store runs its statements on.
            self.engine = engine
        else:
            self.engine, profile = create_engine(
                url,
                dialect,
                split,
                on_connect,
                connection_check_threshold,
                timeouts,
                synchronous_commit,
                pooler,
            )
        profile.watch(self.engine)
        check_table_name(self.table, profile, self.engine.dialect, create_table)
        self._profile = profile
        self._own_engine = engine is None
        self._runner = Runner(self.engine, profile, self._own_engine, self.table.fullname)
        self._engines = self._runner.engines
        self._sql = Statements(self.table, application, profile)
        self._keeper = TableKeeper(self.table, self._runner, self._sql.purge_batch)
        self._create_table = create_table
        #: Whether the table was created or checked, which the first use does
        #: if the database was down when the store started.
        self._ready = False
        self._failure: tuple[float, SessionStoreError] | None = None
        self._ready_lock = threading.Lock()
        try:
            failure = self._runner.unreachable("inspect the session table")
            if failure is None:
                self._prepare_table()
            else:
                # Containers often start before their database: the app
                # starts, and its requests fail until the database is up.
                logger.warning(
                    "The session table will be checked at its first use, as the database"
                    " cannot be reached: %s",
                    failure,
                )
        finally:
            if self._own_engine:
                # No pooled connection may outlive a store that failed to start.
                self.engine.dispose()

    def close(self) -> None:
        """Wait for a purge running in the background, and close the pooled
        connections of an engine the store made (one it was given belongs to
        the caller). The store opens new ones at its next use."""
        super().close()
        if self._own_engine:
            self.engine.dispose()

    def _after_fork(self) -> None:
        """Also give the child a pool of its own, if the engine is ours: a
        connection shared by two processes hands one the other's replies.
        The parent keeps its connections."""
        super()._after_fork()
        self._ready_lock = threading.Lock()
        if getattr(self, "_own_engine", False):  # not set by a store that failed to start
            self.engine.dispose(close=False)

    def _prepare_table(self) -> None:
        """Create the table, or add what one of an earlier version lacks, or
        check it, as ``create_table`` says."""
        if self._create_table:
            self._keeper.create()
        else:
            self._keeper.check()
        self._ready = True

    def _prepare_at_first_use(self) -> None:
        """Prepare the table of a store that started while its database was
        down, once; fail as :exc:`.SessionStoreError` until that works.

        A request that waited for another's attempt gets its failure, rather
        than waiting for an attempt of its own: a database gone silent would
        otherwise hold each request queued here for its own timeout.
        """
        asked = time.monotonic()
        with self._ready_lock:
            if self._ready:
                return
            if self._failure is None or self._failure[0] < asked:
                try:
                    self._prepare_table()
                except ConfigurationError as error:
                    # A table of an earlier version, and create_table false.
                    message = f"the session table cannot be used: {error}"
                    self._failure = time.monotonic(), SessionStoreError(message, error)
                except SessionStoreError as error:
                    self._failure = time.monotonic(), error
                else:
                    logger.info("The session table %s is ready.", self.table.fullname)
                    return
            failure = self._failure[1]
        raised = SessionStoreError(str(failure), failure.original_error)
        raised.__cause__ = failure.original_error
        raise raised

    def fetch(self, key: str) -> Record | None:
        if not self._ready:
            self._prepare_at_first_use()
        params = {"key": key, "now": self.clock()}
        row = self._runner.run_statement(
            "read a session", self._sql.fetch, params, "first", self.engine
        )
        if row is None:
            return None
        created_at, expires_at, raw = row
        data = self._decode(key, raw)
        return None if data is None else Record(data, created_at, expires_at)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        if not self._ready:
            self._prepare_at_first_use()
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
        removals = self._profile.changes(changes, params)
        update, upsert = self._sql.merges(removals, changes.binds_user)
        run, engines = self._runner.run_statement, self._engines
        if changes.updated and changes.created_at is not None:
            params["created_at"] = changes.created_at
            params["fresh_expiry"] = self.expiry_for(changes.created_at, now, timeout)
            params["fresh"] = dumps(changes.updated)
            run("write a session", upsert, params, "rowcount", engines.single_writer)
            return True

        if changes.updated or not changes.removed:
            count = run("write a session", update, params, "rowcount", engines.single_writer)
            return bool(count > 0)

        # Only removals can leave the session empty; gone, then. The DELETE
        # checks the row is still empty, so it needs no transaction with the
        # UPDATE: a key another request adds in between keeps the session.
        if not self._profile.autocommit:

            def merge(connection: sa.Connection) -> bool:
                if connection.execute(update, params).rowcount == 0:
                    return False
                return connection.execute(self._sql.delete_empty, params).rowcount == 0

            return self._runner.run("write a session", merge, engines.writer)
        if run("write a session", update, params, "rowcount", engines.single) == 0:
            return False
        deleted = run("write a session", self._sql.delete_empty, params, "rowcount", engines.single)
        return bool(deleted == 0)

    def _apply_expected(self, key: str, changes: ChangeSet, now: float, timeout: float) -> bool:
        """Apply ``changes`` that hold :attr:`~.ChangeSet.expected` values: in
        one transaction that locks the row, merged in Python by
        :meth:`.ChangeSet.merged_into`. Only ``flask session rekey`` asks for
        it, so the requests' single statements stay as they are."""
        params = {"key": key, "now": now}

        def merge(connection: sa.Connection) -> bool | None:
            row = connection.execute(self._sql.fetch_for_update, params).first()
            data = None if row is None else self._decode(key, row.data)
            if row is None or data is None:
                return None
            merged = changes.merged_into(data)
            if not merged:
                connection.execute(self._sql.delete, params)
                return False
            user = merged.get(USER_KEY)
            values = {
                "merged": dumps(merged),
                # Derived from the data written, so the index agrees with it.
                "user": None if user is None else user_id_of(user),
                "new_expiry": self.expiry_for(row.created_at, now, timeout),
            }
            connection.execute(self._sql.rewrite, params | values)
            return True

        stored = self._runner.run("write a session", merge, self._engines.writer)
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
        if not self._ready:
            self._prepare_at_first_use()
        params = {"key": key, "now": self.clock(), "new_expiry": expires_at}
        engine = self._engines.single_writer
        self._runner.run_statement("touch a session", self._sql.touch, params, "rowcount", engine)

    def remove(self, key: str) -> bool:
        if not self._ready:
            self._prepare_at_first_use()
        params = {"key": key, "now": self.clock()}
        action = "remove a session"
        if not self._profile.autocommit:

            def remove(connection: sa.Connection) -> bool:
                live = connection.execute(self._sql.delete_live, params).rowcount > 0
                connection.execute(self._sql.delete, params)
                return live

            return self._runner.run(action, remove, self._engines.writer)
        # Each DELETE is atomic on its own: the first tells whether a live
        # session went, the second takes an expired row left behind.
        run, single = self._runner.run_statement, self._engines.single
        live = run(action, self._sql.delete_live, params, "rowcount", single)
        run(action, self._sql.delete, params, "rowcount", single)
        return bool(live > 0)

    def purge(self) -> int:
        """Delete expired sessions in batches of :data:`.PURGE_BATCH`, each in
        a short transaction that leaves alone rows a request holds, so that a
        purge does not deadlock with requests and holds little memory."""
        if not self._ready:
            self._prepare_at_first_use()
        deleted = 0
        now = self.clock()

        def purge_batch(connection: sa.Connection) -> tuple[int, bool]:
            return self._profile.purge_batch(connection, self._sql, now)

        more = True
        while more:
            count, more = self._runner.run(
                "purge expired sessions", purge_batch, self._engines.purger
            )
            deleted += count
        return deleted

    indexes_users = True

    def scan(self) -> t.Iterator[tuple[str, Record]]:
        """Yield this application's live sessions in batches of
        :data:`.SCAN_BATCH` by key, each batch a short read of its own, so
        that a scan of many sessions holds neither a transaction nor much
        memory."""
        if not self._ready:
            self._prepare_at_first_use()
        batch = self._sql.scan_batch

        def read(after: str) -> t.Sequence[t.Any]:
            params = {"after": after, "now": self.clock(), "limit": batch}
            return self._read("list sessions", self._sql.scan, params)

        after = ""
        while True:
            rows = read(after)
            for row in rows:
                data = self._decode(row.id, row.data)
                if data is not None:
                    yield row.id, Record(data, row.created_at, row.expires_at)
            if len(rows) < batch:
                return
            after = rows[-1].id

    def clear(self) -> int:
        """Delete this application's sessions in batches by key, each in a
        short transaction, and return how many live ones were deleted."""
        if not self._ready:
            self._prepare_at_first_use()
        deleted = 0
        now = self.clock()
        after = ""

        def clear_batch(connection: sa.Connection) -> tuple[int, list[str]]:
            ids = connection.execute(self._sql.batch, {"after": after}).scalars().all()
            if not ids:
                return 0, []
            params = {"ids": ids, "now": now}
            count = connection.execute(self._sql.delete_live_ids, params).rowcount
            connection.execute(self._sql.delete_ids, params)
            return count, list(ids)

        while True:
            count, ids = self._runner.run("clear the sessions", clear_batch, self._engines.bulk)
            deleted += count
            if len(ids) < self._sql.purge_batch:
                return deleted
            after = ids[-1]

    def sessions_of(self, user_id: str) -> dict[str, Record]:
        if not self._ready:
            self._prepare_at_first_use()
        params = {"user": user_id, "now": self.clock()}
        rows = self._read("read the sessions of a user", self._sql.of_user, params)
        records = {}
        for row in rows:
            data = self._decode(row.id, row.data)
            if data is not None:
                records[row.id] = Record(data, row.created_at, row.expires_at)
        return records

    def remove_user(self, user_id: str) -> int:
        if not self._ready:
            self._prepare_at_first_use()
        params = {"user": user_id, "now": self.clock()}

        def remove(connection: sa.Connection) -> int:
            live = connection.execute(self._sql.delete_user_live, params).rowcount
            connection.execute(self._sql.delete_user, params)
            return live

        return self._runner.run("remove the sessions of a user", remove, self._engines.bulk)

    def _read(
        self, action: str, query: sa.Select[t.Any], params: dict[str, t.Any]
    ) -> t.Sequence[sa.Row[t.Any]]:
        """Return the rows of ``query``, read in a transaction of its own."""
        return self._runner.run(
            action, lambda c: c.execute(query, params).all(), self._engines.reader
        )

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
