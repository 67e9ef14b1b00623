"""``python -m benchmarks.load``: sessions under a real server and real load.

Two parts, each under a gunicorn with several worker processes on a free
loopback port, with client threads in this process:

The checks. For each store, gunicorn serves ``example_app:create_app()``,
its sessions configured by a temp TOML file named in
``PRANCER_SESSION_CONFIG``. Client threads, each a visitor with its own
cookie, then browse it for a bounded time (and at most a bounded number of
requests), with a mix of

* new visitors (dropping their cookie) and counter page loads (``/``);
* logins (``GET /login`` for the CSRF token, ``POST /login``, which stores a
  username and regenerates the session id);
* logouts (``POST /logout``) by logged-in visitors;
* views of ``/session``, which lists what the session holds.

Besides throughput and latency it checks what must never happen, whatever
worker serves a request:

``non-2xx/3xx``
    any answer outside 200-399, or a request that failed outright;
``lost updates``
    the count a page shows differs from the visitor's own counter page loads
    since its session began (logins keep the count, logouts restart it);
``alive after logout``
    replaying the cookie a visitor had before logging out shows a session
    that still holds data, instead of a fresh empty one;
``alive after login``
    the same for the cookie a visitor had before the login regenerated its id.

The example app renders HTML only, so the harness reads the count, the CSRF
token and the session's contents out of the pages.

The comparison. The contenders of ``python -m benchmarks`` (by default this
extension's Redis and PostgreSQL stores, their floors, Flask-Session's Redis
backend and bare Flask) each get a gunicorn serving their ``/counter`` and
``/read`` views (:mod:`.serve`), all started at once. The load then visits
them in turns, in rounds, each round giving every contender a burst of
requests in a rotated order, so that a drift of the machine falls on all of
them alike. Each visitor keeps its session for the whole run and sends
counter and read requests half and half, checking that each shows its own
count. The report gives throughput (the median of the rounds, with their
range), the median and 99th percentile latency of all requests, and the
throughput relative to the floor and to Flask-Session on the same backend
(medians and interquartile ranges of per-round ratios).

.. code-block:: text

    python -m benchmarks.load                          # every reachable store, 10 s each
    python -m benchmarks.load --store redis --clients 32 --duration 30
    python -m benchmarks.load --store none --compare prancer-redis,floor-redis --rounds 9

It exits with status 1 if any check failed, or a comparison request failed
or showed a wrong count. The ``memory`` store is not offered: each worker
process would have its own sessions.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http.client
import http.cookies
import json
import os
import random
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import typing as t
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path

from . import contenders
from . import serve
from . import stores
from .runner import Spread

#: The stores a load run can use: every one shared by worker processes.
LOAD_STORES = ("storable", "sqlite", "postgresql", "mariadb", "redis")

#: The contenders the comparison runs by default.
COMPARE = (
    contenders.BARE,
    "prancer-redis",
    "floor-redis",
    contenders.FS_REDIS,
    "prancer-postgresql",
    "floor-postgresql",
)
#: Contenders that keep sessions in each process, which gunicorn's workers
#: would not share.
PER_PROCESS = frozenset({"prancer-memory", "prancer-memory-encrypted", "floor-memory"})

ROOT = Path(__file__).resolve().parent.parent
COOKIE_NAME = "PSESSION"

_COUNT = re.compile(r'<strong id="count">(\d+)</strong>')
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_SESSION_COUNT = re.compile(r"<td><code>count</code></td><td><code>(\d+)</code></td>")
_EMPTY_SESSION = "The session is empty."


@dataclass
class Tally:
    """What one visitor saw; the run adds them all up."""

    requests: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    #: Answers outside 200-399 and failed requests, as readable lines.
    failures: list[str] = field(default_factory=list)
    #: Checks of a count, of an old cookie after logout and after login.
    checked: Counter[str] = field(default_factory=Counter)
    lost_updates: list[str] = field(default_factory=list)
    alive_after_logout: list[str] = field(default_factory=list)
    alive_after_login: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.requests.update(other.requests)
        self.latencies += other.latencies
        self.failures += other.failures
        self.checked.update(other.checked)
        self.lost_updates += other.lost_updates
        self.alive_after_logout += other.alive_after_logout
        self.alive_after_login += other.alive_after_login


@dataclass
class LoadResult:
    """The outcome of a load run on one store."""

    store: str
    workers: int
    clients: int
    seconds: float
    tally: Tally

    @property
    def total(self) -> int:
        return sum(self.tally.requests.values())

    @property
    def ok(self) -> bool:
        """Tell whether every check passed."""
        tally = self.tally
        return not (
            tally.failures
            or tally.lost_updates
            or tally.alive_after_logout
            or tally.alive_after_login
        )

    def percentile_ms(self, percent: int) -> float:
        latencies = self.tally.latencies
        if len(latencies) < 2:
            return 1000 * latencies[0] if latencies else float("nan")
        return 1000 * statistics.quantiles(latencies, n=100)[percent - 1]

    def to_json(self) -> dict[str, t.Any]:
        tally = self.tally
        return {
            "store": self.store,
            "workers": self.workers,
            "clients": self.clients,
            "seconds": self.seconds,
            "requests": self.total,
            "requests_by_kind": dict(tally.requests),
            "throughput": self.total / self.seconds,
            "p50_ms": self.percentile_ms(50),
            "p99_ms": self.percentile_ms(99),
            "checked": dict(tally.checked),
            "failures": tally.failures,
            "lost_updates": tally.lost_updates,
            "alive_after_logout": tally.alive_after_logout,
            "alive_after_login": tally.alive_after_login,
        }


class Budget:
    """The run's limits, shared by the visitors: a deadline and a request count."""

    def __init__(self, seconds: float, requests: int) -> None:
        self.deadline = time.monotonic() + seconds
        self._left = requests
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Claim one request; ``False`` once time or requests have run out."""
        if time.monotonic() >= self.deadline:
            return False
        with self._lock:
            if self._left <= 0:
                return False
            self._left -= 1
            return True


class OutOfBudget(Exception):
    """The run is over."""


class Visitor:
    """One browser: a cookie, a counter of its own page loads, a login state."""

    def __init__(self, number: int, port: int, budget: Budget, seed: int) -> None:
        self.name = f"visitor{number}"
        self.port = port
        self.budget = budget
        self.random = random.Random(seed)
        self.tally = Tally()
        self.new_session()

    def new_session(self) -> None:
        """Forget the cookie, as a new visitor would."""
        self.cookie: str | None = None
        #: Counter page loads since the session began; ``None`` after a failed
        #: request, when it is unknown whether the server counted it.
        self.expected: int | None = 0
        self.csrf: str | None = None
        self.logged_in = False

    def run(self) -> None:
        try:
            while True:
                self.step()
        except OutOfBudget:
            pass

    def step(self) -> None:
        roll = self.random.random()
        if roll < 0.05:
            self.new_session()
            self.counter()
        elif roll < 0.15 and not self.logged_in:
            self.login()
        elif roll < 0.25 and self.logged_in:
            self.logout()
        elif roll < 0.35:
            self.show_session()
        else:
            self.counter()

    def request(
        self,
        kind: str,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        *,
        cookie: str | None = None,
        keep_cookie: bool = True,
    ) -> tuple[int, str] | None:
        """Send one request with this visitor's cookie (or ``cookie``); return
        the status and body, or ``None`` if it failed (and was recorded).

        :param keep_cookie: take the cookie the response sets as this
            visitor's own; false when replaying an old cookie.
        """
        if not self.budget.take():
            raise OutOfBudget
        headers = {}
        sent = cookie if cookie is not None else self.cookie
        if sent is not None:
            headers["Cookie"] = f"{COOKIE_NAME}={sent}"
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.tally.requests[kind] += 1
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        start = time.perf_counter()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode("utf-8", "replace")
            set_cookies = response.headers.get_all("Set-Cookie") or []
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            self.tally.failures.append(f"{kind}: {method} {path} failed: {error!r}")
            return None
        finally:
            connection.close()
        self.tally.latencies.append(time.perf_counter() - start)
        if not 200 <= status < 400:
            excerpt = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", text)).split())[:200]
            self.tally.failures.append(f"{kind}: {method} {path} answered {status}: {excerpt}")
            return None
        if keep_cookie:
            for header in set_cookies:
                self.take_cookie(header)
        return status, text

    def take_cookie(self, header: str) -> None:
        jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
        jar.load(header)
        morsel = jar.get(COOKIE_NAME)
        if morsel is None:
            return
        if not morsel.value or morsel["max-age"] == "0":
            self.cookie = None
        else:
            self.cookie = morsel.value

    def failed(self) -> None:
        """After a failed request, stop checking the count until the next page shows it."""
        self.expected = None

    def check_count(self, kind: str, shown: int) -> None:
        self.tally.checked["count"] += 1
        if self.expected is not None and shown != self.expected:
            self.tally.lost_updates.append(
                f"{self.name} {kind}: the page shows {shown}, expected {self.expected}"
            )
        self.expected = shown

    def counter(self) -> None:
        answer = self.request("counter", "GET", "/")
        if answer is None:
            return self.failed()
        if self.expected is not None:
            self.expected += 1
        match = _COUNT.search(answer[1])
        if match is None:
            self.tally.failures.append(f"{self.name} counter: no count in the page")
            return self.failed()
        self.check_count("counter", int(match.group(1)))

    def show_session(self) -> None:
        answer = self.request("session", "GET", "/session")
        if answer is None:
            return self.failed()
        match = _SESSION_COUNT.search(answer[1])
        self.check_count("session", int(match.group(1)) if match else 0)

    def login(self) -> None:
        answer = self.request("login-form", "GET", "/login")
        if answer is None:
            return self.failed()
        match = _CSRF.search(answer[1])
        if match is None:
            self.tally.failures.append(f"{self.name} login-form: no CSRF token in the page")
            return
        self.csrf = html.unescape(match.group(1))
        before = self.cookie
        form = {"csrf_token": self.csrf, "username": self.name}
        if self.request("login", "POST", "/login", form) is None:
            return self.failed()
        self.logged_in = True
        if before is None:
            return
        if self.cookie == before:
            self.tally.failures.append(f"{self.name} login: the session id was not changed")
        elif self.replay_shows_data("replay-login", before):
            self.tally.alive_after_login.append(
                f"{self.name}: the cookie from before login still opens its session"
            )

    def logout(self) -> None:
        assert self.csrf is not None
        before = self.cookie
        if self.request("logout", "POST", "/logout", {"csrf_token": self.csrf}) is None:
            return self.failed()
        self.logged_in = False
        self.csrf = None
        self.expected = 0
        if before is not None and self.replay_shows_data("replay-logout", before):
            self.tally.alive_after_logout.append(
                f"{self.name}: the cookie from before logout still opens its session"
            )

    def replay_shows_data(self, kind: str, cookie: str) -> bool:
        """Tell whether an old cookie still opens a session that holds data."""
        answer = self.request(kind, "GET", "/session", cookie=cookie, keep_cookie=False)
        if answer is None:
            return False
        self.tally.checked[kind] += 1
        return _EMPTY_SESSION not in answer[1]


def free_port() -> int:
    """Return a loopback port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_session_config(store: stores.StoreConfig, directory: Path) -> Path:
    """Write ``PRANCER_SESSION`` for the example app; return the file's path.

    TOML where Python reads it (3.11), else JSON, which is also YAML.
    """
    config = {
        "state": {"driver": "cookie", "options": {"session_key": COOKIE_NAME}},
        "store": store,
    }
    if sys.version_info < (3, 11):
        path = directory / "prancer_session.yml"
        path.write_text(json.dumps({"PRANCER_SESSION": config}), encoding="utf-8")
        return path
    lines = []
    for section, value in config.items():
        lines += [f"[PRANCER_SESSION.{section}]", f"driver = {json.dumps(value['driver'])}"]
        lines.append(f"[PRANCER_SESSION.{section}.options]")
        for key, option in value["options"].items():
            # A JSON string or number is a valid TOML one; booleans are spelled alike.
            lines.append(f"{key} = {json.dumps(option)}")
    path = directory / "prancer_session.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextlib.contextmanager
