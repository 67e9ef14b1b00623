"""Running part of a test in a forked child, as gunicorn forks its workers."""

from __future__ import annotations

import os
import signal
import traceback
import typing as t


def run_forked(
    child: t.Callable[[], object], parent: t.Callable[[], object] = lambda: None
) -> None:
    """Run ``child`` in a forked process while ``parent`` runs here, and fail
    with the child's traceback if it raised, or if it hung for 10 seconds."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        status = 1
        try:
            os.close(reader)
            signal.alarm(10)  # a hung child fails the test instead of hanging the suite
            child()
            status = 0
        except BaseException:
            os.write(writer, traceback.format_exc().encode())
        finally:
            os._exit(status)
    os.close(writer)
    try:
        parent()
    finally:
        _, status = os.waitpid(pid, 0)
        with os.fdopen(reader) as output:
            failure = output.read()
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, (
        failure or f"the child ended with status {status:#x}"
    )


def hold_while_forking(locks: t.Sequence[t.Any], child: t.Callable[[], object]) -> None:
    """Run ``child`` in a process forked while another thread holds ``locks``,
    as a fork may copy a lock that a thread of the parent holds."""
    import threading

    held, forked = threading.Event(), threading.Event()

    def hold() -> None:
        for lock in locks:
            lock.acquire()
        held.set()
        forked.wait(10)
        for lock in locks:
            lock.release()

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(10)
    try:
        run_forked(child, forked.set)
    finally:
        forked.set()
        holder.join()
