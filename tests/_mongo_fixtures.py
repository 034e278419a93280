"""Fixtures for the MongoDB store: a server, and a fresh database per test.

The server is ``FLUXO_TEST_MONGO_URL`` when set; otherwise SecantusDB (a
MongoDB-compatible server written in Python, a test-only dependency) is started
in-process once per session on a free port, with its data in a temporary
directory. Each test gets a database of its own (``fluxotest_<random>``),
dropped afterwards.

A server that cannot be started or reached skips the tests that need it, or
fails them when ``CI=true``.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest

MONGO_ENV = "FLUXO_TEST_MONGO_URL"


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def _server_root(url: str) -> str:
    """``url`` without its database path (keeps the query string)."""
    scheme, rest = url.split("://", 1)
    hosts, _, tail = rest.partition("/")
    query = tail.partition("?")[2]
    return f"{scheme}://{hosts}/" + (f"?{query}" if query else "")


def _with_database(root: str, name: str) -> str:
    base, _, query = root.partition("?")
    return f"{base.rstrip('/')}/{name}" + (f"?{query}" if query else "")


def _check_reachable(url: str) -> None:
    import pymongo

    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        url, serverSelectionTimeoutMS=5000
    )
    try:
        client.admin.command("ping")
    finally:
        client.close()


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[str]:
    """The MongoDB server's URL, without a database (skips, or fails under CI, if absent)."""
    configured = os.environ.get(MONGO_ENV)
    if configured:
        root = _server_root(configured)
        try:
            _check_reachable(root)
        except Exception as exc:
            _unavailable(f"MongoDB unreachable at {root}: {exc}; set {MONGO_ENV}")
        yield root
        return
    try:
        from secantus import SecantusDBServer  # type: ignore[import-untyped]
    except ImportError as exc:
        _unavailable(f"SecantusDB is not installed ({exc}); install it or set {MONGO_ENV}")
        return
    with tempfile.TemporaryDirectory(prefix="fluxo-secantus-") as data:
        server = SecantusDBServer(host="127.0.0.1", port=0, storage_path=data)
        try:
            server.start()
            host, port = server.address
            root = f"mongodb://{host}:{port}/"
            _check_reachable(root)
        except Exception as exc:
            _unavailable(f"could not start SecantusDB in-process: {exc}; set {MONGO_ENV}")
            return
        try:
            yield root
        finally:
            server.stop()


@pytest.fixture
def clean_mongo_url(mongo_server: str) -> Iterator[str]:
    """A MongoDB URL naming a fresh database of this test's own, dropped afterwards."""
    import pymongo

    name = f"fluxotest_{secrets.token_hex(6)}"
    yield _with_database(mongo_server, name)
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
        mongo_server, serverSelectionTimeoutMS=5000
    )
    try:
        client.drop_database(name)
    finally:
        client.close()
