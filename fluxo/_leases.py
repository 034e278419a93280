"""Leases: the heartbeat that renews them, and the holds that take a run back after a wait.

A run executes only while its executor holds the run's lease. The
:class:`Heartbeat` renews the leases of the runs it is given, every
``lease / 3`` seconds, and in between reads their records for cancellations and
for a lease another worker took; it tells each execution through its shared
state (:class:`fluxo._executor.SharedState`).

A :class:`RunHolder` holds a short recorded wait in the execution's thread: the
run's lease is cleared by the wait's record, and when the wait is over the holder
takes the run back: it leases the run again and checks that its history is still
the one the execution knows, so the execution goes on without replaying. A store
that offers ``take_back`` (:class:`TakesBack`, the SQL store) does that in one
operation; with any other, the holder reads the run (``Store.get_run``), leases it
(``Store.claim_run``) and reads its history and signals (``Store.load``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import ClassVar, NamedTuple, Protocol, runtime_checkable

from fluxo import _errors, _executor, _watch, history, stores

log = logging.getLogger(__name__)

CHECK_INTERVAL = 0.5
"""Seconds between a heartbeat's reads of the cancel flags of the runs it executes."""
HOLD_SLICE = 0.5
"""The longest a held wait waits at once: it then reads its run (a change it did not
hear of) and sees whether its worker is stopping."""

DEAD_AFTER = 2.0
"""Seconds without a liveness beat after which a worker is dead and its runs are freed."""


class LeaseHost(Protocol):
    """Where a heartbeat finds its store and clock (an engine or a runner)."""

    @property
    def store(self) -> stores.Store:
        """The store the leases are in."""
        ...

    @property
    def clock(self) -> Callable[[], float]:
        """Seconds since the epoch."""
        ...


