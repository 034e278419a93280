"""``engine.schedules``: start, list, pause, resume and trigger an engine's schedules.

Each scheduled workflow has one schedule run (:mod:`fluxo._schedule_loop`),
id ``fluxo.schedule:NAME``. Workers start it as they start (idempotent on the
id), and tell it when their code's spec differs from the one it runs. Control
goes to it as signals; its state is read from its history, where it records
each change (``fluxo.set_event``), so a read never races the run.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Protocol

from fluxo import _definitions, _errors, _schedule_loop, _schedules, codec, history, stores

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScheduleInfo:
    """One schedule as ``engine.schedules.list()`` tells it.

    Attributes:
        workflow: the scheduled workflow's name.
        schedule: the spec its run goes by (the code's, once a worker told it).
        status: ``"not started"`` (no worker has started it yet), or the status of
            the schedule's current run: ``"pending"``, ``"running"``, ``"waiting"``
            while it goes on; ``"cancelled"`` or ``"failed"`` when it stopped.
        paused: whether it is paused.
        last_tick: the time of the last tick it started a run for, in its zone.
        last_run: the id of the last run it started (a tick's or a trigger's).
        next_tick: the tick it waits for (``None`` while paused or stopped).
        run_id: the id of the schedule's current run (``fluxo.schedule:NAME``,
            or a later run of its chain: ``fluxo.schedule:NAME~3``).
    """

    workflow: str
    schedule: _schedules.Schedule
    status: str
    paused: bool
    last_tick: datetime | None
    last_run: str | None
    next_tick: datetime | None
    run_id: str


class _Engine(Protocol):
    """What the schedules need of their engine."""

    store: stores.Store
    codec: codec.Codec
    clock: Callable[[], float]

    @property
    def workflows(self) -> list[_definitions.Workflow[Any, Any]]: ...

    def start(self, workflow: Any, /, *args: Any, **kwargs: Any) -> Any: ...

    def signal(self, run_id: str, name: str, payload: Any = None) -> None: ...


def with_schedulers(workflows: Iterable[Any]) -> list[Any]:
    """``workflows``, and the built-in workflow of each scheduled one among them."""
    given = list(workflows)
    return given + [
        wf.scheduler
        for wf in given
        if isinstance(wf, _definitions.Workflow) and wf.scheduler is not None
    ]


class Schedules:
    """An engine's schedules: ``engine.schedules``.

    A schedule is named by its workflow (the ``@fluxo.workflow`` object or its name).

    Example:
        >>> for info in engine.schedules.list():
        ...     print(info.workflow, info.paused, info.next_tick)
        >>> engine.schedules.pause(nightly_report)
        >>> run_id = engine.schedules.trigger("reports.nightly_report")
    """

    def __init__(self, engine: _Engine) -> None:
        self._engine = engine

    def __repr__(self) -> str:
        return f"<fluxo schedules {sorted(self._scheduled())}>"

    def _scheduled(self) -> dict[str, _definitions.Workflow[Any, Any]]:
        return {wf.name: wf for wf in self._engine.workflows if wf.scheduler is not None}

    def _find(
        self, workflow: str | _definitions.Workflow[Any, Any]
    ) -> _definitions.Workflow[Any, Any]:
        name = workflow.name if isinstance(workflow, _definitions.Workflow) else workflow
        if not isinstance(name, str):
            raise _errors.DefinitionError(
                f"a schedule is named by its workflow (a @fluxo.workflow or its name), not "
                f"{workflow!r}"
            )
        found = self._scheduled().get(name)
        if found is None:
            raise _errors.UnknownWorkflowError(
                f"this engine has no scheduled workflow named {name!r}; its schedules: "
                f"{sorted(self._scheduled()) or 'none'}. Put @fluxo.schedule(...) above its "
                "@fluxo.workflow, and give the workflow to the Engine"
            )
        return found

    # -- starting --------------------------------------------------------------------------

    def start(self) -> None:
        """Make sure each schedule has its run, going by the code's spec. Idempotent.

        Workers call it as they start: a schedule without a run gets one; one whose
        run goes by another spec (the code changed) is told the code's spec, and
        goes by it from then on. A schedule whose run was cancelled or failed stays
        stopped, and a warning says how to start it again.

        Raises:
            FluxoError: a schedule could not start (a ``StoreError`` first, if one
                was); every other schedule was started all the same.
        """
        failures: list[_errors.FluxoError] = []
        for wf in self._scheduled().values():
            try:
                self._start(wf)
            except _errors.FluxoError as exc:  # the others start all the same
                failures.append(exc)
        if failures:
            down = [exc for exc in failures if isinstance(exc, _errors.StoreError)]
            raise (down or failures)[0]

    def _start(self, wf: _definitions.Workflow[Any, Any]) -> history.RunInfo:
        assert wf.scheduler is not None
        assert wf.schedule is not None
        run_id = _schedules.scheduler_id(wf.name)
        initial = _schedule_loop.State(spec=wf.schedule)
        self._engine.start(wf.scheduler.options(id=run_id, if_exists="return"), initial)
        run = self._current(wf)
        if run is None:  # deleted between the two calls: the next start makes it again
            raise _errors.RunNotFoundError(run_id)
        if run.status.is_terminal:
            log.warning("%s", _stopped(wf, run))
            return run
        state = self._state(wf, run)
        if state.spec != wf.schedule:
            log.info(
                "schedule %s: its run goes by %s, the code says %s: telling it",
                wf.name,
                state.spec.describe(),
                wf.schedule.describe(),
            )
            update = _schedule_loop.Control("update", at=self._engine.clock(), spec=wf.schedule)
            self._engine.signal(run.id, _schedule_loop.SIGNAL, update)
        return run

    def _current(self, wf: _definitions.Workflow[Any, Any]) -> history.RunInfo | None:
        """The schedule's current run: the active one of its chain, else its latest."""
        run_id = _schedules.scheduler_id(wf.name)
        store = self._engine.store
        active = store.list_runs(statuses=history.ACTIVE_STATUSES, workflows=[run_id], limit=1)
        if active:
            return active[0]
        try:
            return stores.latest_run(store, run_id)
        except _errors.RunNotFoundError:
            return None

    def _state(
        self, wf: _definitions.Workflow[Any, Any], run: history.RunInfo
    ) -> _schedule_loop.State:
        """The state the run published last, or the one it started with."""
        events = self._engine.store.load(run.id).events
        decode = self._engine.codec.decode
        for event in reversed(events):
            if isinstance(event, history.EventSet) and event.name == _schedule_loop.EVENT:
                state: _schedule_loop.State = decode(event.data or b"null", _schedule_loop.State)
                return state
        assert wf.scheduler is not None
        started = decode(events[0].data or b"{}", wf.scheduler.input_type())
        first: _schedule_loop.State = started.state
        return first

    # -- reading ---------------------------------------------------------------------------

    def list(self) -> list[ScheduleInfo]:
        """Every schedule of this engine, by workflow name."""
        return [self.get(wf) for _, wf in sorted(self._scheduled().items())]

    def get(self, workflow: str | _definitions.Workflow[Any, Any]) -> ScheduleInfo:
        """One schedule: its spec, status, paused flag, last and next tick.

        Raises:
            UnknownWorkflowError: the engine has no such scheduled workflow.
        """
        wf = self._find(workflow)
        assert wf.schedule is not None
        run = self._current(wf)
        if run is None:
            spec = wf.schedule
            upcoming = spec.next_after(self._engine.clock())
            state = _schedule_loop.State(spec=spec, next_tick=upcoming)
            status, run_id = "not started", _schedules.scheduler_id(wf.name)
        else:
            state = self._state(wf, run)
            status, run_id = run.status.value, run.id
            if run.status.is_terminal:
                state.next_tick = None
        zone = state.spec.zone()

        def local(when: float | None) -> datetime | None:
            return None if when is None else datetime.fromtimestamp(when, zone)

        return ScheduleInfo(
            workflow=wf.name,
            schedule=state.spec,
            status=status,
            paused=state.paused,
            last_tick=local(state.last_tick),
            last_run=state.last_run,
            next_tick=local(state.next_tick),
            run_id=run_id,
        )

    # -- steering --------------------------------------------------------------------------

    def pause(self, workflow: str | _definitions.Workflow[Any, Any]) -> None:
        """Pause a schedule: its ticks start no run until it is resumed.

        The ticks of the pause are skipped, not caught up. The schedule takes the
        request as soon as a worker runs it; ``get()`` tells when it has.

        Raises:
            UnknownWorkflowError: the engine has no such scheduled workflow.
            RunStateError: the schedule's run was cancelled or failed.
        """
        self._send(workflow, _schedule_loop.Control("pause", at=self._engine.clock()))

    def resume(self, workflow: str | _definitions.Workflow[Any, Any]) -> None:
        """Resume a paused schedule: its next tick (a future one) starts a run again."""
        self._send(workflow, _schedule_loop.Control("resume", at=self._engine.clock()))

    def trigger(self, workflow: str | _definitions.Workflow[Any, Any]) -> str:
        """Start a run of the scheduled workflow now, paused or not; return the id it gets.

        The schedule starts it (as soon as a worker runs the schedule), with the
        current time as its tick and the id ``NAME@trigger-<time in UTC>``; wait for
        it with ``engine.handle(run_id)`` once it exists.
        """
        wf = self._find(workflow)
        at = self._engine.clock()
        self._send(wf, _schedule_loop.Control("trigger", at=at))
        return _schedules.trigger_id(wf.name, at)

    def _send(
        self, workflow: str | _definitions.Workflow[Any, Any], message: _schedule_loop.Control
    ) -> None:
        wf = self._find(workflow)
        run = self._start(wf)
        if run.status.is_terminal:
            raise _errors.RunStateError(_stopped(wf, run))
        self._engine.signal(run.id, _schedule_loop.SIGNAL, message)


def _stopped(wf: _definitions.Workflow[Any, Any], run: history.RunInfo) -> str:
    """What to do about a schedule whose run ended."""
    if run.status is history.RunStatus.FAILED:
        fix = f"fix the cause and resume it with `fluxo runs retry {run.id}`"
    else:
        fix = (
            "to start it afresh, delete its runs with engine.purge(older_than=0, "
            f"workflow={_schedules.scheduler_id(wf.name)!r}) and start a worker"
        )
    return f"schedule {wf.name} is stopped: its run {run.id} is {run.status.value}; {fix}"
