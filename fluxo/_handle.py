"""A run's handle: its id, and how to wait for its result."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Generic, Protocol, TypeVar

from fluxo import _errors
from fluxo import history as _history

R = TypeVar("R")


class Client(Protocol):
    """What a handle asks of the engine that made it."""

    def get_run(self, run_id: str, *, follow: bool = True) -> _history.RunInfo:
        """The run's record (of the latest run of its chain)."""

    def cancel(self, run_id: str) -> _history.RunInfo:
        """Ask the run to stop."""

    def _wait_result(self, run_id: str, timeout: float | None, return_type: Any) -> Any:
        """Wait for the run's end and return its result, decoded as ``return_type``."""


class RunHandle(Generic[R]):
    """A reference to one run: its id, and how to wait for its result.

    A run that called ``fluxo.continue_as_new`` goes on in the next run of its
    chain; ``status()`` and ``result()`` follow the chain to its latest run.
    """

    def __init__(
        self, engine: Client, run_id: str, return_type: Any = Any, *, hint: str = ""
    ) -> None:
        self.engine = engine
        self.id = run_id
        self._return_type = return_type
        self._hint = hint  # why the run may not exist yet (a start that waits for a commit)

    def __repr__(self) -> str:
        return f"RunHandle({self.id!r})"

    def status(self) -> _history.RunStatus:
        """The current status of the run (of the latest run of its chain)."""
        with self._explained():
            status: _history.RunStatus = self.engine.get_run(self.id).status
        return status

    def result(self, timeout: float | None = None) -> R:
        """Wait for the run to finish and return its result.

        Woken by the store when the run changes, not by fixed polling.

        Raises:
            WorkflowFailedError: the run failed.
            NondeterminismError: the run failed because its code no longer matched
                its history (fix the code, then ``engine.retry``).
            WorkflowCancelledError: the run was cancelled.
            RunNotFinishedError: ``timeout`` seconds passed first.
        """
        with self._explained():
            value: R = self.engine._wait_result(self.id, timeout, self._return_type)
        return value

    def cancel(self) -> _history.RunInfo:
        """Ask the run to stop; see :meth:`Engine.cancel`."""
        with self._explained():
            return self.engine.cancel(self.id)

    @contextlib.contextmanager
    def _explained(self) -> Iterator[None]:
        try:
            yield
        except _errors.RunNotFoundError as exc:
            if not self._hint or exc.run_id != self.id:
                raise
            raise _errors.RunNotFoundError(self.id, self._hint) from None
