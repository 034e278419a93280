"""Property tests: damaged bytes give HistoryCorruptError or DecodeError, never anything else.

Arbitrary kinds, names, positions and payloads stored through the memory and
SQLite stores, then loaded and executed by a worker, and arbitrary bytes decoded
by the JSON codec into many annotated types: every outcome is one of Fluxo's
errors for damage (or a recorded failure), never another exception, and never a
loop (each execution below is counted).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import decimal
import enum
import sqlite3
import uuid
from pathlib import Path
from typing import Any, TypedDict

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fluxo
from fluxo import _executor, _worker, history
from fluxo.stores.memory import MemoryStore

from .helpers import CountingStore

FAST = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

kinds = st.one_of(st.sampled_from(sorted(history.EVENT_TYPES)), st.text(max_size=20))
names = st.text(max_size=30)
payloads = st.one_of(st.none(), st.binary(max_size=64))
rows = st.lists(st.tuples(kinds, names, payloads), max_size=6)


@given(
    records=st.lists(
        st.tuples(st.integers(-2, 8), st.one_of(kinds, st.none(), st.integers()), names, payloads),
        max_size=8,
    ),
    next_seq=st.one_of(st.none(), st.integers(0, 10)),
)
@FAST
def test_reading_arbitrary_rows_gives_a_history_or_history_corrupt_error(
    records: list[Any], next_seq: int | None
) -> None:
    try:
        events = history.read_events("r", records, next_seq=next_seq)
    except fluxo.HistoryCorruptError as exc:
        damage: fluxo.HistoryCorruptError | None = exc
    else:
        damage = None
    if damage is not None:
        assert damage.run_id == "r"
        assert damage.next_seq >= 0
        return
    assert [type(e).kind for e in events] == [kind for _, kind, _, _ in records]
    assert isinstance(events[0], history.WorkflowStarted)


@fluxo.step(name="prop.echo")
def echo(n: int) -> int:
    return n


@fluxo.workflow(name="prop.flow")
def flow(n: int) -> int:
    fluxo.wait_for_signal("go", type=int)
    return echo(n) + echo(n + 1)


def _execute_once(store: fluxo.Store) -> None:
    """Claim and execute what is runnable, counting; a run is never executed twice here."""
    counting = CountingStore(store)
    engine = fluxo.Engine(counting, workflows=[flow], clock=lambda: 1.0e9)  # type: ignore[arg-type]
    worker = _worker.Worker(engine, sticky=0)
    try:
        worker.process_one()
    finally:
        engine.close()
    assert all(count <= 1 for count in counting.loads_of.values()), counting.loads_of


def _settled(store: fluxo.Store, run_id: str) -> None:
    """After execution: the run loads, or loading it says what is damaged."""
    try:
        state = store.load(run_id)
    except fluxo.HistoryCorruptError:
        assert store.get_run(run_id).status is fluxo.RunStatus.FAILED  # failed once, for it
        return
    assert state.run.status is not fluxo.RunStatus.RUNNING  # nothing broke off mid-run


@given(input=st.binary(max_size=40), tail=rows)
@FAST
def test_arbitrary_events_in_a_memory_store_fail_or_wait_never_raise(
    input: bytes, tail: list[Any]
) -> None:
    store = MemoryStore()
    store.create_run("r", flow.name, input, now=1.0e9)
    store.send_signal("r", "go", b"1", now=1.0e9)
    log = store._events["r"]
    for kind, name, data in tail:
        cls = history.EVENT_TYPES.get(kind)
        if cls is None:  # an Event class Fluxo does not register: an unknown kind
            cls = type("Foreign", (history.Event,), {"kind": kind, "__slots__": ()})
        log.append(cls(name, data))
        store._recorded_at["r"].append(1.0e9)

    _execute_once(store)

    _settled(store, "r")


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("props") / "props.db"
    fluxo.open_store(f"sqlite:///{path}").close()  # the schema
    return path


@given(
    input=st.binary(max_size=40),
    tail=st.lists(st.tuples(st.integers(-1, 8), kinds, names, payloads), max_size=6),
)
@FAST
def test_arbitrary_rows_in_sqlite_fail_or_wait_never_raise(
    sqlite_db: Path, input: bytes, tail: list[Any]
) -> None:
    store = fluxo.open_store(f"sqlite:///{sqlite_db}")
    run_id = uuid.uuid4().hex
    try:
        store.create_run(run_id, flow.name, input, now=1.0e9)
        store.send_signal(run_id, "go", b"1", now=1.0e9)
        with sqlite3.connect(sqlite_db) as db:
            for seq, kind, name, data in tail:
                db.execute(
                    "INSERT OR REPLACE INTO fluxo_events (run_id, seq, kind, name, data, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (run_id, seq, kind, name, data, 1.0e9),
                )

        _execute_once(store)

        _settled(store, run_id)
    finally:
        store.close()


class Color(enum.Enum):
    RED = "red"


@dataclasses.dataclass
class Point:
    x: int
    y: float


class Movie(TypedDict):
    title: str
    year: int


TYPES = [
    Any,
    int,
    float,
    str,
    bool,
    bytes,
    list[int],
    dict[str, float],
    tuple[int, str],
    set[str],
    int | None,
    Point,
    Movie,
    Color,
    datetime.datetime,
    datetime.date,
    uuid.UUID,
    decimal.Decimal,
    _executor.ErrorInfo,
    _executor.Rejection,
]


@given(data=st.binary(max_size=80), type_=st.sampled_from(TYPES))
@FAST
def test_the_json_codec_decodes_arbitrary_bytes_or_raises_decode_error(
    data: bytes, type_: Any
) -> None:
    with contextlib.suppress(fluxo.DecodeError):
        fluxo.JSONCodec().decode(data, type_)


@given(
    value=st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
        max_leaves=8,
    ),
    type_=st.sampled_from(TYPES),
)
@FAST
def test_the_json_codec_decodes_any_json_value_or_raises_decode_error(
    value: Any, type_: Any
) -> None:
    codec = fluxo.JSONCodec()
    with contextlib.suppress(fluxo.DecodeError):
        codec.decode(codec.encode(value), type_)
