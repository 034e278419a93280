"""Fixtures of the store conformance suite: one ``store`` per backend, and small helpers.

Every test that takes ``store`` (or ``open_store``) runs once per backend:
``memory``, ``sqlite``, ``postgres``, ``mysql``, ``redis``, ``redis-cluster`` (the
Redis store on a Redis Cluster) and ``mongo``. The server ones skip (or fail
under CI) through the fixtures of ``tests/conftest.py``.

Isolation: SQLite gets a fresh file per test (a copy of one migrated for the
session). PostgreSQL and MySQL share one database per session (``postgres_url``,
``mysql_url``), whose Fluxo tables are emptied before each test.
"""

from __future__ import annotations

import importlib.util
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from fluxo import history
from fluxo.stores import Store
from fluxo.stores.memory import MemoryStore
from fluxo.stores.sql import _migrate
from tests.conftest import reset_sql

T0 = 1_700_000_000.0
"""The clock the suite starts from: a realistic epoch time, so SQL timestamps behave."""

RACE_TIMEOUT = 60.0
"""How long a thread of a race may take before the test fails instead of hanging."""

STORE_PARAMS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
    pytest.param("mongo", id="mongo", marks=pytest.mark.mongo),
]


@pytest.fixture(params=STORE_PARAMS)
def store_kind(request: pytest.FixtureRequest) -> str:
    """The backend under test: ``memory``, ``sqlite``, ``postgres`` or ``mysql``."""
    kind: str = request.param
    return kind


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file migrated to head once for the session: each test gets a copy of it."""
    path = tmp_path_factory.mktemp("sqlite-template") / "fluxo.db"
    _migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture
def store_url(store_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str | None:
    """The database URL of a backend (``None`` for memory).

    The SQL stores make their tables on the first run or claim; the contract is
    about a store that has them, so each SQL database here is at the schema's head.
    """
    if store_kind == "memory":
        return None
    if store_kind == "sqlite":
        path = tmp_path / "fluxo.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)  # file and its mode
        return f"sqlite:///{path}"
    if store_kind in ("postgres", "mysql"):
        # The session's database on the server, emptied for this test.
        url: str = request.getfixturevalue(f"{store_kind}_url")
        reset_sql(url, migrate=True)
        return url
    # Redis: a fresh key prefix (redis-cluster: the Redis store on a Redis Cluster);
    # MongoDB: a fresh database name.
    module = store_kind.split("-", 1)[0]
    if importlib.util.find_spec(f"fluxo.stores.{module}") is None:
        pytest.skip(f"fluxo.stores.{module} is not written yet")
    found: str = request.getfixturevalue(f"clean_{store_kind.replace('-', '_')}_url")
    return found


class StoreOpener:
    """Opens store instances on the test's database and closes them all afterwards.

    For memory there is only one instance: "another instance on the same data" is
    the same object. For SQL each call opens a new ``SQLStore`` (its own engine and
    connection pool), as another process would.
    """

    def __init__(self, kind: str, url: str | None) -> None:
        self.kind = kind
        self.url = url
        self.opened: list[Store] = []

    @property
    def shares_instances(self) -> bool:
        """Tell whether every call returns the same instance (memory)."""
        return self.url is None

    def __call__(self) -> Store:
        """Return a store on the test's data: a new instance unless it is memory."""
        if self.url is None:
            if not self.opened:
                self.opened.append(MemoryStore())
            return self.opened[0]
        import fluxo

        store = fluxo.open_store(self.url)  # the URL picks the backend (and its isolation)
        self.opened.append(store)
        return store

    def close_all(self) -> None:
        """Close every instance opened, newest first."""
        while self.opened:
            self.opened.pop().close()


@pytest.fixture
def open_store(store_kind: str, store_url: str | None) -> Iterator[StoreOpener]:
    """A callable opening (another) store instance on this test's data."""
    opener = StoreOpener(store_kind, store_url)
    try:
        yield opener
    finally:
        opener.close_all()


@pytest.fixture
def store(open_store: StoreOpener) -> Store:
    """The store under test, empty."""
    return open_store()


