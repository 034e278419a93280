"""``@fluxo.workflow`` and ``@fluxo.step``: forms, names, metadata, validation."""

from __future__ import annotations

import dataclasses
import decimal
import enum
import functools
import inspect
import io
import typing
import uuid
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple, TypedDict

import msgspec
import pydantic
import pytest

import fluxo
from fluxo import _retry

from . import workflows as wfs
from .conftest import MakeEngine
from .helpers import execute

# -- forms and names --------------------------------------------------------------------


def test_bare_and_called_forms_build_the_same_kind_of_object() -> None:
    assert isinstance(wfs.checkout, fluxo.Workflow)
    assert isinstance(wfs.checkout_called, fluxo.Workflow)
    assert isinstance(wfs.charge, fluxo.Step)
    assert isinstance(wfs.charge_as_dict, fluxo.Step)
    assert not isinstance(wfs.charge, fluxo.Workflow)


def test_default_name_is_module_and_qualname() -> None:
    module = wfs.__name__
    assert wfs.checkout.name == f"{module}.checkout"
    assert wfs.checkout_called.name == f"{module}.checkout_called"
    assert wfs.charge.name == f"{module}.charge"
    assert wfs.Holder.nested_step.name == f"{module}.Holder.nested_step"
    assert wfs.checkout.aliases == ()
    assert wfs.checkout.names == frozenset({wfs.checkout.name})


def test_name_and_aliases_are_kept() -> None:
    assert wfs.named_checkout.name == "shop.checkout"
    assert wfs.named_checkout.aliases == ("shop.checkout_v1",)
    assert wfs.named_checkout.names == {"shop.checkout", "shop.checkout_v1"}
    assert wfs.refund.name == "shop.refund"
    assert wfs.refund.aliases == ("shop.refund_v0", "old.refund")


def test_aliases_drop_duplicates_and_the_name_itself() -> None:
    @fluxo.step(name="s", aliases=["a", "s", "b", "a"])
    def s() -> None: ...

    assert s.aliases == ("a", "b")
    assert s.names == {"s", "a", "b"}


def test_step_retry_option_is_coerced() -> None:
    assert wfs.refund.retry == fluxo.Retry(max_attempts=3)
    assert wfs.charge.retry.max_attempts == 1
    policy = fluxo.Retry(max_attempts=7, initial=0)

    @fluxo.step(name="with_policy", retry=policy)
    def with_policy() -> None: ...

    assert with_policy.retry is policy


def test_functools_metadata_is_kept() -> None:
    assert wfs.checkout.__name__ == "checkout"
    assert wfs.checkout.__qualname__ == "checkout"
    assert wfs.checkout.__module__ == wfs.__name__
    assert wfs.checkout.__doc__ == "Charge an order and return the receipt id."
    assert wfs.checkout.__wrapped__ is wfs.checkout.fn
    assert wfs.charge.__name__ == "charge"
    assert wfs.charge.__doc__ == "Charge an order."
    assert wfs.charge.__wrapped__ is wfs.charge.fn
    assert str(inspect.signature(wfs.charge)) == "(order_id: 'str', cents: 'int') -> 'Receipt'"
    assert inspect.signature(wfs.named_checkout) == inspect.signature(wfs.named_checkout.fn)
    # The object's own __dict__ is not replaced by the function's (updated=()).
    assert wfs.checkout.__dict__["fn"] is wfs.checkout.fn


def test_repr_names_the_kind_and_name() -> None:
    assert repr(wfs.named_checkout) == "<fluxo workflow shop.checkout>"
    assert repr(wfs.refund) == "<fluxo step shop.refund>"


def test_return_type_comes_from_the_annotation() -> None:
    assert wfs.charge.return_type is wfs.Receipt
    assert wfs.checkout.return_type is str

    @fluxo.step(name="unannotated")
    def unannotated():  # type: ignore[no-untyped-def]
        return 1

    assert unannotated.return_type is Any


# -- plain calls outside a workflow -----------------------------------------------------


def test_step_outside_a_workflow_is_a_plain_call() -> None:
    wfs.CHARGES.clear()
    receipt = wfs.charge("o-1", 250)
    assert receipt == wfs.Receipt("r-o-1", 250)
    assert wfs.CHARGES == [("o-1", 250)]
    # A plain call does not decode: the annotation is not enforced.
    assert wfs.charge_as_dict("o-2", 3) == {"id": "r-o-2", "cents": 3}  # type: ignore[comparison-overlap]
    assert not fluxo.in_workflow()


