"""Reading ``PRANCER_SESSION``: defaults, driver names, overrides, and precise errors."""

from __future__ import annotations

import logging
import os
import typing as t
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from flask import Flask
from flask import session

from flask_prancer_session import ChangeSet
from flask_prancer_session import ConfigurationError
from flask_prancer_session import CookieState
from flask_prancer_session import MemoryStore
from flask_prancer_session import PrancerSession
from flask_prancer_session import Record
from flask_prancer_session import StateDriver
from flask_prancer_session import StorableStore
from flask_prancer_session import StoreDriver
from flask_prancer_session.store.base import DEFAULT_EXPIRATION_TIMEOUT


class DictStore(StoreDriver):
    """A complete third-party store in a plain dict, named ``tests.test_config:DictStore``."""

    def __init__(self, *, label: str = "", expiration_timeout: float = 60) -> None:
        super().__init__(expiration_timeout=expiration_timeout)
        self.label = label
        self.records: dict[str, Record] = {}

    def fetch(self, key: str) -> Record | None:
        record = self.records.get(key)
        if record is None or record.expires_at <= self.clock():
            return None
        return Record(dict(record.data), record.created_at, record.expires_at)

    def apply(self, key: str, changes: ChangeSet) -> bool:
        record = self.fetch(key)
        if record is None:
            if changes.created_at is None:
                return False
            record = Record({}, changes.created_at, 0)
        data = {k: v for k, v in record.data.items() if k not in changes.removed}
        data.update(changes.updated)
        if not data:
            self.records.pop(key, None)
            return False
        expires_at = self.expiry_for(record.created_at, timeout=changes.timeout)
        self.records[key] = Record(data, record.created_at, expires_at)
        return True

    def touch(self, key: str, expires_at: float) -> None:
        record = self.fetch(key)
        if record is not None:
            self.records[key] = Record(record.data, record.created_at, expires_at)

    def remove(self, key: str) -> bool:
        return self.fetch(key) is not None and self.records.pop(key) is not None


class IncompleteStore(StoreDriver):
    """Forgets :meth:`touch` and :meth:`remove`."""

    def fetch(self, key: str) -> Record | None:
        return None

    def apply(self, key: str, changes: ChangeSet) -> None:
        pass


class NotADriver:
    """Has the methods but not the base class."""

    def fetch(self, key: str) -> None:
        return None


def drivers(app: Flask) -> tuple[StateDriver, StoreDriver]:
    interface = app.extensions["prancer_session"]
    return interface.state, interface.store


def configured(app: Flask, config: t.Any) -> tuple[StateDriver, StoreDriver]:
    app.config["PRANCER_SESSION"] = config
    PrancerSession(app)
    return drivers(app)


def config_error(app: Flask, config: object, **overrides: t.Any) -> ConfigurationError:
    app.config["PRANCER_SESSION"] = config
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app, **overrides)
    assert "prancer_session" not in app.extensions
    return info.value


def causes(error: BaseException) -> t.Iterator[BaseException]:
    cause = error.__cause__
    while cause is not None:
        yield cause
        cause = cause.__cause__


def add_counter(app: Flask) -> None:
    @app.get("/")
    def counter() -> str:
        session["n"] = session.get("n", 0) + 1
        return str(session["n"])


# Defaults and driver names


def test_defaults_without_config(app: Flask) -> None:
    PrancerSession(app)
    state, store = drivers(app)
    assert type(state) is CookieState
    assert state.name == "PSESSION"
    assert type(store) is MemoryStore
    assert store.expiration_timeout == DEFAULT_EXPIRATION_TIMEOUT
    assert app.session_interface is app.extensions["prancer_session"]


@pytest.mark.parametrize("config", [{}, {"state": None, "store": None}, {"state": {}}])
def test_empty_sections_use_defaults(app: Flask, config: dict[str, t.Any]) -> None:
    state, store = configured(app, config)
    assert (type(state), type(store)) == (CookieState, MemoryStore)


