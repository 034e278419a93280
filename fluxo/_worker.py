"""Workers: claim runnable runs under a lease, execute them, renew the lease.

Workers are stateless and disposable. Everything a worker knows comes from the
store, so any number of them, in any number of processes or machines, share
one store; ``kill -9`` one and another finishes its runs when the leases expire.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType, TracebackType
from typing import TYPE_CHECKING

from fluxo import _errors, _executor, history

if TYPE_CHECKING:
    from fluxo import _engine

log = logging.getLogger(__name__)


_FINISHED = (
    _executor.Outcome.COMPLETED,
    _executor.Outcome.FAILED,
    _executor.Outcome.CANCELLED,
    _executor.Outcome.CONTINUED,
)


class Heartbeat:
    """Renews the leases of running workflows and delivers their cancellations.

    One background thread per heartbeat renews every ``lease / 3`` seconds.
    A run whose lease was lost is told to stop at its next durable call; a run
    whose cancellation was requested is told to raise ``fluxo.Cancelled`` there.
    """

    def __init__(self, engine: _engine.Engine, owner: str, lease: float) -> None:
        self.engine = engine
        self.owner = owner
        self.lease = lease
        self._contexts: dict[str, _executor.RunContext] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        self._stop.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"fluxo-heartbeat-{self.owner}", daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def add(self, context: _executor.RunContext) -> None:
        """Start renewing this run's lease."""
        with self._lock:
            self._contexts[context.run_id] = context

    def remove(self, context: _executor.RunContext) -> None:
        """Stop renewing this run's lease (if ``context`` is still the one renewed)."""
        with self._lock:
            if self._contexts.get(context.run_id) is context:
                del self._contexts[context.run_id]

    def beat(self) -> None:
        """Renew once now."""
        with self._lock:
            contexts = dict(self._contexts)
        if not contexts:
            return
        try:
            held = self.engine.store.renew(
                self.owner, list(contexts), lease_until=self.engine.clock() + self.lease
            )
        except _errors.StoreError as exc:
            log.warning("could not renew leases (%s); retrying at the next beat", exc)
            return
        for run_id, context in contexts.items():
            if context.lease_released:
                continue  # it finished or suspended since the snapshot: nothing was lost
            if run_id not in held:
                log.warning(
                    "run %s: lease lost to another worker; stopping at its next durable call",
                    run_id,
                    extra={"fluxo_run_id": run_id},
                )
                context.stop_requested.set()
            elif held[run_id]:
                context.cancel_requested.set()

    def _loop(self) -> None:
        while not self._stop.wait(self.lease / 3):
            self.beat()


PREEMPT_AFTER = 0.1
"""Seconds a worker with every slot busy waits before it makes a held wait let go."""


