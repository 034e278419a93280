"""A workflow's arguments as a run records them: their types, their fit, their comparison.

A run's input is one object keyed by parameter name, encoded by the engine's
codec and decoded by the parameters' annotations (``Workflow.input_type``). The
helpers here serve ``Workflow``: they name the argument that does not fit its
annotation, in the user's words (the parameter, the types), and compare the
arguments of two starts by what a run records of them, so ``1`` and ``True``
differ even though Python finds them equal.
"""

from __future__ import annotations

import inspect
from typing import Any

import msgspec

from fluxo import _errors


def field_type(param: inspect.Parameter, hints: dict[str, Any]) -> Any:
    """The type an argument of ``param`` decodes as: its annotation, ``*args`` as a list."""
    annotation = hints.get(param.name, Any)
    if param.kind is inspect.Parameter.VAR_POSITIONAL:
        return list[annotation]  # type: ignore[valid-type]
    if param.kind is inspect.Parameter.VAR_KEYWORD:
        return dict[str, annotation]  # type: ignore[valid-type]
    return annotation


def field(decoded: Any, name: str) -> Any:
    """The argument ``name`` of a decoded input (the input type or a plain mapping); else UNSET."""
    if isinstance(decoded, dict):
        return decoded.get(name, msgspec.UNSET)
    return getattr(decoded, name, msgspec.UNSET)


def reason(error: BaseException) -> str:
    """The codec's own words for why a value does not decode (msgspec's, for the JSON codec)."""
    cause = error.__cause__ if isinstance(error, _errors.DecodeError) else None
    shown = cause if cause is not None else error
    return str(shown) or type(shown).__name__


def decode_problem(codec: Any, value: Any, expected: Any) -> str | None:
    """Why ``value`` does not come back from ``codec`` as ``expected``; ``None`` when it does."""
    try:
        codec.decode(codec.encode(value), expected)
    except Exception as exc:  # a custom codec's own errors too
        return reason(exc)
    return None


def type_name(tp: Any) -> str:
    """A type as a message names it: ``int``, ``None``, ``list[int]``, ``shop.Receipt``."""
    if tp is type(None):
        return "None"
    if isinstance(tp, type) and not getattr(tp, "__args__", None):
        return (
            tp.__qualname__ if tp.__module__ == "builtins" else f"{tp.__module__}.{tp.__qualname__}"
        )
    return inspect.formatannotation(tp)


def same(codec: Any, before: Any, after: Any) -> bool:
    """Tell whether two arguments are the same as a run records them.

    Equal in Python, and equal once encoded and decoded as plain data, type for
    type: ``1``, ``1.0`` and ``True`` differ; dicts compare whatever their order.
    """
    try:
        if not bool(before == after):
            return False
    except Exception:  # an __eq__ that raises: they are not known to be equal
        return False
    try:
        recorded = codec.decode(codec.encode(before)), codec.decode(codec.encode(after))
    except Exception:  # the codec cannot say more than Python's equality
        return True
    return _identical(*recorded)


def _identical(before: Any, after: Any) -> bool:
    """Plain data equal value for value and type for type (``1 != True != 1.0``)."""
    if type(before) is not type(after):
        return False
    if isinstance(before, dict):
        return before.keys() == after.keys() and all(
            _identical(before[key], after[key]) for key in before
        )
    if isinstance(before, (list, tuple)):
        return len(before) == len(after) and all(map(_identical, before, after))
    return bool(before == after)