@pytest.mark.parametrize("name", ["cookie", "Prancer::Session::State::Cookie"])
def test_state_driver_names(app: Flask, name: str) -> None:
    state, _ = configured(app, {"state": {"driver": name, "options": {"session_key": "S"}}})
    assert isinstance(state, CookieState)
    assert state.name == "S"


def test_state_driver_as_a_bare_name(app: Flask) -> None:
    state, _ = configured(app, {"state": "Prancer::Session::State::Cookie"})
    assert type(state) is CookieState


def test_state_driver_import_path(app: Flask) -> None:
    state, _ = configured(app, {"state": "flask_prancer_session.state.cookie:CookieState"})
    assert type(state) is CookieState


@pytest.mark.parametrize("name", ["memory", "Prancer::Session::Store::Memory"])
def test_memory_store_names(app: Flask, name: str) -> None:
    _, store = configured(app, {"store": {"driver": name, "options": {"max_sessions": 5}}})
    assert isinstance(store, MemoryStore)
    assert store.max_sessions == 5


@pytest.mark.parametrize("name", ["storable", "file", "Prancer::Session::Store::Storable"])
def test_storable_store_names(app: Flask, tmp_path: Path, name: str) -> None:
    options = {"dir": str(tmp_path / "sessions"), "expiration_timeout": 60}
    _, store = configured(app, {"store": {"driver": name, "options": options}})
    assert isinstance(store, StorableStore)
    assert store.dir == str(tmp_path / "sessions")
    assert store.expiration_timeout == 60


def test_store_import_path(app: Flask) -> None:
    config = {"store": {"driver": "tests.test_config:DictStore", "options": {"label": "mine"}}}
    _, store = configured(app, config)
    assert type(store) is DictStore
    assert store.label == "mine"
    add_counter(app)
    client = app.test_client()
    assert [client.get("/").text for _ in range(3)] == ["1", "2", "3"]
    assert len(store.records) == 1


@pytest.mark.parametrize("form", ["bare", "driver-key"])
def test_store_instance_in_config(app: Flask, form: str) -> None:
    instance = DictStore()
    spec = instance if form == "bare" else {"driver": instance}
    _, store = configured(app, {"store": spec})
    assert store is instance


def test_state_instance_in_config(app: Flask) -> None:
    instance = CookieState(session_key="MINE")
    state, _ = configured(app, {"state": instance})
    assert state is instance


# Keyword overrides


def test_keyword_overrides_beat_config(app: Flask, tmp_path: Path) -> None:
    app.config["PRANCER_SESSION"] = {
        "state": {"driver": "cookie", "options": {"session_key": "FROM_CONFIG"}},
        "store": {"driver": "storable", "options": {"dir": str(tmp_path / "unused")}},
    }
    instance = DictStore()
    PrancerSession(app, state={"driver": "cookie", "options": {"key": "KW"}}, store=instance)
    state, store = drivers(app)
    assert isinstance(state, CookieState)
    assert state.name == "KW"
    assert store is instance
    # The replaced section is not even read.
    assert not (tmp_path / "unused").exists()


@pytest.mark.parametrize(
    ("overrides", "kind"),
    [
        ({"store": "memory"}, MemoryStore),
        ({"store": "tests.test_config:DictStore"}, DictStore),
        ({"store": {"driver": "memory", "options": {"max_sessions": 2}}}, MemoryStore),
    ],
)
def test_keyword_override_forms(app: Flask, overrides: dict[str, t.Any], kind: type) -> None:
    app.config["PRANCER_SESSION"] = {"store": "tests.test_config:NoSuchThing"}
    PrancerSession(app, **overrides)
    assert type(drivers(app)[1]) is kind


def test_bad_keyword_override_names_the_argument(app: Flask) -> None:
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app, store={"driver": "memory", "options": {"max_sessions": 0}})
    assert info.value.key == "store.options.max_sessions"
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app, state="nope")
    assert info.value.key == "state.driver"


# Extension lifecycle


def test_init_app_twice_raises(app: Flask) -> None:
    extension = PrancerSession(app)
    interface = app.extensions["prancer_session"]
    with pytest.raises(RuntimeError, match="already"):
        extension.init_app(app)
    with pytest.raises(RuntimeError, match="already"):
        PrancerSession(app)
    assert app.extensions["prancer_session"] is interface