class Worker:
    """Claims runnable runs of its engine's workflows and executes them.

    Create it with :meth:`Engine.worker`. ``run()`` blocks (SIGTERM or SIGINT
    stop it gracefully); ``start()``/``stop()`` run it in a background thread,
    which suits a web application; ``process_one()`` executes what is runnable
    now and returns, which suits tests.
    """

    def __init__(
        self,
        engine: _engine.Engine,
        *,
        concurrency: int = 4,
        lease: float = 30.0,
        idle_timeout: float = 1.0,
        shutdown_timeout: float = 30.0,
        worker_id: str | None = None,
        sticky: float = 5.0,
    ) -> None:
        problems = []
        if not isinstance(sticky, (int, float)) or sticky < 0:
            problems.append(f"sticky must be a number of seconds >= 0, not {sticky!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            problems.append(f"concurrency must be a whole number >= 1, not {concurrency!r}")
        if not isinstance(lease, (int, float)) or lease <= 0:
            problems.append(f"lease must be a positive number of seconds, not {lease!r}")
        if not isinstance(shutdown_timeout, (int, float)) or shutdown_timeout < 0:
            problems.append(
                f"shutdown_timeout must be a number of seconds >= 0, not {shutdown_timeout!r}"
            )
        if not isinstance(idle_timeout, (int, float)) or idle_timeout <= 0:
            problems.append(f"idle_timeout must be a positive number, not {idle_timeout!r}")
        if worker_id is not None:
            if not isinstance(worker_id, str) or not worker_id:
                problems.append(f"worker_id must be a non-empty string, not {worker_id!r}")
            elif (problem := history.name_problem(worker_id)) is not None:
                problems.append(history.name_rule("worker_id", worker_id, problem))
        if problems:
            raise _errors.DefinitionError("invalid worker settings: " + "; ".join(problems))
        self.engine = engine
        self.concurrency = concurrency
        self.lease = float(lease)
        self.idle_timeout = float(idle_timeout)
        self.sticky = float(sticky)
        self.shutdown_timeout = shutdown_timeout
        self.id = worker_id or f"{engine.instance_id}:w{uuid.uuid4().hex[:6]}"
        self._stopping = threading.Event()
        self._inflight: dict[str, _executor.RunContext | None] = {}
        self._reclaimed: set[str] = set()
        """Runs the claim loop leased to us while one of our threads executed them."""
        self._futures: set[Future[None]] = set()
        self._slots = threading.Condition()
        self._thread: threading.Thread | None = None
        self._heartbeat = Heartbeat(engine, self.id, self.lease)
        self._warned_unknown: set[str] = set()
        self._draining_expired = False
        self.completed = 0
        """How many runs this worker finished (completed, failed or cancelled)."""

    def __repr__(self) -> str:
        return f"Worker({self.id!r}, concurrency={self.concurrency})"

    # -- lifecycle -----------------------------------------------------------------------

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Run the worker in a background daemon thread."""
        if self._thread is not None:
            raise _errors.RunStateError(
                "this worker is already started; call stop() first, or create another "
                "with engine.worker()"
            )
        self._thread = threading.Thread(target=self._serve, name=f"fluxo-{self.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight runs finish, and give back what is left.

        Runs still executing after ``timeout`` (default ``shutdown_timeout``) are
        told to stop at their next durable call and their leases are released.
        """
        if timeout is not None:
            self.shutdown_timeout = timeout
        self._stopping.set()
        with self._slots:
            self._slots.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
            self._thread = None

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Serve until :meth:`stop`, SIGTERM or SIGINT. A second signal exits at once."""
        previous: dict[signal.Signals, object] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self._serve()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stopping.is_set():
            log.warning("second signal: exiting now; unfinished runs resume after their leases")
            logging.shutdown()
            os._exit(1)  # not SystemExit: that would wait for the running steps
        log.info("worker %s: %s received, shutting down", self.id, signal.Signals(signum).name)
        self._stopping.set()
        with self._slots:
            self._slots.notify_all()

    # -- the loop ------------------------------------------------------------------------

    def _serve(self) -> None:
        names = self.engine.workflow_names
        log.info(
            "worker %s serving %d workflow(s) with concurrency %d",
            self.id,
            len(self.engine.workflows),
            self.concurrency,
        )
        self._report_unknown()
        last_unknown_check = time.monotonic()
        with (
            self._heartbeat,
            ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"fluxo-{self.id}") as pool,
        ):
            while not self._stopping.is_set():
                free = self._wait_for_slot()
                if free == 0:
                    if not self._stopping.is_set():
                        self._take_a_held_slot(pool, names)
                    continue
                now = self.engine.clock()
                try:
                    token = self.engine.store.change_token(None)
                    runs = self.engine.store.claim(
                        self.id, names, now=now, lease_until=now + self.lease, limit=free
                    )
                except _errors.StoreError as exc:
                    log.error("worker %s: claim failed (%s); retrying", self.id, exc)
                    self._stopping.wait(self.idle_timeout)
                    continue
                self._dispatch(pool, runs)
                if not runs:
                    self._idle(names, token)
                    if time.monotonic() - last_unknown_check > 60:
                        self._report_unknown()
                        last_unknown_check = time.monotonic()
            self._drain()
        log.info("worker %s stopped", self.id)

    def _idle(self, names: frozenset[str], token: object) -> None:
        """Sleep until the store reports a change or the next timer is due."""
        wait = self.idle_timeout
        try:
            due = self.engine.store.next_wake(names, now=self.engine.clock())
        except _errors.StoreError as exc:
            log.warning("worker %s: cannot read the next wake-up (%s)", self.id, exc)
            due = None
        if due is not None:
            wait = min(wait, max(due - self.engine.clock(), 0.005))
        self.engine.store.wait_for_change(None, wait, since=token)

    def _wait_for_slot(self) -> int:
        """Free slots; 0 when every slot stayed busy for a moment (or the worker stops)."""
        with self._slots:
            if len(self._inflight) >= self.concurrency and not self._stopping.is_set():
                self._slots.wait(min(self.idle_timeout, PREEMPT_AFTER))
            if self._stopping.is_set():
                return 0
            return max(self.concurrency - len(self._inflight), 0)

    def _take_a_held_slot(self, pool: ThreadPoolExecutor, names: frozenset[str]) -> None:
        """Every slot is busy: give one that only holds a wait to a run that is due.

        If a slot holds a signal or child wait and another run is due, claim that
        run and make the hold let go, so the run takes its slot. A held wait only
        saves its run a replay later; a run that is due now (a child its parent
        waits for, a new run) should not wait for the hold to run out. A timer's
        hold is left alone: its run is reserved to the holder until it fires.
        Claiming first means only the worker that won the run makes a hold let go,
        and that a run of ours that was just woken is taken back by its own thread.
        """
        with self._slots:
            holder = next(
                (
                    c
                    for c in self._inflight.values()
                    if c is not None and c.holding and not c.holding_timer
                ),
                None,
            )
        if holder is None:
            return
        now = self.engine.clock()
        try:
            due = self.engine.store.next_wake(names, now=now)
            if due is None or due > now:
                return
            runs = self.engine.store.claim(
                self.id, names, now=now, lease_until=now + self.lease, limit=1
            )
        except _errors.StoreError:
            return
        if self._dispatch(pool, runs):  # queued until the hold lets go of its thread
            log.debug("worker %s: run %s takes the slot of a held wait", self.id, runs[0].id)
            holder.let_go.set()

    def _dispatch(self, pool: ThreadPoolExecutor, runs: list[history.RunInfo]) -> int:
        """Execute claimed runs on the pool; return how many were submitted.

        A run one of our threads still executes is not submitted again: that thread
        holds the wait and takes the run back itself, or is unwinding and runs it
        again once done (``_execute_again``). Never two executions at once.
        """
        submitted = 0
        for run in runs:
            with self._slots:
                if run.id in self._inflight:
                    self._reclaimed.add(run.id)
                    continue
            self._submit(pool, run.id)
            submitted += 1
        return submitted

    def _submit(self, pool: ThreadPoolExecutor, run_id: str) -> None:
        with self._slots:
            self._inflight[run_id] = None
        future = pool.submit(self._execute, run_id)
        self._futures.add(future)
        future.add_done_callback(self._futures.discard)

    def _execute(self, run_id: str) -> None:
        latest: list[_executor.RunContext] = []

        def track(context: _executor.RunContext) -> None:
            latest[:] = [context]
            with self._slots:
                self._inflight[run_id] = context
            if self._stopping.is_set() and self._draining_expired:
                context.stop_requested.set()

        try:
            while True:
                outcome = self.engine.execute_claimed(
                    run_id,
                    self.id,
                    heartbeat=self._heartbeat,
                    hold_window=self.sticky,
                    context_hook=track,
                )
                log.debug("run %s: %s", run_id, outcome.value, extra={"fluxo_run_id": run_id})
                if outcome in _FINISHED:
                    self.completed += 1  # runs this worker brought to an end
                    if latest:  # none: a damaged history, failed (and logged) unexecuted
                        self._log_finished(latest[0], outcome)
                if not self._execute_again(run_id):
                    return  # and the run has left _inflight
        except _errors.UnknownWorkflowError as exc:
            log.warning("%s", exc)
        except Exception:
            # The lease is kept on purpose: it expires unrenewed, which spaces out the
            # attempts. Releasing it would hand a run that cannot execute straight back
            # to claim(), oldest first, in a hot loop that starves every other run.
            log.exception(
                "run %s: execution broke off; the run resumes when its lease expires",
                run_id,
                extra={"fluxo_run_id": run_id},
            )
        with self._slots:
            self._inflight.pop(run_id, None)
            self._reclaimed.discard(run_id)
            self._slots.notify_all()

    def _log_finished(self, context: _executor.RunContext, outcome: _executor.Outcome) -> None:
        """Log at INFO a run this worker ended: its id, workflow, and age (since created)."""
        age = max(self.engine.clock() - context.created_at, 0.0)
        error = context.error
        log.info(
            "run %s of %s %s %.3fs after it was created%s",
            context.run_id,
            context.workflow.name,
            outcome.value,
            age,
            f" ({error.type}: {error.message.splitlines()[0] if error.message else ''})"
            if outcome is _executor.Outcome.FAILED and error is not None
            else "",
            extra={"fluxo_run_id": context.run_id, "fluxo_workflow": context.workflow.name},
        )

    def _execute_again(self, run_id: str) -> bool:
        """After an execution: True when the run is ours to execute again, else let it go.

        The claim loop may have leased the run to us while this thread executed it
        (it became ready just as the execution suspended); the loop left it to this
        thread, which executes it again. When the execution took the run back itself
        (a held wait), its later status write cleared that lease: nothing to do. The
        run leaves ``_inflight`` in the same step as the last look at ``_reclaimed``,
        so a claim made after that is executed by the loop, never dropped.
        """
        while True:
            with self._slots:
                if run_id not in self._reclaimed:
                    self._inflight.pop(run_id, None)
                    self._slots.notify_all()
                    return False
                self._reclaimed.discard(run_id)
            try:
                mine = self.engine.store.get_run(run_id).lease_owner == self.id
                if mine and not self._stopping.is_set():
                    return True  # a run that ended meanwhile ends at once (LOST)
                if mine:
                    self.engine.store.release(self.id, run_id, now=self.engine.clock())
            except _errors.StoreError as exc:
                log.warning("run %s: %s; its lease expires and it is claimed again", run_id, exc)

    def _drain(self) -> None:
        deadline = time.monotonic() + self.shutdown_timeout
        with self._slots:
            while self._inflight and time.monotonic() < deadline:
                for context in self._inflight.values():
                    if context is not None and context.holding:
                        context.stop_requested.set()  # its wait is recorded: give it back
                self._slots.wait(min(0.1, max(deadline - time.monotonic(), 0)))
            if self._inflight:
                self._draining_expired = True
                log.warning(
                    "worker %s: %d run(s) still executing after %.0fs; stopping them at their "
                    "next durable call",
                    self.id,
                    len(self._inflight),
                    self.shutdown_timeout,
                )
                for context in self._inflight.values():
                    if context is not None:
                        context.stop_requested.set()

    def _report_unknown(self) -> None:
        """Log, once per run, runnable runs of workflows this worker does not know."""
        try:
            runs = self.engine.store.list_runs(statuses=[history.RunStatus.PENDING], limit=100)
        except _errors.StoreError:
            return
        for run in runs:
            known = run.workflow in self.engine.workflow_names
            if not known and run.id not in self._warned_unknown:
                self._warned_unknown.add(run.id)
                log.warning(
                    "run %s is of workflow %r, which this worker does not know; leaving it "
                    "for a worker that does (%s)",
                    run.id,
                    run.workflow,
                    _unknown_hint(run.workflow),
                    extra={"fluxo_run_id": run.id},
                )

    def process_one(self) -> int:
        """Claim and execute, in this thread, every run runnable now; return how many ran."""
        count = 0
        names = self.engine.workflow_names
        with self._heartbeat:
            while True:
                now = self.engine.clock()
                runs = self.engine.store.claim(
                    self.id, names, now=now, lease_until=now + self.lease, limit=1
                )
                if not runs:
                    return count
                try:
                    self.engine.execute_claimed(runs[0].id, self.id, heartbeat=self._heartbeat)
                except _errors.UnknownWorkflowError as exc:
                    log.warning("%s", exc)
                count += 1


def _unknown_hint(workflow: str) -> str:
    """How to make a worker know ``workflow``."""
    if workflow.startswith("__main__."):
        return (
            "the name was given in a script run without a module name, such as "
            "`python -c` or an interactive session, where this worker imports the code "
            f"under another; give the workflow name={workflow.partition('.')[2]!r} or "
            f"aliases=[{workflow!r}], or define it in a module file"
        )
    return "add the workflow to Engine(workflows=[...])"
