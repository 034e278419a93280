"""Starting runs in the application's own transaction: joined, or after commit.

On SQLite, PostgreSQL and MariaDB, through each kind of connection a web app
holds: a SQLAlchemy Connection, a Session (and a scoped_session, as
Flask-SQLAlchemy's), and a plain DB-API connection. A run started in a
transaction that rolls back never exists and never runs; one that commits runs.
Wake-ups are shown by a store that polls only every 60 s: a run that finishes
within the test's bound was woken by the commit, not found by a poll.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import orm

import fluxo
from fluxo import _transactions
from fluxo.stores.memory import MemoryStore
from fluxo.stores.sql import SQLStore

WAIT = 20.0
"""Generous bound for a worker to finish a woken run (polls are 60 s apart here)."""

STEPS: list[str] = []


@fluxo.step
def charge(order_id: int) -> str:
    STEPS.append(f"charge {order_id}")
    return f"receipt-{order_id}"


@fluxo.workflow
def checkout(order_id: int) -> str:
    return charge(order_id)


@pytest.fixture(autouse=True)
def _reset() -> None:
    STEPS.clear()


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("mysql", marks=pytest.mark.mysql),
    ]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The application's database, which is also the store's."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.db"
    value: str = request.getfixturevalue(f"clean_{request.param}_url")
    return value


@pytest.fixture
def app_db(url: str) -> Iterator[sa.Engine]:
    """The application's own SQLAlchemy engine, with an ``orders`` table of its own."""
    engine = sa.create_engine(fluxo.stores.sql.normalize_url(url))
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS orders"))
        conn.execute(sa.text("CREATE TABLE orders (id INTEGER PRIMARY KEY)"))
    yield engine
    engine.dispose()


@pytest.fixture
def engine(url: str) -> Iterator[fluxo.Engine]:
    store = SQLStore(url, poll_interval=60.0)
    store.migrate()  # the tables exist before the app's transactions begin
    with fluxo.Engine(store, workflows=[checkout]) as engine:
        yield engine
    store.close()


@contextlib.contextmanager
def worker(engine: fluxo.Engine) -> Iterator[None]:
    """A worker in a thread, idle (waiting for a change) before the test starts anything."""
    w = engine.worker(concurrency=2)
    thread = threading.Thread(target=w.run, daemon=True)
    thread.start()
    try:
        yield
    finally:
        w.stop()
        thread.join(WAIT)


def _exists(engine: fluxo.Engine, run_id: str) -> bool:
    try:
        engine.get_run(run_id)
    except fluxo.RunNotFoundError:
        return False
    return True


def test_a_rolled_back_connection_never_starts_its_run(
    engine: fluxo.Engine, app_db: sa.Engine
) -> None:
    with worker(engine):
        with app_db.connect() as conn:
            conn.execute(sa.text("INSERT INTO orders (id) VALUES (1)"))
            handle = engine.in_transaction(conn).start(checkout.options(id="order-1"), 1)
            assert _exists(engine, "order-1") is False  # not before the commit
            with pytest.raises(fluxo.RunNotFoundError, match="once that transaction commits"):
                handle.status()
            conn.rollback()
        with app_db.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 0
        assert _exists(engine, handle.id) is False
        with app_db.connect() as conn:  # the start is the transaction's first write
            engine.in_transaction(conn).start(checkout.options(id="order-0"), 0)
            conn.rollback()
        assert _exists(engine, "order-0") is False
        # A committed one runs, and the worker is woken for it.
        with app_db.connect() as conn:
            conn.execute(sa.text("INSERT INTO orders (id) VALUES (2)"))
            handle = engine.in_transaction(conn).start(checkout.options(id="order-2"), 2)
            conn.commit()
        assert handle.result(timeout=WAIT) == "receipt-2"
    assert STEPS == ["charge 2"]


def test_a_session_joins_and_its_commit_wakes_the_worker(
    engine: fluxo.Engine, app_db: sa.Engine
) -> None:
    make_session = orm.sessionmaker(app_db)
    with worker(engine):
        with make_session() as session:
            session.execute(sa.text("INSERT INTO orders (id) VALUES (3)"))
            engine.in_transaction(session).start(checkout.options(id="order-3"), 3)
            session.rollback()
        assert _exists(engine, "order-3") is False
        scoped = orm.scoped_session(make_session)  # as Flask-SQLAlchemy's db.session
        try:
            scoped.execute(sa.text("INSERT INTO orders (id) VALUES (4)"))
            handle = engine.in_transaction(scoped).start(checkout.options(id="order-4"), 4)
            scoped.commit()
        finally:
            scoped.remove()
        assert handle.result(timeout=WAIT) == "receipt-4"
    assert STEPS == ["charge 4"]


