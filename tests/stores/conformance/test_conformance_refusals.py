"""Store conformance: a store holds what it is given exactly, or refuses it for good.

A value a store cannot hold (NUL in PostgreSQL text, a lone surrogate anywhere, a
value past a column's or a document's size) is refused with
``StoreRejectedError``: permanent, unlike ``StoreUnavailableError``, so the engine
fails the run instead of resuming it into the same refusal. Nothing is written,
and the store goes on working. The engine refuses the names and ids no store can
hold before they reach one (``test_names_never_reach_a_store``).
"""

from __future__ import annotations

from typing import Any

import pytest

import fluxo
from fluxo import _errors, history

T0 = 1_700_000_000.0

ODD = {
    "nul": "a\x00b",
    "surrogate": "a\ud800b",
    "control": "a\x1bb",
    "long": "n" * 70_000,
}


def _holds_or_refuses(write: Any, read: Any, expected: Any) -> bool:
    """Run ``write``; True if the store then holds ``expected``, False if it refused."""
    try:
        write()
    except _errors.StoreRejectedError:
        return False
    assert read() == expected
    return True


@pytest.mark.parametrize("name", ODD.values(), ids=ODD.keys())
def test_an_event_name_is_held_exactly_or_refused(store, runs, name):
    runs.start("r1")

    held = _holds_or_refuses(
        lambda: store.append("r1", 1, [history.StepCompleted(name, b"1")], now=T0),
        lambda: store.load("r1").events[1].name,
        name,
    )

    if not held:  # nothing was written, and the run goes on
        assert store.load("r1").next_seq == 1
        store.append("r1", 1, [history.StepCompleted("ok", b"1")], now=T0)
        assert store.load("r1").next_seq == 2


@pytest.mark.parametrize("name", ODD.values(), ids=ODD.keys())
def test_a_signal_name_is_held_exactly_or_refused(store, runs, name):
    runs.start("r1")

    held = _holds_or_refuses(
        lambda: store.send_signal("r1", name, b"1", now=T0),
        lambda: store.load("r1").signals[0].name,
        name,
    )

    if not held:
        assert store.load("r1").signals == ()


@pytest.mark.parametrize("run_id", [ODD["nul"], ODD["surrogate"]], ids=["nul", "surrogate"])
def test_a_run_id_is_held_exactly_or_refused(store, run_id):
    held = _holds_or_refuses(
        lambda: store.create_run(run_id, "wf", b"[]", now=T0),
        lambda: store.get_run(run_id).id,
        run_id,
    )

    if not held:
        assert store.list_runs() == []


def test_a_payload_past_the_store_s_size_is_held_exactly_or_refused(store, runs):
    runs.start("r1")
    big = b"x" * (17 << 20)  # past MongoDB's 16 MB documents

    held = _holds_or_refuses(
        lambda: store.append("r1", 1, [history.StepCompleted("big", big)], now=T0),
        lambda: store.load("r1").events[1].data == big,
        True,
    )

    if not held:
        assert store.load("r1").next_seq == 1


# -- the engine keeps what no store can hold away from every store ---------------------


class _Watch:
    """Forwards to a store, and remembers every text argument it was given."""

    def __init__(self, inner: fluxo.Store) -> None:
        self.inner = inner
        self.texts: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if not callable(method):
            return method

        def watched(*args: Any, **kwargs: Any) -> Any:
            for value in (*args, *kwargs.values()):
                if isinstance(value, str):
                    self.texts.append(value)
                elif isinstance(value, (list, tuple)):
                    self.texts += [getattr(e, "name", e) for e in value if hasattr(e, "name")]
            return method(*args, **kwargs)

        return watched


@fluxo.step(name="names.echo")
def echo(text: str) -> str:
    return text


@fluxo.workflow(name="names.waits")
def waits(which: str) -> str:
    bad = "bad\x00name"
    if which == "wait":
        return str(fluxo.wait_for_signal(bad))
    if which == "signal":
        fluxo.signal(bad, "go")
    if which == "signal-name":
        fluxo.signal("someone", bad)
    if which == "patch":
        fluxo.patched(bad)
    return echo(which)


BAD = ["r\x00", "r\ud800", "r\x07"]


def test_names_never_reach_a_store(store):
    watch = _Watch(store)
    engine = fluxo.Engine(watch, workflows=[waits], clock=lambda: T0)  # type: ignore[arg-type]
    engine.start(waits.options(id="r1"), "wait")
    for bad in BAD:
        with pytest.raises(fluxo.DefinitionError, match="control characters"):
            waits.options(id=bad)
        for call, args in (
            (engine.get_run, (bad,)),
            (engine.history, (bad,)),
            (engine.export_history, (bad,)),
            (engine.cancel, (bad,)),
            (engine.retry, (bad,)),
            (engine.signal, (bad, "go")),
            (engine.signal, ("r1", bad)),
        ):
            with pytest.raises(fluxo.DefinitionError, match=r"U\+"):
                call(*args)
        with pytest.raises(fluxo.DefinitionError, match=r"U\+"):
            engine.worker(worker_id=bad)
        for kind, decorate in (("workflow", fluxo.workflow), ("step", fluxo.step)):
            with pytest.raises(fluxo.DefinitionError, match=kind):
                decorate(name=bad)(echo.fn)
            with pytest.raises(fluxo.DefinitionError, match="alias"):
                decorate(name="fine", aliases=[bad])(echo.fn)
    for which in ("wait", "signal", "signal-name", "patch"):
        engine.start(waits.options(id=which), which)
    engine.worker(sticky=0).process_one()

    for which in ("wait", "signal", "signal-name", "patch"):
        with pytest.raises(fluxo.WorkflowFailedError, match="control characters") as caught:
            engine.handle(which).result(timeout=0)
        assert caught.value.is_instance(fluxo.DefinitionError)
    assert not [text for text in watch.texts if history.name_problem(text)]
    engine.close()


@fluxo.step(name="names.huge")
def huge() -> str:
    return "x" * (17 << 20)  # past MongoDB's documents and MariaDB's default packets


@fluxo.workflow(name="names.huge_flow")
def huge_flow() -> int:
    return len(huge())


def test_a_result_the_store_refuses_fails_the_run_once(store):
    engine = fluxo.Engine(store, workflows=[huge_flow], clock=lambda: T0)
    engine.start(huge_flow.options(id="r1"))

    assert engine.worker(sticky=0).process_one() == 1  # executed once, never handed back

    run = store.get_run("r1")
    if run.status is history.RunStatus.COMPLETED:
        assert engine.handle("r1").result(timeout=0) == 17 << 20
    else:
        with pytest.raises(fluxo.WorkflowFailedError, match="refused") as caught:
            engine.handle("r1").result(timeout=0)
        assert caught.value.is_instance(fluxo.StoreRejectedError)
    engine.close()
