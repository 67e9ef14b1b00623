"""The watchdog that bounds how long a PostgreSQL operation may hold its
request: psycopg has no read timeout of its own."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
import types
import typing as t


class Watchdog:
    """Shut the socket of a PostgreSQL connection whose operation outlives its
    deadline: psycopg has no read timeout, so a server gone silent (a paused
    host, a dropped link) would hold the request for good. One thread per
    process, waking about once per deadline.

    An operation only adds its deadline to a dict and removes it, which the
    interpreter does atomically: no lock on the hot path. It wakes the
    thread only if its deadline comes before the one the thread sleeps until.
    """

    def __init__(self) -> None:
        self._reset()
        # A fork may copy a lock while a thread holds it; the child's first
        # guard starts a thread of its own, with locks of its own.
        os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._start_lock = threading.Lock()
        #: Held while the thread takes a deadline out and shuts its socket.
        self._shut_lock = threading.Lock()
        self._wake = threading.Event()
        self._due: dict[object, tuple[float, int]] = {}
        self._wake_at = math.inf
        self._started = False

    def guard(self, dbapi_connection: t.Any, seconds: float) -> _Guard:
        """Return a context manager that shuts the socket of
        ``dbapi_connection`` if its block takes longer than ``seconds``."""
        return _Guard(self, dbapi_connection, seconds)

    def _arm(self, token: object, deadline: float, fd: int) -> None:
        if not self._started:
            self._start()
        self._due[token] = deadline, fd
        # Read after the write above: a thread that computed its wake-up
        # time before it did reads the dict again before sleeping.
        if deadline < self._wake_at:
            self._wake.set()

    def _start(self) -> None:
        with self._start_lock:
            if not self._started:
                threading.Thread(target=self._watch, name="prancer-watchdog", daemon=True).start()
                self._started = True

    def _watch(self) -> None:
        due, wake, shut_lock = self._due, self._wake, self._shut_lock
        while True:
            wake.clear()
            now = time.monotonic()
            for token, (deadline, fd) in due.copy().items():
                if deadline <= now:
                    # Whichever of the thread and the operation takes the
                    # deadline out first decides: the socket is shut only if
                    # the operation has not ended, and it then waits for that.
                    with shut_lock:
                        if due.pop(token, None) is not None:
                            _shut(fd)
            wake_at = _earliest(due)
            self._wake_at = wake_at
            # A deadline added meanwhile may have read the previous wake-up time.
            if _earliest(due) < wake_at:
                continue
            wake.wait(None if wake_at == math.inf else max(wake_at - now, 0.0))


class _Guard:
    """The block of one operation under :meth:`Watchdog.guard` (a class: a
    generator-based context manager costs a few microseconds more)."""

    __slots__ = ("_watchdog", "_connection", "_seconds")

    def __init__(self, watchdog: Watchdog, dbapi_connection: t.Any, seconds: float) -> None:
        self._watchdog = watchdog
        self._connection = dbapi_connection
        self._seconds = seconds

    def __enter__(self) -> None:
        deadline = time.monotonic() + self._seconds
        self._watchdog._arm(self, deadline, self._connection.fileno())

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: types.TracebackType | None,
    ) -> None:
        watchdog = self._watchdog
        if watchdog._due.pop(self, None) is None:
            # The thread is shutting the socket: not before it is done may
            # the connection go back to the pool (or its descriptor be reused).
            with watchdog._shut_lock:
                pass


def _earliest(due: dict[object, tuple[float, int]]) -> float:
    return min((deadline for deadline, _ in due.copy().values()), default=math.inf)


def _shut(fd: int) -> None:
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_RDWR)
        finally:
            sock.detach()  # The driver owns the descriptor.


#: The process's watchdog.
WATCHDOG = Watchdog()
