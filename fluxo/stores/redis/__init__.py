"""A store on Redis or Redis Cluster (``redis://host:port/db?prefix=myapp``), built on Lua scripts.

Connecting. The URL names any node. Fluxo asks it ``INFO cluster`` on first use and
talks to a Redis Cluster through :class:`redis.cluster.RedisCluster` when
``cluster_enabled`` is 1, to a single server (or a primary with replicas)
otherwise. The query parameter ``cluster=true`` or ``cluster=false`` skips the
question. Both modes use the same keys and the same scripts, and every script
call touches the keys of one hash slot, so one layout serves both.

Layout. Every key starts with the prefix (``fluxo`` unless the URL's ``prefix``
query parameter or the ``prefix=`` argument says otherwise; it may not contain
braces). The keys of one run share the hash tag ``{run_id}`` (a run id that is
empty or contains ``}`` is tagged by its SHA-1 instead):

* ``P:{id}:run``: a hash, the run's record (times as ``repr`` of the float, so
  they round-trip exactly), with the run's last signal id and its fence (below);
* ``P:{id}:events``: a list, the history, one event per item, each with the time
  it was recorded (below);
* ``P:{id}:signals``: a list, the signals, oldest first;
* ``P:{id}:signal_keys``: a set, the idempotency keys of the signals;
* ``P:{id}:fence``: the fence of a run that does not exist (yet), kept a day;
* ``P:{id}:qfence``: its queue fences, likewise (see ``_queues``).

A run's record also holds its queue fields: ``queue``, ``prio`` and ``part`` when
they are not the default ones, and, while it awaits admission to a named queue,
``start`` (its ``start_at``) and ``qkey`` (its entry in the queue's index).

The indexes are split into ``BUCKETS`` (16) buckets; a run belongs to bucket
``crc32(id) % 16``, the same on every client, and each bucket's keys share the
hash tag ``{P#n}``:

* ``P:{P#n}:ready:<workflow>``: a sorted set of the active, unleased runs with a
  ``ready_at``, scored by it;
* ``P:{P#n}:leased:<workflow>``: the leased ones, scored by ``lease_until``, and
  ``P:{P#n}:lready``, a hash of their ``ready_at``;
* ``P:{P#n}:hints``: a sorted set of runs of any workflow that may be claimable
  from the score on (see below);
* ``P:{P#n}:gen``: a hash, each indexed run's generation, and ``P:{P#n}:seq``,
  the counter that hands generations out;
* ``P:{P#n}:created``: every run, scored by ``created_at``, for
  :meth:`RedisStore.list_runs`, which reads a creation-time range as a score range
  (an ``id_prefix`` filters the ids it reads: no index keeps runs by id), and
  :meth:`RedisStore.count_runs`, which reads it whole.

Each named queue has keys of its own, with the hash tag ``{P#q:<name>}`` (a name
that is empty or contains ``}`` is tagged by its SHA-1):

* ``P:{P#q:<name>}:queued``: the runs awaiting admission, as entries that sort in
  admission order (priority, ``start_at``, ``created_at``, id) in a sorted set read
  by lexical ranges;
* ``P:{P#q:<name>}:seq``: the counter that numbers those entries;
* ``P:{P#q:<name>}:state``: the queue's record (``read_queue``, ``write_queue``), a
  hash of its version and state, changed by one compare-and-set script.

The index of a queue and the runs' records live in different slots too; the
module ``_queues`` tells how they are kept in step (an entry made before the record
names it, removed after the record stops naming it, and checked by every reader).

The workers' liveness records (``Store.beat_worker``) are one key with a hash tag
of its own, ``{P#workers}``:

* ``P:{P#workers}:alive``: a sorted set of worker ids, scored by ``alive_until``.

This layout replaced one with global indexes (``P:ready:<workflow>`` and so on)
and history items without their recording time; data written by that layout is
not read by this one.

Two steps. A run's record and its index entry live in different slots, so no
script can change both. The record is the truth; the index only has to lead a
claim to every run that is claimable. It is kept a superset, always, whatever
crashes between the steps:

1. *Mark.* Before a change that can make a run claimable sooner (create, a
   suspension with a timer, a signal, a cancellation, a release, a retry), one
   bucket script bumps the run's generation ``g`` and adds a hint no later than
   the earliest time the run can then be claimed.
2. *Change.* One run script validates and changes the record, and computes the
   index entry the record now needs.
3. *Settle.* One bucket script replaces the run's hint and entries with exactly
   that entry (or removes them), only if the generation is still ``g``.

A crash after step 1 leaves a hint that is early or points at nothing: a claim
that meets it runs the run script (which claims the run if it is claimable) and
settles the entry to what the record needs. A crash after step 2 leaves such a
hint too, or, after a change that only makes the run claimable later (a lease
taken or renewed, a run finished), an entry that is early: the same repair
applies. Early entries cost a claim a wasted look, never a lost run.

Races are settled by generations and fences. A settle writes what one run script
saw; it must not undo a hint that a later change relies on. So every run script
that precedes a settle with generation ``g`` raises the run's *fence* to ``g``,
and a change that relies on its own hint (step 1) is refused, and retried with a
new mark, when its ``g`` is not above the fence: some settle may be about to
remove that hint. A settle applies only while the generation is the one its run
script was given, so a mark made after that script read the record voids it.
Changes that only postpone a run (claims, renewals, finishing) need no hint and
read the generation without bumping it; a renewal or ``claim_run`` that would
shorten a lease falls back to the marked path. The fence of a run that does not
exist is kept for a day, and a create whose mark is over an hour old is retried,
so a stalled client cannot slip past a settle that removed its hint.

Costs. The hot path, appending events without a status change, is one script
call: one round trip. A status change is three (mark or read, change, settle),
except two for a create (its mark writes the entry the new run needs, so no
settle follows) and for completing or cancelling a run (final states: its entries
are dropped whatever their generation, so nothing is read first). A worker's
beat is one script call on ``P:{P#workers}:alive`` while no worker is dead;
freeing a dead worker's runs (rare) reads every run with a leased entry or a
hint, and frees those still leased to it with the three steps, batched per
bucket (see ``_liveness``). A claim reads every bucket (one pipeline on a single
server), runs the run script of each candidate, oldest ``ready_at`` first, and
settles them; with ``queues``, the run script also checks the run's queue, and
later rounds look deeper into the buckets (the claim index is by workflow, not by
queue). A create in a named queue is two round trips (its queue entry goes in its
mark's pipeline); an admission is four, whatever the number of runs (marks, run
scripts, settles, entry removals, each batched); reading a queue is one script and
one pipeline of records. Signal ids follow each run's last one and otherwise the server's
clock in microseconds, so they also order the signals of different runs (as far
as the clocks of the cluster's nodes agree).

Events are stored as ``recorded_at NUL kind NUL name-length NUL name flag data``,
where ``recorded_at`` is the ``now`` of the call that appended the event (as
``repr`` of the float), and the flag is ``N`` for no data and ``D`` before the
data bytes: binary-safe, byte-exact. The time travels inside the item, so an
append is still one script call.

Durability. Redis acknowledges a write once it is in memory; what survives a
crash of the server depends on its persistence settings:

* ``appendonly no`` (RDB snapshots only): everything since the last snapshot is
  lost, minutes of runs. Not suitable for durable workflows.
* ``appendonly yes`` + ``appendfsync everysec`` (recommended): at most about one
  second of acknowledged writes is lost if the *machine* crashes (a crash of the
  Redis process alone loses nothing). A lost append looks to Fluxo like a step
  that never recorded: it runs again, which steps allow (at-least-once).
* ``appendonly yes`` + ``appendfsync always``: every write is fsynced before it is
  acknowledged: no loss, at the price of one fsync per write.

Replication is asynchronous: a failover to a replica may lose the last writes
unless ``WAIT`` or ``min-replicas-to-write`` is used. ``maxmemory-policy`` must be
``noeviction``: an evicted key is a lost run.

Change notifications are pushed: every script that changes a run's status
publishes the run id on ``P:changes`` (on a cluster, a publish reaches every
node); a background thread (started on the first
:meth:`RedisStore.wait_for_change` or :meth:`RedisStore.change_token`) listens
and wakes the waiters of this process.
"""

from __future__ import annotations

from fluxo.stores.redis._codec import decode_signal, encode_event
from fluxo.stores.redis._layout import (
    BUCKETS,
    DEFAULT_PREFIX,
    bucket_of,
    cluster_option,
    split_url,
)
from fluxo.stores.redis._store import RedisStore

__all__ = [
    "BUCKETS",
    "DEFAULT_PREFIX",
    "RedisStore",
    "bucket_of",
    "cluster_option",
    "decode_signal",
    "encode_event",
    "split_url",
]

# Shown where users find them: fluxo.stores.redis.RedisStore, not the private modules.
for _value in (RedisStore, bucket_of, cluster_option, decode_signal, encode_event, split_url):
    _value.__module__ = __name__
del _value
