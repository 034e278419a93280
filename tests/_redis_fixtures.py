"""The Redis server's fixture: ``clean_redis_url``, a fresh key prefix per test.

The server comes from ``FLUXO_TEST_REDIS_URL``, else ``redis://127.0.0.1:6379/0``.
Each test gets a prefix of its own (``fluxotest-<random>``) whose keys are deleted
afterwards, so tests never meet each other's data. An unreachable server skips
the tests that need it, or fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import redis

REDIS_ENV = "FLUXO_TEST_REDIS_URL"
REDIS_DEFAULT = "redis://127.0.0.1:6379/0"


def _delete_prefix(client: redis.Redis, prefix: str) -> None:
    """Delete every key of ``prefix`` (the prefix is random hex: no glob characters)."""
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


@pytest.fixture
def clean_redis_url() -> Iterator[str]:
    """A Redis URL with a key prefix of this test's own, whose keys are deleted afterwards."""
    try:
        import redis
    except ImportError:
        pytest.skip("the redis package is not installed (pip install 'fluxo[redis]')")
    server = os.environ.get(REDIS_ENV) or REDIS_DEFAULT
    client = redis.Redis.from_url(server, socket_connect_timeout=5)
    try:
        client.ping()
    except Exception as exc:
        client.close()
        message = f"Redis unreachable at {server}: {str(exc).splitlines()[0]}; set {REDIS_ENV}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    prefix = f"fluxotest-{secrets.token_hex(6)}"
    separator = "&" if "?" in server else "?"
    try:
        yield f"{server}{separator}prefix={prefix}"
    finally:
        try:
            _delete_prefix(client, prefix)
        finally:
            client.close()
