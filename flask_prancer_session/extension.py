"""The Flask extension object."""

from __future__ import annotations

import logging
import typing as t

from .cli import session_cli
from .config import CONFIG_KEY
from .config import DriverSpec
from .config import load_drivers
from .errors import ConfigurationError
from .interface import PrancerSessionInterface
from .store.memory import MemoryStore

if t.TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger(__name__)

#: The key of the app's :class:`.PrancerSessionInterface` in ``app.extensions``.
EXTENSION_KEY = "prancer_session"

#: Flask-Session's configuration keys, which this extension does not read.
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
        ``PSESSION`` and the memory store.

        :raise ConfigurationError: naming the offending key, if the config is wrong.
        :raise RuntimeError: if ``app`` was already set up.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("PrancerSession is already set up on this app.")
        config = app.config.get(CONFIG_KEY)
        if config is None and self._store is None:
            _refuse_flask_session_config(app)
        state, store = load_drivers(config, state=self._state, store=self._store)
        if type(store) is MemoryStore and not (app.debug or app.testing):
            logger.warning(
                "Sessions are kept in the memory of each process: with several worker"
                " processes or after a restart, visitors lose them. Choose a shared store"
                ' in app.config[%r]["store"] (storable, database or redis).',
                CONFIG_KEY,
            )
        interface = PrancerSessionInterface(state, store)
        app.session_interface = interface
        app.extensions[EXTENSION_KEY] = interface
        app.cli.add_command(session_cli)


def _refuse_flask_session_config(app: Flask) -> None:
    """Stop an app configured for Flask-Session from silently running on the
    memory store."""
    found = [key for key in FLASK_SESSION_KEYS if key in app.config]
    if found:
        raise ConfigurationError(
            f"is Flask-Session's configuration, which this extension does not read;"
            f" set {CONFIG_KEY} instead (see 'Moving from Flask-Session' in the README)"
            f" and remove {', '.join(found)}",
            found[0],
        )
