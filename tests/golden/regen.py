"""Record the golden histories: run each workflow shape on SQLite and export its history.

Run from the repository root::

    python -m tests.golden.regen            # rewrites tests/golden/histories and broken/
    python -m tests.golden.regen --out DIR  # writes them under DIR instead

Only regenerate when adding a shape. The committed files stand for runs recorded
by an earlier Fluxo; regenerating them after a change would hide exactly the
breakage they are there to catch.

Every run uses a fixed id and a fixed clock, so the files come out the same on
every machine; absolute paths in recorded tracebacks are replaced by ``<repo>``.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

import fluxo
from fluxo import _executor, history
from fluxo.testing import save_history
from tests.unit.helpers import FakeClock, execute, no_sleep

from . import workflows as wf

HERE = Path(__file__).parent
ROOT = HERE.parent.parent
Outcome = _executor.Outcome

# -- older versions of today's workflows: what some golden histories were recorded with


@fluxo.workflow(name="golden.legacy")
def legacy_v1(order_id: str) -> None:
    """``golden.legacy`` while the ``sms`` patch was live."""
    if fluxo.patched("sms"):
        wf.send_sms(order_id)


@fluxo.workflow(name="golden.checkout")
def checkout_v0(order_id: str, cents: int) -> str:
    """``golden.checkout`` before it reserved goods: today's code must reject its runs."""
    receipt = wf.charge(order_id, cents)
    wf.ship(order_id, "none")
    return receipt.id


# -- recording ------------------------------------------------------------------------


