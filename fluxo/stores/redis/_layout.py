"""Where the Redis store keeps things: its URL options, its key prefix and its key layout.

Every key starts with the prefix. The keys of one run share the hash tag
``{run_id}`` (a run id that is empty or contains ``}`` is tagged by its SHA-1
instead); the index is split into :data:`BUCKETS` buckets, and the keys of one
bucket share the hash tag ``{P#n}``; the workers' liveness records are one key
of their own, tagged ``{P#workers}``. So every script touches the keys of one
hash slot, on a single server and on a Redis Cluster alike.
"""

from __future__ import annotations

import hashlib
import zlib
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from fluxo import _errors
from fluxo.stores.redis import _codec

DEFAULT_PREFIX: Final = "fluxo"

BUCKETS: Final = 16
"""How many buckets the indexes are split into. Part of the layout: never change it."""

RUN_PARTS: Final = ("run", "events", "signals", "signal_keys", "fence", "qfence")
"""The keys of one run, in the order its scripts take them."""

BUCKET_PARTS: Final = ("hints", "gen", "seq", "created", "lready")
"""The keys of one index bucket that do not depend on a workflow."""

QUEUE_PARTS: Final = ("queued", "seq", "state")
"""The keys of one named queue: its index of runs awaiting admission, the counter that
numbers the index's entries, and the queue's record (``read_queue``, ``write_queue``)."""


def split_url(url: str, prefix: str | None = None) -> tuple[str, str]:
    """Return the URL without its ``prefix`` and ``cluster`` parameters, and the key prefix."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    from_url = [value for key, value in query if key == "prefix"]
    rest = [(key, value) for key, value in query if key not in ("prefix", "cluster")]
    chosen = prefix if prefix is not None else (from_url[-1] if from_url else DEFAULT_PREFIX)
    if not chosen:
        raise _errors.DefinitionError("the Redis key prefix must not be empty")
    if "{" in chosen or "}" in chosen:
        raise _errors.DefinitionError(
            f"the Redis key prefix {chosen!r} contains a brace; braces make Redis Cluster "
            "hash tags, so pick a prefix without them"
        )
    return urlunsplit(parts._replace(query=urlencode(rest))), chosen


def cluster_option(url: str) -> bool | None:
    """The URL's ``cluster`` parameter: ``True``, ``False``, or ``None`` to ask the server."""
    values = [
        v for k, v in parse_qsl(urlsplit(url).query, keep_blank_values=True) if k == "cluster"
    ]
    if not values:
        return None
    value = values[-1].strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise _errors.DefinitionError(
        f"the Redis URL parameter cluster={values[-1]!r} is neither true nor false"
    )


def bucket_of(run_id: str) -> int:
    """The index bucket of a run: the same on every client."""
    return zlib.crc32(_codec.utf8(run_id)) % BUCKETS


class Keys:
    """The keys of one store: every name is ``prefix:{tag}:what``.

    Args:
        prefix: the key prefix (no braces: see :func:`split_url`).
    """

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.channel = f"{prefix}:changes"
        """The channel every script that changes a run's status publishes its id on."""
        self.workers = f"{prefix}:{{{prefix}#workers}}:alive"
        """The workers' liveness records: a sorted set of worker ids by ``alive_until``."""

    def run(self, run_id: str) -> list[str]:
        """The keys of one run: run, events, signals, signal_keys, fence, qfence (one slot)."""
        if run_id and "}" not in run_id:
            base = f"{self.prefix}:{{{run_id}}}:"
            return [base + what for what in RUN_PARTS]
        digest = hashlib.sha1(_codec.utf8(run_id)).hexdigest()
        return [f"{self.prefix}:{{{digest}}}:{what}:{run_id}" for what in RUN_PARTS]

    def of_run(self, run_id: str, what: str) -> str:
        """One key of a run: ``what`` is one of :data:`RUN_PARTS`."""
        return self.run(run_id)[RUN_PARTS.index(what)]

    def bucket(self, bucket: int) -> dict[str, str]:
        """The keys of one index bucket that do not depend on a workflow (one slot)."""
        base = f"{self.prefix}:{{{self.prefix}#{bucket}}}:"
        return {what: base + what for what in BUCKET_PARTS}

    def workflow(self, bucket: int, workflow: str) -> list[str]:
        """The ready and leased sets of one workflow in one bucket."""
        base = f"{self.prefix}:{{{self.prefix}#{bucket}}}:"
        return [f"{base}ready:{workflow}", f"{base}leased:{workflow}"]

    def queue(self, name: str) -> dict[str, str]:
        """The keys of one named queue (one slot): its index, its counter and its record."""
        if name and "}" not in name:
            tag = f"{self.prefix}#q:{name}"
        else:
            tag = f"{self.prefix}#q#" + hashlib.sha1(_codec.utf8(name)).hexdigest()
        base = f"{self.prefix}:{{{tag}}}:"
        return {what: base + what for what in QUEUE_PARTS}
