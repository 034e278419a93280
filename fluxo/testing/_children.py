"""The child runs of the test environment: the stub that answers each, and their call records.

A workflow's stub is chosen as a child run of it starts, as a step's stub is
chosen as the step is called, and answers that child run to its end. The child
run itself stays real: created, executed from its history, ended and awaited as
any child run is, with the stub as its workflow function. Its parent's history
is therefore exactly the one a real child ending the same way gives.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fluxo import _aio, _definitions, _errors, _inputs, history
from fluxo import codec as _codec
from fluxo.testing import _stubs

Record = Callable[["_stubs.Stub[Any] | None", "_stubs.ChildCall"], None]
"""Keeps a call record: the environment's, and the answering stub's."""


@dataclasses.dataclass
class _Child:
    """One child run: who started it, the stub that answers it, its call record."""

    id: str
    parent: str
    stub: _stubs.Stub[Any] | None
    call: _stubs.ChildCall | None = None
    """Made as its first execution begins, with the arguments it was started with."""
    ended: bool = False


class ChildRuns:
    """The child runs started in one environment, by id (the first run of a chain's)."""

    def __init__(self, stubs: list[_stubs.Stub[Any]], record: Record, codec: _codec.Codec) -> None:
        self._stubs = stubs
        self._record = record
        self._codec = codec
        self._children: dict[str, _Child] = {}

    def started(
        self, parent: str, child_id: str, workflow: _definitions.Workflow[Any, Any]
    ) -> None:
        """``parent`` started a child run: the newest stub of its workflow, if any, answers it."""
        if child_id not in self._children:  # not again for a child a crashed execution created
            stub = next((s for s in reversed(self._stubs) if s.answers(workflow)), None)
            self._children[child_id] = _Child(child_id, parent, stub)

    def runner(
        self, run_id: str
    ) -> Callable[[_definitions.Workflow[Any, Any], Sequence[Any], Mapping[str, Any]], Any] | None:
        """What executes the function of run ``run_id``, if it is a child run; else None.

        The runs of a child's chain (``fluxo.continue_as_new``) are one child to its
        parent: they share its stub and its one record.
        """
        child = self._children.get(history.chain_root(run_id))
        if child is None:
            return None

        def run_child(
            workflow: _definitions.Workflow[Any, Any],
            args: Sequence[Any],
            kwargs: Mapping[str, Any],
        ) -> Any:
            return self._execute(child, workflow, args, kwargs)

        return run_child

    def _execute(
        self,
        child: _Child,
        workflow: _definitions.Workflow[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Call the child's function, or its stub; record the call as the function ends."""
        stub = child.stub
        if child.call is None:
            child.call = _stubs.ChildCall(
                child.parent,
                workflow,
                child.id,
                tuple(args),
                dict(kwargs),
                stubbed=stub is not None,
            )
        function = workflow.fn if stub is None else stub.behaviour
        try:
            result = function(*args, **kwargs)
            if inspect.iscoroutine(result):  # an async child, or an async stub of one
                result = _aio.run_workflow(result)
        except Exception as exc:  # control flow (a wait, a cancellation) is no end: not caught
            self._ended(child, error=exc)
            raise
        self._ended(child, result=result)
        if stub is not None:
            self._check_result(stub, workflow, result)
        return result

    def _ended(self, child: _Child, **outcome: Any) -> None:
        if not child.ended and child.call is not None:
            child.ended = True
            self._record(child.stub, dataclasses.replace(child.call, **outcome))

    def _check_result(
        self, stub: _stubs.Stub[Any], workflow: _definitions.Workflow[Any, Any], value: Any
    ) -> None:
        """Fail the child run, naming the stub, unless its value can be the workflow's result.

        The child records it as a real child's result, so it must encode and decode
        back as the workflow's return annotation, as a real child's must.
        """
        try:
            self._codec.decode(self._codec.encode(value), workflow.return_type)
        except Exception as exc:
            raise _errors.EncodeError(
                f"{stub!r} returned a value of type {type(value).__module__}."
                f"{type(value).__qualname__} that does not fit the return annotation of "
                f"workflow {workflow.name!r} ({_inputs.type_name(workflow.return_type)}): "
                f"{exc}; stub it with a value the workflow could return"
            ) from None
