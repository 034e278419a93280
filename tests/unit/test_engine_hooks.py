"""The engine's hooks for web framework integrations: ``step_context=``, the CLI's given engine."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fluxo
import fluxo.testing
from fluxo import cli
from fluxo.stores.memory import MemoryStore

ENTERED: list[str] = []
ATTEMPTS: list[int] = []


@fluxo.step(retry=fluxo.Retry(max_attempts=2, initial=0.01))
def flaky(x: int) -> int:
    ATTEMPTS.append(x)
    if len(ATTEMPTS) == 1:
        raise ConnectionError("once")
    return x * 2


@fluxo.step
def where() -> str:
    return ENTERED[-1] if ENTERED else "outside"


@fluxo.workflow
def hooked(x: int) -> list[Any]:
    first = flaky(x)
    both = fluxo.parallel(where.bind(), where.bind())
    return [first, *both]


@pytest.fixture(autouse=True)
def _reset() -> None:
    ENTERED.clear()
    ATTEMPTS.clear()


@contextlib.contextmanager
def tracked() -> Iterator[None]:
    ENTERED.append(threading.current_thread().name)
    yield


def test_step_context_wraps_every_live_attempt_in_its_own_thread() -> None:
    with fluxo.Engine(MemoryStore(), workflows=[hooked], step_context=tracked) as engine:
        result = engine.run(hooked, 21)
    assert result[0] == 42
    # two attempts of flaky, then the two parallel branches, each inside the context
    assert len(ENTERED) == 4
    assert result[1:] == [name for name in result[1:] if name in ENTERED]


def test_step_context_is_not_entered_on_replay() -> None:
    store = MemoryStore()
    with fluxo.Engine(store, workflows=[hooked], step_context=tracked) as engine:
        engine.run(hooked.options(id="r"), 1)
        entered = len(ENTERED)
        report = fluxo.testing.replay(engine.export_history("r"), workflows=[hooked])
    assert report.ok
    assert len(ENTERED) == entered


INSIDE: contextvars.ContextVar[str] = contextvars.ContextVar("inside", default="outside")


@contextlib.contextmanager
def app_context() -> Iterator[None]:
    """Like Flask's app context: a context variable set while it is entered."""
    token = INSIDE.set("inside")
    try:
        yield
    finally:
        INSIDE.reset(token)


@fluxo.step
async def seen_after_awaiting() -> str:
    await asyncio.sleep(0.01)  # the context must outlive the coroutine's first step
    return INSIDE.get()


@fluxo.workflow
async def awaits_inside() -> list[str]:
    alone = await seen_after_awaiting()
    both = await asyncio.gather(seen_after_awaiting(), seen_after_awaiting())
    return [alone, *both]


def test_step_context_is_entered_around_the_whole_run_of_an_async_step() -> None:
    with fluxo.Engine(MemoryStore(), workflows=[awaits_inside], step_context=app_context) as engine:
        assert engine.run(awaits_inside) == ["inside"] * 3


def test_a_failing_step_context_fails_the_attempt_like_the_step() -> None:
    @contextlib.contextmanager
    def broken() -> Iterator[None]:
        raise RuntimeError("no app context")
        yield

    with (
        fluxo.Engine(MemoryStore(), workflows=[hooked], step_context=broken) as engine,
        pytest.raises(fluxo.WorkflowFailedError, match="no app context"),
    ):
        engine.run(hooked, 1)
    assert ATTEMPTS == []


def test_the_cli_uses_a_given_engine_and_leaves_it_open(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    engine = fluxo.Engine(f"sqlite:///{tmp_path}/f.db", workflows=[hooked])
    engine.start(hooked.options(id="given-1"), 3)
    calls: list[int] = []

    def factory() -> fluxo.Engine:
        calls.append(1)
        return engine

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["runs", "list", "--json"], engine=factory, prog_name="manage.py fluxo")
    assert exit_info.value.code == 0
    listed = json.loads(capsys.readouterr().out)
    assert [run["id"] for run in listed] == ["given-1"]
    with pytest.raises(SystemExit):
        cli.main(["db", "current"], engine=factory)
    assert capsys.readouterr().out.strip() != ""
    assert calls
    assert engine.get_run("given-1").status is fluxo.RunStatus.PENDING  # still open
    engine.close()


def test_the_cli_without_an_app_says_what_to_pass(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["worker"], prog_name="manage.py fluxo")
    assert exit_info.value.code == 2
    assert "Missing APP" in capsys.readouterr().err


def test_db_commands_use_the_given_store_url_without_building_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"

    def no_engine() -> fluxo.Engine:
        raise AssertionError("db commands must not build the engine")

    for args in (["db", "upgrade"], ["db", "check"]):
        with pytest.raises(SystemExit) as exit_info:
            cli.main(args, engine=no_engine, store_url=lambda: url)
        assert exit_info.value.code == 0
    assert "schema is at" in capsys.readouterr().out


def test_the_environment_does_not_override_a_given_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    other = fluxo.Engine(f"sqlite:///{tmp_path}/other.db", workflows=[hooked])
    other.start(hooked.options(id="elsewhere"), 1)
    other.close()
    engine = fluxo.Engine(f"sqlite:///{tmp_path}/app.db", workflows=[hooked])
    engine.start(hooked.options(id="mine"), 1)
    monkeypatch.setenv("FLUXO_STORE_URL", f"sqlite:///{tmp_path}/other.db")
    with pytest.raises(SystemExit):
        cli.main(["runs", "list", "--json"], engine=lambda: engine, prog_name="flask fluxo")
    assert [run["id"] for run in json.loads(capsys.readouterr().out)] == ["mine"]
    assert os.environ["FLUXO_STORE_URL"].endswith("other.db")  # given back afterwards
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["runs", "show", "nope"], engine=lambda: engine, prog_name="flask fluxo")
    assert exit_info.value.code == 1
    error = capsys.readouterr().err
    assert "no run 'nope' in the app's store" in error
    assert "`flask fluxo runs list`" in error
    engine.close()


def test_a_group_named_alone_prints_its_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["runs"])
    assert exit_info.value.code == 2
    out = capsys.readouterr().out
    assert out.startswith("Usage: fluxo runs")
    assert "\nCommands:\n" in out


def test_a_worker_without_workflows_says_it_will_never_claim(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="fluxo._worker")
    with fluxo.Engine(MemoryStore(), workflows=[]) as engine, engine.worker(idle_timeout=0.05):
        pass
    assert any("serves no workflows" in r.getMessage() for r in caplog.records)
