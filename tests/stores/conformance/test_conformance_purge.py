"""Store conformance: ``purge``, retention of finished runs.

What goes: finished runs of the wanted statuses and workflows that ended before the
cutoff, with their histories and signals, at most ``limit`` per call. What stays:
runs that have not finished, children whose parent may still read them, and runs
of a ``continue_as_new`` chain until the runs after them are gone.
"""

from __future__ import annotations

import pytest

from fluxo import _errors, history, stores

RunStatus = history.RunStatus

T0 = 1_700_000_000.0
CUTOFF = T0 + 1_000
LATER = CUTOFF + 500
FINISHED = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED]
STEP = history.StepCompleted("shop.charge", b'{"ok": true}')


def purge(store, *, limit=100, statuses=FINISHED, workflows=None, before=CUTOFF, dry_run=False):
    return store.purge(
        finished_before=before,
        statuses=statuses,
        workflows=workflows,
        limit=limit,
        dry_run=dry_run,
    )


def purge_all(store, **options):
    """Call purge until it deletes nothing, as the engine does; return the counts."""
    counts = []
    while (count := purge(store, **options)) and len(counts) < 100:
        counts.append(count)
    return counts


def gone(store, run_id):
    with pytest.raises(_errors.RunNotFoundError):
        store.get_run(run_id)
    with pytest.raises(_errors.RunNotFoundError):
        store.load(run_id)
    return True


def finished_run(runs, run_id, status=RunStatus.COMPLETED, *, at=T0, **start):
    runs.start(run_id, now=at, **start)
    runs.record(run_id, STEP, now=at)
    runs.finish(run_id, status, now=at)


def unfinished(runs):
    """One run in each status that is not finished (the running one claimed first)."""
    for status in (RunStatus.RUNNING, RunStatus.PENDING, RunStatus.WAITING):
        runs.start(status.value)
        runs.put(status.value, status)


def test_purge_deletes_finished_runs_with_their_history_and_signals(store, runs):
    for status in FINISHED:
        runs.start(f"old-{status.value}")
        store.send_signal(f"old-{status.value}", "go", b"1", now=T0, key="k1")
        runs.record(f"old-{status.value}", STEP)
        runs.finish(f"old-{status.value}", status)

    assert purge(store) == 3

    for status in FINISHED:
        assert gone(store, f"old-{status.value}")
    assert store.list_runs() == []


def test_purge_keeps_runs_that_have_not_finished_or_finished_since_the_cutoff(store, runs):
    unfinished(runs)
    finished_run(runs, "recent", at=LATER)
    runs.start("old-but-recently-finished")
    runs.finish("old-but-recently-finished", RunStatus.COMPLETED, now=LATER)
    finished_run(runs, "old")
    kept = {run.id: run for run in store.list_runs() if run.id != "old"}

    assert purge(store) == 1

    assert gone(store, "old")
    assert {run.id: run for run in store.list_runs()} == kept


def test_purge_never_deletes_a_run_that_has_not_finished_whatever_the_statuses(store, runs):
    unfinished(runs)

    assert purge(store, statuses=list(RunStatus)) == 0
    assert purge(store, statuses=[RunStatus.PENDING, RunStatus.WAITING]) == 0

    assert len(store.list_runs()) == 3


def test_purge_keeps_to_the_statuses_and_workflows_asked_for(store, runs):
    finished_run(runs, "a-ok", workflow="a")
    finished_run(runs, "a-failed", RunStatus.FAILED, workflow="a")
    finished_run(runs, "b-ok", workflow="b")
    finished_run(runs, "c-ok", workflow="c")

    assert purge(store, statuses=[RunStatus.FAILED]) == 1
    assert purge(store, workflows=["b", "nope"]) == 1
    assert purge(store, workflows=[]) == 0
    assert purge(store, statuses=[]) == 0

    assert gone(store, "a-failed")
    assert gone(store, "b-ok")
    assert sorted(run.id for run in store.list_runs()) == ["a-ok", "c-ok"]


def test_purge_deletes_at_most_limit_runs_per_call(store, runs):
    for i in range(7):
        finished_run(runs, f"r{i}")

    assert purge(store, limit=3) == 3
    assert len(store.list_runs()) == 4
    assert purge_all(store, limit=3) == [3, 1]
    assert store.list_runs() == []


def test_a_dry_run_counts_and_deletes_nothing(store, runs):
    for i in range(4):
        finished_run(runs, f"r{i}")
    runs.start("live")

    assert purge(store, dry_run=True) == 4
    assert purge(store, dry_run=True, limit=2) == 2

    assert len(store.list_runs()) == 5


def test_a_purged_id_starts_afresh(store, runs):
    runs.start("r1")
    for i in range(70):  # enough for stores that move long histories out of the run's record
        store.send_signal("r1", f"s{i}", b"1", now=T0, key=f"k{i}")
    store.append("r1", 1, [STEP] * 70, now=T0)
    runs.finish("r1", RunStatus.COMPLETED)
    assert purge(store) == 1

    run, created = store.create_run("r1", "other", b"[2]", now=LATER)

    assert created
    state = store.load("r1")
    assert state.events == (history.WorkflowStarted("other", b"[2]"),)
    assert state.signals == ()
    assert run.workflow == "other"
    assert store.send_signal("r1", "s0", b"1", now=LATER, key="k0") is True  # keys gone too


