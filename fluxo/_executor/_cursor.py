"""The history cursor: where replay is in the recorded history, and where the next record goes.

Each durable call takes the next position. While the code catches up with the
history (:attr:`HistoryCursor.replaying`), the call must meet the event recorded
there, the same kind of call with the same name (:meth:`HistoryCursor.match`), or
the run has diverged (:meth:`HistoryCursor.diverged`, a ``NondeterminismError``
with both sides); once past the end, a live call's events are appended at
:attr:`HistoryCursor.next_seq`, fenced by it (:meth:`HistoryCursor.append`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

from fluxo import _errors, _payloads, codec, history, stores


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recorded durable call: its position and its event."""

    seq: int
    event: history.Event


def replay_script(
    events: Sequence[history.Event],
    is_mismatch: Callable[[history.Event], bool] = lambda event: False,
) -> list[Recorded]:
    """The recorded durable calls, in order, that replay must meet again.

    ``WorkflowStarted`` is not a call, nor is ``RunDied``. A ``WorkflowFailed`` that an operator
    retried (``RunRetried`` follows it) is skipped, and when the failure came
    straight from a step's final failure, that step's attempts are dropped too,
    so the step runs again with a fresh retry budget. A failure that
    ``is_mismatch`` (a ``NondeterminismError``) did not come from the step: the
    step's failure was settled history, and stays so. A ``WorkflowCancelled`` that
    an operator resumed (``engine.resume``; ``RunRetried`` follows it) is skipped
    with the ``CancelRequested`` right before it, so the resumed run goes on from
    the durable call that took delivery of the cancellation as if it had not.
    """
    script: list[Recorded] = []
    last = len(events) - 1
    for seq, event in enumerate(events):
        if seq == 0 or isinstance(event, history.RunRetried):
            continue
        if isinstance(event, history.WorkflowCancelled) and resumed_at(events, seq):
            if script and isinstance(script[-1].event, history.CancelRequested):
                script.pop()
            continue
        if isinstance(event, history.RunDied) and (
            seq == last or isinstance(events[seq + 1], history.RunRetried)
        ):
            continue  # no call of the workflow: its executions died before this point
        if (
            isinstance(event, history.WorkflowFailed)
            and seq < last
            and isinstance(events[seq + 1], history.RunRetried)
        ):
            if (
                script
                and isinstance(script[-1].event, history.StepFailed)
                and not is_mismatch(event)
            ):
                name = script[-1].event.name
                while script and (
                    isinstance(script[-1].event, (history.StepFailed, history.StepAttemptFailed))
                    and script[-1].event.name == name
                ):
                    script.pop()
            elif script and not is_mismatch(event):
                _forget_failed_branches(script)
            continue
        script.append(Recorded(seq, event))
    return script


def resumed_at(events: Sequence[history.Event], seq: int) -> bool:
    """Tell whether the run's end at ``seq`` was undone: ``RunRetried`` follows it."""
    return seq + 1 < len(events) and isinstance(events[seq + 1], history.RunRetried)


def _forget_failed_branches(script: list[Recorded]) -> None:
    """Give the failed branches of a block that ends the script a fresh retry budget.

    When a run failed right after a parallel block with a failed branch, an
    operator's retry keeps the branches that completed and attempts the others
    again, as it does for a single step's final failure.
    """
    start = len(script)
    while start > 0 and isinstance(script[start - 1].event, history.BRANCH_KINDS):
        start -= 1
    if start == 0 or start == len(script):
        return
    if not isinstance(script[start - 1].event, history.ParallelStarted):
        return
    branches = script[start:]
    if any(isinstance(r.event, history.BranchFailed) for r in branches):
        script[start:] = [r for r in branches if isinstance(r.event, history.BranchCompleted)]


