"""Reading never creates anything: no SQLite file, no table, no Redis key, no collection.

A mistyped store URL used to get a new SQLite file (or the Fluxo tables in whatever
database it named) from ``fluxo runs list``, which then answered "no runs match".
Now the read-only engine methods and commands, and the writes that can only touch
a run that exists, leave a new location as they found it; on the SQL stores they
say "no Fluxo tables at <url>; run `fluxo db upgrade`". Starting a run is what
makes the tables.

Each test gets a location of its own that has never been used: a SQLite path in
an empty folder, a fresh PostgreSQL or MySQL database, a Redis key prefix, a
MongoDB database name.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

import fluxo
from fluxo import cli
from fluxo.stores import sql

KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
    pytest.param("mongo", id="mongo", marks=pytest.mark.mongo),
]
SQL = ("sqlite", "postgres", "mysql")
NO_TABLES = "no Fluxo tables at "


@fluxo.workflow(name="readonly.greet")
def greet(name: str) -> str:
    return f"hello {name}"


class Location:
    """A store location nothing has used yet, and what exists there."""

    def __init__(self, kind: str, url: str, folder: Path) -> None:
        self.kind = kind
        self.url = url
        self.folder = folder

    def footprint(self) -> set[str]:
        """Whatever Fluxo left at the location: files, tables, keys or collections."""
        if self.kind == "sqlite":
            return {path.name for path in self.folder.iterdir()}
        if self.kind in SQL:
            engine = sa.create_engine(sql.normalize_url(self.url), poolclass=NullPool)
            try:
                return set(sa.inspect(engine).get_table_names())
            finally:
                engine.dispose()
        if self.kind.startswith("redis"):
            return _redis_keys(self.url)
        return _mongo_collections(self.url)


def _redis_keys(url: str) -> set[str]:
    import redis
    import redis.cluster

    from fluxo.stores import redis as redis_store

    plain, prefix = redis_store.split_url(url)
    if "redis-cluster" in url or redis_store.cluster_option(url):
        client: Any = redis.cluster.RedisCluster.from_url(plain)
        try:
            nodes = [client.get_redis_connection(node) for node in client.get_primaries()]
            return {key.decode() for node in nodes for key in node.scan_iter(f"{prefix}:*")}
        finally:
            client.close()
    client = redis.Redis.from_url(plain)
    try:
        return {key.decode() for key in client.scan_iter(f"{prefix}:*")}
    finally:
        client.close()


def _mongo_collections(url: str) -> set[str]:
    import pymongo

    name = url.split("://", 1)[1].partition("/")[2].partition("?")[0]
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(url)
    try:
        if name not in client.list_database_names():
            return set()
        return set(client[name].list_collection_names())
    finally:
        client.close()


@pytest.fixture(params=KINDS)
def location(request: pytest.FixtureRequest, tmp_path: Path) -> Location:
    kind: str = request.param
    if kind == "sqlite":
        folder = tmp_path / "db"
        folder.mkdir()
        return Location(kind, f"sqlite:///{folder / 'typo.db'}", folder)
    fixture = {"postgres": "fresh_postgres_url", "mysql": "fresh_mysql_url"}.get(
        kind, f"clean_{kind.replace('-', '_')}_url"
    )
    url: str = request.getfixturevalue(fixture)
    if kind == "redis-cluster":
        url += "&cluster=true"
    return Location(kind, url, tmp_path)


def refused_or_empty(kind: str, call: Callable[[], Any]) -> None:
    """The SQL stores say the tables are missing; the others find no such run."""
    if kind in SQL:
        with pytest.raises(fluxo.StoreError, match=NO_TABLES + "(sqlite|postgresql|mysql)"):
            call()
        return
    try:
        result = call()
    except fluxo.RunNotFoundError:
        return
    assert result in ([], {}, 0, None)


def test_reads_create_nothing(location: Location) -> None:
    with fluxo.Engine(location.url, workflows=[greet]) as engine:
        for call in (
            lambda: engine.get_run("order-17"),
            lambda: engine.get_run("order-17", follow=False),
            engine.list_runs,
            lambda: engine.list_runs(status="failed", workflow=greet),
            engine.count_runs,
            lambda: engine.history("order-17"),
            lambda: engine.export_history("order-17"),
            lambda: engine.handle("order-17"),
            lambda: fluxo.RunHandle(engine, "order-17").result(timeout=0.1),
            lambda: engine.store.load("order-17"),
            lambda: engine.store.next_wake([greet.name], now=1.0),
        ):
            refused_or_empty(location.kind, call)

    assert location.footprint() == set()


def test_writes_to_a_run_that_cannot_exist_create_no_tables(location: Location) -> None:
    with fluxo.Engine(location.url, workflows=[greet]) as engine:
        for call in (
            lambda: engine.signal("order-17", "go", 1),
            lambda: engine.cancel("order-17"),
            lambda: engine.retry("order-17"),
            lambda: engine.store.append("order-17", 1, [], now=1.0),
            lambda: engine.store.claim_run("w1", "order-17", now=1.0, lease_until=2.0),
            lambda: engine.store.renew("w1", ["order-17"], lease_until=2.0),
            lambda: engine.store.release("w1", "order-17", now=1.0),
            lambda: engine.purge(older_than=0),
        ):
            refused_or_empty(location.kind, call)

    if location.kind in SQL:  # Redis and MongoDB have no schema to make by mistake
        assert location.footprint() == set()


@pytest.mark.parametrize(
    "command",
    [
        ("runs", "list"),
        ("runs", "list", "--status", "failed", "--json"),
        ("runs", "show", "order-17"),
        ("runs", "history", "order-17"),
        ("runs", "signal", "order-17", "go", "1"),
        ("runs", "cancel", "order-17"),
        ("runs", "retry", "order-17"),
        ("runs", "purge", "--older-than", "30d"),
    ],
)
def test_commands_create_nothing_and_say_why(
    location: Location, command: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([*command, "--store", location.url])
    out, err = capsys.readouterr()

    if location.kind in SQL:
        assert exited.value.code == 1
        assert err.startswith(f"Error: {NO_TABLES}")
        assert "; run `fluxo db upgrade`" in err
    elif command[:2] == ("runs", "list"):
        assert exited.value.code == 0
        assert "no runs match" in out or out.strip() == "[]"
    elif command[:2] == ("runs", "purge"):
        assert exited.value.code == 0
        assert out == "deleted 0 finished runs\n"
    else:
        assert exited.value.code == 1
        assert "no run 'order-17'" in err
    if location.kind in SQL or command[1] in ("list", "show", "history", "purge"):
        assert location.footprint() == set()


def test_starting_a_run_creates_what_the_store_needs(location: Location) -> None:
    with fluxo.Engine(location.url, workflows=[greet]) as engine:
        handle = engine.start(greet.options(id="order-17"), "ana")

        assert engine.get_run(handle.id).status is fluxo.RunStatus.PENDING
        assert [run.id for run in engine.list_runs()] == ["order-17"]
    assert location.footprint() != set()


def test_a_worker_creates_the_tables_of_a_new_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fluxo.db'}"
    with fluxo.Engine(url, workflows=[greet]) as engine:
        assert engine.worker(idle_timeout=0.05).process_one() == 0  # it claims: the tables

        assert engine.list_runs() == []
