"""Test doubles for code that uses Fluxo: test workflows the way Fluxo tests itself.

:class:`WorkflowEnvironment` runs workflows in process on a virtual clock (time
skips to the next due timer), lets tests stub steps and child workflows by name
or object, and records which steps ran and which children were started. With
pytest, the ``fluxo_env`` fixture hands each test one, closed afterwards
(``@pytest.mark.fluxo_env(...)`` passes it options).

Example:
    >>> from fluxo.testing import WorkflowEnvironment
    >>> with WorkflowEnvironment() as env:
    ...     env.stub(charge, returns=Receipt("r-1", 4200))
    ...     assert env.run(checkout, "o-17", 4200) == "r-1"
"""

import fluxo
from fluxo._errors import HistoryFormatError, ReplayMismatchError
from fluxo._history_file import History
from fluxo.testing._environment import WorkflowEnvironment
from fluxo.testing._replay import (
    ReplayReport,
    ReplayResult,
    load_history,
    replay,
    replay_all,
    replay_runs,
    save_history,
)
from fluxo.testing._stubs import ChildCall, StepCall, Stub

__all__ = [
    "ChildCall",
    "History",
    "HistoryFormatError",
    "ReplayMismatchError",
    "ReplayReport",
    "ReplayResult",
    "StepCall",
    "Stub",
    "WorkflowEnvironment",
    "load_history",
    "replay",
    "replay_all",
    "replay_runs",
    "save_history",
]

fluxo._present_errors(__name__, __all__, globals())
