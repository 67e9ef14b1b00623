"""The database store's table: its definition, its creation, and the upgrade
of a table an earlier version made."""

from __future__ import annotations

import json
import math
import typing as t

import sqlalchemy as sa
from sqlalchemy.dialects import mysql

from ...changes import user_id_of
from ...changes import USER_KEY
from ...errors import ConfigurationError
from ...errors import SessionStoreError
from .execution import Runner
from .profiles import Profile


def define_table(name: str) -> sa.Table:
    """Return the session table named ``name`` (``table`` or ``schema.table``)."""
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


def check_table_name(
    table: sa.Table, profile: Profile, dialect: sa.Dialect, create_table: bool
) -> None:
    """Refuse a name longer than the database's limit."""
    limit = profile.name_limit
    names = [table.name] + ([f"{table.name}_expires_at"] if create_table else [])
    if table.schema is not None:
        names.append(table.schema)
    if limit is not None and any(len(name.encode()) > limit for name in names):
        raise ConfigurationError(
            f"is too long for {dialect.name}, whose names have at most {limit} bytes"
            + (f" (the index {names[1]!r} counts too)" if create_table else ""),
            "table",
        )


class Schema(t.NamedTuple):
    #: Whether the table exists.
    exists: bool
    #: The names of its columns.
    columns: set[str]
    #: The names of its indexes.
    indexes: set[str | None]


class TableKeeper:
    """Create the table of a store, or bring one of an earlier version up to
    date, through the store's :class:`~.execution.Runner`.

    :param batch: how many rows one transaction of the upgrade takes.
    """

    def __init__(self, table: sa.Table, runner: Runner, batch: int) -> None:
        self.table = table
        self.runner = runner
        self.batch = batch

    def create(self) -> None:
        """Create the table, or add what a table of an earlier version lacks."""
        engine = self.runner.engines.reader

        def create(connection: sa.Connection) -> None:
            self.table.metadata.create_all(connection, checkfirst=True)

        index = f"{self.table.name}_user_id"
        add_column, create_index = self.upgrade

        def run(
            action: str, operation: t.Callable[[sa.Connection], object]
        ) -> t.Callable[[], object]:
            return lambda: self.runner.run(action, operation, engine)

        def indexed(schema: Schema) -> bool:
            return index in schema.indexes

        steps: list[tuple[t.Callable[[], object], t.Callable[[Schema], bool]]] = [
            (run("create the session table", create), lambda s: s.exists),
            (run("add the user_id column", _execute(add_column)), lambda s: "user_id" in s.columns),
            # Before the index, whose presence marks the upgrade done: a worker
            # stopped in between fills the column at its next start.
            (self.fill_user_ids, indexed),
            (run("create the user_id index", _execute(create_index)), indexed),
        ]
        schema = self.inspect()
        for step, done in steps:
            if done(schema):
                continue
            try:
                step()
            except SessionStoreError:
                # Workers starting together race; one wins, and the others'
                # statements fail on what now exists.
                if not done(self.inspect()):
                    raise
            schema = self.inspect()

    def fill_user_ids(self) -> None:
        """Set ``user_id`` from the data of the sessions of every application
        that were bound to a user before the column existed, so that
        :meth:`~.DatabaseStore.sessions_of` and
        :meth:`~.DatabaseStore.remove_user` find them.

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
            .limit(self.batch)
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
            return (rows[-1].id, rows[-1].application) if len(rows) == self.batch else None

        after = ("", "")
        while True:
            last = self.runner.run(
                "fill user_id from the data", fill_batch, self.runner.engines.bulk
            )
            if last is None:
                return
            after = last

    def check(self) -> None:
        """Refuse a table of an earlier version, without the user_id column.

        :raise ConfigurationError: giving the statements to run.
        """
        schema = self.inspect()
        if schema.exists and "user_id" not in schema.columns:
            dialect = self.runner.engine.dialect
            statements = "".join(f"{s.compile(dialect=dialect)};\n" for s in self.upgrade)
            raise ConfigurationError(
                f"{self.table.fullname!r} lacks the user_id column and index of this"
                f" version: run\n{statements}or set create_table to true",
                "table",
            )

    def inspect(self) -> Schema:
        """Return what the table has in the database."""

        def inspect(connection: sa.Connection) -> Schema:
            inspector = sa.inspect(connection)
            name, schema = self.table.name, self.table.schema
            if not inspector.has_table(name, schema=schema):
                return Schema(False, set(), set())
            columns = {column["name"] for column in inspector.get_columns(name, schema=schema)}
            indexes = {index["name"] for index in inspector.get_indexes(name, schema=schema)}
            return Schema(True, columns, indexes)

        return self.runner.run("inspect the session table", inspect, self.runner.engines.reader)

    @property
    def upgrade(self) -> tuple[sa.TextClause, sa.schema.CreateIndex]:
        """The statements that bring a table of an earlier version up to date."""
        dialect = self.runner.engine.dialect
        column = sa.schema.CreateColumn(self.table.c.user_id).compile(dialect=dialect)
        table = dialect.identifier_preparer.format_table(self.table)
        index = next(i for i in self.table.indexes if i.name == f"{self.table.name}_user_id")
        add_column = f"ALTER TABLE {table} ADD COLUMN {column}".replace(":", "\\:")
        return sa.text(add_column), sa.schema.CreateIndex(index)


def _execute(statement: sa.Executable) -> t.Callable[[sa.Connection], object]:
    return lambda connection: connection.execute(statement)


def _user_in(raw: object) -> str | None:
    """Return the user a stored session's data binds it to, or ``None``."""
    try:
        data = json.loads(raw) if isinstance(raw, str) else None
        value = data.get(USER_KEY) if isinstance(data, dict) else None
        return user_id_of(value) if isinstance(value, str) else None
    except (ValueError, RecursionError):
        return None
