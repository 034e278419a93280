"""Queues as users declare them: ``fluxo.Queue``, and the queue options of a start.

A workflow or a start names a queue; an engine (and so its workers) is given the
:class:`Queue` objects that carry the limits. The admission under those limits is
:mod:`fluxo._queues`; what the store keeps is in :class:`fluxo.stores.Store`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from fluxo import _errors, _names, history

DEFAULT = "default"
"""The name users give the default queue; it is stored as ``history.DEFAULT_QUEUE`` (``""``)."""


def stored(name: str) -> str:
    """The stored name of the queue users call ``name`` (``"default"`` is ``""``)."""
    return history.DEFAULT_QUEUE if name == DEFAULT else name


def shown(queue: str) -> str:
    """The name users call the queue stored as ``queue``."""
    return DEFAULT if queue == history.DEFAULT_QUEUE else queue


def _limit(problems: list[str], name: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        problems.append(f"{name} must be a whole number >= 1 or None (no limit), not {value!r}")


@dataclass(frozen=True)
class Queue:
    """A named queue and its limits, enforced across every worker that serves it.

    Args:
        name: the queue's name (what ``@fluxo.workflow(queue=...)``,
            ``.options(queue=...)`` and ``fluxo worker --queue`` say).
        concurrency: the most runs of the queue admitted and not finished at
            once, across all workers. A run holds its slot from admission until
            it finishes: a run that sleeps or waits for a signal keeps it.
        worker_concurrency: the most runs of the queue one worker executes at once.
        rate: the most admissions per ``per``; give both or neither.
        per: the rate's period: a ``timedelta`` or seconds.
        partition_concurrency: the most runs admitted and not finished at once
            with the same ``partition=`` (runs without a partition are not counted).

    Every worker must be given the same queues (``Engine(queues=[...])``): each
    admits by its own view of the limits.

    Example:
        >>> payments = fluxo.Queue("payments", concurrency=10, worker_concurrency=2)
        >>> emails = fluxo.Queue("emails", rate=100, per=timedelta(minutes=1))
    """

    name: str
    concurrency: int | None = field(default=None, kw_only=True)
    worker_concurrency: int | None = field(default=None, kw_only=True)
    rate: int | None = field(default=None, kw_only=True)
    per: float | None = field(default=None, kw_only=True)
    partition_concurrency: int | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        problems: list[str] = []
        name_problem = queue_name_problem(self.name)
        if name_problem:
            problems.append(name_problem)
        for what in ("concurrency", "worker_concurrency", "rate", "partition_concurrency"):
            _limit(problems, what, getattr(self, what))
        per: Any = self.per
        if isinstance(per, timedelta):
            per = per.total_seconds()
        if per is not None and (
            isinstance(per, bool) or not isinstance(per, (int, float)) or not 0 < per < math.inf
        ):
            problems.append(f"per must be a timedelta or a number of seconds > 0, not {per!r}")
        elif per is not None:
            object.__setattr__(self, "per", float(per))
        if (self.rate is None) != (self.per is None):
            problems.append(
                "rate and per go together: rate=10, per=timedelta(seconds=1) admits at most "
                "10 runs a second"
            )
        if self.name == DEFAULT and self.limited:
            problems.append(
                "the default queue has no limits (its runs are ready as soon as they start); "
                "put these workflows in a named queue, such as "
                "@fluxo.workflow(queue='payments'), and give that queue the limits"
            )
        if problems:
            raise _errors.DefinitionError(f"invalid Queue({self.name!r}): " + "; ".join(problems))

    @property
    def limited(self) -> bool:
        """True when the queue has any limit."""
        return any(
            value is not None
            for value in (
                self.concurrency,
                self.worker_concurrency,
                self.rate,
                self.partition_concurrency,
            )
        )


def queue_name_problem(name: object) -> str | None:
    """Why ``name`` cannot name a queue, or ``None`` when it can."""
    if not isinstance(name, str) or not name or len(name) > _names.MAX_ID_LENGTH:
        return (
            f"a queue name must be a non-empty string of at most {_names.MAX_ID_LENGTH} "
            f"characters, not {_errors.quoted(name)}"
        )
    problem = _names.name_problem(name)
    return None if problem is None else _names.name_rule("the queue name", name, problem)


def queue_name(value: object, what: str) -> str:
    """The name of the queue ``value`` gives (a name or a :class:`Queue`), or raise.

    Raises:
        DefinitionError: naming ``what`` and the rule.
    """
    if isinstance(value, Queue):
        return value.name
    problem = queue_name_problem(value)
    if problem is not None:
        raise _errors.DefinitionError(f"{what} takes a queue name or a fluxo.Queue: {problem}")
    assert isinstance(value, str)
    return value


def engine_queues(queues: Iterable[Queue]) -> dict[str, Queue]:
    """The queues an engine is given, by name; refuse anything else and duplicates.

    Raises:
        DefinitionError: a value that is not a ``Queue``, or one name given twice
            with other limits.
    """
    if isinstance(queues, (str, bytes)) or not isinstance(queues, Iterable):
        raise _errors.DefinitionError(f"queues= takes a list of fluxo.Queue, not {queues!r}")
    found: dict[str, Queue] = {}
    for queue in queues:
        if not isinstance(queue, Queue):
            raise _errors.DefinitionError(
                f"queues= takes fluxo.Queue objects, not {queue!r}; declare it as "
                f"fluxo.Queue({queue!r}, concurrency=...)"
            )
        other = found.get(queue.name)
        if other is not None and other != queue:
            raise _errors.DefinitionError(
                f"queue {queue.name!r} is given twice with other limits ({other} and {queue}); "
                "give it once"
            )
        found[queue.name] = queue
    return found


def served(names: Iterable[object] | None, known: Iterable[str]) -> list[str]:
    """The stored names of the queues a worker serves (``None``: ``known`` and the default).

    Raises:
        DefinitionError: an empty list, or a value that names no queue.
    """
    if names is None:
        return sorted({history.DEFAULT_QUEUE, *(stored(name) for name in known)})
    if isinstance(names, (str, bytes, Queue)) or not isinstance(names, Iterable):
        raise _errors.DefinitionError(
            f"queues= takes a list of queue names, such as ['payments', 'default'], not {names!r}"
        )
    chosen = sorted({stored(queue_name(name, "queues=")) for name in names})
    if not chosen:
        raise _errors.DefinitionError(
            "queues= is empty, so the worker would claim nothing; name at least one queue "
            "(the default queue is 'default'), or leave it out to serve every queue"
        )
    return chosen


def check_priority(priority: object) -> int:
    """An admission priority: a whole number (higher is admitted first)."""
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise _errors.DefinitionError(
            f"priority= takes a whole number (higher is admitted first; 0 by default), "
            f"not {priority!r}"
        )
    if not -(2**31) <= priority < 2**31:
        raise _errors.DefinitionError(
            f"priority= takes a number from -2**31 to 2**31 - 1, which every store keeps, "
            f"not {priority}"
        )
    return priority


def check_partition(partition: object) -> str | None:
    """A partition key: ``None``, or text following the id rules."""
    if partition is None:
        return None
    if not isinstance(partition, str) or not partition or len(partition) > _names.MAX_ID_LENGTH:
        raise _errors.DefinitionError(
            f"partition= takes None or a non-empty string of at most {_names.MAX_ID_LENGTH} "
            f"characters (such as a customer id), not {_errors.quoted(partition)}"
        )
    return _names.check_name("the partition", partition)


def check_start_at(start_at: object) -> float | None:
    """A start time as seconds since the epoch: from an aware datetime or a number.

    Raises:
        DefinitionError: a naive datetime (its zone is unknown), or another type.
    """
    if start_at is None:
        return None
    if isinstance(start_at, datetime):
        if start_at.tzinfo is None or start_at.utcoffset() is None:
            raise _errors.DefinitionError(
                f"start_at= takes an aware datetime, not the naive {start_at.isoformat()}; "
                "give it a time zone, such as datetime(..., tzinfo=timezone.utc)"
            )
        return start_at.timestamp()
    if isinstance(start_at, bool) or not isinstance(start_at, (int, float)):
        raise _errors.DefinitionError(
            f"start_at= takes an aware datetime or seconds since the epoch, not {start_at!r}"
        )
    if not math.isfinite(start_at):
        raise _errors.DefinitionError(f"start_at= takes a finite time, not {start_at!r}")
    return float(start_at)


@dataclass(frozen=True)
class StartOptions:
    """The queue options a start binds (``workflow.options(...)``); ``None``: not given."""

    queue: str | None = None
    priority: int | None = None
    partition: str | None = None
    start_at: float | None = None


NO_OPTIONS = StartOptions()


class Startable(Protocol):
    """A workflow as a start sees it (:class:`fluxo.Workflow`)."""

    name: str
    queue: str
    start_queue: StartOptions


def bind(queue: object, priority: object, partition: object, start_at: object) -> StartOptions:
    """The options of ``workflow.options(...)``, checked."""
    return StartOptions(
        queue=None if queue is None else queue_name(queue, "queue="),
        priority=None if priority is None else check_priority(priority),
        partition=check_partition(partition),
        start_at=check_start_at(start_at),
    )


def create_args(wf: Startable, *, inherited: history.RunInfo | None = None) -> dict[str, Any]:
    """The queue arguments of ``Store.create_run`` for a start of ``wf``.

    The start's options come first, then (for a run that goes on from another:
    a successor, a fork) the other run's queue, priority and partition, then the
    workflow's own queue. Empty for a start in the default queue with no options,
    so such a start writes exactly what it wrote before queues existed.
    """
    options = wf.start_queue
    queue = options.queue
    priority = options.priority
    partition = options.partition
    if inherited is not None:
        queue = shown(inherited.queue) if queue is None else queue
        priority = inherited.priority if priority is None else priority
        partition = inherited.partition if partition is None else partition
    if queue is None:
        queue = wf.queue
    args: dict[str, Any] = {}
    if stored(queue) != history.DEFAULT_QUEUE:
        args["queue"] = stored(queue)
    if priority:
        args["priority"] = priority
    if partition is not None:
        args["partition"] = partition
    if options.start_at is not None:
        args["start_at"] = options.start_at
    return args


def inherit(run: history.RunInfo) -> dict[str, Any]:
    """The queue arguments of ``Store.create_run`` for a run that goes in ``run``'s place."""
    args: dict[str, Any] = {}
    if run.queue != history.DEFAULT_QUEUE:
        args["queue"] = run.queue
    if run.priority:
        args["priority"] = run.priority
    if run.partition is not None:
        args["partition"] = run.partition
    return args


def check_inline(wf: Startable, args: dict[str, Any]) -> None:
    """Refuse ``engine.run`` of a start that would await admission or start later.

    Raises:
        DefinitionError: naming the workflow, the queue or ``start_at``, and the fix.
    """
    if "queue" in args:
        raise _errors.DefinitionError(
            f"engine.run() executes {wf.name!r} here and now, but its runs are in queue "
            f"{args['queue']!r}, whose limits admit them; start it with "
            "engine.start(...) and wait with handle.result(), and run a worker serving "
            "that queue"
        )
    if "start_at" in args:
        raise _errors.DefinitionError(
            f"engine.run() executes {wf.name!r} now, so it takes no start_at=; start it "
            "with engine.start(...) and wait with handle.result()"
        )
