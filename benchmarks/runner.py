"""The timing loop of ``python -m benchmarks``, and its reports.

All contenders run in one process, in rounds. Within a round each view's
requests are sent in slices of :data:`SLICE` requests, every contender's
slice in turn (in an order rotated from slice to slice), so that a drift of
the machine (another process, CPU frequency, a cache warming up) falls on all
of them alike: the numbers a ratio compares were measured within a fraction
of a second of each other, many times over. The report gives the median of
the per-round ratios, which one disturbed round cannot move much.
"""

from __future__ import annotations

import contextlib
import gc
import json
import platform
import statistics
import sys
import tempfile
import time
import typing as t
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from .contenders import BARE
from .contenders import Contender
from .contenders import COOKIE
from .contenders import VIEWS
from .stores import Unavailable

if t.TYPE_CHECKING:
    from flask.testing import FlaskClient


class BenchmarkError(Exception):
    """A contender answered a benchmark request with something other than 200."""


@dataclass
class Prepared:
    """A contender's app, with a warmed-up client for each view."""

    name: str
    clients: dict[str, FlaskClient]


@dataclass
class Results:
    """Everything one run measured."""

    rounds: int
    requests: int
    #: Contender name -> the reason it did not run.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Contender name -> view -> requests per second, one per round.
    rps: dict[str, dict[str, list[float]]] = field(default_factory=dict)

    def ratios(self, reference: str) -> dict[str, dict[str, list[float]]]:
        """Return each contender's per-round requests per second divided by
        those of ``reference`` for the same view in the same round."""
        base = self.rps[reference]
        return {
            name: {
                view: [mine / theirs for mine, theirs in zip(values, base[view], strict=True)]
                for view, values in views.items()
            }
            for name, views in self.rps.items()
        }

    def medians(self, table: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, float]]:
        """Return the median of every per-round list in ``table``."""
        return {
            name: {view: statistics.median(values) for view, values in views.items()}
            for name, views in table.items()
        }

    def to_json(self) -> dict[str, t.Any]:
        """Return all numbers, per round and as medians, ready for :func:`json.dump`."""
        vs_bare = self.ratios(BARE)
        vs_cookie = self.ratios(COOKIE)
        return {
            "rounds": self.rounds,
            "requests_per_view": self.requests,
            "python": sys.version,
            "platform": platform.platform(),
            "skipped": self.skipped,
            "views": list(VIEWS),
            "results": {
                name: {
                    view: {
                        "rps": self.rps[name][view],
                        "median_rps": statistics.median(self.rps[name][view]),
                        "vs_bare": vs_bare[name][view],
                        "median_vs_bare": statistics.median(vs_bare[name][view]),
                        "vs_cookie": vs_cookie[name][view],
                        "median_vs_cookie": statistics.median(vs_cookie[name][view]),
                    }
                    for view in VIEWS
                }
                for name in self.rps
            },
        }


def prepare(contender: Contender, stack: contextlib.ExitStack, workdir: Path) -> Prepared:
    """Build ``contender``'s app inside ``stack`` and warm up its clients.

    The ``counter``, ``read`` and ``untouched`` views share one client, which
    first gets a session holding a key; ``anonymous`` has a client that never
    sends a cookie.
    """
    app = stack.enter_context(contender.build(workdir))
    with_cookie = app.test_client()
    _check(contender.name, "/counter", with_cookie.get("/counter").status_code)
    anonymous = app.test_client(use_cookies=False)
    clients = {view: with_cookie for view in VIEWS}
    clients["anonymous"] = anonymous
    return Prepared(contender.name, clients)


def _check(name: str, path: str, status: int) -> None:
    if status != 200:
        raise BenchmarkError(f"{name}: GET {path} answered {status}")


#: Requests per contender and view between two switches of contender.
SLICE = 50


