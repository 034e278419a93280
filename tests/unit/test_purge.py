"""``engine.purge`` and ``fluxo runs purge``: retention of finished runs.

The store's rules (what may go, batch by batch) are the conformance suite's
(tests/stores/conformance/test_conformance_purge.py); here: the arguments, the loop over
batches, and real workflows (chains, children) purged through the engine.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import fluxo
from fluxo import cli, history
from fluxo.stores import memory

from .conftest import MakeEngine
from .helpers import FakeClock, execute

DAY = 86_400.0


@fluxo.step
def double(n: int) -> int:
    return 2 * n


@fluxo.workflow(name="purge.work")
def work(n: int) -> int:
    return double(n)


@fluxo.workflow(name="purge.broken", aliases=["purge.broken_v0"])
def broken(n: int) -> int:
    raise ValueError(f"no {n}")


@fluxo.workflow(name="purge.rounds")
def rounds(n: int) -> int:
    """Goes on in a new run until ``n`` is 0, waiting for a signal in the last one."""
    if n == 0:
        return fluxo.wait_for_signal("go", type=int)
    fluxo.continue_as_new(n - 1)


@fluxo.workflow(name="purge.parent")
def parent(n: int) -> int:
    fluxo.start_child(work.options(id="kid", detached=True), n)
    raise ValueError("the parent fails")


class PurgeSpy(memory.MemoryStore):
    """A memory store that records the batches it is asked to purge."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[int, int]] = []  # (limit, deleted)

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        deleted = super().purge(
            finished_before=finished_before,
            statuses=statuses,
            workflows=workflows,
            limit=limit,
            dry_run=dry_run,
        )
        self.calls.append((limit, deleted))
        return deleted


def finish(engine: fluxo.Engine, wf: fluxo.Workflow[Any, Any], run_id: str, n: int = 1) -> None:
    engine.start(wf.options(id=run_id), n)
    execute(engine, run_id)
    assert engine.get_run(run_id, follow=False).status.is_terminal


def ids(engine: fluxo.Engine) -> list[str]:
    return sorted(run.id for run in engine.list_runs(limit=1000))


# -- what goes --------------------------------------------------------------------------


def test_purge_deletes_the_runs_that_finished_long_enough_ago(
    make_engine: MakeEngine, clock: FakeClock, store_url: str
) -> None:
    engine = make_engine(work, broken, store=store_url)
    finish(engine, work, "old-ok")
    finish(engine, broken, "old-failed")
    engine.start(broken.options(id="old-pending"), 1)  # never executed here
    engine.start(work.options(id="old-cancelled"), 1)
    engine.cancel("old-cancelled")
    clock.advance(20 * DAY)
    finish(engine, work, "recent")
    clock.advance(20 * DAY)

    assert engine.purge(older_than=timedelta(days=30)) == 3

    assert ids(engine) == ["old-pending", "recent"]
    with pytest.raises(fluxo.RunNotFoundError):
        engine.history("old-ok")


@pytest.mark.parametrize(
    "older_than",
    [
        timedelta(days=30),
        30 * DAY,
        int(30 * DAY),
        datetime.fromtimestamp(FakeClock().now + 10 * DAY, timezone.utc),
    ],
    ids=["timedelta", "seconds", "whole-seconds", "datetime"],
)
def test_older_than_is_an_age_or_a_moment(
    make_engine: MakeEngine, clock: FakeClock, older_than: Any
) -> None:
    engine = make_engine(work)
    finish(engine, work, "old")
    clock.advance(20 * DAY)
    finish(engine, work, "recent")
    clock.advance(20 * DAY)

    assert engine.purge(older_than=older_than) == 1
    assert ids(engine) == ["recent"]


