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
"""

from __future__ import annotations

import contextlib
import typing as t
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask import session

from . import stores

#: The views every contender serves, in the order the reports list them.
VIEWS = ("counter", "read", "untouched", "anonymous")

#: The contenders the ratios are computed against; they always run.
BARE = "flask-bare"
COOKIE = "flask-cookie"

#: Makes a contender's app inside a fresh temp directory, and tears it down
#: when the context ends. Raises :class:`~.stores.Unavailable` if it cannot run.
AppBuilder = t.Callable[[Path], t.ContextManager[Flask]]


@dataclass(frozen=True)
class Contender:
    """A named way of keeping sessions."""

    #: The name in the reports and for ``--only``.
    name: str
    #: Builds the app.
    build: AppBuilder


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
def _bare(workdir: Path) -> t.Iterator[Flask]:
    yield make_app(use_session=False)


@contextlib.contextmanager
def _cookie(workdir: Path) -> t.Iterator[Flask]:
    yield make_app()


#: A fixed key for the encrypted contenders (32 bytes, URL-safe base64).
BENCH_KEY = "bW9zdGx5IGhhcm1sZXNzIGJlbmNobWFyayBrZXkhISE"


def _prancer(store: str, *, encrypted: bool = False) -> AppBuilder:
    @contextlib.contextmanager
    def build(workdir: Path) -> t.Iterator[Flask]:
        from flask_prancer_session import PrancerSession

        if encrypted:
            stores.require_module("cryptography", "flask-prancer-session[encryption]")
        with stores.STORES[store](workdir) as config:
            app = make_app()
            app.config["PRANCER_SESSION"] = {"store": config}
            if encrypted:
                app.config["PRANCER_SESSION"]["encryption"] = {"keys": [BENCH_KEY]}
            PrancerSession(app)
            try:
                yield app
            finally:
                close_store(app)

    return build


def close_store(app: Flask) -> None:
    """Close the connections of the app's session store, so its table can be
    dropped. Looked up defensively: it relies on the extension's internals."""
    extension = app.extensions.get("prancer_session")
    engine = getattr(getattr(extension, "store", None), "engine", None)
    if engine is not None:
        engine.dispose()


def _require_flask_session() -> None:
    stores.require_module("flask_session", "flask-session>=0.8")


@contextlib.contextmanager
def _flask_session_redis(workdir: Path) -> t.Iterator[Flask]:
    _require_flask_session()
    stores.require_module("redis", "redis")
    stores.require_server("Redis", stores.REDIS_URL)
    import redis
    from flask_session import Session

    prefix = stores.unique_name("flask_session_bench") + ":"
    client = redis.Redis.from_url(stores.REDIS_URL)
    app = make_app()
    app.config.update(SESSION_TYPE="redis", SESSION_REDIS=client, SESSION_KEY_PREFIX=prefix)
    Session(app)
    try:
        yield app
    finally:
        client.close()
        stores.delete_redis_prefix(prefix)


@contextlib.contextmanager
def _flask_session_cachelib(workdir: Path) -> t.Iterator[Flask]:
    _require_flask_session()
    from cachelib import FileSystemCache
    from flask_session import Session

    app = make_app()
    # The threshold of this extension's cachelib store, not cachelib's 500.
    cache = FileSystemCache(str(workdir / "flask_session"), threshold=10_000)
    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=cache)
    Session(app)
    yield app


@contextlib.contextmanager
def _flask_session_sqlalchemy(workdir: Path) -> t.Iterator[Flask]:
    _require_flask_session()
    stores.require_module("flask_sqlalchemy", "flask-sqlalchemy")
    from flask_session import Session
    from flask_sqlalchemy import SQLAlchemy

    app = make_app()
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{workdir / 'flask_session.db'}"
    db = SQLAlchemy(app)
    app.config.update(SESSION_TYPE="sqlalchemy", SESSION_SQLALCHEMY=db)
    Session(app)
    try:
        yield app
    finally:
        with app.app_context():
            db.engine.dispose()


#: Every contender, in the order the reports list them.
CONTENDERS: list[Contender] = [
    Contender(BARE, _bare),
    Contender(COOKIE, _cookie),
    *(Contender(f"prancer-{store}", _prancer(store)) for store in stores.STORES),
    # What encryption at rest costs, on the fastest store and on a shared one.
    Contender("prancer-memory-encrypted", _prancer("memory", encrypted=True)),
    Contender("prancer-redis-encrypted", _prancer("redis", encrypted=True)),
    Contender("flask-session-redis", _flask_session_redis),
    Contender("flask-session-cachelib-filesystem", _flask_session_cachelib),
    Contender("flask-session-sqlalchemy-sqlite", _flask_session_sqlalchemy),
]


def select(names: t.Iterable[str] | None) -> list[Contender]:
    """Return the contenders named in ``names`` (all if ``None``), plus the two
    references the ratios need.

    :raise ValueError: naming an unknown contender.
    """
    if names is None:
        return list(CONTENDERS)
    wanted = {name.strip() for name in names if name.strip()}
    known = {contender.name for contender in CONTENDERS}
    unknown = sorted(wanted - known)
    if unknown:
        raise ValueError(
            f"unknown contender {', '.join(unknown)}; choose from {', '.join(sorted(known))}"
        )
    wanted |= {BARE, COOKIE}
    return [contender for contender in CONTENDERS if contender.name in wanted]
