"""The run timeline of ``fluxo ui``: real histories turned into rows, and drawn."""

from __future__ import annotations

import contextlib
import html
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import jinja2
import pytest

import fluxo
from fluxo import history
from fluxo.testing import WorkflowEnvironment
from fluxo.ui import _timeline

START = datetime(2030, 1, 1, tzinfo=timezone.utc)
TEMPLATES = Path(_timeline.__file__).parent / "templates"
ENV: list[WorkflowEnvironment] = []
CALLS: dict[str, int] = {}


@pytest.fixture
def env() -> Iterator[WorkflowEnvironment]:
    CALLS.clear()
    with WorkflowEnvironment(start_time=START, always_replay=False) as environment:
        ENV[:] = [environment]
        yield environment
    ENV.clear()


def take(seconds: float) -> None:
    """Pretend the step running now took ``seconds``."""
    ENV[0].advance(seconds)


def count(key: str) -> int:
    CALLS[key] = CALLS.get(key, 0) + 1
    return CALLS[key]


@fluxo.step(name="tl.flaky", retry=fluxo.Retry(max_attempts=3, initial=5, backoff=1))
def flaky() -> str:
    take(1)
    if count("flaky") < 3:
        raise RuntimeError(f"boom {CALLS['flaky']}")
    return "fine"


@fluxo.step(name="tl.double", retry=fluxo.Retry(max_attempts=2, initial=0.5))
def double(i: int) -> int:
    take(2)
    if i == 4 and count("four") == 1:
        raise ValueError("four, once")
    return i * 2


@fluxo.step(name="tl.other")
def other() -> str:
    return "other"


@fluxo.workflow(name="tl.child")
def child(n: int) -> int:
    return double(n)


@fluxo.workflow(name="tl.everything")
def everything() -> str:
    flaky()
    fluxo.sleep(10)
    fluxo.parallel(double.bind(1), other.bind())
    fluxo.map(double, [3, 4, 5])
    got = child(7)
    fluxo.now()
    fluxo.set_event("progress", 1)
    if fluxo.patched("new-path"):
        take(1)
    word: str = fluxo.wait_for_signal("approve", type=str)
    return f"{word} {got}"


@fluxo.workflow(name="tl.waits")
def waits() -> None:
    fluxo.sleep(60)
    with contextlib.suppress(fluxo.SignalTimeout):
        fluxo.wait_for_signal("approve", timeout=30)
    fluxo.wait_for_signal("never")


@fluxo.step(name="tl.once")
def once() -> str:
    take(3)
    if count("once") == 1:
        raise RuntimeError("<script>alert(1)</script>")
    return "<b>bold</b>"


@fluxo.workflow(name="tl.<script>")
def hostile() -> str:
    return once()


@fluxo.workflow(name="tl.chain")
def chain(round: int) -> int:
    fluxo.signal("tl-target", "poke", round)
    if round < 1:
        fluxo.continue_as_new(round + 1)
    return round


def rows_of(env: WorkflowEnvironment, run_id: str, **options: Any) -> _timeline.Timeline:
    return _timeline.build(env.store.load(run_id), env.engine.codec, **options)


def shape(timeline: _timeline.Timeline) -> list[tuple[str, str, str]]:
    return [(row.kind, row.label, row.status) for row in timeline.rows]


def render(timeline: _timeline.Timeline, base: str = "/fluxo") -> str:
    environment = jinja2.Environment(
        autoescape=True, loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined
    )
    return environment.get_template("_timeline.html").render(timeline=timeline, base=base)


def check_geometry(timeline: _timeline.Timeline) -> None:
    """Bars and markers stay inside the track; each position is drawn by one row."""
    for row in timeline.rows:
        assert row.left is not None
        assert row.width is not None
        assert 0.0 <= row.left <= 100.0
        assert 0.0 <= row.width <= 100.0
        assert row.left + row.width <= 100.0 + 1e-9
        assert row.width == 0.0 if row.point else row.width >= _timeline.MIN_WIDTH
        for attempt in row.attempts:
            assert attempt.left is not None
            assert attempt.width is not None
            assert row.left - 1e-9 <= attempt.left <= row.left + row.width
    seqs = [seq for row in timeline.rows for seq in row.seqs]
    assert sorted(seqs) == list(range(timeline.event_count))