def gunicorn(
    app: str,
    environment: t.Mapping[str, str],
    directory: Path,
    workers: int,
    *,
    ready_path: str = "/session",
) -> t.Iterator[int]:
    """Serve ``app`` (a gunicorn app spec run from the checkout's root) with
    ``workers`` gunicorn workers and ``environment`` added to this process's;
    yield its port once ``ready_path`` answers 200.

    Stops the server (and every worker) when the context ends.
    """
    stores.require_module("gunicorn", "gunicorn")
    port = free_port()
    log_path = directory / "gunicorn.log"
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "--workers",
        str(workers),
        "--bind",
        f"127.0.0.1:{port}",
        "--chdir",
        str(ROOT),
        "--timeout",
        "60",
        "--log-level",
        "warning",
        app,
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**os.environ, **environment},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_serving(process, port, log_path, ready_path)
        yield port
    finally:
        _stop(process)


@contextlib.contextmanager
def example_app(config: Path, directory: Path, workers: int) -> t.Iterator[int]:
    """Serve the example app with its sessions configured by ``config``; yield its port."""
    instance = directory / "instance"
    environment = {
        "PRANCER_SESSION_CONFIG": str(config),
        "EXAMPLE_SECRET_KEY": secrets.token_urlsafe(32),
    }
    spec = f"example_app:create_app(instance_path={str(instance)!r})"
    with gunicorn(spec, environment, directory, workers) as port:
        yield port


