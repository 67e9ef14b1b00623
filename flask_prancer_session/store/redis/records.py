"""Reading what Redis hands back: a session's hash, and the members of a
user's index."""

from __future__ import annotations

import logging
import math
import typing as t

from ...changes import Record
from ...ids import is_store_key

logger = logging.getLogger(__package__ or __name__)

#: The prefix of the hash fields that hold session values.
DATA = "d:"


def decode_record(key: str, raw: t.Mapping[t.Any, t.Any]) -> Record | None:
    try:
        fields = {text(name): text(value) for name, value in raw.items()}
        created_at = seconds(fields.pop("created"))
        expires_at = seconds(fields.pop("expires"))
    except (KeyError, ValueError) as error:
        # UnicodeDecodeError is a ValueError too.
        logger.warning("Session %.8s... in Redis cannot be decoded (%r); ignoring it", key, error)
        return None
    data = {name[len(DATA) :]: value for name, value in fields.items() if name.startswith(DATA)}
    return Record(data, created_at, expires_at)


def text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, str):
        return value
    raise ValueError(f"unexpected {type(value).__name__} from Redis")


def seconds(value: str) -> float:
    seconds = float(value)
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a time")
    return seconds


def key_of(member: str) -> str | None:
    """Return the store key a user set's member names: the key itself, or on
    a cluster the key, a colon and its binding's token."""
    key = member[:64]
    if is_store_key(key) and member[64:65] in ("", ":"):
        return key
    return None


def field(raw: t.Mapping[t.Any, t.Any], name: str) -> str | None:
    value = raw.get(name, raw.get(name.encode()))
    try:
        return None if value is None else text(value)
    except ValueError:
        return None
