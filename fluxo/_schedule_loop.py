"""``@fluxo.schedule``, and the built-in workflow that runs a schedule.

A schedule is one durable run of a workflow of Fluxo's own, named
``fluxo.schedule:NAME`` after the scheduled workflow (its run has that id too, so
only workers that know the scheduled workflow claim it). Its loop reads the
time, starts the runs of the ticks that are due as detached child runs whose
ids are made of the tick's time, publishes its state with ``fluxo.set_event``,
and waits for the next tick or a control signal (pause, resume, trigger, a new
spec) in one durable wait. Every :data:`ITERATIONS` rounds it continues as new,
so its history stays small. Its state travels in its input: the spec, the time
up to which ticks are settled, whether it is paused, the last tick started.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

from fluxo import (
    _decorators,
    _definitions,
    _errors,
    _names,
    _run_events,
    _schedules,
    _workflow_api,
)

W = TypeVar("W", bound="_definitions.Workflow[Any, Any]")

SIGNAL = "schedule"
"""The signal a schedule's run takes its control messages under."""

EVENT = "schedule"
"""The event key under which a schedule's run publishes its :class:`State`."""

ITERATIONS = 200
"""Rounds of the loop (a wake-up each) before the run continues as new."""


@dataclasses.dataclass
class State:
    """A schedule's state: its run's input, and what it publishes (``fluxo.set_event``).

    Times are seconds since the epoch.
    """

    spec: _schedules.Schedule
    settled: float | None = None
    """Every tick up to this time is settled: started, or dropped by the catch-up policy."""
    paused: bool = False
    last_tick: float | None = None
    """The time of the last tick whose run this schedule started."""
    last_run: str | None = None
    """The id of the last run this schedule started (a tick's or a trigger's)."""
    next_tick: float | None = None
    """The tick it waits for (``None`` while paused)."""


@dataclasses.dataclass
class Control:
    """A control message to a schedule's run (signal :data:`SIGNAL`).

    ``op`` is ``"pause"``, ``"resume"``, ``"trigger"`` (start a run now, with the
    id :func:`~fluxo._schedules.trigger_id` makes of ``at``) or ``"update"``
    (go on with ``spec``, a workers' code changed it). ``at`` is when it was
    sent (seconds since the epoch): the ticks due before it go by the state
    before the message.
    """

    op: str
    at: float | None = None
    spec: _schedules.Schedule | None = None


OPS = ("pause", "resume", "trigger", "update")


def schedule(
    cron: str | None = None,
    /,
    *,
    every: timedelta | float | None = None,
    tz: str = "UTC",
    catch_up: _schedules.CatchUp = "latest",
    catch_up_window: timedelta | float | None = None,
) -> Callable[[W], W]:
    """Run a workflow on a schedule: put it above ``@fluxo.workflow``.

    Each tick starts exactly one run of the workflow, however many workers
    there are: the schedule is one durable run of its own (``fluxo.schedule:NAME``),
    and the run a tick starts has an id made of the tick's time
    (``NAME@2030-01-01T02:00:00Z``), so no replay or worker can start it twice.
    The workflow takes one argument: the tick's time, an aware datetime in
    ``tz``. An engine given the workflow knows its schedule; its workers start
    the schedule as they start (docs/schedules.md).

    Args:
        cron: a cron expression, such as ``"0 2 * * *"`` (needs
            ``pip install 'fluxo[schedules]'``); read as wall-clock time in ``tz``.
        every: an interval instead: a ``timedelta`` or seconds, a whole number
            of seconds, from 1 to 100 years. Its ticks fall on whole multiples of it since
            the Unix epoch, so ``every=timedelta(hours=1)`` ticks on the hour (UTC).
        tz: an IANA time zone name, such as ``"Europe/Helsinki"``.
        catch_up: what happens to the ticks missed while no worker ran:
            ``"latest"`` starts the most recent of them only; ``"all"`` starts
            each (oldest first, those within ``catch_up_window``, at most 1,000);
            ``"skip"`` starts none, and a tick starts only within a minute of its time.
        catch_up_window: with ``catch_up="all"``: how far back missed ticks are
            started (default one day).

    Example:
        >>> @fluxo.schedule("0 2 * * *", tz="Europe/Helsinki")
        ... @fluxo.workflow
        ... def nightly_report(tick: datetime) -> None: ...

    Raises:
        DefinitionError: every problem at once: cron text that does not parse or
            never fires, an unknown time zone, both or neither of ``cron`` and
            ``every``, a workflow that does not take one argument...
    """
    seconds, problems = _schedules.check_spec(cron, every, tz, catch_up, catch_up_window)
    window = _schedules.DEFAULT_WINDOW
    if catch_up_window is not None and not problems:
        window = _schedules.to_seconds(catch_up_window)
    spec = _schedules.Schedule(
        cron=cron, every=seconds, tz=tz, catch_up=catch_up, catch_up_window=float(window)
    )
    if not problems:
        _schedules.check_fires(spec, problems)
    if problems:
        raise _errors.DefinitionError("@fluxo.schedule: " + "; ".join(problems))

    def decorate(wf: W) -> W:
        if not isinstance(wf, _definitions.Workflow):
            raise _errors.DefinitionError(
                f"@fluxo.schedule goes above @fluxo.workflow, on a workflow, not on {wf!r}: "
                "write @fluxo.schedule(...) on the line above @fluxo.workflow"
            )
        found = _workflow_problems(wf)
        if found:
            raise _errors.DefinitionError("\n".join(found))
        scheduled = copy.copy(wf)
        scheduled.schedule = spec
        scheduled.scheduler = scheduler_for(scheduled)
        return scheduled

    return decorate


