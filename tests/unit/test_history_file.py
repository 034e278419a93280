"""The history document: exact payloads, the readable view, versions and validation."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import msgspec
import pytest

import fluxo
from fluxo import _executor, _history_file, history
from fluxo.testing import (
    History,
    HistoryFormatError,
    ReplayMismatchError,
    load_history,
    save_history,
)

from .conftest import MakeEngine
from .workflows import Receipt, checkout

PAYLOADS: list[bytes | None] = [
    None,
    b"",
    b'{"id":"r-1","cents":4200}',
    "caf\u00e9 \u2713 \U0001f600".encode(),
    b"\xff\xfe\x00\x80 not utf-8",
    b"\xed\xa0\x80",  # an encoded lone surrogate: not valid UTF-8
    b'\x00\x01\n\t\\"',
]


def _state() -> history.RunState:
    run = history.RunInfo(
        id="run-1",
        workflow="shop.checkout",
        status=history.RunStatus.WAITING,
        created_at=1_700_000_000.25,
        updated_at=1_700_000_001.5,
        ready_at=1_700_000_100.0,
        cancel_requested=True,
        deadline=1_700_009_999.0,
        parent="order-0",
    )
    events = (
        history.WorkflowStarted("shop.checkout", b'{"order_id":"o-1"}'),
        *(history.StepCompleted(f"step-{i}", data) for i, data in enumerate(PAYLOADS)),
        history.TimerStarted("sleep", b"1700000100.0"),
    )
    signals = (
        history.Signal(1, "approved", b"true", 1_700_000_002.0),
        history.Signal(2, "raw", b"\xff\x00", 1_700_000_003.0),
    )
    recorded_at = tuple(1_700_000_000.25 + i for i in range(len(events)))
    return history.RunState(run, events, signals, recorded_at)


def _through_json(document: dict[str, Any]) -> Any:
    return json.loads(json.dumps(document))


def test_a_history_round_trips_byte_for_byte_through_json() -> None:
    state = _state()
    loaded = History.from_document(_through_json(_history_file.to_document(state)))
    assert loaded.run == state.run
    assert loaded.events == state.events  # same classes, names and exact bytes
    assert [type(e) for e in loaded.events] == [type(e) for e in state.events]
    assert [e.data for e in loaded.events] == [e.data for e in state.events]
    assert loaded.signals == state.signals
    assert loaded.recorded_at == state.recorded_at
    assert loaded.to_state() == state


def test_text_payloads_are_strings_and_other_bytes_are_base64() -> None:
    events = _history_file.to_document(_state())["events"]
    by_name = {event["name"]: event for event in events}
    assert by_name["step-0"]["data"] is None
    assert by_name["step-1"]["data"] == ""
    assert by_name["step-2"]["data"] == '{"id":"r-1","cents":4200}'
    assert by_name["step-3"]["data"] == "caf\u00e9 \u2713 \U0001f600"
    for name in ("step-4", "step-5"):
        assert "data" not in by_name[name]
        assert isinstance(by_name[name]["data_base64"], str)
    signals = _history_file.to_document(_state())["signals"]
    assert signals[0]["payload"] == "true"
    assert signals[1]["payload_base64"] == "/wA="


def test_save_and_load_keep_every_byte(tmp_path: Path) -> None:
    state = _state()
    path = save_history(History.from_state(state), tmp_path / "h.json")
    loaded = load_history(path)
    assert loaded.to_state() == state
    assert loaded.source == str(path)
    assert path.read_text(encoding="utf-8").endswith("}\n")


def test_the_exact_view_has_no_value_and_the_readable_view_adds_one() -> None:
    state = _state()
    exact = _history_file.to_document(state)
    readable = _history_file.to_document(state, readable_with=fluxo.JSONCodec())
    assert all("value" not in event for event in exact["events"])
    by_name = {event["name"]: event for event in readable["events"]}
    assert by_name["step-2"]["value"] == {"id": "r-1", "cents": 4200}
    assert by_name["step-2"]["data"] == '{"id":"r-1","cents":4200}'  # the exact view stays
    assert "value" not in by_name["step-0"]  # no payload
    assert "value" not in by_name["step-4"]  # not JSON: nothing readable to show
    assert readable["signals"][0]["value"] is True
    for event in readable["events"]:
        event.pop("value", None)
    for signal in readable["signals"]:
        signal.pop("value", None)
    assert readable == exact


def test_loading_ignores_the_readable_view() -> None:
    document = _history_file.to_document(_state(), readable_with=fluxo.JSONCodec())
    for event in document["events"]:
        if "value" in event:
            event["value"] = "edited for readability"
    assert History.from_document(_through_json(document)).to_state() == _state()


def test_a_decoded_payload_in_data_is_refused_with_a_pointer_to_value() -> None:
    document = _history_file.to_document(_state())
    document["events"][3]["data"] = {"id": "r-1", "cents": 4200}
    with pytest.raises(HistoryFormatError, match=r"events\[3\]\.data: must be a string"):
        History.from_document(document, source="h.json")


def test_engine_export_history(make_engine: MakeEngine) -> None:
    engine = make_engine(checkout)
    engine.run(checkout.options(id="o-1"), "o-1", 4200)
    document = engine.export_history("o-1")
    assert document == _history_file.to_document(engine.store.load("o-1"))
    assert document["format"] == "fluxo-history"
    assert document["version"] == 1
    assert document["run"]["status"] == "completed"
    assert [e["kind"] for e in document["events"]] == [
        "workflow_started",
        "step_completed",
        "workflow_completed",
    ]
    assert [e["seq"] for e in document["events"]] == [0, 1, 2]
    assert all(isinstance(e["recorded_at"], float) for e in document["events"])
    json.dumps(document)  # JSON-ready as it is
    readable = engine.export_history("o-1", readable=True)
    assert readable["events"][1]["value"] == {"id": "r-o-1", "cents": 4200}
    assert readable["events"][1]["data"] == document["events"][1]["data"]
    assert engine.codec.decode(
        History.from_document(readable).events[1].data or b"", Receipt
    ) == Receipt("r-o-1", 4200)


def test_export_history_of_an_unknown_run(make_engine: MakeEngine) -> None:
    engine = make_engine(checkout)
    with pytest.raises(fluxo.RunNotFoundError):
        engine.export_history("nope")


def test_the_runs_parent_round_trips_and_a_document_without_it_loads() -> None:
    document = _history_file.to_document(_state())
    assert document["run"]["parent"] == "order-0"
    assert History.from_document(_through_json(document)).run.parent == "order-0"
    document["run"]["parent"] = None  # a run nobody started as a child
    assert History.from_document(document).run.parent is None
    del document["run"]["parent"]  # written before runs had parents
    loaded = History.from_document(document)
    assert loaded.run.parent is None
    assert loaded.to_state().run == dataclasses.replace(_state().run, parent=None)


CODEC = fluxo.JSONCodec()
FAILURE = _executor.ErrorInfo("builtins.ValueError", "bad input", attempt=1)


def _outcome(kind: str, data: bytes | None) -> bytes:
    return msgspec.json.encode(_executor.ChildOutcome(kind, data))


def _family() -> history.RunState:
    """A parent that started four children: completed, failed, cancelled, refused."""
    refused = _executor.ErrorInfo("fluxo._errors.RunStateError", "that id is taken")
    events = (
        history.WorkflowStarted("family", b"{}"),
        history.ChildStarted("p~child-1", CODEC.encode(_executor.ChildStart("kid"))),
        history.ChildCompleted("p~child-1", CODEC.encode({"ok": True})),
        history.ChildStarted("p~child-3", CODEC.encode(_executor.ChildStart("kid", detached=True))),
        history.ChildFailed("p~child-3", CODEC.encode(FAILURE)),
        history.ChildStarted("p~child-5", CODEC.encode(_executor.ChildStart("kid"))),
        history.ChildCancelled("p~child-5", CODEC.encode("deadline")),
        history.ChildStarted("taken", CODEC.encode(_executor.ChildStart("kid", error=refused))),
    )
    signals = (
        history.Signal(1, "fluxo:child:p~child-1", _outcome("completed", b'{"ok":true}'), 1.0),
        history.Signal(2, "fluxo:child:p~child-3", _outcome("failed", CODEC.encode(FAILURE)), 2.0),
        history.Signal(3, "fluxo:child:p~child-5", _outcome("cancelled", b'"deadline"'), 3.0),
        history.Signal(4, "fluxo:child:odd", b'"not an envelope"', 4.0),
        history.Signal(5, "fluxo:child:worse", b"\xff", 5.0),
        history.Signal(6, "fluxo:child:empty", _outcome("completed", None), 6.0),
    )
    run = history.RunInfo("p", "family", history.RunStatus.COMPLETED, 0.0, 7.0)
    return history.RunState(run, events, signals)


def test_child_events_and_outcome_signals_round_trip() -> None:
    state = _family()
    document = _through_json(_history_file.to_document(state, readable_with=CODEC))
    assert History.from_document(document).to_state() == state
    assert [e["kind"] for e in document["events"][1:3]] == ["child_started", "child_completed"]


def test_the_readable_view_of_child_events_and_outcome_signals() -> None:
    document = _history_file.to_document(_family(), readable_with=CODEC)
    values = [event.get("value") for event in document["events"][1:]]
    assert values == [
        {"workflow": "kid"},  # the ChildStart record; detached is left out when false
        {"ok": True},  # the child's result
        {"workflow": "kid", "detached": True},
        {"type": "builtins.ValueError", "message": "bad input", "attempt": 1},  # its error
        {"workflow": "kid"},
        "deadline",  # why it was cancelled
        {
            "workflow": "kid",
            "error": {"type": "fluxo.RunStateError", "message": "that id is taken"},
        },
    ]
    signals = {signal["name"]: signal for signal in document["signals"]}
    # Fluxo's envelope is msgspec JSON around the codec's bytes: both are decoded.
    assert signals["fluxo:child:p~child-1"]["value"] == {"kind": "completed", "data": {"ok": True}}
    assert signals["fluxo:child:p~child-3"]["value"] == {
        "kind": "failed",
        "data": {"type": "builtins.ValueError", "message": "bad input", "attempt": 1},
    }
    assert signals["fluxo:child:p~child-5"]["value"] == {"kind": "cancelled", "data": "deadline"}
    assert signals["fluxo:child:empty"]["value"] == {"kind": "completed"}
    # Not an envelope: shown as any other payload is, or not at all.
    assert signals["fluxo:child:odd"]["value"] == "not an envelope"
    assert "value" not in signals["fluxo:child:worse"]
    assert signals["fluxo:child:p~child-1"]["payload"] == (
        '{"kind":"completed","data":"eyJvayI6dHJ1ZX0="}'  # the exact view: as stored
    )


def test_an_outcome_the_codec_cannot_decode_shows_its_kind_alone() -> None:
    class Opaque:
        def encode(self, value: Any) -> bytes:
            return CODEC.encode(value)

        def decode(self, data: bytes, type: Any = Any) -> Any:
            raise fluxo.DecodeError("sealed")

    document = _history_file.to_document(_family(), readable_with=Opaque())
    assert all("value" not in event for event in document["events"])
    assert document["signals"][0]["value"] == {"kind": "completed"}


def test_a_history_without_recording_times_loads() -> None:
    document = _history_file.to_document(_state())
    for event in document["events"]:
        del event["recorded_at"]
    assert History.from_document(document).recorded_at == ()


# -- versions and validation -------------------------------------------------------------


def test_a_newer_version_is_refused_with_a_clear_error(tmp_path: Path) -> None:
    document = _history_file.to_document(_state())
    document["version"] = 2
    path = tmp_path / "new.json"
    path.write_text(json.dumps(document))
    with pytest.raises(HistoryFormatError) as caught:
        load_history(path)
    assert str(caught.value) == (
        f"{path}: version: the document is version 2, newer than version 1, the newest this "
        "Fluxo reads; upgrade Fluxo to load it"
    )


def test_unknown_keys_are_ignored() -> None:
    document = _history_file.to_document(_state())
    document["exported_by"] = "a later Fluxo"
    document["events"][0]["comment"] = "added by hand"
    assert History.from_document(document).to_state() == _state()


def _set(path: list[Any], value: Any) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        target: Any = document
        for key in path[:-1]:
            target = target[key]
        if value is _DELETE:
            del target[path[-1]]
        else:
            target[path[-1]] = value

    return mutate


_DELETE = object()

BAD = [
    ("format", _set(["format"], "temporal-history"), "format: expected 'fluxo-history'"),
    ("version", _set(["version"], "1"), "version: must be a positive whole number"),
    ("no run", _set(["run"], None), "run: must be an object, not null"),
    ("run id", _set(["run", "id"], ""), "run.id: must be a non-empty string"),
    ("status", _set(["run", "status"], "sleeping"), "run.status: 'sleeping' is not a run status"),
    ("created_at", _set(["run", "created_at"], "yesterday"), "run.created_at: must be a number"),
    ("parent", _set(["run", "parent"], 17), "run.parent: must be a string, not 17"),
    ("no events", _set(["events"], []), "events: must be a non-empty list"),
    ("event type", _set(["events", 2], "step"), "events[2]: must be an object, not a string"),
    ("kind", _set(["events", 2, "kind"], "step_done"), "events[2].kind: unknown event kind"),
    ("no kind", _set(["events", 2, "kind"], _DELETE), "events[2].kind: must be a non-empty"),
    ("seq", _set(["events", 2, "seq"], 7), "events[2]: has seq 7; events are listed in order"),
    ("data", _set(["events", 2, "data"], 5), "events[2].data: must be a string"),
    ("base64", _set(["events", 5, "data_base64"], "@@@"), "events[5].data_base64: is not valid"),
    ("both", _set(["events", 2, "data_base64"], ""), "events[2]: has both 'data' and"),
    ("surrogate", _set(["events", 2, "data"], "\ud800"), "events[2].data: is not valid text"),
    ("at", _set(["events", 2, "recorded_at"], _DELETE), "events[2]: has no recorded_at"),
    ("first", _set(["events", 0, "kind"], "step_completed"), "events[0]: a history starts"),
    ("signals", _set(["signals"], {}), "signals: must be a list"),
    ("signal", _set(["signals", 1, "payload_base64"], _DELETE), "signals[1].payload: a signal"),
]


@pytest.mark.parametrize(("mutate", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_a_malformed_document_names_the_file_the_place_and_the_problem(
    tmp_path: Path, mutate: Any, message: str
) -> None:
    document = _history_file.to_document(_state())
    mutate(document)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(document))
    with pytest.raises(HistoryFormatError) as caught:
        load_history(path)
    assert str(caught.value).startswith(f"{path}: {message}")


def test_a_file_that_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(HistoryFormatError, match=r"bad\.json: not valid JSON"):
        load_history(path)
    path.write_text("[]")
    with pytest.raises(HistoryFormatError, match="a history document is a JSON object"):
        load_history(path)


def test_the_new_errors_are_fluxo_errors_and_pickle() -> None:
    assert issubclass(HistoryFormatError, fluxo.FluxoError)
    assert issubclass(HistoryFormatError, ValueError)
    assert issubclass(ReplayMismatchError, fluxo.NondeterminismError)
    for error in (
        HistoryFormatError("h.json: events[2]: bad"),
        ReplayMismatchError("r", 2, "step a", "step_completed b", "hint", diff="diff"),
    ):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error)
        assert str(copy) == str(error)
        assert vars(copy) == vars(error)