def test_workflow_outside_an_engine_is_a_plain_call() -> None:
    wfs.CHARGES.clear()
    assert wfs.checkout("o-3", 7) == "r-o-3"
    assert wfs.CHARGES == [("o-3", 7)]
    assert wfs.named_checkout("o-4") == 100


def test_a_step_defined_in_a_class_body_is_callable_through_the_class() -> None:
    assert wfs.Holder.nested_step(1) == 2


# -- validation at decoration time ------------------------------------------------------


def test_lambda_needs_a_name() -> None:
    with pytest.raises(fluxo.DefinitionError, match="lambda") as info:
        fluxo.step(lambda: 1)
    assert "name=" in str(info.value)
    assert "def" in str(info.value)
    with pytest.raises(fluxo.DefinitionError, match="lambda"):
        fluxo.workflow(lambda: 1)


def test_lambda_with_a_name_is_accepted() -> None:
    named = fluxo.step(name="one")(lambda: 1)
    assert named.name == "one"
    assert named() == 1


def test_function_defined_in_a_function_needs_a_name() -> None:
    def local() -> int:
        return 1

    for decorator in (fluxo.step, fluxo.workflow):
        with pytest.raises(fluxo.DefinitionError) as info:
            decorator(local)
        message = str(info.value)
        assert "defined inside a function" in message
        assert "name=" in message
        assert "local" in message


def test_function_defined_in_a_function_is_accepted_with_a_name() -> None:
    @fluxo.workflow(name="local.flow")
    def flow() -> int:
        return 2

    @fluxo.step(name="local.step")
    def local_step() -> int:
        return 3

    assert flow.name == "local.flow"
    assert local_step.name == "local.step"
    assert flow() == 2
    assert local_step() == 3


def test_async_generators_are_rejected_and_coroutine_functions_accepted() -> None:
    async def coroutine() -> int:
        return 1

    async def agen() -> Any:
        yield 1

    with pytest.raises(fluxo.DefinitionError, match="async generator") as info:
        fluxo.step(name="x")(agen)
    assert "must return its result" in str(info.value)
    with pytest.raises(fluxo.DefinitionError, match="async generator"):
        fluxo.workflow(name="x")(agen)
    assert fluxo.step(name="x")(coroutine).is_async
    assert fluxo.workflow(name="x")(coroutine).is_async


def test_generators_are_rejected() -> None:
    def gen() -> Any:
        yield 1

    with pytest.raises(fluxo.DefinitionError, match="generator") as info:
        fluxo.step(name="g")(gen)
    assert "must return its result" in str(info.value)
    with pytest.raises(fluxo.DefinitionError, match="generator"):
        fluxo.workflow(name="g")(gen)


@pytest.mark.parametrize("name", ["", "   ", 42, b"bytes"])
def test_bad_names_are_rejected(name: Any) -> None:
    def fn() -> None: ...

    with pytest.raises(fluxo.DefinitionError, match="name= must be a non-empty string"):
        fluxo.step(name=name)(fn)
    with pytest.raises(fluxo.DefinitionError, match="name= must be a non-empty string"):
        fluxo.workflow(name=name)(fn)


@pytest.mark.parametrize("aliases", ["old.name", [""], [1], ["ok", None]])
def test_bad_aliases_are_rejected(aliases: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="aliases= must be a list"):
        fluxo.step(aliases=aliases)(wfs.charge.fn)
    with pytest.raises(fluxo.DefinitionError, match="aliases= must be a list"):
        fluxo.workflow(aliases=aliases)(wfs.checkout.fn)


class _CallableObject:
    def __call__(self) -> int:
        return 1


@pytest.mark.parametrize(
    "thing",
    [
        len,
        _CallableObject(),
        _CallableObject,
        functools.partial(wfs.charge.fn, "o"),
        "not even callable",
        wfs.charge,
    ],
    ids=["builtin", "callable-object", "class", "partial", "string", "a-step"],
)
def test_non_functions_are_rejected(thing: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="plain function defined with 'def'"):
        fluxo.step(thing)
    with pytest.raises(fluxo.DefinitionError, match="plain function defined with 'def'"):
        fluxo.workflow(name="n")(thing)


def test_every_problem_is_reported_at_once() -> None:
    async def broken() -> Any:
        yield None

    with pytest.raises(fluxo.DefinitionError) as info:
        fluxo.workflow(aliases="old")(broken)
    lines = str(info.value).splitlines()
    assert len(lines) == 3
    assert "defined inside a function" in lines[0]
    assert "async generator" in lines[1]
    assert "aliases=" in lines[2]


