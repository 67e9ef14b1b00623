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
for production. Give a ``url``, an ``engine`` (Flask-SQLAlchemy's
``db.engine``), or Prancer's split options and a ``dialect``. With a URL or
split options the store has its own pool, apart from the app's transactions,
and pings each connection before use, so a database restart costs at most the
requests in flight. Each write is one transaction that locks the row (``SELECT
... FOR UPDATE``; ``BEGIN IMMEDIATE`` on SQLite) and merges the request's
changes into it, so concurrent requests changing different keys keep them all.

Options: ``url``; ``engine``; or ``dialect`` (``postgresql``, ``mysql``,
``sqlite``) with ``database`` (the file for SQLite), ``username``,
``password``, ``hostname``, ``port``, ``charset``, ``dsn_extra`` (DBAPI
connect arguments). ``table`` (``"sessions"``; may be ``"schema.table"``),
``application`` (``""``; apps sharing a table keep apart by it),
``create_table`` (true), ``on_connect`` (SQL run on each new connection),
``connection_check_threshold`` (replace pooled connections older than this
many seconds; none), and the common ``expiration_timeout`` (1800),
``absolute_timeout``, ``autopurge`` (true, as in Prancer) and
``autopurge_probability`` (0.1).

The table, for DBAs who create it themselves (``create_table: false``)::

    CREATE TABLE sessions (
        id          VARCHAR(64)  NOT NULL,  -- SHA-256 of the session id, hex
        application VARCHAR(128) NOT NULL,
        created_at  DOUBLE PRECISION NOT NULL,  -- epoch seconds
        expires_at  DOUBLE PRECISION NOT NULL,
        data        TEXT NOT NULL,          -- MEDIUMTEXT on MySQL; a JSON object
        PRIMARY KEY (id, application)
    );
    CREATE INDEX sessions_expires_at ON sessions (expires_at);

