"""The Redis store's claim index: marks, settles and generations, in buckets.

The indexes are split into ``BUCKETS`` (16) buckets; a run belongs to bucket
``crc32(id) % 16``, the same on every client, and each bucket's keys share the
hash tag ``{P#n}`` (see ``_layout``). A run's record and its index entry live in
different slots, so no script can change both: the record is the truth, and the
index is kept a superset of what is claimable, whatever crashes between the
steps, by marking before a change (:meth:`Index.mark`), and settling after it
(:meth:`Index.settle`) only while the run's generation holds. The package's
docstring tells the whole protocol.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Sequence
from typing import Any, Final, NamedTuple, TypeVar

from fluxo import _errors
from fluxo.stores.redis import _codec, _connection, _layout

T = TypeVar("T")

MAX_TRIES: Final = 100
"""How often a change refused by a run script (a settle may remove its hint) is tried."""

SCAN_PAGE: Final = 1000
"""How many entries of a bucket's hash or set one ``HSCAN`` or ``ZSCAN`` is asked for."""


class Need(NamedTuple):
    """The index entry a run's record calls for, as a run script reports it."""

    kind: str  # '' (none), 'r' (ready) or 'l' (leased)
    ready: str
    lease: str
    workflow: str


def need(raw: Sequence[Any]) -> Need:
    kind, ready, lease, workflow = (_codec.text(value) for value in raw)
    return Need(kind, ready, lease, workflow)


class Candidate(NamedTuple):
    """A run a bucket's index says may be claimable."""

    at: float
    created: float
    run_id: str
    bucket: int
    workflow: str  # '' for a hint, whose workflow only the run's record tells
    gen: str


class Settle(NamedTuple):
    """One entry for the settle script of a bucket."""

    run_id: str
    gen: str
    need: Need
    missing: bool = False
    created: str = ""


class Cover(NamedTuple):
    """A run script's answer: the change would make the run claimable sooner, at ``at``."""

    at: str


