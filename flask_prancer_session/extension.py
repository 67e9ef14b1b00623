"""The Flask extension object."""

from __future__ import annotations

import logging
import typing as t
import weakref

import click
from flask import current_app

from .cli import session_cli
from .config import CONFIG_KEY
from .config import device_tracking
from .config import DriverSpec
from .config import flask_login_enabled
from .config import load_drivers
from .config import load_encryptor
from .config import migration_source
from .config import store_error_policy
from .errors import ConfigurationError
from .interface import PrancerSessionInterface
from .migration import FlaskSessionMigrator
from .session import ServerSession
from .session import session
from .state.cookie import CookieState
from .state.signed import SignedIdState
from .store.base import StoreDriver
from .store.memory import MemoryStore
from .users import FINGERPRINT_LENGTH

if t.TYPE_CHECKING:
    from flask import Flask
    from flask import Response

    from .changes import Record

logger = logging.getLogger(__name__)

#: The key of the app's :class:`.PrancerSessionInterface` in ``app.extensions``.
EXTENSION_KEY = "prancer_session"

#: Flask-Session's configuration keys, which this extension reads only to
#: move sessions over (``PRANCER_SESSION.migrate_from``).
FLASK_SESSION_KEYS = (
    "SESSION_TYPE",
    "SESSION_PERMANENT",
    "SESSION_USE_SIGNER",
    "SESSION_KEY_PREFIX",
    "SESSION_ID_LENGTH",
    "SESSION_SERIALIZATION_FORMAT",
    "SESSION_REDIS",
    "SESSION_MEMCACHED",
    "SESSION_FILE_DIR",
    "SESSION_FILE_THRESHOLD",
    "SESSION_FILE_MODE",
    "SESSION_CACHELIB",
    "SESSION_MONGODB",
    "SESSION_MONGODB_DB",
    "SESSION_MONGODB_COLLECT",
    "SESSION_SQLALCHEMY",
    "SESSION_SQLALCHEMY_TABLE",
    "SESSION_SQLALCHEMY_SEQUENCE",
    "SESSION_SQLALCHEMY_SCHEMA",
    "SESSION_SQLALCHEMY_BIND_KEY",
    "SESSION_CLEANUP_N_REQUESTS",
    "SESSION_DYNAMODB",
    "SESSION_DYNAMODB_TABLE",
)