class Runs:
    """Shortcuts that drive runs of ``store`` into a wanted state, through the contract."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def start(
        self,
        run_id: str,
        workflow: str = "wf",
        *,
        now: float = T0,
        input: bytes = b"[]",
        parent: str | None = None,
    ) -> history.RunInfo:
        """Create a run and check it is new."""
        run, created = self.store.create_run(run_id, workflow, input, now=now, parent=parent)
        assert created, f"run {run_id!r} already existed"
        return run

    def next_seq(self, run_id: str) -> int:
        """The position the next event of the run takes."""
        return self.store.load(run_id).next_seq

    def record(
        self,
        run_id: str,
        *events: history.Event,
        now: float = T0,
        status: history.RunStatus | None = None,
        ready_at: float | None = None,
    ) -> None:
        """Append events at the end of the run's history (optionally with a status)."""
        self.store.append(
            run_id, self.next_seq(run_id), events, now=now, status=status, ready_at=ready_at
        )

    def claim_one(
        self, run_id: str, worker: str = "w1", *, now: float = T0, lease_until: float = T0 + 30
    ) -> history.RunInfo:
        """Claim the run, which must be its workflow's oldest runnable run."""
        workflow = self.store.get_run(run_id).workflow
        claimed = self.store.claim(worker, [workflow], now=now, lease_until=lease_until, limit=1)
        assert [run.id for run in claimed] == [run_id]
        return claimed[0]

    def wait(self, run_id: str, *, now: float = T0, ready_at: float | None = None) -> None:
        """Suspend the run: ``WAITING`` until ``ready_at`` (``None``: until woken)."""
        self.record(
            run_id,
            history.ValueRecorded("timer", b"{}"),
            now=now,
            status=history.RunStatus.WAITING,
            ready_at=ready_at,
        )

    def finish(self, run_id: str, status: history.RunStatus, *, now: float = T0) -> None:
        """End the run with ``status`` and the terminal event that goes with it."""
        event: history.Event = {
            history.RunStatus.COMPLETED: history.WorkflowCompleted("", b'"ok"'),
            history.RunStatus.FAILED: history.WorkflowFailed("", b'{"type": "ValueError"}'),
            history.RunStatus.CANCELLED: history.WorkflowCancelled(),
            history.RunStatus.DEAD: history.RunDied("", b'{"type": "fluxo.RunDiedError"}'),
        }[status]
        self.record(run_id, event, now=now, status=status)

    def put(self, run_id: str, status: history.RunStatus, *, now: float = T0) -> None:
        """Bring a fresh run to ``status`` the way an engine would."""
        if status is history.RunStatus.PENDING:
            return
        if status is history.RunStatus.RUNNING:
            self.claim_one(run_id, now=now)
        elif status is history.RunStatus.WAITING:
            self.wait(run_id, now=now, ready_at=None)
        else:
            self.finish(run_id, status, now=now)


@pytest.fixture
def runs(store: Store) -> Runs:
    """Shortcuts for putting runs of ``store`` into a given state."""
    return Runs(store)


class Outcome:
    """What one thread of a race returned or raised."""

    def __init__(self) -> None:
        self.value: Any = None
        self.error: BaseException | None = None


def race(count: int, fn: Callable[[int], Any]) -> list[Outcome]:
    """Run ``fn(0) .. fn(count - 1)`` in threads released together; return their outcomes."""
    barrier = threading.Barrier(count)
    outcomes = [Outcome() for _ in range(count)]

    def body(index: int) -> None:
        try:
            barrier.wait(timeout=RACE_TIMEOUT)
            outcomes[index].value = fn(index)
        except BaseException as exc:  # reported to the test, not lost in the thread
            outcomes[index].error = exc

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(RACE_TIMEOUT)
    assert not any(thread.is_alive() for thread in threads), "a racing thread hung"
    return outcomes


@pytest.fixture(name="race")
def race_fixture() -> Callable[[int, Callable[[int], Any]], list[Outcome]]:
    """``race(count, fn)``: run ``fn(i)`` in ``count`` threads started together."""
    return race


def unexpected(outcomes: Sequence[Outcome], *allowed: type[BaseException]) -> list[BaseException]:
    """The errors of a race that are not of the ``allowed`` types."""
    return [o.error for o in outcomes if o.error is not None and not isinstance(o.error, allowed)]


@pytest.fixture(name="unexpected")
def unexpected_fixture() -> Callable[..., list[BaseException]]:
    """``unexpected(outcomes, *allowed)``: the errors of a race of other types."""
    return unexpected


@pytest.fixture
def damage(store: Store) -> Any:
    """Breaks the store's data through its backend's raw client (see ``damage.py``)."""
    from tests.stores.conformance.damage import damage_for

    return damage_for(store)