Caveats: times come from the app servers' clocks, not the database's. Only
PostgreSQL (extra ``postgres``), MySQL/MariaDB (``mysql``) and SQLite
(``database``) are supported. A given ``engine`` is configured by its owner:
``on_connect`` and the pool options do not apply to it.
"""

from __future__ import annotations

import functools
import json
import logging
import typing as t
from collections.abc import Mapping
from contextlib import contextmanager

import sqlalchemy as sa
from sqlalchemy.dialects import mysql
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite

from ..changes import ChangeSet
from ..changes import Record
from ..errors import ConfigurationError
from ..errors import SessionStoreError
from .base import DEFAULT_EXPIRATION_TIMEOUT
from .base import positive_seconds
from .base import Seconds
from .base import StoreDriver

logger = logging.getLogger(__name__)

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
    :param create_table: create the table and its index if missing.
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
        if not isinstance(application, str) or len(application) > 128:
            raise ConfigurationError("must be a string of at most 128 characters", "application")
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
                url, dialect, split, on_connect, connection_check_threshold
            )
        self._writer = self.engine
        if self.engine.dialect.name == "sqlite":
            # A deferred SQLite transaction that reads then writes can fail at
            # once with "database is locked" when two of them meet; taking the
            # write lock up front makes them queue under the busy timeout.
            self._writer = self.engine.execution_options()
            sa.event.listen(self._writer, "begin", _begin_immediate)
        if create_table:
            with self._failures("create the session table"):
                self.table.metadata.create_all(self.engine, checkfirst=True)
            if engine is None:
                # No pooled connection may outlive a fork (gunicorn --preload).
                self.engine.dispose()

    def fetch(self, key: str) -> Record | None:
        with self._failures("read a session"), self.engine.connect() as connection:
            row = connection.execute(
                self._select(key).where(self.table.c.expires_at > self.clock())
            ).first()
        if row is None:
            return None
        data = self._decode(key, row.data)
        return None if data is None else Record(data, row.created_at, row.expires_at)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        with self._failures("write a session"), self._writer.begin() as connection:
            now = self.clock()
            if changes.created_at is not None:
                # Make sure a row exists to lock, so two requests creating the
                # same session queue on it instead of overwriting each other.
                values = self._where(key) | {
                    "created_at": changes.created_at,
                    "expires_at": self.expiry_for(changes.created_at, now, changes.timeout),
                    "data": "{}",
                }
                connection.execute(_insert_if_missing(connection.dialect.name, self.table, values))
            row = connection.execute(self._select(key).with_for_update()).first()
            data = None
            if row is not None and row.expires_at > now:
                data = self._decode(key, row.data)
                created_at = row.created_at
            if data is None:
                if changes.created_at is None:
                    return False
                data, created_at = {}, changes.created_at
            for removed in changes.removed:
                data.pop(removed, None)
            data.update(changes.updated)
            if not data:
                connection.execute(sa.delete(self.table).filter_by(**self._where(key)))
                return False
            connection.execute(
                sa.update(self.table)
                .filter_by(**self._where(key))
                .values(
                    created_at=created_at,
                    expires_at=self.expiry_for(created_at, now, changes.timeout),
                    data=json.dumps(data, separators=(",", ":")),
                )
            )
        return True

    def touch(self, key: str, expires_at: float) -> None:
        with self._failures("touch a session"), self._writer.begin() as connection:
            connection.execute(
                sa.update(self.table)
                .filter_by(**self._where(key))
                .where(self.table.c.expires_at > self.clock())
                .values(expires_at=expires_at)
            )

    def remove(self, key: str) -> bool:
        with self._failures("remove a session"), self._writer.begin() as connection:
            live = connection.execute(
                sa.delete(self.table)
                .filter_by(**self._where(key))
                .where(self.table.c.expires_at > self.clock())
            ).rowcount
            connection.execute(sa.delete(self.table).filter_by(**self._where(key)))
        return live > 0

    def purge(self) -> int:
        with self._failures("purge expired sessions"), self._writer.begin() as connection:
            result = connection.execute(
                sa.delete(self.table).where(
                    self.table.c.expires_at <= self.clock(),
                    self.table.c.application == self.application,
                )
            )
        return result.rowcount

    def _where(self, key: str) -> dict[str, str]:
        return {"id": key, "application": self.application}

    def _select(self, key: str) -> sa.Select[t.Any]:
        columns = self.table.c["created_at", "expires_at", "data"]
        return sa.select(*columns).filter_by(**self._where(key))

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

    @contextmanager
    def _failures(self, action: str) -> t.Iterator[None]:
        try:
            yield
        except sa.exc.SQLAlchemyError as error:
            # The DBAPI's own message: SQLAlchemy's would quote the statement's
            # parameters, which hold session data.
            cause = error.orig if isinstance(error, sa.exc.DBAPIError) else error
            raise SessionStoreError(
                f"could not {action} in table {self.table.fullname!r}:"
                f" {type(cause).__name__}: {cause}",
                error,
            ) from error


def _define_table(name: str) -> sa.Table:
    parts = name.split(".") if isinstance(name, str) else []
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise ConfigurationError("must be 'table' or 'schema.table'", "table")
    schema, table = (None, parts[0]) if len(parts) == 1 else parts
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
        sa.Index(f"{table}_expires_at", "expires_at"),
        schema=schema,
    )


def _check_dialect(backend: str, dialect: str | None, key: str) -> None:
    if backend not in ("postgresql", "mysql", "mariadb", "sqlite"):
        raise ConfigurationError(f"{backend!r} databases are not supported", key)
    if dialect is not None and backend != dialect and (dialect, backend) != ("mysql", "mariadb"):
        raise ConfigurationError(f"is {dialect!r} but the {key} is for {backend!r}", "dialect")


def _create_engine(
    url: str | sa.URL | None,
    dialect: str | None,
    split: dict[str, t.Any],
    on_connect: t.Sequence[str],
    connection_check_threshold: float | None,
) -> sa.Engine:
    connect_args: dict[str, t.Any] = {}
    if url is not None:
        key = "url"
        try:
            parsed = sa.make_url(url)
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
    if backend == "sqlite":
        # pysqlite's busy timeout: how long a writer waits for another's lock.
        connect_args.setdefault("timeout", 15)
    options: dict[str, t.Any] = {"pool_pre_ping": True, "hide_parameters": True}
    if connection_check_threshold is not None:
        options["pool_recycle"] = connection_check_threshold
    try:
        engine = sa.create_engine(parsed, connect_args=connect_args, **options)
    except ImportError as error:
        extra = _EXTRAS.get(backend, "database")
        raise ConfigurationError(
            f"the {parsed.drivername!r} driver is not installed"
            f" (pip install 'flask-prancer-session[{extra}]')",
            key,
        ) from error
    if on_connect:
        sa.event.listen(engine, "connect", functools.partial(_run_on_connect, tuple(on_connect)))
    return engine


def _run_on_connect(statements: tuple[str, ...], dbapi_connection: t.Any, record: t.Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for statement in statements:
            cursor.execute(statement)
    finally:
        cursor.close()
    # Else the pool's rollback on return would undo a transactional SET (PostgreSQL).
    dbapi_connection.commit()


def _begin_immediate(connection: sa.Connection) -> None:
    if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _insert_if_missing(backend: str, table: sa.Table, values: dict[str, t.Any]) -> sa.Executable:
    if backend == "postgresql":
        return postgresql.insert(table).values(values).on_conflict_do_nothing()
    if backend == "sqlite":
        return sqlite.insert(table).values(values).on_conflict_do_nothing()
    return mysql.insert(table).values(values).on_duplicate_key_update(id=table.c.id)
