"""Group commit: steps' records of concurrent executions written together, each fenced alone.

On SQLite a group is one transaction; on a single Redis server, one pipeline.
PostgreSQL writes each record alone (``fluxo/stores/sql/_group.py`` says why).

Grouping is forced without timings: the first write of a group is held until the
appends the test wants in the next group are waiting behind it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fluxo import _errors, history
from fluxo.stores import _group, sql

T0 = 1_700_000_000.0
WAIT = 30.0


def step(name: str) -> history.StepCompleted:
    return history.StepCompleted(name, b"1")


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    opened: Any
    if request.param == "sqlite":
        opened = sql.SQLStore(f"sqlite:///{tmp_path / 'fluxo.db'}")
    else:
        from fluxo.stores.redis import RedisStore

        opened = RedisStore(request.getfixturevalue("clean_redis_url"))
    yield opened
    opened.close()


class Gate:
    """Holds the first group's write until ``queued`` appends wait behind it; records groups."""

    def __init__(self, group: _group.GroupCommit[Any, Any], queued: int) -> None:
        self.group = group
        self.queued = queued
        self.sizes: list[int] = []
        self._first = True
        self._write = group._write
        group._write = self.write

    def write(self, batch: list[Any]) -> Any:
        if self._first:
            self._first = False
            for _ in range(int(WAIT / 0.005)):
                with self.group._lock:
                    if len(self.group._waiting) >= self.queued:
                        break
                threading.Event().wait(0.005)
            else:
                raise AssertionError("the appends never queued behind the first write")
        self.sizes.append(len(batch))
        return self._write(batch)


def race(count: int, fn: Callable[[int], Any]) -> list[BaseException | None]:
    """Run ``fn(i)`` in ``count`` threads; return each one's exception, or None."""
    errors: list[BaseException | None] = [None] * count

    def body(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:
            errors[i] = exc

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT * 2)
        assert not thread.is_alive()
    return errors


def group_of(store: Any) -> _group.GroupCommit[Any, Any]:
    found = store._db.group if isinstance(store, sql.SQLStore) else store._group
    assert found is not None
    return found


def test_appends_that_wait_behind_a_write_are_written_together(store: Any) -> None:
    for i in range(7):
        store.create_run(f"r{i}", "wf", b"[]", now=T0)
    gate = Gate(group_of(store), queued=6)

    errors = race(7, lambda i: store.append(f"r{i}", 1, [step(f"s{i}")], now=T0))

    assert errors == [None] * 7
    assert gate.sizes == [1, 6]
    for i in range(7):
        assert store.load(f"r{i}").events[1:] == (step(f"s{i}"),)


def test_each_append_of_a_group_is_fenced_by_its_own_position(store: Any) -> None:
    for i in range(4):
        store.create_run(f"r{i}", "wf", b"[]", now=T0)
    store.append("r2", 1, [step("already")], now=T0)
    gate = Gate(group_of(store), queued=3)
    # r0 leads alone; r1 fits, r2's position is taken, r3 skips a position
    seqs = {0: 1, 1: 1, 2: 1, 3: 2}

    errors = race(4, lambda i: store.append(f"r{i}", seqs[i], [step(f"s{i}")], now=T0))

    assert gate.sizes == [1, 3]
    assert errors[0] is None
    assert errors[1] is None
    assert isinstance(errors[2], _errors.SequenceConflictError)
    assert isinstance(errors[3], _errors.SequenceConflictError)
    assert store.load("r1").events[1:] == (step("s1"),)
    assert store.load("r2").events[1:] == (step("already"),)
    assert store.load("r3").events[1:] == ()


def test_appenders_racing_for_one_position_are_never_in_one_group(store: Any) -> None:
    store.create_run("r1", "wf", b"[]", now=T0)
    for seq in range(1, 6):
        errors = race(8, lambda i, seq=seq: store.append("r1", seq, [step(f"w{i}")], now=T0))
        winners = [i for i, error in enumerate(errors) if error is None]
        assert len(winners) == 1, f"position {seq} won by {winners}"
        assert all(isinstance(e, _errors.SequenceConflictError) for e in errors if e is not None)
        assert store.load("r1").events[seq] == step(f"w{winners[0]}")


