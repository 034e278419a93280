"""Stubs and call records of the test environment, and finding steps and workflows by name.

A stub stands in for a step (each live call of it) or for a workflow (each child
run that a workflow starts of it). A child workflow's stub is the function of that
child run: the child is still a run of its own, created, recorded and awaited as
any child is, so its parent's history is the one a real child ending the same way
gives.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, Generic, TypeAlias

from typing_extensions import TypeVar

from fluxo import _definitions, _errors

Target: TypeAlias = _definitions.Step[Any, Any] | _definitions.Workflow[Any, Any]
"""What a stub stands in for: a step, or a workflow started as a child."""

Ref: TypeAlias = _definitions.Step[Any, Any] | _definitions.Workflow[Any, Any] | str
"""A step or workflow, as its object or its name (full, an alias, or its short function name)."""

UNSET: Any = object()
"""``returns=`` was not given (``None`` is a value a stub may return)."""


@dataclasses.dataclass(frozen=True)
class StepCall:
    """One live call of a step's function, or of the stub standing in for it.

    Calls answered from a run's history on replay are not calls: a step whose
    result is recorded appears once, and a step that was retried appears once
    per attempt.

    Attributes:
        run_id: the run that made the call.
        step: the step called.
        args: the positional arguments, as the workflow passed them.
        kwargs: the keyword arguments, as the workflow passed them.
        stubbed: True when a stub answered instead of the step's function.
        result: what the call returned (``None`` when it raised).
        error: what the call raised, or ``None``.
    """

    run_id: str
    step: _definitions.Step[Any, Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stubbed: bool = False
    result: Any = None
    error: Exception | None = None

    @property
    def name(self) -> str:
        """The step's name."""
        return self.step.name


@dataclasses.dataclass(frozen=True)
class ChildCall:
    """One child run that a workflow started, as its function (or the stub for it) ended.

    Recorded once per child run, when the child's workflow function returns or
    raises: a stub's answer at once, a real child's when the child ends (for a
    child that continues as new, when the last run of its chain ends). A child
    that is cancelled, or has not ended yet, has no record.

    Attributes:
        run_id: the run that started the child (its parent).
        workflow: the child's workflow.
        child_id: the child's run id, as the parent knows it.
        args: the positional arguments, as the child received them: decoded by
            the workflow's annotations, as a real child's are.
        kwargs: the keyword arguments, likewise.
        stubbed: True when a stub answered instead of the workflow's function.
        result: what the function returned (``None`` when it raised).
        error: what the function raised, or ``None``.
    """

    run_id: str
    workflow: _definitions.Workflow[Any, Any]
    child_id: str
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    stubbed: bool = False
    result: Any = None
    error: Exception | None = None

    @property
    def name(self) -> str:
        """The child's workflow name."""
        return self.workflow.name


CallT = TypeVar("CallT", default=StepCall)
"""The record a stub keeps: :class:`StepCall` for a step's, :class:`ChildCall` for a workflow's."""


class Stub(Generic[CallT]):
    """A stand-in for one step or child workflow, made by :meth:`WorkflowEnvironment.stub`.

    A step's stub answers every live call of the step; a workflow's stub answers
    every child run of the workflow that a workflow starts (it is that child run's
    function). It answers until it is removed, with ``remove()`` or at the end of
    a ``with`` block. The newest stub of a step or workflow wins; removing it
    brings back the one before, or the step's or workflow's own function.

    Attributes:
        target: the step, workflow, or name it was made for.
        calls: the calls it answered, oldest first (:class:`StepCall` for a step,
            :class:`ChildCall` for a workflow).
    """

    def __init__(
        self,
        active: list[Stub[Any]],
        target: Ref,
        behaviour: Callable[..., Any],
        replacement: Callable[..., Any] | None,
    ) -> None:
        self.target = target
        self.calls: list[CallT] = []
        self.behaviour = behaviour
        self._active = active
        self._replacement = replacement
        self._checked = False
        self._kind: type[Any] | None = None
        """Step or Workflow: what it stands in for, once known (a name is resolved later)."""
        if not isinstance(target, str):
            self.check_against(target)

    def __repr__(self) -> str:
        name = self.target if isinstance(self.target, str) else self.target.name
        return f"<fluxo stub of {name}>"

    def __enter__(self) -> Stub[CallT]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    @property
    def active(self) -> bool:
        """Tell whether the stub still answers calls."""
        return self in self._active

    def remove(self) -> None:
        """Stop answering calls. Removing a removed stub is harmless."""
        if self in self._active:
            self._active.remove(self)

    def answers(self, target: Target) -> bool:
        """Tell whether this stub stands in for ``target`` (a step or workflow)."""
        kind = self._kind
        return (kind is None or isinstance(target, kind)) and is_target(target, self.target)

    def check_against(self, target: Target) -> None:
        """Learn what the stub stands in for; check, once, that the replacement fits it."""
        self._kind = _kind_of(target)
        if not self._checked and self._replacement is not None:
            _check_replacement(target, self._replacement)
        self._checked = True