class HistoryCursor:
    """One execution's position in its run's history, and its writer at the end of it.

    Attributes:
        run_id: the run.
        script: the recorded durable calls replay must meet (see :func:`replay_script`).
        pos: how many of them the code has met.
        next_seq: the position the next record takes: the history's length.
        nondeterminism: the mismatch found, once the code diverged; it sticks, so
            ``except Exception:`` in the workflow cannot turn it into another branch.
    """

    __slots__ = (
        "_clock",
        "_codec",
        "_store",
        "next_seq",
        "nondeterminism",
        "now",
        "pos",
        "run_id",
        "script",
    )

    def __init__(
        self,
        *,
        run_id: str,
        events: Sequence[history.Event],
        store: stores.Store,
        codec: codec.Codec,
        clock: Callable[[], float],
    ) -> None:
        self.run_id = run_id
        self._store = store
        self._codec = codec
        self._clock = clock
        self.script = replay_script(events, self._failed_by_mismatch)
        self.pos = 0
        self.next_seq = len(events)
        self.nondeterminism: _errors.NondeterminismError | None = None
        self.now = 0.0
        """The engine clock's time of the last append (a step's end, for its observers)."""

    def _failed_by_mismatch(self, event: history.Event) -> bool:
        """Tell whether a recorded ``WorkflowFailed`` was a ``NondeterminismError``."""
        try:
            info: _payloads.ErrorInfo = self._codec.decode(event.data or b"{}", _payloads.ErrorInfo)
        except Exception:
            return False
        return info.type == _payloads.MISMATCH

    @property
    def replaying(self) -> bool:
        """True while the code is catching up with recorded history."""
        return self.pos < len(self.script)

    def peek(self) -> Recorded | None:
        """The recorded call the code meets next, if the history holds one."""
        return self.script[self.pos] if self.pos < len(self.script) else None

    def diverged(self, expected: str, recorded: Recorded | None, hint: str = "") -> NoReturn:
        """Raise (and keep) the mismatch: the code called ``expected`` where ``recorded`` is."""
        seq = recorded.seq if recorded is not None else self.next_seq
        what = recorded.event.describe() if recorded is not None else "nothing (it ends here)"
        self.nondeterminism = _errors.NondeterminismError(self.run_id, seq, expected, what, hint)
        raise self.nondeterminism

    def match(
        self, kinds: tuple[type[history.Event], ...], call: str, names: frozenset[str]
    ) -> history.Event | None:
        """Consume and return the next recorded event if it answers this call.

        ``None`` past the end of the history (the call is done live); a recorded
        event of another kind or name is a mismatch.
        """
        recorded = self.peek()
        if recorded is None:
            return None
        event = recorded.event
        if isinstance(event, kinds) and event.name in names:
            self.pos += 1
            return event
        self.diverged(call, recorded)

    def decode_recorded(self, call: str, data: bytes | None, type: Any) -> Any:
        """Decode the payload of the event replay just matched.

        One that no longer decodes (the annotation changed, or the history is
        damaged) is a mismatch like any other: sticky, so ``except Exception:`` in
        the workflow cannot turn it into a different branch than the live run took.
        """
        try:
            return self._codec.decode(data if data is not None else b"null", type)
        except Exception as exc:
            self.diverged(
                call,
                self.script[self.pos - 1],
                f"  its recorded payload does not decode ({exc}); the annotated type "
                "changed, or the history is damaged",
            )

    def decode_error(self, call: str, data: bytes | None) -> _payloads.ErrorInfo:
        """Decode the error the event replay just matched records."""
        if data is None:
            return _payloads.ErrorInfo(type="unknown", message="no error details were recorded")
        decoded: _payloads.ErrorInfo = self.decode_recorded(call, data, _payloads.ErrorInfo)
        return decoded

    def append(
        self,
        events: Sequence[history.Event],
        status: history.RunStatus | None,
        ready_at: float | None,
        guard: Mapping[str, bool],
    ) -> None:
        """Append ``events`` at :attr:`next_seq`, fenced by it, and move past them.

        ``guard`` passes ``unless_cancel_requested`` to the store when it is asked
        for (and only then, so that store wrappers written before it still work).
        The store's errors go up as they are.
        """
        self.now = now = self._clock()
        self._store.append(
            self.run_id,
            self.next_seq,
            events,
            now=now,
            status=status,
            ready_at=ready_at,
            **guard,
        )
        self.next_seq += len(events)
