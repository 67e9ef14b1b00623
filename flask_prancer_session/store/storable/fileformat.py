"""The storable store's files: a log of a session's versions, one line each.

A line is a CRC-32 in hex, a space, and a JSON object with ``created_at``,
``expires_at`` and ``data``; a reader takes the last intact line, so a write
cut short leaves the previous version readable.
"""

from __future__ import annotations

import json
import os
import zlib

from ...changes import Record
from ...changes import user_id_of
from ...changes import USER_KEY

#: The lock file of each subdirectory.
LOCK_NAME = ".lock"
#: Files written aside before being renamed over a session's file start so.
TEMP_PREFIX = ".tmp-"
#: A session file is rewritten rather than appended to once it would grow past
#: this many bytes, or four times its newest line: two blocks of most file
#: systems, so a small session never takes more room on the disk than that.
COMPACT_AT = 8192


def ns(seconds: float) -> int:
    return round(seconds * 1_000_000_000)


def temp_path(path: str) -> str:
    """Return the name the session file at ``path`` is written under before
    it is renamed: one per session, so a process killed in between leaves at
    most one, which the session's next rewrite or deletion removes."""
    directory, name = os.path.split(path)
    return os.path.join(directory, TEMP_PREFIX + name)


def encode_line(created_at: float, expires_at: float, data: dict[str, str]) -> bytes:
    """Return one version of a session as a line of its file."""
    payload = json.dumps({"created_at": created_at, "expires_at": expires_at, "data": data})
    encoded = payload.encode()
    return b"%08x %s\n" % (zlib.crc32(encoded), encoded)


def is_intact(line: bytes) -> bool:
    """Tell whether ``line`` (without its newline) holds the CRC of its payload."""
    if line[8:9] != b" ":
        return False
    try:
        return int(line[:8], 16) == zlib.crc32(line[9:])
    except ValueError:
        return False


def newest_line(content: bytes) -> tuple[bytes | None, bool]:
    """Return the payload of the last intact line of a session file's
    ``content``, and whether nothing torn follows it."""
    end = len(content)
    clean = True
    while end > 0:
        if content[end - 1] == 0x0A:
            start = content.rfind(b"\n", 0, end - 1) + 1
            if is_intact(content[start : end - 1]):
                return content[start + 9 : end - 1], clean
        else:
            start = content.rfind(b"\n", 0, end) + 1
        clean = False
        end = start
    return None, False


def user_of(record: Record | None) -> str | None:
    value = None if record is None else record.data.get(USER_KEY)
    return None if value is None else user_id_of(value)