class _Recorder:
    """Runs one scenario per fresh SQLite database, on a fixed clock."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    @contextlib.contextmanager
    def engine(
        self, name: str, *workflows: fluxo.Workflow[Any, Any]
    ) -> Iterator[tuple[fluxo.Engine, FakeClock]]:
        clock = FakeClock()
        url = f"sqlite:///{self.workdir / name}.db"
        with fluxo.Engine(url, workflows=list(workflows), clock=clock) as engine:
            yield engine, clock

    def checkout(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.checkout.options(id="golden-checkout"), "o-1", 4200)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def flaky(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        wf.ATTEMPTS.clear()
        handle = engine.start(wf.flaky.options(id="golden-flaky"), "inventory")
        _expect(execute(engine, handle.id, hook=no_sleep([])), Outcome.COMPLETED)
        return handle.id

    def approval(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.approval.options(id="golden-approval"), "o-2")
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # the one-hour timer
        clock.advance(3600)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # waiting for "approved"
        engine.signal(handle.id, "approved", True)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # waiting for "comment"
        clock.advance(300)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def approval_resumed(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.approval.options(id="golden-approval-resumed"), "o-9")
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # the one-hour timer
        engine.cancel(handle.id)
        _expect(execute(engine, handle.id), Outcome.CANCELLED)  # at the timer
        clock.advance(60)
        engine.resume(handle.id)  # as if the cancellation had not been
        clock.advance(3600)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # waiting for "approved"
        engine.signal(handle.id, "approved", True)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # waiting for "comment"
        clock.advance(300)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def approval_rejected(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.approval.options(id="golden-approval-rejected"), "o-5")
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # the one-hour timer
        clock.advance(3600)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # waiting for "approved"
        engine.signal(handle.id, "approved", "yes please")  # not a bool: skipped
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # still waiting
        engine.signal(handle.id, "approved", True)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)  # waiting for "comment"
        clock.advance(300)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def approval_waiting(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.approval.options(id="golden-approval-waiting"), "o-3")
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)
        clock.advance(3600)
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)
        engine.signal(handle.id, "comment", "not yet consumed")
        return handle.id  # in flight: the history ends waiting for "approved"

    def cancellable(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.cancellable.options(id="golden-cancellable"), "o-4")
        _expect(execute(engine, handle.id), Outcome.SUSPENDED)
        engine.cancel(handle.id)
        _expect(execute(engine, handle.id), Outcome.CANCELLED)
        return handle.id

    def failing(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.failing.options(id="golden-failing"), "missing")
        _expect(execute(engine, handle.id), Outcome.FAILED)
        return handle.id

    def retried(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        wf.ATTEMPTS.clear()
        handle = engine.start(wf.retried.options(id="golden-retried"), "o-5")
        _expect(execute(engine, handle.id), Outcome.FAILED)
        clock.advance(60)
        engine.retry(handle.id)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def died(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.fragile.options(id="golden-died"), "o-10")
        wf.DYING.add("o-10")
        try:
            for worker in ("w1", "w2"):  # the first execution, then a recovery: both die
                with contextlib.suppress(wf.WorkerDies):
                    execute(engine, handle.id, worker, lease=30)
                clock.advance(31)
            _expect(execute(engine, handle.id, "w3", lease=30), Outcome.FAILED)  # dead
        finally:
            wf.DYING.discard("o-10")
        clock.advance(60)
        engine.retry(handle.id)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def fanout(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        wf.ATTEMPTS.clear()
        handle = engine.start(wf.fanout.options(id="golden-fanout"), ["a", "bb"])
        _expect(execute(engine, handle.id, hook=no_sleep([])), Outcome.COMPLETED)
        return handle.id

    def progress(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.progress.options(id="golden-progress"), ["o-10", "o-11"])
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def poll(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.poll.options(id="golden-poll"), 0, 0)
        _expect(execute(engine, handle.id), Outcome.CONTINUED)
        return handle.id  # the first run of the chain: it ends continued_as_new

    def children(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(wf.family.options(id="golden-children"), "o-9")
        for run_id, outcome in (
            (handle.id, Outcome.SUSPENDED),  # waiting for its checkout child
            (f"{handle.id}~child-1", Outcome.COMPLETED),
            (handle.id, Outcome.SUSPENDED),  # waiting for its failing child
            (f"{handle.id}~child-3", Outcome.FAILED),
            (handle.id, Outcome.SUSPENDED),  # cancelled its third child, waits for it to end
            (f"{handle.id}~child-5", Outcome.CANCELLED),
            (handle.id, Outcome.COMPLETED),  # starts a detached child and returns
        ):
            clock.advance(1)
            _expect(execute(engine, run_id), outcome)
        return handle.id

    def child(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        self.children(engine, clock)
        return "golden-children~child-3"  # the failed child: its run names its parent

    def legacy(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(legacy_v1.options(id="golden-legacy"), "o-6")
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id

    def checkout_v0(self, engine: fluxo.Engine, clock: FakeClock) -> str:
        handle = engine.start(checkout_v0.options(id="golden-checkout-v0"), "o-7", 990)
        _expect(execute(engine, handle.id), Outcome.COMPLETED)
        return handle.id


def _expect(outcome: Outcome, expected: Outcome) -> None:
    if outcome is not expected:
        raise AssertionError(f"the recording run ended {outcome.value}, not {expected.value}")


Scenario = Callable[[fluxo.Engine, FakeClock], str]

HISTORIES: dict[str, tuple[str, fluxo.Workflow[Any, Any]]] = {
    "checkout": ("checkout", wf.checkout),
    "flaky": ("flaky", wf.flaky),
    "approval": ("approval", wf.approval),
    "approval-waiting": ("approval_waiting", wf.approval),
    "approval-rejected": ("approval_rejected", wf.approval),
    "approval-resumed": ("approval_resumed", wf.approval),
    "cancellable": ("cancellable", wf.cancellable),
    "failing": ("failing", wf.failing),
    "retried": ("retried", wf.retried),
    "died-retried": ("died", wf.fragile),
    "legacy-patch": ("legacy", legacy_v1),
    "fanout": ("fanout", wf.fanout),
    "poll-continued": ("poll", wf.poll),
    "progress": ("progress", wf.progress),
    "children": ("children", wf.family),
    "child-of-children": ("child", wf.failing),
}
"""File stem under ``histories/`` -> (scenario method, workflow it records)."""

CHILDREN: dict[str, tuple[fluxo.Workflow[Any, Any], ...]] = {
    "children": (wf.checkout, wf.failing, wf.cancellable),
    "child-of-children": (wf.family, wf.checkout, wf.cancellable),
}
"""File stem -> the other workflows its scenario runs (the parent and children)."""


def _portable(document: dict[str, Any]) -> dict[str, Any]:
    """Replace the checkout's absolute path in recorded tracebacks by ``<repo>``.

    A child run's outcome, signalled to its parent, carries the child's error inside
    a msgspec envelope (its bytes as base64): it is unpacked, edited and packed again.
    """
    for event in document["events"]:
        if isinstance(event.get("data"), str):
            event["data"] = event["data"].replace(str(ROOT), "<repo>")
    for signal in document["signals"]:
        if signal["name"].startswith(history.child_signal_name("")) and "payload" in signal:
            outcome = msgspec.json.decode(signal["payload"], type=_executor.ChildOutcome)
            if outcome.data is not None:
                outcome.data = outcome.data.replace(str(ROOT).encode(), b"<repo>")
            signal["payload"] = msgspec.json.encode(outcome).decode()
    return document


def _broken_by_edit(document: dict[str, Any]) -> dict[str, Any]:
    """The checkout history with one step renamed by hand, as a damaged file would be."""
    for event in document["events"]:
        if event["name"] == "golden.charge":
            event["name"] = "golden.charge_card"
    document["run"]["id"] = "golden-checkout-edited"
    return document


def regenerate(out: Path = HERE) -> list[Path]:
    """Record every golden history and write them under ``out``; return the files."""
    written: list[Path] = []
    (out / "histories").mkdir(parents=True, exist_ok=True)
    (out / "broken").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        recorder = _Recorder(Path(tmp))
        docs: dict[str, dict[str, Any]] = {}
        for stem, (method, workflow) in HISTORIES.items():
            scenario: Scenario = getattr(recorder, method)
            with recorder.engine(stem, workflow, *CHILDREN.get(stem, ())) as (engine, clock):
                run_id = scenario(engine, clock)
                docs[stem] = _portable(engine.export_history(run_id))
            written.append(save_history(docs[stem], out / "histories" / f"{stem}.json"))
        with recorder.engine("checkout-v0", checkout_v0) as (engine, clock):
            old = _portable(engine.export_history(recorder.checkout_v0(engine, clock)))
        written.append(save_history(old, out / "broken" / "checkout-older-version.json"))
        edited = _broken_by_edit(_portable(docs["checkout"]))
        written.append(save_history(edited, out / "broken" / "checkout-step-renamed.json"))
    return written


def main() -> None:
    """Parse the command line and regenerate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=HERE, help="where to write (default: here)")
    for path in regenerate(parser.parse_args().out):
        print(path)


if __name__ == "__main__":
    main()
