"""The versioned JSON document a run's history is exported to and loaded from.

One document holds one run: its record, its events in order and the signals
sent to it. Every payload is kept exactly as the store holds it, so a loaded
history replays byte for byte. A readable copy of each payload (``value``) may
ride along for people; loading ignores it. The format and its version policy
are described in docs/history-format.md.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import msgspec

from fluxo import _errors, _payloads
from fluxo import codec as _codec
from fluxo import history as _history

FORMAT = "fluxo-history"
"""The value of a document's ``format`` key."""

VERSION = 1
"""The version this Fluxo writes, and the newest it loads."""

_RUN_FIELDS: tuple[str, ...] = (
    "id",
    "workflow",
    "status",
    "created_at",
    "updated_at",
    "ready_at",
    "lease_owner",
    "lease_until",
    "cancel_requested",
    "wake_requested",
    "deadline",
    "parent",
)


@dataclass(frozen=True, slots=True)
class History:
    """A run's recorded history, as exported or loaded from a history document.

    Attributes:
        run: the run's record at export time.
        events: its history, oldest first; payloads exactly as stored.
        signals: every signal sent to the run, oldest first.
        recorded_at: when each event was recorded (seconds since the epoch), one
            per event, or empty when the document does not say.
        source: where it came from (a file path, or a description), for messages.
    """

    run: _history.RunInfo
    events: tuple[_history.Event, ...]
    signals: tuple[_history.Signal, ...] = ()
    recorded_at: tuple[float, ...] = ()
    source: str = ""

    @property
    def run_id(self) -> str:
        """The id of the recorded run."""
        return self.run.id

    @property
    def workflow(self) -> str:
        """The name of the recorded run's workflow."""
        return self.run.workflow

    @classmethod
    def from_state(cls, state: _history.RunState, *, source: str = "") -> History:
        """Wrap what ``Store.load`` returned."""
        return cls(state.run, state.events, state.signals, state.recorded_at, source)

    def to_state(self) -> _history.RunState:
        """The run as ``Store.load`` would return it."""
        return _history.RunState(self.run, self.events, self.signals, self.recorded_at)

    def to_document(self, *, readable_with: _codec.Codec | None = None) -> dict[str, Any]:
        """Return the history as a JSON-ready document (see :func:`to_document`)."""
        return to_document(self.to_state(), readable_with=readable_with)

    @classmethod
    def from_document(cls, document: Any, *, source: str = "<document>") -> History:
        """Validate a parsed document and rebuild the history it holds.

        Raises:
            HistoryFormatError: the document is malformed, or of a newer version.
        """
        return _Reader(source).history(document)


# -- writing ---------------------------------------------------------------------------


def to_document(
    state: _history.RunState, *, readable_with: _codec.Codec | None = None
) -> dict[str, Any]:
    """Return ``state`` as a JSON-ready history document.

    Payloads are kept exactly: as a string under ``data`` when they are UTF-8 text
    (as the JSON codec writes them), else as base64 under ``data_base64``. With
    ``readable_with``, each payload that codec can decode is added under
    ``value`` as well, for people to read; loading never looks at ``value``.
    """
    run = state.run
    run_doc: dict[str, Any] = {name: getattr(run, name) for name in _RUN_FIELDS}
    run_doc["status"] = run.status.value
    if state.recorded_at and len(state.recorded_at) != len(state.events):
        raise _errors.StoreError(
            f"run {run.id!r} has {len(state.events)} events but {len(state.recorded_at)} "
            "recording times; the store is inconsistent"
        )
    events: list[dict[str, Any]] = []
    for seq, event in enumerate(state.events):
        entry: dict[str, Any] = {"seq": seq, "kind": event.kind, "name": event.name}
        entry.update(_exact(event.data, "data"))
        if readable_with is not None and event.data is not None:
            entry.update(_readable(event.data, readable_with))
        if state.recorded_at:
            entry["recorded_at"] = state.recorded_at[seq]
        events.append(entry)
    signals: list[dict[str, Any]] = []
    for signal in state.signals:
        item: dict[str, Any] = {"id": signal.id, "name": signal.name}
        item.update(_exact(signal.payload, "payload"))
        if readable_with is not None:
            item.update(_readable_signal(signal, readable_with))
        item["sent_at"] = signal.sent_at
        signals.append(item)
    return {
        "format": FORMAT,
        "version": VERSION,
        "run": run_doc,
        "events": events,
        "signals": signals,
    }


def _exact(data: bytes | None, key: str) -> dict[str, Any]:
    if data is None:
        return {key: None}
    try:
        return {key: data.decode("utf-8")}
    except UnicodeDecodeError:
        return {f"{key}_base64": base64.b64encode(data).decode("ascii")}


