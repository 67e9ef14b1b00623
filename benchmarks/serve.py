"""The app each gunicorn worker of a load comparison serves.

``python -m benchmarks.load`` makes a contender's backend once, in its own
process, then starts gunicorn on ``benchmarks.serve:create_app()`` with
:data:`CONTENDER_VARIABLE` set to the contender's name and settings as JSON.
Each worker opens the app on that backend, with connections of its own.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import typing as t

from . import contenders

if t.TYPE_CHECKING:
    from flask import Flask

#: The environment variable that names the contender and its settings.
CONTENDER_VARIABLE = "PRANCER_BENCH_CONTENDER"


def environment(name: str, settings: contenders.Settings) -> dict[str, str]:
    """Return the environment that has :func:`create_app` open ``name`` on ``settings``."""
    return {CONTENDER_VARIABLE: json.dumps({"name": name, "settings": settings})}


def create_app() -> Flask:
    """Open the app of the contender :data:`CONTENDER_VARIABLE` names.

    Its connections are closed when the worker exits.
    """
    spec = json.loads(os.environ[CONTENDER_VARIABLE])
    contender = contenders.BY_NAME[spec["name"]]
    stack = contextlib.ExitStack()
    app = stack.enter_context(contender.app(spec["settings"]))
    atexit.register(stack.close)
    return app
