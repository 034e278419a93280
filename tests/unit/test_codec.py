"""The codec: round trips by annotation, loud failures, pluggability, no pickle."""

from __future__ import annotations

import dataclasses
import enum
import pickle
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any, NamedTuple, Optional, TypedDict

import pydantic
import pytest

import fluxo

from .conftest import MakeEngine
from .helpers import FakeClock, SimulatedCrash, execute

# -- types used in round trips ----------------------------------------------------------


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@dataclasses.dataclass(frozen=True)
class Money:
    cents: int
    currency: str = "EUR"


@dataclasses.dataclass
class Line:
    sku: str
    price: Money
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Order:
    id: uuid.UUID
    lines: list[Line]
    placed: datetime
    color: Color
    note: Optional[str] = None  # noqa: UP045 -- the spelling users write is tested too


class Point(NamedTuple):
    x: int
    y: int


class Address(TypedDict):
    street: str
    zip: str


class Customer(pydantic.BaseModel):
    name: str
    since: date
    addresses: list[str] = []


@dataclasses.dataclass
class Account:
    owner: Customer
    balance: Decimal


ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    lines=[Line("a", Money(100), ["x"]), Line("b", Money(250, "USD"))],
    placed=datetime(2024, 5, 17, 12, 30, tzinfo=timezone(timedelta(hours=2))),
    color=Color.BLUE,
)

ROUND_TRIPS: list[tuple[Any, Any]] = [
    (ORDER, Order),
    (Money(5), Money),
    (Color.RED, Color),
    (Level.HIGH, Level),
    (datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc), datetime),
    (datetime(2024, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=-5))), datetime),
    (date(2024, 2, 29), date),
    (time(13, 37, 1), time),
    (timedelta(days=2, seconds=3), timedelta),
    (uuid.UUID(int=7), uuid.UUID),
    (Decimal("1.10"), Decimal),
    (Decimal("-12345678901234567890.000000001"), Decimal),
    (b"\x00\xffbinary", bytes),
    ((1, "a", 2.5), tuple[int, str, float]),
    ((1, 2, 3), tuple[int, ...]),
    ({1, 2, 3}, set[int]),
    (frozenset({"a"}), frozenset[str]),
    ({"street": "Main 1", "zip": "1000"}, Address),
    (Point(1, 2), Point),
    (None, Optional[int]),  # noqa: UP045
    (5, Optional[int]),  # noqa: UP045
    (None, int | None),
    ([Money(1), Money(2, "CHF")], list[Money]),
    ({"a": Money(1), "b": Money(2)}, dict[str, Money]),
    ({"p": Point(0, 1)}, dict[str, Point]),
    (Customer(name="Ada", since=date(2020, 1, 1), addresses=["x"]), Customer),
    (Account(Customer(name="Bob", since=date(2021, 2, 3)), Decimal("9.99")), Account),
    ([Customer(name="C", since=date(2022, 3, 4))], list[Customer]),
    ("plain", str),
    (3.25, float),
    (True, bool),
]


@pytest.mark.parametrize(("value", "tp"), ROUND_TRIPS, ids=[repr(t) for _, t in ROUND_TRIPS])
def test_round_trip_by_annotation(value: Any, tp: Any) -> None:
    codec = fluxo.JSONCodec()
    data = codec.encode(value)
    assert isinstance(data, bytes)
    decoded = codec.decode(data, tp)
    assert decoded == value
    assert type(decoded) is type(value)


def test_nested_values_come_back_as_their_types() -> None:
    codec = fluxo.JSONCodec()
    order = codec.decode(codec.encode(ORDER), Order)
    assert isinstance(order.lines[0], Line)
    assert isinstance(order.lines[0].price, Money)
    assert isinstance(order.id, uuid.UUID)
    assert order.placed.utcoffset() == timedelta(hours=2)
    assert order.color is Color.BLUE
    account = codec.decode(
        codec.encode(Account(Customer(name="x", since=date.today()), Decimal(1))), Account
    )
    assert isinstance(account.owner, Customer)
    assert account.balance == Decimal(1)


