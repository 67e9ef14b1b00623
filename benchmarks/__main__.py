"""``python -m benchmarks``: requests per second of each contender's views.

.. code-block:: text

    python -m benchmarks                       # 7 rounds x 2000 requests per view
    python -m benchmarks --quick               # 2 rounds x 50, a smoke run
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
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument(
        "--requests", type=int, default=2000, help="requests per view per round (default 2000)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="2 rounds x 50 requests: checks that it runs"
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help="run only these contenders (flask-bare and flask-cookie always run); "
        f"choose from: {', '.join(c.name for c in contenders.CONTENDERS)}",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every number to PATH")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.requests = 2, 50
    if args.rounds < 1 or args.requests < 1:
        parser.error("--rounds and --requests must be at least 1")
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
        requests=args.requests,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    )
    print(runner.report(results))
    if args.json:
        runner.write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