def _readable(data: bytes, codec: _codec.Codec) -> dict[str, Any]:
    try:
        value = msgspec.to_builtins(codec.decode(data, Any))
        json.dumps(value, allow_nan=False)
    except Exception:
        return {}  # not decodable or not JSON-shaped: the exact view alone must do
    return {"value": value}


_CHILD_SIGNAL = _history.child_signal_name("")


def child_outcome(signal: _history.Signal) -> tuple[str, bytes | None] | None:
    """The outcome a child run sent its parent: ``(kind, data)``, if ``signal`` is one.

    Such a signal (named ``fluxo:child:<child id>``) holds Fluxo's msgspec-JSON
    envelope, not codec output: ``kind`` is ``completed``, ``failed`` or
    ``cancelled``, and ``data`` the codec's bytes the matching ``child_*`` event
    records. ``None``: another signal, or an envelope that does not decode.
    """
    if not signal.name.startswith(_CHILD_SIGNAL):
        return None
    try:
        outcome = msgspec.json.decode(signal.payload, type=_payloads.ChildOutcome)
    except msgspec.DecodeError:  # ValidationError included
        return None
    return outcome.kind, outcome.data


def rejection(event: _history.Event) -> _payloads.Rejection | None:
    """What a ``signal_rejected`` event records (why, and the payload), if ``event`` is one."""
    if not isinstance(event, _history.SignalRejected):
        return None
    try:
        return msgspec.json.decode(event.data or b"", type=_payloads.Rejection)
    except msgspec.DecodeError:  # ValidationError included
        return None


def _readable_signal(signal: _history.Signal, codec: _codec.Codec) -> dict[str, Any]:
    outcome = child_outcome(signal)
    if outcome is None:
        return _readable(signal.payload, codec)
    kind, data = outcome
    value: dict[str, Any] = {"kind": kind}
    inner = {} if data is None else _readable(data, codec)
    if inner:
        value["data"] = inner["value"]
    return {"value": value}


