"""The runner: executes runs whose lease it holds, in this process.

A run is executed only under its lease. The runner loads a run it was given
(checking the lease is still its own, and taking it afresh if it ran out before
the execution began), builds an execution of the replay executor
(:class:`fluxo._executor.RunContext`) with the options its caller asks for, and
executes it while a heartbeat renews the lease (:mod:`fluxo._leases`). A short
wait may be held in the thread (a :class:`fluxo._leases.RunHolder`). The lease
is given back when the execution stops early, so another worker can take over.

Its callers: a worker, for the runs it claims (:mod:`fluxo._worker`); an engine,
for ``engine.run`` and the child runs that run starts, executed inline in
threads of this process; and ``fluxo.testing``'s environment, one run at a time.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from fluxo import (
    _dead,
    _errors,
    _executor,
    _fork,
    _leases,
    _observers,
    _payloads,
    codec,
    history,
    observe,
    stores,
)

if TYPE_CHECKING:
    from fluxo import _definitions

log = logging.getLogger(__name__)

DEFAULT_LEASE = 30.0
"""Seconds a lease lasts unless a worker is given another length."""

ContextHook = Callable[[_executor.RunContext], None]
"""Told of each execution before it begins (a worker keeps it to stop it; tests adjust it)."""


class Runner:
    """Executes leased runs of an engine's workflows, in the threads that ask it to.

    Args:
        store: the store.
        codec: how values are encoded.
        clock: seconds since the epoch.
        find_workflow: the workflow of a name or alias, or None when it is unknown.
        threads: the pool of threads parallel branches run on.
        instance_id: names this process in the lease owners of inline runs.
        step_context: returns a context manager entered around each live attempt
            of a step, in the thread that runs it.
        observers: the engine's observers, told of what its executions do.
    """

    def __init__(
        self,
        *,
        store: stores.Store,
        codec: codec.Codec,
        clock: Callable[[], float],
        find_workflow: Callable[[str], _definitions.Workflow[Any, Any] | None],
        threads: _executor.StepThreads,
        instance_id: str,
        step_context: Callable[[], contextlib.AbstractContextManager[object]] | None = None,
        observers: _observers.Dispatch = _observers.NONE,
    ) -> None:
        self.store = store
        self.observers = observers
        self.step_context = step_context
        self.codec = codec
        self.clock = clock
        self.find_workflow = find_workflow
        self.threads = threads
        self.instance_id = instance_id
        self._closed = False
        self._inline_lock = threading.Lock()
        self._inline_threads: set[threading.Thread] = set()
        self._inline_runs: set[_executor.RunContext] = set()

    def close(self, timeout: float = 5.0) -> None:
        """Stop the inline executions (they give their runs back) and the branch threads.

        Waits up to ``timeout`` seconds for the threads of inline child runs. Idempotent.
        """
        with self._inline_lock:
            self._closed = True  # no inline child starts after this
            for context in self._inline_runs:
                context.shared.stop_requested.set()  # they give their runs back to workers
            threads = list(self._inline_threads)
        deadline = time.monotonic() + timeout
        for thread in threads:
            thread.join(timeout=max(deadline - time.monotonic(), 0.0))
        self.threads.close()

    # -- executing a claimed run -------------------------------------------------------

    def execute_claimed(
        self,
        run_id: str,
        owner: str,
        *,
        heartbeat: _leases.Heartbeat,
        hold_window: float = 0.0,
        context_hook: ContextHook | None = None,
        slots: _leases.HoldSlots | None = None,
        options: _executor.RunOptions | None = None,
    ) -> _executor.Outcome:
        """Execute a run whose lease ``owner`` holds, until it ends or must stop.

        ``heartbeat`` renews the lease while the workflow runs; the lease is given
        back if execution stops early, so another worker can take over. Waits no
        longer than ``hold_window`` seconds are held in this thread (after being
        recorded), so the run resumes without replaying its history; ``slots``, a
        worker's, lends the held waits its execution slots. ``options`` are the
        execution's (``holder`` aside, which this sets). A run whose lease another
        worker took is left alone, and one whose lease ran out is executed only
        once leased afresh: never two executions at once.

        Raises:
            UnknownWorkflowError: the run's workflow is not one this runner knows;
                the run was given back for a worker that does.
        """
        holder = None
        if hold_window > 0:
            holder = _leases.RunHolder(
                store=self.store,
                clock=self.clock,
                owner=owner,
                lease=heartbeat.lease,
                window=hold_window,
                heartbeat=heartbeat,
                slots=slots,
            )
        chosen = dataclasses.replace(options or _executor.RunOptions(), holder=holder)
        if self.step_context is not None:
            chosen = dataclasses.replace(
                chosen, step_runner=_within(self.step_context, chosen.step_runner)
            )
        outcome = _executor.Outcome.RESTART
        while outcome is _executor.Outcome.RESTART:  # only under restart_after_record
            try:
                state = self._load_leased(run_id, owner, heartbeat.lease)
            except _errors.HistoryCorruptError as exc:
                return self.fail_damaged(owner, exc)
            if state is None:
                return _executor.Outcome.LOST
            if _fork.unfinished(state) is not None:
                copied = self._complete_fork(state, owner, heartbeat.lease)
                if isinstance(copied, _executor.Outcome):
                    return copied
                state = copied
            wf = self.find_workflow(state.run.workflow)
            if wf is None:
                self.store.release(owner, run_id, now=self.clock())
                raise _errors.UnknownWorkflowError(
                    f"run {run_id!r} is of workflow {state.run.workflow!r}, which this engine "
                    "does not know; it was left for a worker that does"
                )
            if _dead.is_due(wf, state.run):
                return _dead.end_dead(
                    self.store,
                    codec=self.codec,
                    clock=self.clock,
                    observers=self.observers,
                    owner=owner,
                    state=state,
                    workflow=wf,
                )
            context = _executor.RunContext(
                state=state,
                workflow=wf,
                store=self.store,
                codec=self.codec,
                clock=self.clock,
                options=chosen,
                threads=self.threads,
                observers=self.observers,
                worker=owner,
            )
            if context_hook is not None:
                context_hook(context)
            heartbeat.add(run_id, context.shared)
            try:
                outcome = context.execute()
            finally:
                heartbeat.remove(run_id, context.shared)
        # A store failure keeps the lease: it expires unrenewed, which spaces out the
        # attempts instead of handing the run straight back to claim() in a hot loop.
        if outcome in (_executor.Outcome.LOST, _executor.Outcome.STOPPED):
            self.store.release(owner, run_id, now=self.clock())
        return outcome

    def _load_leased(self, run_id: str, owner: str, lease: float) -> history.RunState | None:
        """The run's state, if ``owner`` holds a live lease on it; None: leave the run alone."""
        state = self.store.load(run_id)
        run = state.run
        if run.status.is_terminal or run.lease_owner != owner:
            # Our lease passed to another worker between our claim and this load (and
            # maybe that worker finished the run): it is theirs now.
            return None
        now = self.clock()
        if run.lease_until is not None and run.lease_until >= now:
            return state
        # Our lease ran out before the execution began: another worker may claim the
        # run at any moment. Lease it afresh (only if nobody did), then read it again.
        if self.store.claim_run(owner, run_id, now=now, lease_until=now + lease) is None:
            return None
        state = self.store.load(run_id)
        return state if state.run.lease_owner == owner else None

    def _complete_fork(
        self, state: history.RunState, owner: str, lease: float
    ) -> history.RunState | _executor.Outcome:
        """Make the copy of a forked run whose forking stopped before it (see :mod:`fluxo._fork`).

        Returns the run's state with its copied prefix, to execute; or how the
        execution ends: the run failed (its source cannot give the copy), ``LOST``
        (another writer made the copy, or failed the run), ``BROKEN`` (the store
        failed; the lease is kept, and its expiry spaces out the next attempt).
        """
        run_id = state.run.id
        try:
            refused = _fork.complete(self.store, self.codec, self.clock, state)
        except _errors.StoreRejectedError as exc:
            refused = exc
        except _errors.StoreError as exc:
            log.warning(
                "run %s: could not copy the history it was forked from (%s); trying again "
                "when its lease expires",
                run_id,
                exc,
                extra={"fluxo_run_id": run_id},
            )
            return _executor.Outcome.BROKEN
        if refused is not None:
            return self.fail_unrunnable(owner, run_id, 1, refused)
        copied = self._load_leased(run_id, owner, lease)
        return _executor.Outcome.LOST if copied is None else copied

    def fail_damaged(self, owner: str, damage: _errors.HistoryCorruptError) -> _executor.Outcome:
        """Fail, once, a run ``owner`` claimed whose stored history cannot be replayed.

        Records ``WorkflowFailed`` carrying the error where the stored history ends
        (``damage.next_seq``); the damaged rows stay as they are, for an operator to
        look at. See :meth:`fail_unrunnable`.
        """
        return self.fail_unrunnable(owner, damage.run_id, damage.next_seq, damage)

    def fail_unrunnable(
        self, owner: str, run_id: str, next_seq: int, error: Exception
    ) -> _executor.Outcome:
        """Fail, once, a run ``owner`` claimed that cannot be executed, with ``error``.

        Records ``WorkflowFailed`` carrying the error at ``next_seq``, with the status
        ``FAILED``, so no worker claims the run again. Its parent, if it has one, is
        told, as for any failure. Returns ``FAILED``; ``LOST`` when another writer got
        there first; ``BROKEN`` when the store could not take even that write: the
        lease is kept, and its expiry spaces out the next attempt.
        """
        store, clock = self.store, self.clock
        log.error("%s; the run is failed", error, extra={"fluxo_run_id": run_id})
        data = self.codec.encode(_payloads.error_info(error))
        try:
            run = store.get_run(run_id)
            if run.lease_owner != owner or run.status.is_terminal:
                return _executor.Outcome.LOST
            if run.parent is not None:
                # Keyed by the position: a damaged run failed again after a retry tells again.
                key = f"{history.SIGNAL_PREFIX}{run_id}:damaged:{next_seq}"
                outcome = _payloads.ChildOutcome("failed", data, run_id)
                _executor.tell_parent(store, run.parent, outcome, now=clock(), key=key)
            store.append(
                run_id,
                next_seq,
                [history.WorkflowFailed(data=data)],
                now=clock(),
                status=history.RunStatus.FAILED,
            )
        except (_errors.SequenceConflictError, _errors.RunNotFoundError):
            return _executor.Outcome.LOST
        except _errors.StoreError as exc:
            log.warning(
                "run %s: could not record its failure (%s); trying again when its lease expires",
                run_id,
                exc,
                extra={"fluxo_run_id": run_id},
            )
            return _executor.Outcome.BROKEN
        observers = self.observers
        if observers.run_failed:
            info = _payloads.error_info(error)
            event = observe.RunEvent(
                kind="run_failed",
                run_id=run_id,
                workflow=run.workflow,
                time=clock(),
                position=next_seq,
                duration=clock() - run.created_at,
                error_type=info.type,
                error_message=info.message,
                worker=owner,
                parent=run.parent,
                headers=run.headers,
            )
            observers.emit(observers.run_failed, event)
        return _executor.Outcome.FAILED

    # -- executing inline (engine.run and its children) --------------------------------

    def inline_owner(self) -> str:
        """A lease owner for one inline execution of this process."""
        return f"{self.instance_id}:inline:{uuid.uuid4().hex[:8]}"

    def execute_inline(
        self, run_id: str, owner: str, context_hook: ContextHook
    ) -> _executor.Outcome:
        """Execute a run ``owner`` holds in this thread, and the rest of its chain.

        Its waits are held in the thread. The child runs it starts are executed
        in threads of their own in the same way, unless a worker takes them first.
        Returns ``CONTINUED`` when a worker took over the chain.
        """
        options = _executor.RunOptions(child_started=self._start_inline_child)
        with _leases.Heartbeat(self, owner, DEFAULT_LEASE) as heartbeat:
            outcome = self.execute_claimed(
                run_id,
                owner,
                heartbeat=heartbeat,
                hold_window=math.inf,
                context_hook=context_hook,
                options=options,
            )
            last = run_id
            while outcome is _executor.Outcome.CONTINUED:
                # Go on with the next run of the chain here, unless a worker took it.
                last = history.chain_next(last)
                now = self.clock()
                if (
                    self.store.claim_run(owner, last, now=now, lease_until=now + DEFAULT_LEASE)
                    is None
                ):
                    return outcome
                outcome = self.execute_claimed(
                    last,
                    owner,
                    heartbeat=heartbeat,
                    hold_window=math.inf,
                    context_hook=context_hook,
                    options=options,
                )
        if heartbeat.death is not None:
            raise _errors.FluxoError(
                f"run {run_id!r} stopped executing in this process: the thread that renews "
                f"its lease, {heartbeat.thread_name}, died ({heartbeat.death!r}); the run is "
                "intact, and a worker resumes it from its history"
            ) from heartbeat.death
        return outcome

    def _start_inline_child(self, child_id: str, workflow: _definitions.Workflow[Any, Any]) -> None:
        """Execute a child run that an inline run started, in a thread of this process.

        Only a child this runner knows and can lease at once; otherwise a worker runs it.
        If this process dies, the child's lease expires and a worker resumes it.
        """
        if self._closed or self.find_workflow(workflow.name) is None:
            return
        owner = self.inline_owner()
        now = self.clock()
        try:
            claimed = self.store.claim_run(
                owner, child_id, now=now, lease_until=now + DEFAULT_LEASE
            )
        except _errors.StoreError as exc:
            log.warning("child run %s is left for a worker: %s", child_id, exc)
            return
        if claimed is None:
            return  # a worker has it
        thread = threading.Thread(
            target=self._run_inline_child,
            args=(child_id, owner),
            name=f"fluxo-child-{child_id}",
            daemon=True,
        )
        with self._inline_lock:
            if self._closed:  # closed meanwhile: leave the child to a worker
                with contextlib.suppress(_errors.StoreError):
                    self.store.release(owner, child_id, now=self.clock())
                return
            self._inline_threads.add(thread)
        thread.start()

    def _run_inline_child(self, child_id: str, owner: str) -> None:
        mine: list[_executor.RunContext] = []

        def track(context: _executor.RunContext) -> None:
            mine.append(context)
            with self._inline_lock:
                self._inline_runs.add(context)
                if self._closed:
                    context.shared.stop_requested.set()

        try:
            self.execute_inline(child_id, owner, track)
        except Exception:
            log.exception(
                "child run %s stopped executing in this process; a worker resumes it", child_id
            )
        finally:
            with self._inline_lock:
                self._inline_runs.difference_update(mine)
                self._inline_threads.discard(threading.current_thread())


def _within(
    context: Callable[[], contextlib.AbstractContextManager[object]],
    runner: _executor.StepRunner,
) -> _executor.StepRunner:
    """``runner``, calling each step inside a context made by ``context``.

    For an ``async def`` step the context is entered around the whole run of its
    coroutine (on Fluxo's step loop), not only around making it.
    """

    def run_step(
        step: _definitions.Step[Any, Any], args: Sequence[Any], kwargs: Mapping[str, Any]
    ) -> Any:
        if step.is_async:
            return _awaited_within(context, runner, step, args, kwargs)
        with context():
            return runner(step, args, kwargs)

    return run_step


async def _awaited_within(
    context: Callable[[], contextlib.AbstractContextManager[object]],
    runner: _executor.StepRunner,
    step: _definitions.Step[Any, Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
) -> Any:
    with context():
        made = runner(step, args, kwargs)
        return await made if inspect.isawaitable(made) else made
