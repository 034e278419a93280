"""The functions workflow code calls: time, randomness, waiting, signals, patches, logging.

Each one is a durable call when made inside a workflow (recorded once, replayed
ever after): it calls the current runtime (:mod:`fluxo._runtime`), which the
executor implements. Outside a workflow each is a plain equivalent, so workflow
code can be unit-tested as ordinary Python.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random as _random
import time
import uuid as _uuid
from collections.abc import Coroutine, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any, Generic, NoReturn, TypeVar, overload

from typing_extensions import ParamSpec

from fluxo import _aio, _definitions, _durations, _errors, _names, _runtime

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")


def now() -> datetime:
    """The current time as an aware UTC datetime, recorded so replays see the same value.

    Outside a workflow it is simply the current time.
    """
    runtime = _runtime.current()
    if runtime is None:
        return datetime.now(timezone.utc)
    value: datetime = runtime.record_value(
        "now", lambda: datetime.fromtimestamp(runtime.now(), timezone.utc), datetime
    )
    return value


def uuid4() -> _uuid.UUID:
    """A random UUID, recorded so replays see the same value."""
    runtime = _runtime.current()
    if runtime is None:
        return _uuid.uuid4()
    value: _uuid.UUID = runtime.record_value("uuid4", _uuid.uuid4, _uuid.UUID)
    return value


def random() -> float:
    """A random float in ``[0, 1)``, recorded so replays see the same value."""
    runtime = _runtime.current()
    if runtime is None:
        return _random.random()
    value: float = runtime.record_value("random", _random.random, float)
    return value


def sleep(duration: timedelta | float) -> None:
    """Wait durably: the fire time is recorded and the worker is free meanwhile.

    The run resumes on whichever worker is alive at the fire time, never before
    it; if none is, as soon as one is. Outside a workflow it is ``time.sleep``.

    Args:
        duration: a ``timedelta`` or a number of seconds.
    """
    seconds = _durations.seconds(duration, "fluxo.sleep()")
    runtime = _runtime.current()
    if runtime is None:
        time.sleep(max(seconds, 0.0))
        return
    _sync_only(runtime, "fluxo.sleep()", "fluxo.sleep_async(...)")
    runtime.sleep_until(runtime.now() + seconds)


def sleep_until(when: datetime) -> None:
    """Wait durably until ``when`` (an aware datetime). See :func:`sleep`."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise _errors.DefinitionError(
            f"fluxo.sleep_until() takes a timezone-aware datetime, not {when!r}; "
            "for example datetime(2030, 1, 1, tzinfo=timezone.utc)"
        )
    runtime = _runtime.current()
    if runtime is None:
        time.sleep(max(when.timestamp() - time.time(), 0.0))
        return
    _sync_only(runtime, "fluxo.sleep_until()", "fluxo.sleep_until_async(...)")
    runtime.sleep_until(when.timestamp())


def wait_for_signal(name: str, *, timeout: timedelta | float | None = None, type: Any = Any) -> Any:
    """Wait durably for the signal ``name`` and return its payload, decoded as ``type``.

    A signal sent before the workflow reaches this call is kept and returned at
    once. Several signals with one name are returned in the order they were
    sent, each exactly once.

    Raises:
        SignalTimeout: ``timeout`` passed first. The deadline is recorded, so it
            holds across crashes and restarts.
    """
    _names.check_signal_name(name)
    seconds = None if timeout is None else _durations.seconds(timeout, "wait_for_signal(timeout=)")
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.wait_for_signal() waits inside a workflow; outside one there is no run "
            "to receive a signal"
        )
    _sync_only(runtime, "fluxo.wait_for_signal()", "fluxo.wait_for_signal_async(...)")
    return runtime.wait_for_signal(name, seconds, type)


def signal(run_id: str, name: str, payload: Any = None) -> None:
    """Send a signal to another run from a workflow, exactly once.

    Raises:
        SignalError: the target run does not exist or has finished (recorded, so
            replay raises it again).
    """
    _names.check_signal_name(name)
    _names.check_target_run_id(run_id, "fluxo.signal()")
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.signal() sends from inside a workflow; elsewhere use engine.signal()"
        )
    _sync_only(runtime, "fluxo.signal()", "fluxo.signal_async(...)")
    runtime.send_signal(run_id, name, payload)


def _sync_only(runtime: _runtime.Runtime, what: str, instead: str) -> None:
    if runtime.is_async:
        raise _errors.DefinitionError(
            f"{what} waits in the workflow's thread, and workflow {runtime.workflow_name!r} is "
            f"'async def': write 'await {instead}' there"
        )