def test_every_event_kind_has_a_row_kind() -> None:
    assert set(_timeline.ROW_KINDS) == set(history.EVENT_TYPES), (
        "give the new event kinds a row in fluxo/ui/_timeline.py (ROW_KINDS and _HANDLERS)"
    )
    assert set(_timeline._HANDLERS) == set(history.EVENT_TYPES)


def test_a_completed_run_of_every_shape(env: WorkflowEnvironment) -> None:
    handle = env.start(everything.options(id="all"))
    env.advance(100)  # the run reaches its wait, then the signal comes
    env.signal("all", "approve", "yes")
    assert handle.result() == "yes 14"
    timeline = rows_of(env, "all")
    assert shape(timeline) == [
        ("start", "started tl.everything", "ok"),
        ("step", "tl.flaky", "ok"),
        ("timer", "sleep 10s", "ok"),
        ("parallel", "parallel: 2 branches", "ok"),
        ("branch", "tl.double #0", "ok"),
        ("branch", "tl.other #1", "ok"),
        ("parallel", "parallel: 3 calls of tl.double", "ok"),
        ("branch", "tl.double #0", "ok"),
        ("branch", "tl.double #1", "ok"),
        ("branch", "tl.double #2", "ok"),
        ("child", "child tl.child", "ok"),
        ("value", "recorded now", "ok"),
        ("event", "set event 'progress'", "ok"),
        ("patch", "patched 'new-path'", "ok"),
        ("signal", "wait for signal 'approve'", "ok"),
        ("end", "completed", "ok"),
    ]
    assert timeline.event_count == len(env.store.load("all").events)
    assert timeline.start == START.timestamp()
    assert timeline.timed
    rows = timeline.rows
    step = rows[1]
    # two failed attempts of a second each, each followed by its 5s durable back-off
    assert step.tries == 3
    assert step.detail == '"fine"'
    assert [(a.start, a.end, a.backoff) for a in step.attempts] == [
        (0.0, 1.0, 5.0),
        (6.0, 7.0, 5.0),
    ]
    assert [a.error_text for a in step.attempts] == [
        "builtins.RuntimeError: boom 1",
        "builtins.RuntimeError: boom 2",
    ]
    assert (step.start, step.end) == (0.0, 13.0)
    assert (rows[2].start, rows[2].end) == (13.0, 23.0)
    # branches: lanes 1..n under their block, whose row index is their group
    assert [(r.lane, r.group) for r in rows[3:10]] == [
        (0, None),
        (1, 3),
        (2, 3),
        (0, None),
        (1, 6),
        (2, 6),
        (3, 6),
    ]
    retried_branch = rows[8]
    assert retried_branch.tries == 2
    assert [a.error_text for a in retried_branch.attempts] == ["builtins.ValueError: four, once"]
    assert retried_branch.attempts[0].backoff is None  # waited in the worker, not recorded
    assert rows[10].link == "all~child-18"
    assert rows[10].detail == "14"
    assert rows[14].detail == '"yes"'
    assert rows[-1].detail == '"yes 14"'
    assert timeline.span == rows[-1].start
    check_geometry(timeline)
    starts = [row.start for row in rows if row.lane == 0]
    assert starts == sorted(starts)  # the workflow's own rows, in the order they happened


def test_a_run_still_waiting_has_open_rows(env: WorkflowEnvironment) -> None:
    env.start(waits.options(id="w"))
    timeline = rows_of(env, "w")
    assert shape(timeline) == [
        ("start", "started tl.waits", "ok"),
        ("timer", "sleep 1m", "waiting"),
    ]
    timer = timeline.rows[1]
    assert timer.end is None
    assert timer.duration is None
    assert "still open" in timer.times
    assert timeline.span == 0.0  # one instant recorded so far
    later = rows_of(env, "w", now=START.timestamp() + 20)
    assert later.span == 20.0
    assert (later.rows[1].left, later.rows[1].width) == (0.0, 100.0)  # open: to the right edge

    env.advance(60 + 30)  # the timer fires; the wait for 'approve' times out
    timeline = rows_of(env, "w", now=START.timestamp() + 100)
    assert shape(timeline)[1:] == [
        ("timer", "sleep 1m", "ok"),
        ("signal", "wait for signal 'approve' (timed out)", "failed"),
        ("signal", "wait for signal 'never'", "waiting"),
    ]
    assert (timeline.rows[2].start, timeline.rows[2].end) == (60.0, 90.0)
    assert timeline.rows[3].end is None
    assert timeline.span == 100.0
    assert timeline.rows[3].left == 90.0
    assert timeline.rows[3].width == pytest.approx(10.0)
    check_geometry(timeline)


