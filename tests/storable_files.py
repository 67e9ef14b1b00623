"""Reading the storable store's files in tests, independently of the store."""

from __future__ import annotations

import json
import typing as t
import zlib
from pathlib import Path


def versions(path: Path) -> list[dict[str, t.Any]]:
    """Return the intact versions in the session file at ``path``, oldest first:
    the lines whose CRC matches (a last piece without a newline is torn)."""
    found = []
    for line in path.read_bytes().split(b"\n")[:-1]:
        crc, _, payload = line.partition(b" ")
        if len(crc) == 8 and int(crc, 16) == zlib.crc32(payload):
            found.append(json.loads(payload))
    return found


def newest(path: Path) -> dict[str, t.Any]:
    """Return the newest intact version in the session file at ``path``."""
    return versions(path)[-1]
