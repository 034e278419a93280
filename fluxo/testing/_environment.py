"""The time-skipping test environment: durable workflows under plain pytest.

A :class:`WorkflowEnvironment` owns an engine on a store (in memory by default)
and a virtual clock, and executes every run itself, in the calling thread, one
at a time. Between two calls of the test the environment is quiet: everything
that can run at the current virtual time has run. Virtual time moves only when
the test waits for a result (it jumps to the next due timer whenever every run
waits) or calls :meth:`WorkflowEnvironment.advance`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, TypeAlias, TypeVar, overload

from typing_extensions import ParamSpec

from fluxo import (
    _definitions,
    _durations,
    _engine,
    _errors,
    _executor,
    _leases,
    _queue_config,
    _queues,
    stores,
)
from fluxo import codec as _codec
from fluxo import history as _history
from fluxo.testing import _children, _stubs

P = ParamSpec("P")
R = TypeVar("R")

_LEASE = 3600.0
"""The lease the environment takes on a run it executes (virtual seconds)."""

_TICK = 0.001
"""How far the clock moves when the next wake-up is already due but nothing was claimable."""

Run: TypeAlias = str | _engine.RunHandle[Any]
"""A run, named by its id or by the handle :meth:`WorkflowEnvironment.start` returned."""


class _VirtualClock:
    """Seconds since the epoch that move only when the environment moves them, never back."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def move_to(self, when: float) -> None:
        self.now = max(self.now, when)


class _DrivenHandle(_engine.RunHandle[R]):
    """A handle whose ``result()`` drives the environment until the run has finished."""

    def __init__(self, env: WorkflowEnvironment, run_id: str, return_type: Any) -> None:
        super().__init__(env.engine, run_id, return_type)
        self._env = env

    def result(self, timeout: timedelta | float | None = None) -> R:
        """Execute runs, skipping time, until this run finishes; return its result.

        Args:
            timeout: virtual time (a ``timedelta`` or seconds) to let pass at most.

        Raises:
            RunNotFinishedError: the run is still unfinished after ``timeout``, or
                it can never finish (it waits for a signal nothing will send).
            WorkflowFailedError, NondeterminismError, WorkflowCancelledError,
            WorkflowTimeoutError: as :meth:`fluxo.RunHandle.result`.
        """
        seconds = None if timeout is None else _durations.seconds(timeout, "result(timeout=)")
        self._env._drive_until(self.id, seconds, "handle.result()")
        return super().result(timeout=0)

    def cancel(self) -> _history.RunInfo:
        """Ask the run to stop; see :meth:`WorkflowEnvironment.cancel`."""
        return self._env.cancel(self.id)


