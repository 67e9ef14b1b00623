"""Small rules several stores share, each written once."""

from __future__ import annotations

import hashlib
import math
import os
import re
import stat
import typing as t


def is_seconds(value: object) -> t.TypeGuard[float]:
    """Tell whether ``value`` is a finite number (of seconds), as stored data
    must hold; a bool is not one, although it is an int."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def user_digest(user_id: str) -> str:
    """Return the SHA-256 of ``user_id`` in hex, which names a user's index in
    a store without showing the id."""
    # surrogatepass: a user id read from JSON may hold a lone surrogate.
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()


def glob_escape(text: str) -> str:
    """Escape ``text`` for a Redis ``SCAN MATCH`` pattern."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


def unsafe_directory(path: str | os.PathLike[str], status: os.stat_result) -> str | None:
    """Tell what is wrong with ``path`` (whose ``lstat`` is ``status``) as a
    directory private to the app's user, with the fix, or ``None`` if nothing
    is: whoever else can write to it can plant or swap sessions there."""
    path = os.fspath(path)
    if stat.S_ISLNK(status.st_mode):
        return f"{path!r} is a symbolic link; use the real path"
    if not stat.S_ISDIR(status.st_mode):
        return f"{path!r} is not a directory"
    if status.st_uid != os.geteuid():
        return (
            f"{path!r} belongs to uid {status.st_uid}, not to the uid {os.geteuid()} the app"
            f" runs as; remove it, or 'chown -R {os.geteuid()} {path}' if it is yours"
        )
    if status.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return (
            f"{path!r} is writable by group or others; run 'chmod 700 {path}'"
            " and check that no one else planted a session in it"
        )
    return None