def _async_only(runtime: _runtime.Runtime, what: str, instead: str) -> None:
    if not runtime.is_async:
        raise _errors.DefinitionError(
            f"{what} is for 'async def' workflows; workflow {runtime.workflow_name!r} is sync: "
            f"call {instead} there"
        )


def sleep_async(duration: timedelta | float) -> Coroutine[Any, Any, None]:
    """:func:`sleep` for ``async def`` workflows: ``await fluxo.sleep_async(timedelta(days=1))``.

    Outside a workflow it is ``asyncio.sleep``.
    """
    seconds = _durations.seconds(duration, "fluxo.sleep_async()")
    runtime = _runtime.current()
    if runtime is None:
        return asyncio.sleep(max(seconds, 0.0))
    _async_only(runtime, "fluxo.sleep_async()", "fluxo.sleep(...)")
    return _aio.outcome_of(lambda: runtime.sleep_until(runtime.now() + seconds))


def sleep_until_async(when: datetime) -> Coroutine[Any, Any, None]:
    """:func:`sleep_until` for ``async def`` workflows (an aware datetime)."""
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise _errors.DefinitionError(
            f"fluxo.sleep_until_async() takes a timezone-aware datetime, not {when!r}; "
            "for example datetime(2030, 1, 1, tzinfo=timezone.utc)"
        )
    runtime = _runtime.current()
    if runtime is None:
        return asyncio.sleep(max(when.timestamp() - time.time(), 0.0))
    _async_only(runtime, "fluxo.sleep_until_async()", "fluxo.sleep_until(...)")
    return _aio.outcome_of(lambda: runtime.sleep_until(when.timestamp()))


def wait_for_signal_async(
    name: str, *, timeout: timedelta | float | None = None, type: Any = Any
) -> Coroutine[Any, Any, Any]:
    """:func:`wait_for_signal` for ``async def`` workflows.

    ``approved = await fluxo.wait_for_signal_async("approved", type=bool)``
    """
    _names.check_signal_name(name)
    seconds = (
        None if timeout is None else _durations.seconds(timeout, "wait_for_signal_async(timeout=)")
    )
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.wait_for_signal_async() waits inside a workflow; outside one there is no "
            "run to receive a signal"
        )
    _async_only(runtime, "fluxo.wait_for_signal_async()", "fluxo.wait_for_signal(...)")
    return _aio.outcome_of(lambda: runtime.wait_for_signal(name, seconds, type))


def signal_async(run_id: str, name: str, payload: Any = None) -> Coroutine[Any, Any, None]:
    """:func:`signal` for ``async def`` workflows: ``await fluxo.signal_async(run_id, "go")``."""
    _names.check_signal_name(name)
    _names.check_target_run_id(run_id, "fluxo.signal_async()")
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.signal_async() sends from inside a workflow; elsewhere use "
            "engine.signal() (or await AsyncEngine.signal())"
        )
    _async_only(runtime, "fluxo.signal_async()", "fluxo.signal(...)")
    return _aio.outcome_of(lambda: runtime.send_signal(run_id, name, payload))


def continue_as_new(*args: Any, **kwargs: Any) -> NoReturn:
    """End this run and go on in a fresh run of the same workflow, with a fresh history.

    For workflows that loop forever (poll every hour, for ever): each round calls
    ``fluxo.continue_as_new(...)`` with the state the next round needs, so no
    history grows without bound. The arguments are checked against the workflow's
    signature and encoded like ``engine.start``'s. The current run ends
    ``completed`` with a ``continued_as_new`` event naming the next run, whose id
    is the first run's id followed by ``~1``, ``~2``... A deadline set with
    ``workflow.options(timeout=)`` carries over: it bounds the whole chain.

    Handles, ``engine.get_run()``, ``engine.cancel()`` and ``engine.signal()``
    given the first id (or any id of the chain) follow it to its latest run;
    ``engine.history()`` stays per run. It never returns: it unwinds the workflow
    with a control-flow exception that ``except Exception:`` does not catch.

    Example:
        >>> @fluxo.workflow
        ... def poll(cursor: int) -> None:
        ...     cursor = fetch_new_items(cursor)
        ...     fluxo.sleep(timedelta(hours=1))
        ...     fluxo.continue_as_new(cursor)

    Raises:
        DefinitionError: called outside a workflow, or with arguments that do not
            fit the workflow's signature.
        EncodeError: the arguments cannot be encoded.
    """
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.continue_as_new() ends the current run of a workflow; outside one there "
            "is no run to continue. Call the workflow again, or engine.start() it"
        )
    runtime.continue_as_new(args, kwargs)


