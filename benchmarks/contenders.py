"""The apps ``python -m benchmarks`` compares, one per contender.

Every contender is the same Flask app with the same four views, so the only
difference between them is how the session is kept:

``/counter``
    reads one int from the session and writes it back incremented;
``/read``
    reads one key and changes nothing;
``/untouched`` and ``/anonymous``
    never touch the session. ``/untouched`` is requested with a session cookie,
    ``/anonymous`` by a visitor without one (a bot, a health check).

``flask-bare`` never uses the session at all, so it is the cost of Flask and
the test client alone, the 1.00 of the reports. Each contender runs with its
library's defaults, except where a default would write outside the run's temp
directory, so the numbers are what an app gets out of the box. In particular
Flask-Session's sessions are permanent by default and are then saved on every
request, the read-only ones too.

The ``floor-*`` contenders are the least a server-side session can do on
each backend (see :mod:`.floors`). Each ``prancer-*`` contender names its
floor and Flask-Session's contender on the same backend, and the reports
give its speed relative to both.

A contender is set up in two steps, so that a load run can make its backend
once and open its app in every worker process: :attr:`Contender.backend`
makes the backend (a table, a key prefix, a directory) and yields the
settings, plain JSON data, that :attr:`Contender.app` opens the app with.
"""

from __future__ import annotations

import contextlib
import typing as t
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

from flask import Flask
from flask import session

from . import floors
from . import stores

#: The views every contender serves, in the order the reports list them.
VIEWS = ("counter", "read", "untouched", "anonymous")

#: The contenders the ratios are computed against; they always run.
BARE = "flask-bare"
COOKIE = "flask-cookie"

#: What a contender's app is opened with: plain JSON data, so that it can be
#: handed to the worker processes of a load run.
Settings = dict[str, t.Any]


@dataclass(frozen=True)
class Contender:
    """A named way of keeping sessions."""

    #: The name in the reports and for ``--only``.
    name: str
    #: Makes the backend in a fresh directory and yields the settings of the
    #: app; removes the backend when the context ends. Raises
    #: :class:`~.stores.Unavailable` if the contender cannot run here.
    backend: t.Callable[[Path], t.ContextManager[Settings]]
    #: Opens the app on a backend made by :attr:`backend`, and closes its
    #: connections when the context ends.
    app: t.Callable[[Settings], t.ContextManager[Flask]]
    #: The floor on the same backend, for this extension's contenders.
    floor: str | None = None
    #: Flask-Session's contender on the same backend, if it has one.
    flask_session: str | None = None

    @contextlib.contextmanager
    def build(self, workdir: Path) -> t.Iterator[Flask]:
        """Make the backend in ``workdir`` and open the app on it."""
        with self.backend(workdir) as settings, self.app(settings) as app:
            yield app

    @property
    def references(self) -> tuple[str, ...]:
        """The contenders this one's ratios need besides the two references."""
        return tuple(name for name in (self.floor, self.flask_session) if name is not None)


def make_app(*, use_session: bool = True) -> Flask:
    """Return an app with the four benchmark views.

    :param use_session: when false, the views return the same kind of body
        without touching the session, which gives the bare-Flask reference.
    """
    app = Flask(__name__)
    app.config["SECRET_KEY"] = "benchmark secret"

    if use_session:

        @app.get("/counter")
        def counter() -> str:
            count = session.get("count", 0) + 1
            session["count"] = count
            return str(count)

        @app.get("/read")
        def read() -> str:
            return str(session.get("count", 0))

    else:

        @app.get("/counter")
        def counter() -> str:
            return "1"

        @app.get("/read")
        def read() -> str:
            return "0"

    @app.get("/untouched")
    @app.get("/anonymous")
    def untouched() -> str:
        return "ok"

    return app


@contextlib.contextmanager
def _nothing(workdir: Path) -> t.Iterator[Settings]:
    yield {}


@contextlib.contextmanager
def _bare(settings: Settings) -> t.Iterator[Flask]:
    yield make_app(use_session=False)


@contextlib.contextmanager
def _cookie(settings: Settings) -> t.Iterator[Flask]:
    yield make_app()


#: A fixed key for the encrypted contenders (32 random bytes, URL-safe base64).
BENCH_KEY = "aL5L5TFnGhTOvClwUO32pwRTRQGreK_yz6zClmsyS1Y"


def _prancer_app(*, encrypted: bool = False) -> t.Callable[[Settings], t.ContextManager[Flask]]:
    @contextlib.contextmanager
    def app_on(settings: Settings) -> t.Iterator[Flask]:
        from flask_prancer_session import PrancerSession

        if encrypted:
            stores.require_module("cryptography", "flask-prancer-session[encryption]")
        app = make_app()
        app.config["PRANCER_SESSION"] = {"store": settings}
        if encrypted:
            app.config["PRANCER_SESSION"]["encryption"] = {"keys": [BENCH_KEY]}
        PrancerSession(app)
        try:
            yield app
        finally:
            close_store(app)

    return app_on


