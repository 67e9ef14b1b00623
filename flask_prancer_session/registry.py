"""Driver names and where their classes live.

A driver is named by its short name (``"redis"``), by its Prancer class name
(``"Prancer::Session::Store::Storable"``) so an existing Prancer config works
unchanged, or by an import path (``"package.module:ClassName"``) for third-party
drivers. Modules are imported only when their driver is chosen, so the extras a
driver needs are only required by the apps that use it.
"""

from __future__ import annotations

import importlib
import typing as t
from dataclasses import dataclass
from dataclasses import field

from .errors import ConfigurationError


@dataclass(frozen=True)
class DriverEntry:
    """Where a named driver's class lives, and options its name implies."""

    #: ``"module:Class"``.
    target: str
    #: The pip extra that installs what the driver imports, if any.
    extra: str | None = None
    #: Options the name sets (``...::Driver::Pg`` implies PostgreSQL).
    preset: t.Mapping[str, t.Any] = field(default_factory=dict)


_COOKIE = DriverEntry("flask_prancer_session.state.cookie:CookieState")
_MEMORY = DriverEntry("flask_prancer_session.store.memory:MemoryStore")
_STORABLE = DriverEntry("flask_prancer_session.store.storable:StorableStore")
_DATABASE = "flask_prancer_session.store.database:DatabaseStore"

STATE_DRIVERS: dict[str, DriverEntry] = {
    "cookie": _COOKIE,
    "Prancer::Session::State::Cookie": _COOKIE,
    "header": DriverEntry("flask_prancer_session.state.header:HeaderState"),
}

STORE_DRIVERS: dict[str, DriverEntry] = {
    "memory": _MEMORY,
    "Prancer::Session::Store::Memory": _MEMORY,
    "storable": _STORABLE,
    "file": _STORABLE,
    "Prancer::Session::Store::Storable": _STORABLE,
    "database": DriverEntry(_DATABASE, "database"),
    "Prancer::Session::Store::Database": DriverEntry(_DATABASE, "database"),
    "Prancer::Session::Store::Database::Driver::Pg": DriverEntry(
        _DATABASE, "postgres", {"dialect": "postgresql"}
    ),
    "Prancer::Session::Store::Database::Driver::MySQL": DriverEntry(
        _DATABASE, "mysql", {"dialect": "mysql"}
    ),
    "Prancer::Session::Store::Database::Driver::SQLite": DriverEntry(
        _DATABASE, "database", {"dialect": "sqlite"}
    ),
    "redis": DriverEntry("flask_prancer_session.store.redis:RedisStore", "redis"),
    "cachelib": DriverEntry("flask_prancer_session.store.cachelib:CachelibStore"),
}


def resolve(name: str, drivers: t.Mapping[str, DriverEntry], key: str) -> tuple[type, DriverEntry]:
    """Return the class a driver name stands for, and its registry entry.

    :param key: the config path of the name, for error messages.
    :raise ConfigurationError: the name is unknown or its module cannot be imported.
    """
    entry = drivers.get(name)
    if entry is None:
        if "::" in name or ":" not in name:
            known = ", ".join(sorted(n for n in drivers if "::" not in n))
            raise ConfigurationError(
                f"unknown driver {name!r}; use one of {known}, a Prancer class name,"
                " or 'package.module:ClassName'",
                key,
            )
        entry = DriverEntry(name)
    module_name, _, class_name = entry.target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        hint = f" (pip install 'flask-prancer-session[{entry.extra}]')" if entry.extra else ""
        raise ConfigurationError(f"driver {name!r} cannot be loaded: {error}{hint}", key) from error
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise ConfigurationError(f"{module_name!r} has no class {class_name!r}", key)
    return cls, entry
