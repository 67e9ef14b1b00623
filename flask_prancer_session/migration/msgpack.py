"""Reading Flask-Session's MessagePack entries (its Redis and SQLAlchemy
backends) in time linear in their size."""

from __future__ import annotations

import logging
import typing as t

from ..config import CONFIG_KEY
from ..errors import ConfigurationError
from .pickle_reader import MAX_ENTRY_BYTES as MAX_ENTRY_BYTES
from .pickle_reader import MAX_VALUES as MAX_VALUES
from .pickle_reader import Placeholder as Placeholder
from .pickle_reader import read_pickle as read_pickle
from .pickle_reader import Unreadable as Unreadable

if t.TYPE_CHECKING:
    pass

logger = logging.getLogger(__package__ or __name__)


def msgspec_decoder() -> t.Callable[[bytes], t.Any]:
    """Return a function that decodes Flask-Session's MessagePack, or its JSON
    (``SESSION_SERIALIZATION_FORMAT = "json"``), as Flask-Session tried both."""
    try:
        import msgspec
    except ImportError as error:
        raise ConfigurationError(
            "needs msgspec to read Flask-Session's sessions:"
            " pip install 'flask-prancer-session[migrate]'",
            f"{CONFIG_KEY}.migrate_from",
        ) from error
    msgpack = msgspec.msgpack.Decoder()
    json = msgspec.json.Decoder()

    def decode(raw: bytes) -> t.Any:
        if not isinstance(raw, (bytes, bytearray, memoryview)):
            raise Unreadable("it is not bytes")
        if len(raw) > MAX_ENTRY_BYTES:
            raise Unreadable(f"it is larger than {MAX_ENTRY_BYTES} bytes")
        raw = bytes(raw)
        packed = without_compound_keys(raw)
        # JSON keys are strings; JSON is not one MessagePack value.
        for decoder, data in ((msgpack, packed), (json, raw)):
            if data is None:
                continue
            try:
                return decoder.decode(data)
            except (msgspec.DecodeError, RecursionError):
                pass
        raise Unreadable(
            "it is neither MessagePack nor JSON (perhaps a pickle from Flask-Session"
            " before 0.7, which is never unpickled)"
        )

    return decode


# The MessagePack formats by their first byte, apart from the fixed ranges:
# those of a fixed size, with the size after the first byte;
_FIXED_SIZE = {
    **dict.fromkeys((0xC0, 0xC2, 0xC3), 0),  # nil, false, true
    **{0xCA: 4, 0xCB: 8},  # floats
    **{0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8},  # integers
    **{0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17},  # fixext: a type byte, the data
}

# those of a length-prefixed size: the length's bytes, and the bytes before the data;
_SIZED = {
    **{0xC4: (1, 0), 0xC5: (2, 0), 0xC6: (4, 0)},  # bin
    **{0xC7: (1, 1), 0xC8: (2, 1), 0xC9: (4, 1)},  # ext, with its type byte
    **{0xD9: (1, 0), 0xDA: (2, 0), 0xDB: (4, 0)},  # str
}

# and the arrays and maps: the count's bytes, and the items per count.
_COUNTED = {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}


def without_compound_keys(raw: bytes) -> bytes | None:
    """Return the MessagePack value ``raw`` with nil in place of each map key
    that is an array or a map, or ``None`` if ``raw`` is not one MessagePack
    value.

    msgspec makes such keys tuples, and a tuple's hash is a function of its
    items' that can be inverted, so one entry could hold thousands of keys
    with one hash, and building the dictionary would take time in proportion
    to their square. A dictionary with a key that is not a string is never
    moved anyway. This walks the items without building them, in a loop.

    :raise Unreadable: if ``raw`` holds more than :data:`MAX_VALUES` values.
    """
    end = len(raw)
    position = 0
    # For each array or map being read, outermost first: the items left in
    # it (a map's keys and values both count), and whether it is a map.
    left = [1]
    in_map = [False]
    values = 0
    spans: list[tuple[int, int]] = []  # where the compound keys are
    key_level = -1  # how many were open when the compound key being read began
    key_start = 0
    while left:
        if left[-1] == 0:
            left.pop()
            in_map.pop()
            if len(left) == key_level:
                spans.append((key_start, position))
                key_level = -1
            continue
        is_key = in_map[-1] and left[-1] % 2 == 0
        left[-1] -= 1
        if position >= end:
            return None
        values += 1
        if values > MAX_VALUES:
            raise Unreadable(f"it holds more than {MAX_VALUES} values")
        byte = raw[position]
        start = position
        position += 1
        count = 0
        if byte <= 0x7F or byte >= 0xE0:  # fixint
            continue
        if byte <= 0x8F:
            count, per = byte & 0x0F, 2  # fixmap
        elif byte <= 0x9F:
            count, per = byte & 0x0F, 1  # fixarray
        elif byte <= 0xBF:
            position += byte & 0x1F  # fixstr
            continue
        elif byte in _FIXED_SIZE:
            position += _FIXED_SIZE[byte]
            continue
        elif byte in _SIZED:
            width, extra = _SIZED[byte]
            size = int.from_bytes(raw[position : position + width], "big")
            position += width + extra + size
            continue
        elif byte in _COUNTED:
            width, per = _COUNTED[byte]
            count = int.from_bytes(raw[position : position + width], "big")
            position += width
        else:
            return None  # 0xc1, which is never used
        if is_key and key_level < 0:
            key_level, key_start = len(left), start
        left.append(count * per)
        in_map.append(per == 2)
    if position != end:
        return None
    if not spans:
        return raw
    pieces = []
    previous = 0
    for start, stop in spans:
        pieces.append(raw[previous:start])
        previous = stop
    pieces.append(raw[previous:])
    return b"\xc0".join(pieces)
