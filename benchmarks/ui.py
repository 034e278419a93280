"""How fast the dashboard (``fluxo ui``) answers on a store of many runs, through a real server.

For every store it seeds a scratch store, starts ``fluxo ui --store URL --port 0``
in a process of its own, and requests its pages over HTTP/1.1 from this process
(a new loopback connection per request, ``Connection: close``). For each page it
prints the median and the 95th percentile (nearest rank) of ``--repeat`` requests,
after two unmeasured ones:

* TTFB: from the request's ``sendall`` to the return of the first ``recv`` (the
  first byte of the response). The dashboard builds a page whole before it sends
  the headers, so TTFB is the server's time and ``total`` adds the transfer;
* total: from the same instant to the end of the response (the server's close).

The pages:

* ``/``: the first page of runs (50, newest first);
* ``/?status=failed``: one status that 0.5% of the runs have;
* ``/?workflow=shop.refund``: one of four workflows (15% of the runs);
* ``/?status=failed&workflow=shop.refund``: both filters (0.075% of the runs);
* ``/?status=pending&status=running&status=waiting``: the active runs (4.5%);
* ``/?id=<2 hex digits>``: an id prefix that about 1 run in 256 has;
* page 21: the ``rel="next"`` link followed 20 times from ``/`` (runs 1,001-1,050);
* a page in the middle: the link the dashboard writes after the 50,000th run;
* ``/counts``: the counts per status (the runs page fetches them once it has
  shown): one scan of every run. The dashboard keeps a reading for 2 s, so each
  of these requests waits 2.1 s first and is a new reading;
* ``/run?id=bench-ui-long``: the page of a run of ``--events`` events, with its
  size; and, in this process, the same page's parts (``Store.load``,
  ``describe_run``, ``_timeline.build``, the template's render) timed on the same
  code path (``Dashboard.handle``), to say where its time goes.

Then the SQL behind each runs page (captured from ``_listing.read_page``) is
explained: ``EXPLAIN (ANALYZE, BUFFERS)`` on PostgreSQL, ``EXPLAIN QUERY PLAN``
on SQLite, with the indexes it reads, whether it scans the table or sorts, and
its time here.

The seeded data (``--runs`` runs, 100,000 by default), the same for every store
and every run of the benchmark (a fixed random seed):

* runs of four workflows, ``shop.checkout`` (50%), ``mail.digest`` (30%),
  ``shop.refund`` (15%) and ``report.nightly`` (5%), of three steps each;
* created over the 7 days before the benchmark, about 6 s apart, ids of 32 hex
  digits (a random UUID4, as ``engine.start`` gives), each with its own time;
* statuses: 94% completed, 2.5% waiting (on a 1 h timer; ``shop.refund`` on a
  signal), 1.5% pending, 1% cancelled (while waiting), 0.5% failed (a step
  raised), 0.5% running (leased, one step done);
* histories: each workflow is executed for real once per outcome, by a worker on
  the memory store, and each seeded run is written through the store's own API
  with a copy of that history: ``create_run`` (which records ``WorkflowStarted``),
  then one ``append`` of the rest with the final status, as the engine records a
  run's end (pending runs: ``create_run`` alone; running runs: ``create_run``
  with a lease, then the first step's event). Rows are written by the store,
  exactly as for real runs; only the times between a run's events are not real;
* one more run, ``bench-ui-long``, executed by ``engine.run`` on the store: a
  step called until the history has ``--events`` events (one attempt in 100
  fails first and is retried at once), so the newest run.

SQLite is seeded with ``?synchronous=normal`` (the same rows, fewer flushes) and
served as a file with the store's defaults. PostgreSQL is seeded from 4 threads
with ``synchronous_commit = off`` on the scratch database (reset before anything
is measured), then ``ANALYZE``d (as autovacuum would be within a minute of that
many inserts).

    python benchmarks/ui.py [--stores sqlite,postgres] [--runs 100000]
        [--events 5000] [--repeat 20] [--json]

``--json`` prints one JSON document instead of the tables. PostgreSQL comes from
``FLUXO_BENCH_POSTGRES_URL`` (default: the local server, database ``postgres``);
a scratch database ``fluxo_bench_ui`` is created there.
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa

import fluxo
from fluxo import _cli_format, history
from fluxo import ui as dashboard_module
from fluxo.stores import sql
from fluxo.stores.sql import _database, _migrate, _statements
from fluxo.ui import _http, _listing, _timeline

if TYPE_CHECKING:
    from sqlalchemy.engine.interfaces import DBAPICursor

DAYS = 7
LONG_ID = "bench-ui-long"
FOLLOW = 20
"""How many ``rel="next"`` links the deep page is reached by."""
COUNTS_TTL = 2.1
"""A little over the dashboard's 2 s reading of the counts."""