def _workflow_problems(wf: _definitions.Workflow[Any, Any]) -> list[str]:
    """What keeps ``wf`` from being scheduled: its name, its signature."""
    label = f"@fluxo.schedule on workflow {wf.name!r}"
    problems = []
    if getattr(wf, "schedule", None) is not None:
        problems.append(
            f"{label}: it has a schedule already; a workflow has one schedule. Define "
            "another workflow (calling the same code) for another schedule"
        )
    if _names.CHAIN_SEPARATOR in wf.name:
        problems.append(
            f"{label}: its name holds {_names.CHAIN_SEPARATOR!r}, which Fluxo keeps for "
            "its own run ids; give it another name="
        )
    if len(wf.name) > _schedules.LONGEST_NAME:
        problems.append(
            f"{label}: its name is {len(wf.name)} characters long; the ids of scheduled "
            f"runs add the tick's time, so a scheduled workflow's name has at most "
            f"{_schedules.LONGEST_NAME}: give it a shorter name="
        )
    signature = wf.signature
    try:
        signature.bind(datetime.now(timezone.utc))
    except TypeError:
        problems.append(
            f"{label}: the workflow takes the tick's time as its one argument, but its "
            f"signature is {wf.__name__}{signature}; write it as "
            f"def {wf.__name__}(tick: datetime) -> ..."
        )
    else:
        param = next(iter(signature.parameters.values()))
        if param.kind is not param.VAR_POSITIONAL:
            try:
                hint = typing.get_type_hints(wf.fn).get(param.name, Any)
            except Exception:
                hint = Any
            if hint not in (Any, datetime, object):
                problems.append(
                    f"{label}: its parameter {param.name!r} is given the tick's time, a "
                    f"datetime, but is annotated {getattr(hint, '__name__', hint)}; "
                    f"annotate it '{param.name}: datetime'"
                )
    return problems


def scheduler_for(target: _definitions.Workflow[Any, Any]) -> _definitions.Workflow[Any, Any]:
    """The built-in workflow whose one run is ``target``'s schedule."""

    def schedule_loop(state: State) -> None:
        _Loop(target, state).run()

    schedule_loop.__qualname__ = schedule_loop.__name__ = "schedule_loop"
    return _definitions.Workflow(schedule_loop, name=_schedules.scheduler_id(target.name))


