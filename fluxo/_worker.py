"""Workers: claim runnable runs under a lease, execute them, renew the lease.

Workers are stateless and disposable. Everything a worker knows comes from the
store, so any number of them, in any number of processes or machines, share
one store; ``kill -9`` one and another finishes its runs when the leases expire.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol

from fluxo import (
    _errors,
    _executor,
    _leases,
    _names,
    _queues,
    _runner,
    _schedule_control,
    _watch,
    history,
    stores,
)

if TYPE_CHECKING:
    from fluxo import _definitions, _queue_config

log = logging.getLogger(__name__)


_FINISHED = (
    _executor.Outcome.COMPLETED,
    _executor.Outcome.FAILED,
    _executor.Outcome.CANCELLED,
    _executor.Outcome.CONTINUED,
)


CHECK_INTERVAL = _leases.CHECK_INTERVAL
"""Seconds between a heartbeat's reads of the cancel flags of the runs it executes."""

BACKOFF_CAP = _watch.BACKOFF_CAP
"""The longest wait, in seconds, between two attempts of a background operation that fails."""

REMIND_EVERY = _watch.REMIND_EVERY
"""Seconds between two log lines saying that a background operation still fails."""

Trouble = _watch.Trouble
"""A background operation that may fail again and again (see :mod:`fluxo._watch`)."""


class Heartbeat(_leases.Heartbeat):
    """A worker's heartbeat: a :class:`fluxo._leases.Heartbeat` that logs as the worker.

    Its lines (renewals that fail, leases lost) come from this module's logger,
    with the worker's own, so one logger configuration covers a worker.
    """

    logger = log


class WorkerEngine(Protocol):
    """What a worker needs of its engine: a :class:`fluxo.Engine`."""

    @property
    def store(self) -> stores.Store:
        """The store the runs are in."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Seconds since the epoch."""
        ...

    @property
    def runner(self) -> _runner.Runner:
        """Executes the runs the worker claims."""
        ...

    @property
    def instance_id(self) -> str:
        """Names this process in the worker's default id."""
        ...

    @property
    def workflows(self) -> list[_definitions.Workflow[Any, Any]]:
        """The workflows the worker executes."""
        ...

    @property
    def workflow_names(self) -> frozenset[str]:
        """Their names and aliases: the runs the worker claims."""
        ...

    @property
    def schedules(self) -> _schedule_control.Schedules:
        """The schedules of its workflows, which the worker starts as it starts."""
        ...


_EXECUTING = "executing"
"""The run has one of the worker's execution slots (claimed for it, running or unwinding)."""
_HOLDING = "holding"
"""The run's thread holds a recorded wait, without an execution slot."""
_LEAVING = "leaving"
"""The run's thread lets go of it (a hold that ended): no slot, no hold place."""


class _Entry:
    """What the worker knows of a run one of its threads has."""

    __slots__ = ("context", "handed", "queue", "state")

    def __init__(self, queue: str = history.DEFAULT_QUEUE) -> None:
        self.state = _EXECUTING
        self.queue = queue  # for its queue's worker_concurrency
        self.context: _executor.RunContext | None = None
        self.handed = False
        """The claim loop leased the run to us while its thread was taking it back from a
        hold: that take-back takes the lease over, and if the thread lets go instead,
        the run is executed again (``_reclaimed``)."""


class _Holding:
    """The runs whose waits the worker's threads hold: a live view its idle wait ignores.

    A run counts from the hold's start until its thread has taken the run back
    or lets go of it (``SharedState.holding``). That thread takes the run back
    when it is woken; a claim woken by the same change would only race it for
    the run. Read without the worker's lock, each time the wait checks.
    """

    __slots__ = ("_inflight",)

    def __init__(self, inflight: dict[str, _Entry]) -> None:
        self._inflight = inflight

    def __contains__(self, run_id: object) -> bool:
        entry = self._inflight.get(run_id) if isinstance(run_id, str) else None
        if entry is None:
            return False
        return entry.state == _HOLDING or (
            entry.context is not None and entry.context.shared.holding
        )


