"""Telling an engine's observers: who handles each kind of event, and their isolation.

A :class:`Dispatch` holds, for each kind of event (``fluxo.observe.KINDS``), the
handlers of the observers that have a method for it, as a tuple: the executor
looks at that tuple (empty when nobody listens) before it even builds an event,
so observers that are off cost one attribute read per durable call.

Isolation: a handler that raises is logged once per observer and kind, and keeps
being called. An observer that is not ``inline`` is called from a delivery
thread of its own through a bounded queue, in order; when it falls that far
behind, its events are dropped (counted, logged once) rather than making a run wait.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from fluxo import _events, observe

log = logging.getLogger(__name__)

QUEUE_SIZE = 10_000
"""Events an observer called from its own thread may fall behind by before some are dropped."""

Handler = Callable[[observe.RunEvent], None]

KEEP = _events.KEEP


class _Sinks(dict[str, list[float]]):
    """The lists of one workflow's steps, by step name, each made as its step is first met."""

    def __init__(self, dispatch: Dispatch, workflow: str) -> None:
        super().__init__()
        self._dispatch = dispatch
        self._workflow = workflow

    def __missing__(self, step: str) -> list[float]:
        lists = [times.waiting(self._workflow, step) for times in self._dispatch.step_times]
        return self.setdefault(step, lists[0] if len(lists) == 1 else _Fanout(lists))


class _Fanout(list[float]):
    """Appends to several observers' lists at once (for more than one with ``step_times``)."""

    def __init__(self, lists: list[list[float]]) -> None:
        super().__init__()
        self.lists = lists

    def append(self, took: float) -> None:
        for waiting in self.lists:
            waiting.append(took)


_BASE = {kind: getattr(observe.Observer, kind) for kind in observe.KINDS}
_BASE_SCOPE = observe.Observer.step_scope
_BASE_HEADERS = observe.Observer.headers


def _own(observer: Any, name: str, base: Any) -> Any:
    """``observer``'s method ``name``, or None when it has none or keeps ``Observer``'s no-op."""
    if getattr(type(observer), name, base) is base:
        return None
    method = getattr(observer, name, None)
    return method if callable(method) else None


def _flatten(observers: Iterable[Any]) -> list[Any]:
    """The observers of a list, composites replaced by their members, in order."""
    flat: list[Any] = []
    for observer in observers:
        if isinstance(observer, observe.CompositeObserver):
            flat += _flatten(observer.observers)
        else:
            flat.append(observer)
    return flat


class _Failures:
    """Logs a failing observer once per kind of event."""

    def __init__(self) -> None:
        self._seen: set[tuple[int, str]] = set()
        self._lock = threading.Lock()

    def failed(self, observer: Any, what: str) -> None:
        key = (id(observer), what)
        with self._lock:
            if key in self._seen:
                return
            self._seen.add(key)
        log.exception(
            "observer %r failed on %s; it keeps being called, and its further failures on "
            "this kind of event are not logged",
            observer,
            what,
        )


