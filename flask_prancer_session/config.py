"""Turning ``PRANCER_SESSION`` into driver instances, failing early and precisely.

The config mirrors Prancer's YAML::

    PRANCER_SESSION = {
        "state": {"driver": "cookie", "options": {"session_key": "PSESSION"}},
        "store": {"driver": "storable", "options": {"dir": "/var/lib/app/sessions"}},
    }

Every mistake raises :class:`~flask_prancer_session.errors.ConfigurationError`
naming the offending key, such as ``PRANCER_SESSION.store.options.dir``.
"""

from __future__ import annotations

import importlib.util
import inspect
import typing as t

from .devices import DeviceTracking
from .errors import ConfigurationError

if t.TYPE_CHECKING:
    from .encryption import Encryptor
from .registry import DriverEntry
from .registry import resolve
from .registry import STATE_DRIVERS
from .registry import STORE_DRIVERS
from .state.base import StateDriver
from .store.base import StoreDriver

#: The config key the extension reads.
CONFIG_KEY = "PRANCER_SESSION"
#: The keys of ``PRANCER_SESSION``.
SECTIONS = (
    "state",
    "store",
    "flask_login",
    "encryption",
    "migrate_from",
    "on_store_error",
    "devices",
)
#: What ``on_store_error`` may say a request does while the store is down.
STORE_ERROR_POLICIES = ("raise", "anonymous")
#: The session libraries whose sessions ``migrate_from`` moves over.
MIGRATION_SOURCES = ("flask-session",)
#: The drivers used when the config names none, as in Prancer.
DEFAULT_STATE = "cookie"
DEFAULT_STORE = "memory"

#: A driver as config or an argument may give it: a name, an instance, or a
#: mapping with ``driver`` and ``options``.
DriverSpec: t.TypeAlias = "str | StateDriver | StoreDriver | t.Mapping[str, t.Any]"


def load_drivers(
    config: object,
    *,
    state: DriverSpec | None = None,
    store: DriverSpec | None = None,
) -> tuple[StateDriver, StoreDriver]:
    """Build the state and store drivers from the ``PRANCER_SESSION`` value.

    :param config: the value of ``app.config["PRANCER_SESSION"]``, or ``None``.
    :param state: replaces the ``state`` section of the config.
    :param store: replaces the ``store`` section of the config.
    :raise ConfigurationError: naming the offending key.
    """
    if config is None:
        config = {}
    if not isinstance(config, t.Mapping):
        raise ConfigurationError("must be a mapping with 'state' and 'store'", CONFIG_KEY)
    for name in config:
        if name not in SECTIONS:
            raise ConfigurationError(
                f"unknown key; expected {', '.join(map(repr, SECTIONS))}", f"{CONFIG_KEY}.{name}"
            )
    state_key = f"{CONFIG_KEY}.state" if state is None else "state"
    store_key = f"{CONFIG_KEY}.store" if store is None else "store"
    return (
        _build(
            config.get("state") if state is None else state,
            state_key,
            StateDriver,
            STATE_DRIVERS,
            DEFAULT_STATE,
        ),
        _build(
            config.get("store") if store is None else store,
            store_key,
            StoreDriver,
            STORE_DRIVERS,
            DEFAULT_STORE,
        ),
    )


def flask_login_enabled(config: object) -> bool:
    """Read ``PRANCER_SESSION.flask_login``: whether Flask-Login's
    ``login_user`` and ``logout_user`` bind the session to the user.

    :raise ConfigurationError: if it is not a boolean, or Flask-Login is missing.
    """
    value = config.get("flask_login", False) if isinstance(config, t.Mapping) else False
    if not isinstance(value, bool):
        raise ConfigurationError("must be true or false", f"{CONFIG_KEY}.flask_login")
    if value and importlib.util.find_spec("flask_login") is None:
        raise ConfigurationError(
            "needs Flask-Login: pip install flask-login", f"{CONFIG_KEY}.flask_login"
        )
    return value


def load_encryptor(config: object) -> Encryptor | None:
    """Build the :class:`.Encryptor` that ``PRANCER_SESSION.encryption`` asks
    for, or return ``None``.

    :raise ConfigurationError: naming the offending key.
    """
    section = config.get("encryption") if isinstance(config, t.Mapping) else None
    if section is None:
        return None
    key = f"{CONFIG_KEY}.encryption"
    if (
        not isinstance(section, t.Mapping)
        or "keys" not in section
        or not set(section) <= {"keys", "accept_plaintext"}
    ):
        raise ConfigurationError(
            "must be a mapping with 'keys', a list of keys, and optionally 'accept_plaintext'",
            key,
        )
    from .encryption import Encryptor

    try:
        return Encryptor(section["keys"], accept_plaintext=section.get("accept_plaintext", False))
    except ConfigurationError as error:
        raise error.under(key) from error