def test_decimals_keep_their_exact_digits() -> None:
    codec = fluxo.JSONCodec()
    assert codec.encode(Decimal("1.10")) == b'"1.10"'
    assert str(codec.decode(codec.encode(Decimal("1.10")), Decimal)) == "1.10"


def test_without_a_type_values_decode_as_plain_json() -> None:
    codec = fluxo.JSONCodec()
    assert codec.decode(codec.encode(Money(3))) == {"cents": 3, "currency": "EUR"}
    assert codec.decode(codec.encode((1, 2))) == [1, 2]
    assert codec.decode(codec.encode(Color.RED), Any) == "red"


# -- failures ---------------------------------------------------------------------------


class Opaque:
    """Nothing a JSON codec can encode."""


@pytest.mark.parametrize(
    "value",
    [Opaque(), object(), {1, Opaque()}, {"k": Opaque()}, [Money(1), Opaque()], {(1, 2): 3}],
    ids=["instance", "object", "in-a-set", "in-a-dict", "in-a-list", "tuple-key"],
)
def test_unencodable_values_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        fluxo.JSONCodec().encode(value)


def test_a_str_json_cannot_hold_raises_type_error() -> None:
    with pytest.raises(TypeError) as info:
        fluxo.JSONCodec().encode({"name": "lone surrogate \udc80"})
    assert isinstance(info.value, fluxo.EncodeError)


def test_big_ints_round_trip() -> None:
    codec = fluxo.JSONCodec()
    assert codec.decode(codec.encode(2**70), int) == 2**70


def test_self_referencing_values_raise_type_error() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(TypeError):
        fluxo.JSONCodec().encode(loop)


@pytest.mark.parametrize(
    ("data", "tp"),
    [
        (b'"x"', int),
        (b"1", str),
        (b'{"cents": "ten"}', Money),
        (b'{"currency": "EUR"}', Money),
        (b"[1, 2]", tuple[int, int, int]),
        (b'"not-a-uuid"', uuid.UUID),
        (b'"purple"', Color),
        (b'{"street": "x"}', Address),
        (b'{"name": 1, "since": "2020-01-01"}', Customer),
        (b"\xff\x00garbage", Any),
        (b"", Any),
        (b"{", dict[str, int]),
        (b'"2024-13-45"', date),
    ],
)
def test_wrong_shapes_raise_decode_error(data: bytes, tp: Any) -> None:
    with pytest.raises(fluxo.DecodeError) as info:
        fluxo.JSONCodec().decode(data, tp)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, fluxo.CodecError)
    assert "does not decode as" in str(info.value)


def test_a_type_the_codec_does_not_know_fails_as_a_fluxo_error() -> None:
    codec = fluxo.JSONCodec()
    with pytest.raises(fluxo.DecodeError, match="does not know how to decode"):
        codec.decode(b"{}", Opaque)
    with pytest.raises(fluxo.DecodeError, match="does not know how to decode"):
        codec.decode(b"[{}]", list[Opaque])


def test_decoding_a_pickle_runs_nothing() -> None:
    ran: list[str] = []

    class Payload:
        def __reduce__(self) -> Any:
            return (ran.append, ("pwned",))

    data = pickle.dumps(Payload())
    with pytest.raises(fluxo.DecodeError):
        fluxo.JSONCodec().decode(data, Any)
    with pytest.raises(fluxo.DecodeError):
        fluxo.JSONCodec().decode(data, Money)
    assert ran == []


