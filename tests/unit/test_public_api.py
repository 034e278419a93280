"""The public surface of ``fluxo``: pinned, sorted, light to import, picklable errors."""

from __future__ import annotations

import importlib.metadata
import pickle
import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

import fluxo
from fluxo import _errors

EXPECTED = [
    "AsyncEngine",
    "AsyncRunHandle",
    "AsyncWorkflow",
    "Call",
    "CancelPendingError",
    "Cancelled",
    "ChildHandle",
    "Codec",
    "CodecError",
    "CompensationError",
    "DecodeError",
    "DefinitionError",
    "EncodeError",
    "Engine",
    "Event",
    "EventTimeout",
    "FluxoError",
    "HistoryCorruptError",
    "JSONCodec",
    "NondeterminismError",
    "Observer",
    "Queue",
    "Retry",
    "RunDiedError",
    "RunEvent",
    "RunHandle",
    "RunIdConflictError",
    "RunInfo",
    "RunNotFinishedError",
    "RunNotFoundError",
    "RunStateError",
    "RunStatus",
    "Saga",
    "Schedule",
    "ScheduleInfo",
    "SequenceConflictError",
    "SignalError",
    "SignalTimeout",
    "Step",
    "StepError",
    "StepTimeout",
    "Store",
    "StoreError",
    "StoreRejectedError",
    "StoreUnavailableError",
    "UnknownWorkflowError",
    "Worker",
    "Workflow",
    "WorkflowCancelledError",
    "WorkflowFailedError",
    "WorkflowInfo",
    "WorkflowTimeoutError",
    "__version__",
    "continue_as_new",
    "deprecate_patch",
    "in_workflow",
    "info",
    "is_replaying",
    "logger",
    "map",
    "map_async",
    "now",
    "open_store",
    "parallel",
    "parallel_async",
    "patched",
    "random",
    "saga",
    "schedule",
    "set_event",
    "signal",
    "signal_async",
    "sleep",
    "sleep_async",
    "sleep_until",
    "sleep_until_async",
    "start_child",
    "start_child_async",
    "step",
    "uuid4",
    "wait_for_signal",
    "wait_for_signal_async",
    "workflow",
]


def test_all_is_pinned() -> None:
    assert fluxo.__all__ == EXPECTED


def test_all_is_sorted_and_unique() -> None:
    assert fluxo.__all__ == sorted(fluxo.__all__)
    assert len(set(fluxo.__all__)) == len(fluxo.__all__)


def test_every_exported_name_exists() -> None:
    for name in fluxo.__all__:
        assert hasattr(fluxo, name), name


def test_no_public_name_is_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(fluxo).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(fluxo.__all__) - {"__version__"}


def test_version_matches_the_distribution() -> None:
    assert fluxo.__version__ == importlib.metadata.version("fluxo")


def test_the_package_ships_its_type_information() -> None:
    assert (Path(fluxo.__file__).parent / "py.typed").is_file()


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return set(result.stdout.split())


DRIVERS = ["psycopg", "psycopg2", "pymysql", "MySQLdb", "redis", "pymongo", "asyncpg"]


def test_import_fluxo_imports_no_database_driver() -> None:
    loaded = _modules_after("import fluxo")
    assert "fluxo" in loaded
    for driver in DRIVERS:
        assert driver not in loaded, f"import fluxo imported {driver}"
    assert not any(m.startswith("sqlalchemy.dialects.") for m in loaded)
    assert "pydantic" not in loaded  # only a program that uses pydantic imports it


def test_an_in_memory_engine_imports_no_database_driver() -> None:
    loaded = _modules_after(
        "import fluxo\n"
        "@fluxo.workflow(name='w')\n"
        "def w() -> int:\n"
        "    return 1\n"
        "fluxo.Engine('memory://', workflows=[w]).run(w)"
    )
    for driver in DRIVERS:
        assert driver not in loaded, f"an in-memory engine imported {driver}"


def test_only_a_cron_schedule_imports_the_cron_library() -> None:
    loaded = _modules_after(
        "import fluxo\n@fluxo.schedule(every=60)\n@fluxo.workflow(name='w')\ndef w(tick): ...\n"
    )
    assert "croniter" not in loaded
    assert "dateutil" not in loaded
    loaded = _modules_after(
        "import fluxo\n@fluxo.schedule('0 2 * * *')\n@fluxo.workflow(name='w')\ndef w(tick): ...\n"
    )
    assert "croniter" in loaded


def test_only_the_dashboards_router_imports_fastapi() -> None:
    """FastAPI apps use fluxo.AsyncEngine as it is (docs/fastapi.md); only the dashboard's
    router, ``fluxo.contrib.fastapi`` (docs/ui-mounting.md), is FastAPI code."""
    web = re.compile(r"^\s*(?:from|import)\s+(?:fastapi|starlette)\b", re.MULTILINE)
    package = Path(fluxo.__file__).parent
    modules = sorted(package.rglob("*.py"))
    assert package / "_async_engine.py" in modules
    found = [path for path in modules if web.search(path.read_text())]
    assert found == [package / "contrib" / "fastapi.py"]


# -- errors -----------------------------------------------------------------------------


ERROR_CLASSES = [
    getattr(fluxo, name)
    for name in fluxo.__all__
    if isinstance(getattr(fluxo, name), type) and issubclass(getattr(fluxo, name), Exception)
]