def store_error_policy(config: object) -> t.Literal["raise", "anonymous"]:
    """Read ``PRANCER_SESSION.on_store_error``: ``"raise"`` (the default),
    where the first use of the session in a view raises
    :class:`.SessionStoreError` while the store is down, or ``"anonymous"``,
    where the request goes on with an empty session that is not saved.

    :raise ConfigurationError: for any other value.
    """
    value = config.get("on_store_error", "raise") if isinstance(config, t.Mapping) else "raise"
    if value not in STORE_ERROR_POLICIES:
        raise ConfigurationError(
            f"must be {' or '.join(map(repr, STORE_ERROR_POLICIES))}, not {value!r}",
            f"{CONFIG_KEY}.on_store_error",
        )
    return t.cast('t.Literal["raise", "anonymous"]', value)


def device_tracking(config: object) -> DeviceTracking | None:
    """Read ``PRANCER_SESSION.devices``: whether sessions bound to a user keep
    a description of their device (see :mod:`.devices`), and how.

    :raise ConfigurationError: naming the offending key.
    """
    value = config.get("devices") if isinstance(config, t.Mapping) else None
    return DeviceTracking.from_config(value, f"{CONFIG_KEY}.devices")


def migration_source(config: object) -> str | None:
    """Read ``PRANCER_SESSION.migrate_from``: the session library whose
    sessions are moved over on each visitor's first request, or ``None``.

    :raise ConfigurationError: if it names a library whose sessions cannot be read.
    """
    value = config.get("migrate_from") if isinstance(config, t.Mapping) else None
    if value is None:
        return None
    if not isinstance(value, str) or value.lower() not in MIGRATION_SOURCES:
        raise ConfigurationError(
            f"must be {' or '.join(map(repr, MIGRATION_SOURCES))}, not {value!r}",
            f"{CONFIG_KEY}.migrate_from",
        )
    return value.lower()


def _build(
    spec: object,
    key: str,
    base: type,
    drivers: t.Mapping[str, DriverEntry],
    default: str,
) -> t.Any:
    """Return an instance of ``base`` as ``spec`` describes it."""
    if isinstance(spec, base):
        return spec
    if spec is None:
        spec = {"driver": default}
    elif isinstance(spec, str):
        spec = {"driver": spec}
    if not isinstance(spec, t.Mapping):
        raise ConfigurationError("must be a mapping with 'driver' and 'options'", key)
    for name in spec:
        if name not in ("driver", "options"):
            raise ConfigurationError(
                "unknown key; expected 'driver' and 'options'", f"{key}.{name}"
            )

    driver = spec.get("driver", default)
    options = spec.get("options")
    if options is None:  # YAML's "options:" with nothing below it
        options = {}
    if not isinstance(options, t.Mapping):
        raise ConfigurationError("must be a mapping of option names to values", f"{key}.options")
    if isinstance(driver, base):
        if options:
            raise ConfigurationError(
                "options cannot be given with a driver instance", f"{key}.options"
            )
        return driver
    if not isinstance(driver, str):
        raise ConfigurationError(
            f"must be a driver name or a {base.__name__} instance", f"{key}.driver"
        )

    cls, entry = resolve(driver, drivers, f"{key}.driver")
    if not issubclass(cls, base):
        raise ConfigurationError(f"{driver!r} is not a {base.__name__}", f"{key}.driver")
    options = {**entry.preset, **options}
    _check_option_names(cls, options, f"{key}.options")
    try:
        return cls(**options)
    except ConfigurationError as error:
        raise error.under(f"{key}.options") from error
    except TypeError as error:
        raise ConfigurationError(f"driver {driver!r} cannot be created: {error}", key) from error


def _check_option_names(cls: type, options: t.Mapping[str, t.Any], key: str) -> None:
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return  # The driver checks the names it passes on.
    accepted = {p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}
    for name in options:
        if name not in accepted:
            raise ConfigurationError(
                f"unknown option; {cls.__name__} accepts {', '.join(sorted(accepted)) or 'none'}",
                f"{key}.{name}",
            )
