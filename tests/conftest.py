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


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "stores(*names): run the test on each of these stores of tests/stores.py"
        " (EVERY_STORE for all); without it, a test that takes a store runs on memory",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Fan a test that takes :func:`make_store` out over the stores its
    ``stores`` marker names, so the fan-out shows where it happens."""
    if "make_store" not in metafunc.fixturenames or hasattr(metafunc.module, "make_store"):
        return  # no store, or the module's own make_store
    for marker in metafunc.definition.iter_markers("parametrize"):
        if "make_store" in str(marker.args[0]):
            return  # parametrized by the test itself
    marker = metafunc.definition.get_closest_marker("stores")
    names = ("memory",) if marker is None else marker.args
    metafunc.parametrize("make_store", names, indirect=True)


@pytest.fixture
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path, clock: FakeClock
) -> t.Iterator[StoreMaker]:
    """Makes instances of one store driver over one empty backend, on the fake
    :func:`clock`: the memory store, or each store the test's ``stores``
    marker names."""
    made: list[StoreDriver] = []
    with STORE_FACTORIES[getattr(request, "param", "memory")](tmp_path) as make:

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
    """A store from :func:`make_store`, empty, on the fake :func:`clock`."""
    return make_store()


@pytest.fixture
def app() -> Flask:
    app = Flask(__name__)
    app.config.update(TESTING=True, SECRET_KEY="test secret")
    return app


@pytest.fixture
def store_app(app: Flask, store: StoreDriver) -> Flask:
    """:func:`app` with sessions in :func:`store`."""
    from flask_prancer_session import PrancerSession

    PrancerSession(app, store=store)
    return app


@pytest.fixture
def client(store_app: Flask) -> FlaskClient:
    return store_app.test_client()
