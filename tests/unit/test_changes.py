"""The change feed every store's ``change_token`` and ``wait_for_change`` stand on.

Behaviour only: what a wait returns, and when; never how long it took beyond
"it returned before its timeout" (the conformance suite checks every store).
"""

from __future__ import annotations

import threading
import time

from fluxo.stores import _changes

LONG = 30.0
"""A timeout no passing test waits out."""


def wait_in_thread(feed: _changes.ChangeFeed, version: int) -> tuple[threading.Thread, list[bool]]:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(feed.wait(version, LONG)), daemon=True)
    thread.start()
    return thread, result


def test_a_wait_with_nothing_changed_times_out() -> None:
    feed = _changes.ChangeFeed()

    assert feed.wait(feed.since(None), 0.05) is False
    assert feed.wait(feed.since(None), 0) is False
    assert feed.wait(feed.since(None), -1) is False


def test_a_change_after_the_token_wakes_a_later_wait_at_once() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()

    feed.changed()

    assert feed.wait(feed.since(token), 0) is True
    assert feed.wait(feed.since(None), 0) is False  # without a token only later changes count


def test_a_change_wakes_every_waiter() -> None:
    feed = _changes.ChangeFeed()
    waiters = [wait_in_thread(feed, feed.version) for _ in range(3)]

    feed.changed()

    for thread, result in waiters:
        thread.join(LONG)
        assert result == [True]


def test_closing_wakes_waiters_now_and_later() -> None:
    feed = _changes.ChangeFeed()
    thread, result = wait_in_thread(feed, feed.version)

    feed.close()
    feed.close()

    thread.join(LONG)
    assert result == [True]
    assert feed.closed
    assert feed.wait(feed.since(None), LONG) is True


def test_tokens_carry_the_backends_mark() -> None:
    feed = _changes.ChangeFeed()
    token = _changes.Token(feed.version, ("fingerprint", 1))

    assert feed.since(token) == token.version
    assert token.mark == ("fingerprint", 1)
    assert feed.token().mark is None


def test_a_polling_wait_stops_when_the_poll_sees_a_change() -> None:
    feed = _changes.ChangeFeed()
    polls = []

    def poll() -> bool:
        polls.append(1)
        return len(polls) == 3

    woken = feed.wait_polling(feed.version, time.monotonic() + LONG, poll, interval=0.01)

    assert woken is True
    assert len(polls) == 3


def test_a_polling_wait_times_out_without_a_last_poll() -> None:
    feed = _changes.ChangeFeed()
    polls = []

    def poll() -> bool:
        polls.append(1)
        return False

    woken = feed.wait_polling(feed.version, time.monotonic() + 0.05, poll, interval=1.0)

    assert woken is False
    assert polls == []  # less than one interval was left: no poll


def test_a_polling_wait_is_woken_by_a_change_in_the_process() -> None:
    feed = _changes.ChangeFeed()
    version = feed.version
    timer = threading.Timer(0.05, feed.changed)
    timer.start()

    woken = feed.wait_polling(version, time.monotonic() + LONG, lambda: False, interval=LONG)

    timer.join()
    assert woken is True


def test_a_pause_ends_when_the_feed_closes() -> None:
    feed = _changes.ChangeFeed()
    timer = threading.Timer(0.05, feed.close)
    timer.start()
    paused = threading.Thread(target=feed.pause, args=(LONG,), daemon=True)

    paused.start()
    paused.join(LONG)
    timer.join()

    assert not paused.is_alive()


def test_a_wait_on_one_run_ignores_changes_of_other_runs() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()

    feed.changed("other")
    feed.changed("another")

    assert feed.wait(feed.since(token), 0, "mine") is False
    assert feed.wait(feed.since(token), 0) is True  # a wait on any run sees them
    feed.changed("mine")
    assert feed.wait(feed.since(token), 0, "mine") is True


def test_a_change_of_its_run_wakes_a_blocked_wait_on_one_run() -> None:
    feed = _changes.ChangeFeed()
    version = feed.since(None)
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(feed.wait(version, LONG, "mine")), daemon=True
    )
    thread.start()

    feed.changed("other")
    thread.join(0.1)
    assert thread.is_alive()  # still waiting: not its run
    feed.changed("mine")
    thread.join(LONG)

    assert result == [True]


