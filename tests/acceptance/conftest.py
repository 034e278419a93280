"""Fixtures of the acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("mongo", marks=pytest.mark.mongo),
    ]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same crash scenario on every durable store: the URL picks the store."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/crash.db"
    elif request.param == "postgres":
        yield request.getfixturevalue("postgres_url")
    else:
        yield request.getfixturevalue(f"clean_{request.param}_url")
