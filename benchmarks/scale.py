"""``python -m benchmarks.scale``: does a store slow down as it fills up?

For each store, the sessions stored are raised step by step to 1e3, 1e4,
1e5... (powers of ten up to ``--max``), a tenth of them already expired. At
each step it measures

* the cost of a request to a counter view (read and write one key), through
  Flask's test client, for a visitor who already has a session;
* :meth:`purge`, deleting the expired tenth: its time, then, over a second
  expired tenth, its peak Python memory (:mod:`tracemalloc` slows the code it
  watches, so the time is measured without it).

Stores that expire entries by themselves (Redis, cachelib) are filled with
live sessions only, and their purge has nothing to do. ``autopurge`` is off
for every store, so no request deletes the expired sessions before the
measured purge does.

.. code-block:: text

    python -m benchmarks.scale                      # 1e3 and 1e4 sessions
    python -m benchmarks.scale --max 1e5 --only redis,postgresql
    python -m benchmarks.scale --max 1e6 --json scale.json
"""

from __future__ import annotations

import argparse
import gc
import json
import secrets
import statistics
import sys
import tempfile
import time
import tracemalloc
import typing as t
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from dataclasses import dataclass
from pathlib import Path

from flask import Flask

from . import stores
from .contenders import close_store
from .contenders import make_app

if t.TYPE_CHECKING:
    from flask.testing import FlaskClient

    from flask_prancer_session.store.base import StoreDriver


@dataclass
class Step:
    """What was measured for one store at one size."""

    store: str
    #: Sessions stored when the counter view was timed, expired ones included.
    sessions: int
    counter_rps: float
    #: Sessions the timed purge deleted.
    purged: int
    purge_seconds: float
    #: Peak Python memory allocated during the second purge, in bytes.
    purge_peak_bytes: int


#: How many threads :func:`prefill` writes sessions with.
PREFILL_THREADS = 8


def prefill(store: StoreDriver, count: int, *, expired: bool = False) -> None:
    """Write ``count`` sessions straight through ``store``.

    This is the only code that uses the store driver's own API (``apply``, a
    ``ChangeSet``, the replaceable ``clock``), so it is the one place to adapt
    when that API changes. Expired sessions are written with the store's clock
    set back beyond the idle timeout, so the store computes an expiry in the
    past itself.
    """
    from flask_prancer_session.changes import ChangeSet

    now = store.clock()
    created_at = now - store.expiration_timeout - 3600 if expired else now
    data = {"count": "1", "username": '"benchmark"'}
    had_own_clock = "clock" in vars(store)
    saved_clock = store.clock
    store.clock = lambda: created_at

    def write(sessions: int) -> None:
        for _ in range(sessions):
            store.apply(secrets.token_hex(32), ChangeSet(updated=data, created_at=created_at))

    # Several writers at once: a network store then fills while it waits on
    # the round trips of the others (a million sessions in minutes, not hours).
    share, extra = divmod(count, PREFILL_THREADS)
    try:
        with ThreadPoolExecutor(PREFILL_THREADS) as pool:
            # list() waits for every writer and raises what one raised.
            list(pool.map(write, [share + (n < extra) for n in range(PREFILL_THREADS)]))
    finally:
        if had_own_clock:
            store.clock = saved_clock
        else:
            del store.clock


def session_store(app: Flask) -> StoreDriver:
    """Return the store driver of ``app``'s sessions."""
    return t.cast("StoreDriver", app.extensions["prancer_session"].store)


