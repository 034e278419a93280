"""The decorators: ``@fluxo.workflow`` and ``@fluxo.step`` turn functions into definitions.

They only define (no global state is touched). An ``async def`` workflow becomes
an :class:`~fluxo._definitions.AsyncWorkflow`, whose calls as a child are awaited;
an ``async def`` step a ``Step`` whose calls are awaited.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any, Protocol, TypeVar, overload

from typing_extensions import ParamSpec

from fluxo import _durations, _errors, _queue_config, _retry
from fluxo._definitions import AsyncWorkflow, Step, Workflow, _check_function

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")


class _MakesWorkflow(Protocol):
    """What ``@fluxo.workflow(name=...)`` returns: the decorator proper."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, T]], /) -> AsyncWorkflow[P, T]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Workflow[P, R]: ...


@overload
def workflow(fn: Callable[P, Coroutine[Any, Any, T]], /) -> AsyncWorkflow[P, T]: ...


@overload
def workflow(fn: Callable[P, R], /) -> Workflow[P, R]: ...


@overload
def workflow(
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    check_types: bool = True,
    max_recoveries: int | None = None,
    queue: str | _queue_config.Queue | None = None,
) -> _MakesWorkflow: ...


def workflow(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    check_types: bool = True,
    max_recoveries: int | None = None,
    queue: str | _queue_config.Queue | None = None,
) -> Any:
    """Mark a function as a durable workflow. Works bare or called.

    Args:
        fn: the function (when used bare).
        name: the persisted name; defaults to ``module.qualname``. Histories refer
            to it, so keep it stable (or list the old one in ``aliases``).
        aliases: former names, so runs started under them still resume.
        check_types: refuse, now, parameter and return annotations the default
            JSON codec cannot decode (``object``, a plain class, ``Callable``...),
            naming each. Pass ``False`` when the ``Engine``'s own codec decodes
            them; an Engine whose codec has a ``check_type`` method checks its
            workflows with it instead.
        max_recoveries: how many times a run may be taken over from an execution
            that died (its worker was killed or crashed, or lost its lease) before
            it is given up: the next takeover ends it ``dead`` instead of running
            it again, so a run that kills its worker at the same place each time
            stops taking workers down. ``None`` (the default): no limit. A dead
            run is resumed by ``engine.retry`` (``fluxo runs retry``).
        queue: the queue its runs are in (a name or a :class:`fluxo.Queue`):
            workers serving it admit them under its limits (docs/queues.md).
            ``None``: the default queue.

    Example:
        >>> @fluxo.workflow
        ... def checkout(order_id: str, cents: int) -> str:
        ...     receipt = charge(order_id, cents)
        ...     return receipt.id

    An ``async def`` workflow awaits its steps (``await charge(...)``) and the
    async forms of the durable calls (``await fluxo.sleep_async(...)``).
    """
    if max_recoveries is not None and (
        isinstance(max_recoveries, bool)
        or not isinstance(max_recoveries, int)
        or max_recoveries < 0
    ):
        raise _errors.DefinitionError(
            f"max_recoveries= takes a whole number of takeovers, 0 or more (0: the first "
            f"takeover of a run whose execution died ends it dead), or None for no limit, "
            f"not {max_recoveries!r}"
        )

    queue_name = (
        _queue_config.DEFAULT if queue is None else _queue_config.queue_name(queue, "queue=")
    )

    def decorate(func: Callable[..., Any]) -> Workflow[..., Any]:
        persisted, checked = _check_function(func, "workflow", name, aliases, check_types)
        kind = AsyncWorkflow if _is_coroutine_function(func) else Workflow
        return kind(
            func,
            name=persisted,
            aliases=aliases,
            check_types=check_types,
            json_checked=checked,
            max_recoveries=max_recoveries,
            queue=queue_name,
        )

    return decorate if fn is None else decorate(fn)


@overload
def step(fn: Callable[P, R], /) -> Step[P, R]: ...


@overload
def step(
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    retry: _retry.Retry | int | None = None,
    timeout: timedelta | float | None = None,
    check_types: bool = True,
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    retry: _retry.Retry | int | None = None,
    timeout: timedelta | float | None = None,
    check_types: bool = True,
) -> Step[P, R] | Callable[[Callable[P, R]], Step[P, R]]:
    """Mark a function as a durable step. Works bare or called.

    Args:
        fn: the function (when used bare).
        name: the persisted name; defaults to ``module.qualname``.
        aliases: former names, so recorded results under them still replay.
        retry: a :class:`fluxo.Retry`, a number of attempts, or ``None`` (one attempt).
        timeout: the longest one attempt may take (a ``timedelta`` or seconds).
            Each attempt then runs in a thread of its own; one still running at
            the timeout is abandoned and fails with :class:`fluxo.StepTimeout`, a
            failed attempt like any other, so ``retry=`` applies. Python cannot
            kill a thread: the abandoned attempt goes on running in the
            background until its function returns, and its result is thrown
            away. The next attempt may overlap it, so a step with a timeout must
            be safe to run twice at once (idempotent, with its own time limits
            on the I/O it does). The timeout counts wall-clock time, also under
            ``fluxo.testing``'s virtual clock. Outside a workflow the step is a
            plain call, without a timeout.
        check_types: refuse, now, a return annotation the default JSON codec
            cannot decode (``object``, a plain class...). Pass ``False`` when the
            ``Engine``'s own codec decodes it. The parameters are not checked: a
            step's arguments are never stored.

    Example:
        >>> @fluxo.step(retry=3, timeout=timedelta(seconds=10))
        ... def charge(order_id: str, cents: int) -> Receipt: ...
    """
    policy = _retry.coerce_retry(retry)
    limit = _timeout_seconds(timeout)

    def decorate(func: Callable[P, R]) -> Step[P, R]:
        persisted, checked = _check_function(func, "step", name, aliases, check_types)
        return Step(
            func,
            name=persisted,
            aliases=aliases,
            retry=policy,
            timeout=limit,
            check_types=check_types,
            json_checked=checked,
        )

    return decorate if fn is None else decorate(fn)


def _timeout_seconds(timeout: timedelta | float | None) -> float | None:
    """Check a step's ``timeout=`` and return it in seconds."""
    if timeout is None:
        return None
    return _durations.positive(
        timeout,
        "@fluxo.step(timeout=...)",
        finite=True,
        example="; for example timeout=timedelta(seconds=30) or timeout=30",
    )


def _is_coroutine_function(func: Callable[..., Any]) -> bool:
    import inspect

    return inspect.iscoroutinefunction(func)