def close_store(app: Flask) -> None:
    """Close the connections of the app's session store, so its table can be
    dropped. Looked up defensively: it relies on the extension's internals."""
    extension = app.extensions.get("prancer_session")
    store = getattr(extension, "store", None)
    engine = getattr(store, "engine", None)
    if engine is not None:
        engine.dispose()
    client = getattr(store, "client", None)
    if client is not None and hasattr(client, "close"):
        client.close()


def _require_flask_session() -> None:
    stores.require_module("flask_session", "flask-session>=0.8")


@contextlib.contextmanager
def _redis_prefix(name: str) -> t.Iterator[Settings]:
    stores.require_module("redis", "redis")
    stores.require_server("Redis", stores.REDIS_URL)
    prefix = stores.unique_name(name) + ":"
    try:
        yield {"url": stores.REDIS_URL, "prefix": prefix}
    finally:
        stores.delete_redis_prefix(prefix)


@contextlib.contextmanager
def _flask_session_redis_backend(workdir: Path) -> t.Iterator[Settings]:
    _require_flask_session()
    with _redis_prefix("flask_session_bench") as settings:
        yield settings


@contextlib.contextmanager
def _flask_session_redis(settings: Settings) -> t.Iterator[Flask]:
    import redis
    from flask_session import Session

    client = redis.Redis.from_url(settings["url"])
    app = make_app()
    app.config.update(
        SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=settings["prefix"]
    )
    Session(app)
    try:
        yield app
    finally:
        client.close()


@contextlib.contextmanager
def _flask_session_cachelib_backend(workdir: Path) -> t.Iterator[Settings]:
    _require_flask_session()
    yield {"dir": str(workdir / "flask_session")}


@contextlib.contextmanager
def _flask_session_cachelib(settings: Settings) -> t.Iterator[Flask]:
    from cachelib import FileSystemCache
    from flask_session import Session

    app = make_app()
    # The threshold of this extension's cachelib store, not cachelib's 500.
    cache = FileSystemCache(settings["dir"], threshold=10_000)
    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)
    Session(app)
    yield app


def _flask_session_sqlalchemy_backend(
    server: str | None,
) -> t.Callable[[Path], t.ContextManager[Settings]]:
    """Flask-Session's SQLAlchemy backend on the server ``server`` names, or
    on a SQLite file for ``None``. Its table is created here, by opening the
    app once, so that workers starting together do not all try."""

    @contextlib.contextmanager
    def backend(workdir: Path) -> t.Iterator[Settings]:
        _require_flask_session()
        stores.require_module("flask_sqlalchemy", "flask-sqlalchemy")
        if server is None:
            url = f"sqlite:///{workdir / 'flask_session.db'}"
        else:
            url = _database_url(server)
        settings = {"url": url, "table": stores.unique_name("flask_session_bench")}
        try:
            with _flask_session_sqlalchemy(settings):
                pass
            yield settings
        finally:
            if server is not None:
                stores.drop_table(url, settings["table"])

    return backend


@contextlib.contextmanager
def _flask_session_sqlalchemy(settings: Settings) -> t.Iterator[Flask]:
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    app = make_app()
    app.config["SQLALCHEMY_DATABASE_URI"] = settings["url"]
    db = SQLAlchemy(app)
    app.config.update(
        SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db, SESSION_SQLALCHEMY_TABLE=settings["table"]
    )
    Session(app)
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()


def _database_url(server: str) -> str:
    """Return the URL of ``server`` (``postgresql`` or ``mariadb``), once its
    driver is installed and it answers."""
    if server == "postgresql":
        stores.require_module("psycopg", "psycopg")
        url, name = stores.POSTGRES_URL, "PostgreSQL"
    else:
        stores.require_module("pymysql", "pymysql")
        url, name = stores.MARIADB_URL, "MariaDB"
    stores.require_module("sqlalchemy", "sqlalchemy")
    stores.require_server(name, url)
    return url


@contextlib.contextmanager
def _floor_files_backend(workdir: Path) -> t.Iterator[Settings]:
    yield {"dir": str(workdir / "floor")}


@contextlib.contextmanager
def _floor_redis_backend(workdir: Path) -> t.Iterator[Settings]:
    with _redis_prefix("floor_bench") as settings:
        yield settings


def _floor_table_backend(server: str) -> t.Callable[[Path], t.ContextManager[Settings]]:
    """The floor's table on ``server`` (``sqlite``, ``postgresql`` or ``mariadb``)."""

    @contextlib.contextmanager
    def backend(workdir: Path) -> t.Iterator[Settings]:
        table = stores.unique_name("floor_bench")
        if server == "sqlite":
            path = str(workdir / "floor.db")
            floor = floors.SQLiteFloor(path, table)
            try:
                floor.cursor.execute(floors.create_table_sql("sqlite", table))
            finally:
                floor.close()
            yield {"path": path, "table": table}
            return
        import sqlalchemy

        url = _database_url(server)
        dialect = "postgresql" if server == "postgresql" else "mysql"
        engine = sqlalchemy.create_engine(url)
        try:
            with engine.begin() as connection:
                connection.execute(sqlalchemy.text(floors.create_table_sql(dialect, table)))
        finally:
            engine.dispose()
        try:
            yield {"url": url, "table": table}
        finally:
            stores.drop_table(url, table)

    return backend


