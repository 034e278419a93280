"""Every program in examples/ runs, as the README tells users to run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def run_quickstart(db: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), str(db)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_quickstart_runs_once_then_replays_from_its_history(tmp_path: Path) -> None:
    db = tmp_path / "quickstart.db"

    first = run_quickstart(db)
    assert "run order-17: starting" in first
    assert "charging 4200 cents for 17" in first
    assert "result: rcpt-17  (status: completed)" in first
    assert "4: workflow_completed" in first

    second = run_quickstart(db)
    assert "already recorded" in second
    assert "charging" not in second  # the card is not charged twice
    assert "result: rcpt-17  (status: completed)" in second


def test_the_examples_pass_under_a_plain_pytest() -> None:
    """``pytest examples/`` in a quick-start venv: no development plugin such as pytest-timeout."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:timeout", "-p", "no:cacheprovider", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert " passed" in done.stdout.splitlines()[-1]


def test_the_django_example_passes_under_a_plain_pytest() -> None:
    """``pytest examples/django_shop``: a process of its own, since it configures Django."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:timeout",
            "-p",
            "no:cacheprovider",
            "examples/django_shop",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout.splitlines()[-1]


def test_the_suite_still_times_out_stuck_tests(request: pytest.FixtureRequest) -> None:
    config = request.config
    if not config.pluginmanager.hasplugin("timeout"):
        pytest.skip("pytest-timeout is not installed")
    told = config.getoption("timeout", None) is not None or config.getini("timeout")
    marker = request.node.get_closest_marker("timeout")
    assert told or (marker is not None and marker.args == (120,))
