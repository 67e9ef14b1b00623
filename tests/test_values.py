"""Session keys and values come back exactly as they were stored, or are
refused where they are stored, over every store."""

from __future__ import annotations

import dataclasses
import enum
import re
import typing as t
import uuid
from collections import OrderedDict
from datetime import date
from datetime import datetime
from datetime import time
from datetime import timedelta
from datetime import timezone
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask import session
from flask.testing import FlaskClient
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
from markupsafe import Markup

from flask_prancer_session.serializer import make_serializer
from flask_prancer_session.serializer import MAX_DEPTH

from .stores import EVERY_STORE


@pytest.fixture
def stash(store_app: Flask) -> dict[str, t.Any]:
    """Values to store are put here; the views store them and read them back."""
    values: dict[str, t.Any] = {}

    @store_app.get("/store")
    def store() -> str:
        for key, value in values.items():
            session[key] = value
        return ""

    @store_app.get("/compare")
    def compare() -> str:
        back = {key: session.get(key) for key in values}
        same = back == values and all(
            type(back[key]) is type(value) for key, value in values.items()
        )
        return "same" if same else repr(back)

    return values


EXACT_VALUES: dict[str, t.Any] = {
    "decimal": Decimal("1.50"),
    "date": date(2026, 11, 29),
    "time": time(13, 14, 15, 16),
    "datetime": datetime(2026, 11, 29, 13, 14, 15, 16, tzinfo=timezone(timedelta(hours=2))),
    "naive": datetime(2026, 11, 29, 13, 14, 15, 16),
    # The second 01:30 of the night clocks go back: compared with any other
    # zone's datetime, even at the same instant, it is unequal.
    "zoned": datetime(2021, 11, 7, 1, 30, tzinfo=ZoneInfo("America/New_York"), fold=1),
    "zoned time": time(1, 2, tzinfo=ZoneInfo("Europe/Paris")),
    "set": {1, 2, 3},
    "frozenset": frozenset({"a", "b"}),
    "tuple": (1, "two", (3.0,)),
    "bytes": b"\x00\xff",
    "uuid": uuid.UUID(int=7),
    "markup": Markup("<b>bold</b>"),
    "tag-like keys": {" t": ["a"], " di": 1},
    "float": 1e308,
    "nested": {"a": [{"b": {"c": [1, 2.5, None, True, "x"]}}]},
}


@pytest.mark.parametrize("name", list(EXACT_VALUES))
def test_values_come_back_as_they_went_in(
    client: FlaskClient, stash: dict[str, t.Any], name: str
) -> None:
    stash[name] = EXACT_VALUES[name]
    client.get("/store")
    assert client.get("/compare").text == "same"


@pytest.mark.stores(*EVERY_STORE)
def test_every_value_comes_back_from_every_store(
    client: FlaskClient, stash: dict[str, t.Any]
) -> None:
    stash.update(EXACT_VALUES)
    stash["text"] = "\x00 \ud7ff \U0001f600 \\u0000 ' \" %s"
    client.get("/store")
    assert client.get("/compare").text == "same"


@dataclasses.dataclass
class Point:
    x: int


class Colour(enum.Enum):
    RED = 1


def recursive() -> list[t.Any]:
    value: list[t.Any] = []
    value.append(value)
    return value


def deep(levels: int) -> list[t.Any]:
    value: list[t.Any] = []
    for _ in range(levels):
        value = [value]
    return value


REFUSED: dict[str, t.Callable[[], object]] = {
    "dataclass": lambda: Point(1),
    "ordered dict": lambda: OrderedDict(a=1),
    "enum": lambda: Colour.RED,
    "object": object,
    "int dict key": lambda: {"inner": {1: "one"}},
    "recursive": recursive,
    "too deep": lambda: deep(MAX_DEPTH + 1),
    "function": lambda: len,
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_values_that_would_not_come_back_are_refused_naming_the_key(
    store_app: Flask, client: FlaskClient, name: str
) -> None:
    value = REFUSED[name]()

    @store_app.get("/refuse")
    def refuse() -> str:
        session["kept"] = 1
        with pytest.raises(TypeError, match="'my key'"):
            session["my key"] = value
        with pytest.raises(TypeError, match="'my key'"):
            session.set("my key", value)
        with pytest.raises(TypeError, match="'my key'"):
            session.update({"my key": value})
        return ",".join(session)

    assert client.get("/refuse").text == "kept"


def test_deep_but_allowed_values_round_trip(client: FlaskClient, stash: dict[str, t.Any]) -> None:
    stash["deep"] = deep(MAX_DEPTH - 1)
    client.get("/store")
    assert client.get("/compare").text == "same"


@pytest.mark.parametrize("key", [1, 1.5, None, b"k", ("a",), "lone \udc80", "nul \x00"], ids=repr)
def test_keys_must_be_strings(store_app: Flask, client: FlaskClient, key: t.Any) -> None:
    @store_app.get("/key")
    def set_key() -> str:
        for action in (
            lambda: session.__setitem__(key, 1),
            lambda: session.set(key, 1),
            lambda: session.update({key: 1}),
            lambda: session.setdefault(key, 1),
        ):
            with pytest.raises(TypeError, match=re.escape(repr(key))):
                action()
        return str(len(session))

    assert client.get("/key").text == "0"


def test_a_value_changed_in_place_into_something_unstorable_fails_the_save(
    store_app: Flask, client: FlaskClient
) -> None:
    store_app.testing = False

    @store_app.get("/break")
    def break_() -> str:
        session["cart"] = []
        session["cart"].append(object())
        return ""

    assert client.get("/break").status_code == 500


json_leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(max_size=20)
    | st.decimals(allow_nan=False)
    | st.dates()
    | st.times()
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.uuids()
)
values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
        | st.frozensets(st.integers() | st.text(max_size=5), max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.stores(*EVERY_STORE)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    key=st.text(max_size=10).filter(lambda k: k != "_prancer_expiry" and "\x00" not in k),
    value=values,
)
def test_any_storable_value_round_trips(
    client: FlaskClient, stash: dict[str, t.Any], key: str, value: t.Any
) -> None:
    stash.clear()
    stash[key] = value
    client.get("/store")
    assert client.get("/compare").text == "same"


def test_a_zone_comes_back_by_name_or_else_at_its_offset() -> None:
    serializer = make_serializer()
    when = datetime(2026, 12, 7, 9, 30, tzinfo=ZoneInfo("Europe/Paris"))
    back = serializer.loads(serializer.dumps(when))
    assert back.tzinfo is ZoneInfo("Europe/Paris")
    # Read where the zone database lacks it: the same instant, at its offset.
    unknown = serializer.dumps(when).replace("Europe/Paris", "Nowhere/Atlantis")
    back = serializer.loads(unknown)
    assert back == when and back.utcoffset() == timedelta(hours=1)