def test_status_and_workflow_narrow_what_goes(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(work, broken)
    finish(engine, work, "ok-1")
    finish(engine, broken, "failed-1")
    finish(engine, broken, "failed-2")
    clock.advance(DAY)

    assert engine.purge(older_than=0, status="completed", workflow=broken) == 0
    assert engine.purge(older_than=0, status=["failed"], workflow=[broken]) == 2
    assert engine.purge(older_than=0, workflow="purge.work") == 1
    assert ids(engine) == []


def test_a_workflows_aliases_count_as_its_names(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(broken)
    engine.store.create_run("renamed", "purge.broken_v0", b"[1]", now=clock())
    engine.store.append(
        "renamed",
        1,
        [history.WorkflowFailed("", b"{}")],
        now=clock(),
        status=fluxo.RunStatus.FAILED,
    )
    clock.advance(DAY)

    assert engine.purge(older_than=timedelta(hours=1), workflow=broken) == 1


def test_purge_deletes_batch_by_batch_until_none_is_left(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    store = PurgeSpy()
    engine = make_engine(work, store=store)
    for i in range(5):
        finish(engine, work, f"r{i}")
    clock.advance(DAY)

    assert engine.purge(older_than=timedelta(hours=1), batch=2) == 5

    assert store.calls == [(2, 2), (2, 2), (2, 1), (2, 0)]


def test_a_dry_run_counts_without_deleting(make_engine: MakeEngine, clock: FakeClock) -> None:
    engine = make_engine(work)
    for i in range(3):
        finish(engine, work, f"r{i}")
    clock.advance(DAY)

    assert engine.purge(older_than=timedelta(hours=1), dry_run=True) == 3
    assert len(ids(engine)) == 3


# -- chains and children ----------------------------------------------------------------


def test_a_chain_that_is_still_going_is_kept_whole(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(rounds)
    engine.start(rounds.options(id="poll"), 2)
    execute(engine, "poll")
    execute(engine, "poll~1")
    execute(engine, "poll~2")  # waits for "go"
    clock.advance(100 * DAY)

    assert engine.purge(older_than=timedelta(days=1)) == 0

    assert engine.get_run("poll").id == "poll~2"
    engine.signal("poll", "go", 7)
    execute(engine, "poll~2")
    assert engine.handle("poll").result(timeout=0) == 7
    clock.advance(2 * DAY)
    assert engine.purge(older_than=timedelta(days=1)) == 3  # latest first, then back
    assert ids(engine) == []


def test_a_chain_whose_latest_run_was_purged_alone_says_so(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(rounds)
    engine.start(rounds.options(id="poll"), 1)
    execute(engine, "poll")
    assert engine.cancel("poll").status is fluxo.RunStatus.CANCELLED  # poll~1, not begun
    clock.advance(2 * DAY)

    # Only cancelled runs: the chain's completed first run stays.
    assert engine.purge(older_than=timedelta(days=1), status="cancelled") == 1

    assert engine.get_run("poll").id == "poll"
    with pytest.raises(fluxo.RunNotFoundError, match="poll~1"):
        engine.handle("poll").result(timeout=0)


def test_a_child_stays_while_its_failed_parent_may_be_retried(
    make_engine: MakeEngine, clock: FakeClock
) -> None:
    engine = make_engine(parent, work)
    finish(engine, parent, "mother")
    execute(engine, "kid")
    assert engine.get_run("kid").status is fluxo.RunStatus.COMPLETED
    clock.advance(DAY)

    assert engine.purge(older_than=timedelta(hours=1), status="completed") == 0
    assert engine.get_run("kid").parent == "mother"
    assert engine.purge(older_than=timedelta(hours=1)) == 2  # the parent, then the child
    assert ids(engine) == []


# -- bad arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"older_than": timedelta(days=-1)}, "an age of zero or more"),
        ({"older_than": -5}, "an age of zero or more"),
        ({"older_than": float("nan")}, "an age of zero or more"),
        ({"older_than": "30d"}, "older_than takes an age"),
        ({"older_than": True}, "older_than takes an age"),
        ({"older_than": datetime(2020, 1, 1)}, "naive datetime"),
        (
            {"older_than": datetime.fromtimestamp(FakeClock().now + 60, timezone.utc)},
            "in the future",
        ),
        ({"older_than": 0, "status": "running"}, "'running' is not finished"),
        ({"older_than": 0, "status": "pending"}, "'cancelled' and 'dead'"),
        ({"older_than": 0, "status": ["failed", "waiting"]}, "'waiting' is not finished"),
        ({"older_than": 0, "status": "done"}, "unknown run status"),
        ({"older_than": 0, "workflow": 3}, "workflow= takes a workflow"),
        ({"older_than": 0, "batch": 0}, "from 1 to 10,000"),
        ({"older_than": 0, "batch": 10_001}, "from 1 to 10,000"),
        ({"older_than": 0, "batch": 2.5}, "from 1 to 10,000"),
        ({"older_than": 0, "batch": True}, "from 1 to 10,000"),
    ],
)
def test_bad_arguments_are_refused_before_anything_goes(
    make_engine: MakeEngine, options: dict[str, Any], message: str
) -> None:
    engine = make_engine(work)
    finish(engine, work, "r1")

    with pytest.raises(fluxo.DefinitionError, match=message):
        engine.purge(**options)

    assert ids(engine) == ["r1"]


def test_older_than_must_be_given(make_engine: MakeEngine) -> None:
    engine = make_engine(work)

    with pytest.raises(TypeError, match="older_than"):
        engine.purge()  # type: ignore[call-arg]


# -- the command line -------------------------------------------------------------------


@pytest.fixture
def old_store(tmp_path: Path) -> str:
    """A SQLite store with two runs that finished 40 days ago, one failed, and a pending one."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    engine = fluxo.Engine(url, workflows=[work, broken], clock=lambda: FakeClock().now - 40 * DAY)
    try:
        finish(engine, work, "old-ok")
        finish(engine, broken, "old-failed")
        engine.start(work.options(id="pending"), 1)
    finally:
        engine.close()
    return url


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(
        cli.cli, list(args), env={"FLUXO_STORE_URL": None, "FLUXO_APP": None}
    )
    return result.exit_code, result.output


def test_runs_purge_deletes_and_says_how_many(old_store: str) -> None:
    code, out = invoke("runs", "purge", "--store", old_store, "--older-than", "30d", "--dry-run")
    assert (code, out) == (0, "2 finished runs would be deleted (dry run: nothing deleted)\n")

    code, out = invoke(
        "runs", "purge", "--store", old_store, "--older-than", "30d", "-s", "failed", "--batch", "1"
    )
    assert (code, out) == (0, "deleted 1 finished run\n")

    code, out = invoke("runs", "purge", "--store", old_store, "--older-than", "2020-01-01")
    assert (code, out) == (0, "deleted 0 finished runs\n")
    code, out = invoke("runs", "purge", "--store", old_store, "--older-than", "1w", "-w", "nope")
    assert (code, out) == (0, "deleted 0 finished runs\n")

    code, out = invoke("runs", "list", "--store", old_store, "--json")
    assert sorted(run["id"] for run in json.loads(out)) == ["old-ok", "pending"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "Missing option '--older-than'"),
        (("--older-than", "soon"), "is not a time"),
        (("--older-than", "2999-01-01"), "is in the future"),
        (("--older-than", "30d", "--status", "running"), "'running' is not one of"),
        (("--older-than", "30d", "--batch", "0"), "--batch"),
    ],
)
def test_runs_purge_refuses_a_bad_command_line(
    old_store: str, args: tuple[str, ...], message: str
) -> None:
    code, out = invoke("runs", "purge", "--store", old_store, *args)

    assert code == 2
    assert message in out
    assert invoke("runs", "list", "--store", old_store)[1].count("\n") == 4  # header + 3