def test_starting_twice_in_one_transaction_is_one_run(
    engine: fluxo.Engine, app_db: sa.Engine
) -> None:
    with app_db.connect() as conn:
        first = engine.in_transaction(conn).start(checkout.options(id="order-5"), 5)
        again = engine.in_transaction(conn).start(checkout.options(id="order-5"), 5)
        assert again.id == first.id
        with pytest.raises(fluxo.RunIdConflictError, match="order_id"):
            engine.in_transaction(conn).start(checkout.options(id="order-5"), 6)
        conn.commit()
    assert engine.get_run("order-5").status is fluxo.RunStatus.PENDING
    # And a start in a later transaction finds the committed run.
    with app_db.connect() as conn:
        assert engine.in_transaction(conn).start(checkout.options(id="order-5"), 5).id == "order-5"
        conn.commit()


def test_bad_arguments_are_refused_and_leave_the_transaction_usable(
    engine: fluxo.Engine, app_db: sa.Engine
) -> None:
    with app_db.connect() as conn:
        conn.execute(sa.text("INSERT INTO orders (id) VALUES (7)"))
        with pytest.raises(fluxo.EncodeError):
            engine.in_transaction(conn).start(checkout, "not a number")  # type: ignore[arg-type]
        conn.commit()
        assert conn.execute(sa.text("SELECT count(*) FROM orders")).scalar() == 1


def test_a_connection_to_another_database_is_refused(
    engine: fluxo.Engine, tmp_path: Path, url: str
) -> None:
    other = sa.create_engine(f"sqlite:///{tmp_path}/other.db")
    with other.connect() as conn, pytest.raises(fluxo.DefinitionError, match="on_commit"):
        engine.in_transaction(conn).start(checkout, 1)
    other.dispose()
    if url.startswith("sqlite"):
        return
    # Same server, another database.
    base = fluxo.stores.sql.normalize_url(url)
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    elsewhere = sa.create_engine(base.set(database="postgres" if "postgres" in url else "mysql"))
    with elsewhere.connect() as conn, pytest.raises(fluxo.DefinitionError, match="never be seen"):
        engine.in_transaction(conn).start(checkout, 1)
    elsewhere.dispose()
    admin.dispose()


def test_on_commit_starts_after_commit_and_never_after_rollback(
    engine: fluxo.Engine, app_db: sa.Engine
) -> None:
    make_session = orm.sessionmaker(app_db)
    with worker(engine):
        with make_session() as session:
            session.execute(sa.text("INSERT INTO orders (id) VALUES (8)"))
            handle = engine.on_commit(session).start(checkout.options(id="order-8"), 8)
            assert handle.id == "order-8"
            session.rollback()
        with make_session() as session:
            session.execute(sa.text("INSERT INTO orders (id) VALUES (9)"))
            handle = engine.on_commit(session).start(checkout, 9)
            assert _exists(engine, handle.id) is False
            with pytest.raises(fluxo.RunNotFoundError, match="once the database transaction"):
                handle.result(timeout=0)
            session.commit()
        assert handle.result(timeout=WAIT) == "receipt-9"
    assert _exists(engine, "order-8") is False
    assert STEPS == ["charge 9"]


def test_on_commit_refuses_bad_arguments_at_once(engine: fluxo.Engine) -> None:
    callbacks: list[Any] = []
    with pytest.raises(fluxo.EncodeError):
        engine.on_commit(callbacks.append).start(checkout, "seven")  # type: ignore[arg-type]
    assert callbacks == []
    with pytest.raises(fluxo.DefinitionError, match="cannot hear when"):
        engine.on_commit(object()).start(checkout, 1)


def test_a_dbapi_connection_joins(engine: fluxo.Engine, app_db: sa.Engine) -> None:
    pooled = app_db.raw_connection()  # sqlite3, psycopg or pymysql, as the app's own
    conn = pooled.dbapi_connection
    try:
        engine.in_transaction(conn).start(checkout.options(id="order-10"), 10)
        conn.rollback()
        assert _exists(engine, "order-10") is False
        engine.in_transaction(conn).start(checkout.options(id="order-11"), 11)
        conn.commit()
    finally:
        pooled.close()
    assert engine.get_run("order-11").status is fluxo.RunStatus.PENDING


def test_the_ambient_transaction_hook_routes_plain_starts(url: str, app_db: sa.Engine) -> None:
    current: list[sa.Connection] = []

    def ambient(engine: fluxo.Engine) -> _transactions.InTransaction | None:
        return engine.in_transaction(current[-1]) if current else None

    store = SQLStore(url)
    store.migrate()
    with fluxo.Engine(store, workflows=[checkout], transaction=ambient) as engine:
        with app_db.connect() as conn:
            current.append(conn)
            engine.start(checkout.options(id="order-12"), 12)
            conn.rollback()
            current.clear()
        assert _exists(engine, "order-12") is False
        engine.start(checkout.options(id="order-13"), 13)  # no transaction: a plain start
        assert _exists(engine, "order-13") is True
    store.close()