def _wait_until_serving(
    process: subprocess.Popen[bytes], port: int, log_path: Path, path: str
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.1)
    log = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
    raise RuntimeError(f"gunicorn did not start serving on port {port}:\n{log}")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn gracefully, or kill its process group after 15 seconds."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_load(
    store: str,
    *,
    workers: int = 4,
    clients: int = 16,
    seconds: float = 10.0,
    max_requests: int = 100_000,
    seed: int = 0,
) -> LoadResult:
    """Run the load on one store and return what was seen.

    :raise stores.Unavailable: if the store or gunicorn cannot run here.
    """
    with contextlib.ExitStack() as stack:
        directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prancer-load-")))
        config = stack.enter_context(stores.STORES[store](directory))
        port = stack.enter_context(
            example_app(write_session_config(config, directory), directory, workers)
        )
        budget = Budget(seconds, max_requests)
        visitors = [Visitor(n, port, budget, seed * 1000 + n) for n in range(clients)]
        threads = [threading.Thread(target=v.run, name=v.name, daemon=True) for v in visitors]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            # The budget stops every visitor at the deadline; the request
            # timeout bounds the one in flight.
            thread.join(seconds + 60)
        elapsed = time.perf_counter() - started
        tally = Tally()
        for visitor in visitors:
            tally.add(visitor.tally)
        if any(thread.is_alive() for thread in threads):
            tally.failures.append("a visitor was still waiting for an answer after the run")
    return LoadResult(store, workers, clients, elapsed, tally)


