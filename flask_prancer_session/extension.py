"""The Flask extension object."""

from __future__ import annotations

import typing as t

from .cli import session_cli
from .config import CONFIG_KEY
from .config import DriverSpec
from .config import load_drivers
from .interface import PrancerSessionInterface

if t.TYPE_CHECKING:
    from flask import Flask

#: The key of the app's :class:`.PrancerSessionInterface` in ``app.extensions``.
EXTENSION_KEY = "prancer_session"


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
        state, store = load_drivers(
            app.config.get(CONFIG_KEY), state=self._state, store=self._store
        )
        interface = PrancerSessionInterface(state, store)
        app.session_interface = interface
        app.extensions[EXTENSION_KEY] = interface
        app.cli.add_command(session_cli)