def test_one_extension_many_apps(app: Flask) -> None:
    extension = PrancerSession()
    other = Flask("other")
    other.config.update(TESTING=True, SECRET_KEY="test secret")
    app.config["PRANCER_SESSION"] = {"state": {"options": {"session_key": "FIRST"}}}
    other.config["PRANCER_SESSION"] = {"state": {"options": {"session_key": "SECOND"}}}
    extension.init_app(app)
    extension.init_app(other)
    add_counter(app)
    add_counter(other)

    first_state, first_store = drivers(app)
    second_state, second_store = drivers(other)
    assert first_store is not second_store
    assert (first_state.name, second_state.name) == ("FIRST", "SECOND")  # type: ignore[attr-defined]

    client = app.test_client()
    assert [client.get("/").text for _ in range(2)] == ["1", "2"]
    cookie = client.get_cookie("FIRST")
    assert cookie is not None
    other_client = other.test_client()
    other_client.set_cookie("SECOND", cookie.value)
    assert other_client.get("/").text == "1"
    assert len(first_store) == len(second_store) == 1  # type: ignore[arg-type]


def test_config_is_read_once(app: Flask) -> None:
    app.config["PRANCER_SESSION"] = {"state": {"options": {"session_key": "BEFORE"}}}
    PrancerSession(app)
    app.config["PRANCER_SESSION"] = {"state": {"options": {"session_key": "AFTER"}}}
    add_counter(app)
    assert app.test_client().get("/").headers["Set-Cookie"].startswith("BEFORE=")


# Errors name the exact key


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ("memory", "PRANCER_SESSION"),
        (["state", "store"], "PRANCER_SESSION"),
        ({"stores": "memory"}, "PRANCER_SESSION.stores"),
        ({"State": "cookie"}, "PRANCER_SESSION.State"),
        ({"store": {"drvier": "memory"}}, "PRANCER_SESSION.store.drvier"),
        ({"state": {"driver": "cookie", "option": {}}}, "PRANCER_SESSION.state.option"),
        ({"store": ["memory"]}, "PRANCER_SESSION.store"),
        ({"store": 5}, "PRANCER_SESSION.store"),
        ({"store": {"driver": 5}}, "PRANCER_SESSION.store.driver"),
        ({"store": {"driver": "memory", "options": "x"}}, "PRANCER_SESSION.store.options"),
        ({"store": {"driver": "memory", "options": ["x"]}}, "PRANCER_SESSION.store.options"),
        ({"state": {"options": 3}}, "PRANCER_SESSION.state.options"),
        ({"store": {"options": {"bogus": 1}}}, "PRANCER_SESSION.store.options.bogus"),
        ({"state": {"options": {"Secure": True}}}, "PRANCER_SESSION.state.options.Secure"),
        (
            {"store": {"driver": "storable", "options": {"dir": "/x", "max_sessions": 1}}},
            "PRANCER_SESSION.store.options.max_sessions",
        ),
        ({"store": {"driver": CookieState()}}, "PRANCER_SESSION.store.driver"),
        ({"state": MemoryStore()}, "PRANCER_SESSION.state"),
        (
            {"store": {"driver": MemoryStore(), "options": {"max_sessions": 3}}},
            "PRANCER_SESSION.store.options",
        ),
    ],
)
def test_bad_shape_names_the_key(app: Flask, config: object, key: str) -> None:
    assert config_error(app, config).key == key


def test_unknown_store_driver_lists_the_valid_names(app: Flask) -> None:
    error = config_error(app, {"store": {"driver": "mongo"}})
    assert error.key == "PRANCER_SESSION.store.driver"
    for name in ("memory", "storable", "database", "redis", "cachelib"):
        assert name in error.message
    assert "'mongo'" in error.message
    assert "package.module:ClassName" in error.message


def test_unknown_state_driver_lists_the_valid_names(app: Flask) -> None:
    error = config_error(app, {"state": "url"})
    assert error.key == "PRANCER_SESSION.state.driver"
    assert "cookie" in error.message
    assert str(error).startswith("PRANCER_SESSION.state.driver: ")