class WorkflowEnvironment:
    """A fast, in-process place to test workflows: time skips, steps and children can be stubbed.

    Every run is executed by the environment itself, in the calling thread. Each
    call (``start``, ``signal``, ``cancel``, ``advance``) returns once everything
    that can run at the current virtual time has run. Waiting for a result jumps
    the clock from one due timer to the next, so a workflow that sleeps three days
    finishes in milliseconds.

    Args:
        workflows: workflows to register now. Any workflow handed to
            :meth:`start` or :meth:`run` is registered then, so this is only
            needed for runs that code under test starts through ``env.engine``.
        store: a store URL or a :class:`~fluxo.stores.Store`; in memory by default.
            A store object is not closed by the environment.
        always_replay: after every recorded durable call, execute the run again
            from its history (on by default). Each call is then replayed at least
            once, as it is when a real run resumes after a wait, a crash or a
            deploy, so a workflow that does not replay the way it ran fails here
            with ``NondeterminismError``. Turn it off for workflows with very
            long histories: the cost grows with the square of their length.
        start_time: where the virtual clock starts (an aware datetime); the
            current time by default.
        codec: the engine's codec; see :class:`fluxo.Engine`.
        observers: the engine's observers; see :mod:`fluxo.observe`. Under
            ``always_replay`` they are told of every replay too (``replayed=True``).
        queues: the engine's :class:`fluxo.Queue` limits; the environment admits
            runs to every queue under them, as workers do (docs/queues.md).

    Example:
        >>> with WorkflowEnvironment() as env:
        ...     env.stub(charge, returns=Receipt("r-1", 4200))
        ...     handle = env.start(checkout, "o-17", 4200)   # runs until it waits
        ...     env.signal(handle, "approved", True)
        ...     assert handle.result() == "r-1"              # three days pass
        ...     assert env.steps_run(handle) == [reserve, charge]
    """

    def __init__(
        self,
        *,
        workflows: Iterable[_definitions.Workflow[Any, Any]] = (),
        store: str | stores.Store = "memory://",
        always_replay: bool = True,
        start_time: datetime | None = None,
        codec: _codec.Codec | None = None,
        observers: Iterable[object] = (),
        queues: Iterable[_queue_config.Queue] = (),
    ) -> None:
        if not isinstance(always_replay, bool):
            raise _errors.DefinitionError(
                f"always_replay= takes True or False, not {always_replay!r}"
            )
        if start_time is None:
            start = time.time()
        elif isinstance(start_time, datetime) and start_time.tzinfo is not None:
            start = start_time.timestamp()
        else:
            raise _errors.DefinitionError(
                f"start_time= takes a timezone-aware datetime, not {start_time!r}; for "
                "example datetime(2030, 1, 1, tzinfo=timezone.utc)"
            )
        self.always_replay = always_replay
        self._clock = _VirtualClock(start)
        self.engine = _engine.Engine(
            store,
            workflows=workflows,
            codec=codec,
            clock=self._clock,
            observers=observers,
            queues=queues,
        )
        """The engine the environment drives, for code under test that needs one."""
        self._owner = f"{self.engine.instance_id}:test-environment"
        self._stubs: list[_stubs.Stub[Any]] = []
        self._calls: list[_stubs.StepCall | _stubs.ChildCall] = []
        self._seen: dict[tuple[str, str], _stubs.Target] = {}
        """The steps called and child workflows started so far, by kind and name."""
        self._children = _children.ChildRuns(self._stubs, self._record_call, self.engine.codec)
        self._driving = False
        self._closed = False

    def __repr__(self) -> str:
        return f"WorkflowEnvironment(now={self.now().isoformat()}, store={self.store!r})"

    def __enter__(self) -> WorkflowEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every stub and close the engine (and the store, if it came from a URL)."""
        if not self._closed:
            self._closed = True
            self._stubs.clear()
            self.engine.close()

    @property
    def store(self) -> stores.Store:
        """The store the runs are recorded in."""
        return self.engine.store

    # -- time --------------------------------------------------------------------------

    def now(self) -> datetime:
        """The virtual time, as an aware UTC datetime (what ``fluxo.now()`` would record)."""
        return datetime.fromtimestamp(self._clock(), timezone.utc)

    def advance(self, duration: timedelta | float) -> None:
        """Move the virtual clock forward by ``duration``, running everything that falls due.

        Timers that fire within ``duration`` fire in order, each at its own time.
        Called from a step (to pretend the step took long), it only moves the clock.

        Args:
            duration: a ``timedelta`` or a number of seconds, not negative.
        """
        seconds = _durations.seconds(duration, "advance()")
        if seconds < 0:
            raise _errors.DefinitionError(
                f"advance() moves time forward only; got {duration!r}. Virtual time never "
                "goes back, as a real clock does not for a durable timer"
            )
        target = self._clock() + seconds
        if self._driving:
            self._clock.move_to(target)
            return
        self._check_open()
        self._check_stubs()
        while True:
            self._settle()
            due = self._next_due()
            if due is None or due > target:
                break
            self._clock.move_to(due)
        self._clock.move_to(target)
        self._settle()

    # -- starting and steering runs ----------------------------------------------------

    def start(
        self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
    ) -> _engine.RunHandle[R]:
        """Start a run and execute it until it waits or ends; return its handle.

        Like :meth:`fluxo.Engine.start`, idempotent on the run id set with
        ``workflow.options(id=...)``. The workflow is registered if it is not yet.
        The handle's ``result()`` drives the environment, skipping time, until the
        run has finished.
        """
        self._check_open()
        self._register(workflow)
        if not self._driving:
            self._check_stubs()
        handle = self.engine.start(workflow, *args, **kwargs)
        self._settle()
        return _DrivenHandle(self, handle.id, workflow.return_type)

    def run(self, workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Start a run and drive it to its end, skipping time; return its result.

        Raises as :meth:`fluxo.Engine.run` does (``WorkflowFailedError``,
        ``NondeterminismError``, ``WorkflowCancelledError``...), and
        ``RunNotFinishedError`` if the run can never finish because it waits for
        a signal that nothing will send.
        """
        if self._driving:
            raise self._reentered("env.run()")
        return self.start(workflow, *args, **kwargs).result()

    def signal(self, run: Run, name: str, payload: Any = None) -> None:
        """Send the signal ``name`` to a run, then run what it wakes.

        Raises:
            RunNotFoundError: no such run.
            RunStateError: the run has finished.
            DefinitionError: a stub given by name names no step or workflow, or
                several; nothing is sent, so the real one cannot run in its place.
        """
        self._check_open()
        if not self._driving:
            self._check_stubs()
        self.engine.signal(_run_id(run), name, payload)
        self._settle()

    def cancel(self, run: Run) -> _history.RunInfo:
        """Ask a run to stop (see :meth:`fluxo.Engine.cancel`), let it unwind, and return it.

        Raises:
            RunNotFoundError: no such run.
            RunStateError: the run already completed or failed.
            DefinitionError: a stub given by name names no step or workflow, or several.
        """
        self._check_open()
        if not self._driving:
            self._check_stubs()
        run_id = _run_id(run)
        self.engine.cancel(run_id)
        self._settle()
        return self.engine.get_run(run_id)

    # -- stubs -------------------------------------------------------------------------

    @overload
    def stub(
        self,
        target: _definitions.Step[Any, Any],
        replacement: Callable[..., Any] | None = None,
        /,
        *,
        returns: Any = _stubs.UNSET,
        raises: BaseException | type[BaseException] | None = None,
    ) -> _stubs.Stub[_stubs.StepCall]: ...

    @overload
    def stub(
        self,
        target: _definitions.Workflow[Any, Any],
        replacement: Callable[..., Any] | None = None,
        /,
        *,
        returns: Any = _stubs.UNSET,
        raises: BaseException | type[BaseException] | None = None,
    ) -> _stubs.Stub[_stubs.ChildCall]: ...

    @overload
    def stub(
        self,
        target: str,
        replacement: Callable[..., Any] | None = None,
        /,
        *,
        returns: Any = _stubs.UNSET,
        raises: BaseException | type[BaseException] | None = None,
    ) -> _stubs.Stub[Any]: ...

    def stub(
        self,
        target: _stubs.Ref,
        replacement: Callable[..., Any] | None = None,
        /,
        *,
        returns: Any = _stubs.UNSET,
        raises: BaseException | type[BaseException] | None = None,
    ) -> _stubs.Stub[Any]:
        """Make a step, or a child workflow, answer with a value, an exception or a function.

        Give exactly one of ``replacement`` (a function with the step's or
        workflow's signature, called instead of it), ``returns=`` or ``raises=``.
        What a stub returns is recorded like a real result: it must fit the return
        annotation. The newest stub of a step or workflow answers.

        A step's stub answers each live call of the step; what it raises goes
        through the step's retry policy. A workflow's stub answers each child run
        of the workflow that a workflow starts (a child call, ``fluxo.start_child``):
        the child is still a run of its own, and the stub is its function, called
        with the child's arguments as the child would receive them. It completes
        with what the stub returns, or fails with what it raises, so the parent
        records and sees what a real child ending that way gives
        (``fluxo.WorkflowFailedError`` for a failure). A run the test starts itself
        (``env.start``, ``env.run``) is never stubbed.

        Args:
            target: the step or workflow object, or its name: full
                (``"shop.charge"``), an alias, or the short function name
                (``"charge"``) when that is unambiguous. A name must name one step
                or one workflow that the environment's workflows can reach; it is
                checked when the next run starts.
            replacement: the function called instead of the step or workflow.
            returns: the value every call returns.
            raises: the exception (an instance or a class) every call raises.

        Returns:
            The stub: ``remove()`` it, or use it as a context manager to scope it.

        Example:
            >>> env.stub(charge, returns=Receipt("r-1", 4200))
            >>> env.stub("shop.charge", raises=ConnectionError("card network down"))
            >>> with env.stub(charge, lambda order_id, cents: Receipt("r-2", cents)):
            ...     env.run(checkout, "o-18", 100)
            >>> env.stub(ship_order, returns="track-1")  # a child workflow
        """
        self._check_open()
        stub = _stubs.make_stub(self._stubs, target, replacement, returns, raises)
        if isinstance(target, str):
            try:
                (found,) = self._resolve(f"env.stub({target!r})", target, unique=True)
            except _errors.DefinitionError:
                pass  # checked again before the next run, when its workflow may be known
            else:
                stub.check_against(found)
        self._stubs.append(stub)
        return stub

    @property
    def stubs(self) -> list[_stubs.Stub[Any]]:
        """The active stubs, oldest first."""
        return list(self._stubs)

    # -- inspecting --------------------------------------------------------------------

    def history(self, run: Run) -> list[_history.Event]:
        """The run's recorded history, oldest event first."""
        self._check_open()
        return self.engine.history(_run_id(run))

    @overload
    def calls(
        self, target: _definitions.Step[Any, Any], *, run: Run | None = None
    ) -> list[_stubs.StepCall]: ...

    @overload
    def calls(
        self, target: _definitions.Workflow[Any, Any], *, run: Run | None = None
    ) -> list[_stubs.ChildCall]: ...

    @overload
    def calls(
        self, target: str | None = None, *, run: Run | None = None
    ) -> list[_stubs.StepCall | _stubs.ChildCall]: ...

    def calls(self, target: _stubs.Ref | None = None, *, run: Run | None = None) -> list[Any]:
        """The live calls of steps and child workflows (real or stubbed), oldest first.

        A step's call is a :class:`~fluxo.testing.StepCall`, recorded per attempt;
        a child workflow's a :class:`~fluxo.testing.ChildCall`, recorded once per
        child run as its function (or stub) returns or raises.

        Args:
            target: only the calls of this step or workflow (object or name, as for
                :meth:`stub`).
            run: only the calls made by this run (id or handle): the steps it
                called and the children it started.
        """
        calls = self._calls
        if run is not None:
            run_id = _run_id(run)
            calls = [c for c in calls if c.run_id == run_id]
        if target is not None:
            label = f"env.calls({target!r})"
            _stubs.check_ref(label, target)
            kind: type[Any] = object  # an object means its own kind only already
            if isinstance(target, str):
                kind = type(self._resolve(label, target, unique=False)[0])
            calls = [
                c
                for c in calls
                if isinstance(called := _stubs.called(c), kind) and _stubs.is_target(called, target)
            ]
        return list(calls)

    def steps_run(self, run: Run | None = None) -> list[_definitions.Step[Any, Any]]:
        """The steps called live, in order, once per attempt: ``[reserve, charge]``.

        Args:
            run: only the steps this run called (id or handle); all runs by default.
        """
        return [call.step for call in self.calls(run=run) if isinstance(call, _stubs.StepCall)]

    # -- driving -----------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise _errors.RunStateError(
                "this WorkflowEnvironment is closed; create a new one, or use it inside its "
                "'with WorkflowEnvironment() as env:' block"
            )

    def _reentered(self, what: str) -> _errors.RunStateError:
        return _errors.RunStateError(
            f"{what} was called from inside a step or workflow that the environment is "
            "executing; it cannot wait for a run there. Use env.start() (the run executes "
            "once the current one waits or ends)"
        )

    def _register(self, workflow: _definitions.Workflow[Any, Any]) -> None:
        if (
            isinstance(workflow, _definitions.Workflow)
            and workflow.name in self.engine.workflow_names
            and self.engine.lookup(workflow.name).fn is workflow.fn
        ):
            return
        self.engine._register([workflow])

    def _next_due(self) -> float | None:
        """When the next run can be claimed, nudged past now if that is already due."""
        now = self._clock()
        due = self.store.next_wake(self.engine.workflow_names, now=now)
        admission = self._admit()
        if admission is not None:
            due = admission if due is None else min(due, admission)
        if due is not None and due <= now:
            due = now + _TICK  # due, but held by a lease that ends right now
        return due

    def _admit(self) -> float | None:
        """Admit what the named queues let in now; when a round may admit more."""
        named = [wf.queue for wf in self.engine.workflows]
        served = _queues.served_queues(None, self.engine.queues, named, self._owner)
        return served.admit(self.store, self._clock) if served.named else None

    def _settle(self) -> None:
        """Execute every run that can run at the current virtual time, one at a time."""
        if self._driving:
            return  # called from a step: the loop already running picks it up
        self._driving = True
        try:
            while True:
                self._admit()
                now = self._clock()
                claimed = self.store.claim(
                    self._owner,
                    self.engine.workflow_names,
                    now=now,
                    lease_until=now + _LEASE,
                    limit=1,
                )
                if not claimed:
                    return
                run_id = claimed[0].id
                runner = self.engine.runner
                heartbeat = _leases.Heartbeat(runner, self._owner, _LEASE)  # never started
                runner.execute_claimed(
                    run_id, self._owner, heartbeat=heartbeat, options=self._options(run_id)
                )
        finally:
            self._driving = False

    def _drive_until(self, run_id: str, timeout: float | None, what: str) -> None:
        """Run everything, jumping from one due wake-up to the next, until ``run_id`` ends."""
        if self._driving:
            raise self._reentered(what)
        self._check_open()
        if timeout is not None and timeout < 0:
            raise _errors.DefinitionError(f"{what}: timeout must not be negative, got {timeout}")
        self._check_stubs()
        limit = None if timeout is None else self._clock() + timeout
        while True:
            self._settle()
            run = self.engine.get_run(run_id)  # the latest run of a chain
            if run.status.is_terminal:
                return
            due = self._next_due()
            if limit is not None and (due is None or due > limit):
                self._clock.move_to(limit)
                self._settle()
                run = self.engine.get_run(run_id)  # the latest run of a chain
                if run.status.is_terminal:
                    return
                raise _errors.RunNotFinishedError(
                    f"run {run_id!r} is still {run.status.value} after {timeout:g}s of "
                    f"virtual time (now {self.now().isoformat()}); {self._waiting_for(run)}"
                )
            if due is None:
                raise self._stuck(run)
            self._clock.move_to(due)

    def _waiting_for(self, run: _history.RunInfo) -> str:
        events = self.store.load(run.id).events
        last = events[-1] if events else None
        children = [e.name for e in events if isinstance(e, _history.ChildStarted)]
        awaited = {e.name for e in events if isinstance(e, _history.CHILD_OUTCOMES)}
        for child_id in children:
            if child_id in awaited:
                continue
            with contextlib.suppress(_errors.RunNotFoundError):
                child = self.engine.get_run(child_id)
                if not child.status.is_terminal:
                    return f"its child run {child.id!r} is unfinished: {self._waiting_for(child)}"
        if isinstance(last, _history.SignalWaitStarted):
            return f"it waits for signal {last.name!r}"
        if isinstance(last, _history.TimerStarted):
            fire_at = self.engine.codec.decode(last.data or b"null", float)
            when = datetime.fromtimestamp(fire_at, timezone.utc).isoformat()
            return f"its timer {last.name!r} fires at {when}"
        return f"it is {run.status.value}"

    def _stuck(self, run: _history.RunInfo) -> _errors.RunNotFinishedError:
        waiting = self._waiting_for(run)
        events = self.store.load(run.id).events
        last = events[-1] if events else None
        if isinstance(last, _history.SignalWaitStarted):
            fix = (
                f"Send it with env.signal({run.id!r}, {last.name!r}, payload) before asking "
                "for the result, or give the wait a timeout="
            )
        else:
            fix = "Nothing is scheduled to wake it."
        return _errors.RunNotFinishedError(
            f"run {run.id!r} (workflow {run.workflow}) can never finish in this environment: "
            f"{waiting}, and nothing left in the environment can wake it (no timer is set "
            f"and no run is ready). {fix}"
        )

    def _options(self, run_id: str) -> _executor.RunOptions:
        """How the environment executes a run: stubs, call records, virtual time, replays."""

        def run_step(
            step: _definitions.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
        ) -> Any:
            return self._call_step(run_id, step, args, kwargs)

        def child_started(child_id: str, workflow: _definitions.Workflow[Any, Any]) -> None:
            self._child_started(run_id, child_id, workflow)

        options = _executor.RunOptions(
            step_runner=run_step,
            pause=self._pause,
            restart_after_record=self.always_replay,
            child_started=child_started,
        )
        run_child = self._children.runner(run_id)
        if run_child is None:
            return options
        return dataclasses.replace(options, workflow_runner=run_child)

    def _child_started(
        self, parent: str, child_id: str, workflow: _definitions.Workflow[Any, Any]
    ) -> None:
        self._register(workflow)  # so the environment runs the child, as a worker would
        self._seen.setdefault((workflow.kind, workflow.name), workflow)
        self._children.started(parent, child_id, workflow)

    def _pause(self, seconds: float) -> None:
        self._clock.move_to(self._clock() + seconds)

    def _call_step(
        self,
        run_id: str,
        step: _definitions.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Any:
        self._seen.setdefault(("step", step.name), step)
        stub = next((s for s in reversed(self._stubs) if s.answers(step)), None)
        function = step.fn if stub is None else stub.behaviour
        call = _stubs.StepCall(run_id, step, tuple(args), dict(kwargs), stubbed=stub is not None)
        try:
            result = function(*args, **kwargs)
        except Exception as exc:
            self._record_call(stub, dataclasses.replace(call, error=exc))
            raise
        self._record_call(stub, dataclasses.replace(call, result=result))
        return result

    def _record_call(
        self, stub: _stubs.Stub[Any] | None, call: _stubs.StepCall | _stubs.ChildCall
    ) -> None:
        self._calls.append(call)
        if stub is not None:
            stub.calls.append(call)

    # -- finding steps and workflows by name ---------------------------------------------

    def _check_stubs(self) -> None:
        """Check that every stub given by name names one step or workflow the workflows reach."""
        for stub in self._stubs:
            if isinstance(stub.target, str):
                (found,) = self._resolve(f"env.stub({stub.target!r})", stub.target, unique=True)
                stub.check_against(found)

    def _resolve(self, label: str, name: str, *, unique: bool) -> list[_stubs.Target]:
        known = [*self._seen.values()]
        known += [s.target for s in self._stubs if not isinstance(s.target, str)]
        targets = _stubs.reachable(self.engine.workflows, known)
        return _stubs.resolve(label, name, targets, self.engine.workflow_names, unique=unique)


# -- helpers ---------------------------------------------------------------------------


def _run_id(run: Run) -> str:
    if isinstance(run, _engine.RunHandle):
        return run.id
    if isinstance(run, str) and run:
        return run
    raise _errors.DefinitionError(
        f"expected a run id or the handle env.start() returned, not {run!r}"
    )
