"""The SQLAlchemy event listeners (and the one dialect patch) that the
database profiles set up on a store's engine."""

from __future__ import annotations

import contextlib
import logging
import os
import typing as t

import sqlalchemy as sa

logger = logging.getLogger(__package__ or __name__)


def watch_file(engine: sa.Engine, path: str) -> None:
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


def begin_immediate(connection: sa.Connection) -> None:
    if not connection.connection.dbapi_connection.in_transaction:  # type: ignore[union-attr]
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def skip_autocommit_commits(dialect: sa.Dialect) -> None:
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


def socket_lost(error: BaseException, dialect: sa.Dialect) -> bool:
    """Tell whether ``error`` says the connection's socket is gone although the
    driver did not mark the connection broken, as psycopg 3 reports a reset
    that its poll loop sees before libpq does."""
    return isinstance(error, dialect.loaded_dbapi.OperationalError) and (
        str(error) == "connection socket closed"
    )


def flag_lost_socket(context: sa.engine.ExceptionContext) -> None:
    """Have SQLAlchemy discard a connection whose socket :func:`socket_lost`
    says is gone, as it does for the disconnects it recognises."""
    if socket_lost(context.original_exception, context.dialect):
        context.is_disconnect = True