def test_a_cancelled_wait_and_its_resumption(env: WorkflowEnvironment) -> None:
    env.start(waits.options(id="c"))
    env.advance(5)
    env.cancel("c")
    timeline = rows_of(env, "c")
    assert shape(timeline) == [
        ("start", "started tl.waits", "ok"),
        ("timer", "sleep 1m", "cancelled"),
        ("cancel", "cancel requested (on request)", "cancelled"),
        ("end", "cancelled (on request)", "cancelled"),
    ]
    assert timeline.rows[1].end == 5.0
    check_geometry(timeline)

    env.engine.resume("c")
    env.advance(60)
    timeline = rows_of(env, "c")
    assert [row.kind for row in timeline.rows][-2:] == ["retried", "signal"]
    assert timeline.rows[-2].label == "resumed by an operator"
    assert timeline.rows[1].status == "ok"  # the resumed timer fired after all
    check_geometry(timeline)


def test_a_failed_run_retried_by_an_operator(env: WorkflowEnvironment) -> None:
    handle = env.start(hostile.options(id="h"))
    with pytest.raises(fluxo.WorkflowFailedError):
        handle.result()
    env.engine.retry("h")
    env.advance(0)
    assert handle.result() == "<b>bold</b>"
    timeline = rows_of(env, "h")
    kinds = [(row.kind, row.status) for row in timeline.rows]
    assert kinds == [
        ("start", "ok"),
        ("step", "failed"),
        ("end", "failed"),
        ("retried", "ok"),
        ("step", "ok"),
        ("end", "ok"),
    ]
    assert timeline.rows[1].detail == "builtins.RuntimeError: <script>alert(1)</script>"
    assert timeline.rows[3].label == "retried by an operator"
    assert (timeline.rows[4].start, timeline.rows[4].end) == (3.0, 6.0)
    check_geometry(timeline)

    page = render(timeline)
    assert "<script>" not in page
    assert "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "started tl.&lt;script&gt;" in page
    assert page.count("data-kind=") == len(timeline.rows)


def test_continue_as_new_and_signals_sent_link_their_runs(env: WorkflowEnvironment) -> None:
    env.start(waits.options(id="tl-target"))
    handle = env.start(chain.options(id="ch"), 0)
    assert handle.result() == 1
    timeline = rows_of(env, "ch")
    assert shape(timeline) == [
        ("start", "started tl.chain", "ok"),
        ("signal", "send signal 'poke' to tl-target", "ok"),
        ("continued", "continued as new in ch~1", "ok"),
    ]
    assert [row.link for row in timeline.rows] == [None, "tl-target", "ch~1"]
    page = render(timeline, base="/fluxo")
    assert 'href="/fluxo/run?id=ch~1"' in page
    assert 'href="/fluxo/run?id=tl-target"' in page


def test_a_child_link_is_url_encoded() -> None:
    state = _state(
        [
            history.WorkflowStarted("p", b"{}"),
            history.ChildStarted("a b&c", b'{"workflow": "w"}'),
        ],
        status=history.RunStatus.WAITING,
    )
    timeline = _timeline.build(state, fluxo.JSONCodec())
    assert timeline.rows[1].status == "running"
    assert timeline.rows[1].end is None
    assert 'href="/run?id=a%20b%26c"' in render(timeline, base="")


def _state(
    events: list[history.Event],
    *,
    status: history.RunStatus = history.RunStatus.RUNNING,
    times: tuple[float, ...] | None = None,
) -> history.RunState:
    run = history.RunInfo("r", "w", status, 0.0, 0.0)
    stamps = tuple(1000.0 + seq for seq in range(len(events))) if times is None else times
    return history.RunState(run, tuple(events), (), stamps)