class ChildHandle(Generic[R]):
    """A child run started by :func:`start_child`, inside the workflow that started it.

    Attributes:
        id: the child's run id (``engine.get_run(id)``, ``fluxo.signal(id, ...)``).
        workflow: the child's workflow name.
        detached: whether it was started with ``.options(detached=True)``.
    """

    def __init__(
        self,
        runtime: _runtime.Runtime,
        run_id: str,
        workflow: _definitions.Workflow[Any, R],
        detached: bool,
    ) -> None:
        self.id = run_id
        self.workflow = workflow.name
        self.detached = detached
        self._runtime = runtime
        self._return_type = workflow.return_type
        self._outcome: tuple[bool, Any] | None = None

    def __repr__(self) -> str:
        return f"ChildHandle({self.id!r}, workflow={self.workflow!r})"

    def _own_runtime(self, what: str) -> _runtime.Runtime:
        runtime = _runtime.current()
        if runtime is not self._runtime:
            raise _errors.DefinitionError(
                f"ChildHandle.{what}() is called inside the workflow that started the child "
                f"run {self.id!r}; elsewhere use engine.handle({self.id!r})"
            )
        return runtime

    def result(self) -> R:
        """Wait durably for the child to end and return its result.

        The outcome is recorded in this run's history, so a replay returns (or
        raises) it again without waiting. Calling it again returns the same.

        Raises:
            WorkflowFailedError: the child failed (its error type and message are kept).
            WorkflowCancelledError: the child was cancelled (``WorkflowTimeoutError``
                when its ``timeout=`` passed).
        """
        runtime = self._own_runtime("result")
        _sync_only(runtime, "ChildHandle.result()", "handle.result_async()")
        return self._result(runtime)

    def result_async(self) -> Coroutine[Any, Any, R]:
        """:meth:`result` for ``async def`` workflows: ``await handle.result_async()``."""
        runtime = self._own_runtime("result_async")
        _async_only(runtime, "ChildHandle.result_async()", "handle.result()")
        return _aio.outcome_of(lambda: self._result(runtime))

    def _result(self, runtime: _runtime.Runtime) -> R:
        if self._outcome is None:
            try:
                value = runtime.child_result(self.id, self._return_type)
            except _errors.FluxoError as exc:
                self._outcome = (False, exc)
                raise
            self._outcome = (True, value)
        ok, value = self._outcome
        if not ok:
            raise value
        result: R = value
        return result

    def cancel(self) -> None:
        """Ask the child to stop, as ``engine.cancel`` would; ``result()`` tells how it ended."""
        self._own_runtime("cancel").cancel_child(self.id)


def start_child(
    workflow: _definitions.Workflow[P, R], /, *args: P.args, **kwargs: P.kwargs
) -> ChildHandle[R]:
    """Start ``workflow`` as a child run of the current workflow; return its handle at once.

    The child is a run of its own: its own history, executed by any worker. Its
    id is the one given with ``workflow.options(id=...)``, else the parent's id
    and the call's position (``order-17~child-4``), the same on every replay.
    Wait for it with ``handle.result()``, whose outcome is recorded in the
    parent's history. Calling a workflow in a workflow, ``child(x)``, is
    ``start_child(child, x).result()``.

    When the parent is cancelled, or ends without having awaited a child, the
    child is cancelled too, unless it was started with
    ``workflow.options(detached=True)``.

    Example:
        >>> shipping = fluxo.start_child(ship, order_id)
        >>> receipt = charge(order_id)
        >>> tracking = shipping.result()

    Raises:
        DefinitionError: called outside a workflow, or with arguments that do not
            fit the workflow's signature.
        RunStateError: the id given is taken by another run (recorded, so replay
            raises it again).
    """
    if not isinstance(workflow, _definitions.Workflow):
        raise _errors.DefinitionError(
            f"fluxo.start_child() takes a @fluxo.workflow as its first argument, not {workflow!r}"
        )
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.start_child() starts a child run from inside a workflow; elsewhere use "
            "engine.start()"
        )
    _sync_only(runtime, "fluxo.start_child()", "fluxo.start_child_async(...)")
    run_id, detached = runtime.start_child(workflow, args, kwargs)
    return ChildHandle(runtime, run_id, workflow, detached)