class _Loop:
    """One run of a schedule: settle the due ticks, publish, wait; continue as new."""

    def __init__(self, target: _definitions.Workflow[Any, Any], state: State) -> None:
        self.target = target
        self.state = dataclasses.replace(state)
        self.published: State | None = None

    def run(self) -> None:
        now = _now()
        self.settle(now)  # what came due since the state was handed over: a catch-up
        for _ in range(ITERATIONS):
            self.publish()
            state = self.state
            timeout = None if state.next_tick is None else max(state.next_tick - now, 0.0)
            try:
                message = _workflow_api.wait_for_signal(SIGNAL, timeout=timeout, type=Control)
            except _errors.SignalTimeout:
                now = _now()
                self.settle(now)
                continue
            now = self.take(message)
        while True:  # the messages sent meanwhile go with the state, not with this run
            try:
                message = _workflow_api.wait_for_signal(SIGNAL, timeout=0, type=Control)
            except _errors.SignalTimeout:
                break
            self.take(message)
        self.state.next_tick = None
        _workflow_api.continue_as_new(self.state)

    def take(self, message: Control) -> float:
        """Act on a message: the ticks due before it was sent go by the state before it.

        A message that waited for a worker (all were down) is taken first, then the
        ticks missed after it was sent are caught up under the state it made.
        Returns the time now.
        """
        now = _now()
        sent = now if message.at is None else min(message.at, now)
        self.settle(sent)
        self.apply(message)
        self.settle(now)
        return now

    def settle(self, now: float) -> None:
        """Start the runs of the ticks due by ``now`` as the catch-up policy says."""
        state = self.state
        spec = state.spec
        if state.settled is None:
            state.settled = now  # a new schedule: its first tick is the next one
        if now > state.settled:
            after, state.settled = state.settled, now
            if not state.paused:
                for tick in due_ticks(spec, after, now):
                    self.start(tick, _schedules.tick_id(self.target.name, tick))
        state.next_tick = None if state.paused else spec.next_after(state.settled)

    def start(self, tick: float, run_id: str, *, trigger: bool = False) -> None:
        """Start the run of a tick (or a trigger): once, whatever replays or workers do."""
        state = self.state
        try:
            _workflow_api.start_child(
                self.target.options(id=run_id, detached=True), state.spec.tick_time(tick)
            )
        except _errors.RunStateError as exc:  # recorded: every replay takes this branch
            _workflow_api.logger.warning("schedule %s: %s", self.target.name, exc)
            return
        state.last_run = run_id
        if not trigger:
            state.last_tick = tick

    def apply(self, message: Control) -> None:
        """Act on a control message; a message that makes no sense is logged and dropped."""
        state = self.state
        name = self.target.name
        if message.op == "pause":
            state.paused = True
        elif message.op == "resume":
            state.paused = False  # the ticks of the pause are settled: the next is a future one
        elif message.op == "trigger" and _schedules.is_time(message.at):
            at = float(message.at or 0.0)
            self.start(at, _schedules.trigger_id(name, at), trigger=True)
        elif message.op == "update" and message.spec is not None:
            problems = spec_problems(message.spec)
            if problems:
                _workflow_api.logger.warning(
                    "schedule %s: ignored a new spec: %s", name, "; ".join(problems)
                )
            else:
                state.spec = message.spec  # from now on: ticks before it are settled
        else:
            _workflow_api.logger.warning(
                "schedule %s: ignored the message %r; it takes %s", name, message, OPS
            )
        state.next_tick = None if state.paused else state.spec.next_after(state.settled or 0.0)

    def publish(self) -> None:
        """Record the state for the outside world, when it changed (``engine.schedules``)."""
        if self.state != self.published:
            _run_events.set_event(EVENT, self.state)
            self.published = dataclasses.replace(self.state)


@_decorators.step(name="fluxo.schedule.due")
def due_ticks(spec: _schedules.Schedule, after: float, until: float) -> list[float]:
    """The ticks in ``(after, until]`` whose runs start, oldest first, by the catch-up policy.

    A step, so its answer is recorded: a replay after an upgrade of ``croniter``
    or of the time zone database (or of this policy) meets the ticks it started.
    """
    limit = _schedules.MAX_CATCH_UP if spec.catch_up == "all" else 1
    due = spec.ticks_back(after, until, limit)
    return _chosen(spec, due, until) if due else []


def _chosen(spec: _schedules.Schedule, due: list[float], now: float) -> list[float]:
    """The due ticks (newest first) whose runs start, oldest first, by the catch-up policy.

    The newest due tick is the current one; those before it were missed.
    """
    newest = due[0]
    if spec.catch_up == "all":
        missed = [tick for tick in due[1:] if tick >= now - spec.catch_up_window]
        return [*reversed(missed), newest]
    if spec.catch_up == "skip":
        return [newest] if now - newest <= _schedules.ON_TIME else []
    return [newest]


def spec_problems(spec: _schedules.Schedule) -> list[str]:
    """What is wrong with a spec that came in a message rather than from a decorator."""
    window = spec.catch_up_window if spec.catch_up == "all" else None
    _, problems = _schedules.check_spec(spec.cron, spec.every, spec.tz, spec.catch_up, window)
    if not problems:
        _schedules.check_fires(spec, problems)
    return problems


def _now() -> float:
    return _workflow_api.now().timestamp()