def dumps(document: Mapping[str, Any]) -> str:
    """Serialize a history document the way Fluxo writes its files."""
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def save(document: History | Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a history (or an exported document) to ``path`` as UTF-8 JSON; return the path."""
    if isinstance(document, History):
        document = document.to_document()
    target = Path(path)
    target.write_text(dumps(document), encoding="utf-8")
    return target


# -- reading ---------------------------------------------------------------------------


def load(path: str | os.PathLike[str]) -> History:
    """Read and validate the history document at ``path``.

    Raises:
        HistoryFormatError: the file is not valid JSON, not a history document,
            of a newer version, or malformed (the message names the file, the
            event and what is wrong).
        OSError: the file cannot be read.
    """
    source = os.fspath(path)
    with open(source, encoding="utf-8") as file:
        try:
            document = json.load(file)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise _errors.HistoryFormatError(f"{source}: not valid JSON: {exc}") from None
    return _Reader(source).history(document)


class _Reader:
    """Validates one document, naming ``source`` and the offending place in every error."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, where: str, problem: str) -> NoReturn:
        place = f"{self.source}: {where}" if where else self.source
        raise _errors.HistoryFormatError(f"{place}: {problem}")

    def history(self, document: Any) -> History:
        if not isinstance(document, dict):
            self.fail("", f"a history document is a JSON object, not {_json_type(document)}")
        if document.get("format") != FORMAT:
            self.fail(
                "format",
                f"expected {FORMAT!r}, found {document.get('format')!r}; this is not a "
                "Fluxo history document",
            )
        version = document.get("version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            self.fail("version", f"must be a positive whole number, not {version!r}")
        if version > VERSION:
            self.fail(
                "version",
                f"the document is version {version}, newer than version {VERSION}, the newest "
                "this Fluxo reads; upgrade Fluxo to load it",
            )
        run = self.run(document.get("run"))
        raw_events = document.get("events")
        if not isinstance(raw_events, list) or not raw_events:
            self.fail("events", "must be a non-empty list; a history starts with workflow_started")
        events: list[_history.Event] = []
        times: list[float | None] = []
        for index, raw in enumerate(raw_events):
            event, at = self.event(index, raw)
            events.append(event)
            times.append(at)
        if not isinstance(events[0], _history.WorkflowStarted):
            self.fail("events[0]", f"a history starts with workflow_started, not {events[0].kind}")
        recorded_at = tuple(at for at in times if at is not None)
        if recorded_at and len(recorded_at) != len(times):
            self.fail(
                f"events[{times.index(None)}]",
                "has no recorded_at while other events have one; give it to every event or to none",
            )
        raw_signals = document.get("signals", [])
        if not isinstance(raw_signals, list):
            self.fail("signals", f"must be a list, not {_json_type(raw_signals)}")
        signals = tuple(self.signal(index, raw) for index, raw in enumerate(raw_signals))
        return History(run, tuple(events), signals, recorded_at, self.source)

    def run(self, raw: Any) -> _history.RunInfo:
        if not isinstance(raw, dict):
            self.fail("run", f"must be an object, not {_json_type(raw)}")
        run_id = self.required_text("run", raw, "id")
        workflow = self.required_text("run", raw, "workflow")
        status_text = self.required_text("run", raw, "status")
        try:
            status = _history.RunStatus(status_text)
        except ValueError:
            self.fail(
                "run.status",
                f"{status_text!r} is not a run status; use one of "
                f"{[s.value for s in _history.RunStatus]}",
            )
        created_at = self.number("run", raw, "created_at") or 0.0
        flags = {}
        for flag in ("cancel_requested", "wake_requested"):
            value = raw.get(flag, False)
            if not isinstance(value, bool):
                self.fail(f"run.{flag}", f"must be true or false, not {value!r}")
            flags[flag] = value
        return _history.RunInfo(
            id=run_id,
            workflow=workflow,
            status=status,
            created_at=created_at,
            updated_at=self.number("run", raw, "updated_at") or created_at,
            ready_at=self.number("run", raw, "ready_at"),
            lease_owner=self.text("run", raw, "lease_owner"),
            lease_until=self.number("run", raw, "lease_until"),
            cancel_requested=flags["cancel_requested"],
            wake_requested=flags["wake_requested"],
            deadline=self.number("run", raw, "deadline"),
            parent=self.text("run", raw, "parent") or None,
        )

    def event(self, index: int, raw: Any) -> tuple[_history.Event, float | None]:
        where = f"events[{index}]"
        if not isinstance(raw, dict):
            self.fail(where, f"must be an object, not {_json_type(raw)}")
        seq = raw.get("seq", index)
        if seq != index or isinstance(seq, bool):
            self.fail(
                where,
                f"has seq {seq!r}; events are listed in order from seq 0, with no gaps",
            )
        kind = self.required_text(where, raw, "kind")
        name = self.text(where, raw, "name") or ""
        data = self.payload(where, raw, "data")
        try:
            event = _history.event_from_record(kind, name, data)
        except ValueError:
            self.fail(
                f"{where}.kind",
                f"unknown event kind {kind!r}; known kinds: {sorted(_history.EVENT_TYPES)}",
            )
        return event, self.number(where, raw, "recorded_at")

    def signal(self, index: int, raw: Any) -> _history.Signal:
        where = f"signals[{index}]"
        if not isinstance(raw, dict):
            self.fail(where, f"must be an object, not {_json_type(raw)}")
        signal_id = raw.get("id", index + 1)
        if isinstance(signal_id, bool) or not isinstance(signal_id, int):
            self.fail(f"{where}.id", f"must be a whole number, not {signal_id!r}")
        name = self.required_text(where, raw, "name")
        payload = self.payload(where, raw, "payload")
        if payload is None:
            self.fail(f"{where}.payload", "a signal always has a payload (null is 'null')")
        return _history.Signal(signal_id, name, payload, self.number(where, raw, "sent_at") or 0.0)

    def payload(self, where: str, raw: dict[str, Any], key: str) -> bytes | None:
        encoded_key = f"{key}_base64"
        if key in raw and encoded_key in raw:
            self.fail(where, f"has both {key!r} and {encoded_key!r}; keep exactly one")
        if encoded_key in raw:
            encoded = raw[encoded_key]
            if not isinstance(encoded, str):
                self.fail(f"{where}.{encoded_key}", f"must be a string, not {_json_type(encoded)}")
            try:
                return base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError) as exc:
                self.fail(f"{where}.{encoded_key}", f"is not valid base64: {exc}")
        text = raw.get(key)
        if text is None:
            return None
        if not isinstance(text, str):
            self.fail(
                f"{where}.{key}",
                f"must be a string (the exact stored payload) or null, not {_json_type(text)}; "
                "a readable copy of the payload belongs under 'value', which loading ignores",
            )
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError as exc:
            self.fail(f"{where}.{key}", f"is not valid text ({exc}); use {encoded_key!r}")

    def text(self, where: str, raw: dict[str, Any], key: str) -> str | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, str):
            self.fail(f"{where}.{key}", f"must be a string, not {value!r}")
        return value

    def required_text(self, where: str, raw: dict[str, Any], key: str) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            self.fail(f"{where}.{key}", f"must be a non-empty string, not {value!r}")
        return value

    def number(self, where: str, raw: dict[str, Any], key: str) -> float | None:
        value = raw.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(f"{where}.{key}", f"must be a number of seconds, not {value!r}")
        return float(value)


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