def start_child_async(
    workflow: _definitions.Workflow[P, R],
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> Coroutine[Any, Any, ChildHandle[R]]:
    """:func:`start_child` for ``async def`` workflows; await the child later.

    ``shipping = await fluxo.start_child_async(ship, order_id)`` starts the child
    (an ``async def`` workflow or a plain one) and returns its handle at once;
    ``await shipping.result_async()`` waits for it, durably.
    """
    if not isinstance(workflow, _definitions.Workflow):
        raise _errors.DefinitionError(
            f"fluxo.start_child_async() takes a @fluxo.workflow as its first argument, "
            f"not {workflow!r}"
        )
    runtime = _runtime.current()
    if runtime is None:
        raise _errors.DefinitionError(
            "fluxo.start_child_async() starts a child run from inside a workflow; elsewhere "
            "use engine.start() (or await AsyncEngine.start())"
        )
    _async_only(runtime, "fluxo.start_child_async()", "fluxo.start_child(...)")

    def start() -> ChildHandle[R]:
        run_id, detached = runtime.start_child(workflow, args, kwargs)
        return ChildHandle(runtime, run_id, workflow, detached)

    return _aio.outcome_of(start)


def patched(change: str) -> bool:
    """Tell whether this run takes the new branch of a code change named ``change``.

    Runs that passed this point before the change was deployed replay the old
    branch (``False``); every run that reaches it under the new code takes the
    new one (``True``), recorded so it replays the same way. Outside a workflow:
    ``True``.

    Example:
        >>> if fluxo.patched("send-sms"):
        ...     send_sms(order_id)
        ... else:
        ...     send_email(order_id)
    """
    _names.check_patch_id(change)
    runtime = _runtime.current()
    return True if runtime is None else runtime.patched(change)


def deprecate_patch(change: str) -> None:
    """Mark a patch whose old branch no run needs any more.

    Once every run that took the old branch has finished, replace
    ``if fluxo.patched(x): new() else: old()`` by ``fluxo.deprecate_patch(x); new()``.
    Runs that recorded the marker still replay; new runs record nothing. When
    those runs have finished too, remove the call.
    """
    _names.check_patch_id(change)
    runtime = _runtime.current()
    if runtime is not None:
        runtime.deprecate_patch(change)


def parallel(*calls: _definitions.Call[R], max_concurrency: int | None = None) -> list[R]:
    """Run step calls concurrently, durably, and return their results in call order.

    Make each call with ``step.bind(*args)``. The block is one durable call: it
    records which steps its branches call (so a changed fan-out is detected as
    nondeterminism on replay), then each branch's outcome as it finishes, in
    whatever order that is. A resumed run returns recorded outcomes and runs
    only the branches that have none; replay never depends on which branch
    finished first. Branches run on the engine's bounded pool of threads
    (``Engine(parallel_threads=16)``) and each follows its step's ``retry=`` and
    ``timeout=``; a branch's retry back-off waits in its thread.

    When branches fail for good, the others still run to their end and are
    recorded; then the failure of the lowest-index failed branch is raised, as
    the :class:`fluxo.StepError` a plain call of that step would raise (the
    other failures are in the run's history). A cancellation lets the running
    branches finish, starts no more, and is raised at the block if some never
    settled. Outside a workflow the calls run one after another, as plain calls.

    Args:
        calls: the branches, made with ``step.bind(...)``.
        max_concurrency: the most branches of this block running at once
            (default: as many as the engine's threads allow).

    Example:
        >>> receipt, slot = fluxo.parallel(charge.bind(order_id, 4200), reserve.bind(order_id))
    """
    _check_calls(calls, "fluxo.parallel()")
    limit = _concurrency(max_concurrency, "fluxo.parallel()")
    runtime = _runtime.current()
    if runtime is None:
        return [call.step(*call.args, **call.kwargs) for call in calls]
    _sync_only(runtime, "fluxo.parallel()", "fluxo.parallel_async(...)")
    result: list[R] = runtime.call_parallel(calls, limit)
    return result


def _check_calls(calls: Sequence[Any], what: str) -> None:
    for position, item in enumerate(calls):
        if not isinstance(item, _definitions.Call):
            hint = (
                f"; pass {item.name}.bind(...) instead"
                if isinstance(item, _definitions.Step)
                else ""
            )
            raise _errors.DefinitionError(
                f"{what} takes step calls made with step.bind(...), but argument "
                f"{position} is {item!r}{hint}; for example "
                f"{what[:-1]}charge.bind(order_id), reserve.bind(order_id))"
            )


@overload
def parallel_async(
    *calls: _definitions.Call[Coroutine[Any, Any, T]], max_concurrency: int | None = None
) -> Coroutine[Any, Any, list[T]]: ...


@overload
def parallel_async(
    *calls: _definitions.Call[R], max_concurrency: int | None = None
) -> Coroutine[Any, Any, list[R]]: ...


def parallel_async(
    *calls: _definitions.Call[Any], max_concurrency: int | None = None
) -> Coroutine[Any, Any, list[Any]]:
    """:func:`parallel` for ``async def`` workflows: the branches run at once, durably.

    ``quotes = await fluxo.parallel_async(quote.bind("Oslo"), quote.bind("Rome"))``.
    Its steps may be ``async def`` (each awaited on Fluxo's step loop) or plain
    (each on a thread); the block is recorded as :func:`parallel` records it, so
    whichever branch finishes first, every replay returns the same results.
    Outside a workflow the calls run one after another, as plain calls.
    """
    _check_calls(calls, "fluxo.parallel_async()")
    limit = _concurrency(max_concurrency, "fluxo.parallel_async()")
    runtime = _runtime.current()
    if runtime is None:
        return _one_by_one(calls)
    _async_only(runtime, "fluxo.parallel_async()", "fluxo.parallel(...)")
    return _aio.outcome_of(lambda: runtime.call_parallel(calls, limit))


async def _one_by_one(calls: Sequence[_definitions.Call[Any]]) -> list[Any]:
    results = []
    for call in calls:
        made = call.step(*call.args, **call.kwargs)
        results.append(await made if inspect.isawaitable(made) else made)
    return results


def map(
    step: _definitions.Step[[T], R], items: Iterable[T], *, max_concurrency: int | None = None
) -> list[R]:
    """Call ``step`` once per item, concurrently and durably; return the results in order.

    ``fluxo.map(step, items)`` is ``fluxo.parallel(*(step.bind(i) for i in items))``:
    one durable block with one branch per item. See :func:`parallel`.

    Example:
        >>> sizes = fluxo.map(resize, image_ids, max_concurrency=8)
    """
    _check_map(step, items, "fluxo.map()")
    runtime = _runtime.current()
    if runtime is not None:
        _sync_only(runtime, "fluxo.map()", "fluxo.map_async(...)")
    return parallel(*(step.bind(item) for item in items), max_concurrency=max_concurrency)


@overload
def map_async(
    step: _definitions.Step[[T], Coroutine[Any, Any, R]],
    items: Iterable[T],
    *,
    max_concurrency: int | None = None,
) -> Coroutine[Any, Any, list[R]]: ...


@overload
def map_async(
    step: _definitions.Step[[T], R], items: Iterable[T], *, max_concurrency: int | None = None
) -> Coroutine[Any, Any, list[R]]: ...


def map_async(
    step: _definitions.Step[[Any], Any], items: Iterable[Any], *, max_concurrency: int | None = None
) -> Coroutine[Any, Any, list[Any]]:
    """:func:`map` for ``async def`` workflows: ``await fluxo.map_async(resize, image_ids)``.

    One durable block with one branch per item, run at once; see :func:`parallel_async`.
    """
    _check_map(step, items, "fluxo.map_async()")
    runtime = _runtime.current()
    if runtime is not None:
        _async_only(runtime, "fluxo.map_async()", "fluxo.map(...)")
    return parallel_async(*(step.bind(item) for item in items), max_concurrency=max_concurrency)


def _check_map(step: Any, items: Any, what: str) -> None:
    if not isinstance(step, _definitions.Step):
        raise _errors.DefinitionError(
            f"{what} takes a @fluxo.step as its first argument, not {step!r}"
        )
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise _errors.DefinitionError(
            f"{what} takes an iterable of items (a list, tuple, range...), not {items!r}"
        )


def _concurrency(value: int | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise _errors.DefinitionError(
            f"{what}: max_concurrency must be a whole number >= 1 or None, not {value!r}"
        )
    return value


def in_workflow() -> bool:
    """Tell whether the caller runs inside a workflow (and not inside a step)."""
    return _runtime.current() is not None


def is_replaying() -> bool:
    """Tell whether the current workflow is replaying recorded history."""
    runtime = _runtime.current()
    return runtime is not None and runtime.replaying


class _WorkflowLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger for workflow code that stays quiet while history replays.

    A resumed run re-executes its workflow from the top; without this, every
    log line before the resume point would be written again.
    """

    def isEnabledFor(self, level: int) -> bool:
        runtime = _runtime.current()
        if runtime is not None and runtime.replaying:
            return False
        enabled: bool = self.logger.isEnabledFor(level)
        return enabled

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        runtime = _runtime.current()
        if runtime is not None:
            extra = dict(kwargs.get("extra") or {})
            extra.setdefault("fluxo_run_id", runtime.run_id)
            extra.setdefault("fluxo_workflow", runtime.workflow_name)
            kwargs["extra"] = extra
        return msg, kwargs


logger = _WorkflowLogger(logging.getLogger("fluxo.workflow"), {})
"""Log from workflow code with this; it is silent while a run replays its history."""
