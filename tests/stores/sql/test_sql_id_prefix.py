"""The SQL store's id-prefix listing: a range of the primary key, exact under every collation.

The conformance suite (``test_conformance_id_prefix.py``) checks what is listed on
every store; this file checks how the SQL store gets there: the bounds of the
range, the index that serves it, and PostgreSQL columns whose collation does not
order by code point.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from fluxo.stores import sql
from fluxo.stores.sql import _migrate, _prefix

T0 = 1_700_000_000.0


# -- the bounds -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "bound"),
    [
        ("a", "b"),
        ("order-", "order."),
        ("run9", "run:"),
        ("100%", "100&"),
        ("a_", "a`"),
        ("path\\", "path]"),
        ("订", "讣"),
        ("🚀", "🚁"),
        ("x\ud7ff", "x\ue000"),  # the surrogates are skipped: no id holds one
        ("x\U0010ffff", "y"),
        ("x\U0010ffff\U0010ffff", "y"),
        ("\U0010ffff", None),
        ("", None),
    ],
)
def test_the_upper_bound_is_the_least_string_after_the_prefix(prefix: str, bound: str | None):
    assert _prefix.upper_bound(prefix) == bound


@pytest.mark.parametrize(
    "prefix", ["a", "ab", "run9", "x\ud7ff", "x\U0010ffff", "订单", "%_\\", "\U0010ffffz"]
)
def test_every_string_with_the_prefix_is_in_the_range_and_no_other(prefix: str):
    bound = _prefix.upper_bound(prefix)
    near = [
        prefix,
        prefix + "\x00",
        prefix + "\U0010ffff",
        prefix[:-1],
        prefix[:-1] + chr(ord(prefix[-1]) - 1) + "\U0010ffff",
        *(bound, bound + "\x00") * (bound is not None),
        prefix + "anything",
    ]
    for text in near:
        inside = text >= prefix and (bound is None or text < bound)
        assert inside == text.startswith(prefix), text
        # UTF-8 byte order is code point order: SQLite and MySQL compare bytes
        encoded = text.encode("utf-8", "surrogatepass")
        assert (encoded >= prefix.encode("utf-8", "surrogatepass")) == (text >= prefix)


@pytest.mark.parametrize(
    ("row", "by_code_point"),
    [
        (("default", "d", None, "C", None), True),
        (("default", "d", None, "POSIX", "c"), True),
        (("default", "d", None, "C.UTF-8", "c"), True),
        (("default", "d", None, "C.utf8", "c"), True),
        (("default", "d", None, "C.UTF-8", "b"), True),
        (("default", "d", None, "en_US.UTF-8", "c"), False),
        (("default", "d", None, "en_US.UTF-8", None), False),
        (("default", "d", None, "C", "i"), False),  # ICU orders by its own locale
        (("C", "c", "C", "en_US.UTF-8", "c"), True),
        (("POSIX", "c", "POSIX", "en_US.UTF-8", "c"), True),
        (("ucs_basic", "c", "C", "en_US.UTF-8", "c"), True),
        (("pg_c_utf8", "b", None, "en_US.UTF-8", "c"), True),
        (("C.utf8", "c", "C.utf8", "en_US.UTF-8", "c"), True),
        (("en_US", "c", "en_US.utf8", "C", "c"), False),
        (("en-x-icu", "i", None, "C", "c"), False),
        (("und-x-icu", "i", None, "C.UTF-8", "c"), False),
    ],
)
def test_which_postgres_collations_order_by_code_point(row: tuple, by_code_point: bool):
    assert _prefix.orders_by_code_point(*row) is by_code_point


# -- the index --------------------------------------------------------------------


def _fill(store: sql.SQLStore, count: int) -> None:
    """``count`` runs ``run-00000``..., and ten ``zz-`` runs, written in one statement."""
    rows = [{"id": f"run-{i:05}", "t": T0 + i} for i in range(count)]
    rows += [{"id": f"zz-{i}", "t": T0 + i} for i in range(10)]
    insert = sa.text(
        "INSERT INTO fluxo_runs (id, workflow, status, created_at, updated_at, "
        "cancel_requested, wake_requested) VALUES (:id, 'wf', 'pending', :t, :t, false, false)"
    )
    with store.engine.begin() as conn:
        conn.execute(insert, rows)


def _plan(store: sql.SQLStore, explain: str) -> str:
    statement = store._sql.list_runs(None, None, after=False, before=False, ids=(True, False))
    values = {"p_limit": 100, "p_id_low": "zz-", "p_id_high": "zz."}
    raw = store.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute(explain + statement.text, statement.args(values))
        return "\n".join(" ".join(map(str, row)) for row in cur.fetchall())
    finally:
        raw.close()


def test_sqlite_reads_a_prefix_through_the_primary_key(tmp_path: Path) -> None:
    store = sql.SQLStore(f"sqlite:///{tmp_path / 'fluxo.db'}")
    store.migrate()
    _fill(store, 2000)

    plan = _plan(store, "EXPLAIN QUERY PLAN ")

    assert "USING INDEX sqlite_autoindex_fluxo_runs_1 (id>? AND id<?)" in plan, plan
    assert [run.id for run in store.list_runs(id_prefix="zz-", limit=3)] == [
        "zz-9",
        "zz-8",
        "zz-7",
    ]
    store.close()


@pytest.mark.mysql
def test_mysql_reads_a_prefix_through_the_primary_key(clean_mysql_url: str) -> None:
    store = sql.SQLStore(clean_mysql_url)
    store.migrate()
    _fill(store, 2000)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE TABLE fluxo_runs"))

    plan = _plan(store, "EXPLAIN ")

    assert "range PRIMARY PRIMARY" in plan, plan
    assert len(store.list_runs(id_prefix="zz-")) == 10
    store.close()


# -- PostgreSQL collations ----------------------------------------------------------


@pytest.fixture
def postgres_store(fresh_postgres_url: str) -> Iterator[tuple[sql.SQLStore, str]]:
    """A store on a fresh PostgreSQL database at head, and its URL."""
    _migrate.upgrade(fresh_postgres_url)
    store = sql.SQLStore(fresh_postgres_url)
    yield store, fresh_postgres_url
    store.close()


def _collate(url: str, collation: str) -> None:
    """Give ``fluxo_runs.id`` the collation (skip when the server does not have it)."""
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.begin() as conn:
            found = conn.execute(
                sa.text("SELECT count(*) FROM pg_collation WHERE collname = :name"),
                {"name": collation},
            ).scalar_one()
            if not found:
                pytest.skip(f"this PostgreSQL server has no collation {collation!r}")
            retype = f'VARCHAR(255) COLLATE "{collation}"'
            conn.execute(sa.text(f"ALTER TABLE fluxo_runs ALTER COLUMN id TYPE {retype}"))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_reads_a_prefix_through_the_primary_key_under_the_c_collation(
    postgres_store: tuple[sql.SQLStore, str],
) -> None:
    store, url = postgres_store
    _collate(url, "C")
    _fill(store, 5000)
    with store.engine.begin() as conn:
        conn.execute(sa.text("ANALYZE fluxo_runs"))

    plan = _plan(store, "EXPLAIN ")

    assert "Index Scan using pk_fluxo_runs" in plan, plan
    assert "Index Cond: (((id)::text >= 'zz-'::text) AND ((id)::text < 'zz.'::text))" in plan
    assert len(store.list_runs(id_prefix="zz-")) == 10


IDS = ["run9", "run95", "run:", "run9a", "order-17", "order.5", "order-2", "Order-3", "ORDER-4"]


@pytest.mark.postgres
@pytest.mark.parametrize("collation", ["en-x-icu", "und-x-icu", "de-x-icu"])
def test_postgres_lists_prefixes_exactly_under_a_linguistic_collation(
    postgres_store: tuple[sql.SQLStore, str], collation: str
) -> None:
    store, url = postgres_store
    _collate(url, collation)
    for i, run_id in enumerate(IDS):
        store.create_run(run_id, "wf", b"[]", now=T0 + i)

    for prefix in ["run9", "run", "order-", "order", "Order", "ORDER-", "run:", "r"]:
        wanted = [run_id for run_id in reversed(IDS) if run_id.startswith(prefix)]
        assert [run.id for run in store.list_runs(id_prefix=prefix)] == wanted, prefix


@pytest.mark.postgres
def test_the_plain_range_would_miss_runs_under_icu(postgres_store: tuple[sql.SQLStore, str]):
    # Why the store compares under COLLATE "C" there: ICU sorts "run:" before "run9".
    store, url = postgres_store
    _collate(url, "en-x-icu")
    store.create_run("run95", "wf", b"[]", now=T0)

    with store.engine.connect() as conn:
        in_range = conn.execute(
            sa.text("SELECT count(*) FROM fluxo_runs WHERE id >= 'run9' AND id < 'run:'")
        ).scalar_one()

    assert in_range == 0
    assert [run.id for run in store.list_runs(id_prefix="run9")] == ["run95"]
