"""Parallel branches: ``fluxo.parallel`` and ``fluxo.map`` blocks, on a bounded pool of threads.

A block takes one position, a ``parallel_started`` naming each branch's step.
Branches run on the engine's threads (:class:`StepThreads`); each reports its
attempts and outcome to the workflow thread, which alone records them, in
whatever order they come, tagged with the branch's index. Replay reads them back
by index and runs only the branches that have none, so it never depends on which
branch finished first.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fluxo import _errors, _payloads, history
from fluxo._executor import _control, _cursor, _steps

if TYPE_CHECKING:
    from fluxo import _definitions
    from fluxo._executor import _context

log = logging.getLogger(__name__)

DEFAULT_PARALLEL_THREADS = 16
"""Threads an engine runs parallel branches on, unless ``Engine(parallel_threads=)`` says."""


class StepThreads:
    """The bounded pool of threads that runs the branches of parallel blocks.

    One per engine, shared by every run the engine executes, so a worker runs at
    most ``size`` branches at once whatever its runs fan out to. The threads are
    started on first use.
    """

    def __init__(self, size: int = DEFAULT_PARALLEL_THREADS) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise _errors.DefinitionError(
                f"parallel_threads must be a whole number >= 1, not {size!r}"
            )
        self.size = size
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], /, *args: Any) -> concurrent.futures.Future[None]:
        """Run ``fn(*args)`` on one of the threads (queued while all are busy)."""
        with self._lock:
            if self._pool is None:
                self._pool = concurrent.futures.ThreadPoolExecutor(
                    self.size, thread_name_prefix="fluxo-branch"
                )
            pool = self._pool
        return pool.submit(fn, *args)

    def close(self) -> None:
        """Drop queued branches and let the threads end once their branch returns."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


SHARED_THREADS = StepThreads()
"""The pool of contexts made without one (tools; the replayer never runs a branch)."""


_ATTEMPT_FAILED = "attempt_failed"
_COMPLETED = "completed"
_FAILED = "failed"
_ABANDONED = "abandoned"
_CRASHED = "crashed"


@dataclass(frozen=True, slots=True)
class _Report:
    """What a branch's thread tells the workflow thread, which alone records."""

    index: int
    what: str
    attempt: int
    value: Any = None
    error: _payloads.ErrorInfo | None = None
    crash: BaseException | None = None
    took: float = 0.0


class _Block:
    """One parallel block: its branches' outcomes so far, and what its threads share."""

    def __init__(self, calls: Sequence[_definitions.Call[Any]], position: int) -> None:
        count = len(calls)
        self.calls = calls
        self.position = position
        """The block's start in the history."""
        self.results: list[Any] = [None] * count
        self.failures: dict[int, _payloads.ErrorInfo] = {}
        self.attempts = [0] * count
        """Failed attempts recorded so far, per branch."""
        self.settled = [False] * count
        self.return_types: dict[int, Any] = {}
        self.inbox: queue.SimpleQueue[_Report] = queue.SimpleQueue()
        """Reports from the branch threads to the workflow thread, which alone records."""
        self.interrupted = threading.Event()
        """Set when the block stops early: branches between attempts give up."""