def make_stub(
    active: list[Stub[Any]],
    target: Ref,
    replacement: Callable[..., Any] | None,
    returns: Any,
    raises: BaseException | type[BaseException] | None,
) -> Stub[Any]:
    """Check the arguments of ``env.stub()`` and build the stub (not yet active)."""
    label = f"env.stub({target!r})"
    check_ref(label, target)
    given = [
        what
        for what, value in (
            ("a replacement function", replacement),
            ("returns=", None if returns is UNSET else True),
            ("raises=", raises),
        )
        if value is not None
    ]
    if len(given) != 1:
        problem = "nothing" if not given else " and ".join(given)
        raise _errors.DefinitionError(
            f"{label} takes exactly one of a replacement function, returns= or raises=; "
            f"it got {problem}"
        )
    if replacement is not None:
        if not callable(replacement):
            raise _errors.DefinitionError(
                f"{label}: the replacement must be a function with the signature of the "
                f"step or workflow it stands in for, not {replacement!r}"
            )
        behaviour: Callable[..., Any] = replacement
    elif raises is not None:
        behaviour = _raiser(label, raises)
    else:
        behaviour = _returner(returns)
    return Stub(active, target, behaviour, replacement)


def check_ref(label: str, target: object) -> None:
    """Raise unless ``target`` is a step or workflow object, or a non-empty name."""
    if isinstance(target, (_definitions.Step, _definitions.Workflow)):
        return
    if not (isinstance(target, str) and target):
        hint = " (decorate it with @fluxo.step or @fluxo.workflow)" if callable(target) else ""
        raise _errors.DefinitionError(
            f"{label}: pass a @fluxo.step or @fluxo.workflow function, or its name, not "
            f"{target!r}{hint}"
        )


def short_name(target: Target) -> str:
    """The function name of a step or workflow, which tests may use when it is unambiguous."""
    return target.__name__


def _kind_of(target: Target) -> type[Any]:
    return _definitions.Step if isinstance(target, _definitions.Step) else _definitions.Workflow


def is_target(target: Target, ref: Ref) -> bool:
    """Tell whether ``ref`` (an object, a name, an alias or a short name) means ``target``.

    An object means only a step or workflow of its own kind: a step and a workflow
    that share a name are never each other.
    """
    if isinstance(ref, str):
        return ref in target.names or ref == short_name(target)
    return isinstance(target, _kind_of(ref)) and bool(target.names & ref.names)


def called(call: StepCall | ChildCall) -> Target:
    """The step or workflow a call record is of."""
    return call.step if isinstance(call, StepCall) else call.workflow


def reachable(
    workflows: Iterable[_definitions.Workflow[Any, Any]], known: Iterable[Target]
) -> list[Target]:
    """What a name may mean: ``workflows``, ``known``, and what ``workflows`` can name.

    That is the steps and workflows in their modules' globals, one module deep.
    """
    found: dict[int, Target] = {id(target): target for target in known}
    kinds = (_definitions.Step, _definitions.Workflow)
    for workflow in workflows:
        found[id(workflow)] = workflow
        for value in list(workflow.fn.__globals__.values()):
            if isinstance(value, kinds):
                found[id(value)] = value
            elif isinstance(value, types.ModuleType):
                for inner in list(vars(value).values()):
                    if isinstance(inner, kinds):
                        found[id(inner)] = inner
    return list(found.values())


