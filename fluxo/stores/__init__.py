"""The store contract and the URL-based store factory.

A store persists runs and their histories. The contract is domain-level and
small: payloads cross it as opaque bytes, every operation touches one run
(except listing, counting, claiming and admitting), and every method is safe to
call from many threads, processes and machines at once. ``tests/stores/conformance``
is the executable specification; every store passes the same suite.

Times are seconds since the epoch (UTC) taken from the engine's clock and
passed in explicitly, so a test clock can drive a real store. Run ids, workflow
names and worker ids are at most 255 characters (``MAX_ID_LENGTH``), and no name
or id holds a control character or a lone surrogate (``history.name_problem``); the
engine checks both before anything reaches a store.

Errors: a store raises ``StoreUnavailableError`` when it cannot be reached (the
engine tries again later) and ``StoreRejectedError`` when it refuses the data
itself, for good (too large, text it cannot hold); either way it wrote nothing.
Damage found in stored data is ``HistoryCorruptError`` from ``load`` and
``RunInfo.damage`` from ``get_run`` and ``list_runs``, never a raw exception.

Queues: every run is in a queue, named at creation (``RunInfo.queue``). A run of
the default queue (``DEFAULT_QUEUE``, stored as ``""``) is ready as soon as it is
created (or at its delayed start). A run of a named queue is created *awaiting
admission*: ``PENDING``, with ``ready_at = None`` (so no claim takes it) and
``start_at`` set, until :meth:`Store.admit` makes it ready. Which runs to admit,
under the queue's limits, is decided outside the store (``fluxo._queues``), from
:meth:`Store.queued_runs` and a small compare-and-set record per queue
(:meth:`Store.read_queue`, :meth:`Store.write_queue`); the store keeps the runs,
their order and the record.
"""

from __future__ import annotations

from collections.abc import Collection, Container, Mapping, Sequence
from typing import Protocol, runtime_checkable

from fluxo import _errors, _names, _redact, history
from fluxo.stores import _queue_rules

MAX_ID_LENGTH = _names.MAX_ID_LENGTH
"""The longest run id, workflow name or worker id every store accepts."""

KEEPING_PARENTS = history.KEEPING_PARENTS
"""The statuses of a parent run that keep :meth:`Store.purge` from deleting its children."""

DEFAULT_QUEUE = history.DEFAULT_QUEUE
"""The stored name of the default queue, ``""`` (users call it ``"default"``)."""

MAX_QUEUE_STATE = _queue_rules.MAX_QUEUE_STATE
"""The most bytes of state :meth:`Store.write_queue` keeps for one queue (1 MiB)."""