def test_a_change_that_names_no_run_wakes_waits_on_every_run() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()

    feed.changed()  # a wake source that cannot tell which run (or reconnected)

    assert feed.wait(feed.since(token), 0, "mine") is True


def test_a_wait_on_one_run_ends_once_the_feed_forgets_changes_made_since_it_began() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()
    for i in range(_changes.RECENT_RUNS):
        feed.changed(f"other-{i}")
    assert feed.wait(feed.since(token), 0, "mine") is False  # every change is remembered

    feed.changed("one-too-many")  # the oldest, made after the token, is forgotten

    assert feed.wait(feed.since(token), 0, "mine") is True  # so the wait may have missed one
    later = feed.token()
    assert feed.wait(feed.since(later), 0, "mine") is False  # nothing forgotten since


def test_a_run_changed_again_is_remembered_at_its_last_change() -> None:
    feed = _changes.ChangeFeed()
    feed.changed("mine")
    token = feed.token()
    for i in range(_changes.RECENT_RUNS - 1):
        feed.changed(f"other-{i}")
    feed.changed("mine")  # moves to the newest: not the one forgotten next
    feed.changed("last")

    assert feed.wait(feed.since(token), 0, "mine") is True
    assert feed.wait(feed.since(feed.token()), 0, "other-5") is False


def test_a_polling_wait_on_one_run_ignores_other_runs_changes_in_the_process() -> None:
    feed = _changes.ChangeFeed()
    version = feed.since(None)
    feed.changed("other")

    woken = feed.wait_polling(version, time.monotonic() + 0.05, lambda: False, 0.01, "mine")

    assert woken is False


def test_a_wait_on_any_run_ignores_the_changes_of_the_runs_it_is_told_to() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()

    feed.changed("held")
    feed.changed("held-too")

    assert feed.wait(feed.since(token), 0, ignoring={"held", "held-too"}) is False
    assert feed.wait(feed.since(token), 0, ignoring={"held"}) is True  # held-too counts
    feed.changed("other")
    assert feed.wait(feed.since(token), 0, ignoring={"held", "held-too"}) is True


def test_a_wait_ignoring_runs_still_ends_for_a_change_that_names_no_run() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()
    feed.changed("held")
    feed.changed()  # a wake source that cannot tell which run

    assert feed.wait(feed.since(token), 0, ignoring={"held"}) is True


def test_a_wait_ignoring_runs_ends_once_the_feed_forgets_changes_made_since_it_began() -> None:
    feed = _changes.ChangeFeed()
    token = feed.token()
    for _ in range(_changes.RECENT_RUNS):
        feed.changed("held")
    assert feed.wait(feed.since(token), 0, ignoring={"held"}) is False  # one run, remembered
    for i in range(_changes.RECENT_RUNS + 1):
        feed.changed(f"held-{i}")

    assert feed.wait(feed.since(token), 0, ignoring=Everything()) is True  # forgot some


class Everything:
    """Ignores every run."""

    def __contains__(self, run_id: object) -> bool:
        return True


class Held:
    """A live view of held runs, as a worker passes: read each time the wait checks."""

    def __init__(self) -> None:
        self.runs: set[str] = {"held"}

    def __contains__(self, run_id: object) -> bool:
        return run_id in self.runs


def test_a_wait_ignoring_a_live_view_reads_it_when_it_checks() -> None:
    feed = _changes.ChangeFeed()
    version = feed.since(None)
    held = Held()
    result: list[bool] = []
    thread = threading.Thread(
        target=lambda: result.append(feed.wait(version, LONG, ignoring=held)), daemon=True
    )
    thread.start()

    feed.changed("held")
    thread.join(0.1)
    assert thread.is_alive()  # still waiting: its thread takes that run back
    held.runs.clear()  # the hold ended: the next change it checks counts
    feed.changed("held")
    thread.join(LONG)

    assert result == [True]


def test_a_polling_wait_ignoring_runs_ignores_their_changes_in_the_process() -> None:
    feed = _changes.ChangeFeed()
    version = feed.since(None)
    feed.changed("held")

    woken = feed.wait_polling(
        version, time.monotonic() + 0.05, lambda: False, 0.01, ignoring={"held"}
    )

    assert woken is False
