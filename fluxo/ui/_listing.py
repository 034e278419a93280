"""The runs page's data: its filters read from the address, one page of runs, the counts.

Pages go newest first and are read by key, never by offset, so the hundredth page
costs what the first does: the cursor is the creation time of the last run shown,
with the ids shown at exactly that time (runs created in the same instant are
told apart by id, which no store orders them by).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fluxo import _cli_format, _engine, _errors, _filters, history
from fluxo.ui import _http

PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
STATUSES = tuple(status.value for status in history.RunStatus)


class FilterError(ValueError):
    """A filter in the address cannot be read: the message names it and what it takes."""


@dataclass(frozen=True)
class Filters:
    """What the runs page shows, as read from its address."""

    statuses: tuple[str, ...] = ()
    workflow: str = ""
    id_prefix: str = ""
    since: str = ""
    until: str = ""
    size: int = DEFAULT_PAGE_SIZE
    cursor: str = ""
    created_after: float | None = None
    created_before: float | None = None

    def query(self, **changes: Any) -> dict[str, Any]:
        """The address arguments of these filters (with ``changes``), for links."""
        values: dict[str, Any] = {
            "status": list(self.statuses),
            "workflow": self.workflow,
            "id": self.id_prefix,
            "since": self.since,
            "until": self.until,
            "size": "" if self.size == DEFAULT_PAGE_SIZE else str(self.size),
        }
        values.update(changes)
        return {k: v for k, v in values.items() if v}


def read_filters(request: _http.Request, now: float) -> Filters:
    """The filters of a runs page address, checked; :class:`FilterError` names a bad one."""
    chosen = []
    for word in request.args("status"):
        for part in word.split(","):
            if part and part not in STATUSES:
                raise FilterError(f"status: no status {part!r}; use one of {', '.join(STATUSES)}")
            if part and part not in chosen:
                chosen.append(part)
    size_text = request.arg("size") or str(DEFAULT_PAGE_SIZE)
    if not size_text.isdigit() or int(size_text) not in PAGE_SIZES:
        raise FilterError(
            f"size: {size_text!r} is not a page size; use one of {', '.join(map(str, PAGE_SIZES))}"
        )
    since, until = request.arg("since").strip(), request.arg("until").strip()
    after = _time("since", since, now)
    before = _time("until", until, now)
    if after is not None and before is not None and after > before:
        raise FilterError(f"since ({since}) is later than until ({until})")
    prefix = request.arg("id")
    try:
        _filters.id_prefix(prefix)
    except _errors.FluxoError as exc:
        raise FilterError(f"id: {exc}") from None
    cursor = request.arg("after")
    if cursor:
        decode_cursor(cursor)  # a damaged link is named now, not half way through the page
    return Filters(
        statuses=tuple(chosen),
        workflow=request.arg("workflow").strip(),
        id_prefix=prefix,
        since=since,
        until=until,
        size=int(size_text),
        cursor=cursor,
        created_after=after,
        created_before=before,
    )


def _time(name: str, text: str, now: float) -> float | None:
    if not text:
        return None
    try:
        return _cli_format.parse_time(text.replace(" ", "T"), now)
    except ValueError as exc:
        raise FilterError(f"{name}: {exc}") from None


def encode_cursor(created_at: float, ids: list[str]) -> str:
    """The ``after`` argument that continues after a run created at ``created_at``."""
    raw = json.dumps([created_at, ids], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, frozenset[str]]:
    """Read an ``after`` argument; :class:`FilterError` when it was not written here."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        created_at, ids = json.loads(raw)
        if not isinstance(created_at, (int, float)) or not math.isfinite(created_at):
            raise ValueError
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError
    except (ValueError, TypeError, binascii.Error):
        raise FilterError(
            "after: this page link is damaged; go back to the first page of runs"
        ) from None
    return float(created_at), frozenset(ids)


@dataclass
class Page:
    """One page of runs, and the cursor of the next (``""``: this is the last)."""

    runs: list[history.RunInfo] = field(default_factory=list)
    next_cursor: str = ""


def read_page(engine: _engine.Engine, filters: Filters) -> Page:
    """The page of runs that ``filters`` names, newest first, through the store's indexes."""
    before, shown = filters.created_before, frozenset[str]()
    cursor_at: float | None = None
    if filters.cursor:
        cursor_at, shown = decode_cursor(filters.cursor)
        # Up to and including the cursor's instant: the runs shown there are skipped below.
        edge = math.nextafter(cursor_at, math.inf) + 1e-6
        before = edge if before is None else min(before, edge)
    want = filters.size + 1  # one more tells whether a next page exists
    fetch = want + len(shown)
    while True:
        runs = engine.list_runs(
            status=list(filters.statuses) or None,
            workflow=filters.workflow or None,
            created_after=filters.created_after,
            created_before=before,
            id_prefix=filters.id_prefix or None,
            limit=fetch,
        )
        kept = [
            run
            for run in runs
            if cursor_at is None
            or run.created_at < cursor_at
            or (run.created_at == cursor_at and run.id not in shown)
        ]
        if len(kept) >= want or len(runs) < fetch:
            break
        fetch *= 4  # many runs shared the cursor's instant: read past them
    page = Page(kept[: filters.size])
    if len(kept) > filters.size and page.runs:
        last = page.runs[-1].created_at
        same = [run.id for run in page.runs if run.created_at == last]
        if cursor_at == last:
            same.extend(shown)
        page.next_cursor = encode_cursor(last, same)
    return page


class Counts:
    """How many runs there are in each status, per workflow; read at most every ``ttl`` s.

    ``Store.count_runs`` reads every run, so the page fetches the counts after it
    has shown, and busy dashboards share one reading.
    """

    def __init__(self, read: Callable[[], dict[tuple[str, history.RunStatus], int]]) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._kept: tuple[float, dict[tuple[str, history.RunStatus], int]] | None = None

    def get(self, workflow: str = "", *, ttl: float = 2.0) -> dict[str, int]:
        """The counts per status (every status present, zeros included)."""
        with self._lock:
            if self._kept is None or time.monotonic() - self._kept[0] > ttl:
                self._kept = (time.monotonic(), self._read())
            counts = self._kept[1]
        totals = dict.fromkeys(STATUSES, 0)
        for (name, status), count in counts.items():
            if not workflow or name == workflow:
                totals[status.value] += count
        return totals