@runtime_checkable
class Store(Protocol):
    """What the engine and its workers need from a database."""

    def create_run(
        self,
        run_id: str,
        workflow: str,
        input: bytes,
        *,
        now: float,
        owner: str | None = None,
        lease_until: float | None = None,
        deadline: float | None = None,
        parent: str | None = None,
        headers: Mapping[str, str] | None = None,
        queue: str = DEFAULT_QUEUE,
        priority: int = 0,
        partition: str | None = None,
        start_at: float | None = None,
    ) -> tuple[history.RunInfo, bool]:
        """Create a run, ready at ``now``, whose history is ``[WorkflowStarted(workflow, input)]``.

        ``deadline`` is stored on the run as given (the executor enforces it).
        ``parent``, the id of the run that starts this one as its child, is stored on
        the run as given. ``headers``, a small mapping of text to text (such as the
        W3C ``traceparent`` of the request that started the run), is stored with the
        run as given and read back as ``RunInfo.headers`` by every read (``None`` or
        empty: none). The store persists them and nothing more: the engine checks
        them before calling.

        ``queue``, ``priority`` and ``partition`` are stored on the run as given
        (``RunInfo.queue``, ``.priority``, ``.partition``). In the default queue
        (``queue == DEFAULT_QUEUE``) the run is ready at ``start_at`` when it is
        given (a delayed start), at ``now`` otherwise, and its ``RunInfo.start_at``
        is ``None``. In a named queue the run is created awaiting admission:
        ``PENDING`` with ``ready_at = None``, so no claim takes it, and
        ``RunInfo.start_at`` set to ``start_at`` (``now`` when not given), until
        :meth:`admit` makes it ready.

        With ``owner`` and ``lease_until``, the new run is created ``RUNNING`` and
        leased to ``owner`` (``engine.run`` executes it inline this way; if that
        process dies, a worker takes it over when the lease expires). Such a run
        starts now in the default queue: with a named ``queue`` or a ``start_at``,
        ``owner`` raises ``ValueError`` and nothing is written.

        Idempotent on ``run_id``: if a run of the same workflow has the id, return
        it unchanged with ``False`` and change nothing: it keeps the ``deadline``,
        the ``parent``, the ``headers``, the ``queue``, the ``priority``, the
        ``partition`` and the ``start_at`` it was created with, whatever this call
        passed. Raises
        ``RunIdConflictError`` if a run of another workflow has it. Returns
        ``(run, created)``.
        """
        ...

    def append(
        self,
        run_id: str,
        expected_seq: int,
        events: Sequence[history.Event],
        *,
        now: float,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
        unless_cancel_requested: bool = False,
    ) -> None:
        """Record ``events`` at positions ``expected_seq, expected_seq + 1, ...``, atomically.

        Fenced: ``expected_seq`` must equal the current length of the history. If
        any of those positions is already recorded (or would leave a gap), write
        nothing and raise ``SequenceConflictError``. When ``status`` is given, the same
        atomic write sets the run's status, ``ready_at`` and ``updated_at = now``, and
        clears its lease and its ``start_at`` (a run awaiting admission that is ended
        this way, such as one cancelled before it began, awaits no more). One
        exception keeps wake-ups from being lost: when ``status`` is ``WAITING`` and
        the run's ``wake_requested`` flag is set (a signal or a cancellation arrived
        since it was claimed), the run is made ``PENDING`` with ``ready_at = now``
        instead. ``cancel_requested`` alone does not: once a claim has taken the
        wake-up, the executor knows of the cancellation, and a cancelled run may
        still wait in its ``finally:`` blocks.

        With ``unless_cancel_requested``, the write is also refused, writing
        nothing, when the run's ``cancel_requested`` flag is set, checked in the
        same atomic operation: ``CancelPendingError`` is raised (after the fence:
        a taken position still raises ``SequenceConflictError``). The executor
        records a run's completion this way, so that a cancellation accepted by
        ``request_cancel`` before the end is recorded is never lost.
        Raises ``RunNotFoundError`` for an unknown run.
        """
        ...

    def load(self, run_id: str) -> history.RunState:
        """Return the run, its whole history and all its signals (oldest first) in one read.

        ``recorded_at`` holds, for each event, the ``now`` of the call that wrote it
        (``create_run``, ``append`` or ``reopen``). Raises ``RunNotFoundError``, and
        ``HistoryCorruptError`` when the stored history is damaged (checked with
        ``history.read_events``: positions from 0 without gaps, known kinds) or the
        run's record is (``RunInfo.damage``).
        """
        ...

    def get_run(self, run_id: str) -> history.RunInfo:
        """Return the run without its history. Raises ``RunNotFoundError``.

        A damaged record is returned with ``damage`` set (see ``history.RunInfo``).
        """
        ...

    def get_runs(self, run_ids: Collection[str]) -> dict[str, history.RunInfo]:
        """Return these runs without their histories, by id, in one cheap read.

        Ids of runs that do not exist are left out. It only reads, so a worker may
        call it often: its heartbeat looks for cancellations of the runs it
        executes about twice a second this way.
        """
        ...

    def claim(
        self,
        worker_id: str,
        workflows: Collection[str],
        *,
        now: float,
        lease_until: float,
        limit: int,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        """Lease up to ``limit`` runnable runs of the given workflows to ``worker_id``.

        Runnable: active status, ``ready_at <= now``, and no lease or an expired
        one (``lease_until < now``); a run awaiting admission has no ``ready_at``,
        so it is never claimed. Claimed runs become ``RUNNING`` with the
        lease set and ``wake_requested`` cleared; the oldest ``ready_at`` goes
        first. Two concurrent claims never return the same run. A run that was
        still ``RUNNING`` (its lease expired, or ``beat_worker`` ended it) is taken
        over from an execution that never ended: the same atomic write adds 1 to
        its ``recoveries``, and the run returned shows the new count.

        With ``queues``, only runs whose ``queue`` is one of them are claimed
        (``DEFAULT_QUEUE``, ``""``, is the default queue; an empty collection
        claims nothing); ``None``: runs of any queue.
        """
        ...

    def claim_run(
        self, worker_id: str, run_id: str, *, now: float, lease_until: float
    ) -> history.RunInfo | None:
        """Lease one particular active run to ``worker_id``, whatever its ``ready_at``.

        Used by a worker that held a short wait in its thread to take its run back.
        Succeeds (returning the run, now ``RUNNING`` and leased, with ``wake_requested``
        cleared) when the run is active and has no live lease of another worker;
        otherwise returns ``None`` and changes nothing. Taking a run that is still
        ``RUNNING`` under another owner (whose lease is gone) adds 1 to its
        ``recoveries``, as ``claim`` does; taking back one's own lease does not.
        A run awaiting admission is never taken this way (``None``): only
        :meth:`admit` makes it ready.
        """
        ...

    def next_wake(
        self, workflows: Collection[str], *, now: float, queues: Collection[str] | None = None
    ) -> float | None:
        """When the next run of these workflows becomes claimable, or ``None`` if none will.

        Looks at active runs with a ``ready_at`` (so not at runs awaiting
        admission); a run whose lease is still live counts at
        ``max(ready_at, lease_until)``. A result ``<= now`` means a claim would
        find something now. ``queues`` keeps the runs of those queues, as in
        :meth:`claim` (``None``: any queue).
        """
        ...

    def send_signal(
        self, run_id: str, name: str, payload: bytes, *, now: float, key: str | None = None
    ) -> bool:
        """Store a signal for an active run and wake it, atomically.

        The signal is kept until the run consumes it. The run's ``wake_requested``
        flag is set and, if it is ``WAITING``, it becomes ``PENDING`` with
        ``ready_at = now`` (a run awaiting admission keeps awaiting it). ``key``
        makes sending idempotent: a second signal with the same key to the same run
        is dropped and ``False`` returned.

        Raises:
            RunNotFoundError: no such run.
            RunStateError: the run has finished, so nothing would ever read the signal.
        """
        ...

    def renew(
        self, worker_id: str, run_ids: Collection[str], *, lease_until: float
    ) -> dict[str, bool]:
        """Extend the leases ``worker_id`` still holds.

        Returns the ids it still holds, each mapped to the run's ``cancel_requested``
        flag, so a heartbeat also delivers cancellations to running workflows.
        """
        ...

    def beat_worker(
        self,
        worker_id: str,
        *,
        now: float,
        alive_until: float,
        reap: bool = True,
        restarted: bool = False,
    ) -> list[str]:
        """Record that a worker is alive until ``alive_until``; free the runs of dead ones.

        A worker that beats is alive until the ``alive_until`` of its last beat.
        With ``reap``, every other worker whose ``alive_until`` is before ``now`` is
        dead: the lease of each active run still leased to it ends at ``now`` (its
        owner stays until a claim replaces it), so any worker may claim the run at
        once, and the dead worker's record is removed. With ``restarted`` (a worker's
        first beat), the live leases held under ``worker_id`` itself end the same
        way: they are an earlier process's that used the same id.

        Owners that never beat (``Engine.run`` executing in place) are never freed
        this way; their leases expire. Returns the ids of the runs freed; waiters
        hear of them as of any change.
        """
        ...

    def forget_worker(self, worker_id: str) -> None:
        """Remove a worker's liveness record: it stops, and its runs are given back."""
        ...

    def release(self, worker_id: str, run_id: str, *, now: float) -> None:
        """Give back a lease ``worker_id`` holds, leaving the run ready to claim again.

        A lease held by someone else, or none at all, is left as it is.
        """
        ...

    def request_cancel(self, run_id: str, *, now: float) -> history.RunInfo:
        """Flag an active run as cancelled (and woken), and make it ready if it waits.

        Sets ``cancel_requested`` and ``wake_requested``; a ``WAITING`` run becomes
        ``PENDING`` with ``ready_at = now``; a run awaiting admission keeps awaiting
        it (the engine ends a run that has not begun itself). The history is not touched: the
        executor records ``CancelRequested`` at the run's next durable call, so
        the position is deterministic. Returns the run
        as it now stands; a finished run is returned unchanged. Raises
        ``RunNotFoundError``.
        """
        ...

    def reopen(self, run_id: str, *, now: float) -> history.RunInfo:
        """Append ``RunRetried`` to a failed, dead or cancelled run's history; make it ready.

        ``engine.retry`` reopens a failed or dead run, ``engine.resume`` a cancelled
        one; which runs each may reopen is the engine's to check, not the store's.
        Atomic with the status check; clears ``cancel_requested`` and sets
        ``recoveries`` back to 0. The run keeps its ``queue``, ``priority`` and
        ``partition``: in the default queue it is ready at ``now``; in a named queue
        it awaits admission again (``ready_at = None``, ``start_at = now``), so a
        retry never bypasses its queue's limits. Raises ``RunStateError`` when the
        run is not failed, dead or cancelled (``history.REOPENABLE_STATUSES``),
        ``RunNotFoundError`` when there is no such run.
        """
        ...

    def queued_runs(
        self, queue: str, *, now: float, limit: int
    ) -> tuple[list[history.RunInfo], float | None]:
        """Return the runs of ``queue`` that may be admitted now, in order, and the next start.

        The runs: up to ``limit`` runs of ``queue`` awaiting admission (active, with
        a ``start_at``; their ``cancel_requested`` flag does not matter) whose
        ``start_at <= now``, in admission order: ``priority`` highest first, then
        ``start_at``, ``created_at`` and ``id`` lowest first. The next start: the
        earliest ``start_at`` after ``now`` of the runs of ``queue`` awaiting
        admission (``None``: there is none), whatever ``limit`` is. No run of the
        default queue awaits admission, so for it the answer is ``([], None)``.

        It only reads, and reads an index of the runs awaiting admission in each
        queue (never a pass over every run), so workers may call it at every round.
        """
        ...

    def admit(self, run_ids: Collection[str], *, now: float) -> list[str]:
        """Make each of these runs that still awaits admission ready to claim; return their ids.

        Each such run becomes ``PENDING`` with ``ready_at = now`` and
        ``start_at = None``, whatever its ``start_at``; from then on it is claimed as
        any run is. The other ids are left as they are: unknown runs, runs of the
        default queue, runs already admitted and finished runs (a cancelled run is
        never admitted); so admitting the same ids again admits nothing twice.
        Returns the ids admitted, each once, in any order. The store does not look at the queue's
        limits: the caller admits the runs it chose under its queue's record
        (:meth:`write_queue`). Waiters hear of each run admitted as of any change.
        """
        ...

    def read_queue(self, queue: str) -> tuple[int, bytes]:
        """Return the queue's record: its version and the state last written with it.

        ``(0, b"")`` for a queue whose record was never written. The state is
        opaque bytes (the admission state ``fluxo._queues`` keeps); the store never
        reads it.
        """
        ...

    def write_queue(self, queue: str, version: int, state: bytes) -> bool:
        """Replace the queue's record if it is still at ``version`` (compare and set).

        Atomically: when the stored version equals ``version`` (0 for a record
        never written), ``state`` is stored with the version ``version + 1`` and
        ``True`` returned; otherwise nothing is written and ``False`` returned. Of
        concurrent writers that read the same version, exactly one succeeds. A
        ``state`` longer than ``MAX_QUEUE_STATE`` bytes raises ``StoreRejectedError``
        and writes nothing, whatever the version. Records are kept for the store's
        life: :meth:`purge` leaves them.
        """
        ...

    def list_runs(
        self,
        *,
        statuses: Collection[history.RunStatus] | None = None,
        workflows: Collection[str] | None = None,
        created_after: float | None = None,
        created_before: float | None = None,
        limit: int = 100,
        id_prefix: str | None = None,
        queues: Collection[str] | None = None,
    ) -> list[history.RunInfo]:
        """Return up to ``limit`` runs matching every given filter, newest ``created_at`` first.

        ``statuses``, ``workflows`` and ``queues`` keep the runs with one of the given
        values (an empty collection matches nothing; ``DEFAULT_QUEUE``, ``""``, is the
        default queue). ``created_after`` keeps the runs created at
        or after that time, ``created_before`` those created strictly before it, so
        consecutive ranges ``[t0, t1)``, ``[t1, t2)`` list each run once. A run whose
        stored status is damaged is listed (with ``damage`` set) but matches no
        ``statuses`` filter.

        ``id_prefix`` keeps the runs whose id starts with it, compared character for
        character: case counts, and ``%``, ``_``, ``*``, backslashes and the like
        stand for themselves (``""`` or ``None``: every run). The engine checks it
        as it checks run ids (text, at most ``MAX_ID_LENGTH`` characters, no control
        character or lone surrogate). The stores that keep runs by id read the
        prefix as a range of that index, in code point order:

        * memory: a pass over the runs, as for the other filters;
        * SQL: ``id >= prefix AND id < successor`` on the primary key (never
          ``LIKE``). On PostgreSQL the range is read through the key's index when
          the column's collation orders by code point (``C``, ``POSIX``,
          ``C.UTF-8``, the builtin provider); under a linguistic collation (such
          as ``en_US.UTF-8`` or ICU), whose order does not keep the strings of
          one prefix together, the range is compared under ``COLLATE "C"``, which
          is exact but which the key's index cannot serve: the runs are then found
          through the creation-time index (or the other filters'), newest first,
          until ``limit`` match;
        * Redis: no index keeps runs by id, so the ``created`` index is read newest
          first as for every listing, and only the records of the ids that match
          are fetched: the ids of the time range are read until ``limit`` runs
          match, so the cost grows with the runs created in that range, not with
          those that match;
        * MongoDB: an anchored regular expression on ``_id`` with the prefix
          escaped, which the ``_id`` index serves as a range.
        """
        ...

    def count_runs(self) -> dict[tuple[str, history.RunStatus], int]:
        """Return how many runs each workflow has in each status, over every run in the store.

        Keyed by ``(workflow, status)``; pairs without runs are left out, so an empty
        store gives ``{}``. Each run counts under the status its ``RunInfo`` reads, so
        one whose stored status is damaged counts as ``FAILED`` (see
        ``history.RunInfo.damage``). Made for metrics gauges, which call it at every
        scrape: it only reads, in one call, the runs' records and not their
        histories. No store keeps the counts ready, though, so its cost grows with
        the number of runs kept (``purge`` bounds it):

        * memory: one pass over the runs, under the store's lock;
        * SQL: one ``SELECT workflow, status, count(*) ... GROUP BY workflow,
          status``, a scan of the runs table (no index holds both columns);
        * Redis: no index keeps runs by status, so every run's record is read: the
          ids from each bucket's ``created`` index in batches (``ZSCAN``), and the
          workflow and status of each batch in one pipeline, so about two round
          trips per thousand runs, plus tens of microseconds of client time per run;
        * MongoDB: one aggregation (``$group``), a scan of the run documents (which
          also hold the latest events of their histories).

        The counts are a snapshot of one moment in memory and on the SQL stores; on
        Redis and MongoDB a run that changes while they are read counts as it stood
        when read.
        """
        ...

    def purge(
        self,
        *,
        finished_before: float,
        statuses: Collection[history.RunStatus],
        workflows: Collection[str] | None = None,
        limit: int,
        dry_run: bool = False,
    ) -> int:
        """Delete up to ``limit`` finished runs, each with its history and signals; return how many.

        A run is deleted when all of these hold:

        * it has finished (completed, failed, cancelled or dead) with one of ``statuses``:
          a run that has not finished is never deleted, whatever ``statuses`` says;
        * it was created and last updated (it finished) before ``finished_before``;
        * its workflow is one of ``workflows`` (``None``: any);
        * it has no parent, or its parent is gone or ended completed or cancelled:
          a parent that is active, failed or dead (such a run can be retried, and
          then reads its children), keeps its children;
        * it did not continue as new, or the run it continued in is gone: a chain
          goes from its latest run backwards, so following it from its first id
          (:func:`latest_run`) never breaks, and no run of a chain that is still
          going is deleted.

        Each run goes with its events and signals at once: a reader finds it whole
        or not at all, also when the store fails half way. No long lock is held:
        each call is a batch of its own (one short transaction on the SQL stores).
        A run that this call's deletions make deletable (the previous run of a
        chain) is left to the next call: call again until it returns 0.

        With ``dry_run`` nothing is deleted, and the number this call would have
        deleted is returned.
        """
        ...

    def change_token(self, run_id: str | None) -> object:
        """Return an opaque mark of "now" for ``wait_for_change(since=...)``.

        Take it *before* reading the state you may wait on: a change that lands
        between that read and the wait then still wakes the wait at once.
        """
        ...

    def wait_for_change(
        self,
        run_id: str | None,
        timeout: float,
        since: object = None,
        *,
        ignoring: Container[str] = (),
    ) -> bool:
        """Block until the run (or, with ``None``, any run) may have changed, or ``timeout``.

        With ``since`` (a :meth:`change_token`), a change made after the token was
        taken returns at once; without it, only changes after the call count.
        With ``run_id`` ``None``, a change of a run in ``ignoring`` does not end the
        wait, while a change of any other run, or one whose run the store cannot
        tell, does. A worker's claim loop ignores the runs whose waits its own
        threads hold, which take those runs back themselves. ``ignoring`` is
        looked at each time the wait checks, so it may be a live view.
        Returns ``True`` when woken by a change. Spurious wake-ups are allowed;
        callers re-read what they wait for.
        """
        ...

    def close(self) -> None:
        """Release connections and threads. Idempotent."""
        ...


class _Reads(Protocol):
    def get_run(self, run_id: str) -> history.RunInfo: ...


def latest_run(store: _Reads, run_id: str) -> history.RunInfo:
    """The run ``run_id``, or the latest run of its chain if it continued as new.

    A run is followed only once it has ended ``completed`` and its successor
    exists: the successor is created before the end is recorded, so a chain in
    the middle of continuing still shows its current run. Raises
    ``RunNotFoundError`` when ``run_id`` does not exist.
    """
    run = store.get_run(run_id)
    while run.status is history.RunStatus.COMPLETED:
        try:
            run = store.get_run(history.chain_next(run.id))
        except _errors.RunNotFoundError:
            break
    return run


def open_store(url: str, *, auto_migrate: bool = True) -> Store:
    """Build the store a URL names.

    * ``memory://``: an in-process store, lost when the process exits (tests, demos).
    * ``sqlite:///path.db``: the embedded default (WAL).
    * ``postgresql+psycopg://user@host/db`` (``postgresql://`` works too).
    * ``mysql+pymysql://user@host/db``.
    * ``redis://host:port/db?prefix=app`` and ``mongodb://host/db``.

    ``auto_migrate`` is passed to the SQL store (see
    :class:`~fluxo.stores.sql.SQLStore`); the command line opens stores with
    ``False``, so that only ``fluxo db upgrade`` changes a schema.
    """
    if not isinstance(url, str) or "://" not in url:
        shown = repr(_redact.redact_value(url)) if isinstance(url, str) else repr(url)
        raise _errors.DefinitionError(
            f"store URL {_redact.redact(shown)} is not a URL; pass something like "
            "'sqlite:///fluxo.db', 'postgresql+psycopg://localhost/app' or 'memory://', "
            "or a Store object"
        )
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "memory":
        from fluxo.stores import memory

        return memory.MemoryStore()
    if scheme in ("sqlite", "postgresql", "postgres", "mysql", "mariadb"):
        from fluxo.stores import sql

        store: Store = sql.SQLStore(url, auto_migrate=auto_migrate)
        return store
    if scheme in ("redis", "rediss"):
        from fluxo.stores import redis

        redis_store: Store = redis.RedisStore(url)
        return redis_store
    if scheme in ("mongodb", "mongodb+srv"):
        from fluxo.stores import mongo

        mongo_store: Store = mongo.MongoStore(url)
        return mongo_store
    given = _redact.redact(url.split("://", 1)[0], _redact.secrets_of(url))  # as typed, masked
    raise _errors.DefinitionError(
        f"no Fluxo store handles URLs starting {given!r}://; the schemes are memory, "
        "sqlite, postgresql, mysql, redis and mongodb"
    )