class Delivery:
    """Calls one observer from a thread of its own, in the order of the events."""

    def __init__(self, observer: Any, failures: _Failures) -> None:
        self.observer = observer
        self._failures = failures
        self.dropped = 0
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[Handler, observe.RunEvent] | None] = queue.Queue(QUEUE_SIZE)
        self._thread: threading.Thread | None = None
        os.register_at_fork(after_in_child=functools.partial(_forked, weakref.ref(self)))

    def handler(self, kind: str, method: Handler) -> Handler:
        """A handler that queues the event for ``method``."""

        def enqueue(event: observe.RunEvent) -> None:
            self.put(method, kind, event)

        return enqueue

    def put(self, method: Handler, kind: str, event: observe.RunEvent) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    # The first event is queued before the thread is seen to exist, so
                    # that no other thread's event can overtake it.
                    self._enqueue(method, event)
                    thread = threading.Thread(
                        target=self._deliver,
                        name=f"fluxo-observer-{type(self.observer).__name__}",
                        daemon=True,
                    )
                    thread.start()
                    self._thread = thread
                    return
        self._enqueue(method, event)

    def _enqueue(self, method: Handler, event: observe.RunEvent) -> None:
        try:
            self._queue.put_nowait((method, event))
        except queue.Full:
            with self._lock:
                self.dropped += 1
                first = self.dropped == 1
            if first:
                log.warning(
                    "observer %r falls behind by %d events; its events are dropped until "
                    "it catches up, so that no run waits for it",
                    self.observer,
                    QUEUE_SIZE,
                )

    def forked(self) -> None:
        """In a forked child: the parent's thread and queue are not this process's."""
        self._lock = threading.Lock()
        self._queue = queue.Queue(QUEUE_SIZE)
        self._thread = None

    def undelivered(self) -> int:
        """Events queued and not yet delivered."""
        return self._queue.unfinished_tasks if self._thread is not None else 0

    def _deliver(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                method, event = item
                try:
                    method(event)
                except Exception:
                    self._failures.failed(self.observer, event.kind)
            finally:
                self._queue.task_done()

    def flush(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the queued events to be delivered."""
        if self._thread is None or not self._queue.unfinished_tasks:
            return True
        done = threading.Event()

        def wait() -> None:
            self._queue.join()
            done.set()

        threading.Thread(target=wait, name="fluxo-observer-flush", daemon=True).start()
        return done.wait(timeout)


def _forked(delivery: weakref.ref[Delivery]) -> None:
    found = delivery()
    if found is not None:
        found.forked()


class _Contained:
    """An observer's scope around a step attempt that can neither fail it nor hide its error."""

    def __init__(self, observer: Any, scope: Any, failures: _Failures) -> None:
        self._observer = observer
        self._scope = scope
        self._failures = failures

    def __enter__(self) -> None:
        self._scope.__enter__()  # a failure here: the scope is not entered (see attempt())

    def __exit__(self, *exc: Any) -> None:
        try:
            self._scope.__exit__(*exc)
        except Exception:
            self._failures.failed(self._observer, "step_scope")
        # None: the attempt's own exception, if any, goes on as it is, whatever the
        # scope's __exit__ returned


class Dispatch:
    """The handlers of an engine's observers, by kind of event.

    Each kind's attribute is a tuple of handlers (empty when no observer has that
    method); :meth:`emit` calls them. Build events only when the tuple is not
    empty: that is what keeps observers that are off free.
    """

    run_started: tuple[Handler, ...]
    run_resumed: tuple[Handler, ...]
    run_suspended: tuple[Handler, ...]
    run_completed: tuple[Handler, ...]
    run_failed: tuple[Handler, ...]
    run_cancelled: tuple[Handler, ...]
    run_continued: tuple[Handler, ...]
    step_started: tuple[Handler, ...]
    step_completed: tuple[Handler, ...]
    step_failed: tuple[Handler, ...]
    step_retried: tuple[Handler, ...]
    timer_set: tuple[Handler, ...]
    timer_fired: tuple[Handler, ...]
    signal_sent: tuple[Handler, ...]
    signal_received: tuple[Handler, ...]
    child_started: tuple[Handler, ...]
    nondeterminism: tuple[Handler, ...]
    lease_lost: tuple[Handler, ...]
    live_step_completed: tuple[Handler, ...]
    step_times: tuple[observe.StepTimes, ...]
    timing: bool
    completions_told: bool

    def __init__(self, observers: Iterable[Any] = ()) -> None:
        self._failures = _Failures()
        self._owners: dict[Handler, Any] = {}
        """The observer of each handler called in the run's thread, to name it when it fails."""
        self.observers: list[Any] = []
        self.deliveries: list[Delivery] = []
        self.add(observers)

    def add(self, observers: Iterable[Any]) -> None:
        """Tell ``observers`` too, from the next event on."""
        for observer in observers if isinstance(observers, (list, tuple)) else ():
            if isinstance(observer, (list, tuple)):
                raise TypeError(
                    f"an observer is an object, not a list ({observer!r}); pass each observer "
                    "itself, e.g. engine.add_observer(observer)"
                )
        if isinstance(observers, (str, bytes)) or not isinstance(observers, Iterable):
            raise TypeError(
                f"observers= takes a list of observers, not {observers!r}; for example "
                "observers=[fluxo.observe.LoggingObserver()]"
            )
        self.observers = self.observers + _flatten(observers)
        deliveries: list[Delivery] = []
        step_times: list[tuple[Any, observe.StepTimes]] = []
        timed: set[Handler] = set()
        scopes: list[tuple[Any, Callable[..., Any]]] = []
        headers: list[tuple[Any, Callable[..., Any]]] = []
        handlers: dict[str, list[Handler]] = {kind: [] for kind in observe.KINDS}
        for observer in self.observers:
            if isinstance(observer, (type, str, bytes)) or observer is None:
                raise TypeError(
                    f"observers= takes observer objects, not {observer!r}; pass an instance, "
                    "for example observers=[fluxo.observe.LoggingObserver()]"
                )
            inline = bool(getattr(observer, "inline", False))
            delivery = None if inline else Delivery(observer, self._failures)
            found = False
            times = getattr(observer, "step_times", None)
            if times is not None:
                _check_step_times(observer, times, inline)
                step_times.append((observer, times))
                found = True
            for kind in observe.KINDS:
                method = _own(observer, kind, _BASE[kind])
                if method is None:
                    continue
                found = True
                if delivery is None:
                    handlers[kind].append(method)
                    self._owners[method] = observer
                    if kind == "step_completed" and times is not None:
                        timed.add(method)
                else:
                    handlers[kind].append(delivery.handler(kind, method))
            if inline:
                scope = _own(observer, "step_scope", _BASE_SCOPE)
                if scope is not None:
                    scopes.append((observer, scope))
                    found = True
                header = _own(observer, "headers", _BASE_HEADERS)
                if header is not None:
                    headers.append((observer, header))
                    found = True
            if not found and not isinstance(observer, observe.Observer):
                raise TypeError(
                    f"{observer!r} has none of the methods of fluxo.observe.Observer "
                    f"({', '.join(observe.KINDS[:3])}...); subclass it and override the "
                    "events you want"
                )
            if delivery is not None:
                old = [d for d in self.deliveries if d.observer is observer]
                deliveries.append(old[0] if old else delivery)
        for kind, found_handlers in handlers.items():
            setattr(self, kind, tuple(found_handlers))
        self.live_step_completed = tuple(h for h in self.step_completed if h not in timed)
        """The handlers of a live ``step_completed``: observers with ``step_times`` get none."""
        self.step_times = tuple(times for _, times in step_times)
        """Where each live attempt that completes is appended (see ``observe.StepTimes``)."""
        self.timing = bool(self.step_times)
        """True when there are ``step_times`` (a plain attribute: read on hot paths)."""
        self.completions_told = bool(self.live_step_completed)
        """True when a live attempt that completes is told as an event to some observer."""
        self._times_owners = {id(times): observer for observer, times in step_times}
        self._sinks: dict[str, _Sinks] = {}
        self.deliveries = deliveries
        self._scopes = tuple(scopes)
        self._headers = tuple(headers)
        self.active = bool(self.observers)
        """True when there is any observer (a plain attribute: read on hot paths)."""
        self.watching_attempts = bool(self.step_started or self._scopes)
        """True when a live step attempt has anything to tell or enter."""

    def emit(self, handlers: tuple[Handler, ...], event: observe.RunEvent) -> None:
        """Tell ``event`` to ``handlers`` (a kind's attribute of this dispatch).

        A handler that raises is logged (once per observer and kind) and the others
        are still told; it is called again for the next event.
        """
        for handler in handlers:
            try:
                handler(event)
            except Exception:
                self._failures.failed(self._owners.get(handler, handler), event.kind)

    def sinks(self, workflow: str) -> _Sinks:
        """Where the live attempts of ``workflow``'s steps that complete go, by step name.

        ``sinks(workflow)[step]`` is the list to append a completed attempt's
        seconds to: with one observer that has ``step_times``, its own list; with
        several, a list that appends to each of theirs.
        """
        found = self._sinks.get(workflow)
        if found is None:
            found = self._sinks.setdefault(workflow, _Sinks(self, workflow))
        return found

    def timed(self, workflow: str, step: str, took: float) -> None:
        """Add a live attempt that completed to each ``step_times``."""
        self.sinks(workflow)[step].append(took)

    def tidy(self) -> None:
        """Fold the ``step_times`` with too many attempts waiting (as an execution ends)."""
        for times in self.step_times:
            if times.count() >= KEEP:
                self.fold(times)

    def fold(self, times: observe.StepTimes) -> None:
        """Fold what ``times`` holds now; its ``fold`` raising is logged once, not raised."""
        try:
            times.flush()
        except Exception:
            self._failures.failed(self._times_owners.get(id(times), times), "step_times")

    @contextlib.contextmanager
    def attempt(self, event: observe.RunEvent) -> Iterator[None]:
        """Around a live step attempt: tell ``step_started``, enter the observers' scopes."""
        self.emit(self.step_started, event)
        if not self._scopes:
            yield
            return
        with contextlib.ExitStack() as stack:
            for observer, scope in self._scopes:
                try:
                    made = scope(event)
                    if made is not None:
                        stack.enter_context(_Contained(observer, made, self._failures))
                except Exception:
                    self._failures.failed(observer, "step_scope")
            yield

    def headers(
        self, workflow: str, run_id: str, parent: observe.RunEvent | None
    ) -> dict[str, str] | None:
        """What the observers record with a run being started (None: nothing)."""
        if not self._headers:
            return None
        found: dict[str, str] = {}
        for observer, header in self._headers:
            try:
                made = header(workflow, run_id, parent)
                if made:
                    found.update(_checked_headers(observer, made))
            except Exception:
                self._failures.failed(observer, "headers")
        return found or None

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait up to ``timeout`` seconds in all for observers called from their own threads."""
        deadline = time.monotonic() + timeout
        ok = True
        for delivery in self.deliveries:
            ok = delivery.flush(max(deadline - time.monotonic(), 0.0)) and ok
        return ok

    def close(self, timeout: float = 5.0) -> None:
        """Flush (up to ``timeout`` seconds in all), then say what was left undelivered."""
        if self.flush(timeout):
            return
        for delivery in self.deliveries:
            left = delivery.undelivered()
            if left:
                log.warning(
                    "observer %r had %d events still queued when the engine closed; they "
                    "were not delivered",
                    delivery.observer,
                    left,
                )


def _check_step_times(observer: Any, times: Any, inline: bool) -> None:
    if not isinstance(times, observe.StepTimes):
        raise TypeError(
            f"{observer!r} has step_times={times!r}; it is a fluxo.observe.StepTimes, "
            "or None when the observer is told step_completed events instead"
        )
    if not inline:
        raise TypeError(
            f"{observer!r} has step_times but is not inline: its fold is called in the "
            "run's own thread, so set inline = True on the observer (and keep fold fast)"
        )


MAX_HEADERS_SIZE = 8192
"""The most characters (keys and values together) observers may record with one run."""


RESERVED_HEADER_PREFIX = "fluxo-"
"""Headers Fluxo records itself (``fluxo-forked-from``...); an observer may not return them."""


def _checked_headers(observer: Any, made: Mapping[str, str]) -> dict[str, str]:
    headers = dict(made)
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise TypeError(
                f"observer {observer!r} returned headers {headers!r}; headers map non-empty "
                "strings to strings"
            )
        try:
            (key + value).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"observer {observer!r} returned header {key!r} with text that is not "
                "UTF-8 (a lone surrogate)"
            ) from None
        if "\x00" in key + value:
            raise ValueError(f"observer {observer!r} returned header {key!r} with a NUL")
        if key.startswith(RESERVED_HEADER_PREFIX):
            raise ValueError(
                f"observer {observer!r} returned header {key!r}; headers starting "
                f"{RESERVED_HEADER_PREFIX!r} are Fluxo's own (a fork's source, say): name yours "
                "otherwise"
            )
    if sum(len(k) + len(v) for k, v in headers.items()) > MAX_HEADERS_SIZE:
        raise ValueError(
            f"observer {observer!r} returned headers of more than {MAX_HEADERS_SIZE} characters"
        )
    return headers


NONE = Dispatch()
"""The dispatch of an engine without observers: every kind's handlers are empty."""


def told(
    run: Any, kind: str, now: float, position: int | None = None, **fields: Any
) -> observe.RunEvent:
    """An event of ``run`` (a ``history.RunInfo``) told outside its executions."""
    return observe.RunEvent(
        kind=kind,
        run_id=run.id,
        workflow=run.workflow,
        time=now,
        position=position,
        parent=run.parent,
        headers=run.headers,
        **fields,
    )
