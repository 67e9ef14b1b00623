"""Turning session values into strings and back, without pickle.

Values are encoded one key at a time with Flask's tagged JSON, so ``tuple``,
``bytes``, ``UUID`` and ``Markup`` round-trip. Two tags are added here: ``set``,
and ``datetime`` in ISO 8601, which keeps the microseconds and the time zone
that Flask's cookie-sized HTTP date format drops. Unpickling data from a
store would let whoever can write to the store run code in the app, so pickle
is never used.
"""

from __future__ import annotations

import typing as t
from datetime import datetime

from flask.json.tag import JSONTag
from flask.json.tag import TaggedJSONSerializer


class Serializer(t.Protocol):
    """Anything that turns one session value into a string and back."""

    def dumps(self, value: t.Any) -> str: ...

    def loads(self, value: str) -> t.Any: ...


class TagSet(JSONTag):
    """Serialise :class:`set` as a tagged list."""

    __slots__ = ()
    key = " ps"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, set)

    def to_json(self, value: t.Any) -> t.Any:
        return [self.serializer.tag(item) for item in value]

    def to_python(self, value: t.Any) -> t.Any:
        return set(value)


class TagISODateTime(JSONTag):
    """Serialise :class:`~datetime.datetime` in ISO 8601, exactly."""

    __slots__ = ()
    key = " pd"

    def check(self, value: t.Any) -> bool:
        return isinstance(value, datetime)

    def to_json(self, value: t.Any) -> t.Any:
        return value.isoformat()

    def to_python(self, value: t.Any) -> t.Any:
        return datetime.fromisoformat(value)


def make_serializer() -> TaggedJSONSerializer:
    """Return Flask's tagged JSON serializer with the tags of this module added."""
    serializer = TaggedJSONSerializer()
    serializer.register(TagSet)
    # Checked before Flask's own datetime tag, which would otherwise win.
    serializer.register(TagISODateTime, index=0)
    return serializer


def dumps_value(serializer: Serializer, key: str, value: t.Any) -> str:
    """Serialise the value of session key ``key``.

    :raise TypeError: naming the key, when the value cannot be serialised.
    """
    try:
        return serializer.dumps(value)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"The value of session key {key!r} cannot be stored: {error}."
            " Store plain data (str, int, float, bool, None, list, dict, tuple,"
            " set, bytes, datetime, UUID, Markup)."
        ) from error
