"""Golden histories: recorded runs of each workflow shape must replay on today's code.

``histories/`` holds the exported histories of representative runs of the
workflows in ``workflows.py`` (completed, failed, cancelled, in flight, retried,
timers, signals, patches), recorded on SQLite with a fixed clock. ``broken/``
holds histories that must *not* replay: one edited by hand, one recorded by an
older version of a workflow.

To add a shape, add its workflow to ``workflows.py`` and its scenario to
``regen.py``, then run ``python -m tests.golden.regen`` from the repository root
and commit the new files. Do not regenerate to make a failing test pass: a
golden history that stops replaying means today's code breaks runs recorded by
the old one.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import fluxo
from fluxo import _executor
from fluxo.testing import load_history, replay, replay_all

from . import regen
from . import workflows as wf

HERE = Path(__file__).parent
HISTORIES = sorted((HERE / "histories").glob("*.json"))
BROKEN = {
    "checkout-step-renamed.json": (2, "step golden.charge_card", "step golden.charge"),
    "checkout-older-version.json": (1, "step golden.charge", "step golden.reserve"),
}


def test_there_is_a_golden_history_for_every_shape() -> None:
    assert {path.stem for path in HISTORIES} == set(regen.HISTORIES)
    kinds = {
        event.kind for path in HISTORIES for event in load_history(path).events
    }  # every event kind but signal_sent appears in some golden history
    assert kinds == {kind for kind in fluxo.history.EVENT_TYPES if kind != "signal_sent"}


@pytest.mark.parametrize("path", HISTORIES, ids=[path.stem for path in HISTORIES])
def test_a_golden_history_replays_on_todays_code(path: Path) -> None:
    result = replay(path, workflows=wf.WORKFLOWS)
    assert result.ok
    assert result.run_id == json.loads(path.read_text())["run"]["id"]


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_history_fails_naming_the_position_and_both_steps(name: str) -> None:
    seq, recorded, code = BROKEN[name]
    with pytest.raises(fluxo.NondeterminismError) as caught:
        replay(HERE / "broken" / name, workflows=wf.WORKFLOWS)
    error = caught.value
    assert error.seq == seq
    text = str(error)
    assert f"diverged at position {seq}:" in text
    assert f"  >  {seq}  recorded:  {recorded}\n" in text
    assert f"        code now:  {code}\n" in text


def test_the_step_renamed_history_reports_a_stable_diff() -> None:
    with pytest.raises(fluxo.NondeterminismError) as caught:
        replay(HERE / "broken" / "checkout-step-renamed.json", workflows=wf.WORKFLOWS)
    path = HERE / "broken" / "checkout-step-renamed.json"
    assert str(caught.value) == (
        "history of run 'golden-checkout-edited' diverged at position 2:\n"
        f"  (workflow golden.checkout; {path})\n"
        "     1  step golden.reserve                   matched\n"
        "  >  2  recorded:  step golden.charge_card\n"
        "        code now:  step golden.charge\n"
        "     3  value_recorded now                    not reached\n"
        "        ... 2 more recorded events\n"
        "The code no longer makes the durable calls this history recorded. Restore the old\n"
        "path, or guard the change with fluxo.patched(); see docs/determinism.md in the "
        "Fluxo repository."
    )


def test_the_golden_directory_as_a_batch_fails_exactly_on_the_broken_histories() -> None:
    report = replay_all(HERE, workflows=wf.WORKFLOWS)
    assert len(report) == len(HISTORIES) + len(BROKEN)
    assert report.passed == len(HISTORIES)
    assert sorted(Path(r.source).name for r in report.failures) == sorted(BROKEN)
    assert not report.ok
    assert replay_all(HERE / "histories", workflows=wf.WORKFLOWS).ok


def test_regenerated_histories_replay_too(tmp_path: Path) -> None:
    """The recorder still works, and what it exports today replays today."""
    written = regen.regenerate(tmp_path)
    assert {path.name for path in written} >= {path.name for path in HISTORIES}
    report = replay_all(tmp_path / "histories", workflows=wf.WORKFLOWS)
    assert report.ok, report.render()
    assert len(report) == len(HISTORIES)
    assert [r.ok for r in replay_all(tmp_path / "broken", workflows=wf.WORKFLOWS)] == [
        False,
        False,
    ]


def test_errors_recorded_under_private_paths_read_by_their_public_names() -> None:
    """Fluxo 0.1 recorded its errors as ``fluxo._errors.X``; they read as ``fluxo.X``."""
    end = load_history(HERE / "histories" / "failing.json").events[-1]
    assert end.data is not None
    assert b'"type":"fluxo._errors.StepError"' in end.data
    info = fluxo.JSONCodec().decode(end.data, _executor.ErrorInfo)
    failed = _executor.workflow_error("golden-failing", info)
    assert failed.type_name == "fluxo.StepError"
    assert failed.is_instance(fluxo.StepError)
    assert failed.is_instance(fluxo.FluxoError)
