"""Turning session values into strings and back, exactly, without pickle.

Values are encoded one key at a time with Flask's tagged JSON, so ``tuple``,
``bytes``, ``UUID`` and ``Markup`` round-trip, and tags added here bring back
``set``, ``frozenset``, ``Decimal``, ``date``, ``time`` and ``datetime`` (in
ISO 8601, which keeps the microseconds and the time zone that Flask's
cookie-sized HTTP date drops; a :mod:`zoneinfo` zone by its name). Every
other type, including subclasses such as ``OrderedDict`` or an ``Enum``, is
refused with a :class:`TypeError` instead
of coming back as something else. Unpickling data from a store would let
whoever can write to the store run code in the app, so pickle is never used.
"""

from __future__ import annotations

import json
import typing as t
import uuid
from datetime import date
from datetime import datetime
from datetime import time
from decimal import Decimal
from json.encoder import encode_basestring_ascii
from zoneinfo import ZoneInfo
from zoneinfo import ZoneInfoNotFoundError

from flask.json.tag import JSONTag
from flask.json.tag import TaggedJSONSerializer
from markupsafe import Markup

#: How deeply containers may nest in one value. Deeper (or self-containing)
#: values are refused, so loading them can never exhaust the stack.
MAX_DEPTH = 64

_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
_OTHERS = frozenset({bytes, Markup, uuid.UUID, datetime, date, time, Decimal})


class Serializer(t.Protocol):
    """Anything that turns one session value into a string and back."""

    def dumps(self, value: t.Any) -> str: ...

    def loads(self, value: str) -> t.Any: ...


class _Tag(JSONTag):
    """A tag for one exact type, with its JSON form made by ``str``."""

    __slots__ = ()
    python_type: t.ClassVar[type]

    def check(self, value: t.Any) -> bool:
        return type(value) is self.python_type


class TagSet(_Tag):
    __slots__ = ()
    key = " ps"
    python_type: t.ClassVar[type[t.Any]] = set

    def to_json(self, value: t.Any) -> t.Any:
        return [self.serializer.tag(item) for item in value]

    def to_python(self, value: t.Any) -> t.Any:
        return set(value)


class TagFrozenSet(TagSet):
    __slots__ = ()
    key = " pf"
    python_type: t.ClassVar[type[t.Any]] = frozenset

    def to_python(self, value: t.Any) -> t.Any:
        return frozenset(value)


class TagISODateTime(_Tag):
    """ISO 8601; with a :mod:`zoneinfo` zone, also its name and ``fold``, so
    the zone comes back rather than its offset of the moment (which would
    compare unequal in a repeated hour)."""

    __slots__ = ()
    key = " pd"
    python_type: t.ClassVar[type[t.Any]] = datetime

    def to_json(self, value: t.Any) -> t.Any:
        zone = getattr(value, "tzinfo", None)
        if isinstance(zone, ZoneInfo) and zone.key is not None:
            return [value.isoformat(), zone.key, value.fold]
        return value.isoformat()

    def to_python(self, value: t.Any) -> t.Any:
        if not isinstance(value, list):
            return self.python_type.fromisoformat(value)
        text, key, fold = value
        parsed = self.python_type.fromisoformat(text)
        try:
            return parsed.replace(tzinfo=ZoneInfo(key), fold=fold)
        except ZoneInfoNotFoundError:
            return parsed  # at the offset it had, where the zone is unknown


class TagDate(TagISODateTime):
    __slots__ = ()
    key = " pD"
    python_type: t.ClassVar[type[t.Any]] = date


class TagTime(TagISODateTime):
    __slots__ = ()
    key = " pt"
    python_type: t.ClassVar[type[t.Any]] = time


class TagDecimal(_Tag):
    __slots__ = ()
    key = " pn"
    python_type: t.ClassVar[type[t.Any]] = Decimal

    def to_json(self, value: t.Any) -> t.Any:
        return str(value)

    def to_python(self, value: t.Any) -> t.Any:
        return Decimal(value)


class SessionSerializer(TaggedJSONSerializer):
    """Flask's tagged JSON, made exact: more types come back as they went in,
    and values that would not are refused."""

    __slots__ = ("_decoder",)

    def __init__(self) -> None:
        super().__init__()
        self._decoder = json.JSONDecoder(object_hook=self.untag)
        # Checked first: Flask's own datetime tag would otherwise win.
        for first in (TagISODateTime, TagDate, TagTime):
            self.register(first, index=0)
        for last in (TagSet, TagFrozenSet, TagDecimal):
            self.register(last)

    def dumps(self, value: t.Any) -> str:
        kind = type(value)
        # What json.dumps returns for these, without its keyword handling.
        if kind is str:
            return encode_basestring_ascii(value)
        if kind is int:
            return int.__repr__(value)
        if kind in _SCALARS:
            return json.dumps(value)
        _check(value, MAX_DEPTH)
        return json.dumps(self.tag(value), separators=(",", ":"))

    def loads(self, value: str) -> t.Any:
        if value.isdigit() and value.isascii() and (value[0] != "0" or len(value) == 1):
            return int(value)  # a counter, say: the commonest value
        if "{" not in value:
            return json.loads(value)  # nothing tagged: the stdlib's shared decoder
        return self._decoder.decode(value)


def _check(value: t.Any, depth: int) -> None:
    kind = type(value)
    if kind in _SCALARS or kind in _OTHERS:
        return
    if kind not in _CONTAINERS:
        raise TypeError(f"{kind.__module__}.{kind.__qualname__} values cannot be stored")
    if depth == 0:
        raise TypeError(f"values nested more than {MAX_DEPTH} levels deep cannot be stored")
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"dictionary keys must be strings, not {key!r}")
            _check(item, depth - 1)
    else:
        for item in value:
            _check(item, depth - 1)


def make_serializer() -> SessionSerializer:
    """Return the serializer sessions use by default."""
    return SessionSerializer()


def dumps_value(serializer: Serializer, key: str, value: t.Any) -> str:
    """Serialise the value of session key ``key``.

    :raise TypeError: naming the key, when the value cannot be stored exactly.
    """
    try:
        return serializer.dumps(value)
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(
            f"The value of session key {key!r} cannot be stored: {error}."
            " Store plain data: str, int, float, bool, None, and list, tuple, set,"
            " frozenset and dict (with string keys) of them, bytes, Decimal, date,"
            " time, datetime, UUID or Markup."
        ) from error


def check_key(key: object) -> None:
    """Refuse a session key that some store cannot keep.

    :raise TypeError: naming the key, unless it is a string of valid Unicode
        text without NUL characters.
    """
    if not isinstance(key, str):
        raise TypeError(f"Session keys must be strings, not {type(key).__name__} ({key!r}).")
    if not key.isascii():
        try:
            key.encode()
        except UnicodeEncodeError:
            raise TypeError(f"Session keys must be valid Unicode text, not {key!r}.") from None
    if "\x00" in key:
        # PostgreSQL, for one, cannot store it.
        raise TypeError(f"Session keys cannot contain NUL characters: {key!r}.")