def test_a_group_whose_write_fails_is_written_alone_by_each(
    store: Any,
) -> None:
    for i in range(4):
        store.create_run(f"r{i}", "wf", b"[]", now=T0)
    group = group_of(store)
    gate = Gate(group, queued=3)
    real_write = gate._write
    failed = []

    def write(batch: Any) -> Any:
        if len(batch) > 1 and not failed:  # the group of three, once
            failed.append(len(batch))
            raise _errors.StoreUnavailableError("the server went away for this test")
        return real_write(batch)

    gate._write = write

    errors = race(4, lambda i: store.append(f"r{i}", 1, [step(f"s{i}")], now=T0))

    assert errors == [None] * 4
    assert failed == [3]
    for i in range(4):
        assert store.load(f"r{i}").events[1:] == (step(f"s{i}"),)


def test_many_executions_appending_at_once_lose_nothing(store: Any) -> None:
    runs, steps = 16, 20
    for i in range(runs):
        store.create_run(f"r{i}", "wf", b"[]", now=T0)
    barrier = threading.Barrier(runs, timeout=WAIT)

    def execute(i: int) -> None:
        barrier.wait()
        for k in range(1, steps + 1):
            store.append(f"r{i}", k, [step(f"r{i}.{k}")], now=T0)

    assert race(runs, execute) == [None] * runs
    for i in range(runs):
        events = store.load(f"r{i}").events
        assert events[1:] == tuple(step(f"r{i}.{k}") for k in range(1, steps + 1))


@pytest.mark.postgres
def test_postgresql_writes_each_record_alone(postgres_url: str) -> None:
    store = sql.SQLStore(postgres_url)
    assert store._db.group is None
    store.close()


def test_a_waiting_write_interrupted_before_its_turn_leaves_the_others_a_way_on() -> None:
    """Ctrl-C in a thread waiting behind a write: the writes after it must not hang."""
    import signal

    started, release = threading.Event(), threading.Event()

    def write(items: Any) -> list[int]:
        if items == [1]:
            started.set()
            assert release.wait(WAIT)
        return list(items)

    group: _group.GroupCommit[int, int] = _group.GroupCommit(write, key=lambda item: item)
    first = threading.Thread(target=group.submit, args=(1,))
    first.start()
    assert started.wait(WAIT)
    main = threading.main_thread().ident
    assert main == threading.get_ident()

    def interrupt() -> None:
        while not group._waiting:  # the main thread waits behind the first write
            threading.Event().wait(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    threading.Thread(target=interrupt).start()
    with pytest.raises(KeyboardInterrupt):
        group.submit(2)
    release.set()
    first.join(WAIT)
    later: list[int | None] = []
    third = threading.Thread(target=lambda: later.append(group.submit(3)), daemon=True)
    third.start()
    third.join(5.0)
    assert later == [3], "a write after the interrupted one never went"


@pytest.mark.redis
def test_a_redis_group_with_one_failing_record_does_not_refuse_the_others(
    clean_redis_url: str,
) -> None:
    """One record's script fails in a pipeline: the others it wrote are not refused."""
    from fluxo.stores.redis import RedisStore

    store = RedisStore(clean_redis_url)
    try:
        for i in range(3):
            store.create_run(f"r{i}", "wf", b"[]", now=T0)
        client = store._conn.connected()
        broken = store._keys.of_run("r2", "events")
        client.delete(broken)
        client.set(broken, b"not a run")  # its script fails: WRONGTYPE
        gate = Gate(group_of(store), queued=2)

        errors = race(3, lambda i: store.append(f"r{i}", 1, [step(f"s{i}")], now=T0))

        assert gate.sizes[:2] == [1, 2]
        assert errors[0] is None
        assert errors[1] is None, f"r1's record was refused: {errors[1]!r}"
        assert errors[2] is not None
        assert store.load("r1").events[1:] == (step("s1"),)
    finally:
        store.close()