class Index:
    """The bucketed claim index of one store.

    Args:
        conn: the store's connection.
        keys: the store's key layout.
    """

    def __init__(self, conn: _connection.Connection, keys: _layout.Keys) -> None:
        self._conn = conn
        self._keys = keys

    def mark(self, run_id: str, lowest: str) -> tuple[str, str]:
        """Step 1: bump the run's generation and hint at ``lowest``; returns it and the clock."""
        keys = self._keys.bucket(_layout.bucket_of(run_id))
        clock, gens = self._conn.call(
            "mark", [keys["hints"], keys["gen"], keys["seq"], keys["created"]], [lowest, run_id]
        )
        return _codec.text(gens[0]), _codec.text(clock)

    def mark_many(self, run_ids: Collection[str], lowest: str) -> dict[str, str]:
        """Step 1 for several runs at once: one mark call per bucket; returns each generation."""
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for run_id in run_ids:
            by_bucket[_layout.bucket_of(run_id)].append(run_id)
        calls: list[_connection.Call] = []
        for bucket, ids in sorted(by_bucket.items()):
            common = self._keys.bucket(bucket)
            keys = [common["hints"], common["gen"], common["seq"], common["created"]]
            calls.append(("mark", keys, [lowest, *ids]))
        gens: dict[str, str] = {}
        for (_, _, args), (_clock, values) in zip(calls, self._conn.call_many(calls), strict=True):
            gens.update(zip(args[1:], (_codec.text(value) for value in values), strict=True))
        return gens

    def leased_or_hinted(self) -> set[str]:
        """Every run with a leased entry or a hint in some bucket: the runs that may hold a lease.

        Each bucket's ``lready`` hash and ``hints`` set are scanned a page at a time,
        the pages of all buckets in one pipeline (per node on a cluster). A run a
        claim leased but whose settle a crash lost may still sit in a ready set
        instead; the next claim of its workflow that meets it settles it here.
        """
        cursors: dict[tuple[int, str], int] = {
            (bucket, what): 0 for bucket in range(_layout.BUCKETS) for what in ("lready", "hints")
        }
        found: set[str] = set()
        while cursors:
            order = sorted(cursors)

            def build(pipe: Any, order: list[tuple[int, str]] = order) -> None:
                for bucket, what in order:
                    key = self._keys.bucket(bucket)[what]
                    scan = pipe.hscan if what == "lready" else pipe.zscan
                    scan(key, cursors[bucket, what], count=SCAN_PAGE)

            for place, (cursor, page) in zip(order, self._conn.commands(build), strict=True):
                members = page.keys() if isinstance(page, dict) else (m for m, _ in page)
                found.update(_codec.text(member) for member in members)
                if int(cursor) == 0:
                    del cursors[place]
                else:
                    cursors[place] = int(cursor)
        return found

    def generations(self, run_ids: Sequence[str]) -> dict[str, str]:
        """The runs' generations as they stand ('' for a run without index entries)."""
        by_bucket: dict[int, list[str]] = defaultdict(list)
        for run_id in run_ids:
            by_bucket[_layout.bucket_of(run_id)].append(run_id)
        order = sorted(by_bucket)
        replies = self._conn.commands(
            lambda pipe: [pipe.hmget(self._keys.bucket(b)["gen"], by_bucket[b]) for b in order]
        )
        gens: dict[str, str] = {}
        for bucket, values in zip(order, replies, strict=True):
            for run_id, value in zip(by_bucket[bucket], values, strict=True):
                gens[run_id] = "" if value is None else _codec.text(value)
        return gens

    def settle(self, entries: Sequence[Settle]) -> None:
        """Step 3: make each run's entries what its record needs, if its generation holds."""
        by_bucket: dict[int, list[Settle]] = defaultdict(list)
        for entry in entries:
            if entry.gen or entry.created:
                by_bucket[_layout.bucket_of(entry.run_id)].append(entry)
        calls = []
        for bucket, group in sorted(by_bucket.items()):
            common = self._keys.bucket(bucket)
            keys = [common["hints"], common["gen"], common["created"], common["lready"]]
            numbers: dict[str, int] = {}
            args: list[str] = []
            for entry in group:
                workflow = entry.need.workflow
                if workflow and workflow not in numbers:
                    numbers[workflow] = len(numbers) + 1
                    keys.extend(self._keys.workflow(bucket, workflow))
                args += [
                    entry.run_id,
                    entry.gen,
                    str(numbers.get(workflow, 0)),
                    entry.need.kind,
                    entry.need.ready,
                    entry.need.lease,
                    "1" if entry.missing else "0",
                    entry.created,
                ]
            calls.append(("settle", keys, args))
        self._conn.call_many(calls)

    def marked(
        self,
        run_id: str,
        lowest: str,
        change: Callable[[str, str], tuple[T, Need] | None],
    ) -> T:
        """Mark, change, settle: for a change that may make the run claimable sooner.

        ``change(g, clock)`` runs the run script; it returns ``None`` when the script
        refused (a settle may be about to remove the hint), else the result and the
        entry the run now needs.
        """
        for _ in range(MAX_TRIES):
            gen, clock = self.mark(run_id, lowest)
            outcome = change(gen, clock)
            if outcome is None:
                continue
            result, need = outcome
            self.settle([Settle(run_id, gen, need, missing=not need.workflow)])
            return result
        raise _errors.StoreUnavailableError(
            f"run {run_id!r} changed under Fluxo {MAX_TRIES} times in a row; try again"
        )

    def peek(self, names: Sequence[str], now: float, limit: int) -> tuple[list[Candidate], bool]:
        """Every bucket's candidates, oldest first, and whether some bucket had more."""
        calls = []
        for bucket in range(_layout.BUCKETS):
            common = self._keys.bucket(bucket)
            keys = [common["hints"], common["gen"], common["created"], common["lready"]]
            for name in names:
                keys.extend(self._keys.workflow(bucket, name))
            calls.append(("peek", keys, [_codec.num(now), limit]))
        found: dict[str, Candidate] = {}
        more = False
        for bucket, (full, flat) in enumerate(self._conn.call_many(calls)):
            more = more or full == 1
            for i in range(0, len(flat), 5):
                number = int(flat[i])
                at = float(flat[i + 2])
                created = float(flat[i + 3]) if flat[i + 3] else at
                run_id = _codec.text(flat[i + 1])
                workflow = names[number - 1] if number else ""
                candidate = Candidate(
                    at, created, run_id, bucket, workflow, _codec.text(flat[i + 4])
                )
                known = found.get(run_id)
                if known is None or (candidate.at, not workflow) < (known.at, not known.workflow):
                    found[run_id] = candidate
        return sorted(found.values()), more

    def postponing(self, run_id: str, change: Callable[[str, bool], Any]) -> Any:
        """Read, change, settle: for a change that makes the run claimable no sooner.

        Should the change make it claimable sooner after all (a shorter lease), the
        run script answers :class:`Cover` and the change takes the marked path.
        """
        gen = self.generations([run_id])[run_id]
        outcome = change(gen, False)
        if isinstance(outcome, Cover):
            return self.marked(run_id, outcome.at, lambda g, _clock: change(g, True))
        result, need = outcome
        if gen:
            self.settle([Settle(run_id, gen, need, missing=not need.workflow)])
        return result

    def next_wake(self, workflows: Collection[str], *, now: float) -> float | None:
        """See :meth:`fluxo.stores.Store.next_wake`: the earliest entry of every bucket."""
        names = sorted(set(workflows))
        if not names:
            return None
        calls = []
        for bucket in range(_layout.BUCKETS):
            common = self._keys.bucket(bucket)
            keys = [common["hints"], common["lready"]]
            for name in names:
                keys.extend(self._keys.workflow(bucket, name))
            calls.append(("next_wake", keys, [_codec.num(now)]))
        times = [float(value) for value in self._conn.call_many(calls) if value is not None]
        return min(times, default=None)