def time_counter(client: FlaskClient, requests: int, chunks: int = 5) -> float:
    """Request the counter view ``requests`` times; return requests per second,
    the median of ``chunks`` equal parts, so a moment of noise from another
    process moves it little."""
    size = max(1, requests // chunks)
    rates = []
    for _ in range(chunks):
        gc.collect()
        start = time.perf_counter()
        for _ in range(size):
            response = client.get("/counter")
            if response.status_code != 200:
                raise RuntimeError(f"GET /counter answered {response.status_code}")
        rates.append(size / (time.perf_counter() - start))
    return statistics.median(rates)


def measure_purge(store: StoreDriver, expired: int) -> tuple[int, float, int]:
    """Purge the ``expired`` sessions the store holds, then as many again:
    return the count deleted and the time of the first purge, and the peak
    memory of the second."""
    gc.collect()
    start = time.perf_counter()
    purged = store.purge()
    seconds = time.perf_counter() - start
    prefill(store, expired, expired=True)
    gc.collect()
    tracemalloc.start()
    try:
        store.purge()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return purged, seconds, peak


def run_store(
    name: str,
    workdir: Path,
    sizes: t.Sequence[int],
    requests: int,
    log: t.Callable[[str], None],
) -> list[Step]:
    """Measure one store at every size in ``sizes`` (ascending)."""
    largest = max(sizes)
    # Room for every session, so no store evicts any: memory and cachelib
    # would otherwise drop the oldest past their default 10000.
    options: dict[str, t.Any] = {"autopurge": False}
    if name == "memory":
        options["max_sessions"] = 2 * largest + 1000
    elif name == "cachelib-filesystem":
        options["threshold"] = 2 * largest + 1000
    steps = []
    with stores.STORES[name](workdir, **options) as config:
        from flask_prancer_session import PrancerSession

        app = make_app()
        app.config["PRANCER_SESSION"] = {"store": config}
        PrancerSession(app)
        try:
            store = session_store(app)
            client = app.test_client()
            time_counter(client, max(1, requests // 10), chunks=1)
            live = 0
            for size in sizes:
                started = time.perf_counter()
                expired = 0 if store.expires_natively else size // 10
                prefill(store, size - expired - live)
                live = size - expired
                prefill(store, expired, expired=True)
                filled = time.perf_counter() - started
                rps = time_counter(client, requests)
                if store.expires_natively:
                    purged, seconds, peak = store.purge(), 0.0, 0
                else:
                    purged, seconds, peak = measure_purge(store, expired)
                steps.append(Step(name, size, rps, purged, seconds, peak))
                log(f"{name}: {size:,} sessions (filled in {filled:.1f} s), {rps:,.0f} req/s")
        finally:
            close_store(app)
    return steps


def report(steps: t.Sequence[Step], requests: int) -> str:
    """Return the markdown table of ``steps``."""
    lines = [
        f"Counter view ({requests} requests) and purge of the expired tenth, by sessions stored:",
        "",
        "| store | sessions | counter req/s | µs per request | purged | purge s | purge peak KiB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for step in steps:
        if step.purged or step.purge_seconds:
            purge = (
                f"{step.purged:,} | {step.purge_seconds:.3f} | {step.purge_peak_bytes / 1024:,.0f}"
            )
        else:
            purge = "0 | – | – (expires natively)"
        lines.append(
            f"| {step.store} | {step.sessions:,} | {step.counter_rps:,.0f}"
            f" | {1e6 / step.counter_rps:,.0f} | {purge} |"
        )
    return "\n".join(lines)


def sizes_up_to(largest: int) -> list[int]:
    """Return 1e3, 1e4... up to ``largest``, or just ``largest`` if it is below 1e3."""
    sizes = []
    size = 1000
    while size <= largest:
        sizes.append(size)
        size *= 10
    if not sizes or sizes[-1] != largest:
        sizes.append(largest)
    return sorted(set(sizes))


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description="Request cost and purge cost of each store as it fills up.",
    )
    parser.add_argument(
        "--max",
        type=lambda text: int(float(text)),
        default=10_000,
        help="fill up to this many sessions, in powers of ten from 1e3 (default 1e4; try 1e5, 1e6)",
    )
    parser.add_argument(
        "--requests", type=int, default=1000, help="counter requests timed per size (default 1000)"
    )
    parser.add_argument(
        "--only",
        metavar="STORE[,STORE]",
        help=f"run only these stores; choose from: {', '.join(stores.STORES)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the numbers to PATH")
    args = parser.parse_args(argv)
    if args.max < 10 or args.requests < 1:
        parser.error("--max must be at least 10 and --requests at least 1")
    names = list(stores.STORES)
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in stores.STORES]
        if unknown:
            parser.error(
                f"unknown store {', '.join(unknown)}; choose from {', '.join(stores.STORES)}"
            )

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    sizes = sizes_up_to(args.max)
    steps: list[Step] = []
    skipped: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="prancer-scale-") as root:
        for name in names:
            workdir = Path(root, name)
            workdir.mkdir()
            try:
                steps += run_store(name, workdir, sizes, args.requests, log)
            except stores.Unavailable as reason:
                skipped[name] = str(reason)
                log(f"skipped {name}: {reason}")
    print(report(steps, args.requests))
    if skipped:
        print("\nSkipped:\n" + "\n".join(f"- {name}: {reason}" for name, reason in skipped.items()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            json.dump(
                {
                    "requests": args.requests,
                    "skipped": skipped,
                    "steps": [asdict(s) for s in steps],
                },
                file,
                indent=2,
            )
            file.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
