"""The ``fluxo`` command line, driven through click's runner (the real executable runs in
tests/acceptance)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

import fluxo
from fluxo import cli
from tests.unit import workflows

engine = fluxo.Engine("memory://", workflows=[workflows.checkout])


def make() -> fluxo.Engine:
    return engine


not_an_engine = 42


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli.cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def test_help_lists_the_commands() -> None:
    code, out = invoke("--help")
    assert code == 0
    assert "worker" in out
    assert "db" in out


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("no-colon", "must look like 'module:attribute'"),
        ("tests.unit.nowhere:engine", "cannot import 'tests.unit.nowhere'"),
        ("tests.unit.test_cli:missing", "has no attribute 'missing'"),
        ("tests.unit.test_cli:not_an_engine", "is int, not a fluxo.Engine"),
    ],
)
def test_load_engine_explains_a_bad_app(spec: str, message: str) -> None:
    with pytest.raises(cli._CLIError, match=message):
        cli.load_engine(spec)


def test_load_engine_takes_an_engine_or_a_factory() -> None:
    assert cli.load_engine("tests.unit.test_cli:engine") is engine
    assert cli.load_engine("tests.unit.test_cli:make") is engine


def test_worker_reports_a_bad_app_in_one_line() -> None:
    code, out = invoke("worker", "tests.unit.nowhere:engine")
    assert code != 0
    assert "cannot import" in out
    assert "Traceback" not in out


def test_db_upgrade_current_and_check(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/cli.db"
    code, out = invoke("db", "current", "--url", url)
    assert code == 0
    assert "empty" in out
    code, out = invoke("db", "check", "--url", url)
    assert code != 0
    assert "fluxo db upgrade" in out
    code, out = invoke("db", "upgrade", "--url", url)
    assert code == 0, out
    assert "schema is at" in out
    code, out = invoke("db", "check", "--url", url)
    assert code == 0, out
    assert "up to date" in out


def test_db_commands_read_the_url_from_the_environment(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/env.db"
    result = CliRunner().invoke(cli.cli, ["db", "upgrade"], env={"FLUXO_STORE_URL": url})
    assert result.exit_code == 0, result.output