class Caller:
    """A visitor of the comparison: a cookie jar, and the count its session
    should show."""

    def __init__(self, port: int, seed: int, *, checked: bool) -> None:
        self.port = port
        self.random = random.Random(seed)
        #: Whether the views keep a count (all but bare Flask's do).
        self.checked = checked
        self.cookies: dict[str, str] = {}
        self.expected: int | None = 0

    def burst(self, budget: Budget, tally: Burst) -> None:
        """Send requests until ``budget`` runs out, adding up what was seen in ``tally``."""
        while budget.take():
            view = "counter" if self.expected == 0 or self.random.random() < 0.5 else "read"
            self.request(view, tally)

    def request(self, view: str, tally: Burst) -> None:
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        start = time.perf_counter()
        try:
            connection.request("GET", f"/{view}", headers=headers)
            response = connection.getresponse()
            body = response.read().decode("utf-8", "replace")
            set_cookies = response.headers.get_all("Set-Cookie") or []
            status = response.status
        except (OSError, http.client.HTTPException) as error:
            tally.add_failure(f"GET /{view} failed: {error!r}")
            self.expected = None
            return
        finally:
            connection.close()
        tally.add_latency(time.perf_counter() - start)
        if status != 200:
            tally.add_failure(f"GET /{view} answered {status}: {body[:200]}")
            self.expected = None
            return
        for header in set_cookies:
            jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                if not morsel.value or morsel["max-age"] == "0":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        if not self.checked:
            return
        if view == "counter" and self.expected is not None:
            self.expected += 1
        try:
            shown = int(body)
        except ValueError:
            tally.add_failure(f"GET /{view} showed {body[:50]!r}, not a count")
            self.expected = None
            return
        if self.expected is not None and shown != self.expected:
            tally.add_lost(f"GET /{view} showed {shown}, expected {self.expected}")
        self.expected = shown