class Branches:
    """The parallel blocks of one execution."""

    __slots__ = ("_ctx",)

    def __init__(self, ctx: _context.RunContext) -> None:
        self._ctx = ctx

    def call(
        self, calls: Sequence[_definitions.Call[Any]], max_concurrency: int | None
    ) -> list[Any]:
        """``fluxo.parallel``: run the calls as branches of one block; return their results.

        The block takes one position, a ``ParallelStarted`` naming each branch's step.
        Each branch's attempts and outcome are recorded, by this thread alone, as
        they arrive, in whatever order the branches finish; events carry the branch
        index, so replay reads them back by index and runs only the branches with
        no outcome. Once every branch has one, the lowest-index failure is raised,
        if any, else the results are returned in the order of ``calls``.
        """
        block = self._settle(calls, max_concurrency)
        if block.failures:
            first = min(block.failures)
            raise _payloads.step_error(block.calls[first].step.name, block.failures[first])
        return block.results

    def outcomes(
        self, calls: Sequence[_definitions.Call[Any]]
    ) -> list[tuple[Any, BaseException | None]]:
        """Run the calls as one block, as :meth:`call` does; each one's result or ``StepError``.

        For the step calls an async workflow made at once (``asyncio.gather``): each
        call's awaiter gets its own outcome.
        """
        block = self._settle(calls, None)
        return [
            (None, _payloads.step_error(call.step.name, block.failures[index]))
            if index in block.failures
            else (block.results[index], None)
            for index, call in enumerate(calls)
        ]

    def _settle(
        self, calls: Sequence[_definitions.Call[Any]], max_concurrency: int | None
    ) -> _Block:
        """Replay the block's recorded outcomes, run the branches without one; the block."""
        ctx = self._ctx
        cursor = ctx._cursor
        ctx._enter_durable_call()
        count = len(calls)
        if count == 0:
            return _Block(calls, cursor.next_seq)
        steps = [c.step for c in calls]
        uniform = all(s.name == steps[0].name for s in steps)
        if uniform:
            call = f"parallel of {count} x step {steps[0].name}"
        else:
            shown = ", ".join(s.name for s in steps[:5]) + (", ..." if count > 5 else "")
            call = f"parallel of {count} steps ({shown})"
        recorded = cursor.peek()
        position = cursor.next_seq if recorded is None else recorded.seq
        if recorded is not None:
            self._match_plan(call, recorded, steps)
        else:
            plan = (
                _payloads.Plan(count) if uniform else _payloads.Plan(count, [s.name for s in steps])
            )
            name = steps[0].name if uniform else ""
            ctx._record(history.ParallelStarted(name, ctx.codec.encode(plan)))
        block = _Block(calls, position)
        observers = ctx.observers
        left = count
        while left:
            recorded = cursor.peek()
            if recorded is None or not isinstance(recorded.event, history.BRANCH_KINDS):
                break
            event = recorded.event
            parsed = history.parse_branch_name(event.name)
            if (
                parsed is None
                or parsed[1] >= count
                or parsed[0] not in steps[parsed[1]].names
                or block.settled[parsed[1]]
            ):
                cursor.diverged(call, recorded, "  the branch recorded here is not in this block")
            cursor.pos += 1
            index = parsed[1]
            step = steps[index]
            info: _payloads.ErrorInfo | None = None
            if isinstance(event, history.BranchCompleted):
                block.results[index] = cursor.decode_recorded(
                    f"step {step.name}", event.data, step.return_type
                )
                kind = "step_completed"
            else:
                info = cursor.decode_error(f"step {step.name}", event.data)
                kind = (
                    "step_retried"
                    if isinstance(event, history.BranchAttemptFailed)
                    else ("step_failed")
                )
            if observers.active:
                self._tell(
                    kind,
                    block,
                    index,
                    block.attempts[index] + 1,
                    took=None,
                    info=info,
                    replayed=True,
                )
            if isinstance(event, history.BranchAttemptFailed):
                block.attempts[index] += 1
                continue
            if info is not None:
                block.failures[index] = info
            block.settled[index] = True
            left -= 1
        if left:
            if cursor.peek() is not None:
                ctx._cancel_point()  # a cancellation was delivered while branches ran
                cursor.diverged(call, cursor.peek(), "  the block's branches end early here")
            self._run_branches(block, max_concurrency)
        return block

    def _match_plan(
        self,
        call: str,
        recorded: _cursor.Recorded,
        steps: Sequence[_definitions.Step[Any, Any]],
    ) -> None:
        """Consume the recorded start of a block, which must have these branches."""
        cursor = self._ctx._cursor
        event = recorded.event
        if not isinstance(event, history.ParallelStarted):
            cursor.diverged(call, recorded)
        try:
            plan: _payloads.Plan = self._ctx.codec.decode(event.data or b"{}", _payloads.Plan)
        except Exception as exc:
            cursor.diverged(call, recorded, f"  its recorded plan does not decode ({exc})")
        names = plan.steps or [event.name] * plan.count
        if len(names) != len(steps) or any(
            n not in s.names for n, s in zip(names, steps, strict=True)
        ):
            shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
            cursor.diverged(
                call,
                recorded,
                f"  the history's block has {len(names)} branches ({shown})",
            )
        cursor.pos += 1

    def _run_branches(self, block: _Block, max_concurrency: int | None) -> None:
        """Run the unsettled branches live on the engine's threads and record their outcomes.

        Stops early, starting no more branches, when the run is cancelled (the
        running ones finish and are recorded, then ``Cancelled`` is raised here),
        when the worker stops or loses the lease (nothing more is recorded; running
        branches are abandoned) and, under ``restart_after_record``, after the first
        record (the running ones are recorded, then the run executes again).
        """
        ctx = self._ctx
        ctx._go_live()
        waiting = collections.deque(i for i, done in enumerate(block.settled) if not done)
        unsettled = len(waiting)
        limit = min(max_concurrency or ctx.threads.size, unsettled)
        running: dict[int, concurrent.futures.Future[None]] = {}
        cancel = False
        ctx._in_block = True
        try:
            while True:
                if ctx.shared.stop_requested.is_set():
                    ctx._unwind(_control.Stopped())
                if not cancel and not ctx._cancel_delivered and ctx._cancel_due():
                    cancel = True
                if cancel or ctx._restart_due:
                    block.interrupted.set()
                    waiting.clear()
                    for index, future in list(running.items()):
                        if future.cancel():  # queued, never started: stays unsettled
                            del running[index]
                while waiting and len(running) < limit:
                    index = waiting.popleft()
                    try:
                        block.return_types[index] = block.calls[index].step.return_type
                    except _errors.DefinitionError as exc:  # resolved before any side effect
                        attempt = block.attempts[index] + 1
                        block.inbox.put(
                            _Report(index, _FAILED, attempt, error=_payloads.error_info(exc))
                        )
                        continue
                    running[index] = ctx.threads.submit(
                        self._run_branch, block, index, block.attempts[index]
                    )
                if not running and block.inbox.empty():
                    break
                try:
                    reports = [block.inbox.get(timeout=0.05)]
                except queue.Empty:
                    continue
                while True:
                    try:
                        reports.append(block.inbox.get_nowait())
                    except queue.Empty:
                        break
                if ctx.shared.stop_requested.is_set():
                    continue  # stops at the top of the loop, recording nothing more
                events: list[history.Event] = []
                told: list[tuple[_Report, history.Event]] = []
                for report in reports:
                    if report.what == _CRASHED:
                        if events:
                            ctx._record_many(events)
                        assert report.crash is not None
                        raise report.crash
                    event = self._branch_event(block, report)
                    if event is not None:
                        events.append(event)
                        told.append((report, event))
                    if report.what != _ATTEMPT_FAILED:
                        running.pop(report.index, None)
                if events:
                    ctx._record_many(events)
                    if ctx.observers.active:
                        self._tell_recorded(block, told)
        finally:
            ctx._in_block = False
            block.interrupted.set()
            for future in running.values():
                future.cancel()
        if ctx._restart_due:
            ctx._unwind(_control.Restart())
        if cancel and not all(block.settled):
            # Some branches never settled: deliver the cancellation here, where replay
            # meets it too. When all did, the next durable call delivers it.
            ctx._cancel_point()

    def _tell_recorded(self, block: _Block, told: Sequence[tuple[_Report, history.Event]]) -> None:
        """Tell the observers how the branches' live attempts just recorded ended."""
        for report, event in told:
            if isinstance(event, history.BranchCompleted):
                kind, info = "step_completed", None
            else:
                kind = (
                    "step_retried"
                    if isinstance(event, history.BranchAttemptFailed)
                    else ("step_failed")
                )
                info = block.failures.get(report.index, report.error)
            self._tell(
                kind,
                block,
                report.index,
                report.attempt,
                took=report.took,
                info=info,
                replayed=False,
            )

    def _tell(
        self,
        kind: str,
        block: _Block,
        index: int,
        attempt: int,
        *,
        took: float | None,
        info: _payloads.ErrorInfo | None,
        replayed: bool,
    ) -> None:
        ctx = self._ctx
        step = block.calls[index].step
        if kind == "step_completed" and not replayed:
            if ctx.observers.step_times and took is not None:
                ctx.observers.timed(ctx.workflow.name, step.name, took)
            handlers = ctx.observers.live_step_completed
        else:
            handlers = getattr(ctx.observers, kind)
        if not handlers:
            return
        event = ctx._steps.step_event(
            kind,
            step,
            attempt,
            block.position,
            took=took,
            info=info,
            branch=index,
            replayed=replayed,
        )
        ctx.observers.emit(handlers, event)

    def _branch_event(self, block: _Block, report: _Report) -> history.Event | None:
        """Turn a branch's report into the event that records it (none when abandoned)."""
        ctx = self._ctx
        index = report.index
        step = block.calls[index].step
        name = history.branch_name(step.name, index)
        if report.what == _ABANDONED:
            return None
        if report.what == _COMPLETED:
            data, result, problem = ctx._steps.encode_result(
                step, report.value, block.return_types[index]
            )
            if problem is None:
                block.results[index] = result
                block.settled[index] = True
                return history.BranchCompleted(name, data)
            info = _payloads.error_info(problem, report.attempt)
        else:
            assert report.error is not None
            info = report.error
        if report.what == _ATTEMPT_FAILED:
            log.info(
                "run %s: step %s (branch %d) attempt %d failed (%s: %s); retrying in %.3gs",
                ctx.run_id,
                step.name,
                index,
                report.attempt,
                info.type,
                info.message,
                step.retry.delay(report.attempt),
                extra={"fluxo_run_id": ctx.run_id},
            )
            return history.BranchAttemptFailed(name, ctx.codec.encode(info))
        block.failures[index] = info
        block.settled[index] = True
        return history.BranchFailed(name, ctx.codec.encode(info))

    def _run_branch(self, block: _Block, index: int, attempt: int) -> None:
        """One branch, in a thread of the pool: its attempts, retries and back-offs.

        It records nothing itself: it reports each outcome to the workflow thread.
        Back-offs wait here, in the branch's thread (a durable timer cannot suspend
        one branch of a block), and end early, abandoning the branch, when the
        block is interrupted.
        """
        steps = self._ctx._steps
        clock = self._ctx.clock
        call = block.calls[index]
        step = call.step
        try:
            while True:
                attempt += 1
                failure: _payloads.ErrorInfo | None = None
                began = clock()
                try:
                    value = steps.attempt(
                        step,
                        call.args,
                        call.kwargs,
                        attempt=attempt,
                        position=block.position,
                        branch=index,
                    )
                except Exception as exc:
                    failure = _payloads.error_info(exc, attempt)
                    retrying = step.retry.should_retry(exc, attempt)
                took = _steps.elapsed(clock(), began)
                if failure is None:
                    block.inbox.put(_Report(index, _COMPLETED, attempt, value=value, took=took))
                    return
                if not retrying:
                    block.inbox.put(_Report(index, _FAILED, attempt, error=failure, took=took))
                    return
                block.inbox.put(_Report(index, _ATTEMPT_FAILED, attempt, error=failure, took=took))
                if not self._branch_backoff(block, step.retry.delay(attempt)):
                    block.inbox.put(_Report(index, _ABANDONED, attempt))
                    return
        except BaseException as exc:  # the process is going down (or a test says so)
            block.inbox.put(_Report(index, _CRASHED, attempt, crash=exc))

    def _branch_backoff(self, block: _Block, delay: float) -> bool:
        """Wait a branch's back-off; False when the block was interrupted meanwhile."""
        ctx = self._ctx
        if ctx._pause is None:
            return not block.interrupted.wait(delay)
        ctx._pause(delay)  # a test environment's virtual clock
        return not block.interrupted.is_set()
