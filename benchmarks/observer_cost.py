"""One run of N trivial steps on the memory store, with or without observers, for callgrind.

Wall-clock ratios on a shared machine drift by more than the few percent an
observer costs, so this program is made to be run under callgrind, which counts
instructions (the same for the same program and inputs, whatever else runs)::

    for mode in off basic events otel; do for n in 500 2500; do
      valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/observer_cost.py --mode $mode --steps $n 2>&1 | grep Collected
    done; done

The cost of one step is the difference between the two runs divided by 2,000
(start-up and the run's own start and end cancel out); set ``PYTHONHASHSEED=0``
for the same count each time. ``basic`` reads the metrics once at the end, so
their folding is counted; ``events`` is an observer told each step as an event
(the floor of an observer without ``step_times``); ``otel`` exports to
nowhere through the SDK's batch processor (``pip install 'fluxo[otel]'
opentelemetry-sdk``). ``benchmarks/step_overhead.py`` gives the same comparison
in microseconds.
"""

from __future__ import annotations

import argparse

from step_overhead import many, otel_observer

import fluxo


class StepEvents(fluxo.Observer):
    """An inline observer told every step that completes as an event, which it ignores."""

    inline = True

    def step_completed(self, event: fluxo.RunEvent) -> None:
        """The floor of an observer told events: the event, and the call."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["off", "basic", "events", "otel"], default="off")
    parser.add_argument("--steps", type=int, default=500)
    args = parser.parse_args()
    metrics = fluxo.observe.BasicMetrics()
    observers: list[object] = []
    if args.mode == "events":
        observers = [StepEvents()]
    elif args.mode == "basic":
        observers = [metrics]
    elif args.mode == "otel":
        otel = otel_observer()
        if otel is None:
            raise SystemExit("pip install 'fluxo[otel]' opentelemetry-sdk")
        observers = [otel]
    with fluxo.Engine("memory://", workflows=[many], observers=observers) as engine:
        engine.run(many, args.steps)
        metrics.snapshot()


if __name__ == "__main__":
    main()
