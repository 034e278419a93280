"""The statements of the SQL store, built with SQLAlchemy Core and compiled once per dialect.

Each statement is compiled to the driver's SQL and parameter style when the store
is built, then run on a DB-API cursor, which skips SQLAlchemy's per-execution
work on the hot path. Statements whose shape depends on how many values an
``IN`` list holds are compiled on first use, for lists padded to a power of two.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from fluxo import history
from fluxo.stores.sql import _leasing, _prefix
from fluxo.stores.sql import _schema as schema

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import Dialect

RunStatus = history.RunStatus

NOTIFY_CHANNEL = "fluxo_changes"
"""The PostgreSQL channel every status change is announced on, with the run id as payload."""


class Sql:
    """One statement compiled for a dialect, with the driver's parameter style."""

    __slots__ = ("defaults", "names", "text")

    def __init__(self, statement: sa.ClauseElement, dialect: Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        self.text: str = compiled.string
        self.defaults: dict[str, Any] = dict(compiled.params)
        self.names: tuple[str, ...] | None = (
            tuple(getattr(compiled, "positiontup", None) or ()) if dialect.positional else None
        )

    def args(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        merged = {**self.defaults, **values} if self.defaults else values
        if self.names is None:
            return dict(merged)
        return tuple(merged[name] for name in self.names)


_R = schema.runs
_E = schema.events
_S = schema.signals
RUN_COLUMNS = (
    _R.c.id,
    _R.c.workflow,
    _R.c.status,
    _R.c.created_at,
    _R.c.updated_at,
    _R.c.ready_at,
    _R.c.lease_owner,
    _R.c.lease_until,
    _R.c.cancel_requested,
    _R.c.wake_requested,
    _R.c.deadline,
    _R.c.parent,
    _R.c.headers,
    _R.c.recoveries,
    _R.c.queue,
    _R.c.priority,
    _R.c.partition,
    _R.c.start_at,
)
_EVENT_COLUMNS = (_E.c.run_id, _E.c.seq, _E.c.kind, _E.c.name, _E.c.data, _E.c.created_at)
_ACTIVE = tuple(status.value for status in history.ACTIVE_STATUSES)
LOAD_RUN = 6
"""Where the run's columns start in a row of :attr:`Statements.load`."""


def _p(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


def _word(value: str) -> sa.ColumnElement[str]:
    """A constant string rendered into the SQL (only ever our own status words)."""
    assert value.isidentifier()
    return sa.literal_column(f"'{value}'", sa.String())


def _pg_notify(run_id: sa.ColumnElement[str]) -> sa.ColumnElement[Any]:
    return sa.func.pg_notify(sa.literal_column(f"'{NOTIFY_CHANNEL}'"), run_id)


def _keys(prefix: str, count: int) -> list[sa.BindParameter[Any]]:
    return [sa.bindparam(f"{prefix}{i}", type_=_R.c.id.type) for i in range(count)]


def queue_values(queues: Collection[str] | None, values: dict[str, Any]) -> int | None:
    """Add a ``queues`` filter's values as ``p_queue0..``; return its list's length (or None)."""
    if queues is None:
        return None
    names = bucket(queues)
    values.update({f"p_queue{i}": name for i, name in enumerate(names)})
    return len(names)


def in_queues(queues: int | None) -> list[sa.ColumnElement[bool]]:
    """The run is in one of ``p_queue0..`` (an ``IN`` list of ``queues``); ``None``: no filter."""
    return [] if queues is None else [_R.c.queue.in_(_keys("p_queue", queues))]


def _status_values(*, waiting: bool) -> dict[str, Any]:
    """What ``append`` with a status sets; ``waiting``: yield to a wake-up that arrived."""
    status: sa.ColumnElement[Any] = _p("p_status", _R.c.status)
    ready_at: sa.ColumnElement[Any] = _p("p_ready_at", _R.c.ready_at)
    if waiting:
        woken = _R.c.wake_requested
        status = sa.case((woken, _word(RunStatus.PENDING.value)), else_=status)
        ready_at = sa.case((woken, _p("p_now", _R.c.updated_at)), else_=ready_at)
    return {
        "status": status,
        "ready_at": ready_at,
        "updated_at": _p("p_now", _R.c.updated_at),
        "lease_owner": sa.null(),
        "lease_until": sa.null(),
        "start_at": sa.null(),  # a run awaiting admission that ends awaits no more
    }


def bucket(values: Collection[str]) -> list[str]:
    """The values padded to a power-of-two length, so few statement shapes get compiled."""
    items = sorted(set(values))
    size = 1 << (len(items) - 1).bit_length()
    return items + [items[-1]] * (size - len(items))


class Statements:
    """Every statement of the store, compiled once for one dialect."""

    def __init__(self, dialect: Dialect, kind: str) -> None:
        self._dialect = dialect
        self._kind = kind
        self._shapes: dict[tuple[Any, ...], Sql] = {}
        c = self.compile
        run_id = _p("p_run_id", _R.c.id)
        now = _p("p_now", _R.c.updated_at)

        self.version = c(
            sa.select(sa.column("version_num")).select_from(sa.table(schema.VERSION_TABLE))
        )
        self.get_run = c(sa.select(*RUN_COLUMNS).where(_R.c.id == run_id))
        # The run with its events (part 0), then its signals (part 1): one statement,
        # so one round trip and one snapshot. Rows: part, position, kind or NULL, name,
        # data or payload, the event's created_at or the signal's sent_at, then the
        # run's columns (NULL for signals).
        run_and_events = (
            sa.select(
                sa.literal_column("0", sa.Integer()).label("part"),
                _E.c.seq.label("ord"),
                _E.c.kind,
                _E.c.name,
                _E.c.data,
                _E.c.created_at.label("at"),
                *RUN_COLUMNS,
            )
            .select_from(_R.outerjoin(_E, _E.c.run_id == _R.c.id))
            .where(_R.c.id == run_id)
        )
        signal_rows = sa.select(
            sa.literal_column("1", sa.Integer()),
            _S.c.id,
            sa.null(),
            _S.c.name,
            _S.c.payload,
            _S.c.sent_at,
            *(sa.null() for _ in RUN_COLUMNS),
        ).where(_S.c.run_id == run_id)
        loaded = sa.union_all(run_and_events, signal_rows)
        self.load = c(loaded.order_by(loaded.selected_columns.part, loaded.selected_columns.ord))
        insert_run_values = {
            "id": run_id,
            "workflow": _p("p_workflow", _R.c.workflow),
            "status": _p("p_status", _R.c.status),
            "created_at": now,
            "updated_at": now,
            "ready_at": _p("p_ready_at", _R.c.ready_at),
            "lease_owner": _p("p_owner", _R.c.lease_owner),
            "lease_until": _p("p_lease_until", _R.c.lease_until),
            "cancel_requested": sa.false(),
            "wake_requested": sa.false(),
            "deadline": _p("p_deadline", _R.c.deadline),
            "parent": _p("p_parent", _R.c.parent),
            "headers": _p("p_headers", _R.c.headers),
            "queue": _p("p_queue", _R.c.queue),
            "priority": _p("p_priority", _R.c.priority),
            "partition": _p("p_partition", _R.c.partition),
            "start_at": _p("p_start_at", _R.c.start_at),
        }
        self.insert_run = c(_R.insert().values(insert_run_values))
        event_params = (
            run_id,
            _p("p_seq", _E.c.seq),
            _p("p_kind", _E.c.kind),
            _p("p_name", _E.c.name),
            _p("p_data", _E.c.data),
            now,
        )
        self.insert_event = c(_E.insert().values(dict(zip(_E.c.keys(), event_params, strict=True))))
        previous_exists = sa.exists(
            sa.select(sa.literal_column("1")).where(
                _E.c.run_id == run_id, _E.c.seq == _p("p_prev", _E.c.seq)
            )
        )
        run_exists = sa.exists(sa.select(sa.literal_column("1")).where(_R.c.id == run_id))
        after = _E.insert().from_select(
            list(_E.c.keys()), sa.select(*event_params).where(previous_exists)
        )
        first = _E.insert().from_select(
            list(_E.c.keys()), sa.select(*event_params).where(run_exists)
        )
        self.insert_event_after = c(after)
        self.insert_event_first = c(first)
        # Each status write comes in two forms, indexed by "is the new status WAITING":
        # the second turns WAITING into PENDING, ready now, when a signal or a
        # cancellation arrived meanwhile, so no wake-up is lost (and no read is needed).
        status_values = (_status_values(waiting=False), _status_values(waiting=True))
        self.set_status = tuple(
            c(self._announce(_R.update().where(_R.c.id == run_id).values(v))) for v in status_values
        )
        last_seq = sa.select(sa.func.max(_E.c.seq)).where(_E.c.run_id == run_id)
        self.set_status_fenced = tuple(
            c(
                self._announce(
                    _R.update()
                    .where(_R.c.id == run_id, last_seq.scalar_subquery() == _p("p_prev", _E.c.seq))
                    .values(v)
                )
            )
            for v in status_values
        )
        self.append_state = c(
            sa.select(
                sa.select(_R.c.id).where(_R.c.id == run_id).scalar_subquery(),
                last_seq.scalar_subquery(),
            )
        )
        # append(unless_cancel_requested=True): the run's row, locked for the rest of
        # the transaction, so a cancellation is either seen here or waits for the end.
        locked = sa.select(_R.c.cancel_requested).where(_R.c.id == run_id)
        if kind != "sqlite":  # SQLite's BEGIN IMMEDIATE already keeps writers out
            locked = locked.with_for_update()
        self.lock_run = c(locked)
        if kind == "postgresql":
            # One statement, so one round trip: the insert of one event, or two (a
            # step's record and the run's end), and the status change. Indexed by
            # (events, "is the new status WAITING"); the second event's parameters
            # end in 1 (p_seq1...).
            def rows(count: int, *where: sa.ColumnElement[bool]) -> Any:
                if count == 1:
                    return sa.select(*event_params).where(*where)
                made = []
                for i in range(count):
                    params = event_params
                    if i:
                        params = (
                            run_id,
                            _p(f"p_seq{i}", _E.c.seq),
                            _p(f"p_kind{i}", _E.c.kind),
                            _p(f"p_name{i}", _E.c.name),
                            _p(f"p_data{i}", _E.c.data),
                            now,
                        )
                    # Typed: a UNION would take an untyped NULL (an end with no data)
                    # for text, where a lone INSERT ... SELECT takes the column's type.
                    typed = [
                        sa.cast(param, column.type)
                        for param, column in zip(params, _E.c, strict=True)
                    ]
                    made.append(sa.select(*typed).where(*where))
                return sa.union_all(*made)

            def with_status(inserted: Any, values: dict[str, Any]) -> Sql:
                return c(
                    self._announce(
                        _R.update()
                        .where(_R.c.id == run_id, sa.exists(sa.select(inserted.c.run_id)))
                        .values(values)
                    )
                )

            self.pg_append_with_status: dict[tuple[int, bool], Sql] = {}
            self.pg_append_unless_cancelled: dict[tuple[int, bool], Sql] = {}
            for count in (1, 2):
                inserted = (
                    _E.insert()
                    .from_select(list(_E.c.keys()), rows(count, previous_exists))
                    .returning(_E.c.run_id)
                    .cte("fluxo_appended")
                )
                # The same, refused when a cancellation is pending: the run's row is
                # locked first (a concurrent request_cancel commits before, or waits).
                run_row = (
                    sa.select(_R.c.id, _R.c.cancel_requested)
                    .where(_R.c.id == run_id)
                    .with_for_update()
                    .cte("fluxo_end_run")
                )
                no_cancel = ~sa.exists(sa.select(run_row.c.id).where(run_row.c.cancel_requested))
                checked = (
                    _E.insert()
                    .from_select(list(_E.c.keys()), rows(count, previous_exists, no_cancel))
                    .returning(_E.c.run_id)
                    .cte("fluxo_appended_unless_cancelled")
                )
                for suspends, v in zip((False, True), status_values, strict=True):
                    self.pg_append_with_status[count, suspends] = with_status(inserted, v)
                    self.pg_append_unless_cancelled[count, suspends] = with_status(checked, v)
            new_run = (
                postgresql.insert(_R)
                .values(insert_run_values)
                .on_conflict_do_nothing(index_elements=[_R.c.id])
                .returning(_R.c.id)
                .cte("fluxo_new_run")
            )
            new_event = _E.insert().from_select(
                list(_E.c.keys()),
                sa.select(
                    new_run.c.id,
                    sa.literal_column("0", sa.Integer()),
                    _p("p_kind", _E.c.kind),
                    _p("p_workflow", _E.c.name),
                    _p("p_data", _E.c.data),
                    now,
                ),
            )
            self.pg_create_run = c(
                sa.select(new_run.c.id, _pg_notify(new_run.c.id)).add_cte(
                    new_event.cte("fluxo_new_event")
                )
            )
        release = (
            _R.update()
            .where(_R.c.id == run_id, _R.c.lease_owner == _p("p_worker", _R.c.lease_owner))
            .ordered_values(
                (
                    _R.c.status,
                    sa.case(
                        (_R.c.status == _word("running"), _word("pending")),
                        else_=_R.c.status,
                    ),
                ),
                (_R.c.lease_owner, sa.null()),
                (_R.c.lease_until, sa.null()),
                (_R.c.updated_at, now),
            )
        )
        self.release = c(self._announce(release))
        waiting = _R.c.status == _word(RunStatus.WAITING.value)
        cancel = (
            _R.update()
            .where(_R.c.id == run_id, _R.c.status.in_([_word(s) for s in _ACTIVE]))
            # MySQL evaluates SET left to right: ready_at must read the old status.
            .ordered_values(
                (_R.c.ready_at, sa.case((waiting, now), else_=_R.c.ready_at)),
                (
                    _R.c.status,
                    sa.case((waiting, _word(RunStatus.PENDING.value)), else_=_R.c.status),
                ),
                (_R.c.cancel_requested, sa.true()),
                (_R.c.wake_requested, sa.true()),
                (_R.c.updated_at, now),
            )
        )
        # A run of a named queue awaits admission again; one of the default queue is ready.
        default_queue = _R.c.queue == sa.literal_column("''", _R.c.queue.type)
        assert history.DEFAULT_QUEUE == ""
        reopen = (
            _R.update()
            .where(
                _R.c.id == run_id,
                _R.c.status.in_([_word(s.value) for s in history.REOPENABLE_STATUSES]),
            )
            .values(
                status=_word(RunStatus.PENDING.value),
                ready_at=sa.case((default_queue, now), else_=sa.null()),
                start_at=sa.case((default_queue, sa.null()), else_=now),
                updated_at=now,
                lease_owner=sa.null(),
                lease_until=sa.null(),
                cancel_requested=sa.false(),
                recoveries=0,
            )
        )
        self.returning = dialect.update_returning
        columns = RUN_COLUMNS if self.returning else ()
        self.request_cancel = c(self._announce(cancel, *columns))
        self.reopen = c(self._announce(reopen, *columns))
        self.append_retried = c(
            _E.insert().from_select(
                list(_E.c.keys()),
                sa.select(
                    _E.c.run_id,
                    sa.func.max(_E.c.seq) + 1,
                    _p("p_kind", _E.c.kind),
                    _p("p_name", _E.c.name),
                    _p("p_data", _E.c.data),
                    now,
                )
                .where(_E.c.run_id == run_id)
                .group_by(_E.c.run_id),
            )
        )
        # What changes when any run may have changed, read by waiters polling for the
        # writes of other processes (the driver's own counters: no scan, no index).
        self.any_change = {
            "postgresql": "SELECT pg_current_wal_insert_lsn()",
            "mysql": "SHOW GLOBAL STATUS WHERE Variable_name IN "
            "('Handler_commit', 'Handler_delete', 'Handler_update', 'Handler_write')",
            "sqlite": "PRAGMA data_version",
        }[kind]
        self.run_fingerprint = c(
            sa.select(
                _R.c.status,
                _R.c.updated_at,
                _R.c.ready_at,
                _R.c.lease_owner,
                _R.c.lease_until,
                _R.c.cancel_requested,
                _R.c.wake_requested,
                # a signal can leave the run's row as it was: its newest signal tells
                sa.select(sa.func.max(_S.c.id)).where(_S.c.run_id == run_id).scalar_subquery(),
            ).where(_R.c.id == run_id)
        )
        self._signals(run_id, now)
        self._claim_run(run_id, now)

    def _signals(self, run_id: sa.BindParameter[str], now: sa.BindParameter[float]) -> None:
        """``send_signal``: store the signal, then wake the run (never one without the other).

        On PostgreSQL one statement does it all: it locks the run's row, inserts the
        signal if the run is active and the key is new, wakes the run if a signal
        was inserted, and returns ``(status, new signal id, runs woken)`` (no row:
        no such run). Elsewhere a transaction runs the parts one by one.
        """
        waiting = _R.c.status == _word(RunStatus.WAITING.value)
        # MySQL evaluates SET left to right: ready_at must read the old status.
        wake = (
            (_R.c.ready_at, sa.case((waiting, now), else_=_R.c.ready_at)),
            (_R.c.status, sa.case((waiting, _word(RunStatus.PENDING.value)), else_=_R.c.status)),
            (_R.c.wake_requested, sa.true()),
            (_R.c.updated_at, now),
        )
        signal_params = (
            _p("p_name", _S.c.name),
            _p("p_payload", _S.c.payload),
            now,
            _p("p_key", _S.c.dedupe_key),
        )
        signal_columns = ["run_id", "name", "payload", "sent_at", "dedupe_key"]
        if self._kind == "postgresql":
            run = (
                sa.select(_R.c.id, _R.c.status)
                .where(_R.c.id == run_id)
                .with_for_update()
                .cte("fluxo_signal_run")
            )
            inserted = (
                postgresql.insert(_S)
                .from_select(
                    signal_columns,
                    sa.select(run.c.id, *signal_params).where(
                        run.c.status.in_([_word(s) for s in _ACTIVE])
                    ),
                )
                .on_conflict_do_nothing(index_elements=[_S.c.run_id, _S.c.dedupe_key])
                .returning(_S.c.id)
                .cte("fluxo_signal_new")
            )
            woken = self._announce(
                _R.update()
                .where(_R.c.id == run_id, sa.exists(sa.select(inserted.c.id)))
                .ordered_values(*wake)
            ).cte("fluxo_signal_woken")
            self.pg_send_signal = self.compile(
                sa.select(
                    run.c.status,
                    sa.select(inserted.c.id).scalar_subquery(),
                    sa.select(sa.func.count()).select_from(woken).scalar_subquery(),
                ).select_from(run)
            )
            return
        locked = sa.select(_R.c.status).where(_R.c.id == run_id)
        if self._kind == "mysql":
            locked = locked.with_for_update()
        self.signal_run_status = self.compile(locked)
        self.insert_signal = self.compile(
            _S.insert().values(dict(zip(signal_columns, (run_id, *signal_params), strict=True)))
        )
        self.wake_for_signal = self.compile(
            _R.update().where(_R.c.id == run_id).ordered_values(*wake)
        )

    def _claim_run(self, run_id: sa.BindParameter[str], now: sa.BindParameter[float]) -> None:
        """``claim_run``: lease one active run unless another worker's lease is live.

        Never a run awaiting admission (with a ``start_at``): only ``admit`` makes it ready.
        """
        worker = _p("p_worker", _R.c.lease_owner)
        update = (
            _R.update()
            .where(
                _R.c.id == run_id,
                _R.c.status.in_([_word(s) for s in _ACTIVE]),
                _R.c.start_at.is_(None),
                sa.or_(
                    _R.c.lease_until.is_(None), _R.c.lease_until < now, _R.c.lease_owner == worker
                ),
            )
            .ordered_values(*_leasing.lease_values(taking_back=worker))
        )
        self.claim_run = self.compile(update.returning(*RUN_COLUMNS) if self.returning else update)

    def _announce(self, update: sa.Update, *columns: sa.ColumnElement[Any]) -> sa.Update:
        """Return ``columns`` from an update of runs, and on PostgreSQL NOTIFY each run's id.

        The notification is sent at commit, in the same statement as the change, so
        waiters in other processes wake only once the change is visible.
        """
        if self._kind == "postgresql":
            columns = (*columns, _pg_notify(_R.c.id))
        return update.returning(*columns) if columns else update

    def compile(self, statement: sa.ClauseElement) -> Sql:
        return Sql(statement, self._dialect)

    def shaped(self, key: tuple[Any, ...], build: Callable[[], sa.ClauseElement]) -> Sql:
        """A statement whose shape depends on the length of its value lists, cached."""
        found = self._shapes.get(key)
        if found is None:
            found = self._shapes[key] = self.compile(build())
        return found

    def _runnable(self, workflows: int, queues: int | None) -> sa.ColumnElement[bool]:
        now = _p("p_now", _R.c.updated_at)
        return sa.and_(
            _R.c.status.in_([_word(s) for s in _ACTIVE]),
            _R.c.ready_at <= now,
            sa.or_(_R.c.lease_until.is_(None), _R.c.lease_until < now),
            _R.c.workflow.in_(_keys("p_wf", workflows)),
            *in_queues(queues),
        )

    def claim_pg(self, workflows: int, queues: int | None) -> Sql:
        """Choose, lock and lease runnable runs in one statement (``queues``: :func:`in_queues`)."""

        def build() -> sa.ClauseElement:
            chosen = (
                sa.select(_R.c.id)
                .where(self._runnable(workflows, queues))
                .order_by(_R.c.ready_at, _R.c.created_at, _R.c.id)
                .limit(sa.bindparam("p_limit", type_=sa.Integer()))
                .with_for_update(skip_locked=True)
                .cte("fluxo_claimed")
            )
            statement: sa.ClauseElement = (
                _R.update()
                .where(_R.c.id == chosen.c.id)
                .ordered_values(*_leasing.lease_values())
                .returning(*RUN_COLUMNS)
            )
            return statement

        return self.shaped(("claim_pg", workflows, queues), build)

    def claim_select(self, workflows: int, queues: int | None) -> Sql:
        def build() -> sa.ClauseElement:
            query = (
                sa.select(*RUN_COLUMNS)
                .where(self._runnable(workflows, queues))
                .order_by(_R.c.ready_at, _R.c.created_at, _R.c.id)
                .limit(sa.bindparam("p_limit", type_=sa.Integer()))
            )
            if self._kind == "mysql":
                query = query.with_for_update(skip_locked=True)
            return query

        return self.shaped(("claim_select", workflows, queues), build)

    def claim_update(self, runs: int) -> Sql:
        def build() -> sa.ClauseElement:
            update = _R.update().where(_R.c.id.in_(_keys("p_id", runs)))
            statement: sa.ClauseElement = update.ordered_values(*_leasing.lease_values())
            return statement

        return self.shaped(("claim_update", runs), build)

    def renew(self, runs: int) -> Sql:
        def build() -> sa.ClauseElement:
            update = (
                _R.update()
                .where(
                    _R.c.lease_owner == _p("p_worker", _R.c.lease_owner),
                    _R.c.id.in_(_keys("p_id", runs)),
                )
                .values(lease_until=_p("p_lease_until", _R.c.lease_until))
            )
            statement: sa.ClauseElement = update
            if self.returning:
                statement = update.returning(_R.c.id, _R.c.cancel_requested)
            return statement

        return self.shaped(("renew", runs), build)

    def get_runs(self, runs: int) -> Sql:
        def build() -> sa.ClauseElement:
            return sa.select(*RUN_COLUMNS).where(_R.c.id.in_(_keys("p_id", runs)))

        return self.shaped(("get_runs", runs), build)

    def held(self, runs: int) -> Sql:
        def build() -> sa.ClauseElement:
            return sa.select(_R.c.id, _R.c.cancel_requested).where(
                _R.c.lease_owner == _p("p_worker", _R.c.lease_owner),
                _R.c.id.in_(_keys("p_id", runs)),
            )

        return self.shaped(("held", runs), build)

    def list_runs(
        self,
        statuses: int | None,
        workflows: int | None,
        *,
        after: bool,
        before: bool,
        ids: tuple[bool, bool] | None = None,
        queues: int | None = None,
    ) -> Sql:
        """Runs by status, workflow and queue (``IN`` lists of these lengths), creation time and id.

        ``after`` and ``before`` add the bounds ``created_at >= p_after`` and
        ``created_at < p_before``, which the ``created_at`` indexes serve as a range;
        ``ids``, the id-prefix range of shape ``(upper, bytewise)`` (``_prefix``).
        """

        def build() -> sa.ClauseElement:
            query = sa.select(*RUN_COLUMNS)
            if statuses is not None:
                query = query.where(_R.c.status.in_(_keys("p_status", statuses)))
            if workflows is not None:
                query = query.where(_R.c.workflow.in_(_keys("p_wf", workflows)))
            query = query.where(*in_queues(queues))
            if after:
                query = query.where(_R.c.created_at >= _p("p_after", _R.c.created_at))
            if before:
                query = query.where(_R.c.created_at < _p("p_before", _R.c.created_at))
            if ids is not None:
                query = query.where(*_prefix.id_range(_R.c.id, upper=ids[0], bytewise=ids[1]))
            return query.order_by(_R.c.created_at.desc(), _R.c.id).limit(
                sa.bindparam("p_limit", type_=sa.Integer())
            )

        return self.shaped(("list", statuses, workflows, after, before, ids, queues), build)

    def count_runs(self) -> Sql:
        """How many runs each workflow has in each stored status: one scan of the runs table."""

        def build() -> sa.ClauseElement:
            return sa.select(_R.c.workflow, _R.c.status, sa.func.count()).group_by(
                _R.c.workflow, _R.c.status
            )

        return self.shaped(("count_runs",), build)

    def next_wake(self, workflows: int, queues: int | None) -> Sql:
        """The earliest time a run of the workflows becomes claimable (``NULL``: never).

        A run counts at its ``ready_at``, or at its ``lease_until`` while that lease
        is live and ends later. Read through the ``ready_at`` index, not by a scan of
        every active run: the first run in ``ready_at`` order without a live lease
        bounds the answer, since no run counts before its ``ready_at``, so only the
        runs up to it (in practice, the ones being worked on) are looked at. Without
        such a run the bound is the largest ``ready_at`` of all. The bound is a
        one-row derived table, not a subquery in ``WHERE``: MariaDB then reads it
        first and ranges over the index up to it, instead of scanning the table.
        """

        def build() -> sa.ClauseElement:
            now = _p("p_now", _R.c.updated_at)
            active = sa.and_(
                _R.c.status.in_([_word(s) for s in _ACTIVE]),
                _R.c.workflow.in_(_keys("p_wf", workflows)),
                *in_queues(queues),
            )
            first_free = (
                sa.select(_R.c.ready_at)
                .where(
                    active,
                    _R.c.ready_at.is_not(None),
                    sa.or_(_R.c.lease_until.is_(None), _R.c.lease_until < now),
                )
                .order_by(_R.c.ready_at)
                .limit(1)
                .correlate(None)
                .scalar_subquery()
            )
            latest = sa.select(sa.func.max(_R.c.ready_at)).correlate(None).scalar_subquery()
            bound = sa.select(sa.func.coalesce(first_free, latest).label("bound")).subquery(
                "fluxo_bound"
            )
            live_and_later = sa.and_(_R.c.lease_until >= now, _R.c.lease_until > _R.c.ready_at)
            counts_at = sa.case((live_and_later, _R.c.lease_until), else_=_R.c.ready_at)
            return (
                sa.select(sa.func.min(counts_at))
                .select_from(_R.join(bound, _R.c.ready_at <= bound.c.bound))
                .where(active)
            )

        return self.shaped(("next_wake", workflows, queues), build)