class PrancerSession:
    """Replace Flask's cookie session with server-side sessions.

    .. code-block:: python

        app.config["PRANCER_SESSION"] = {
            "state": {"driver": "cookie", "options": {"session_key": "PSESSION"}},
            "store": {"driver": "storable", "options": {"dir": "/tmp/sessions"}},
        }
        PrancerSession(app)  # or PrancerSession().init_app(app)

    :param app: the app to set up now; leave it out to call :meth:`init_app` later.
    :param state: the state driver, replacing ``PRANCER_SESSION["state"]``: a
        driver name, a ``{"driver": ..., "options": ...}`` mapping, or a
        :class:`.StateDriver` instance.
    :param store: the store driver, replacing ``PRANCER_SESSION["store"]``, in
        the same forms with a :class:`.StoreDriver` instance.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        state: DriverSpec | None = None,
        store: DriverSpec | None = None,
    ) -> None:
        self._state = state
        self._store = store
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Install the session interface on ``app`` and add ``flask session``.

        Reads ``app.config["PRANCER_SESSION"]`` once, now: later changes to it
        are not seen. Without it, sessions use the cookie state with
        ``PSESSION`` and the memory store. With ``"migrate_from":
        "flask-session"`` in it, Flask-Session's settings are read too, to
        move its visitors' sessions over (see :mod:`.migration`).

        :raise ConfigurationError: naming the offending key, if the config is wrong.
        :raise RuntimeError: if ``app`` was already set up.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("PrancerSession is already set up on this app.")
        config = app.config.get(CONFIG_KEY)
        if config is None and self._store is None:
            _refuse_flask_session_config(app)
        state, store = load_drivers(config, state=self._state, store=self._store)
        try:
            state.check_app(app)
        except ConfigurationError as error:
            if error.key in app.config:  # one of Flask's settings
                raise
            raise error.under(f"{CONFIG_KEY}.state.options") from None
        migrator = None
        if migration_source(config) == "flask-session":
            migrator = FlaskSessionMigrator.from_config(app.config)
            if isinstance(state, CookieState) and state.name == migrator.cookie_name:
                raise ConfigurationError(
                    f"is also Flask-Session's cookie name; choose another while"
                    f" {CONFIG_KEY}.migrate_from is set",
                    f"{CONFIG_KEY}.state.options.session_key",
                )
        if (
            isinstance(state, SignedIdState)
            and not app.secret_key
            and not (app.debug or app.testing)
        ):
            logger.warning(
                "The app has no SECRET_KEY as PrancerSession(app) runs: unless one is set"
                " before the first request, session ids travel unsigned and a forged id"
                " costs a store lookup. Set SECRET_KEY before PrancerSession(app)."
            )
        if type(store) is MemoryStore and not (app.debug or app.testing or _in_cli_command()):
            logger.warning(
                "Sessions are kept in the memory of each process: with several worker"
                " processes or after a restart, visitors lose them. Choose a shared store"
                ' in app.config[%r]["store"] (storable, database or redis).',
                CONFIG_KEY,
            )
        if flask_login_enabled(config):
            if not store.indexes_users:
                raise ConfigurationError(
                    f"needs a store that indexes sessions by user; {type(store).__name__} does not",
                    f"{CONFIG_KEY}.flask_login",
                )
            _connect_flask_login(app)
        interface = PrancerSessionInterface(
            state,
            store,
            migrator=migrator,
            encryptor=load_encryptor(config),
            on_store_error=store_error_policy(config),
            devices=device_tracking(config),
        )
        app.session_interface = interface
        app.extensions[EXTENSION_KEY] = interface
        given = self._store if self._store is not None else _section(config, "store")
        if not isinstance(given, StoreDriver):
            # Built here, so closed here: when the app goes, or at exit.
            weakref.finalize(app, store.close)
        app.cli.add_command(session_cli)

    @staticmethod
    def user_sessions(user_id: str | int, app: Flask | None = None) -> dict[str, Record]:
        """Return the live sessions bound to ``user_id`` (see
        :meth:`.ServerSession.bind_user`), keyed by their
        :attr:`~.ServerSession.fingerprint`, for a "your devices" page.

        :param app: the app; the current one by default.
        :raise NotImplementedError: if the store does not index sessions by user.
        """
        interface = _interface(app)
        sessions = interface.store.sessions_of(str(user_id))
        return {
            key[:FINGERPRINT_LENGTH]: interface.with_device(record)
            for key, record in sessions.items()
        }

    @staticmethod
    def end_session(fingerprint: str, user_id: str | int, app: Flask | None = None) -> bool:
        """End the session of ``user_id`` whose fingerprint is ``fingerprint``
        (one device); return whether there was one."""
        if len(fingerprint) != FINGERPRINT_LENGTH:
            return False
        store = _interface(app).store
        keys = [key for key in store.sessions_of(str(user_id)) if key.startswith(fingerprint)]
        return len(keys) == 1 and store.remove(keys[0])

    @staticmethod
    def indexes_users(app: Flask | None = None) -> bool:
        """Tell whether the store keeps sessions by user, so that
        :meth:`user_sessions`, :meth:`end_session` and :meth:`end_user_sessions`
        work (every store but cachelib)."""
        return _interface(app).store.indexes_users

    @staticmethod
    def end_user_sessions(user_id: str | int, app: Flask | None = None) -> int:
        """End every session bound to ``user_id`` ("log out everywhere", or
        after a password change) and return how many were ended.

        The current request's own session is among them if it is bound to the
        user; call :meth:`.ServerSession.expire` too, so the response also
        clears its cookie. To keep the current session, end the others one by
        one with :meth:`end_session`.

        :param app: the app; the current one by default.
        :raise NotImplementedError: if the store does not index sessions by user.
        """
        return _interface(app).store.remove_user(str(user_id))


def _section(config: object, name: str) -> object:
    return config.get(name) if isinstance(config, t.Mapping) else None


def _in_cli_command() -> bool:
    """Tell whether the app is being set up for a ``flask`` command other
    than ``run``, such as ``flask session purge``, which serves no visitor."""
    context = click.get_current_context(silent=True)
    while context is not None:
        if context.info_name == "run":
            return False
        context = context.parent
    return click.get_current_context(silent=True) is not None


def _interface(app: Flask | None) -> PrancerSessionInterface:
    interface = (app or current_app).extensions.get(EXTENSION_KEY)
    if not isinstance(interface, PrancerSessionInterface):
        raise RuntimeError("PrancerSession is not set up on this app.")
    return interface


#: Where a user that a Flask-Login request or header loader authenticated is
#: noted for the request (:data:`flask.g`), to bind the session at its end.
_REQUEST_USER = "_prancer_session_request_user"


def _connect_flask_login(app: Flask) -> None:
    """Keep the session's user binding in step with whoever Flask-Login
    authenticated, whichever way it did.

    ``login_user`` binds the session at once, with a new id (against session
    fixation), and ``logout_user`` unbinds it. A visitor restored by the
    remember-me cookie, a session that holds Flask-Login's ``_user_id`` but no
    binding (stored before ``flask_login`` was turned on, or written by
    ``session_transaction`` in a test), and a user that a request or header
    loader authenticated are bound at the end of the request, with a new id
    for a stored session; a request loader's session is bound only if the
    request stores something in it, so API calls without a cookie store no
    session. A session Flask-Login emptied of ``_user_id`` (its ``strong``
    session protection) is unbound.
    """
    import flask_login.signals as signals
    from flask import g

    def logged_in(sender: Flask, user: t.Any, **extra: t.Any) -> None:
        session.regenerate()
        session.bind_user(user.get_id())

    def logged_out(sender: Flask, user: t.Any, **extra: t.Any) -> None:
        session.unbind_user()

    def loaded_from_request(sender: Flask, user: t.Any, **extra: t.Any) -> None:
        setattr(g, _REQUEST_USER, user.get_id())

    def bind_authenticated(response: Response) -> Response:
        current = session._get_current_object()  # type: ignore[attr-defined]
        if not isinstance(current, ServerSession) or not current.loaded:
            return response  # a request that never used the session costs nothing
        user_id = current.get("_user_id", g.get(_REQUEST_USER))
        bound = current.user_id
        if user_id is None:
            if bound is not None:
                current.unbind_user()
        elif bound != str(user_id) and current.holds_something():
            if not current.new:
                current.regenerate()
            current.bind_user(user_id)
        return response

    receivers = [
        (signals.user_logged_in, logged_in),
        (signals.user_logged_out, logged_out),
        (signals.user_loaded_from_request, loaded_from_request),
    ]
    # Flask-Login's deprecated header_loader sends a signal of its own.
    from_header = getattr(signals, "_user_loaded_from_header", None)
    if from_header is not None:
        receivers.append((from_header, loaded_from_request))
    # Kept alive by the app: blinker holds receivers weakly.
    app.extensions[f"{EXTENSION_KEY}.flask_login"] = receivers
    for signal, receiver in receivers:
        signal.connect(receiver, app)
    app.after_request(bind_authenticated)


def _refuse_flask_session_config(app: Flask) -> None:
    """Stop an app configured for Flask-Session from silently running on the
    memory store."""
    found = [key for key in FLASK_SESSION_KEYS if key in app.config]
    if found:
        raise ConfigurationError(
            f"is Flask-Session's configuration, which this extension reads only to move"
            f" its sessions over; set {CONFIG_KEY} instead (see 'Moving to server-side sessions'"
            f" in the manual) and remove {', '.join(found)}, or keep them and set"
            f' {CONFIG_KEY}["migrate_from"] = "flask-session" to move its sessions over',
            found[0],
        )
