"""Fluxo's pytest plugin, registered under the ``pytest11`` entry point.

It provides the ``fluxo_env`` fixture: a fresh :class:`~fluxo.testing.WorkflowEnvironment`
for each test, closed after it. Workflows are registered when the test starts
them; ``@pytest.mark.fluxo_env(...)`` on a test, a class or a module
(``pytestmark``) passes options to the environment, the closest mark winning::

    @pytest.mark.fluxo_env(always_replay=False, start_time=datetime(2030, 1, 1, tzinfo=UTC))
    def test_checkout(fluxo_env):
        assert fluxo_env.run(checkout, "o-17", 4200) == "r-17"
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from fluxo.testing import WorkflowEnvironment

OPTIONS = ("workflows", "store", "always_replay", "start_time", "codec")
"""The keyword arguments ``@pytest.mark.fluxo_env`` accepts."""


def pytest_configure(config: pytest.Config) -> None:
    """Declare the ``fluxo_env`` mark, so ``--strict-markers`` accepts it."""
    config.addinivalue_line(
        "markers",
        "fluxo_env(**options): options for the fluxo_env fixture's WorkflowEnvironment "
        f"({', '.join(OPTIONS)})",
    )


def environment_options(node: pytest.Item) -> dict[str, Any]:
    """Merge the ``fluxo_env`` marks of a test, from its module down to itself."""
    from fluxo import _errors

    options: dict[str, Any] = {}
    for mark in reversed(list(node.iter_markers("fluxo_env"))):
        if mark.args:
            raise _errors.DefinitionError(
                f"@pytest.mark.fluxo_env takes keyword options only ({', '.join(OPTIONS)}), "
                f"not {mark.args!r}"
            )
        unknown = sorted(set(mark.kwargs) - set(OPTIONS))
        if unknown:
            raise _errors.DefinitionError(
                f"@pytest.mark.fluxo_env got unknown option(s) {unknown}; it takes "
                f"{', '.join(OPTIONS)}"
            )
        options.update(mark.kwargs)
    return options


@pytest.fixture
def fluxo_env(request: pytest.FixtureRequest) -> Iterator[WorkflowEnvironment]:
    """A time-skipping WorkflowEnvironment for this test, closed after it."""
    from fluxo.testing import WorkflowEnvironment

    with WorkflowEnvironment(**environment_options(request.node)) as env:
        yield env