# -- the workflows whose histories the seeded runs copy ----------------------------------------


def _act(job: dict[str, Any], what: str) -> dict[str, Any]:
    if job.get("fail") == what:
        raise RuntimeError(f"{what} refused {job['ref']}: card declined")
    return {"ref": job["ref"], "done": what, "ok": True}


reserve = fluxo.step(name="shop.reserve")(_act)
charge = fluxo.step(name="shop.charge")(_act)
ship = fluxo.step(name="shop.ship")(_act)
approve = fluxo.step(name="shop.check_refund")(_act)
refund = fluxo.step(name="shop.refund_payment")(_act)
notify = fluxo.step(name="shop.notify")(_act)
collect = fluxo.step(name="mail.collect")(_act)
render = fluxo.step(name="mail.render")(_act)
send = fluxo.step(name="mail.send")(_act)
gather = fluxo.step(name="report.gather")(_act)
build = fluxo.step(name="report.build")(_act)
publish = fluxo.step(name="report.publish")(_act)


def _flow(job: dict[str, Any], *steps: Any) -> dict[str, Any]:
    done = []
    for i, step in enumerate(steps):
        if i == 1 and job.get("hold") == "timer":
            fluxo.sleep(3600)
        if i == 1 and job.get("hold") == "signal":
            fluxo.wait_for_signal("approve")
        done.append(step(job, step.name)["done"])
    return {"ref": job["ref"], "steps": done}


@fluxo.workflow(name="shop.checkout")
def checkout(job: dict[str, Any]) -> dict[str, Any]:
    return _flow(job, reserve, charge, ship)


@fluxo.workflow(name="shop.refund")
def refund_order(job: dict[str, Any]) -> dict[str, Any]:
    return _flow(job, approve, refund, notify)


@fluxo.workflow(name="mail.digest")
def digest(job: dict[str, Any]) -> dict[str, Any]:
    return _flow(job, collect, render, send)


@fluxo.workflow(name="report.nightly")
def nightly(job: dict[str, Any]) -> dict[str, Any]:
    return _flow(job, gather, build, publish)


WORKFLOWS: list[tuple[fluxo.Workflow[Any, Any], int, str]] = [
    (checkout, 50, "timer"),
    (digest, 30, "timer"),
    (refund_order, 15, "signal"),
    (nightly, 5, "timer"),
]
"""Each workflow, its share of the runs in percent, and what its waiting runs wait for."""

OUTCOMES = [
    ("completed", 940),
    ("waiting", 25),
    ("pending", 15),
    ("cancelled", 10),
    ("failed", 5),
    ("running", 5),
]
"""Each status of the seeded runs and its share, per thousand."""

_flaky_seen: set[int] = set()


@fluxo.step(name="bench.ui.pick", retry=fluxo.Retry(max_attempts=2, initial=0.0))
def pick(i: int) -> dict[str, Any]:
    if i % 100 == 50 and i not in _flaky_seen:
        _flaky_seen.add(i)
        raise RuntimeError(f"item {i}: the warehouse was busy")
    return {"item": i, "sku": f"SKU-{i:05d}", "bin": f"A{i % 40:02d}", "qty": 1 + i % 3}


@fluxo.workflow(name="bench.ui.long")
def long_run(n: int) -> int:
    for i in range(n):
        pick(i)
    return n


def long_steps(events: int) -> int:
    """The most steps whose history (started, steps, failed attempts, end) fits ``events``."""
    n = max(events - 2, 0)
    while n and 2 + n + sum(1 for i in range(n) if i % 100 == 50) > events:
        n -= 1
    return n


