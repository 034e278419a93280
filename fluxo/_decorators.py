"""``@workflow`` and ``@step``: turn plain functions into durable definitions.

The decorators only define. They register nothing globally: an engine knows
the workflows it is given, and a workflow finds its steps by calling them.
"""

from __future__ import annotations

import copy
import functools
import inspect
import math
import threading
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Generic, TypeVar, overload

import msgspec
from typing_extensions import ParamSpec

from fluxo import _errors, _executor, _retry, history, stores

P = ParamSpec("P")
R = TypeVar("R")


def _check_function(fn: object, kind: str, name: str | None, aliases: Sequence[str]) -> str:
    """Validate a decorated function and return its persisted name, reporting every problem."""
    if not inspect.isfunction(fn):
        raise _errors.DefinitionError(
            f"@{kind} decorates a plain function defined with 'def', not {fn!r}"
        )
    problems: list[str] = []
    qualname = fn.__qualname__
    label = f"{kind} {fn.__qualname__!r}"
    if fn.__name__ == "<lambda>" and name is None:
        problems.append(
            f"{label} is a lambda, which has no stable name; define it with 'def', "
            "or pass name= so its history survives restarts"
        )
    elif "<locals>" in qualname and name is None:
        problems.append(
            f"{label} is defined inside a function, so its name is not stable across "
            "processes; move it to module level, or pass name= so its history survives restarts"
        )
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        problems.append(
            f"{label} is 'async def'; this version of Fluxo runs sync functions only, "
            "so define it with plain 'def'"
        )
    elif inspect.isgeneratorfunction(fn):
        problems.append(f"{label} is a generator; a {kind} must return its result")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(f"{label}: name= must be a non-empty string, got {name!r}")
    persisted = name if isinstance(name, str) else f"{fn.__module__}.{qualname}"
    if len(persisted) > stores.MAX_ID_LENGTH:
        problems.append(
            f"{label}: its name is {len(persisted)} characters long; stores keep at most "
            f"{stores.MAX_ID_LENGTH}, so pass a shorter name="
        )
    if isinstance(aliases, str) or not all(isinstance(a, str) and a for a in aliases):
        problems.append(f"{label}: aliases= must be a list of non-empty strings, got {aliases!r}")
    else:
        for what, value in [("name=", name), *(("an alias", a) for a in aliases)]:
            if isinstance(value, str) and (problem := history.name_problem(value)):
                problems.append(f"{label}: " + history.name_rule(what, value, problem))
    if problems:
        raise _errors.DefinitionError("\n".join(problems))
    return name if name is not None else f"{fn.__module__}.{qualname}"


class _Definition(Generic[P, R]):
    """What workflows and steps share: the function, its names and its types."""

    kind: typing.ClassVar[str] = ""

    # Copied from the function by functools.update_wrapper; declared for type checkers.
    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(self, fn: Callable[P, R], name: str, aliases: Sequence[str]) -> None:
        functools.update_wrapper(self, fn, updated=())  # type: ignore[arg-type]
        self.fn = fn
        self.name = name
        self.aliases: tuple[str, ...] = tuple(dict.fromkeys(a for a in aliases if a != name))
        self.names = frozenset((name, *self.aliases))
        self._hints: dict[str, Any] | None = None
        self._hints_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<fluxo {self.kind} {self.name}>"

    def _type_hints(self) -> dict[str, Any]:
        hints = self._hints
        if hints is None:
            try:
                hints = typing.get_type_hints(self.fn, include_extras=True)
            except Exception as exc:
                raise _errors.DefinitionError(
                    f"cannot resolve the annotations of {self.kind} {self.name!r}: {exc}; "
                    "make sure every annotation names a type importable at module level"
                ) from exc
            self._hints = hints
        return hints

    @property
    def return_type(self) -> Any:
        """The annotated return type (``typing.Any`` when not annotated)."""
        return self._type_hints().get("return", Any)


class Step(_Definition[P, R]):
    """A function whose result is recorded once and replayed ever after.

    Inside a workflow, calling a step runs it at most once per run (at least
    once: a crash after its side effect and before its record re-runs it) and
    returns the recorded result on replay. Outside a workflow it is a plain
    function call, so unit tests of steps need nothing.

    ``step.bind(*args)`` makes a :class:`Call` for :func:`fluxo.parallel`.
    """

    kind = "step"

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str,
        aliases: Sequence[str] = (),
        retry: _retry.Retry,
        timeout: float | None = None,
    ) -> None:
        super().__init__(fn, name, aliases)
        self.retry = retry
        self.timeout = timeout

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        context = _executor.current_context()
        if context is None:
            return self.fn(*args, **kwargs)
        result: R = context.call_step(self, args, kwargs)
        return result

    def bind(self, *args: P.args, **kwargs: P.kwargs) -> Call[R]:
        """Return this step's call with these arguments, to run in :func:`fluxo.parallel`.

        Nothing runs yet; the arguments are checked against the step's signature.

        Example:
            >>> a, b = fluxo.parallel(charge.bind(order_id, 4200), reserve.bind(order_id))
        """
        try:
            inspect.signature(self.fn).bind(*args, **kwargs)
        except TypeError as exc:
            raise _errors.DefinitionError(
                f"{self.name}.bind() got arguments that do not fit the step's signature "
                f"{self.fn.__name__}{_written_signature(self.fn)}: {exc}"
            ) from None
        return Call(self, args, kwargs)


