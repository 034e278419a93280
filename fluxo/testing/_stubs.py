"""Step stubs and call records of the test environment, and finding steps by name."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeAlias

from fluxo import _definitions, _errors

StepRef: TypeAlias = _definitions.Step[Any, Any] | str
"""A step, as the step object or its name (full, an alias, or its short function name)."""

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


class Stub:
    """A stand-in for one step, made by :meth:`WorkflowEnvironment.stub`.

    It answers every live call of the step until it is removed, with ``remove()``
    or at the end of a ``with`` block. The newest stub of a step wins; removing it
    brings back the one before, or the step's own function.

    Attributes:
        target: the step or step name it was made for.
        calls: the calls it answered, oldest first.
    """

    def __init__(
        self,
        active: list[Stub],
        target: StepRef,
        behaviour: Callable[..., Any],
        replacement: Callable[..., Any] | None,
    ) -> None:
        self.target = target
        self.calls: list[StepCall] = []
        self.behaviour = behaviour
        self._active = active
        self._replacement = replacement
        self._checked = False
        if isinstance(target, _definitions.Step):
            self.check_against(target)

    def __repr__(self) -> str:
        name = self.target.name if isinstance(self.target, _definitions.Step) else self.target
        return f"<fluxo stub of {name}>"

    def __enter__(self) -> Stub:
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

    def answers(self, step: _definitions.Step[Any, Any]) -> bool:
        """Tell whether this stub stands in for ``step``."""
        return is_step(step, self.target)

    def check_against(self, step: _definitions.Step[Any, Any]) -> None:
        """Check, once, that the replacement function takes the arguments of ``step``."""
        if not self._checked and self._replacement is not None:
            _check_replacement(step, self._replacement)
        self._checked = True


def make_stub(
    active: list[Stub],
    step: StepRef,
    replacement: Callable[..., Any] | None,
    returns: Any,
    raises: BaseException | type[BaseException] | None,
) -> Stub:
    """Check the arguments of ``env.stub()`` and build the stub (not yet active)."""
    label = f"env.stub({step!r})"
    check_ref(label, step)
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
                f"{label}: the replacement must be a function with the step's signature, "
                f"not {replacement!r}"
            )
        behaviour: Callable[..., Any] = replacement
    elif raises is not None:
        behaviour = _raiser(label, raises)
    else:
        behaviour = _returner(returns)
    return Stub(active, step, behaviour, replacement)


def check_ref(label: str, step: object) -> None:
    """Raise unless ``step`` is a step object or a non-empty step name."""
    if isinstance(step, _definitions.Workflow):
        raise _errors.DefinitionError(
            f"{label}: {step!r} is a workflow; name one of the steps it calls instead"
        )
    if not isinstance(step, _definitions.Step) and not (isinstance(step, str) and step):
        hint = " (decorate it with @fluxo.step)" if callable(step) else ""
        raise _errors.DefinitionError(
            f"{label}: pass a @fluxo.step function or a step name, not {step!r}{hint}"
        )


def short_name(step: _definitions.Step[Any, Any]) -> str:
    """The step's function name, which tests may use when it is unambiguous."""
    return step.__name__


def is_step(step: _definitions.Step[Any, Any], ref: StepRef) -> bool:
    """Tell whether ``ref`` (a step, a name, an alias or a short name) means ``step``."""
    if isinstance(ref, _definitions.Step):
        return bool(step.names & ref.names)
    return ref in step.names or ref == short_name(step)


def reachable_steps(
    workflows: Iterable[_definitions.Workflow[Any, Any]],
    known: Iterable[_definitions.Step[Any, Any]],
) -> list[_definitions.Step[Any, Any]]:
    """The steps ``workflows`` can name (their modules' globals, one module deep), and ``known``."""
    found = {id(step): step for step in known}
    for workflow in workflows:
        for value in list(workflow.fn.__globals__.values()):
            if isinstance(value, _definitions.Step):
                found[id(value)] = value
            elif isinstance(value, types.ModuleType):
                for inner in list(vars(value).values()):
                    if isinstance(inner, _definitions.Step):
                        found[id(inner)] = inner
    return list(found.values())


def resolve(
    label: str,
    name: str,
    steps: list[_definitions.Step[Any, Any]],
    workflows: Collection[str],
    *,
    unique: bool,
) -> list[_definitions.Step[Any, Any]]:
    """The steps among ``steps`` that ``name`` means; raise if none (or, if ``unique``, several).

    ``workflows`` names the registered workflows, for the error message.
    """
    found = {step.name: step for step in steps if is_step(step, name)}
    if unique and len(found) > 1:
        raise _errors.DefinitionError(
            f"{label}: several steps are called {name!r}: {sorted(found)}; pass the full "
            "name or the step object"
        )
    if found:
        return list(found.values())
    known = sorted({step.name for step in steps})
    close = difflib.get_close_matches(name, [*known, *{short_name(step) for step in steps}])
    suggestion = f" Did you mean {close[0]!r}?" if close else ""
    raise _errors.DefinitionError(
        f"{label}: no step named {name!r} is reachable from this environment's workflows "
        f"({sorted(workflows) or 'none yet'}).{suggestion} Known steps: {known or 'none'}. "
        "Pass the step object (for example env.stub(charge, ...)), or register the "
        "workflow that calls it first (WorkflowEnvironment(workflows=[...]))"
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


def _check_replacement(step: _definitions.Step[Any, Any], replacement: Callable[..., Any]) -> None:
    """Check that ``replacement`` accepts every way the step can be called."""
    try:
        wanted = inspect.signature(step.fn)
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
            raise _errors.DefinitionError(
                f"the replacement for step {step.name!r} does not take the step's arguments: "
                f"the step is {step.__name__}{wanted}, the replacement "
                f"{getattr(replacement, '__name__', 'function')}{given} ({exc}). Give it the "
                "same parameters"
            ) from None
