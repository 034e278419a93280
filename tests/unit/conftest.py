"""Fixtures of the unit tests: a fake clock and engines that are closed afterwards."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import fluxo

from .helpers import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """An engine clock that only moves when the test advances it."""
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A store URL, once per backend where a test is about persistence semantics."""
    if request.param == "memory":
        return "memory://"
    if importlib.util.find_spec("fluxo.stores.sql") is None:
        pytest.skip("fluxo.stores.sql is not written yet")
    return f"sqlite:///{tmp_path}/f.db"


MakeEngine = Callable[..., fluxo.Engine]


@pytest.fixture
def make_engine(clock: FakeClock) -> Iterator[MakeEngine]:
    """Build engines (in memory unless ``store=`` says otherwise); all closed at teardown."""
    engines: list[fluxo.Engine] = []
    stores: list[fluxo.Store] = []

    def make(
        *workflows: fluxo.Workflow[Any, Any],
        store: str | fluxo.Store = "memory://",
        **options: Any,
    ) -> fluxo.Engine:
        options.setdefault("clock", clock)
        engine = fluxo.Engine(store, workflows=workflows, **options)
        engines.append(engine)
        if not isinstance(store, str):
            stores.append(store)
        return engine

    yield make
    for engine in engines:
        engine.close()
    for store in stores:
        store.close()


@pytest.fixture
def shared_store(store_url: str) -> Iterator[fluxo.Store]:
    """One store object, for tests that put two engines (two code versions) on it."""
    store = fluxo.open_store(store_url)
    yield store
    store.close()