class Heartbeat:
    """Renews the leases of running workflows and delivers their cancellations.

    One background thread per heartbeat renews every ``lease / 3`` seconds, and
    in between, about every ``CHECK_INTERVAL`` seconds while runs execute, reads
    their records (``Store.get_runs``, one cheap read, no write). A run whose
    cancellation was requested is told to raise ``fluxo.Cancelled`` at its next
    durable call; a run whose lease was lost is told to stop there.

    A worker also hands it the runs it claimed (``track``), so their leases are
    renewed from the moment of the claim, before their execution has begun.

    With ``dead_after`` (a worker's), it also beats for the owner's liveness
    (``Store.beat_worker``) about every ``dead_after / 4`` seconds: other workers
    that stop beating for ``dead_after`` seconds are dead, and the beat frees their
    runs for any worker to claim at once, without waiting for their leases. The
    first beat, before the worker claims anything, frees the runs still leased
    under its own id (an earlier process with that id died). A worker frees
    others' runs only after ``dead_after`` seconds of unbroken beats, so after an
    outage of the store every live worker has beaten again before anyone reaps.

    Its thread, ``fluxo-heartbeat-<owner>``, is watched (:mod:`fluxo._watch`): if
    it dies, every execution it renewed is told to stop at its next durable call,
    so none runs on without its lease, and so is every execution handed to it
    afterwards; then ``on_death`` is told (a worker stops).
    """

    logger: ClassVar[logging.Logger] = log
    """Where its lines go (a worker's heartbeat logs as the worker)."""

    def __init__(
        self,
        host: LeaseHost,
        owner: str,
        lease: float,
        *,
        on_death: _watch.OnDeath | None = None,
        dead_after: float | None = None,
    ) -> None:
        self.host = host
        self.owner = owner
        self.lease = lease
        self.dead_after = dead_after
        self._beats_since: float | None = None
        """When the liveness beats last began to succeed (None: the last one failed)."""
        self._restarted = True
        self.on_death = on_death
        self.death: BaseException | None = None
        """What killed the heartbeat's thread, if it died."""
        self._contexts: dict[str, _executor.SharedState] = {}
        """The executions it renews, by run id: what it shares with each."""
        self._claimed: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renewals = _watch.Trouble(
            f"worker {owner}: renewing leases", level=logging.WARNING, logger=self.logger
        )
        self.checks = _watch.Trouble(
            f"worker {owner}: reading the records of its runs",
            level=logging.DEBUG,
            first=CHECK_INTERVAL,
            logger=self.logger,
        )
        self._check_after = 0.0  # while reads fail, the next one waits its backoff
        self.liveness = _watch.Trouble(
            f"worker {owner}: beating for its liveness", level=logging.WARNING, logger=self.logger
        )

    @property
    def thread_name(self) -> str:
        """The name of the heartbeat's thread."""
        return f"fluxo-heartbeat-{self.owner}"

    def __enter__(self) -> Heartbeat:
        self._stop.clear()
        if self.dead_after is not None:
            self._restarted = True
            self._beats_since = None
            self.live()  # before the owner claims: its own id's old runs are freed first
            self._restarted = False  # tried once: a later beat would free our own claims
        self._thread = _watch.start(self.thread_name, self._loop, self._died)
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
        if self.dead_after is not None:
            try:
                self.host.store.forget_worker(self.owner)
            except _errors.StoreError as error:
                self.logger.warning(
                    "worker %s: %s; its liveness record stays until another worker reaps it",
                    self.owner,
                    error,
                )

    def add(self, run_id: str, shared: _executor.SharedState) -> None:
        """Start renewing this run's lease and watching its record for its execution.

        A heartbeat that died renews nothing: the execution is told to stop at once.
        """
        with self._lock:
            self._contexts[run_id] = shared
            dead = self.death is not None
        if dead:
            shared.stop_requested.set()

    def _died(self, name: str, exc: BaseException) -> None:
        """The heartbeat's thread died: stop what it renewed, then tell the owner."""
        with self._lock:
            self.death = exc
            executing = list(self._contexts.items())
        for run_id, shared in executing:
            self.logger.warning(
                "run %s: its lease is no longer renewed; stopping at its next durable call",
                run_id,
                extra={"fluxo_run_id": run_id},
            )
            shared.stop_requested.set()
        if self.on_death is not None:
            self.on_death(name, exc)

    def remove(self, run_id: str, shared: _executor.SharedState) -> None:
        """Stop watching this run (if ``shared`` is still the execution watched)."""
        with self._lock:
            if self._contexts.get(run_id) is shared:
                del self._contexts[run_id]

    def track(self, run_id: str) -> None:
        """Renew the lease of a run just claimed, until :meth:`forget`."""
        with self._lock:
            self._claimed.add(run_id)

    def forget(self, run_id: str) -> None:
        """Stop renewing a claimed run's lease (its thread is done with it)."""
        with self._lock:
            self._claimed.discard(run_id)

    def _snapshot(self) -> list[tuple[str, _executor.SharedState, int]]:
        with self._lock:
            return [(i, s, s.lease_epoch) for i, s in self._contexts.items()]

    def beat(self) -> None:
        """Renew once now."""
        snapshot = self._snapshot()
        with self._lock:
            ids = {run_id for run_id, _, _ in snapshot} | self._claimed
        if not ids:
            return
        host = self.host
        try:
            held = host.store.renew(self.owner, list(ids), lease_until=host.clock() + self.lease)
        except _errors.StoreError as exc:
            self.renewals.failed(exc)  # renewed again at the next beat, whatever the backoff
            return
        self.renewals.succeeded()
        self._tell(snapshot, {run_id: (run_id in held, held.get(run_id, False)) for run_id in ids})

    def live(self) -> None:
        """Beat once for the owner's liveness; free the runs of workers that died."""
        dead_after = self.dead_after
        if dead_after is None:
            return
        clock = self.host.clock
        now = clock()
        since = self._beats_since
        try:
            freed = self.host.store.beat_worker(
                self.owner,
                now=now,
                alive_until=now + dead_after,
                reap=since is not None and now - since >= dead_after,
                restarted=self._restarted,
            )
        except _errors.StoreError as exc:
            self.liveness.failed(exc)  # beaten again at the next tick, whatever the backoff
            self._beats_since = None
            return
        self.liveness.succeeded()
        if since is None:
            self._beats_since = now
        if freed:
            self.logger.info(
                "worker %s: freed %d run(s) of workers that stopped beating (%s)",
                self.owner,
                len(freed),
                ", ".join(sorted(freed)[:10]) + (", ..." if len(freed) > 10 else ""),
            )

    def check(self) -> None:
        """Read the records of the runs executing now; tell them of cancellations."""
        snapshot = self._snapshot()
        if not snapshot or self.checks.clock() < self._check_after:
            return
        try:
            runs = self.host.store.get_runs([run_id for run_id, _, _ in snapshot])
        except _errors.StoreError as exc:
            self._check_after = self.checks.clock() + self.checks.failed(exc)
            return
        self.checks.succeeded()
        found = {}
        for run_id, _, _ in snapshot:
            run = runs.get(run_id)
            ours = run is not None and run.lease_owner == self.owner
            found[run_id] = (ours, run is not None and run.cancel_requested)
        self._tell(snapshot, found)

    def _tell(
        self,
        snapshot: list[tuple[str, _executor.SharedState, int]],
        found: dict[str, tuple[bool, bool]],
    ) -> None:
        """Pass what a read found, ``run id -> (still ours, cancel requested)``, on."""
        for run_id, shared, epoch in snapshot:
            if shared.lease_released or shared.lease_epoch != epoch:
                continue  # it finished, suspended or took its run back since the snapshot
            ours, cancelled = found.get(run_id, (True, False))
            if not ours:
                self.logger.warning(
                    "run %s: lease lost to another worker; stopping at its next durable call",
                    run_id,
                    extra={"fluxo_run_id": run_id},
                )
                shared.stop_requested.set()
            elif cancelled:
                shared.cancel_requested.set()

    def _loop(self) -> None:
        every = self.lease / 3
        tick = min(CHECK_INTERVAL, every)
        if self.dead_after is not None:
            tick = min(tick, self.dead_after / 4)
        renew_at = time.monotonic() + every
        while not self._stop.wait(tick):
            self.live()
            if time.monotonic() + tick / 2 >= renew_at:  # the tick nearest the renewal
                renew_at = time.monotonic() + every
                self.beat()
            else:
                self.check()


