"""A workflow defined in a script is named after the module ``fluxo worker`` imports.

``python app.py`` runs the file as ``__main__``; ``fluxo worker app:engine``
imports it as ``app``. Both must name the workflow alike, or the worker never
runs what the script started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import fluxo

FLUXO = str(Path(sys.executable).with_name("fluxo"))

APP = """
import fluxo


@fluxo.step
def shout(text: str) -> str:
    return text.upper()


@fluxo.workflow
def greet(name: str) -> str:
    return shout(name) + "!"


engine = fluxo.Engine("sqlite:///app.db", workflows=[greet])

if __name__ == "__main__":
    engine.start(greet.options(id="from-script"), "ada")
    print(greet.name, shout.name)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FLUXO_")}


@pytest.mark.parametrize("command", [["app.py"], ["-m", "app"]], ids=["file", "module"])
def test_fluxo_worker_runs_what_a_script_started(tmp_path: Path, command: list[str]) -> None:
    (tmp_path / "app.py").write_text(APP)
    started = subprocess.run(
        [sys.executable, "-W", "error", *command],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    assert started.stdout.split() == ["app.greet", "app.shout"]
    worker = subprocess.Popen(
        [FLUXO, "worker", "app:engine"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        with fluxo.Engine(f"sqlite:///{tmp_path}/app.db", workflows=[]) as engine:
            assert engine.handle("from-script").result(timeout=30) == "ADA!"
    finally:
        worker.send_signal(signal.SIGTERM)
        out, _ = worker.communicate(timeout=30)
    assert "does not know" not in out


def test_a_workflow_whose_module_cannot_be_told_warns_to_pass_a_name(tmp_path: Path) -> None:
    code = "import fluxo\n\n@fluxo.workflow\ndef greet() -> None: ...\n\nprint(greet.name)\n"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "__main__.greet"
    assert "<string>:3: UserWarning: workflow 'greet' is defined in __main__" in result.stderr
    assert "pass name=" in result.stderr
