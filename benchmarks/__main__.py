"""``python -m benchmarks``: requests per second of each contender's views.

.. code-block:: text

    python -m benchmarks                       # 15 rounds of 0.2 s per view and contender
    python -m benchmarks --quick               # 2 rounds of 0.02 s, a smoke run
    python -m benchmarks --only prancer-redis,flask-session-redis --json out.json
"""

from __future__ import annotations

import argparse
import sys
import typing as t

from . import contenders
from . import runner


def parse_args(argv: t.Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Compare the request rate of Flask session back-ends, in one process.",
    )
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument(
        "--seconds",
        type=float,
        default=0.2,
        help="seconds per view and contender in each round (default 0.2)",
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds of 0.02 s: checks that it runs"
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these contenders (with flask-bare, flask-cookie, and the floor and"
        " Flask-Session contender on the same backend as each one named); "
        f"choose from: {', '.join(c.name for c in contenders.CONTENDERS)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds = 2, 0.02
    if args.rounds < 1 or not args.seconds > 0:
        parser.error("--rounds must be at least 1 and --seconds above 0")
    try:
        args.contenders = contenders.select(None if args.only is None else args.only.split(","))
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: t.Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = runner.run(
        args.contenders,
        rounds=args.rounds,
        seconds=args.seconds,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(runner.report(results))
    if args.json:
        runner.write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