class Burst:
    """What the callers of one burst saw, added up under a lock."""

    def __init__(self) -> None:
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.lost_updates: list[str] = []
        self._lock = threading.Lock()

    def add_latency(self, seconds: float) -> None:
        with self._lock:
            self.latencies.append(seconds)

    def add_failure(self, line: str) -> None:
        with self._lock:
            self.failures.append(line)

    def add_lost(self, line: str) -> None:
        with self._lock:
            self.lost_updates.append(line)


@dataclass
class Compared:
    """What the comparison measured for one contender."""

    name: str
    floor: str | None
    flask_session: str | None
    #: Requests per second, one per round.
    throughput: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    lost_updates: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.failures or self.lost_updates)

    def percentile_ms(self, percent: int) -> float:
        latencies = self.latencies
        if len(latencies) < 2:
            return 1000 * latencies[0] if latencies else float("nan")
        return 1000 * statistics.quantiles(latencies, n=100)[percent - 1]


@dataclass
class Comparison:
    """The outcome of a comparison run."""

    workers: int
    clients: int
    rounds: int
    #: Seconds of each contender's burst in each round.
    seconds: float
    contenders: dict[str, Compared] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def ratios(self, name: str, reference: str | None) -> list[float] | None:
        """Return the per-round throughput of ``name`` over that of
        ``reference``, or ``None`` if either did not run."""
        if reference is None or reference not in self.contenders:
            return None
        mine, theirs = self.contenders[name].throughput, self.contenders[reference].throughput
        return [a / b for a, b in zip(mine, theirs, strict=True) if b > 0]

    @property
    def ok(self) -> bool:
        return all(compared.ok for compared in self.contenders.values())

    def to_json(self) -> dict[str, t.Any]:
        results = {}
        for name, compared in self.contenders.items():
            numbers: dict[str, t.Any] = {
                "floor": compared.floor,
                "flask_session": compared.flask_session,
                "throughput": compared.throughput,
                "requests": len(compared.latencies),
                "p50_ms": compared.percentile_ms(50),
                "p99_ms": compared.percentile_ms(99),
                "failures": compared.failures,
                "lost_updates": compared.lost_updates,
            }
            if compared.throughput:
                numbers["spread_throughput"] = Spread.of(compared.throughput).to_json()
            for key, reference in (
                ("vs_floor", compared.floor),
                ("vs_flask_session", compared.flask_session),
            ):
                ratios = self.ratios(name, reference)
                if ratios:
                    numbers[key] = ratios
                    numbers[f"spread_{key}"] = Spread.of(ratios).to_json()
            results[name] = numbers
        return {
            "workers": self.workers,
            "clients": self.clients,
            "rounds": self.rounds,
            "seconds_per_round": self.seconds,
            "skipped": self.skipped,
            "contenders": results,
        }


