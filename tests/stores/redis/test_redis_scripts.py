"""The Redis store's Lua scripts: files of the package, each registered under its own name.

The scripts live in ``fluxo/stores/redis/lua/`` and are read as package resources;
the scripts on the keys of one run are sent after ``run_prelude.lua``.
"""

from __future__ import annotations

import subprocess
import sys
from importlib import resources

import pytest

from fluxo.stores.redis import _layout, _scripts


def lua_files() -> set[str]:
    folder = resources.files("fluxo.stores.redis").joinpath("lua")
    return {entry.name for entry in folder.iterdir() if entry.name.endswith(".lua")}


def test_every_lua_file_is_a_script_or_the_prelude() -> None:
    names = {name.removesuffix(".lua") for name in lua_files()}

    assert names == {"run_prelude", *_scripts.RUN_SCRIPTS, *_scripts.OTHER_SCRIPTS}
    assert set(_scripts.SCRIPTS) == names - {"run_prelude"}


def test_the_run_scripts_start_with_the_prelude_and_the_others_stand_alone() -> None:
    prelude = _scripts.source("run_prelude")

    for name in _scripts.RUN_SCRIPTS:
        assert _scripts.SCRIPTS[name] == prelude + _scripts.source(name)
    for name in _scripts.OTHER_SCRIPTS:
        assert _scripts.SCRIPTS[name] == _scripts.source(name)
        assert "local RUN, EVENTS" not in _scripts.SCRIPTS[name]


def test_the_scripts_are_plain_lua() -> None:
    for name, code in _scripts.SCRIPTS.items():
        assert "%(" not in code, name  # nothing left for Python to format
        assert '"""' not in code, name


@pytest.mark.redis
def test_every_script_compiles_on_the_server(clean_redis_url: str) -> None:
    import redis

    plain, _ = _layout.split_url(clean_redis_url)
    client = redis.Redis.from_url(plain)
    try:
        for code in _scripts.SCRIPTS.values():
            client.script_load(code)  # compiles the script, or raises its syntax error
    finally:
        client.close()


def test_without_the_redis_package_the_error_names_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['redis'] = None\n"
        "import fluxo\n"
        "try:\n"
        "    fluxo.open_store('redis://127.0.0.1:1/0')\n"
        "except fluxo.DefinitionError as exc:\n"
        "    print(exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert "pip install 'fluxo[redis]'" in result.stdout
