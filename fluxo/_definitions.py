"""Workflow and step definitions, and the ``@workflow`` and ``@step`` decorators that make them.

The decorators only define. They register nothing globally: an engine knows
the workflows it is given, and a workflow finds its steps by calling them.
Called inside a workflow, a definition asks the current runtime
(:mod:`fluxo._runtime`) to run it durably; called anywhere else, it is a plain
call of its function.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import pathlib
import reprlib
import sys
import threading
import typing
import warnings
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Generic, Literal, TypeVar

import msgspec
from typing_extensions import ParamSpec, Self

from fluxo import (
    _aio,
    _durations,
    _errors,
    _inputs,
    _names,
    _queue_config,
    _retry,
    _runtime,
    _schedules,
    codec,
    history,
)

P = ParamSpec("P")
R = TypeVar("R")

IfExists = Literal["check", "return"]
"""What a start with a taken run id does; see :meth:`Workflow.options`."""


def _check_function(
    fn: object, kind: str, name: str | None, aliases: Sequence[str], check_types: bool
) -> tuple[str, bool]:
    """Validate a decorated function, reporting every problem at once.

    Returns its persisted name, and whether its annotations were checked against
    the JSON codec (not when ``check_types`` is off, nor while a forward
    reference does not resolve yet: then they are checked when first resolved).
    """
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
    if inspect.isasyncgenfunction(fn):
        problems.append(
            f"{label} is an async generator ('async def' with 'yield'); a {kind} must return "
            "its result"
        )
    elif inspect.isgeneratorfunction(fn):
        problems.append(f"{label} is a generator; a {kind} must return its result")
    persisted = name if isinstance(name, str) else f"{_module_name(fn, label)}.{qualname}"
    problems += _names.definition_name_problems(label, name, persisted, aliases)
    if not isinstance(check_types, bool):
        problems.append(f"{label}: check_types= takes True or False, got {check_types!r}")
    checked = False
    if check_types is True:
        found = _annotation_problems(fn, kind, f"{kind} {persisted!r}", _JSON)
        checked = found is not None
        problems.extend(found or ())
    if problems:
        raise _errors.DefinitionError("\n".join(problems))
    return persisted, checked


def _caller_level() -> int:
    """The ``stacklevel`` of the first caller outside Fluxo's definitions: the decorated line."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename in _OWN_FILES:
        frame, level = frame.f_back, level + 1
    return level


_OWN_FILES = {__file__, str(pathlib.Path(__file__).with_name("_decorators.py"))}
"""The modules whose frames are not the decorated line: this one and the decorators'."""


def _module_name(fn: Callable[..., Any], label: str) -> str:
    """The module a default name starts with: the one ``fluxo worker`` would import.

    A script run as ``python app.py`` or ``python -m app`` is the module
    ``__main__``, but a worker started with ``fluxo worker app:engine`` imports it
    as ``app``: both must give a run's workflow the same name, so ``__main__`` is
    named after the module it can be imported as. When that cannot be told (an
    interactive session, ``python -c``), a warning says to pass ``name=``.
    """
    module = fn.__module__
    if module != "__main__":
        return module
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name and spec.name != "__main__":
        return str(spec.name)  # python -m app
    path = getattr(main, "__file__", None)
    if path and sys.path:
        script = pathlib.Path(path).resolve()
        root = pathlib.Path(sys.path[0] or ".").resolve()
        if script.suffix == ".py" and script.parent == root and script.stem.isidentifier():
            return script.stem  # python app.py: importable as app from its directory
    warnings.warn(
        f"{label} is defined in __main__ ({path or 'an interactive session'}), so it is "
        f"named {module}.{fn.__qualname__}; `fluxo worker` imports your code as a module, "
        "under another name, and would not know its runs. Define it in a module file, "
        "or pass name=",
        stacklevel=_caller_level(),
    )
    return module


_JSON = codec.JSONCodec()
"""The codec annotations are checked against at decoration: the default one."""
_JSON_CHECK = codec.JSONCodec.check_type