def time_view(name: str, client: FlaskClient, view: str, requests: int) -> float:
    """Request ``view`` ``requests`` times through ``client``; return the seconds taken."""
    path = f"/{view}"
    get = client.get
    start = time.perf_counter()
    for _ in range(requests):
        status = get(path).status_code
        if status != 200:
            _check(name, path, status)
    return time.perf_counter() - start


def run(
    contenders: t.Sequence[Contender],
    *,
    rounds: int,
    requests: int,
    log: t.Callable[[str], None] = print,
) -> Results:
    """Benchmark ``contenders`` and return what was measured.

    A contender that cannot run here is skipped, and ``log`` says why. The
    two references (bare Flask and Flask's cookie session) must be among
    ``contenders``.
    """
    results = Results(rounds=rounds, requests=requests)
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prancer-bench-")))
        prepared: list[Prepared] = []
        for contender in contenders:
            workdir = root / contender.name
            workdir.mkdir()
            # Each contender's teardown goes on its own stack, so one that is
            # skipped half-way through its set-up still cleans up after itself.
            own = stack.enter_context(contextlib.ExitStack())
            try:
                prepared.append(prepare(contender, own, workdir))
            except Unavailable as reason:
                own.close()
                results.skipped[contender.name] = str(reason)
                log(f"skipped {contender.name}: {reason}")
        names = {p.name for p in prepared}
        if not {BARE, COOKIE} <= names:
            raise BenchmarkError("the reference contenders flask-bare and flask-cookie must run")

        warmup = max(1, requests // 20)
        for ready in prepared:
            for view in VIEWS:
                time_view(ready.name, ready.clients[view], view, warmup)

        results.rps = {p.name: {view: [] for view in VIEWS} for p in prepared}
        slices = [SLICE] * (requests // SLICE) + [requests % SLICE] * bool(requests % SLICE)
        turn = 0
        for number in range(rounds):
            started = time.perf_counter()
            for view in VIEWS:
                seconds = dict.fromkeys(names, 0.0)
                for size in slices:
                    gc.collect()
                    shift = turn % len(prepared)
                    turn += 1
                    for ready in prepared[shift:] + prepared[:shift]:
                        client = ready.clients[view]
                        seconds[ready.name] += time_view(ready.name, client, view, size)
                for name, spent in seconds.items():
                    results.rps[name][view].append(requests / spent)
            log(f"round {number + 1}/{rounds} took {time.perf_counter() - started:.1f} s")
    return results


def markdown_table(values: dict[str, dict[str, float]], *, number_format: str = "{:.2f}") -> str:
    """Return a markdown table with a row per contender and a column per view."""
    lines = [
        "| contender | " + " | ".join(VIEWS) + " |",
        "| --- | " + " | ".join("---:" for _ in VIEWS) + " |",
    ]
    for name, views in values.items():
        cells = " | ".join(number_format.format(views[view]) for view in VIEWS)
        lines.append(f"| {name} | {cells} |")
    return "\n".join(lines)


def report(results: Results) -> str:
    """Return the markdown report: medians of requests per second and of the
    per-round ratios to bare Flask and to Flask's cookie session."""
    rounds = f"median of {results.rounds} rounds x {results.requests} requests per view"
    parts = [
        f"Requests per second ({rounds}):",
        markdown_table(results.medians(results.rps), number_format="{:,.0f}"),
        f"Speed relative to bare Flask, higher is faster, 0.50 = half as fast ({rounds}):",
        markdown_table(results.medians(results.ratios(BARE))),
        f"Speed relative to Flask's cookie session ({rounds}):",
        markdown_table(results.medians(results.ratios(COOKIE))),
    ]
    if results.skipped:
        parts.append(
            "Skipped:\n"
            + "\n".join(f"- {name}: {reason}" for name, reason in results.skipped.items())
        )
    return "\n\n".join(parts)


def write_json(results: Results, path: str) -> None:
    """Write every number of ``results`` to ``path`` as JSON."""
    with open(path, "w", encoding="utf-8") as file:
        json.dump(results.to_json(), file, indent=2)
        file.write("\n")