@pytest.mark.parametrize(
    ("section", "name"),
    [("state", "Prancer::Session::State::URI"), ("store", "Prancer::Session::Store::Storeable")],
)
def test_unknown_prancer_class_name_names_the_key(app: Flask, section: str, name: str) -> None:
    error = config_error(app, {section: name})
    assert error.key == f"PRANCER_SESSION.{section}.driver"


@pytest.mark.parametrize(
    ("section", "name", "valid"),
    [
        ("state", "Prancer::Session::State::URI", "cookie"),
        ("store", "Prancer::Session::Store::Storeable", "storable"),
    ],
)
def test_unknown_prancer_class_name_lists_the_valid_names(
    app: Flask, section: str, name: str, valid: str
) -> None:
    error = config_error(app, {section: name})
    assert valid in error.message


def test_store_name_is_not_a_state_driver(app: Flask) -> None:
    assert config_error(app, {"state": "memory"}).key == "PRANCER_SESSION.state.driver"


@pytest.mark.parametrize(
    "target",
    [
        "tests.no_such_module:DictStore",
        "no_such_package.module:DictStore",
        "tests.test_config:NoSuchClass",
        "tests.test_config:add_counter",
    ],
)
def test_unloadable_import_path(app: Flask, target: str) -> None:
    error = config_error(app, {"store": {"driver": target}})
    assert error.key == "PRANCER_SESSION.store.driver"
    assert isinstance(error.__cause__, ImportError) or "has no class" in error.message


@pytest.mark.parametrize(
    "target",
    ["tests.test_config:NotADriver", "flask_prancer_session.state.cookie:CookieState"],
)
def test_class_that_is_not_a_store_driver(app: Flask, target: str) -> None:
    error = config_error(app, {"store": target})
    assert error.key == "PRANCER_SESSION.store.driver"
    assert "is not a StoreDriver" in error.message


def test_incomplete_driver_fails_at_init_app(app: Flask) -> None:
    extension = PrancerSession()
    app.config["PRANCER_SESSION"] = {"store": "tests.test_config:IncompleteStore"}
    with pytest.raises(ConfigurationError) as info:
        extension.init_app(app)
    assert info.value.key == "PRANCER_SESSION.store"
    assert "remove" in info.value.message
    assert "touch" in info.value.message
    assert isinstance(info.value.__cause__, TypeError)


def test_storable_dir_is_required(app: Flask) -> None:
    error = config_error(app, {"store": "storable"})
    assert error.key == "PRANCER_SESSION.store.options.dir"
    error = config_error(app, {"store": {"driver": "storable", "options": {"dir": 7}}})
    assert error.key == "PRANCER_SESSION.store.options.dir"


def test_storable_dir_must_be_writable(app: Flask, tmp_path: Path) -> None:
    regular = tmp_path / "a-file"
    regular.write_text("not a directory")
    for directory in (regular, regular / "sessions"):
        config = {"store": {"driver": "storable", "options": {"dir": str(directory)}}}
        error = config_error(app, config)
        assert error.key == "PRANCER_SESSION.store.options.dir"
        assert str(directory) in error.message
        assert any(isinstance(cause, OSError) for cause in causes(error))
    assert os.listdir(tmp_path) == ["a-file"]


@pytest.mark.parametrize("store", ["memory", "storable"])
@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("expiration_timeout", 0),
        ("expiration_timeout", -1),
        ("expiration_timeout", "1800"),
        ("expiration_timeout", True),
        ("expiration_timeout", float("inf")),
        ("expiration_timeout", float("nan")),
        ("expiration_timeout", None),
        ("absolute_timeout", 0),
        ("absolute_timeout", "1d"),
        ("absolute_timeout", float("inf")),
        ("expiration_timeout", 1e17),
        ("expiration_timeout", timedelta(days=3651)),
        ("permanent_timeout", timedelta(0)),
        ("permanent_timeout", "14d"),
        ("absolute_timeout", 1e10),
        ("autopurge", "yes"),
        ("autopurge", 1),
        ("autopurge_probability", 1.5),
        ("autopurge_probability", -0.1),
        ("autopurge_probability", True),
        ("autopurge_probability", "0.5"),
        ("autopurge_probability", float("nan")),
    ],
)
def test_bad_common_store_option(
    app: Flask, tmp_path: Path, store: str, option: str, value: object
) -> None:
    options = {option: value}
    if store == "storable":
        options["dir"] = str(tmp_path / "sessions")
    error = config_error(app, {"store": {"driver": store, "options": options}})
    assert error.key == f"PRANCER_SESSION.store.options.{option}"


