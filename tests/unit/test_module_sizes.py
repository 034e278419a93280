"""No module of the package is over about 800 lines: big ones are split by concept.

Counted on ``.py`` files only: the Redis store's Lua scripts and the alembic
migrations are other languages, in files of their own.
"""

from __future__ import annotations

from pathlib import Path

import fluxo

LIMIT = 800
"""The most lines a module of ``fluxo/`` may have."""

KNOWN_EXCEPTIONS: set[str] = set()
"""Modules over the limit today, by their path inside ``fluxo/``: none since issue 12
split the executor into a package of its parts and put a runner beside the Engine.
No module of fluxo/stores/ may be here."""

PACKAGE = Path(fluxo.__file__).parent


def sizes() -> dict[str, int]:
    return {
        path.relative_to(PACKAGE).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in PACKAGE.rglob("*.py")
    }


def test_no_module_is_over_the_limit() -> None:
    over = {name: lines for name, lines in sizes().items() if lines > LIMIT}

    unexpected = {name: lines for name, lines in over.items() if name not in KNOWN_EXCEPTIONS}
    assert not unexpected, f"split these modules by concept (at most {LIMIT} lines): {unexpected}"


def test_the_known_exceptions_are_still_over_the_limit_and_outside_the_stores() -> None:
    found = sizes()

    for name in KNOWN_EXCEPTIONS:
        assert not name.startswith("stores/"), f"{name}: the stores have no exception"
        assert found.get(name, 0) > LIMIT, f"{name} is within the limit now: drop it from the list"


def test_the_executor_is_a_package_of_modules_within_the_limit() -> None:
    found = sizes()

    parts = {name: lines for name, lines in found.items() if name.startswith("_executor/")}
    assert "_executor.py" not in found
    assert len(parts) >= 8
    assert max(parts.values()) <= LIMIT
    assert found["_engine.py"] <= LIMIT