def resolve(
    label: str,
    name: str,
    targets: list[Target],
    workflows: Collection[str],
    *,
    unique: bool,
) -> list[Target]:
    """The steps or workflows among ``targets`` that ``name`` means.

    Raise if none, if it means both a step and a workflow, or (``unique``) several.
    ``workflows`` names the registered workflows, for the error message.
    """
    found = {(t.kind, t.name): t for t in targets if is_target(t, name)}
    kinds = {kind for kind, _ in found}
    if len(kinds) > 1:
        steps = sorted(n for kind, n in found if kind == "step")
        flows = sorted(n for kind, n in found if kind == "workflow")
        raise _errors.DefinitionError(
            f"{label}: {name!r} names both a step ({', '.join(steps)}) and a workflow "
            f"({', '.join(flows)}); pass the object, for example env.stub(ship, ...), or a "
            "name only one of them has"
        )
    if unique and len(found) > 1:
        (kind,) = kinds
        raise _errors.DefinitionError(
            f"{label}: several {kind}s are called {name!r}: {sorted(n for _, n in found)}; "
            f"pass the full name or the {kind} object"
        )
    if found:
        return list(found.values())
    steps = sorted({t.name for t in targets if isinstance(t, _definitions.Step)})
    flows = sorted({t.name for t in targets if isinstance(t, _definitions.Workflow)})
    close = difflib.get_close_matches(name, [*steps, *flows, *{short_name(t) for t in targets}])
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    raise _errors.DefinitionError(
        f"{label}: no step or workflow named {name!r} is reachable from this environment's "
        f"workflows ({sorted(workflows) or 'none yet'}).{suggestion} Known steps: "
        f"{steps or 'none'}; known workflows: {flows or 'none'}. Pass the step or "
        "workflow object (for example env.stub(charge, ...)), or register the workflow "
        "that calls it first (WorkflowEnvironment(workflows=[...]))"
    )


def _returner(value: Any) -> Callable[..., Any]:
    def returns(*args: Any, **kwargs: Any) -> Any:
        return value

    return returns


def _raiser(label: str, error: BaseException | type[BaseException]) -> Callable[..., Any]:
    if isinstance(error, type) and issubclass(error, Exception):
        error_class = error

        def raise_new(*args: Any, **kwargs: Any) -> Any:
            raise error_class()

        return raise_new
    if isinstance(error, Exception):
        instance = error

        def raise_instance(*args: Any, **kwargs: Any) -> Any:
            raise instance.with_traceback(None)

        return raise_instance
    raise _errors.DefinitionError(
        f"{label}: raises= takes an exception derived from Exception (an instance or a "
        f"class), not {error!r}"
    )


def _check_replacement(target: Target, replacement: Callable[..., Any]) -> None:
    """Check that ``replacement`` accepts every way the step or workflow can be called."""
    try:
        wanted = inspect.signature(target.fn)
        given = inspect.signature(replacement)
    except (TypeError, ValueError):
        return  # a builtin or a C function: nothing to compare
    kind = inspect.Parameter
    positional: list[Any] = []
    by_name: dict[str, Any] = {}
    required_args: list[Any] = []
    required_kwargs: dict[str, Any] = {}
    keyword_only: dict[str, Any] = {}
    for param in wanted.parameters.values():
        required = param.default is param.empty
        if param.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD):
            positional.append(None)
            if required:
                required_args.append(None)
            if param.kind is kind.POSITIONAL_OR_KEYWORD:
                by_name[param.name] = None
        elif param.kind is kind.KEYWORD_ONLY:
            keyword_only[param.name] = None
            if required:
                required_kwargs[param.name] = None
    attempts = [
        (positional, keyword_only),  # everything, positionally where possible
        (required_args, required_kwargs),  # only what has no default
        ([None] * (len(positional) - len(by_name)), {**by_name, **keyword_only}),  # by name
    ]
    for args, kwargs in attempts:
        try:
            given.bind(*args, **kwargs)
        except TypeError as exc:
            what = target.kind
            raise _errors.DefinitionError(
                f"the replacement for {what} {target.name!r} does not take the {what}'s "
                f"arguments: the {what} is {target.__name__}{wanted}, the replacement "
                f"{getattr(replacement, '__name__', 'function')}{given} ({exc}). Give it the "
                "same parameters"
            ) from None