def _written_signature(fn: Callable[..., Any]) -> inspect.Signature:
    """``fn``'s signature as written, its string annotations resolved where they can be."""
    try:
        return inspect.signature(fn, eval_str=True)
    except Exception:
        return inspect.signature(fn)


class Call(Generic[R]):
    """One step call waiting to run as a branch of :func:`fluxo.parallel`.

    Made by :meth:`Step.bind`; ``R`` is the step's return type, so
    ``fluxo.parallel`` of calls of one type returns a ``list[R]``.

    Attributes:
        step: the step to call.
        args: its positional arguments.
        kwargs: its keyword arguments.
    """

    __slots__ = ("args", "kwargs", "step")

    def __init__(self, step: Step[..., R], args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        self.step = step
        self.args = tuple(args)
        self.kwargs = dict(kwargs)

    def __repr__(self) -> str:
        parts = [repr(a) for a in self.args] + [f"{k}={v!r}" for k, v in self.kwargs.items()]
        return f"<fluxo call {self.step.name}({', '.join(parts)})>"


class Workflow(_Definition[P, R]):
    """An orchestrating function whose progress is durable.

    Start it with ``engine.start(workflow, *args)`` or run it inline with
    ``engine.run(workflow, *args)``. Called directly outside any engine, it is a
    plain function call (its steps run as plain calls too).
    """

    kind = "workflow"

    def __init__(self, fn: Callable[P, R], *, name: str, aliases: Sequence[str] = ()) -> None:
        super().__init__(fn, name, aliases)
        self.signature = inspect.signature(fn)
        self.start_id: str | None = None
        self.start_timeout: float | None = None
        self.start_detached = False
        self._input_type: Any = None

    def options(
        self,
        *,
        id: str | None = None,
        timeout: timedelta | float | None = None,
        detached: bool = False,
    ) -> Workflow[P, R]:
        """Return this workflow with start options bound, for ``engine.start`` or a child start.

        Args:
            id: the run id. Starting twice with one id starts one run: the second
                start returns a handle to the first.
            timeout: a deadline for the whole run, from its start. A run still
                going then is cancelled at its next durable call (its ``finally:``
                blocks run) and ends ``cancelled``; ``handle.result()`` raises
                ``WorkflowTimeoutError``.
            detached: for a child workflow (``fluxo.start_child`` in a workflow):
                it is not cancelled when its parent is cancelled or ends, and so
                may outlive it.

        Example:
            >>> engine.start(checkout.options(id="order-17"), "o-17", 4200)
            >>> fluxo.start_child(send_receipt.options(detached=True), order_id)
        """
        limit = stores.MAX_ID_LENGTH
        if id is not None and (not isinstance(id, str) or not id or len(id) > limit):
            raise _errors.DefinitionError(
                f"a run id must be a non-empty string of at most {limit} characters, not {id!r}"
            )
        if id is not None:
            history.check_name("the run id", id)
        if id is not None and history.CHAIN_SEPARATOR in id:
            raise _errors.DefinitionError(
                f"a run id may not contain {history.CHAIN_SEPARATOR!r} (got {id!r}): Fluxo names "
                "the runs fluxo.continue_as_new() starts with it; use another character"
            )
        seconds: float | None = None
        if timeout is not None:
            seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
            if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds <= 0:
                raise _errors.DefinitionError(
                    f"timeout= takes a positive timedelta or number of seconds, not {timeout!r}"
                )
        if not isinstance(detached, bool):
            raise _errors.DefinitionError(f"detached= takes True or False, not {detached!r}")
        bound = copy.copy(self)
        bound.start_id = id
        bound.start_timeout = None if seconds is None else float(seconds)
        bound.start_detached = detached
        return bound

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Called in a workflow: run as a child workflow and return its result.

        ``child(x)`` is ``fluxo.start_child(child, x).result()``. Called anywhere
        else (a test, a step), it is a plain call of the function.
        """
        if _executor.current_context() is not None:
            from fluxo import _durable

            return _durable.start_child(self, *args, **kwargs).result()
        return self.fn(*args, **kwargs)

    # Inputs travel as one object keyed by parameter name, decoded by annotation.

    def input_type(self) -> Any:
        """The msgspec type that decodes this workflow's encoded arguments."""
        if self._input_type is None:
            hints = self._type_hints()
            fields: list[tuple[str, Any, Any]] = []
            for param in self.signature.parameters.values():
                annotation = hints.get(param.name, Any)
                if param.kind is inspect.Parameter.VAR_POSITIONAL:
                    annotation = list[annotation]  # type: ignore[valid-type]
                elif param.kind is inspect.Parameter.VAR_KEYWORD:
                    annotation = dict[str, annotation]  # type: ignore[valid-type]
                fields.append((param.name, annotation | msgspec.UnsetType, msgspec.UNSET))
            self._input_type = msgspec.defstruct(
                "WorkflowInput", fields, forbid_unknown_fields=False, omit_defaults=True
            )
        return self._input_type

    def bind_input(self, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        """Check arguments against the signature and pack them for encoding."""
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise _errors.DefinitionError(
                f"workflow {self.name!r} called with arguments that do not fit its "
                f"signature {self.name}{self.signature}: {exc}"
            ) from None
        return self.input_type()(**bound.arguments)

    def encode_input(
        self, codec: Any, args: Sequence[Any], kwargs: dict[str, Any], what: str = ""
    ) -> bytes:
        """Check arguments against the signature and encode them as a run's input.

        ``what`` prefixes the error (``"fluxo.continue_as_new(): "``...).
        """
        packed = self.bind_input(args, kwargs)
        try:
            data: bytes = codec.encode(packed)
        except TypeError as exc:
            raise _errors.EncodeError(
                f"{what}the arguments of workflow {self.name!r} cannot be encoded: {exc}; "
                "pass JSON-friendly values (dataclasses, dicts, lists, str, numbers, "
                "datetimes...) or configure a codec that handles them"
            ) from exc
        return data

    def unpack_input(self, packed: Any) -> tuple[list[Any], dict[str, Any]]:
        """Turn decoded input back into ``(args, kwargs)`` for calling the function."""
        args: list[Any] = []
        kwargs: dict[str, Any] = {}
        skipped = False  # once a positional parameter is left out, the rest go by name
        for param in self.signature.parameters.values():
            value = getattr(packed, param.name)
            if value is msgspec.UNSET:
                skipped = skipped or param.kind is not inspect.Parameter.VAR_POSITIONAL
                continue
            if param.kind is inspect.Parameter.VAR_POSITIONAL:
                args.extend(value)
            elif param.kind is inspect.Parameter.VAR_KEYWORD:
                kwargs.update(value)
            elif param.kind is inspect.Parameter.KEYWORD_ONLY or (
                skipped and param.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
            ):
                kwargs[param.name] = value
            else:
                args.append(value)
        return args, kwargs


@overload
def workflow(fn: Callable[P, R], /) -> Workflow[P, R]: ...


@overload
def workflow(
    *, name: str | None = None, aliases: Sequence[str] = ()
) -> Callable[[Callable[P, R]], Workflow[P, R]]: ...


def workflow(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
) -> Workflow[P, R] | Callable[[Callable[P, R]], Workflow[P, R]]:
    """Mark a function as a durable workflow. Works bare or called.

    Args:
        fn: the function (when used bare).
        name: the persisted name; defaults to ``module.qualname``. Histories refer
            to it, so keep it stable (or list the old one in ``aliases``).
        aliases: former names, so runs started under them still resume.

    Example:
        >>> @fluxo.workflow
        ... def checkout(order_id: str, cents: int) -> str:
        ...     receipt = charge(order_id, cents)
        ...     return receipt.id
    """

    def decorate(func: Callable[P, R]) -> Workflow[P, R]:
        persisted = _check_function(func, "workflow", name, aliases)
        return Workflow(func, name=persisted, aliases=aliases)

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
) -> Callable[[Callable[P, R]], Step[P, R]]: ...


def step(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    aliases: Sequence[str] = (),
    retry: _retry.Retry | int | None = None,
    timeout: timedelta | float | None = None,
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

    Example:
        >>> @fluxo.step(retry=3, timeout=timedelta(seconds=10))
        ... def charge(order_id: str, cents: int) -> Receipt: ...
    """
    policy = _retry.coerce_retry(retry)
    limit = _timeout_seconds(timeout)

    def decorate(func: Callable[P, R]) -> Step[P, R]:
        persisted = _check_function(func, "step", name, aliases)
        return Step(func, name=persisted, aliases=aliases, retry=policy, timeout=limit)

    return decorate if fn is None else decorate(fn)


def _timeout_seconds(timeout: timedelta | float | None) -> float | None:
    """Check a step's ``timeout=`` and return it in seconds."""
    if timeout is None:
        return None
    seconds = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise _errors.DefinitionError(
            f"@fluxo.step(timeout=...) takes a positive timedelta or number of seconds, "
            f"not {timeout!r}; for example timeout=timedelta(seconds=30) or timeout=30"
        )
    return float(seconds)