class Worker:
    """Claims runnable runs of its engine's workflows and executes them.

    Create it with :meth:`Engine.worker`. ``run()`` blocks (SIGTERM or SIGINT
    stop it gracefully); ``start()``/``stop()`` run it in a background thread,
    which suits a web application; ``process_one()`` executes what is runnable
    now and returns, which suits tests.

    It has ``concurrency`` execution slots and claims runs only for free ones,
    so it never holds more leases than it executes; a claimed run starts at once.
    A wait of at most ``sticky`` seconds is held in a thread of its own after it
    is recorded, without taking a slot, so the run goes on without replaying its
    history; at most ``concurrency`` waits are held at once (``holds``), the
    others unwind. A held wait that is woken goes on if a slot is free, else it
    lets go and its run, back in the store, is resumed by whichever worker is free.

    Its heartbeat also beats for its liveness: a worker that stops beating for
    ``dead_after`` seconds (its process died) has its runs resumed by the other
    workers at once, without waiting for their leases, which stay long so that a
    slow step of a live worker keeps its run.
    """

    def __init__(
        self,
        engine: WorkerEngine,
        *,
        concurrency: int = 4,
        lease: float = 30.0,
        idle_timeout: float = 1.0,
        shutdown_timeout: float = 30.0,
        worker_id: str | None = None,
        sticky: float = 5.0,
        dead_after: float = _leases.DEAD_AFTER,
        queues: Iterable[str | _queue_config.Queue] | None = None,
    ) -> None:
        problems = []
        if not isinstance(dead_after, (int, float)) or not 0 < dead_after < math.inf:
            problems.append(f"dead_after must be a positive number of seconds, not {dead_after!r}")
        if not isinstance(sticky, (int, float)) or sticky < 0:
            problems.append(f"sticky must be a number of seconds >= 0, not {sticky!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            problems.append(f"concurrency must be a whole number >= 1, not {concurrency!r}")
        if not isinstance(lease, (int, float)) or not 0 < lease < math.inf:
            problems.append(f"lease must be a positive number of seconds, not {lease!r}")
        if not isinstance(shutdown_timeout, (int, float)) or shutdown_timeout < 0:
            problems.append(
                f"shutdown_timeout must be a number of seconds >= 0, not {shutdown_timeout!r}"
            )
        if not isinstance(idle_timeout, (int, float)) or idle_timeout <= 0:
            problems.append(f"idle_timeout must be a positive number, not {idle_timeout!r}")
        if worker_id is not None and (problem := _names.worker_id_problem(worker_id)):
            problems.append(problem)
        if problems:
            raise _errors.DefinitionError("invalid worker settings: " + "; ".join(problems))
        self.engine = engine
        self.concurrency = concurrency
        self.holds = concurrency if sticky > 0 else 0
        """The most waits held at once, each in a thread of its own."""
        self.lease = float(lease)
        self.idle_timeout = float(idle_timeout)
        self.sticky = float(sticky)
        self.shutdown_timeout = shutdown_timeout
        self.id = worker_id or f"{engine.instance_id}:w{uuid.uuid4().hex[:6]}"
        self.served = _queues.served_queues(
            queues,
            getattr(engine, "queues", {}),
            [getattr(wf, "queue", "default") for wf in engine.workflows],
            self.id,
        )
        """The queues it claims runs of, and admits runs to (docs/queues.md)."""
        self._stopping = threading.Event()
        self._inflight: dict[str, _Entry] = {}
        self._holding = _Holding(self._inflight)
        self._reclaimed: set[str] = set()
        """Runs the claim loop leased to us while one of our threads had them."""
        self._claiming = False
        """A claim is in flight, for every slot that was free when it began."""
        self._wanting: set[str] = set()
        """Held waits woken during a claim in flight: its dispatch gives them slots first."""
        self._futures: set[Future[None]] = set()
        self._slots = threading.Condition()
        self._thread: threading.Thread | None = None
        self.dead_after = float(dead_after)
        self._heartbeat = Heartbeat(
            engine.runner,
            self.id,
            self.lease,
            on_death=self._thread_died,
            dead_after=self.dead_after,
        )
        self._death: tuple[str, BaseException] | None = None
        """The first of the worker's threads that died, and what killed it."""
        self._warned_unknown: set[str] = set()
        self._claims = Trouble(f"worker {self.id}: claim", first=self.idle_timeout, logger=log)
        self._wakes = Trouble(
            f"worker {self.id}: reading the next wake-up", level=logging.WARNING, logger=log
        )
        self._unknowns = Trouble(
            f"worker {self.id}: looking for runs of unknown workflows",
            level=logging.WARNING,
            logger=log,
        )
        self._schedules = Trouble(
            f"worker {self.id}: starting the schedules", level=logging.WARNING, logger=log
        )
        self._schedules_started = False
        """The engine's schedules have their runs (``engine.schedules.start()`` succeeded)."""
        self._draining_expired = False
        self._admit_wake: float | None = None
        """When the last admission round said the next one is due (None: on a change)."""
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
        self._thread = _watch.start(f"fluxo-{self.id}", self._serve, self._thread_died)

    def stop(self, timeout: float | None = None) -> None:
        """Stop claiming, let in-flight runs finish, and give back what is left.

        Runs still executing after ``timeout`` (default ``shutdown_timeout``) are
        told to stop at their next durable call and their leases are released.

        Raises:
            FluxoError: the worker had stopped already because one of its threads
                died (its heartbeat, its claim loop); the log has the traceback.
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
        self._raise_if_died()

    def run(self, *, install_signal_handlers: bool = True) -> None:
        """Serve until :meth:`stop`, SIGTERM or SIGINT. A second signal exits at once.

        Raises:
            FluxoError: one of the worker's threads died (its heartbeat, which renews
                the leases): the worker logged it, stopped its runs at their next
                durable call and gave their leases back, and stopped. Restart it
                (a process supervisor does, on the exit status).
        """
        previous: dict[signal.Signals, object] = {}
        if install_signal_handlers and threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        try:
            self._serve()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
        self._raise_if_died()

    # -- watching its threads ------------------------------------------------------------

    def _thread_died(self, name: str, exc: BaseException) -> None:
        """One of the worker's threads died (logged already): stop executing, and stop.

        The runs it executes stop at their next durable call and give their leases
        back, at once: nobody may renew their leases any more. The worker claims
        nothing more; ``run()`` and ``stop()`` raise once it has stopped.
        """
        with self._slots:
            if self._death is None:
                self._death = (name, exc)
            self._draining_expired = True  # executions that begin from now on stop at once
            for entry in self._inflight.values():
                if entry.context is not None:
                    entry.context.shared.stop_requested.set()
            self._stopping.set()
            self._slots.notify_all()
        log.error(
            "worker %s stops: its thread %s died; the runs it executes stop at their next "
            "durable call and give their leases back",
            self.id,
            name,
        )

    def _execution_done(self, future: Future[None]) -> None:
        """An execution thread's work ended; one that raised past its guards is a death."""
        self._futures.discard(future)
        exc = None if future.cancelled() else future.exception()
        if exc is not None:
            _watch.died(threading.current_thread().name, exc, self._thread_died)

    def _raise_if_died(self) -> None:
        if self._death is not None:
            name, exc = self._death
            raise _watch.death_error(f"worker {self.id}", name, exc) from exc

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
            "worker %s serving %d workflow(s) with concurrency %d, queues: %s",
            self.id,
            len(self.engine.workflows),
            self.concurrency,
            _queues.describe(self.served.queues),
        )
        if not names:
            log.warning(
                "worker %s serves no workflows, so it will never claim a run; give its engine "
                "the workflows it runs (Engine(workflows=[...]))",
                self.id,
            )
        # First looked for once the worker is idle after a claim, which creates the
        # tables of a new database: a look before it would only find them missing.
        last_unknown_check = -math.inf
        threads = self.concurrency + self.holds
        with (
            self._heartbeat,
            ThreadPoolExecutor(threads, thread_name_prefix=f"fluxo-{self.id}") as pool,
        ):
            while not self._stopping.is_set():
                if not self._start_schedules():
                    self._pause(self._schedules.failed(self._schedules_error))
                    continue
                free = self._begin_claim()
                if free == 0:
                    continue  # stopping
                runs: list[history.RunInfo] = []
                failure: _errors.StoreError | None = None
                try:
                    token = self.engine.store.change_token(None)
                    if self.served.named:  # admit first: what it admits is claimed now
                        self._admit_wake = self.served.admit(self.engine.store, self.engine.clock)
                    now = self.engine.clock()
                    runs = self.served.claim(
                        self.engine.store,
                        self.id,
                        names,
                        now=now,
                        lease_until=now + self.lease,
                        free=free,
                        executing=self._executing(),
                    )
                except _errors.StoreError as exc:
                    failure = exc
                finally:
                    self._dispatch(pool, runs)  # starts them, and ends the claim in any case
                if failure is not None:
                    self._pause(self._claims.failed(failure))
                    continue
                self._claims.succeeded()
                if not runs:
                    self._idle(names, token)
                    if time.monotonic() - last_unknown_check > 60:
                        self._report_unknown()
                        last_unknown_check = time.monotonic()
            self._drain()
        log.info("worker %s stopped", self.id)

    def _start_schedules(self) -> bool:
        """Start the engine's schedules once (each has one run, whatever the workers).

        A schedule that cannot start for another reason than the store's (its run's
        id taken, its state unreadable) is logged, and the worker goes on with the
        other runs: one broken schedule does not stop the work.
        """
        if not self._schedules_started:
            try:
                self.engine.schedules.start()
            except _errors.StoreError as exc:  # the store is down: try again after a pause
                self._schedules_error: BaseException = exc
                return False
            except _errors.FluxoError as exc:
                log.error(
                    "worker %s: a schedule cannot start: %s; the worker goes on with the "
                    "other schedules and runs, and tries again when it restarts",
                    self.id,
                    exc,
                )
            self._schedules_started = True
            self._schedules.succeeded()
        return True

    def _pause(self, seconds: float) -> None:
        """Wait before the next claim after a failed one (``stop()`` ends it early)."""
        self._stopping.wait(seconds)

    def _idle(self, names: frozenset[str], token: object) -> None:
        """Sleep until the store reports a change or the next timer is due.

        Changes of the runs whose waits our threads hold do not count: those
        threads take their runs back themselves.
        """
        wait = self.idle_timeout
        try:
            due = self.engine.store.next_wake(
                names, now=self.engine.clock(), queues=self.served.queues
            )
        except _errors.StoreError as exc:
            self._wakes.failed(exc)  # the wait is idle_timeout at most, as it is anyway
            due = None
        else:
            self._wakes.succeeded()
        if self._admit_wake is not None:
            due = self._admit_wake if due is None else min(due, self._admit_wake)
        if due is not None:
            wait = min(wait, max(due - self.engine.clock(), 0.005))
        self.engine.store.wait_for_change(None, wait, since=token, ignoring=self._holding)

    # -- execution slots -----------------------------------------------------------------

    def _count(self, state: str) -> int:
        return sum(entry.state == state for entry in self._inflight.values())

    def _executing(self) -> dict[str, int]:
        """How many runs of each queue have an execution slot (for ``worker_concurrency``)."""
        if not self.served.local:
            return {}
        with self._slots:
            executing = [e.queue for e in self._inflight.values() if e.state == _EXECUTING]
        return dict(collections.Counter(executing))

    def _begin_claim(self) -> int:
        """Wait until execution slots are free; how many a claim may fill (0: stopping).

        Until the claim's dispatch, those slots are the claim's: a held wait woken
        meanwhile waits for the dispatch, which serves it first.
        """
        with self._slots:
            while not self._stopping.is_set():
                free = self.concurrency - self._count(_EXECUTING)
                if free > 0:
                    self._claiming = True
                    return free
                self._slots.wait(self.idle_timeout)
            return 0

    def _dispatch(self, pool: ThreadPoolExecutor, runs: list[history.RunInfo]) -> None:
        """Start the claimed runs at once, each in a free slot, and end the claim.

        A run one of our threads still has is not started again: a thread that
        holds its wait takes the slot and goes on, one that is unwinding executes
        it again once done (``_execute_again``). Never two executions at once.
        Held waits woken during the claim get their slots first; a claimed run
        left without one is released at once (before those waits take their runs
        back), for any worker to claim, so the worker never holds more leases
        than it has slots.
        """
        started: list[str] = []
        left_over: list[str] = []
        with self._slots:
            for run in runs:
                entry = self._inflight.get(run.id)
                if entry is not None and entry.state == _EXECUTING:
                    context = entry.context
                    if context is not None and context.shared.holding:
                        entry.handed = True  # its thread is taking it back from a hold
                    else:
                        self._reclaimed.add(run.id)  # its thread has it, or runs it again
                elif entry is not None:  # held or letting go: that thread goes on with it
                    entry.state = _EXECUTING
                    self._reclaimed.add(run.id)
                    self._wanting.discard(run.id)
            for run in runs:
                if run.id in self._inflight:
                    continue
                wanted = sum(self._inflight[i].state == _HOLDING for i in self._wanting)
                if self._count(_EXECUTING) + wanted >= self.concurrency:
                    left_over.append(run.id)
                else:
                    self._inflight[run.id] = _Entry(run.queue)
                    self._heartbeat.track(run.id)  # renewed from now on
                    started.append(run.id)
        for run_id in left_over:
            try:
                self.engine.store.release(self.id, run_id, now=self.engine.clock())
            except _errors.StoreError as exc:
                log.warning("run %s: %s; its lease expires and it is claimed again", run_id, exc)
        with self._slots:
            for run_id in sorted(self._wanting):
                entry = self._inflight.get(run_id)
                if entry is not None and entry.state == _HOLDING and self._takes_slot(entry):
                    entry.state = _EXECUTING
            self._wanting.clear()
            self._claiming = False
            self._slots.notify_all()
        for run_id in started:
            future = pool.submit(self._execute, run_id)
            self._futures.add(future)
            future.add_done_callback(self._execution_done)

    def _takes_slot(self, entry: _Entry) -> bool:
        """Whether a held run may take a free slot, within its queue's ``worker_concurrency``."""
        free = self._count(_EXECUTING) < self.concurrency
        if not free or entry.queue not in self.served.local:
            return free
        executing = sum(
            e.state == _EXECUTING and e.queue == entry.queue for e in self._inflight.values()
        )
        return self.served.has_room(entry.queue, {entry.queue: executing})

    def enter_hold(self, run_id: str) -> bool:
        """:class:`~fluxo._leases.HoldSlots`: hold the run's wait, freeing its slot."""
        with self._slots:
            entry = self._inflight.get(run_id)
            if (
                entry is None
                or self._stopping.is_set()
                or run_id in self._reclaimed  # claimed for us meanwhile: it is due now
                or self._count(_HOLDING) >= self.holds
            ):
                return False
            entry.state = _HOLDING
            self._slots.notify_all()
            return True

    def leave_hold(self, run_id: str, *, resume: bool) -> bool:
        """:class:`~fluxo._leases.HoldSlots`: end the hold; True if the run has a slot."""
        with self._slots:
            entry = self._inflight.get(run_id)
            if entry is None:
                return False
            if resume and entry.state == _HOLDING and not self._stopping.is_set():
                if self._claiming:  # the free slots are the claim's: its dispatch decides
                    self._wanting.add(run_id)
                    self._slots.wait_for(
                        lambda: run_id not in self._wanting or self._stopping.is_set()
                    )
                    self._wanting.discard(run_id)
                elif self._takes_slot(entry):
                    entry.state = _EXECUTING
            if entry.state == _HOLDING:
                entry.state = _LEAVING
                self._slots.notify_all()
            slot = entry.state == _EXECUTING and not self._stopping.is_set()
            if resume and slot:
                # The thread takes the run back itself, and its take-back takes over any
                # lease the claim loop took for it so far: nothing to execute again.
                self._reclaimed.discard(run_id)
                entry.handed = False
            elif not resume and entry.handed:
                entry.handed = False  # the hold let go of a run leased to us: run it again
                self._reclaimed.add(run_id)
            return slot

    # -- executing -----------------------------------------------------------------------

    def _execute(self, run_id: str) -> None:
        latest: list[_executor.RunContext] = []

        def track(context: _executor.RunContext) -> None:
            latest[:] = [context]
            with self._slots:
                entry = self._inflight.get(run_id)
                if entry is not None:
                    entry.context = context
            if self._stopping.is_set() and self._draining_expired:
                context.shared.stop_requested.set()

        try:
            while True:
                outcome = self.engine.runner.execute_claimed(
                    run_id,
                    self.id,
                    heartbeat=self._heartbeat,
                    hold_window=self.sticky,
                    context_hook=track,
                    slots=self,
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
        except BaseException:
            self._leave(run_id)  # the thread's death is reported as its work ends
            raise
        self._leave(run_id)

    def _leave(self, run_id: str) -> None:
        """The thread is done with the run: its slot (or hold place) and lease renewal end."""
        with self._slots:
            self._inflight.pop(run_id, None)
            self._reclaimed.discard(run_id)
            self._heartbeat.forget(run_id)
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
        thread, which executes it again, in the slot the claim gave it. When the
        execution took the run back itself (a held wait), its later status write
        cleared that lease: nothing to do. The run leaves ``_inflight`` in the same
        step as the last look at ``_reclaimed``, so a claim made after that is
        executed by the loop, never dropped.
        """
        while True:
            with self._slots:
                if run_id not in self._reclaimed:
                    self._inflight.pop(run_id, None)
                    self._heartbeat.forget(run_id)
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
                for entry in self._inflight.values():
                    if entry.context is not None and entry.context.shared.holding:
                        entry.context.shared.stop_requested.set()  # its wait is recorded
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
                for entry in self._inflight.values():
                    if entry.context is not None:
                        entry.context.shared.stop_requested.set()

    def _report_unknown(self) -> None:
        """Log, once per run, runnable runs of workflows this worker does not know."""
        try:
            runs = self.engine.store.list_runs(statuses=[history.RunStatus.PENDING], limit=100)
        except _errors.StoreError as exc:
            self._unknowns.failed(exc)  # looked for again in a minute, as always
            return
        self._unknowns.succeeded()
        for run in runs:
            known = run.workflow in self.engine.workflow_names
            if not known and run.id not in self._warned_unknown:
                self._warned_unknown.add(run.id)
                log.warning(
                    "run %s is of workflow %r, which this worker does not know; leaving it "
                    "for a worker that does (%s)",
                    run.id,
                    run.workflow,
                    _names.unknown_workflow_hint(run.workflow),
                    extra={"fluxo_run_id": run.id},
                )

    def process_one(self) -> int:
        """Claim and execute, in this thread, every run runnable now; return how many ran."""
        count = 0
        names = self.engine.workflow_names
        if not self._start_schedules():
            raise self._schedules_error
        with self._heartbeat:
            while True:
                if self.served.named:
                    self.served.admit(self.engine.store, self.engine.clock)
                now = self.engine.clock()
                runs = self.engine.store.claim(
                    self.id,
                    names,
                    now=now,
                    lease_until=now + self.lease,
                    limit=1,
                    queues=self.served.queues,
                )
                if not runs:
                    return count
                try:
                    self.engine.runner.execute_claimed(
                        runs[0].id, self.id, heartbeat=self._heartbeat
                    )
                except _errors.UnknownWorkflowError as exc:
                    log.warning("%s", exc)
                count += 1
                self._raise_if_died()