def test_definition_error_is_a_type_error_and_a_fluxo_error() -> None:
    with pytest.raises(TypeError):
        fluxo.step(lambda: 1)
    assert issubclass(fluxo.DefinitionError, fluxo.FluxoError)


@pytest.mark.parametrize("retry", [True, "3", 1.5, 0, -1, [3]])
def test_bad_retry_is_rejected_when_decorating(retry: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match=r"retry|max_attempts"):
        fluxo.step(retry=retry)(wfs.charge.fn)


def test_decorating_registers_nothing_globally(make_engine: MakeEngine) -> None:
    engine = make_engine(wfs.named_checkout)
    with pytest.raises(fluxo.UnknownWorkflowError, match="not registered"):
        engine.start(wfs.checkout, "o", 1)
    assert engine.workflow_names == {"shop.checkout", "shop.checkout_v1"}


def test_options_returns_a_bound_copy() -> None:
    bound = wfs.checkout.options(id="order-1")
    assert bound is not wfs.checkout
    assert bound.start_id == "order-1"
    assert wfs.checkout.start_id is None
    assert bound.name == wfs.checkout.name
    assert bound.fn is wfs.checkout.fn
    for bad in ("", 17):
        with pytest.raises(fluxo.DefinitionError, match="run id"):
            wfs.checkout.options(id=bad)  # type: ignore[arg-type]


def test_unresolvable_annotations_fail_with_the_fix(make_engine: MakeEngine) -> None:
    @fluxo.workflow(name="ghost")
    def ghost(x: NoSuchType) -> None:  # type: ignore[name-defined]  # noqa: F821
        ...

    engine = make_engine(ghost)
    with pytest.raises(fluxo.DefinitionError, match="cannot resolve the annotations") as info:
        engine.start(ghost, 1)
    assert "importable at module level" in str(info.value)
    assert engine.list_runs() == []


# -- registration in an engine ----------------------------------------------------------


def test_duplicate_workflow_names_in_one_engine_name_both(make_engine: MakeEngine) -> None:
    @fluxo.workflow(name="shop.checkout")
    def impostor() -> None: ...

    with pytest.raises(fluxo.DefinitionError) as info:
        make_engine(wfs.named_checkout, impostor)
    message = str(info.value)
    assert "two workflows are named 'shop.checkout'" in message
    assert f"{wfs.__name__}.named_checkout" in message
    assert "impostor" in message
    assert "name=" in message


def test_an_alias_may_not_shadow_another_workflows_name(make_engine: MakeEngine) -> None:
    @fluxo.workflow(name="other", aliases=["shop.checkout_v1"])
    def other() -> None: ...

    with pytest.raises(fluxo.DefinitionError, match=r"'shop\.checkout_v1'"):
        make_engine(wfs.named_checkout, other)


def test_listing_a_workflow_twice_is_harmless(make_engine: MakeEngine) -> None:
    engine = make_engine(wfs.checkout, wfs.checkout)
    assert engine.workflows == [wfs.checkout]
    # A copy bound with options() is the same workflow, not a second one named alike.
    engine = make_engine(wfs.checkout, wfs.checkout.options(id="x"))
    assert [w.name for w in engine.workflows] == [wfs.checkout.name]


@pytest.mark.parametrize(
    "workflows",
    [[wfs.charge], [wfs.checkout.fn], ["checkout"], "checkout", wfs.checkout, 3],
    ids=["a-step", "undecorated", "a-name", "a-string", "a-workflow-not-a-list", "int"],
)
def test_engine_rejects_things_that_are_not_workflows(workflows: Any) -> None:
    with pytest.raises(fluxo.DefinitionError):
        fluxo.Engine("memory://", workflows=workflows)


def test_a_workflow_called_inside_a_workflow_runs_as_a_child(make_engine: MakeEngine) -> None:
    engine = make_engine(wfs.calls_a_workflow, wfs.checkout)
    handle = engine.start(wfs.calls_a_workflow)
    assert execute(engine, handle.id).value == "suspended"  # waits for its child
    child = engine.get_run(f"{handle.id}~child-1")
    assert child.workflow == wfs.checkout.name
    assert child.parent == handle.id
    assert engine.worker().process_one() == 2  # the child, then the parent again
    assert handle.result(timeout=1) == engine.handle(child.id).result(timeout=1)