def test_an_open_parallel_block_shows_its_pending_branches() -> None:
    state = _state(
        [
            history.WorkflowStarted("w", b"{}"),
            history.ParallelStarted("", b'{"count": 3, "steps": ["a", "b", "c"]}'),
            history.BranchAttemptFailed("b#1", b'{"type": "builtins.OSError", "message": "x"}'),
            history.BranchCompleted("c#2", b"3"),
        ]
    )
    timeline = _timeline.build(state, fluxo.JSONCodec(), now=1010.0)
    assert [(r.kind, r.label, r.status, r.lane, r.group) for r in timeline.rows] == [
        ("start", "started w", "ok", 0, None),
        ("parallel", "parallel: 3 branches", "running", 0, None),
        ("branch", "a #0", "running", 1, 1),
        ("branch", "b #1", "retrying", 2, 1),
        ("branch", "c #2", "ok", 3, 1),
    ]
    assert timeline.rows[3].attempts[0].error_text == "builtins.OSError: x"
    assert timeline.rows[3].end is None
    assert timeline.span == 10.0
    assert (timeline.rows[4].start, timeline.rows[4].end) == (0.0, 3.0)


def _every_kind(data: bytes | None) -> list[history.Event]:
    """One event of every kind (after the start), all carrying ``data``."""
    events: list[history.Event] = [history.WorkflowStarted("w", data)]
    for kind, cls in history.EVENT_TYPES.items():
        if kind != history.WorkflowStarted.kind:
            name = "s#0" if kind.startswith("branch_") else f"n-{kind}"
            events.append(cls(name, data))
    return events


@pytest.mark.parametrize("data", [b"\xff\xfe not json", b"{", b'{"count": "many"}', None])
def test_damaged_payloads_never_raise(data: bytes | None) -> None:
    events = _every_kind(data)
    for status in (history.RunStatus.RUNNING, history.RunStatus.FAILED):
        timeline = _timeline.build(_state(events, status=status), fluxo.JSONCodec(), now=2000.0)
        covered = {seq: row.kind for row in timeline.rows for seq in row.seqs}
        assert sorted(covered) == list(range(len(events)))
        for seq, event in enumerate(events):
            assert covered[seq] == _timeline.ROW_KINDS[event.kind], event.kind
        assert {row.status for row in timeline.rows} <= set(_timeline.STATUSES)
        if data is not None and data != b'{"count": "many"}':
            assert any(row.detail == _timeline.UNDECODABLE for row in timeline.rows)
        page = render(timeline)
        assert page.count("data-kind=") == len(timeline.rows)


def test_a_history_without_times_has_rows_but_no_bars(env: WorkflowEnvironment) -> None:
    handle = env.start(everything.options(id="old"))
    env.advance(100)
    env.signal("old", "approve", "yes")
    handle.result()
    state = env.store.load("old")
    untimed = history.RunState(state.run, state.events, state.signals, ())
    timeline = _timeline.build(untimed, env.engine.codec)
    assert not timeline.timed
    assert timeline.start is None
    assert timeline.span is None
    timed = rows_of(env, "old")
    assert [(r.kind, r.status, r.seqs) for r in timeline.rows] == [
        (r.kind, r.status, r.seqs) for r in timed.rows
    ]
    assert timeline.rows[2].label == "sleep until 2030-01-01T00:00:23Z"  # no start to count from
    assert all(row.start is None and row.left is None for row in timeline.rows)
    assert timeline.rows[1].tries == 3
    page = render(timeline)
    assert "tl-bar" not in page
    assert "tl-marker" not in page
    assert "recorded no event times" in page
    assert "3 attempts" in page


def test_the_page_has_one_row_of_each_kind_with_classes(env: WorkflowEnvironment) -> None:
    handle = env.start(everything.options(id="all"))
    env.advance(100)
    env.signal("all", "approve", "yes")
    handle.result()
    timeline = rows_of(env, "all")
    page = render(timeline)
    found = re.findall(r'class="tl-row tl-(\w+) tl-(\w+)[^"]*"\s+data-kind="(\w+)"', page)
    assert [(kind, status) for kind, status, _ in found] == [
        (row.kind, row.status) for row in timeline.rows
    ]
    assert all(kind == data_kind for kind, _, data_kind in found)
    assert page.count('class="tl-attempt"') == 3  # two of the step, one of a branch
    assert page.count('class="tl-backoff"') == 2  # the step's recorded back-offs
    assert "3 attempts" in page
    assert "2 attempts" in page
    assert html.escape("builtins.RuntimeError: boom 1", quote=True) in page