def test_every_error_derives_from_fluxo_error() -> None:
    assert len(ERROR_CLASSES) == 27
    for cls in ERROR_CLASSES:
        assert issubclass(cls, fluxo.FluxoError), cls


def test_errors_also_derive_from_the_builtin_they_resemble() -> None:
    assert issubclass(fluxo.DefinitionError, TypeError)
    assert issubclass(fluxo.EncodeError, TypeError)
    assert issubclass(fluxo.DecodeError, ValueError)
    assert issubclass(fluxo.RunNotFoundError, LookupError)
    assert issubclass(fluxo.UnknownWorkflowError, LookupError)
    assert issubclass(fluxo.RunNotFinishedError, TimeoutError)
    assert issubclass(fluxo.StoreUnavailableError, ConnectionError)
    assert issubclass(fluxo.SequenceConflictError, fluxo.StoreError)
    assert issubclass(fluxo.CancelPendingError, fluxo.RunStateError)
    assert issubclass(fluxo.EncodeError, fluxo.CodecError)
    assert issubclass(fluxo.StoreRejectedError, fluxo.StoreError)
    assert not issubclass(fluxo.StoreRejectedError, fluxo.StoreUnavailableError)
    # Damage is not a store failure to back off from and try again: trying cannot help.
    assert issubclass(fluxo.HistoryCorruptError, ValueError)
    assert not issubclass(fluxo.HistoryCorruptError, fluxo.StoreError)


def test_a_bare_error_uses_its_docstring() -> None:
    assert str(fluxo.RunStateError()) == "The run's current status does not allow this operation."
    assert str(fluxo.StoreError("boom")) == "boom"


PICKLED = [
    fluxo.NondeterminismError("r1", 3, "step a", "step_completed b", "hint"),
    fluxo.StepError(
        "shop.charge",
        type_name="builtins.ValueError",
        type_names=["builtins.ValueError", "builtins.Exception"],
        error_message="declined",
        traceback="Traceback...",
        attempts=3,
    ),
    fluxo.WorkflowFailedError(
        "r2", type_name="builtins.KeyError", type_names=["builtins.KeyError"], error_message="k"
    ),
    fluxo.RunDiedError(
        "r2", type_name="fluxo.RunDiedError", error_message="its executions died 4 times"
    ),
    fluxo.RunIdConflictError("r3", "a", "b"),
    fluxo.RunIdConflictError("r3", "a", "a", arguments=["cents"], detail="  cents: 1 != 2"),
    fluxo.RunNotFoundError("r4"),
    fluxo.WorkflowCancelledError("r5"),
    fluxo.SequenceConflictError("r6", 9),
    fluxo.CancelPendingError("r7"),
    fluxo.DefinitionError("bad definition"),
    fluxo.StoreUnavailableError("down"),
    fluxo.StepTimeout("shop.charge", 2.5),
    fluxo.StepTimeout("shop.quote", 0.5, cancelled=True),
    fluxo.HistoryCorruptError("r7", 3, "position 3 is missing", 5),
    fluxo.HistoryCorruptError("r8", None, "its stored status 'x' is not one Fluxo knows"),
    fluxo.StoreRejectedError("too large"),
]


@pytest.mark.parametrize(
    "error", PICKLED, ids=[f"{type(e).__name__}-{i}" for i, e in enumerate(PICKLED)]
)
def test_errors_survive_pickling_with_their_attributes(error: Exception) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert {k: v for k, v in vars(copy).items()} == {k: v for k, v in vars(error).items()}


def test_remote_errors_compare_by_class_names() -> None:
    error = fluxo.StepError(
        "s",
        type_name="builtins.ConnectionResetError",
        type_names=["builtins.ConnectionResetError", "builtins.OSError", "builtins.Exception"],
    )
    assert error.is_instance(ConnectionResetError)
    assert error.is_instance(OSError)
    assert not error.is_instance(TimeoutError)
    assert not error.is_instance(_errors.StepError)  # the original, not the wrapper
    assert isinstance(error, _errors._RemoteError)
    assert "s" in str(error)
    assert "1 attempt" in str(error)


def test_the_license_file_is_the_licence_pyproject_declares() -> None:
    tomllib = pytest.importorskip("tomllib")
    root = Path(__file__).parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"
    text = (root / "LICENSE").read_text()
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    urls = project["urls"]
    assert set(urls) == {"Homepage", "Documentation", "Changelog", "Issues"}
    assert all(url.startswith(urls["Homepage"]) for url in urls.values())
    assert urls["Changelog"].endswith("/CHANGELOG.md")
    assert (root / "CHANGELOG.md").read_text().startswith("# Changelog")


def test_tracebacks_name_fluxos_errors_as_users_import_them() -> None:
    import traceback

    import fluxo.testing

    shown = traceback.format_exception_only(fluxo.RunNotFoundError("r1"))
    assert shown == ["fluxo.RunNotFoundError: no run with id 'r1'\n"]
    assert fluxo.testing.ReplayMismatchError.__module__ == "fluxo.testing"
    assert fluxo.Cancelled.__module__ == "fluxo"
    for name in fluxo.__all__:
        obj = getattr(fluxo, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert not obj.__module__.startswith("fluxo._"), name
