"""The dashboard's runs pages on every store: each run once, newest first, page after page.

Runs are created with a clock that stands still for several runs at a time, so
many share their creation instant, and pages must split such groups without
losing or repeating a run. The pages are read through the dashboard's own code
(``_listing.read_page``), as the runs page reads them.
"""

from __future__ import annotations

from typing import Any

import pytest

import fluxo
from fluxo.ui import _http, _listing
from tests.unit.helpers import FakeClock


@fluxo.workflow(name="listing.job")
def job(n: int) -> int:
    return n


@fluxo.workflow(name="listing.other")
def other(n: int) -> int:
    return n


def _walk(engine: fluxo.Engine, size: int, **query: Any) -> list[list[str]]:
    """Every page of the runs page's listing, following its ``after`` links."""
    pages: list[list[str]] = []
    cursor = ""
    while True:
        args = {k: [v] if isinstance(v, str) else list(v) for k, v in query.items()}
        args["size"] = [str(size)]
        if cursor:
            args["after"] = [cursor]
        request = _http.Request("GET", "/", query=args)
        page = _listing.read_page(engine, _listing.read_filters(request, now=10_000.0))
        pages.append([run.id for run in page.runs])
        if not page.next_cursor:
            return pages
        cursor = page.next_cursor
        assert len(pages) < 100, "the pages never end"


@pytest.fixture
def engine(store: fluxo.Store) -> fluxo.Engine:
    clock = FakeClock(1_000.0)
    engine = fluxo.Engine(store, workflows=[job, other], clock=clock)
    for i in range(90):
        if i % 7 == 0:  # seven runs share each instant
            clock.advance(1.5)
        workflow = other if i % 3 == 0 else job
        engine.start(workflow.options(id=f"run-{i:03d}"), i)
    return engine


def test_pages_list_each_run_once_newest_first(engine: fluxo.Engine) -> None:
    pages = _walk(engine, 25)
    assert [len(page) for page in pages] == [25, 25, 25, 15]
    seen = [run_id for page in pages for run_id in page]
    assert sorted(seen) == [f"run-{i:03d}" for i in range(90)]
    created = [engine.get_run(run_id).created_at for run_id in seen]
    assert created == sorted(created, reverse=True)


def test_filtered_pages_split_shared_instants_too(engine: fluxo.Engine) -> None:
    pages = _walk(engine, 25, workflow="listing.job", status="pending")
    seen = [run_id for page in pages for run_id in page]
    assert sorted(seen) == [f"run-{i:03d}" for i in range(90) if i % 3 != 0]
    by_prefix = [run_id for page in _walk(engine, 25, id="run-08") for run_id in page]
    assert sorted(by_prefix) == [f"run-{i:03d}" for i in range(80, 90)]


def test_a_group_larger_than_a_page_is_read_past(store: fluxo.Store) -> None:
    clock = FakeClock(2_000.0)
    engine = fluxo.Engine(store, workflows=[job], clock=clock)
    for i in range(60):  # one instant for all of them
        engine.start(job.options(id=f"same-{i:02d}"), i)
    pages = _walk(engine, 25)
    seen = [run_id for page in pages for run_id in page]
    assert len(seen) == 60
    assert sorted(seen) == [f"same-{i:02d}" for i in range(60)]