class HoldSlots(Protocol):
    """How a worker lends its execution slots to the waits its threads hold.

    A held wait gives its execution slot back while it holds (the worker may
    refuse the hold when it holds as many as it allows), and asks for a slot again
    when it is woken: it goes on in its thread only if it gets one.
    """

    def enter_hold(self, run_id: str) -> bool:
        """Trade the run's execution slot for a hold place; False: unwind instead."""
        ...

    def leave_hold(self, run_id: str, *, resume: bool) -> bool:
        """Give the hold place up; True when the run has an execution slot again.

        With ``resume`` the run takes a free slot if there is one; without, it only
        keeps one the worker gave it meanwhile (by claiming the run for it).
        """
        ...


class TakenBack(Protocol):
    """What taking a held run back found (see :class:`TakesBack`)."""

    @property
    def run(self) -> history.RunInfo:
        """The run as it stands, leased to the worker when ``taken``."""
        ...

    @property
    def taken(self) -> bool:
        """The worker holds the run's lease now."""
        ...

    @property
    def length(self) -> int:
        """The length of the run's history, when ``taken``."""
        ...

    @property
    def signals(self) -> Sequence[history.Signal]:
        """The signals sent after the one ``after`` names, oldest first, when ``taken``."""
        ...


@runtime_checkable
class TakesBack(Protocol):
    """A store that takes a held run back in one operation (the SQL store's ``take_back``).

    Not part of the store contract: :class:`RunHolder` does the same with
    ``get_run``, ``claim_run`` and ``load`` on a store without it.
    """

    def take_back(
        self,
        worker_id: str,
        run_id: str,
        *,
        now: float,
        lease_until: float,
        cancels: bool,
        due: bool,
        after: int,
    ) -> TakenBack:
        """Lease the run to ``worker_id`` if it was woken; read it, its length and new signals.

        Leased as by ``claim_run`` when the run is active, has no lease or
        ``worker_id``'s, and was woken: ``wake_requested``, ``worker_id``'s lease,
        ``cancel_requested`` (with ``cancels``) or ``due``. The signals read are
        those whose ids are above ``after`` (the newest the execution knows; -1:
        every one). The read is made after the lease was taken, so it holds every
        signal whose wake-up the lease took.
        """
        ...