@pytest.mark.parametrize("value", [0, -3, 2.5, "10", True, None])
def test_bad_max_sessions(app: Flask, value: object) -> None:
    error = config_error(app, {"store": {"driver": "memory", "options": {"max_sessions": value}}})
    assert error.key == "PRANCER_SESSION.store.options.max_sessions"


def test_good_common_store_options(app: Flask) -> None:
    options = {
        "expiration_timeout": timedelta(minutes=10),
        "permanent_timeout": 3650 * 86400,
        "absolute_timeout": 86400.5,
        "autopurge": True,
        "autopurge_probability": 1,
        "max_sessions": 3,
    }
    _, store = configured(app, {"store": {"driver": "memory", "options": options}})
    assert isinstance(store, MemoryStore)
    assert (store.expiration_timeout, store.absolute_timeout) == (600.0, 86400.5)
    assert store.permanent_timeout == 3650 * 86400.0
    assert (store.autopurge, store.autopurge_probability, store.max_sessions) == (True, 1.0, 3)


@pytest.mark.parametrize("options", [[], "", 0, False])
def test_falsy_options_that_are_not_a_mapping(app: Flask, options: object) -> None:
    error = config_error(app, {"store": {"driver": "memory", "options": options}})
    assert error.key == "PRANCER_SESSION.store.options"


def test_null_options_mean_none(app: Flask) -> None:
    # YAML's ``options:`` with nothing under it.
    _, store = configured(app, {"store": {"driver": "memory", "options": None}})
    assert type(store) is MemoryStore


# Prancer's YAML


def test_prancer_yaml_config(app: Flask, tmp_path: Path) -> None:
    sessions = tmp_path / "sessions"
    path = tmp_path / "config.yml"
    path.write_text(
        "PRANCER_SESSION:\n"
        "  state:\n"
        "    driver: Prancer::Session::State::Cookie\n"
        "    options:\n"
        "      session_key: MYAPP\n"
        "      httponly: true\n"
        "      samesite: strict\n"
        "  store:\n"
        "    driver: Prancer::Session::Store::Storable\n"
        "    options:\n"
        f"      dir: {sessions}\n"
        "      expiration_timeout: 3600\n"
    )
    assert app.config.from_file(str(path), load=yaml.safe_load)
    PrancerSession(app)
    state, store = drivers(app)
    assert isinstance(state, CookieState)
    assert (state.name, state.httponly, state.samesite) == ("MYAPP", True, "Strict")
    assert isinstance(store, StorableStore)
    assert (store.dir, store.expiration_timeout) == (str(sessions), 3600.0)

    add_counter(app)
    client = app.test_client()
    assert [client.get("/").text for _ in range(2)] == ["1", "2"]
    assert client.get_cookie("MYAPP") is not None
    shards = [p for p in sessions.iterdir() if p.is_dir()]
    assert len(shards) == 1


def test_prancer_yaml_mistake_names_the_key(app: Flask, tmp_path: Path) -> None:
    path = tmp_path / "config.yml"
    path.write_text(
        "PRANCER_SESSION:\n"
        "  store:\n"
        "    driver: Prancer::Session::Store::Memory\n"
        "    options:\n"
        "      expiration_timout: 60\n"
    )
    app.config.from_file(str(path), load=yaml.safe_load)
    with pytest.raises(ConfigurationError) as info:
        PrancerSession(app)
    assert info.value.key == "PRANCER_SESSION.store.options.expiration_timout"
    assert "expiration_timeout" in info.value.message


