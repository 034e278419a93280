"""The runtime protocol: workflow code calls the current execution, never the executor."""

from __future__ import annotations

from typing import Any

import pytest

import fluxo
import fluxo.testing
from fluxo import _errors, _runtime

from .conftest import MakeEngine

SEEN: dict[str, Any] = {}


@fluxo.step(name="rt.inside_a_step")
def inside_a_step() -> bool:
    SEEN["step"] = _runtime.current()
    return fluxo.in_workflow()


@fluxo.workflow(name="rt.flow")
def flow() -> bool:
    runtime = _runtime.current()
    if runtime is not None:
        SEEN["run_id"] = runtime.run_id
        SEEN["workflow"] = runtime.workflow_name
    return inside_a_step()


def test_outside_a_workflow_there_is_no_runtime() -> None:
    SEEN.clear()
    assert _runtime.current() is None
    assert not fluxo.in_workflow()
    assert flow() is False  # a plain call: its step is a plain call too
    assert SEEN == {"step": None}


def test_a_workflow_sees_its_execution_as_the_runtime_and_a_step_sees_none(
    make_engine: MakeEngine,
) -> None:
    SEEN.clear()
    engine = make_engine(flow)

    assert engine.run(flow.options(id="rt-1")) is False
    assert SEEN == {"run_id": "rt-1", "workflow": "rt.flow", "step": None}
    assert _runtime.current() is None  # and none is left behind


def test_enter_and_leave_nest() -> None:
    outer = _runtime.enter(None)
    try:
        assert _runtime.current() is None
    finally:
        _runtime.leave(outer)
    assert _runtime.current() is None


def test_cancelled_is_control_flow_that_user_code_cannot_make() -> None:
    assert issubclass(fluxo.Cancelled, _runtime.ControlFlow)
    assert not issubclass(fluxo.Cancelled, Exception)
    with pytest.raises(TypeError, match="cannot be constructed"):
        fluxo.Cancelled()
    with pytest.raises(TypeError, match="abstract"):
        _runtime.ControlFlow()
    assert isinstance(_runtime.cancellation(), fluxo.Cancelled)


def test_the_public_type_names_are_exactly_the_exported_exceptions() -> None:
    exported = {}
    for module in (fluxo.testing, fluxo):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, BaseException):
                # fluxo presents them under its own name; where each is defined is kept
                defined = getattr(obj, "_fluxo_path", f"{obj.__module__}.{obj.__qualname__}")
                exported[defined] = f"{module.__name__}.{name}"
    assert exported == _errors.PUBLIC_TYPE_NAMES
    assert _errors.type_name(fluxo.Cancelled) == "fluxo.Cancelled"
    assert _errors.read_type_name("fluxo._executor.Cancelled") == "fluxo.Cancelled"
    assert not _errors.is_private(fluxo.Cancelled)
    assert _errors.is_private(_runtime.ControlFlow)