def _floor_backend(settings: Settings, kind: str) -> floors.FloorBackend:
    if kind == "memory":
        return floors.MemoryFloor()
    if kind == "files":
        return floors.FileFloor(settings["dir"])
    if kind == "redis":
        return floors.RedisFloor(settings["url"], settings["prefix"])
    if kind == "sqlite":
        return floors.SQLiteFloor(settings["path"], settings["table"])
    parts = urlsplit(settings["url"])
    if kind == "postgresql":
        # libpq takes the URL without SQLAlchemy's driver name.
        return floors.PostgresFloor(parts._replace(scheme="postgresql").geturl(), settings["table"])
    connect_args = {
        "host": parts.hostname or "127.0.0.1",
        "port": parts.port or 3306,
        "user": unquote(parts.username or "root"),
        "password": unquote(parts.password or ""),
        "database": parts.path.lstrip("/"),
    }
    return floors.MariaDBFloor(connect_args, settings["table"])


def _floor_app(kind: str) -> t.Callable[[Settings], t.ContextManager[Flask]]:
    @contextlib.contextmanager
    def app_on(settings: Settings) -> t.Iterator[Flask]:
        backend = _floor_backend(settings, kind)
        app = make_app()
        floors.install(app, backend)
        try:
            yield app
        finally:
            backend.close()

    return app_on


def _prancer(
    store: str, floor: str, flask_session: str | None, *, encrypted: bool = False
) -> Contender:
    name = f"prancer-{store}" + ("-encrypted" if encrypted else "")
    return Contender(
        name,
        stores.STORES[store],
        _prancer_app(encrypted=encrypted),
        floor=floor,
        flask_session=flask_session,
    )


FS_REDIS = "flask-session-redis"
FS_FILES = "flask-session-cachelib-filesystem"

#: Every contender, in the order the reports list them.
CONTENDERS: list[Contender] = [
    Contender(BARE, _nothing, _bare),
    Contender(COOKIE, _nothing, _cookie),
    _prancer("memory", "floor-memory", None),
    _prancer("storable", "floor-files", FS_FILES),
    _prancer("sqlite", "floor-sqlite", "flask-session-sqlalchemy-sqlite"),
    _prancer("postgresql", "floor-postgresql", "flask-session-sqlalchemy-postgresql"),
    _prancer("mariadb", "floor-mariadb", "flask-session-sqlalchemy-mariadb"),
    _prancer("redis", "floor-redis", FS_REDIS),
    _prancer("cachelib-filesystem", "floor-files", FS_FILES),
    # What encryption at rest costs, on the fastest store and on a shared one.
    _prancer("memory", "floor-memory", None, encrypted=True),
    _prancer("redis", "floor-redis", FS_REDIS, encrypted=True),
    Contender("floor-memory", _nothing, _floor_app("memory")),
    Contender("floor-files", _floor_files_backend, _floor_app("files")),
    Contender("floor-sqlite", _floor_table_backend("sqlite"), _floor_app("sqlite")),
    Contender("floor-postgresql", _floor_table_backend("postgresql"), _floor_app("postgresql")),
    Contender("floor-mariadb", _floor_table_backend("mariadb"), _floor_app("mariadb")),
    Contender("floor-redis", _floor_redis_backend, _floor_app("redis")),
    Contender(FS_REDIS, _flask_session_redis_backend, _flask_session_redis),
    Contender(FS_FILES, _flask_session_cachelib_backend, _flask_session_cachelib),
    Contender(
        "flask-session-sqlalchemy-sqlite",
        _flask_session_sqlalchemy_backend(None),
        _flask_session_sqlalchemy,
    ),
    Contender(
        "flask-session-sqlalchemy-postgresql",
        _flask_session_sqlalchemy_backend("postgresql"),
        _flask_session_sqlalchemy,
    ),
    Contender(
        "flask-session-sqlalchemy-mariadb",
        _flask_session_sqlalchemy_backend("mariadb"),
        _flask_session_sqlalchemy,
    ),
]

#: The contenders by name.
BY_NAME = {contender.name: contender for contender in CONTENDERS}


def select(names: t.Iterable[str] | None) -> list[Contender]:
    """Return the contenders named in ``names`` (all if ``None``), plus the two
    references the ratios need and the floor and Flask-Session contender of
    each one named.

    :raise ValueError: naming an unknown contender.
    """
    if names is None:
        return list(CONTENDERS)
    wanted = {name.strip() for name in names if name.strip()}
    unknown = sorted(wanted - BY_NAME.keys())
    if unknown:
        raise ValueError(
            f"unknown contender {', '.join(unknown)}; choose from {', '.join(sorted(BY_NAME))}"
        )
    wanted |= {BARE, COOKIE}
    wanted |= {reference for name in wanted for reference in BY_NAME[name].references}
    return [contender for contender in CONTENDERS if contender.name in wanted]