@pytest.mark.parametrize(
    "key", ["SESSION_TYPE", "SESSION_REDIS", "SESSION_KEY_PREFIX", "SESSION_FILE_DIR"]
)
def test_flask_session_config_is_refused_not_ignored(app: Flask, key: str) -> None:
    app.config[key] = "redis"
    with pytest.raises(ConfigurationError, match="Flask-Session") as caught:
        PrancerSession(app)
    assert caught.value.key == key


def test_flask_session_config_beside_prancer_session_is_left_alone(app: Flask) -> None:
    app.config.update(SESSION_TYPE="redis", PRANCER_SESSION={"store": "memory"})
    PrancerSession(app)
    app.add_url_rule("/", "index", lambda: str(session.setdefault("n", 1)))
    client = app.test_client()
    assert client.get("/").text == "1"
    assert client.get_cookie("PSESSION") is not None  # ours, not Flask-Session's
    assert type(app.session_interface).__name__ == "PrancerSessionInterface"


def test_memory_store_in_production_warns_once(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    app.testing = False
    with caplog.at_level(logging.WARNING, "flask_prancer_session"):
        PrancerSession(app)
    [record] = caplog.records
    assert "memory of each process" in record.getMessage()
    assert "PRANCER_SESSION" in record.getMessage()


@pytest.mark.parametrize("mode", ["testing", "debug", "shared store"])
def test_no_memory_warning_when_it_does_not_matter(
    app: Flask, tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: str
) -> None:
    app.testing = mode == "testing"
    app.debug = mode == "debug"
    if mode == "shared store":
        app.config["PRANCER_SESSION"] = {
            "store": {"driver": "storable", "options": {"dir": str(tmp_path / "s")}}
        }
    with caplog.at_level(logging.WARNING, "flask_prancer_session"):
        PrancerSession(app)
    assert caplog.records == []


@pytest.mark.parametrize("mode", ["production", "debug", "testing"])
def test_a_missing_secret_key_is_pointed_out_in_production(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    app = Flask(__name__)
    app.debug = mode == "debug"
    app.testing = mode == "testing"
    app.config["PRANCER_SESSION"] = {"store": "memory"}
    PrancerSession(app)
    warned = [r.getMessage() for r in caplog.records if "SECRET_KEY" in r.getMessage()]
    assert len(warned) == (1 if mode == "production" else 0)
    caplog.clear()
    signed = Flask(__name__)
    signed.secret_key = "a secret"
    PrancerSession(signed)
    assert not [r for r in caplog.records if "SECRET_KEY" in r.getMessage()]


def test_the_extension_closes_the_stores_it_built(tmp_path: Path) -> None:
    import gc

    pytest.importorskip("redis")
    from . import services

    services.require_server("Redis", "127.0.0.1", 6379)
    app = Flask(__name__)
    app.secret_key = "a secret"
    app.config["PRANCER_SESSION"] = {
        "store": {
            "driver": "redis",
            "options": {"url": services.REDIS_URL, "key_prefix": services.unique_name("c") + ":"},
        }
    }
    PrancerSession(app)
    app.add_url_rule("/", "index", lambda: session.setdefault("a", "1"))
    app.test_client().get("/")
    store = app.extensions["prancer_session"].store
    pool = store.client.connection_pool
    assert any(connection._sock is not None for connection in pool._available_connections)
    store.clear()
    del app
    gc.collect()
    assert all(connection._sock is None for connection in pool._available_connections)


def test_the_memory_store_warning_is_not_printed_by_cli_commands(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "memoryapp.py").write_text(
        "from flask import Flask\n"
        "from flask_prancer_session import PrancerSession\n"
        "app = Flask(__name__)\n"
        "app.secret_key = 'a secret'\n"
        "PrancerSession(app)\n"
    )

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    imported = run("-c", "import memoryapp")
    assert "memory of each process" in imported.stderr
    command = run("-m", "flask", "--app", "memoryapp", "session", "purge")
    assert command.returncode == 0, command.stderr
    assert "memory of each process" not in command.stderr
