"""Turning an old session's values into ones our session keeps, in bounded
work, dropping what it refuses."""

from __future__ import annotations

import logging
import typing as t
from datetime import datetime

from ..serializer import check_key
from ..serializer import dumps_value
from ..serializer import make_serializer
from ..serializer import MAX_DEPTH
from ..serializer import Serializer
from .pickle_reader import brief
from .pickle_reader import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from .pickle_reader import MAX_VALUES as MAX_VALUES
from .pickle_reader import Placeholder as Placeholder
from .pickle_reader import read_pickle as read_pickle
from .pickle_reader import Unreadable as Unreadable

if t.TYPE_CHECKING:
    pass

logger = logging.getLogger(__package__ or __name__)


class Unsupported(Exception):
    """A value that cannot be moved."""


#: Integers of more digits than this are not moved: Python's default limit
#: for ``int`` to ``str``, without which writing one takes time that grows
#: faster than its length.
_INT_LIMIT = 10**4300

#: How many of the keys that were left out a warning names.
_NAMED = 3


class Budget:
    """Counts the values converted from one entry, and the size of their
    strings, bytes, names and integers, each shared value once per reference."""

    def __init__(self, values: int = MAX_VALUES, size: int = MAX_ENTRY_BYTES) -> None:
        self.values = values
        self.size = size

    def spend(self, size: int = 0) -> None:
        """Count one value of ``size`` bytes (or characters).

        :raise Unreadable: once past either limit.
        """
        self.values -= 1
        self.size -= size
        if self.values < 0:
            raise Unreadable(f"it holds more than {MAX_VALUES} values")
        if self.size < 0:
            raise Unreadable(f"its values hold more than {MAX_ENTRY_BYTES} bytes")


def session_values(entry: t.Any, serializer: Serializer | None = None) -> dict[str, t.Any]:
    """Return the values of a Flask-Session entry that our sessions store
    exactly, leaving out the others with one warning.

    :param serializer: the serializer of our sessions, which must accept each
        value moved; the default one if not given.
    :raise Unreadable: if ``entry`` is not a session, or is too large.
    """
    if entry is None:
        return {}
    if type(entry) is not dict:
        raise Unreadable("it is not a mapping")
    if serializer is None:
        serializer = make_serializer()
    budget = Budget()
    values: dict[str, t.Any] = {}
    left_out: list[str] = []
    count = 0
    for key, value in entry.items():
        try:
            name = _session_key(key, budget)
            plain = _plain(value, MAX_DEPTH, budget)
            try:
                dumps_value(serializer, name, plain)
            except TypeError as error:
                cause = error.__cause__ or error
                raise Unsupported(f"our sessions cannot store it ({brief(str(cause))})") from None
            values[name] = plain
        except Unsupported as error:
            count += 1
            if len(left_out) < _NAMED:
                what = repr(brief(key)) if type(key) is str else "a key"
                left_out.append(f"{what} ({error})")
    if count:
        more = f", and {count - len(left_out)} more" if count > len(left_out) else ""
        logger.warning(
            "%d key(s) of a Flask-Session session were not moved over: %s%s.",
            count,
            ", ".join(left_out),
            more,
        )
    return values


def _session_key(key: t.Any, budget: Budget) -> str:
    """Return ``key`` if our sessions take it as a key.

    :raise Unsupported: if they do not.
    """
    if type(key) is not str:
        budget.spend()
        raise Unsupported("its name is not a string")
    budget.spend(len(key))
    try:
        check_key(key)
    except TypeError:
        raise Unsupported("its name is not valid text without NUL characters") from None
    return key


def _plain(value: t.Any, depth: int, budget: Budget) -> t.Any:
    """Return ``value`` as the plain data our sessions store exactly.

    Each value, string and dictionary key is counted before it is looked at,
    so the work is bounded by ``budget`` however often the entry refers to
    one value.

    :raise Unsupported: if it holds anything else.
    :raise Unreadable: once past the budget.
    """
    kind = type(value)
    if kind is str or kind is bytes:
        budget.spend(len(value))
        return value
    if kind is int:
        # Comparing costs little whatever its size; writing its digits does not.
        if not -_INT_LIMIT < value < _INT_LIMIT:
            raise Unsupported("it holds an integer of more than 4300 digits")
        budget.spend(value.bit_length() // 8)
        return value
    budget.spend()
    if kind in (float, bool) or value is None:
        return value
    if kind is datetime and value.tzinfo is not None:
        return value  # MessagePack's timestamp, which the session stores exactly.
    if isinstance(value, Placeholder):
        raise Unsupported(f"it holds {value.what}")
    if kind not in (list, tuple, set, frozenset, dict):
        raise Unsupported(f"{kind.__module__}.{kind.__qualname__} values are not moved")
    if depth == 0:
        raise Unsupported(f"it is nested more than {MAX_DEPTH} levels deep")
    if kind is dict:
        for name in value:
            if type(name) is not str:
                raise Unsupported("it holds a dictionary with a key that is not a string")
            budget.spend(len(name))
            if not _is_text(name):
                raise Unsupported("it holds a dictionary key that is not valid text")
        return {name: _plain(item, depth - 1, budget) for name, item in value.items()}
    return [_plain(item, depth - 1, budget) for item in value]


def _is_text(value: str) -> bool:
    """Whether ``value`` is valid Unicode (a pickle may hold lone surrogates)."""
    if value.isascii():  # Known without looking at the characters.
        return True
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True
