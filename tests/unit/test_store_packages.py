"""Each store is a package whose public names stay where users import them from.

``fluxo.stores.sql``, ``fluxo.stores.redis`` and ``fluxo.stores.mongo`` are split
into private modules; these are the names a program may import from each, and
the classes and functions say they live at the public path.
"""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PUBLIC = {
    "fluxo.stores.memory": ["MemoryStore"],
    "fluxo.stores.sql": ["SQLStore", "make_engine", "normalize_url"],
    "fluxo.stores.redis": [
        "BUCKETS",
        "DEFAULT_PREFIX",
        "RedisStore",
        "bucket_of",
        "cluster_option",
        "decode_signal",
        "encode_event",
        "split_url",
    ],
    "fluxo.stores.mongo": [
        "DEFAULT_DATABASE",
        "DEFAULT_SERVER_SELECTION_TIMEOUT_MS",
        "MongoStore",
        "POLL_INTERVAL",
        "TAIL_BYTES",
        "TAIL_EVENTS",
        "TAIL_SIGNALS",
    ],
}


@pytest.mark.parametrize("path", sorted(PUBLIC))
def test_every_public_name_is_importable_from_its_package(path: str) -> None:
    module = importlib.import_module(path)

    for name in PUBLIC[path]:
        value = getattr(module, name)
        if callable(value):
            assert value.__module__ == path, f"{path}.{name} says it is in {value.__module__}"
    if hasattr(module, "__all__"):
        assert sorted(module.__all__) == sorted(PUBLIC[path])


def test_importing_the_stores_package_imports_no_backend() -> None:
    code = "import sys, fluxo.stores; print('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(result.stdout.split())

    for backend in ("memory", "sql", "redis", "mongo"):
        assert f"fluxo.stores.{backend}" not in loaded
    for driver in ("psycopg", "pymysql", "redis", "pymongo", "bson"):
        assert driver not in loaded