# -- seeding ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shape:
    """A real run's history, to write again under other ids."""

    input: bytes
    rest: tuple[history.Event, ...]
    """The events after ``WorkflowStarted``."""
    status: history.RunStatus
    wait: float | None
    """For a waiting run: its ``ready_at`` after its last write (None: until woken)."""


def record_shapes() -> dict[tuple[str, str], Shape]:
    """Execute each workflow once per outcome on the memory store and keep the histories."""
    shapes: dict[tuple[str, str], Shape] = {}
    with fluxo.Engine("memory://", workflows=[w for w, _, _ in WORKFLOWS]) as engine:
        worker = engine.worker(concurrency=1)
        for wf, _, hold in WORKFLOWS:
            for outcome in ("completed", "failed", "waiting", "cancelled"):
                job: dict[str, Any] = {"ref": f"{wf.name}-{outcome}-0001"}
                if outcome == "failed":
                    job["fail"] = list(_STEP_NAMES[wf.name])[1]
                if outcome in ("waiting", "cancelled"):
                    job["hold"] = hold
                handle = engine.start(wf, job)
                worker.process_one()
                if outcome == "cancelled":
                    engine.cancel(handle.id)
                    worker.process_one()
                state = engine.store.load(handle.id)
                run = state.run
                if run.status.value != outcome:
                    raise RuntimeError(f"{wf.name} ended {run.status.value}, not {outcome}")
                wait = None if run.ready_at is None else run.ready_at - run.updated_at
                shapes[wf.name, outcome] = Shape(
                    state.events[0].data or b"", tuple(state.events[1:]), run.status, wait
                )
    return shapes


_STEP_NAMES = {
    "shop.checkout": ("shop.reserve", "shop.charge", "shop.ship"),
    "shop.refund": ("shop.check_refund", "shop.refund_payment", "shop.notify"),
    "mail.digest": ("mail.collect", "mail.render", "mail.send"),
    "report.nightly": ("report.gather", "report.build", "report.publish"),
}


@dataclass(frozen=True)
class Planned:
    id: str
    workflow: str
    outcome: str
    created_at: float
    took: float


def plan(runs: int, end: float) -> list[Planned]:
    """The seeded runs, oldest first: the same ones for every store (a fixed seed)."""
    rng = random.Random(20261207)
    names = [w.name for w, _, _ in WORKFLOWS]
    shares = [share for _, share, _ in WORKFLOWS]
    outcomes = [o for o, _ in OUTCOMES]
    weights = [w for _, w in OUTCOMES]
    gap = DAYS * 86_400 / max(runs, 1)
    start = end - DAYS * 86_400
    return [
        Planned(
            id=uuid.UUID(int=rng.getrandbits(128), version=4).hex,
            workflow=rng.choices(names, shares)[0],
            outcome=rng.choices(outcomes, weights)[0],
            created_at=start + (i + rng.random() * 0.9) * gap,
            took=0.05 + rng.random() * 2,
        )
        for i in range(runs)
    ]


def write(store: fluxo.Store, shapes: dict[tuple[str, str], Shape], run: Planned) -> None:
    """Write one seeded run through the store, as the engine would have."""
    done = shapes[run.workflow, "completed"]
    at = run.created_at
    if run.outcome == "running":
        store.create_run(
            run.id, run.workflow, done.input, now=at, owner="bench-ui:1", lease_until=at + 30
        )
        store.append(run.id, 1, done.rest[:1], now=at + run.took)
        return
    shape = shapes.get((run.workflow, run.outcome), done)
    store.create_run(run.id, run.workflow, shape.input, now=at)
    if run.outcome == "pending":
        return
    end = at + run.took
    store.append(
        run.id,
        1,
        shape.rest,
        now=end,
        status=shape.status,
        ready_at=None if shape.wait is None else end + shape.wait,
    )