def compare(
    names: t.Sequence[str],
    *,
    workers: int = 4,
    clients: int = 16,
    rounds: int = 5,
    seconds: float = 10.0,
    max_requests: int = 100_000,
    seed: int = 0,
    log: t.Callable[[str], None] = print,
) -> Comparison:
    """Serve each contender in ``names`` with gunicorn, all at once, and load
    them in turns: ``rounds`` bursts of ``seconds / rounds`` each, after a
    warm-up burst. A contender that cannot run here is skipped, and ``log``
    says why.

    :param max_requests: the most requests one burst may send.
    """
    burst_seconds = seconds / rounds
    result = Comparison(workers, clients, rounds, burst_seconds)
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="prancer-compare-")))
        served: list[tuple[str, list[Caller]]] = []
        for number, name in enumerate(names):
            contender = contenders.BY_NAME[name]
            directory = root / name
            directory.mkdir()
            own = stack.enter_context(contextlib.ExitStack())
            try:
                settings = own.enter_context(contender.backend(directory))
                # Opened once here first, so that a table it creates exists
                # before the workers start together.
                with contender.app(settings):
                    pass
                port = own.enter_context(
                    gunicorn(
                        "benchmarks.serve:create_app()",
                        serve.environment(name, settings),
                        directory,
                        workers,
                        ready_path="/anonymous",
                    )
                )
            except stores.Unavailable as reason:
                own.close()
                result.skipped[name] = str(reason)
                log(f"skipped {name}: {reason}")
                continue
            checked = name != contenders.BARE
            callers = [
                Caller(port, seed * 100_000 + number * 1000 + n, checked=checked)
                for n in range(clients)
            ]
            served.append((name, callers))
            result.contenders[name] = Compared(name, contender.floor, contender.flask_session)
        for _, callers in served:
            _burst(callers, min(1.0, burst_seconds), max_requests)
        for number in range(rounds):
            shift = number % len(served) if served else 0
            for name, callers in served[shift:] + served[:shift]:
                burst = _burst(callers, burst_seconds, max_requests)
                compared = result.contenders[name]
                compared.throughput.append(len(burst.latencies) / burst_seconds)
                compared.latencies += burst.latencies
                compared.failures += burst.failures
                compared.lost_updates += burst.lost_updates
            log(f"comparison round {number + 1}/{rounds} done")
    return result


def _burst(callers: list[Caller], seconds: float, max_requests: int) -> Burst:
    """Have ``callers`` send requests at once for ``seconds``; return what they saw."""
    budget = Budget(seconds, max_requests)
    burst = Burst()
    threads = [threading.Thread(target=c.burst, args=(budget, burst), daemon=True) for c in callers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + 60)
    if any(thread.is_alive() for thread in threads):
        burst.add_failure("a visitor was still waiting for an answer after the burst")
    return burst


def comparison_report(comparison: Comparison) -> str:
    """Return a markdown table of ``comparison``, then every problem seen."""

    def ratio(name: str, reference: str | None) -> str:
        ratios = comparison.ratios(name, reference)
        if not ratios:
            return "–"
        spread = Spread.of(ratios)
        return f"{spread.median:.2f} [{spread.q1:.2f}–{spread.q3:.2f}]"

    lines = [
        f"Under gunicorn, {comparison.workers} workers, {comparison.clients} concurrent"
        f" visitors, counter and read views half and half; {comparison.rounds} rounds of"
        f" {comparison.seconds:g} s per contender (throughput: median [range] of rounds;"
        " ratios: median [interquartile range] of per-round ratios):",
        "",
        "| contender | req/s | p50 ms | p99 ms | vs floor | vs Flask-Session"
        " | failed | wrong count |",
        "| --- |" + " ---: |" * 7,
    ]
    for name, compared in comparison.contenders.items():
        throughput = "–"
        if compared.throughput:
            spread = Spread.of(compared.throughput)
            throughput = f"{spread.median:,.0f} [{spread.low:,.0f}–{spread.high:,.0f}]"
        lines.append(
            f"| {name} | {throughput} | {compared.percentile_ms(50):.1f}"
            f" | {compared.percentile_ms(99):.1f} | {ratio(name, compared.floor)}"
            f" | {ratio(name, compared.flask_session)} | {len(compared.failures)}"
            f" | {len(compared.lost_updates)} |"
        )
    for name, compared in comparison.contenders.items():
        problems = compared.failures + compared.lost_updates
        if problems:
            lines += ["", f"{name}:"]
            lines += [f"  - {problem}" for problem in problems[:20]]
            if len(problems) > 20:
                lines.append(f"  - ... and {len(problems) - 20} more")
    for name, reason in comparison.skipped.items():
        lines += ["", f"skipped {name}: {reason}"]
    return "\n".join(lines)


