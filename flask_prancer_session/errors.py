"""The exceptions the extension raises. All derive from :class:`PrancerSessionError`."""

from __future__ import annotations


class PrancerSessionError(Exception):
    """Base class for every error raised by flask-prancer-session."""


class ConfigurationError(PrancerSessionError):
    """The ``PRANCER_SESSION`` config, or an argument standing in for it, is wrong.

    Raised by :meth:`.PrancerSession.init_app` (and by driver constructors), never
    during a request, so a broken config stops the app from starting instead of
    silently running without sessions.

    :param message: what is wrong and how to fix it.
    :param key: the dotted path of the offending key, such as
        ``PRANCER_SESSION.store.options.dir``.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(f"{key}: {message}" if key else message)
        #: The dotted path of the offending key, or ``None`` when the error is
        #: not about one key.
        self.key = key
        #: The message without the key.
        self.message = message

    def under(self, prefix: str) -> ConfigurationError:
        """Return a copy whose :attr:`key` is placed below ``prefix``.

        Driver constructors only know their own option names; the config loader
        uses this to report the full path.
        """
        key = f"{prefix}.{self.key}" if self.key else prefix
        return ConfigurationError(self.message, key)


class SessionStoreError(PrancerSessionError):
    """The store could not be read or written (server down, disk full, timeout).

    The request that needed the session fails with this error instead of
    carrying on with a fresh, empty session whose cookie would replace the
    visitor's real one. Flask turns it into a ``500 Internal Server Error``
    unless the app registers an error handler for it.

    :param message: what failed.
    :param original_error: the exception raised by the backend.
    """

    def __init__(self, message: str, original_error: BaseException | None = None) -> None:
        super().__init__(message)
        #: The exception raised by the backend, also available as ``__cause__``.
        self.original_error = original_error
