"""The watchdog that bounds how long a PostgreSQL operation may hold its
request: psycopg has no read timeout of its own."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import typing as t


class Watchdog:
    """Shut the socket of a PostgreSQL connection whose operation outlives its
    deadline: psycopg has no read timeout, so a server gone silent (a paused
    host, a dropped link) would hold the request for good. One thread per
    process, waking about once per deadline."""

    def __init__(self) -> None:
        self._reset()
        # A fork may copy the lock while the thread holds it; the child's
        # first guard starts a thread of its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._due: dict[object, tuple[float, int]] = {}
        self._wake_at = math.inf
        self._pid = 0

    @contextlib.contextmanager
    def guard(self, dbapi_connection: t.Any, seconds: float) -> t.Iterator[None]:
        """Shut the socket of ``dbapi_connection`` if the block takes longer
        than ``seconds``."""
        token = object()
        deadline = time.monotonic() + seconds
        with self._condition:
            if self._pid != os.getpid():  # none yet
                self._pid = os.getpid()
                threading.Thread(target=self._watch, name="prancer-watchdog", daemon=True).start()
            self._due[token] = deadline, dbapi_connection.fileno()
            if deadline < self._wake_at:
                self._condition.notify()
        try:
            yield
        finally:
            with self._condition:
                self._due.pop(token, None)

    def _watch(self) -> None:
        with self._condition:
            while True:
                now = time.monotonic()
                for token, (deadline, fd) in list(self._due.items()):
                    if deadline <= now:
                        del self._due[token]
                        _shut(fd)
                self._wake_at = min((d for d, _ in self._due.values()), default=math.inf)
                self._condition.wait(None if self._wake_at == math.inf else self._wake_at - now)


def _shut(fd: int) -> None:
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # The driver owns the descriptor.


#: The process's watchdog.
WATCHDOG = Watchdog()