# -- children and chains ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("parent", "child_goes"),
    [
        (RunStatus.PENDING, False),
        (RunStatus.RUNNING, False),
        (RunStatus.WAITING, False),
        (RunStatus.FAILED, False),  # may be retried, and then reads its children
        (RunStatus.COMPLETED, True),
        (RunStatus.CANCELLED, False),  # may be resumed, and then reads its children
    ],
)
def test_a_child_goes_only_once_its_parent_cannot_need_it(store, runs, parent, child_goes):
    runs.start("parent")
    finished_run(runs, "parent~child-1", parent="parent")
    if parent in FINISHED:
        runs.finish("parent", parent, now=LATER)  # itself too recent to go
    else:
        runs.put("parent", parent)

    assert purge(store) == (1 if child_goes else 0)

    assert store.get_run("parent").status is parent
    if not child_goes:
        assert store.get_run("parent~child-1").parent == "parent"


def test_a_child_of_a_missing_parent_goes_and_a_parent_goes_before_its_live_child(store, runs):
    finished_run(runs, "orphan", parent="long-gone")
    finished_run(runs, "parent", RunStatus.FAILED)
    runs.start("parent~child-1", parent="parent")
    finished_run(runs, "parent~child-2", parent="parent")

    assert purge_all(store) == [2, 1]  # the orphan and the parent, then its finished child

    assert gone(store, "orphan")
    assert gone(store, "parent")
    assert gone(store, "parent~child-2")
    assert store.get_run("parent~child-1").status is RunStatus.PENDING  # detached: lives on


def chain(store, runs, *last_status):
    """Runs ``poll`` -> ``poll~1`` -> ``poll~2``, the last one in ``last_status``."""
    runs.start("poll")
    for current, following in (("poll", "poll~1"), ("poll~1", "poll~2")):
        runs.start(following)  # created before the one it continues records its end
        runs.record(current, history.ContinuedAsNew(following), status=RunStatus.COMPLETED)
    if last_status:
        runs.put("poll~2", last_status[0])


def test_a_chain_that_is_still_going_keeps_every_run(store, runs):
    chain(store, runs, RunStatus.WAITING)

    assert purge(store) == 0

    assert [store.get_run(run_id).status for run_id in ("poll", "poll~1")] == [
        RunStatus.COMPLETED,
        RunStatus.COMPLETED,
    ]


def test_a_finished_chain_goes_from_its_latest_run_backwards(store, runs):
    chain(store, runs, RunStatus.COMPLETED)

    left = []
    while purge(store, limit=10):
        left.append(sorted(run.id for run in store.list_runs()))
        # whatever is left is a chain from its first run: following it never breaks
        if left[-1]:
            assert stores.latest_run(store, "poll").id == left[-1][-1]

    assert left == [["poll", "poll~1"], ["poll"], []]


def test_a_chain_is_kept_while_its_latest_run_is_too_recent(store, runs):
    chain(store, runs)
    runs.finish("poll~2", RunStatus.FAILED, now=LATER)

    assert purge_all(store) == []
    assert len(store.list_runs()) == 3


# -- races ------------------------------------------------------------------------------


def test_purge_and_retry_of_a_failed_run_racing_leave_it_whole_or_gone(store, runs, race):
    for i in range(10):
        finished_run(runs, f"r{i}", RunStatus.FAILED)

    def act(i):
        if i == 0:
            return purge_all(store, limit=3)
        try:
            return store.reopen(f"r{i - 1}", now=LATER)
        except _errors.RunNotFoundError:
            return None

    outcomes = race(11, act)

    assert [o.error for o in outcomes] == [None] * 11
    deleted = sum(outcomes[0].value)
    retried = {o.value.id for o in outcomes[1:] if o.value is not None}
    assert deleted + len(retried) == 10
    for run_id in retried:
        state = store.load(run_id)
        assert state.run.status is RunStatus.PENDING
        assert [type(e) for e in state.events] == [
            history.WorkflowStarted,
            history.StepCompleted,
            history.WorkflowFailed,
            history.RunRetried,
        ]
    assert sorted(run.id for run in store.list_runs()) == sorted(retried)


def test_purges_racing_delete_each_run_once(open_store, race):
    first = open_store()
    for i in range(30):
        first.create_run(f"r{i}", "wf", b"[]", now=T0)
        first.append(
            f"r{i}", 1, [history.WorkflowCompleted("", b"1")], now=T0, status=RunStatus.COMPLETED
        )
    instances = [first] + [open_store() for _ in range(2)]

    outcomes = race(3, lambda i: sum(purge_all(instances[i], limit=4)))

    assert [o.error for o in outcomes] == [None] * 3
    assert sum(o.value for o in outcomes) == 30
    assert first.list_runs() == []