def seed(url: str, planned: list[Planned], threads: int) -> float:
    """Write the planned runs through the store at ``url``; returns the seconds it took."""
    shapes = record_shapes()
    _migrate.upgrade(url)  # the tables first, untimed
    store = fluxo.open_store(url)
    started = time.perf_counter()
    try:
        if threads <= 1:
            for run in planned:
                write(store, shapes, run)
        else:
            size = math.ceil(len(planned) / threads)

            def part(k: int) -> None:
                for run in planned[k * size : (k + 1) * size]:
                    write(store, shapes, run)

            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(part, range(threads)))
    finally:
        store.close()
    return time.perf_counter() - started


def add_long_run(url: str, events: int) -> tuple[int, float]:
    """Execute the long run on the store; returns its number of events and the seconds."""
    _flaky_seen.clear()
    started = time.perf_counter()
    with fluxo.Engine(url, workflows=[long_run]) as engine:
        engine.run(long_run.options(id=LONG_ID), long_steps(events))
        count = len(engine.history(LONG_ID))
    return count, time.perf_counter() - started


def scratch_database(admin_url: str, name: str) -> str:
    """A new empty PostgreSQL database on the server of ``admin_url``; returns its URL."""
    admin = sa.create_engine(sql.normalize_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
            # Seeding commits without waiting for the disk; bench_store resets it.
            conn.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit = off')
    finally:
        admin.dispose()
    return sql.normalize_url(admin_url).set(database=name).render_as_string(hide_password=False)


# -- the server and its pages -------------------------------------------------------------------


@contextmanager
def ui_server(url: str) -> Iterator[tuple[str, int]]:
    """``fluxo ui --store URL`` on a free port of 127.0.0.1; yields its address."""
    command = [str(Path(sys.executable).with_name("fluxo")), "ui", "--store", url, "--port", "0"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = re.search(r"http://([0-9.]+):([0-9]+)/", line)
        if found is None:
            raise RuntimeError(f"fluxo ui did not start (it printed {line!r})")
        yield found[1], int(found[2])
    finally:
        proc.terminate()
        proc.wait(30)


@dataclass
class Reply:
    status: int
    ttfb: float
    total: float
    body: bytes


def fetch(address: tuple[str, int], target: str) -> Reply:
    """GET ``target`` on a new connection, timing the first byte and the last."""
    request = (
        f"GET {target} HTTP/1.1\r\nHost: {address[0]}:{address[1]}\r\n"
        "Accept: text/html\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(address) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.perf_counter()
        sock.sendall(request)
        first = sock.recv(65536)
        ttfb = time.perf_counter() - started
        chunks = [first]
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        total = time.perf_counter() - started
    if not first:
        raise RuntimeError(f"GET {target}: the server closed the connection without answering")
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if b"\r\ntransfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return Reply(int(head.split(b" ", 2)[1]), ttfb, total, body)


def _dechunk(data: bytes) -> bytes:
    out, pos = bytearray(), 0
    while True:
        end = data.index(b"\r\n", pos)
        size = int(data[pos:end].split(b";")[0], 16)
        if size == 0:
            return bytes(out)
        out += data[end + 2 : end + 2 + size]
        pos = end + 4 + size


def next_link(body: bytes) -> str:
    found = re.search(rb'<a rel="next" href="([^"]+)"', body)
    if found is None:
        raise RuntimeError("the runs page has no next link: seed more runs (--runs)")
    return html.unescape(found[1].decode())


def stats(samples: Sequence[float]) -> dict[str, float]:
    """Median and 95th percentile (nearest rank), in milliseconds."""
    ordered = sorted(samples)
    p95 = ordered[max(math.ceil(0.95 * len(ordered)) - 1, 0)]
    return {"median_ms": statistics.median(ordered) * 1e3, "p95_ms": p95 * 1e3}


def measure_page(
    address: tuple[str, int], target: str, repeat: int, *, pause: float = 0.0
) -> dict[str, Any]:
    """Request ``target`` twice unmeasured, then ``repeat`` times."""
    ttfb, total = [], []
    reply = None
    for i in range(2 + repeat):
        if pause:
            time.sleep(pause)
        reply = fetch(address, target)
        if reply.status != 200:
            excerpt = reply.body[:300].decode(errors="replace")
            raise RuntimeError(f"GET {target} answered {reply.status}: {excerpt}")
        if i >= 2:
            ttfb.append(reply.ttfb)
            total.append(reply.total)
    assert reply is not None
    return {
        "target": target,
        "ttfb": stats(ttfb),
        "total": stats(total),
        "bytes": len(reply.body),
        "rows": reply.body.count(b"<tr data-run="),
    }


def run_page_parts(url: str, repeat: int) -> dict[str, dict[str, float]]:
    """The long run's page answered in this process, its parts timed on the same code path."""
    samples: dict[str, list[float]] = defaultdict(list)

    def timed(label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            begun = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                samples[label].append(time.perf_counter() - begun)

        return call

    real_describe, real_build = _cli_format.describe_run, _timeline.build
    with fluxo.Engine(url, workflows=[]) as engine:
        dashboard = dashboard_module.Dashboard(engine)
        pages = dashboard._pages
        store: Any = engine.store
        store.load = timed("store.load", store.load)
        pages.render = timed("template render", pages.render)
        _cli_format.describe_run = timed("describe_run", real_describe)
        _timeline.build = timed("_timeline.build", real_build)
        request = _http.Request("GET", "/run", "", {"id": [LONG_ID]}, {"host": "127.0.0.1"})
        try:
            for i in range(2 + repeat):
                if i == 2:
                    samples.clear()
                begun = time.perf_counter()
                reply = dashboard.handle(request)
                samples["whole page"].append(time.perf_counter() - begun)
                if not isinstance(reply, _http.Response) or reply.status != 200:
                    raise RuntimeError(f"the page of run {LONG_ID} did not answer 200")
        finally:
            _cli_format.describe_run = real_describe
            _timeline.build = real_build
            dashboard.close()
    parts = ("store.load", "describe_run", "_timeline.build", "template render")
    rest = [
        whole - sum(samples[p][i] for p in parts) for i, whole in enumerate(samples["whole page"])
    ]
    samples["the rest (events table rows, headers)"] = rest
    return {label: stats(values) for label, values in samples.items()}


# -- query plans --------------------------------------------------------------------------------


def captured_sql(url: str, targets: Sequence[tuple[str, str]]) -> list[tuple[str, str, Any]]:
    """The statement each runs page sends to the store (label, SQL, its parameters)."""
    seen: list[tuple[str, Any]] = []
    real = _database.execute

    def capture(cur: DBAPICursor, sql: _statements.Sql, values: Mapping[str, Any]) -> DBAPICursor:
        seen.append((sql.text, sql.args(values)))
        return real(cur, sql, values)

    found = []
    with fluxo.Engine(url, workflows=[]) as engine:
        _database.execute = capture
        try:
            for label, target in targets:
                seen.clear()
                if target == "count_runs":
                    engine.store.count_runs()
                else:
                    query = parse_qs(urlsplit(target).query, keep_blank_values=True)
                    filters = _listing.read_filters(_http.Request("GET", "/", "", query), 0.0)
                    _listing.read_page(engine, filters)
                text, args = [s for s in seen if "fluxo_runs" in s[0]][-1]
                found.append((label, text, args))
        finally:
            _database.execute = real
    return found


def explain(url: str, dialect: str, targets: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
    """Each statement's plan, the indexes it reads, scans and sorts, and its time here."""
    results = []
    engine = sa.create_engine(sql.normalize_url(url))
    try:
        with engine.connect() as conn:
            for label, text, args in captured_sql(url, targets):
                times = []
                for _ in range(7):
                    begun = time.perf_counter()
                    conn.exec_driver_sql(text, args).fetchall()
                    times.append(time.perf_counter() - begun)
                entry: dict[str, Any] = {
                    "query": label,
                    "sql": " ".join(text.split()),
                    "median_ms": statistics.median(times[2:]) * 1e3,
                }
                if dialect == "postgresql":
                    lines = conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + text, args)
                    entry["plan"] = [row[0] for row in lines]
                    doc = conn.exec_driver_sql(
                        "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + text, args
                    ).scalar_one()
                    doc = json.loads(doc) if isinstance(doc, str) else doc
                    entry.update(_pg_verdict(doc[0]["Plan"]))
                else:
                    rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + text, args).fetchall()
                    entry["plan"] = [str(row[3]) for row in rows]
                    entry.update(_sqlite_verdict(entry["plan"]))
                results.append(entry)
            conn.rollback()
    finally:
        engine.dispose()
    return results


def _pg_verdict(root: dict[str, Any]) -> dict[str, Any]:
    indexes: list[str] = []
    scans: list[str] = []
    sorts: list[str] = []
    read = 0

    def walk(node: dict[str, Any]) -> None:
        nonlocal read
        kind = node["Node Type"]
        loops = node.get("Actual Loops", 1)
        if "Index Name" in node:
            indexes.append(node["Index Name"])
        if kind == "Seq Scan":
            scans.append(node.get("Relation Name", "?"))
        if kind.endswith("Scan") and kind != "Bitmap Index Scan":
            read += (node["Actual Rows"] + node.get("Rows Removed by Filter", 0)) * loops
        if kind == "Sort":
            rows = node["Plans"][0]["Actual Rows"] * loops
            sorts.append(f"Sort ({node.get('Sort Method', '?')}) of {rows:,} rows")
        if kind == "Incremental Sort":
            rows = node["Plans"][0]["Actual Rows"] * loops
            presorted = ", ".join(node.get("Presorted Key", []))
            sorts.append(f"Incremental Sort of {rows:,} rows (presorted by {presorted})")
        for child in node.get("Plans", []):
            walk(child)

    walk(root)
    return {
        "indexes": indexes,
        "full_scan": bool(scans),
        "sorts": sorts,
        "rows_read": read,
        "buffers": root.get("Shared Hit Blocks", 0) + root.get("Shared Read Blocks", 0),
        "cost": root["Total Cost"],
        "db_ms": root["Actual Total Time"],
    }


def _sqlite_verdict(plan: list[str]) -> dict[str, Any]:
    indexes = [
        m[1] for line in plan if (m := re.search(r"USING (?:COVERING )?INDEX (\w+)", line))
    ] + ["primary key" for line in plan if "PRIMARY KEY" in line]
    return {
        "indexes": indexes,
        "full_scan": any(re.fullmatch(r"SCAN fluxo_runs", line) for line in plan),
        "sorts": [line for line in plan if "TEMP B-TREE" in line],
    }


# -- one store ----------------------------------------------------------------------------------


def bench_store(name: str, url: str, seed_url: str, args: argparse.Namespace) -> dict[str, Any]:
    say = _progress
    planned = plan(args.runs, time.time() - 60)
    say(f"{name}: seeding {args.runs:,} runs")
    seeded = seed(seed_url, planned, 4 if name == "postgres" else 1)
    if name == "postgres":
        _postgres(url, "ALTER DATABASE fluxo_bench_ui RESET synchronous_commit")
    say(f"{name}: seeded in {seeded:.0f} s; running the {args.events:,}-event run")
    events, long_took = add_long_run(url, args.events)
    if name == "postgres":
        _postgres(url, "ANALYZE")
    prefix = planned[-1].id[:2]
    middle = planned[len(planned) // 2]
    cursor = _listing.encode_cursor(middle.created_at, [middle.id])
    pages = [
        ("first page", "/"),
        ("status=failed (0.5%)", "/?status=failed"),
        ("workflow=shop.refund (15%)", "/?workflow=shop.refund"),
        ("failed + shop.refund", "/?status=failed&workflow=shop.refund"),
        ("active: 3 statuses (4.5%)", "/?status=pending&status=running&status=waiting"),
        (f"id={prefix} (1/256)", f"/?id={prefix}"),
    ]
    result: dict[str, Any] = {
        "runs": args.runs,
        "seed_seconds": seeded,
        "long_run": {"id": LONG_ID, "events": events, "seconds": long_took},
        "pages": {},
    }
    with ui_server(url) as address:
        say(f"{name}: fluxo ui serving on port {address[1]}")
        target = "/"
        for _ in range(FOLLOW):
            target = next_link(fetch(address, target).body)
        pages.append((f"page {FOLLOW + 1} (next x{FOLLOW})", target))
        pages.append((f"page ~{len(planned) // 100:,} (middle)", f"/?after={cursor}"))
        for label, target in pages:
            result["pages"][label] = measure_page(address, target, args.repeat)
        say(f"{name}: /counts, {args.repeat + 2} times {COUNTS_TTL} s apart")
        result["counts"] = measure_page(address, "/counts", args.repeat, pause=COUNTS_TTL)
        result["run_page"] = measure_page(address, f"/run?id={LONG_ID}", args.repeat)
    say(f"{name}: the run page's parts, in this process")
    result["run_page_parts"] = run_page_parts(url, args.repeat)
    explained = [(label, target) for label, target in pages]
    explained.append(("counts (/counts)", "count_runs"))
    dialect = "postgresql" if name == "postgres" else "sqlite"
    result["plans"] = explain(url, dialect, explained)
    return result


def _postgres(url: str, statement: str) -> None:
    engine = sa.create_engine(sql.normalize_url(url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def print_store(name: str, r: dict[str, Any]) -> None:
    long = r["long_run"]
    print(
        f"\n== {name}: {r['runs']:,} runs seeded in {r['seed_seconds']:.0f} s "
        f"({r['runs'] / r['seed_seconds']:,.0f} runs/s); run {long['id']}: "
        f"{long['events']:,} events, executed in {long['seconds']:.1f} s"
    )
    print(
        f"{'page':<32}{'TTFB med':>10}{'p95':>9}{'total med':>11}{'p95':>9}{'rows':>6}{'bytes':>10}"
    )
    rows = [*r["pages"].items(), ("/counts (every run)", r["counts"])]
    rows.append((f"/run?id={long['id']}", r["run_page"]))
    for label, page in rows:
        print(
            f"{label:<32}{page['ttfb']['median_ms']:>8.1f}ms{page['ttfb']['p95_ms']:>7.1f}ms"
            f"{page['total']['median_ms']:>9.1f}ms{page['total']['p95_ms']:>7.1f}ms"
            f"{page['rows']:>6}{page['bytes']:>10,}"
        )
    print(f"\nthe run page in this process (Dashboard.handle), {long['events']:,} events:")
    for label, part in r["run_page_parts"].items():
        print(f"  {label:<40}{part['median_ms']:>8.1f} ms  (p95 {part['p95_ms']:.1f} ms)")
    print("\nquery plans (the SQL behind each page):")
    for entry in r["plans"]:
        scan = "FULL SCAN" if entry["full_scan"] else "no full scan"
        sort = "; ".join(entry["sorts"]) or "no sort"
        extra = ""
        if "rows_read" in entry:
            extra = (
                f"; {entry['rows_read']:,} rows read, {entry['buffers']:,} buffers, "
                f"cost {entry['cost']:,.1f}, {entry['db_ms']:.2f} ms in the server"
            )
        indexes = ", ".join(dict.fromkeys(entry["indexes"])) or "none"
        print(f"  {entry['query']}: {entry['median_ms']:.2f} ms here; indexes: {indexes}; ")
        print(f"      {scan}; {sort}{extra}")
        for line in entry["plan"]:
            print(f"      | {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--stores", default="sqlite,postgres")
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--events", type=int, default=5_000)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args()
    if args.runs < 51 * (FOLLOW + 1):
        parser.error(f"--runs must be at least {51 * (FOLLOW + 1)}: the deep page is page 21")
    if args.events < 3:
        parser.error("--events must be at least 3 (a start, a step and an end)")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    for name in stores:
        if name not in ("sqlite", "postgres"):
            parser.error(f"--stores: no store {name!r}; use sqlite, postgres or both")
    report: dict[str, Any] = {
        "runs": args.runs,
        "events": args.events,
        "repeat": args.repeat,
        "stores": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name in stores:
            if name == "sqlite":
                url = f"sqlite:///{tmp}/ui.db"
                seed_url = f"{url}?synchronous=normal"
            else:
                admin = os.environ.get(
                    "FLUXO_BENCH_POSTGRES_URL",
                    "postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                )
                url = seed_url = scratch_database(admin, "fluxo_bench_ui")
            report["stores"][name] = bench_store(name, url, seed_url, args)
            if not args.json:
                print_store(name, report["stores"][name])
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()


if __name__ == "__main__":
    main()