def test_steps_keep_their_retry_policy_object_frozen() -> None:
    assert wfs.charge.retry is _retry.NO_RETRY


def test_a_name_longer_than_stores_keep_is_refused() -> None:
    def long_one() -> None:
        return None

    with pytest.raises(fluxo.DefinitionError, match="at most 255"):
        fluxo.step(name="s" * 256)(long_one)
    assert fluxo.step(name="s" * 255)(long_one).name == "s" * 255


def test_a_run_id_longer_than_stores_keep_is_refused() -> None:
    with pytest.raises(fluxo.DefinitionError, match="at most 255 characters"):
        wfs.checkout.options(id="r" * 256)
    assert wfs.checkout.options(id="r" * 255).start_id == "r" * 255


@fluxo.workflow(name="dec.defaults")
def with_defaults(order_id: str, cents: int = 100, currency: str = "EUR") -> str:
    return f"{order_id}:{cents}:{currency}"


def test_a_skipped_default_does_not_shift_later_arguments(make_engine: MakeEngine) -> None:
    engine = make_engine(with_defaults)
    assert engine.run(with_defaults, "o1", currency="USD") == "o1:100:USD"
    assert engine.run(with_defaults, "o2", 5) == "o2:5:EUR"


# -- annotations the codec must decode ---------------------------------------------------


class Plain:
    """A class the JSON codec cannot rebuild: not a dataclass, struct or model."""

    def __init__(self, x: int) -> None:
        self.x = x


@dataclasses.dataclass
class Holds:
    note: object


@dataclasses.dataclass
class Tree:
    label: str
    children: list[Tree]


class Colour(enum.Enum):
    RED = "red"


class Point(TypedDict):
    x: int


class Pair(NamedTuple):
    a: int
    b: str


class Struct(msgspec.Struct):
    n: int


class Model(pydantic.BaseModel):
    name: str


def annotated(kind: str, **annotations: Any) -> Any:
    """A function whose parameters and result carry ``annotations`` (``returns`` for -> ...)."""

    def fn(*args: Any, **kwargs: Any) -> None: ...

    params = [
        inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        for name in annotations
        if name != "returns"
    ]
    fn.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    fn.__annotations__ = {
        ("return" if name == "returns" else name): tp for name, tp in annotations.items()
    }
    return fn


REFUSED = {
    "object": (object, "names no type to decode JSON to"),
    "plain-class": (Plain, "test_decorators.Plain is not a type the JSON codec can rebuild"),
    "callable": (Callable[[int], int], "collections.abc.Callable is not a type"),
    "file": (typing.IO[str], "typing.IO is not a type"),
    "text-file": (io.TextIOWrapper, "TextIOWrapper is not a type"),
    "list-of-object": (list[object], "names no type"),
    "field": (Holds, "object (in field Holds.note)"),
    "union": (int | Plain, "the JSON codec cannot decode it (Type unions"),
    "class": (type[int], "builtins.type is not a type"),
}


@pytest.mark.parametrize(("annotation", "why"), REFUSED.values(), ids=REFUSED)
def test_a_workflow_parameter_the_codec_cannot_decode_is_refused_when_decorated(
    annotation: Any, why: str
) -> None:
    with pytest.raises(fluxo.DefinitionError) as info:
        fluxo.workflow(name="shop.take")(annotated("workflow", order_id=str, thing=annotation))
    message = str(info.value)
    assert message.startswith("workflow 'shop.take': its parameter 'thing' (")
    assert why in message
    assert "Annotate it with a dataclass, TypedDict or JSON type" in message
    assert "@fluxo.workflow(check_types=False)" in message
    assert "order_id" not in message


@pytest.mark.parametrize(("annotation", "why"), REFUSED.values(), ids=REFUSED)
def test_a_return_annotation_the_codec_cannot_decode_is_refused(annotation: Any, why: str) -> None:
    for decorator in (fluxo.workflow, fluxo.step):
        with pytest.raises(fluxo.DefinitionError, match="its return annotation") as info:
            decorator(name="shop.give")(annotated("x", returns=annotation))
        assert why in str(info.value)


ACCEPTED = {
    "any": Any,
    "dataclass": wfs.Receipt,
    "recursive": Tree,
    "enum": Colour,
    "datetime": datetime,
    "date": date,
    "timedelta": timedelta,
    "uuid": uuid.UUID,
    "decimal": decimal.Decimal,
    "bytes": bytes,
    "tuple": tuple[int, str],
    "typeddict": Point,
    "namedtuple": Pair,
    "struct": Struct,
    "pydantic": Model,
    "nested": dict[str, list[wfs.Receipt | None]],
    "literal": Literal["a", "b"],
    "optional-model": Model | None,
    "none": None,
}