def report(results: t.Sequence[LoadResult]) -> str:
    """Return a markdown table of ``results``, then every problem seen."""
    lines = [
        "| store | workers | clients | s | requests | req/s | p50 ms | p99 ms"
        " | non-2xx/3xx | lost updates | alive after logout | alive after login |",
        "| --- |" + " ---: |" * 11,
    ]
    for r in results:
        tally = r.tally
        lines.append(
            f"| {r.store} | {r.workers} | {r.clients} | {r.seconds:.1f} | {r.total:,}"
            f" | {r.total / r.seconds:,.0f} | {r.percentile_ms(50):.1f} | {r.percentile_ms(99):.1f}"
            f" | {len(tally.failures)} | {len(tally.lost_updates)}"
            f" | {len(tally.alive_after_logout)} | {len(tally.alive_after_login)} |"
        )
    for r in results:
        tally = r.tally
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(tally.requests.items()))
        checked = ", ".join(f"{kind} {count}" for kind, count in sorted(tally.checked.items()))
        lines += ["", f"{r.store}: requests: {kinds}; checks: {checked}"]
        problems = (
            tally.failures + tally.lost_updates + tally.alive_after_logout + tally.alive_after_login
        )
        for problem in problems[:20]:
            lines.append(f"  - {problem}")
        if len(problems) > 20:
            lines.append(f"  - ... and {len(problems) - 20} more")
    return "\n".join(lines)


def _names(
    value: str, known: t.Collection[str], what: str, parser: argparse.ArgumentParser
) -> list[str]:
    if value.strip() == "none":
        return []
    names = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown {what} {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def main(argv: t.Sequence[str] | None = None) -> int:
    comparable = [c.name for c in contenders.CONTENDERS if c.name not in PER_PROCESS]
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.load",
        description="Load the example app under gunicorn and check that no session goes wrong;"
        " then compare session back-ends under the same load.",
    )
    parser.add_argument(
        "--store",
        metavar="STORE[,STORE]",
        default=",".join(LOAD_STORES),
        help=f"stores to check, of {', '.join(LOAD_STORES)}, or none"
        " (default: all that are reachable)",
    )
    parser.add_argument(
        "--compare",
        metavar="NAME[,NAME]",
        default=",".join(COMPARE),
        help=f"contenders to compare, or none (default: {','.join(COMPARE)});"
        f" choose from {', '.join(comparable)}",
    )
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent visitors (default 16)")
    parser.add_argument(
        "--duration",
        type=float,
        default=10.0,
        help="seconds of load per store, and per contender compared (default 10)",
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="rounds the comparison's load is split in (default 5)"
    )
    parser.add_argument(
        "--max-requests",
        type=int,
        default=100_000,
        help="stop a store's checks, or a comparison burst, after this many (default 100000)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the visitors' choices")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH")
    args = parser.parse_args(argv)
    names = _names(args.store, LOAD_STORES, "store", parser)
    compared = _names(args.compare, comparable, "contender", parser)
    if args.rounds < 1 or args.workers < 1 or args.clients < 1 or not args.duration > 0:
        parser.error("--rounds, --workers, --clients and --duration must be positive")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    results = []
    skipped = {}
    for name in names:
        try:
            results.append(
                run_load(
                    name,
                    workers=args.workers,
                    clients=args.clients,
                    seconds=args.duration,
                    max_requests=args.max_requests,
                    seed=args.seed,
                )
            )
        except stores.Unavailable as reason:
            skipped[name] = str(reason)
            log(f"skipped {name}: {reason}")
    comparison = None
    if compared:
        comparison = compare(
            compared,
            workers=args.workers,
            clients=args.clients,
            rounds=args.rounds,
            seconds=args.duration,
            max_requests=args.max_requests,
            seed=args.seed,
            log=log,
        )
    if names:
        print(report(results))
    if comparison is not None:
        print(("\n" if names else "") + comparison_report(comparison))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as file:
            data: dict[str, t.Any] = {
                "skipped": skipped,
                "results": [r.to_json() for r in results],
            }
            if comparison is not None:
                data["comparison"] = comparison.to_json()
            json.dump(data, file, indent=2)
            file.write("\n")
    ok = all(r.ok for r in results) and (comparison is None or comparison.ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
