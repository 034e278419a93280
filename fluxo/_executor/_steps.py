"""Steps: a step's call replayed or run live, its attempts, retries, back-offs and timeout.

A live step's result is recorded, then decoded back from its record, so the live
run sees what every replay will see. A failed attempt is recorded
(``step_attempt_failed``) and retried after its back-off, as its ``retry=`` says;
the final failure is recorded (``step_failed``) and raised as ``fluxo.StepError``,
the same live and on replay.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import msgspec

from fluxo import _aio, _errors, _payloads, _runtime, history, observe

if TYPE_CHECKING:
    from fluxo import _definitions
    from fluxo._executor import _context

log = logging.getLogger(__name__)

StepRunner = Callable[["_definitions.Step[Any, Any]", Sequence[Any], Mapping[str, Any]], Any]
"""Calls a step's function for one live attempt: ``(step, args, kwargs) -> result``."""


def call_step_function(
    step: _definitions.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> Any:
    """The :data:`StepRunner` of a real run: call the step's own function."""
    return step.fn(*args, **kwargs)


_RECORD, _APPEND, _TELL = 0, 1, 2
"""What a live attempt that completed does besides its record (see ``Steps.adopt``)."""

DURABLE_BACKOFF = 2.0
"""Step retry back-offs longer than this many seconds wait on a durable timer."""

_KINDS = (history.StepCompleted, history.StepAttemptFailed, history.StepFailed)


class Steps:
    """The step calls of one execution."""

    __slots__ = ("_clock", "_ctx", "_ending", "_sinks", "_watched")

    def __init__(self, ctx: _context.RunContext) -> None:
        self._ctx = ctx
        self._sinks = ctx.observers.sinks(ctx.workflow.name)
        """Where live attempts that complete are timed, by step (see ``Dispatch.sinks``)."""
        self.adopt(restart_after_record=False)

    def adopt(self, *, restart_after_record: bool) -> None:
        """Decide what this execution's live attempts tell, once (its options are fixed).

        Read on every live step, so kept as plain attributes: ``_clock`` (None when
        no observer wants an attempt's duration), ``_ending`` (what a completed
        attempt does besides its record: ``_RECORD`` nothing more, ``_APPEND`` its
        seconds to ``step_times``, ``_TELL`` an event) and ``_watched``.
        """
        ctx = self._ctx
        observers = ctx.observers
        durations = observers.timing or bool(
            observers.live_step_completed or observers.step_failed or observers.step_retried
        )
        self._clock = ctx.clock if durations else None
        self._watched = observers.watching_attempts
        if observers.completions_told or (observers.timing and restart_after_record):
            self._ending = _TELL  # (told before a restart unwinds: see RunContext._record)
        elif observers.timing:
            self._ending = _APPEND
        else:
            self._ending = _RECORD

    def call(
        self,
        step: _definitions.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """Run ``step`` once for this run, or return its recorded outcome."""
        ctx = self._ctx
        ctx._enter_durable_call()
        cursor = ctx._cursor
        call = f"step {step.name}"
        attempt = 0
        observers = ctx.observers
        while True:
            event = cursor.match(_KINDS, call, step.names)
            if event is None:
                break
            if isinstance(event, history.StepCompleted):
                if observers.step_completed:
                    self._tell_replayed("step_completed", step, attempt + 1, None)
                return cursor.decode_recorded(call, event.data, step.return_type)
            info = cursor.decode_error(call, event.data)
            if isinstance(event, history.StepFailed):
                if observers.step_failed:
                    self._tell_replayed("step_failed", step, attempt + 1, info)
                raise _payloads.step_error(step.name, info)
            attempt += 1
            if observers.step_retried:
                self._tell_replayed("step_retried", step, attempt, info)
            self._backoff(step, attempt, live=False)
        ctx._go_live()
        return self._run_live(step, args, kwargs, attempt)

    def step_event(
        self,
        kind: str,
        step: _definitions.Step[Any, Any],
        attempt: int,
        position: int,
        *,
        took: float | None = None,
        info: _payloads.ErrorInfo | None = None,
        branch: int | None = None,
        replayed: bool = False,
    ) -> observe.RunEvent:
        """The event of a step attempt's end (of a branch's, with ``branch``).

        Built positionally: it is every observed step's way out.
        """
        ctx = self._ctx
        event = observe.RunEvent(
            kind,
            ctx.run_id,
            ctx.workflow.name,
            ctx.clock(),
            replayed,
            position,
            step.name,
            branch,
            attempt,
            took,
            ctx.worker,
            ctx.parent,
            ctx.headers,
        )
        if info is None:
            return event
        delay = step.retry.delay(attempt) if kind == "step_retried" else None
        return msgspec.structs.replace(
            event, delay=delay, error_type=info.type, error_message=info.message
        )

    def _tell_replayed(
        self,
        kind: str,
        step: _definitions.Step[Any, Any],
        attempt: int,
        info: _payloads.ErrorInfo | None,
    ) -> None:
        """Tell the observers of a step's record that replay just met."""
        ctx = self._ctx
        position = ctx._cursor.script[ctx._cursor.pos - 1].seq
        event = self.step_event(kind, step, attempt, position, info=info, replayed=True)
        ctx.observers.emit(getattr(ctx.observers, kind), event)

    def _telling(
        self,
        kind: str,
        step: _definitions.Step[Any, Any],
        attempt: int,
        position: int,
        *,
        took: float | None,
        info: _payloads.ErrorInfo | None = None,
    ) -> Callable[[], None] | None:
        """What tells the observers of a live attempt's end once recorded; None: nobody listens."""
        observers = self._ctx.observers
        handlers = getattr(observers, kind)
        if not handlers:
            return None
        event = self.step_event(kind, step, attempt, position, took=took, info=info)
        return functools.partial(observers.emit, handlers, event)

    def _backoff(self, step: _definitions.Step[Any, Any], attempt: int, *, live: bool) -> None:
        """Wait between failed attempt ``attempt`` and the next, as the live run did.

        A long back-off is a durable timer (a crash during it loses nothing, and the
        worker is free meanwhile); a short one waits in the thread, and is skipped
        on replay. Either way a cancellation may be delivered here.
        """
        ctx = self._ctx
        delay = step.retry.delay(attempt)
        recorded = ctx._cursor.peek()
        timer = f"retry {step.name}"
        if (
            recorded is not None
            and isinstance(recorded.event, history.TimerStarted)
            and recorded.event.name == timer
        ):
            ctx._waits.timer(timer, delay)
            return
        if recorded is None and delay > DURABLE_BACKOFF:
            ctx._enter_durable_call()
            ctx._waits.timer(timer, delay)
            return
        # restart_after_record replays the failed attempt before the next one runs
        # live, so the back-off is waited there, as the run would have without restarting.
        if live or (ctx._restart_after_record and recorded is None):
            ctx.pause(delay)
        ctx._enter_durable_call()

    def _run_live(
        self,
        step: _definitions.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        attempt: int,
    ) -> Any:
        ctx = self._ctx
        clock = self._clock  # None: no clock read, no event, no extra call
        ending = self._ending
        watched = self._watched
        try:
            return_type = step.return_type  # resolved before the side effect, not after
        except _errors.DefinitionError as exc:
            self._fail(step, _payloads.error_info(exc, attempt + 1))
        while True:
            attempt += 1
            failure: _payloads.ErrorInfo | None = None
            began = clock() if clock else 0.0
            token = _runtime.enter(None)  # steps called by a step are plain calls
            try:
                if watched:
                    value = self.attempt(
                        step, args, kwargs, attempt=attempt, position=ctx._cursor.next_seq
                    )
                else:
                    value = self._call(step, args, kwargs)
            except Exception as exc:
                failure = _payloads.error_info(exc, attempt)
                retrying = step.retry.should_retry(exc, attempt)
            finally:
                _runtime.leave(token)
            if failure is not None:
                took = elapsed(clock(), began) if clock else 0.0
                # Raised outside the except block, so the live StepError carries no
                # __context__ that a replay could not give it.
                if not retrying:
                    self._fail(step, failure, attempt, took)
                ctx._record(
                    history.StepAttemptFailed(step.name, ctx.codec.encode(failure)),
                    then=self._telling(
                        "step_retried", step, attempt, ctx._cursor.next_seq, took=took, info=failure
                    ),
                )
                log.info(
                    "run %s: step %s attempt %d failed (%s: %s); retrying in %.3gs",
                    ctx.run_id,
                    step.name,
                    attempt,
                    failure.type,
                    failure.message,
                    step.retry.delay(attempt),
                    extra={"fluxo_run_id": ctx.run_id},
                )
                self._backoff(step, attempt, live=True)
                continue
            data, result, problem = self.encode_result(step, value, return_type)
            if problem is not None:
                took = elapsed(clock(), began) if clock else 0.0
                self._fail(step, _payloads.error_info(problem, attempt), attempt, took)
            if not ending:  # _RECORD: written with the next write (the end, say)
                ctx._record_later(history.StepCompleted(step.name, data))
                return result
            if ending == _APPEND:
                # The hot path of metrics observers: no event is built; the time the
                # record was made at ends the attempt, and its seconds are appended
                # (folded as the observer reads them; negative: see StepTimes.take).
                ctx._record(history.StepCompleted(step.name, data))
                self._sinks[step.name].append(ctx._cursor.now - began)
                return result
            position = ctx._cursor.next_seq  # (where the record goes: one read is enough)
            ctx._record(
                history.StepCompleted(step.name, data),
                then=functools.partial(self._completed, step, attempt, position, began),
            )
            return result

    def _completed(
        self, step: _definitions.Step[Any, Any], attempt: int, position: int, began: float
    ) -> None:
        """Tell the observers of a live attempt that completed, now recorded."""
        took = elapsed(self._ctx._cursor.now, began)
        observers = self._ctx.observers
        if observers.step_times:
            observers.timed(self._ctx.workflow.name, step.name, took)
        if observers.live_step_completed:
            event = self.step_event("step_completed", step, attempt, position, took=took)
            observers.emit(observers.live_step_completed, event)

    def encode_result(
        self, step: _definitions.Step[Any, Any], value: Any, return_type: Any
    ) -> tuple[bytes, Any, _errors.FluxoError | None]:
        """Encode a step's result and decode it back as the workflow will see it."""
        codec = self._ctx.codec
        try:
            data = codec.encode(value)
        except Exception as exc:
            return (
                b"",
                None,
                _errors.EncodeError(
                    f"step {step.name!r} returned a value of type "
                    f"{type(value).__module__}.{type(value).__qualname__} that the codec "
                    f"cannot encode ({exc}); return a dataclass, dict, list, str, number, "
                    "datetime, UUID or another type the codec knows, or pass a codec that "
                    "handles it"
                ),
            )
        try:
            return data, codec.decode(data, return_type), None
        except Exception as exc:
            return (
                data,
                None,
                _errors.DecodeError(
                    f"step {step.name!r} returned a value that does not match its return "
                    f"annotation: {exc}"
                ),
            )

    def _fail(
        self,
        step: _definitions.Step[Any, Any],
        info: _payloads.ErrorInfo,
        attempt: int = 0,
        took: float | None = None,
    ) -> NoReturn:
        ctx = self._ctx
        position = ctx._cursor.next_seq
        ctx._record(
            history.StepFailed(step.name, ctx.codec.encode(info)),
            then=self._telling("step_failed", step, attempt or 1, position, took=took, info=info),
        )
        raise _payloads.step_error(step.name, info)

    def attempt(
        self,
        step: _definitions.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
        *,
        attempt: int,
        position: int,
        branch: int | None = None,
    ) -> Any:
        """Call a step's function for live attempt ``attempt``, telling the observers.

        ``position`` is where its record goes (a parallel block's, for a branch).
        Observers are told ``step_started`` first, and their scopes are entered
        around the call, in this thread.
        """
        observers = self._ctx.observers
        if not observers.watching_attempts:
            return self._call(step, args, kwargs)
        event = self._ctx.event(
            "step_started", position, step=step.name, branch=branch, attempt=attempt
        )
        with observers.attempt(event):
            return self._call(step, args, kwargs)

    def _call(
        self, step: _definitions.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        """Call a step's function for one attempt, within its ``timeout=`` if it has one.

        A timed attempt runs in a daemon thread of its own (in a copy of this thread's
        context, so what observers made current stays so). When the timeout passes
        first the thread is abandoned (Python cannot stop it) and the attempt fails
        with ``StepTimeout``; whatever the thread does later is ignored.
        """
        runner = self._ctx._step_runner
        limit = step.timeout
        if self._ctx.is_async:
            return self._call_async(runner, step, args, kwargs)
        if limit is None:
            return runner(step, args, kwargs)
        outcome: list[Any] = []
        failure: list[BaseException] = []
        finished = threading.Event()

        def attempt() -> None:
            _runtime.enter(None)
            try:
                outcome.append(runner(step, args, kwargs))
            except BaseException as exc:
                failure.append(exc)
            finally:
                finished.set()

        thread = threading.Thread(
            target=contextvars.copy_context().run,
            args=(attempt,),
            name=f"fluxo-step-{step.name}",
            daemon=True,
        )
        thread.start()
        if not finished.wait(limit):
            log.warning(
                "run %s: step %s did not finish within %gs; its thread is abandoned",
                self._ctx.run_id,
                step.name,
                limit,
                extra={"fluxo_run_id": self._ctx.run_id},
            )
            raise _errors.StepTimeout(step.name, limit)
        if failure:
            raise failure[0]
        return outcome[0]

    def _call_async(
        self,
        runner: StepRunner,
        step: _definitions.Step[Any, Any],
        args: Sequence[Any],
        kwargs: Mapping[str, Any],
    ) -> Any:
        """One attempt of a step of an async workflow, within its ``timeout=`` if it has one.

        An ``async def`` step's coroutine is awaited on Fluxo's step loop; a sync
        step runs on one of its step threads (``fluxo._aio``), never on the
        workflow's loop. What a stub returns for it is used as it is.
        """
        limit = step.timeout
        try:
            if step.is_async:
                made = runner(step, args, kwargs)
                if not inspect.isawaitable(made):
                    return made  # a stub's value
                return _aio.run_on_step_loop(made, limit)
            return _aio.run_on_thread(lambda: runner(step, args, kwargs), limit)
        except _aio.CancelledInside:
            raise RuntimeError(
                f"step {step.name!r} raised asyncio.CancelledError: something it awaited was "
                "cancelled (not by its timeout=); catch it in the step to decide otherwise"
            ) from None
        except _aio.Overdue:
            log.warning(
                "run %s: step %s did not finish within %gs; it was cancelled",
                self._ctx.run_id,
                step.name,
                limit,
                extra={"fluxo_run_id": self._ctx.run_id},
            )
            raise _errors.StepTimeout(step.name, limit or 0.0, cancelled=step.is_async) from None


def elapsed(now: float, began: float) -> float:
    """Seconds from ``began`` to ``now``, by the engine's clock (never negative).

    Step attempts are timed with the engine's clock, like every event's time (in
    the test environment, its virtual clock). A completed step's end is the time
    its record is made at: no extra clock read on every step's way.
    """
    return now - began if now > began else 0.0