def _annotation_problems(
    fn: Callable[..., Any],
    kind: str,
    label: str,
    checker: Any,
    hints: dict[str, Any] | None = None,
) -> list[str] | None:
    """What ``checker.check_type`` refuses among the annotations Fluxo decodes by.

    A workflow's parameters and result, and a step's result: a step's arguments
    are never stored, so any annotation does for them. ``None`` when the
    annotations do not resolve yet (a forward reference to a later class).
    """
    if hints is None:
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception:
            return None
    annotated: list[tuple[str, Any]] = []
    if kind == "workflow":
        annotated += [
            (f"parameter {param.name!r}", hints[param.name])
            for param in inspect.signature(fn).parameters.values()
            if param.name in hints
        ]
    if "return" in hints:
        annotated.append(("return annotation", hints["return"]))
    problems = []
    for what, annotation in annotated:
        why = checker.check_type(annotation)
        if why:
            problems.append(
                f"{label}: its {what} ({inspect.formatannotation(annotation)}) cannot be "
                f"decoded: {why}. Annotate it with a dataclass, TypedDict or JSON type "
                "(str, int, list[...], typing.Any...), or, if your Engine(codec=...) decodes "
                f"it, decorate with @fluxo.{kind}(check_types=False)"
            )
    return problems


class _Loads(typing.Protocol):
    def load(self, run_id: str) -> history.RunState: ...


