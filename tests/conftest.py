from __future__ import annotations

import typing as t
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from flask_prancer_session.store.base import StoreDriver

from .clock import FakeClock
from .stores import STORE_FACTORIES
from .stores import StoreMaker


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=list(STORE_FACTORIES))
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> t.Iterator[StoreMaker]:
    """Makes instances of each store driver we ship over one empty backend,
    on the fake :func:`clock`."""
    made: list[StoreDriver] = []
    with STORE_FACTORIES[request.param](tmp_path) as make:

        def make_on_clock() -> StoreDriver:
            instance = make()
            instance.clock = clock
            made.append(instance)
            return instance

        yield make_on_clock
        # A background purge must not outlive the backend it purges.
        for instance in made:
            if instance.purge_thread is not None:
                instance.purge_thread.join()


@pytest.fixture
def store(make_store: StoreMaker) -> StoreDriver:
    """Each store driver we ship, empty, on the fake :func:`clock`."""
    return make_store()


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test secret")
    return app


@pytest.fixture
def store_app(app: Flask, store: StoreDriver) -> Flask:
    """:func:`app` with sessions in each shipped :func:`store`."""
    from flask_prancer_session import PrancerSession

    PrancerSession(app, store=store)
    return app


@pytest.fixture
def client(store_app: Flask) -> FlaskClient:
    return store_app.test_client()