def test_a_whole_run_never_touches_pickle(
    make_engine: MakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    for name in ("dumps", "loads", "dump", "load", "Pickler", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)

    @fluxo.step(name="codec.make_line")
    def make_line(sku: str) -> Line:
        return Line(sku, Money(10))

    @fluxo.workflow(name="codec.flow")
    def flow(order: Order) -> list[Line]:
        return [*order.lines, make_line("c")]

    engine = make_engine(flow)
    handle = engine.start(flow, ORDER)
    assert execute(engine, handle.id).value == "completed"
    assert handle.result(timeout=1) == [*ORDER.lines, Line("c", Money(10))]


# -- pluggable codecs -------------------------------------------------------------------


class XorCodec:
    """A stand-in for an encrypting codec: JSON, with every byte XORed with a key."""

    def __init__(self, key: int = 0x5A) -> None:
        self.key = key
        self.inner = fluxo.JSONCodec()
        self.encoded = 0
        self.decoded = 0

    def scramble(self, data: bytes) -> bytes:
        return bytes(b ^ self.key for b in data)

    def encode(self, value: Any) -> bytes:
        self.encoded += 1
        return self.scramble(self.inner.encode(value))

    def decode(self, data: bytes, type: Any = Any) -> Any:
        self.decoded += 1
        return self.inner.decode(self.scramble(data), type)


def test_a_custom_codec_satisfies_the_protocol() -> None:
    assert isinstance(XorCodec(), fluxo.Codec)
    assert isinstance(fluxo.JSONCodec(), fluxo.Codec)
    assert not isinstance(object(), fluxo.Codec)


def test_an_engine_stores_what_its_codec_produces(store_url: str, make_engine: MakeEngine) -> None:
    codec = XorCodec()
    plain = fluxo.JSONCodec()
    errors: list[str] = []

    @fluxo.step(name="codec.price")
    def price(sku: str) -> Money:
        return Money(len(sku) * 100)

    @fluxo.step(name="codec.broken")
    def broken() -> None:
        raise ValueError("card declined")

    @fluxo.workflow(name="codec.checkout")
    def checkout(skus: list[str]) -> Money:
        total = sum(price(sku).cents for sku in skus)
        try:
            broken()
        except fluxo.StepError as exc:
            errors.append(exc.error_message)
        return Money(total + int(fluxo.random() * 0))

    engine = make_engine(checkout, store=store_url, codec=codec)
    assert engine.codec is codec
    handle = engine.start(checkout, ["ab", "cde"])
    assert execute(engine, handle.id).value == "completed"
    assert handle.result(timeout=1) == Money(500)
    assert errors == ["card declined"]  # the failure decoded through the codec

    events = engine.history(handle.id)
    assert [e.kind for e in events] == [
        "workflow_started",
        "step_completed",
        "step_completed",
        "step_failed",
        "value_recorded",
        "workflow_completed",
    ]
    started, first, second, failed, _, completed = events
    assert started.data == codec.scramble(plain.encode({"skus": ["ab", "cde"]}))
    assert first.data == codec.scramble(plain.encode(Money(200)))
    assert second.data == codec.scramble(plain.encode(Money(300)))
    assert completed.data == codec.scramble(plain.encode(Money(500)))
    for event in (started, first, second, failed, completed):
        assert event.data is not None
        with pytest.raises(fluxo.DecodeError):
            plain.decode(event.data)  # not readable without the codec
    assert codec.encoded > 0
    assert codec.decoded > 0


def test_a_custom_codec_replays_its_own_records(make_engine: MakeEngine, clock: FakeClock) -> None:
    codec = XorCodec()
    calls: list[str] = []

    @fluxo.step(name="codec.once")
    def once(cents: int) -> Money:
        calls.append("once")
        return Money(cents)

    @fluxo.step(name="codec.crash_once")
    def crash_once() -> None:
        calls.append("crash")
        if calls.count("crash") == 1:
            raise SimulatedCrash

    @fluxo.workflow(name="codec.replayed")
    def replayed() -> Money:
        first, second = once(1), once(2)
        assert isinstance(first, Money)
        crash_once()
        return Money(first.cents + second.cents)

    engine = make_engine(replayed, codec=codec)
    handle = engine.start(replayed)
    with pytest.raises(SimulatedCrash):
        execute(engine, handle.id, "first")
    clock.advance(60)
    assert execute(engine, handle.id, "second").value == "completed"
    assert handle.result(timeout=1) == Money(3)
    assert calls == ["once", "once", "crash", "crash"]


def test_a_record_of_fluxos_internals_is_not_named_by_its_private_module() -> None:
    from fluxo import _executor

    with pytest.raises(fluxo.DecodeError) as info:
        fluxo.JSONCodec().decode(b'"garbage"', _executor.ErrorInfo)

    assert "Fluxo's ErrorInfo record" in str(info.value)
    assert "fluxo._" not in str(info.value)
