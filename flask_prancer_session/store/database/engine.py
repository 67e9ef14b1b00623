"""The engine a database store makes from a URL or Prancer's split options,
set up as its database's :class:`~.profiles.Profile` says."""

from __future__ import annotations

import functools
import importlib.util
import typing as t
from collections.abc import Mapping

import sqlalchemy as sa

from ...errors import ConfigurationError
from .profiles import Pooler
from .profiles import Profile
from .profiles import PROFILES
from .profiles import Timeouts

Dialect = t.Literal["postgresql", "mysql", "sqlite"]

#: A ``dialect`` option mapped to its SQLAlchemy driver name.
DRIVERNAMES: dict[str, str] = {
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
}
#: A SQLAlchemy backend name mapped to the extra that installs its DBAPI module.
_EXTRAS: dict[str, str] = {"postgresql": "postgres", "mysql": "mysql", "mariadb": "mysql"}
#: Prancer's options that give the parts of the URL, in the constructor's order.
SPLIT_OPTIONS = ("database", "username", "password", "hostname", "port", "charset", "dsn_extra")


def split_options(values: t.Sequence[object]) -> dict[str, t.Any]:
    """Return the split options given, from ``values`` in the order of
    :data:`SPLIT_OPTIONS`."""
    return {k: v for k, v in zip(SPLIT_OPTIONS, values, strict=True) if v is not None}


def check_split_options(split: dict[str, t.Any]) -> None:
    """Refuse a split option of the wrong type."""
    for name, value in split.items():
        kind = int if name == "port" else Mapping if name == "dsn_extra" else str
        if not isinstance(value, kind) or isinstance(value, bool):
            raise ConfigurationError(f"must be a {kind.__name__}, not {type(value).__name__}", name)


def check_dialect(backend: str, dialect: str | None, key: str) -> type[Profile]:
    """Return the profile of ``backend``, the database of the ``key`` option,
    unless it is not supported or is not the ``dialect`` option's."""
    if backend not in PROFILES:
        raise ConfigurationError(f"{backend!r} databases are not supported", key)
    if dialect is not None and backend != dialect and (dialect, backend) != ("mysql", "mariadb"):
        raise ConfigurationError(f"is {dialect!r} but the {key} is for {backend!r}", "dialect")
    return PROFILES[backend]


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


def create_engine(
    url: str | sa.URL | None,
    dialect: str | None,
    split: dict[str, t.Any],
    on_connect: t.Sequence[str],
    connection_check_threshold: float | None,
    timeouts: Timeouts,
    synchronous_commit: bool,
    pooler: Pooler | None,
) -> tuple[sa.Engine, Profile]:
    """Return a new engine for ``url`` or the ``split`` options, and the
    profile of its database."""
    connect_args: dict[str, t.Any] = {}
    if url is not None:
        key = "url"
        try:
            parsed = _normalise_url(sa.make_url(url))
        except sa.exc.ArgumentError as error:
            raise ConfigurationError("is not a valid database URL", "url") from error
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
            DRIVERNAMES[dialect],
            username=split.get("username"),
            password=split.get("password"),
            host=split.get("hostname"),
            port=split.get("port"),
            database=split["database"],
            query={"charset": split["charset"]} if "charset" in split else {},
        )
    backend = parsed.get_backend_name()
    kind = check_dialect(backend, dialect, key)
    if pooler is not None and pooler not in kind.poolers:
        raise ConfigurationError(f"does not apply to {backend}", "pooler")
    profile = kind(timeouts, synchronous_commit, pooler)
    # The store's own run first: on_connect may override them.
    statements = profile.configure(parsed, connect_args) + list(on_connect)
    options = profile.engine_options()
    if connection_check_threshold is not None:
        options["pool_recycle"] = connection_check_threshold
    try:
        engine = sa.create_engine(
            parsed, connect_args=connect_args, hide_parameters=True, **options
        )
    except ImportError as error:
        extra = _EXTRAS.get(backend, "database")
        family = "mysql" if backend == "mariadb" else backend
        raise ConfigurationError(
            f"the {parsed.drivername!r} driver is not installed: use a"
            f" {DRIVERNAMES.get(family, family)}:// URL"
            f" (pip install 'flask-prancer-session[{extra}]')",
            key,
        ) from error
    profile.prepare(engine, parsed)
    if statements:
        listener = functools.partial(_run_on_connect, tuple(statements), profile)
        sa.event.listen(engine, "connect", listener)
    return engine, profile


def _run_on_connect(
    statements: tuple[str, ...], profile: Profile, dbapi_connection: t.Any, record: t.Any
) -> None:
    cursor = dbapi_connection.cursor()
    try:
        with profile.deadline(dbapi_connection):
            for statement in statements:
                cursor.execute(statement)
    finally:
        cursor.close()
    # Else the pool's rollback on return would undo a transactional SET (PostgreSQL).
    dbapi_connection.commit()
