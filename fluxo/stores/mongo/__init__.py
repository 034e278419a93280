"""The MongoDB store: one document per run, histories fenced without transactions.

Collections (the first three created with their indexes by the first
``create_run`` or ``claim``, ``workers`` by a worker's first beat, ``queues`` by
the first ``write_queue``; nothing else creates them, so reading a database
without them creates nothing):

* ``runs``: one document per run, ``_id`` = run id. Besides the run's fields it
  holds the *tail* of its history (the events not yet moved to ``events``), the
  tail of its signals, the dedupe keys of its signals and the counters
  ``next_seq`` (the history's length) and ``sig_next`` (the next signal id).
* ``events``: one document per event, unique on ``(run_id, seq)``. Events carry
  the time they were recorded, on the tail as in ``events``.
* ``signals``: one document per signal, unique on ``(run_id, id)`` and, where a
  dedupe key was given, on ``(run_id, key)``.
* ``workers``: one document per running worker, ``{_id: worker id, alive_until:
  time}``, written by its beats; a beat that finds others' ``alive_until`` past
  ends the leases they hold (see ``_workers``).
* ``queues``: one document per named queue whose record was written, ``{_id:
  queue, version, state}``, replaced by compare-and-set on ``version`` (see
  ``_queues``, which also describes a run's queue fields and the partial indexes
  of the runs awaiting admission).

Atomicity without multi-document transactions: every write that the contract
makes atomic is one single-document update of the run's document. ``append`` is
one ``find_one_and_update`` filtered on ``next_seq == expected_seq`` that pushes
the events onto the tail, advances ``next_seq`` and applies the status, all at
once: that conditional update is the fence, and a reader can never see a status
without its events. ``send_signal`` likewise pushes the signal onto the run's
signal tail and wakes the run in the same update.

So that a run's document stays small, a full tail is *flushed*: its events are
inserted into ``events`` (duplicates ignored: the unique ``(run_id, seq)`` index
makes the flush idempotent and guards against two versions of one position),
and only then does a second conditional update drop them from the tail and
advance ``ev_base``. A reader takes the run document first and then the events
below its ``ev_base``, which are immutable once there, so it always sees one
consistent history. A crash between the two writes of a flush leaves events in
both places, which readers never look at twice and the next flush finishes.
Signals are flushed the same way into ``signals``.
"""

from __future__ import annotations

from fluxo.stores.mongo._store import (
    DEFAULT_DATABASE,
    DEFAULT_SERVER_SELECTION_TIMEOUT_MS,
    MongoStore,
)
from fluxo.stores.mongo._tails import TAIL_BYTES, TAIL_EVENTS, TAIL_SIGNALS
from fluxo.stores.mongo._watch import POLL_INTERVAL

__all__ = [
    "DEFAULT_DATABASE",
    "DEFAULT_SERVER_SELECTION_TIMEOUT_MS",
    "MongoStore",
    "POLL_INTERVAL",
    "TAIL_BYTES",
    "TAIL_EVENTS",
    "TAIL_SIGNALS",
]

# Shown where users find it: fluxo.stores.mongo.MongoStore, not the private module.
MongoStore.__module__ = __name__
