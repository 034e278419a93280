"""Workflows that run on their own: a nightly report, and prices synced every five minutes.

Run here in the time-skipping test environment, so two days pass in a blink; in
production, `fluxo worker app:engine` starts the schedules as it starts.
"""

from datetime import datetime, timedelta, timezone

import fluxo
from fluxo.testing import WorkflowEnvironment


@fluxo.schedule("0 2 * * *", tz="Europe/Helsinki")
@fluxo.workflow(name="nightly-report")
def nightly_report(tick: datetime) -> str:
    return f"report for {tick:%Y-%m-%d %H:%M}"


@fluxo.schedule(every=timedelta(minutes=5), catch_up="all")
@fluxo.workflow(name="sync-prices")
def sync_prices(tick: datetime) -> str:
    return f"prices at {tick:%H:%M}"


def main() -> None:
    start = datetime(2030, 1, 1, 12, 0, tzinfo=timezone.utc)
    with WorkflowEnvironment(workflows=[nightly_report], start_time=start) as env:
        engine = env.engine
        engine.schedules.start()  # what each worker does as it starts
        env.advance(timedelta(days=2))
        for run in sorted(engine.list_runs(workflow=nightly_report), key=lambda r: r.id):
            print(run.id, "->", engine.handle(run.id).result(timeout=0))
        # prints: nightly-report@2030-01-02T00:00:00Z -> report for 2030-01-02 02:00
        # prints: nightly-report@2030-01-03T00:00:00Z -> report for 2030-01-03 02:00

        engine.schedules.pause(nightly_report)
        env.advance(timedelta(days=1))
        info = engine.schedules.get(nightly_report)
        print("paused:", info.paused, "last tick:", info.last_tick)
        # prints: paused: True last tick: 2030-01-03 02:00:00+02:00
        run_id = engine.schedules.trigger(nightly_report)  # a run now, paused or not
        env.advance(timedelta(seconds=1))
        print(run_id, "->", engine.handle(run_id).result(timeout=0))
        # prints: nightly-report@trigger-2030-01-04T12:00:00.000000Z -> report for 2030-01-04 14:00
        engine.schedules.resume(nightly_report)
        env.advance(timedelta(days=1))
        print("next tick:", engine.schedules.get(nightly_report).next_tick)
        # prints: next tick: 2030-01-06 02:00:00+02:00

    print(sync_prices.schedule.describe(), sync_prices.schedule.catch_up)
    # prints: every 5m all


if __name__ == "__main__":
    main()