def test_transactional_starts_need_the_sql_store() -> None:
    with fluxo.Engine(MemoryStore(), workflows=[checkout]) as engine:
        with pytest.raises(fluxo.DefinitionError, match="on_commit"):
            engine.in_transaction(sqlite3.connect(":memory:"))
        callbacks: list[Any] = []
        handle = engine.on_commit(callbacks.append).start(checkout.options(id="o-1"), 1)
        assert not _exists(engine, handle.id)
        callbacks.pop()()
        assert engine.get_run("o-1").status is fluxo.RunStatus.PENDING


def test_unknown_connection_kinds_are_refused(engine: fluxo.Engine) -> None:
    with pytest.raises(fluxo.DefinitionError, match="SQLAlchemy Connection or Session"):
        engine.in_transaction("postgresql://app@db/app").start(checkout, 1)
    with pytest.raises(fluxo.DefinitionError, match="takes a function"):
        fluxo.Engine(MemoryStore(), workflows=[checkout], transaction="join")  # type: ignore[arg-type]


def test_a_first_start_on_sqlite_asks_for_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/new.db"
    store = SQLStore(url)
    app_db = sa.create_engine(url)
    with fluxo.Engine(store, workflows=[checkout]) as engine, app_db.connect() as conn:
        with pytest.raises(fluxo.StoreError, match="fluxo db upgrade"):
            engine.in_transaction(conn).start(checkout, 1)
        conn.rollback()
        store.migrate()
        store.migrate()  # a no-op once they exist
        engine.in_transaction(conn).start(checkout.options(id="first"), 1)
        conn.commit()
        assert engine.get_run("first").status is fluxo.RunStatus.PENDING
    app_db.dispose()
    store.close()


@fluxo.workflow
def awaits_payment(order_id: int) -> str:
    paid = fluxo.wait_for_signal("paid", type=str)
    return charge(order_id) + f" ({paid})"


def test_a_signal_in_a_transaction_that_wrote_is_sent_with_it(url: str, app_db: sa.Engine) -> None:
    """On SQLite the store's own connection would wait for the caller's write lock."""
    store = SQLStore(url, poll_interval=60.0)
    store.migrate()
    with fluxo.Engine(store, workflows=[awaits_payment]) as engine:
        handle = engine.start(awaits_payment.options(id="pay-1"), 1)
        with app_db.connect() as conn:
            conn.execute(sa.text("INSERT INTO orders (id) VALUES (20)"))  # holds the write lock
            engine.in_transaction(conn).signal("pay-1", "paid", "card")
            conn.rollback()
        assert not store.load("pay-1").signals  # rolled back with the transaction
        with app_db.connect() as conn:
            conn.execute(sa.text("INSERT INTO orders (id) VALUES (21)"))
            engine.in_transaction(conn).signal("pay-1", "paid", "card")
            conn.commit()
        with engine.worker():
            assert handle.result(timeout=WAIT) == "receipt-1 (card)"
        with app_db.connect() as conn, pytest.raises(fluxo.RunStateError, match="finished"):
            engine.in_transaction(conn).signal("pay-1", "paid", "again")
        with app_db.connect() as conn, pytest.raises(fluxo.RunNotFoundError):
            engine.in_transaction(conn).signal("nope", "paid", "x")
    store.close()


def test_a_run_started_and_signalled_in_one_transaction(url: str, app_db: sa.Engine) -> None:
    current: list[sa.Connection] = []

    def ambient(engine: fluxo.Engine) -> _transactions.InTransaction | None:
        return engine.in_transaction(current[-1]) if current else None

    store = SQLStore(url, poll_interval=60.0)
    store.migrate()
    with fluxo.Engine(store, workflows=[awaits_payment], transaction=ambient) as engine:
        with app_db.connect() as conn:
            current.append(conn)
            handle = engine.start(awaits_payment.options(id="pay-2"), 2)
            engine.signal("pay-2", "paid", "cash")  # through the ambient transaction
            conn.commit()
            current.clear()
        with engine.worker():
            assert handle.result(timeout=WAIT) == "receipt-2 (cash)"
    store.close()


def test_on_commit_signals_after_the_commit(engine: fluxo.Engine) -> None:
    callbacks: list[Any] = []
    with fluxo.Engine(engine.store, workflows=[awaits_payment]) as payments:
        payments.start(awaits_payment.options(id="pay-3"), 3)
        payments.on_commit(callbacks.append).signal("pay-3", "paid", "later")
        assert not payments.store.load("pay-3").signals
        with pytest.raises(fluxo.EncodeError):
            payments.on_commit(callbacks.append).signal("pay-3", "paid", object())
        callbacks.pop()()
        assert [s.name for s in payments.store.load("pay-3").signals] == ["paid"]