class _Definition(Generic[P, R]):
    """What workflows and steps share: the function, its names and its types."""

    kind: typing.ClassVar[str] = ""

    # Copied from the function by functools.update_wrapper; declared for type checkers.
    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, R]

    def __init__(
        self,
        fn: Callable[P, R],
        name: str,
        aliases: Sequence[str],
        check_types: bool = True,
        json_checked: bool = False,
    ) -> None:
        functools.update_wrapper(self, fn, updated=())  # type: ignore[arg-type]
        self.fn = fn
        self.name = name
        self.aliases: tuple[str, ...] = tuple(dict.fromkeys(a for a in aliases if a != name))
        self.names = frozenset((name, *self.aliases))
        self.check_types = check_types
        self.json_checked = json_checked
        """Its annotations passed the JSON codec's check when it was decorated."""
        self._hints: dict[str, Any] | None = None
        self._hints_lock = threading.Lock()
        self.is_async = inspect.iscoroutinefunction(fn)
        """True for an ``async def`` function: calls of it are awaited."""

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
            if self.check_types and not self.json_checked:
                # Not resolvable when it was decorated: checked now, at first use.
                problems = self._problems(_JSON, hints) or []
                if problems:
                    raise _errors.DefinitionError("\n".join(problems))
                self.json_checked = True
            self._hints = hints
        return hints

    def _problems(self, checker: Any, hints: dict[str, Any] | None = None) -> list[str] | None:
        label = f"{self.kind} {self.name!r}"
        return _annotation_problems(self.fn, self.kind, label, checker, hints)

    def codec_problems(self, codec: Any) -> list[str]:
        """What ``codec.check_type`` refuses among this definition's annotations.

        Nothing when the codec has no ``check_type``, when it is the JSON codec
        that already checked them at decoration, or when the annotations do not
        resolve yet.
        """
        check = getattr(type(codec), "check_type", None)
        if check is None or (self.json_checked and check is _JSON_CHECK):
            return []
        return self._problems(codec) or []

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
        check_types: bool = True,
        json_checked: bool = False,
    ) -> None:
        super().__init__(fn, name, aliases, check_types, json_checked)
        self.retry = retry
        self.timeout = timeout

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        runtime = _runtime.current()
        if runtime is None:
            return self.fn(*args, **kwargs)
        if runtime.is_async:
            if not self.is_async:
                raise _errors.DefinitionError(
                    f"step {self.name!r} is a sync step called in async workflow "
                    f"{runtime.workflow_name!r}; write 'await {self.__name__}.call_async(...)' "
                    "so that it runs on a thread, not on the workflow's event loop"
                )
            made: Any = runtime.defer_step(Call(self, args, kwargs))
            return typing.cast(R, made)
        if self.is_async:
            raise _errors.DefinitionError(
                f"step {self.name!r} is 'async def', and sync workflow "
                f"{runtime.workflow_name!r} cannot await it: make the workflow 'async def' "
                "too, or the step a plain 'def'"
            )
        result: R = runtime.call_step(self, args, kwargs)
        return result

    def call_async(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        """Call this sync step from an async workflow: ``await charge.call_async(order_id)``.

        The step runs on a thread of Fluxo's, not on the workflow's event loop, and
        is recorded and replayed like any step. Outside a workflow it is a plain
        call, run on a thread. An ``async def`` step is awaited directly instead:
        ``await charge(order_id)``.
        """
        if self.is_async:
            raise _errors.DefinitionError(
                f"step {self.name!r} is 'async def': await it directly, "
                f"'await {self.__name__}(...)', not with call_async()"
            )
        runtime = _runtime.current()
        if runtime is None:
            return asyncio.to_thread(self.fn, *args, **kwargs)
        if not runtime.is_async:
            raise _errors.DefinitionError(
                f"{self.name}.call_async() is for async workflows; sync workflow "
                f"{runtime.workflow_name!r} calls the step directly: {self.__name__}(...)"
            )
        made: Coroutine[Any, Any, R] = runtime.defer_step(Call(self, args, kwargs))
        return made

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

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str,
        aliases: Sequence[str] = (),
        check_types: bool = True,
        json_checked: bool = False,
        max_recoveries: int | None = None,
        queue: str = _queue_config.DEFAULT,
    ) -> None:
        super().__init__(fn, name, aliases, check_types, json_checked)
        self.max_recoveries = max_recoveries
        self.queue = queue
        """The queue its runs are in unless a start names another (``"default"``: none)."""
        self.start_queue = _queue_config.NO_OPTIONS
        """How many times a run may be taken over from an execution that died (None: any)."""
        self.signature = inspect.signature(fn)
        self.start_id: str | None = None
        self.start_timeout: float | None = None
        self.start_detached = False
        self.start_if_exists: IfExists = "check"
        self._input_type: Any = None
        self.schedule: _schedules.Schedule | None = None
        """When it runs on its own, if ``@fluxo.schedule`` gave it a schedule."""
        self.scheduler: Workflow[Any, Any] | None = None
        """The built-in workflow whose one run starts this one's scheduled runs."""

    def options(
        self,
        *,
        id: str | None = None,
        timeout: timedelta | float | None = None,
        detached: bool = False,
        if_exists: IfExists = "check",
        queue: str | _queue_config.Queue | None = None,
        priority: int | None = None,
        partition: str | None = None,
        start_at: datetime | float | None = None,
    ) -> Self:
        """Return this workflow with start options bound, for ``engine.start`` or a child start.

        Args:
            id: the run id. Starting twice with one id starts one run: the second
                start returns a handle to the first, when it passes the same
                arguments (compared as bound to the signature, so ``f(1, b=2)``
                is ``f(1, 2)``, and a default passed is the default left out).
                Other arguments raise :class:`fluxo.RunIdConflictError` naming them
                (see ``if_exists``).
            timeout: a deadline for the whole run, from its start. A run still
                going then is cancelled at its next durable call (its ``finally:``
                blocks run) and ends ``cancelled``; ``handle.result()`` raises
                ``WorkflowTimeoutError``.
            detached: for a child workflow (``fluxo.start_child`` in a workflow):
                it is not cancelled when its parent is cancelled or ends, and so
                may outlive it.
            if_exists: what a start does when a run with this ``id`` exists:
                ``"check"`` (the default) returns it if it was started with the same
                arguments and raises ``RunIdConflictError`` if not; ``"return"``
                returns it whatever its arguments were.
            queue: the queue of the run (a name or a :class:`fluxo.Queue`), instead
                of the workflow's (docs/queues.md).
            priority: in a named queue, higher is admitted first (default 0).
            partition: the key the queue's ``partition_concurrency`` counts it under.
            start_at: an aware ``datetime`` or seconds since the epoch: the run is
                not admitted (in the default queue: not ready) before then.

        Example:
            >>> engine.start(checkout.options(id="order-17"), "o-17", 4200)
            >>> fluxo.start_child(send_receipt.options(detached=True), order_id)
        """
        if id is not None:
            _names.check_start_id(id)
        seconds = None if timeout is None else _durations.positive(timeout, "timeout=")
        if not isinstance(detached, bool):
            raise _errors.DefinitionError(f"detached= takes True or False, not {detached!r}")
        if if_exists not in typing.get_args(IfExists):
            raise _errors.DefinitionError(
                f"if_exists= takes 'check' (return an existing run started with the same "
                f"arguments, refuse other arguments) or 'return' (return an existing run "
                f"whatever its arguments), not {if_exists!r}"
            )
        bound = copy.copy(self)
        bound.start_id = id
        bound.start_timeout = seconds
        bound.start_detached = detached
        bound.start_if_exists = if_exists
        bound.start_queue = _queue_config.bind(queue, priority, partition, start_at)
        return bound

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        """Called in a workflow: run as a child workflow and return its result.

        ``child(x)`` is ``fluxo.start_child(child, x).result()``. Called anywhere
        else (a test, a step), it is a plain call of the function.
        """
        runtime = _runtime.current()
        if runtime is None:
            return self.fn(*args, **kwargs)
        if runtime.is_async is not self.is_async:
            parent = "async" if runtime.is_async else "sync"
            raise _errors.DefinitionError(
                f"{parent} workflow {runtime.workflow_name!r} calls workflow {self.name!r} "
                f"as a child, and a child called this way is "
                f"{'awaited' if runtime.is_async else 'returned'} like the parent: make both "
                "'async def' or both plain 'def'"
            )
        if runtime.is_async:
            child_type = self.return_type
            wf = self

            def call() -> Any:
                child, _ = runtime.start_child(wf, args, kwargs)
                return runtime.child_result(child, child_type)

            started: Any = _aio.outcome_of(call)
            return typing.cast(R, started)
        child, _ = runtime.start_child(self, args, kwargs)
        result: R = runtime.child_result(child, self.return_type)
        return result

    # Inputs travel as one object keyed by parameter name, decoded by annotation.

    def input_type(self) -> Any:
        """The msgspec type that decodes this workflow's encoded arguments."""
        if self._input_type is None:
            hints = self._type_hints()
            fields = [
                (param.name, _inputs.field_type(param, hints) | msgspec.UnsetType, msgspec.UNSET)
                for param in self.signature.parameters.values()
            ]
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

        The encoded input is decoded back as the workflow's arguments, as a worker
        will decode it, so an argument that does not fit its annotation (``"12"``
        or ``True`` for ``cents: int``) is refused here rather than failing the run.
        ``what`` prefixes the error (``"fluxo.continue_as_new(): "``...).

        Raises:
            DefinitionError: the arguments do not fit the signature (their number
                or names).
            EncodeError: an argument cannot be encoded, or does not decode back as
                its parameter's annotated type.
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
        try:
            codec.decode(data, self.input_type())
        except Exception as exc:  # a custom codec's own errors too
            given = {name: getattr(packed, name) for name in self.signature.parameters}
            found = self._argument_problem(codec, given)
            raise _errors.EncodeError(
                f"{what}workflow {self.name!r} "
                + (
                    f"got {found}; a run started so could never decode its input"
                    if found is not None
                    else f"got arguments that do not decode back as its signature "
                    f"{self.name}{self.signature} says ({_inputs.reason(exc)})"
                )
            ) from None
        return data

    def input_problem(self, codec: Any, data: bytes, error: BaseException) -> str:
        """Why a run's recorded input ``data`` does not decode as this workflow's arguments.

        ``error`` is what decoding it raised. Names the argument and the types when
        the input still reads as a mapping of arguments; never the internal type
        the arguments are decoded into.
        """
        reason = _inputs.reason(error)
        try:
            recorded = codec.decode(data)
        except Exception:
            recorded = None
        found = self._argument_problem(codec, recorded) if isinstance(recorded, dict) else None
        where = f"the recorded input of workflow {self.name!r} does not decode as its arguments"
        return f"{where}: it has {found}" if found is not None else f"{where} ({reason})"

    def _argument_problem(self, codec: Any, values: Mapping[str, Any]) -> str | None:
        """The first argument in ``values`` that does not decode as its parameter's type.

        Described as ``n='12' (str) where its signature says n: int (Expected ...)``.
        """
        hints = self._type_hints()
        for param in self.signature.parameters.values():
            value = values.get(param.name, msgspec.UNSET)
            if value is msgspec.UNSET:
                continue
            expected = _inputs.field_type(param, hints)
            problem = _inputs.decode_problem(codec, value, expected)
            if problem is not None:
                return (
                    f"{param.name}={_short(value)} ({_inputs.type_name(type(value))}) where its "
                    f"signature says {param.name}: {_inputs.type_name(expected)} ({problem})"
                )
        return None

    def input_conflict(
        self, store: _Loads, codec: Any, run: history.RunInfo, data: bytes
    ) -> _errors.RunIdConflictError | None:
        """The conflict if ``run``, found under a start's id, was started with other arguments.

        ``data`` is the start's encoded input. One read of the existing run, made
        only when a start finds its id taken.
        """
        started = store.load(run.id).events[0]
        differences = self.input_differences(codec, started.data or b"{}", data)
        if differences is None:
            return None
        return _errors.RunIdConflictError(
            run.id,
            run.workflow,
            run.workflow,
            arguments=list(differences),
            detail="\n".join(differences.values()),
        )

    def input_differences(self, codec: Any, stored: bytes, given: bytes) -> dict[str, str] | None:
        """Compare two encoded inputs of this workflow, as bound to its signature.

        Returns ``None`` when they are the same arguments, else one line per
        argument that differs, by parameter name (empty when ``stored`` no longer
        decodes, so they cannot be compared by name). An argument left out is its
        default, so passing the default and leaving it out are the same.
        """
        if stored == given:
            return None
        try:
            old = codec.decode(stored, self.input_type())
            new = codec.decode(given, self.input_type())
        except Exception:  # a stored input the code no longer decodes: compare as stored
            try:
                old, new = codec.decode(stored), codec.decode(given)
            except Exception:
                return {}
            if not isinstance(old, dict) or not isinstance(new, dict):
                return {}
        differences: dict[str, str] = {}
        for param in self.signature.parameters.values():
            before = _argument(param, _inputs.field(old, param.name))
            after = _argument(param, _inputs.field(new, param.name))
            if not _inputs.same(codec, before, after):
                differences[param.name] = (
                    f"  {param.name}: {_short(before)} (the existing run) "
                    f"!= {_short(after)} (given)"
                )
        return differences or None

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


class AsyncWorkflow(Workflow[P, R]):
    """An ``async def`` workflow: a :class:`Workflow` whose function is a coroutine function.

    Started and awaited like any workflow (``engine.start`` gives a handle whose
    result is the awaited value). Called in an async workflow, as a child, it is
    awaited: ``receipt = await checkout_child(order_id)``.
    """

    def __call__(  # type: ignore[override]
        self, *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]:
        made: Any = super().__call__(*args, **kwargs)
        return typing.cast(Coroutine[Any, Any, R], made)


def _argument(param: inspect.Parameter, value: Any) -> Any:
    """The value a parameter takes: its decoded argument, or its default when left out."""
    if value is not msgspec.UNSET:
        return value
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return []
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return {}
    return value if param.default is inspect.Parameter.empty else param.default


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6


def _short(value: Any) -> str:
    """``repr(value)``, shortened to fit on a line of an error message."""
    return "(not given)" if value is msgspec.UNSET else _SHORT.repr(value)