class _Found(NamedTuple):
    run: history.RunInfo
    taken: bool
    length: int
    signals: tuple[history.Signal, ...]


def take_back_in_steps(
    store: stores.Store,
    worker_id: str,
    run_id: str,
    *,
    now: float,
    lease_until: float,
    cancels: bool,
    due: bool,
    after: int,
) -> TakenBack:
    """:meth:`TakesBack.take_back` made of ``get_run``, ``claim_run`` and ``load``.

    A history found damaged once the run is leased counts as changed: its
    ``length`` is -1, so the holder gives the run back and lets go (the worker
    that claims it next fails it).
    """
    run = store.get_run(run_id)
    woken = (
        run.wake_requested
        or run.lease_owner == worker_id
        or (cancels and run.cancel_requested)
        or due
    )
    if not woken or run.status.is_terminal or run.lease_owner not in (None, worker_id):
        return _Found(run, False, 0, ())
    claimed = store.claim_run(worker_id, run_id, now=now, lease_until=lease_until)
    if claimed is None:
        return _Found(run, False, 0, ())  # another worker took it meanwhile
    try:
        state = store.load(run_id)
    except _errors.HistoryCorruptError:
        return _Found(claimed, True, -1, ())
    newer = tuple(signal for signal in state.signals if signal.id > after)
    return _Found(claimed, True, len(state.events), newer)


