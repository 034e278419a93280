"""What one execution shares with other threads, in one object, each field's owner named.

An execution runs its workflow in one thread. Others need to reach it: the
heartbeat tells it of a cancellation or of a lease lost to another worker, a
stopping worker or engine tells it to stop, and the heartbeat must know whether
the lease it renews is still the execution's to hold. Every field they share is
here; nothing else of an execution is touched from another thread.
"""

from __future__ import annotations

import threading


class _Flag(threading.Event):
    """A run's cancel or stop flag: setting it also wakes the run's short back-offs."""

    def __init__(self, attention: threading.Event) -> None:
        super().__init__()
        self._attention = attention

    def set(self) -> None:
        super().set()
        self._attention.set()


class SharedState:
    """The state an execution shares with the threads around it.

    Attributes:
        cancel_requested: the run's cancellation is known. Set by whoever learns
            it: the executor as it loads the run, the heartbeat (a read of the run's
            record), a held wait as it takes its run back. Read by the execution at
            its next durable call, which raises ``fluxo.Cancelled`` there.
        stop_requested: stop at the next durable call, recording nothing more, and
            give the run back. Set by the heartbeat (the lease passed to another
            worker, or the heartbeat died), by a stopping worker or engine. Read
            by the execution, and by a held wait, which lets go of its run.
        attention: set whenever one of the two flags is: it ends the short
            back-offs the execution waits in its thread (a step's retry). Written
            and cleared by the execution's thread only.
        holding: the execution holds a recorded wait in its thread (a sticky wait)
            and executes nothing meanwhile, until it has taken its run back or lets
            go of it. Written by the runner's holder, in the execution's thread;
            read by a stopping worker, which stops held waits first (their runs are
            recorded and resume anywhere), and by a worker's claim loop, which
            leaves the run to its thread meanwhile.
        lease_released: the execution's last write cleared the run's lease (a
            status write does, as the run suspends or ends), so a heartbeat that
            finds no lease has not lost it to anyone. Written by the execution's
            thread; read by the heartbeat.
        lease_epoch: how many times the execution took its run back after a held
            wait (a new lease each time). Written by the runner's holder, in the
            execution's thread; read by the heartbeat, which ignores what it read
            of a run before the epoch changed.
    """

    __slots__ = (
        "attention",
        "cancel_requested",
        "holding",
        "lease_epoch",
        "lease_released",
        "stop_requested",
    )

    def __init__(self, *, cancel_requested: bool = False) -> None:
        self.attention = threading.Event()
        self.cancel_requested: threading.Event = _Flag(self.attention)
        if cancel_requested:
            self.cancel_requested.set()
        self.stop_requested: threading.Event = _Flag(self.attention)
        self.holding = False
        self.lease_released = False
        self.lease_epoch = 0
