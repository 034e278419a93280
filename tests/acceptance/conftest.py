"""Fixtures of the acceptance tests: the store URLs the crash scenarios run on.

The kill -9 and timer scenarios of ``test_crash.py`` run on every durable store
(``store_url``). The scenarios built on them (child workflows, fan-out, sagas)
add executor behaviour, not store behaviour: what they need of a store (claims
after a lease ends, fenced appends, signals and wake-ups) the conformance suite
checks on every store, so they run on SQLite and PostgreSQL (``sql_store_url``).
The example shops run under real servers on a new SQLite or PostgreSQL database
(``shop_database``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

SQLITE = pytest.param("sqlite")
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path}/crash.db"
    if kind == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    found: str = request.getfixturevalue(f"clean_{kind}_url")
    return found


@pytest.fixture(
    params=[
        SQLITE,
        POSTGRES,
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("mongo", marks=pytest.mark.mongo),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same crash scenario on every durable store: the URL picks the store."""
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=[SQLITE, POSTGRES])
def sql_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A scenario whose store part the conformance suite covers: on SQLite and PostgreSQL."""
    return _url(request.param, request, tmp_path)


@pytest.fixture(params=[SQLITE, POSTGRES])
def shop_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An example shop's database, new and empty: an SQLite file, or a PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shop.db'}"
    url: str = request.getfixturevalue("fresh_postgres_url")
    return url