class RunHolder:
    """Holds an execution's short recorded waits in its thread (a :class:`fluxo._executor.Holder`).

    Args:
        store: the store.
        clock: seconds since the epoch.
        owner: the lease owner (worker id) that takes the run back after the wait.
        lease: the lease length when it does.
        window: the longest wait, in seconds, held in the thread (0: never hold).
        heartbeat: renews the lease while the run executes; a held run is not renewed.
        slots: the worker's execution slots, or None (``engine.run``: no limit).
    """

    def __init__(
        self,
        *,
        store: stores.Store,
        clock: Callable[[], float],
        owner: str,
        lease: float,
        window: float,
        heartbeat: Heartbeat,
        slots: HoldSlots | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.owner = owner
        self.lease = lease
        self.window = window
        self.heartbeat = heartbeat
        self.slots = slots
        self._take_back: Callable[..., TakenBack] = (
            store.take_back
            if isinstance(store, TakesBack)
            else functools.partial(take_back_in_steps, store)
        )

    def hold(self, run: _executor.HeldRun, until: float, reclaim: bool) -> bool:
        """Wait in the thread until ``until`` or a wake-up, then take the run back.

        Without ``reclaim``, reaching ``until`` with nothing arrived gives up instead.
        The wait gives the worker's execution slot back while it holds, and goes on
        in this thread only if it gets one again (``HoldSlots``); the worker may
        also refuse the hold, when it holds as many waits as it allows.
        """
        slots = self.slots
        shared = run.shared
        if slots is not None and not slots.enter_hold(run.run_id):
            return False
        self.heartbeat.remove(run.run_id, shared)
        shared.holding = True
        resumed = False
        try:
            resumed = self._hold_and_reclaim(run, until, reclaim)
            return resumed
        finally:
            shared.holding = False
            if slots is not None and not resumed:
                slots.leave_hold(run.run_id, resume=False)

    def _woken(self, held: _executor.HeldRun, run: history.RunInfo) -> bool:
        """Something arrived for the held wait: a signal, a cancellation, our own claim."""
        cancel = run.cancel_requested and not held.cancel_delivered
        return run.wake_requested or cancel or run.lease_owner == self.owner

    def _hold_and_reclaim(self, held: _executor.HeldRun, until: float, reclaim: bool) -> bool:
        """Hold until the run is woken or ``until``; True once this thread has it back.

        A change of the run, or the end of a wait that has something to do then,
        goes straight to the take-back, which leases the run only if it was woken:
        so neither costs a read before it. The run is read when the hold begins
        (something may have arrived before it), and after each full slice of the
        wait, in case a change went unnoticed.
        """
        store = self.store
        run_id = held.run_id
        shared = held.shared
        look = True  # read the run: something may have arrived unnoticed
        changed = False  # a change of the run ended the last slice of the wait
        while True:
            if shared.stop_requested.is_set():
                return False
            token = store.change_token(run_id)
            now = self.clock()
            due = reclaim and now >= until
            if changed or due:
                resumed = self._resume(held, now, due)
                if resumed is not None:
                    return resumed
            elif look:
                run = store.get_run(run_id)
                if run.status.is_terminal or run.lease_owner not in (None, self.owner):
                    return False  # another worker has it
                if self._woken(held, run):
                    resumed = self._resume(held, now, due)
                    if resumed is not None:
                        return resumed
            if now >= until:
                return False
            # Slices: a stopping worker asks this thread to let go meanwhile.
            wait = min(until - now, HOLD_SLICE)
            changed = store.wait_for_change(run_id, wait, since=token)
            look = not changed and wait >= HOLD_SLICE

    def _resume(self, held: _executor.HeldRun, now: float, due: bool) -> bool | None:
        """Take an execution slot and the run back; None: nothing arrived, hold on.

        The slot comes first, so the worker never holds more leases than slots. A
        wake-up that turns out to be for nothing gives it back for a hold place.
        """
        run_id = held.run_id
        shared = held.shared
        slots = self.slots
        if slots is not None and not slots.leave_hold(run_id, resume=True):
            return self._no_slot(held, now, due)
        found = self._take_back(
            self.owner,
            run_id,
            now=now,
            lease_until=now + self.lease,
            cancels=not held.cancel_delivered,
            due=due,
            after=held.signals_seen,
        )
        run = found.run
        if not found.taken:
            if due or run.status.is_terminal or run.lease_owner is not None:
                return False  # another worker has it, or it ended
            if self._woken(held, run):
                return False  # woken, but another worker took it meanwhile
            if slots is not None and not slots.enter_hold(run_id):
                return False  # no hold place any more: the run waits in the store
            return None
        if shared.stop_requested.is_set() or found.length != held.next_seq:
            # Stopping, or another worker went on with the run (or its history was damaged).
            shared.holding = False  # letting go: the claim loop may take the run again
            self.store.release(self.owner, run_id, now=self.clock())
            return False
        held.take_signals(found.signals)
        shared.lease_epoch += 1  # first: a heartbeat's read from before is then ignored
        shared.lease_released = False
        if run.cancel_requested:
            shared.cancel_requested.set()
        self.heartbeat.add(run_id, shared)
        return True

    def _no_slot(self, held: _executor.HeldRun, now: float, due: bool) -> bool | None:
        """Every slot of the worker is busy: let the run go back to the store, if it is due.

        Any worker then resumes it. One that is still reserved for this thread (a
        timer's grace) is made ready now. A wake-up for nothing holds on instead, if
        the worker gives the hold place back.
        """
        run = self.store.get_run(held.run_id)
        if not (due or self._woken(held, run)):
            if self.slots is not None and self.slots.enter_hold(held.run_id):
                return None
            return False
        if run.status.is_terminal or run.lease_owner not in (None, self.owner):
            return False
        if run.ready_at is not None and run.ready_at > now:
            held.shared.holding = False  # letting go: the claim loop may take the run
            self._make_ready(held)
        return False

    def _make_ready(self, held: _executor.HeldRun) -> None:
        """Make the held run claimable now: its wait is over, and this thread lets go.

        Its ``ready_at`` still reserves it to this worker (``STICKY_GRACE``): the run
        is leased, then made ``pending`` and ready now in a fenced write that
        records nothing and gives the lease back.
        """
        now = self.clock()
        lease_until = now + self.lease
        leased = self.store.claim_run(self.owner, held.run_id, now=now, lease_until=lease_until)
        if leased is not None:
            held.make_ready(now)
