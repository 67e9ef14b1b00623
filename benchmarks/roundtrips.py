"""``python -m benchmarks.roundtrips``: what one round trip to each server costs.

The floor under every network store: a request that reads its session waits
at least one round trip, and one that writes it at least two. Each server
reachable on loopback is asked the cheapest question it answers, through a
bare socket (Redis's ``PING``, written by hand) and through the drivers the
stores use, with an idle pause before each round trip as inside a request,
where the app works between two of them (a server that had nothing to do
for a while answers later than one asked back to back).

.. code-block:: text

    python -m benchmarks.roundtrips            # 2000 round trips per cell
    python -m benchmarks.roundtrips --quick    # 50, a smoke run
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time
import typing as t
from urllib.parse import urlsplit

from . import stores

#: Idle pauses before each round trip, in microseconds.
PAUSES = (0, 150, 300)

RoundTrip = t.Callable[[], object]


def _spin(microseconds: float) -> None:
    """Keep the CPU busy for a while, as a request does between round trips."""
    end = time.perf_counter() + microseconds / 1e6
    while time.perf_counter() < end:
        pass


def measure(round_trip: RoundTrip, pause: float, count: int) -> tuple[float, float]:
    """Return the mean and median time of ``round_trip`` in microseconds, each
    one after ``pause`` microseconds of work. The mean is what requests per
    second pay: the slow round trips count too."""
    for _ in range(min(count, 100)):
        round_trip()
    times = []
    for _ in range(count):
        _spin(pause)
        started = time.perf_counter()
        round_trip()
        times.append(time.perf_counter() - started)
    return statistics.fmean(times) * 1e6, statistics.median(times) * 1e6


def _redis_socket(url: str) -> RoundTrip:
    parts = urlsplit(url)
    connection = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379))
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def ping() -> None:
        connection.sendall(b"PING\r\n")
        if not connection.recv(64).startswith(b"+PONG"):
            raise RuntimeError("Redis did not answer PONG")

    return ping


def _redis_py(url: str) -> RoundTrip:
    stores.require_module("redis", "flask-prancer-session[redis]")
    import redis

    return redis.Redis.from_url(url).ping


def _dbapi(url: str) -> RoundTrip:
    """``SELECT 1`` on a raw DBAPI connection of the URL's driver."""
    stores.require_module("sqlalchemy", "flask-prancer-session[database]")
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        cursor = engine.raw_connection().cursor()
    except ImportError as error:
        raise stores.Unavailable(f"{url.split(':')[0]}: {error}") from error

    def select() -> None:
        cursor.execute("SELECT 1")
        cursor.fetchall()

    return select


#: Each row: its name, the server it needs (a name and a URL), and how to
#: open its round trip.
ROWS: list[tuple[str, str, str, t.Callable[[str], RoundTrip]]] = [
    ("Redis, bare socket", "Redis", stores.REDIS_URL, _redis_socket),
    ("Redis, redis-py", "Redis", stores.REDIS_URL, _redis_py),
    ("PostgreSQL, psycopg", "PostgreSQL", stores.POSTGRES_URL, _dbapi),
    ("MariaDB, PyMySQL", "MariaDB", stores.MARIADB_URL, _dbapi),
    (
        "MariaDB, mysqlclient",
        "MariaDB",
        stores.MARIADB_URL.replace("+pymysql", "+mysqldb", 1),
        _dbapi,
    ),
]


def run(count: int, log: t.Callable[[str], None]) -> tuple[list[list[str]], list[str]]:
    """Return the table's rows and the reasons rows were skipped."""
    table, skipped = [], []
    for name, server, url, opener in ROWS:
        try:
            stores.require_server(server, url)
            round_trip = opener(url)
        except stores.Unavailable as error:
            skipped.append(f"{name}: {error}")
            continue
        log(f"{name}...")
        cells = [measure(round_trip, pause, count) for pause in PAUSES]
        table.append([name, *(f"{mean:.0f} ({median:.0f})" for mean, median in cells)])
    return table, skipped


def main(argv: t.Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.roundtrips",
        description="Time one round trip to each server on loopback, as the stores make them.",
    )
    parser.add_argument(
        "--count", type=int, default=2000, help="round trips per cell (default 2000)"
    )
    parser.add_argument("--quick", action="store_true", help="50 round trips per cell")
    args = parser.parse_args(argv)
    count = 50 if args.quick else args.count
    if count < 1:
        parser.error("--count must be at least 1")
    table, skipped = run(count, lambda message: print(message, file=sys.stderr, flush=True))
    print(f"Round trip in µs, mean (median) of {count}, after an idle pause of:\n")
    print("| round trip | " + " | ".join(f"{pause} µs" for pause in PAUSES) + " |")
    print("| --- |" + " ---: |" * len(PAUSES))
    for row in table:
        print("| " + " | ".join(row) + " |")
    for reason in skipped:
        print(f"\nskipped {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
