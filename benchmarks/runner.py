"""The timing loop of ``python -m benchmarks``, and its reports.

All contenders run in one process, in rounds. Within a round each view is
timed in slices of :data:`SLICE_SECONDS`, every contender's slice in turn (in
an order rotated from slice to slice), so that a drift of the machine (another
process, CPU frequency, a cache warming up) falls on all
of them alike: the numbers a ratio compares were measured within a fraction
of a second of each other, many times over. The report gives the median of
the per-round ratios, which one disturbed round cannot move much, and their
interquartile range, which shows how far one round can be trusted: a
comparison whose range straddles the target is not settled by this run.
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


#: Per contender and view, one number per round.
PerRound = dict[str, dict[str, list[float]]]


@dataclass(frozen=True)
class Spread:
    """The median of per-round numbers, and how widely the rounds disagree."""

    median: float
    #: The first and third quartiles: half the rounds lie between them.
    q1: float
    q3: float
    low: float
    high: float

    @classmethod
    def of(cls, values: t.Sequence[float]) -> Spread:
        if len(values) < 2:
            return cls(values[0], values[0], values[0], values[0], values[0])
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3, min(values), max(values))

    def to_json(self) -> dict[str, float]:
        return {
            "median": self.median,
            "q1": self.q1,
            "q3": self.q3,
            "min": self.low,
            "max": self.high,
        }


@dataclass
class Results:
    """Everything one run measured."""

    rounds: int
    #: Seconds each contender spends on each view in each round.
    seconds: float
    #: Contender name -> the reason it did not run.
    skipped: dict[str, str] = field(default_factory=dict)
    #: Contender name -> view -> requests per second, one per round.
    rps: PerRound = field(default_factory=dict)
    #: Contender name -> view -> requests sent in the timed rounds.
    requests: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Contender name -> its floor, for the contenders that name one.
    floors: dict[str, str] = field(default_factory=dict)
    #: Contender name -> Flask-Session's contender on the same backend.
    flask_sessions: dict[str, str] = field(default_factory=dict)

    def ratios(self, reference: str) -> PerRound:
        """Return each contender's per-round requests per second divided by
        those of ``reference`` for the same view in the same round."""
        return self.paired(dict.fromkeys(self.rps, reference))

    def paired(self, references: t.Mapping[str, str]) -> PerRound:
        """Return the per-round ratios of each contender in ``references`` to
        its own reference there, for those where both ran."""
        table: PerRound = {}
        for name, reference in references.items():
            if name not in self.rps or reference not in self.rps:
                continue
            base = self.rps[reference]
            table[name] = {
                view: [mine / theirs for mine, theirs in zip(values, base[view], strict=True)]
                for view, values in self.rps[name].items()
            }
        return table

    def medians(self, table: PerRound) -> dict[str, dict[str, float]]:
        """Return the median of every per-round list in ``table``."""
        return {
            name: {view: statistics.median(values) for view, values in views.items()}
            for name, views in table.items()
        }

    def spreads(self, table: PerRound) -> dict[str, dict[str, Spread]]:
        """Return the :class:`Spread` of every per-round list in ``table``."""
        return {
            name: {view: Spread.of(values) for view, values in views.items()}
            for name, views in table.items()
        }

    def to_json(self) -> dict[str, t.Any]:
        """Return all numbers, per round and summed up, ready for :func:`json.dump`.

        ``vs_floor`` and ``vs_flask_session`` are there for the contenders
        that name a floor or a Flask-Session contender that ran."""
        tables = {
            "vs_bare": self.ratios(BARE),
            "vs_cookie": self.ratios(COOKIE),
            "vs_floor": self.paired(self.floors),
            "vs_flask_session": self.paired(self.flask_sessions),
        }
        results: dict[str, t.Any] = {}
        for name in self.rps:
            results[name] = {}
            for view in VIEWS:
                numbers: dict[str, t.Any] = {
                    "requests": self.requests.get(name, {}).get(view, 0),
                    "rps": self.rps[name][view],
                    "median_rps": statistics.median(self.rps[name][view]),
                }
                for key, table in tables.items():
                    if name in table:
                        values = table[name][view]
                        numbers[key] = values
                        numbers[f"median_{key}"] = statistics.median(values)
                        numbers[f"spread_{key}"] = Spread.of(values).to_json()
                results[name][view] = numbers
        return {
            "rounds": self.rounds,
            "seconds_per_view": self.seconds,
            "python": sys.version,
            "platform": platform.platform(),
            "skipped": self.skipped,
            "views": list(VIEWS),
            "floors": self.floors,
            "flask_session": self.flask_sessions,
            "results": results,
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


#: Seconds per contender and view between two switches of contender.
SLICE_SECONDS = 0.02


def time_view(name: str, client: FlaskClient, view: str, seconds: float) -> tuple[int, float]:
    """Request ``view`` through ``client`` until ``seconds`` have passed;
    return how many requests were sent and the seconds they took."""
    path = f"/{view}"
    get = client.get
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    count = 0
    while True:
        status = get(path).status_code
        count += 1
        if status != 200:
            _check(name, path, status)
        now = clock()
        if now >= end:
            return count, now - start


def run(
    contenders: t.Sequence[Contender],
    *,
    rounds: int,
    seconds: float,
    log: t.Callable[[str], None] = print,
) -> Results:
    """Benchmark ``contenders`` and return what was measured.

    Each contender is given the same time on each view in each round, so a
    slow one does not lengthen the run: its rate is measured over fewer
    requests. A contender that cannot run here is skipped, and ``log`` says
    why. The two references (bare Flask and Flask's cookie session) must be
    among ``contenders``.

    :param seconds: the time each contender spends on each view per round,
        in slices of :data:`SLICE_SECONDS` (one if it is shorter).
    """
    results = Results(rounds=rounds, seconds=seconds)
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
        for contender in contenders:
            if contender.name in names and contender.floor is not None:
                results.floors[contender.name] = contender.floor
            if contender.name in names and contender.flask_session is not None:
                results.flask_sessions[contender.name] = contender.flask_session

        slices = max(1, round(seconds / SLICE_SECONDS))
        for ready in prepared:
            for view in VIEWS:
                time_view(ready.name, ready.clients[view], view, seconds / slices)

        results.rps = {p.name: {view: [] for view in VIEWS} for p in prepared}
        results.requests = {p.name: dict.fromkeys(VIEWS, 0) for p in prepared}
        turn = 0
        for number in range(rounds):
            started = time.perf_counter()
            for view in VIEWS:
                counts = dict.fromkeys(names, 0)
                spent = dict.fromkeys(names, 0.0)
                for _ in range(slices):
                    gc.collect()
                    shift = turn % len(prepared)
                    turn += 1
                    for ready in prepared[shift:] + prepared[:shift]:
                        client = ready.clients[view]
                        count, elapsed = time_view(ready.name, client, view, seconds / slices)
                        counts[ready.name] += count
                        spent[ready.name] += elapsed
                for name in names:
                    results.rps[name][view].append(counts[name] / spent[name])
                    results.requests[name][view] += counts[name]
            log(f"round {number + 1}/{rounds} took {time.perf_counter() - started:.1f} s")
    return results


def markdown_table(
    values: t.Mapping[str, t.Mapping[str, float | Spread]],
    *,
    number_format: str = "{:.2f}",
    labels: t.Mapping[str, str] | None = None,
) -> str:
    """Return a markdown table with a row per contender and a column per view.

    A :class:`Spread` is shown as its median and, in brackets, its
    interquartile range.

    :param labels: the row titles, by contender name, where not the name.
    """
    lines = [
        "| contender | " + " | ".join(VIEWS) + " |",
        "| --- | " + " | ".join("---:" for _ in VIEWS) + " |",
    ]
    for name, views in values.items():
        cells = []
        for view in VIEWS:
            value = views[view]
            if isinstance(value, Spread):
                cells.append(
                    number_format.format(value.median)
                    + " ["
                    + number_format.format(value.q1)
                    + "–"
                    + number_format.format(value.q3)
                    + "]"
                )
            else:
                cells.append(number_format.format(value))
        title = name if labels is None else labels.get(name, name)
        lines.append(f"| {title} | {' | '.join(cells)} |")
    return "\n".join(lines)


def report(results: Results) -> str:
    """Return the markdown report: medians of requests per second, and of
    the per-round ratios to bare Flask, to Flask's cookie session, to each
    store's floor and to Flask-Session on the same backend, each with the
    interquartile range of the rounds."""
    rounds = f"{results.rounds} rounds of {results.seconds:g} s per view"
    spread = f"median [interquartile range] of {rounds}"
    parts = [
        f"Requests per second (median of {rounds}):",
        markdown_table(results.medians(results.rps), number_format="{:,.0f}"),
        f"Speed relative to bare Flask, higher is faster, 0.50 = half as fast ({spread}):",
        markdown_table(results.spreads(results.ratios(BARE))),
        f"Speed relative to Flask's cookie session ({spread}):",
        markdown_table(results.spreads(results.ratios(COOKIE))),
    ]
    vs_floor = results.paired(results.floors)
    if vs_floor:
        parts += [
            "Speed relative to the floor on the same backend, the least a server-side"
            f" session can do there ({spread}):",
            markdown_table(
                results.spreads(vs_floor),
                labels={name: f"{name} / {results.floors[name]}" for name in vs_floor},
            ),
        ]
    vs_flask_session = results.paired(results.flask_sessions)
    if vs_flask_session:
        parts += [
            f"Speed relative to Flask-Session on the same backend ({spread}):",
            markdown_table(
                results.spreads(vs_flask_session),
                labels={
                    name: f"{name} / {results.flask_sessions[name]}" for name in vs_flask_session
                },
            ),
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