@pytest.mark.parametrize("annotation", ACCEPTED.values(), ids=ACCEPTED)
def test_annotations_the_codec_decodes_are_accepted(annotation: Any) -> None:
    fluxo.workflow(name="shop.w")(annotated("workflow", value=annotation, returns=annotation))
    fluxo.step(name="shop.s")(annotated("step", returns=annotation))


def test_a_workflow_that_never_returns_is_accepted() -> None:
    fluxo.workflow(name="shop.forever")(annotated("workflow", returns=typing.NoReturn))


def test_a_steps_parameters_are_not_checked_since_they_are_never_stored() -> None:
    fluxo.step(name="shop.s")(annotated("step", callback=Callable[[], None], thing=object))


def test_every_annotation_problem_is_reported_at_once() -> None:
    fn = annotated("workflow", a=object, b=int, c=Plain, returns=Callable[[], int])
    with pytest.raises(fluxo.DefinitionError) as info:
        fluxo.workflow(aliases="old")(fn)
    lines = str(info.value).splitlines()
    assert len(lines) == 5
    assert "defined inside a function" in lines[0]
    assert "aliases=" in lines[1]
    assert [line.split(": its ")[1].split(" (")[0] for line in lines[2:]] == [
        "parameter 'a'",
        "parameter 'c'",
        "return annotation",
    ]


class PlainCodec:
    """A codec that can carry ``Plain`` values, without a ``check_type``."""

    def __init__(self) -> None:
        self.encoder = msgspec.json.Encoder(enc_hook=lambda value: {"x": value.x})

    def encode(self, value: Any) -> bytes:
        return self.encoder.encode(value)

    def decode(self, data: bytes, type: Any = Any) -> Any:
        return msgspec.json.decode(data, type=type, dec_hook=lambda _, value: Plain(**value))


class CheckingCodec(PlainCodec):
    """The same, telling Fluxo which types it decodes."""

    def check_type(self, type: Any) -> str | None:
        return None if type in (Plain, int) else f"{type!r} is not Plain or int"


def plain_workflow() -> fluxo.Workflow[[Plain], int]:
    @fluxo.workflow(name="shop.plain", check_types=False)
    def take_plain(value: Plain) -> int:
        return value.x

    return take_plain


def test_a_custom_codec_is_not_blocked(make_engine: MakeEngine) -> None:
    wf = plain_workflow()
    engine = make_engine(wf, codec=PlainCodec())
    assert engine.run(wf, Plain(7)) == 7
    engine = make_engine(wf, codec=CheckingCodec())
    assert engine.run(wf, Plain(8)) == 8


def test_an_engine_checks_its_workflows_with_its_codec(make_engine: MakeEngine) -> None:
    with pytest.raises(fluxo.DefinitionError, match=r"'value' .*Plain is not") as info:
        make_engine(plain_workflow())  # the default JSON codec
    assert "check_types=False" in str(info.value)

    @fluxo.workflow(name="shop.text")
    def text(value: str) -> str:
        return value

    with pytest.raises(fluxo.DefinitionError, match=r"its parameter 'value'.*not Plain or int"):
        make_engine(text, codec=CheckingCodec())


@pytest.mark.parametrize("check", ["yes", None, 1])
def test_check_types_takes_a_bool(check: Any) -> None:
    with pytest.raises(fluxo.DefinitionError, match="check_types= takes True or False"):
        fluxo.workflow(name="shop.w", check_types=check)(annotated("workflow"))


def test_a_forward_reference_is_checked_once_it_resolves(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    @fluxo.workflow(name="shop.later")
    def later(value: LaterType) -> int:  # type: ignore[name-defined]  # noqa: F821
        return 1

    @fluxo.step(name="shop.later_step")
    def later_step() -> LaterType:  # type: ignore[name-defined]  # noqa: F821
        ...

    # Decorated while LaterType does not exist yet: nothing to check, nothing refused.
    monkeypatch.setitem(globals(), "LaterType", Plain)
    with pytest.raises(fluxo.DefinitionError, match="its parameter 'value'"):
        make_engine(later)
    with pytest.raises(fluxo.DefinitionError, match="its return annotation"):
        later_step.return_type
    monkeypatch.setitem(globals(), "LaterType", Tree)
    assert make_engine(later).run(later, Tree("x", [])) == 1
