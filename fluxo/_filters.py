"""What ``engine.list_runs`` and ``engine.purge`` select runs by: statuses, workflows, times, ids.

Each is checked before anything reaches a store, and an error names the argument
and what it takes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Collection, Iterable
from datetime import datetime, timedelta
from typing import Any

from fluxo import _definitions, _durations, _errors, _names, history, stores

log = logging.getLogger("fluxo._engine")  # the purge's lines keep the engine's logger


def statuses(
    status: history.RunStatus | str | Iterable[history.RunStatus | str],
) -> list[history.RunStatus]:
    """One status or several, checked."""
    single = isinstance(status, (str, history.RunStatus)) or not isinstance(status, Iterable)
    items = [status] if single else list(status)
    try:
        return [history.RunStatus(s) for s in items]
    except ValueError:
        raise _errors.DefinitionError(
            f"unknown run status in {status!r}; use one of {[s.value for s in history.RunStatus]}"
        ) from None


def workflow_names(
    workflow: str
    | _definitions.Workflow[Any, Any]
    | Iterable[str | _definitions.Workflow[Any, Any]],
) -> list[str]:
    """The names (and aliases) of one workflow or several, given as objects or names."""
    chosen: list[Any] = (
        list(workflow)
        if isinstance(workflow, Iterable) and not isinstance(workflow, str)
        else [workflow]
    )
    names: list[str] = []
    for item in chosen:
        if isinstance(item, _definitions.Workflow):
            names.extend(item.names)
        elif isinstance(item, str):
            names.append(item)
        else:
            raise _errors.DefinitionError(
                f"workflow= takes a workflow, a workflow name or a list of them, not {item!r}"
            )
    return names


def id_prefix(prefix: object) -> str | None:
    """The ``id_prefix`` of a listing, checked: text a run id can start with (``""``: none)."""
    if prefix is None:
        return None
    if not isinstance(prefix, str):
        raise _errors.DefinitionError(
            f"id_prefix takes a string (the start of the run ids to list), not {prefix!r}"
        )
    if len(prefix) > _names.MAX_ID_LENGTH:
        raise _errors.DefinitionError(
            f"id_prefix is {len(prefix)} characters long, and no run id is longer than "
            f"{_names.MAX_ID_LENGTH}; pass the start of an id"
        )
    return _names.check_name("id_prefix", prefix) or None


def listing(
    status: history.RunStatus | str | Iterable[history.RunStatus | str] | None,
    workflow: str
    | _definitions.Workflow[Any, Any]
    | Iterable[str | _definitions.Workflow[Any, Any]]
    | None,
    window: tuple[datetime | float | None, datetime | float | None],
    limit: object,
    prefix: object,
) -> dict[str, Any]:
    """The keyword arguments of ``Store.list_runs`` for ``engine.list_runs``'s, checked.

    ``window`` is ``(created_after, created_before)``.

    ``id_prefix`` is passed only when it filters, so a store written before it still works.
    """
    chosen: dict[str, Any] = {
        "statuses": None if status is None else statuses(status),
        "workflows": None if workflow is None else workflow_names(workflow),
    }
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise _errors.DefinitionError(f"limit must be a positive whole number, not {limit!r}")
    chosen.update(limit=limit, **creation_window(*window))
    checked = id_prefix(prefix)
    if checked:
        chosen["id_prefix"] = checked
    return chosen


def epoch(name: str, value: datetime | float) -> float:
    """Seconds since the epoch for an aware datetime or a number, checked."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise _errors.DefinitionError(
                f"{name} is a naive datetime ({value.isoformat()}); give it a time zone, "
                "for example datetime(2030, 1, 1, tzinfo=timezone.utc)"
            )
        return value.timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    raise _errors.DefinitionError(
        f"{name} takes an aware datetime or seconds since the epoch, not {value!r}"
    )


def creation_window(
    created_after: datetime | float | None, created_before: datetime | float | None
) -> dict[str, float]:
    """The ``created_after``/``created_before`` bounds given, in seconds (only those given)."""
    window: dict[str, float] = {}
    if created_after is not None:
        window["created_after"] = epoch("created_after", created_after)
    if created_before is not None:
        window["created_before"] = epoch("created_before", created_before)
    if window.get("created_after", -math.inf) > window.get("created_before", math.inf):
        raise _errors.DefinitionError(
            f"created_after ({created_after!r}) is later than created_before "
            f"({created_before!r}), so no run could match; swap them"
        )
    return window


def purge_cutoff(older_than: timedelta | datetime | float, now: float) -> float:
    """The time before which a run must have finished for ``engine.purge`` to delete it."""
    if isinstance(older_than, datetime):
        moment = epoch("older_than", older_than)
        if moment > now:
            raise _errors.DefinitionError(
                f"older_than ({older_than.isoformat()}) is in the future, so every finished "
                "run would go; pass a moment in the past or an age such as "
                "timedelta(days=30)"
            )
        return moment
    age = _durations.to_seconds(older_than)
    if age is None:
        raise _errors.DefinitionError(
            "older_than takes an age (a timedelta, or seconds) or an aware datetime, "
            f"not {older_than!r}"
        )
    if not math.isfinite(age) or age < 0:
        raise _errors.DefinitionError(
            f"older_than must be an age of zero or more, not {older_than!r}; for example "
            "timedelta(days=30)"
        )
    return now - age


def purge_statuses(
    status: history.RunStatus | str | Iterable[history.RunStatus | str] | None,
) -> list[history.RunStatus]:
    """The finished statuses a purge takes: all of them by default; never an active one."""
    if status is None:
        return [s for s in history.RunStatus if s.is_terminal]
    chosen = statuses(status)
    active = [s.value for s in chosen if not s.is_terminal]
    if active:
        raise _errors.DefinitionError(
            f"purge deletes finished runs only, and {', '.join(map(repr, active))} is "
            "not finished; pick among 'completed', 'failed', 'cancelled' and 'dead' "
            "(cancel a run to purge it once it has ended)"
        )
    return chosen


def check_batch(batch: object, most: int) -> None:
    """Refuse a purge batch that is not a whole number from 1 to ``most``."""
    if not isinstance(batch, int) or isinstance(batch, bool) or not 0 < batch <= most:
        raise _errors.DefinitionError(
            f"batch must be a whole number from 1 to {most:,}, not {batch!r}"
        )


MAX_BATCH = 10_000
"""The most runs :meth:`Engine.purge` deletes in one transaction."""
_COUNT_ALL = 2**31 - 1
"""The limit of a dry run: every run (within what an SQL ``LIMIT`` takes)."""


def purge(
    store: stores.Store,
    cutoff: float,
    statuses: Collection[history.RunStatus],
    workflows: Collection[str] | None,
    batch: int,
    *,
    dry_run: bool,
) -> int:
    """``Engine.purge`` with checked arguments: batches until none is left; how many went."""
    if dry_run:
        return store.purge(
            finished_before=cutoff,
            statuses=statuses,
            workflows=workflows,
            limit=_COUNT_ALL,
            dry_run=True,
        )
    total = 0
    while deleted := store.purge(
        finished_before=cutoff, statuses=statuses, workflows=workflows, limit=batch
    ):
        total += deleted
        log.debug("purge: %d runs deleted (%d so far)", deleted, total)
    log.info("purge: %d finished runs deleted", total)
    return total
