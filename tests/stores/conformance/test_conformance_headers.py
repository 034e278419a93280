"""Store conformance: a run's headers are recorded at creation and read back by every read.

Headers are a small mapping of text to text (a W3C ``traceparent``, say) given to
``create_run``. Every read returns them as given: ``create_run`` itself,
``get_run``, ``get_runs``, ``load``, ``list_runs``, ``claim``, ``claim_run``,
``request_cancel`` and ``reopen``. A run created without any has none (an empty
mapping), and creating a run again keeps the headers it was created with.
Damaged stored headers are in ``test_conformance_damage.py``.
"""

from __future__ import annotations

import pytest

from fluxo import history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0

TRACE = {
    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "tracestate": "congo=t61rcWkgMzE",
}


def _assert_every_read_has(store, run_id, headers):
    """Each read of the run (by its name) returns exactly ``headers``."""
    found = {
        "get_run": store.get_run(run_id).headers,
        "get_runs": store.get_runs([run_id])[run_id].headers,
        "load": store.load(run_id).run.headers,
        "list_runs": next(run.headers for run in store.list_runs() if run.id == run_id),
    }
    assert found == {read: headers for read in found}


def test_a_run_created_without_headers_has_none(store):
    run, _ = store.create_run("r1", "wf", b"[]", now=T0)

    assert run.headers == {}
    _assert_every_read_has(store, "r1", {})
    (claimed,) = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    assert claimed.headers == {}


@pytest.mark.parametrize("none", [None, {}], ids=["none", "empty"])
def test_no_headers_and_empty_headers_are_the_same(store, none):
    run, _ = store.create_run("r1", "wf", b"[]", now=T0, headers=none)

    assert run.headers == {}
    assert store.get_run("r1") == run
    assert store.load("r1").run == run


def test_create_run_keeps_the_headers(store):
    run, created = store.create_run("r1", "wf", b"[]", now=T0, headers=TRACE)

    assert created is True
    assert run.headers == TRACE
    assert store.get_run("r1") == run
    assert store.get_runs(["r1"]) == {"r1": run}
    assert store.load("r1").run == run
    assert store.list_runs() == [run]
    assert store.list_runs(workflows=["wf"], statuses=[RunStatus.PENDING]) == [run]
    _assert_every_read_has(store, "r1", TRACE)


def test_the_headers_stay_with_the_run_through_every_change(store, runs):
    store.create_run("r1", "wf", b"[]", now=T0, headers=TRACE, parent="p-1")

    (claimed,) = store.claim("w1", ["wf"], now=T0 + 1, lease_until=T0 + 31, limit=1)
    assert claimed.headers == TRACE
    assert claimed == store.get_run("r1")
    runs.wait("r1", now=T0 + 2, ready_at=T0 + 5)
    assert store.get_run("r1").headers == TRACE
    store.send_signal("r1", "go", b"1", now=T0 + 2)
    cancelled = store.request_cancel("r1", now=T0 + 3)
    assert cancelled.headers == TRACE
    assert cancelled == store.get_run("r1")
    taken = store.claim_run("w2", "r1", now=T0 + 4, lease_until=T0 + 34)
    assert taken is not None
    assert taken.headers == TRACE
    assert taken == store.get_run("r1")
    store.renew("w2", ["r1"], lease_until=T0 + 40)
    store.release("w2", "r1", now=T0 + 4)
    runs.finish("r1", RunStatus.FAILED, now=T0 + 5)
    assert store.request_cancel("r1", now=T0 + 6).headers == TRACE
    reopened = store.reopen("r1", now=T0 + 7)
    assert reopened.headers == TRACE
    assert reopened == store.load("r1").run
    assert [(r.headers, r.parent) for r in store.list_runs()] == [(TRACE, "p-1")]


def test_a_run_created_leased_keeps_its_headers(store):
    run, _ = store.create_run(
        "r1", "wf", b"[]", now=T0, owner="inline-1", lease_until=T0 + 30, headers=TRACE
    )

    assert (run.status, run.lease_owner, run.headers) == (RunStatus.RUNNING, "inline-1", TRACE)
    assert store.get_run("r1") == run
    assert store.load("r1").run == run


@pytest.mark.parametrize(
    ("first", "second"),
    [(TRACE, {"traceparent": "00-other-01"}), (TRACE, None), (None, TRACE)],
    ids=["other", "none-after-some", "some-after-none"],
)
def test_create_run_again_keeps_the_first_headers(store, first, second):
    created, _ = store.create_run("r1", "wf", b"[]", now=T0, headers=first)

    again, was_created = store.create_run("r1", "wf", b"[]", now=T0 + 1, headers=second)

    assert was_created is False
    assert again == created
    assert again.headers == (first or {})
    _assert_every_read_has(store, "r1", first or {})


def test_runs_keep_their_own_headers(store):
    for i in range(3):
        store.create_run(f"r{i}", "wf", b"[]", now=T0 + i, headers={"n": str(i)} if i else None)

    assert [(r.id, r.headers) for r in store.list_runs()] == [
        ("r2", {"n": "2"}),
        ("r1", {"n": "1"}),
        ("r0", {}),
    ]
    claimed = store.claim("w1", ["wf"], now=T0 + 2, lease_until=T0 + 32, limit=5)
    assert [(r.id, r.headers) for r in claimed] == [
        ("r0", {}),
        ("r1", {"n": "1"}),
        ("r2", {"n": "2"}),
    ]
    assert claimed == [store.get_run(r.id) for r in claimed]
    assert store.get_runs(["r0", "r1", "r2"]) == {r.id: r for r in claimed}


@pytest.mark.parametrize(
    "headers",
    [
        {"baggage": "user=ünïcødé,city=東京", "emoji": "🚀" * 50},
        {"ключ": "значение", "名前": "値"},
        {"a.b": "dots", "$set": "dollars", 'quote"s': "back\\slash", "": "empty name"},
        {
            "tab": "a\tb",
            "newline": "a\nb",
            "json": '{"not": "parsed"}',
            "blank": "",
            "nul": "a\x00b",
        },
        {"tracestate": ",".join(f"vendor{i}=" + "x" * 200 for i in range(20))},  # about 4 KB
    ],
    ids=["non-ascii-values", "non-ascii-names", "odd-names", "odd-values", "4kb"],
)
def test_any_headers_round_trip_exactly(store, headers):
    run, _ = store.create_run("r1", "wf", b"[]", now=T0, headers=headers)

    assert run.headers == headers
    _assert_every_read_has(store, "r1", headers)
    (claimed,) = store.claim("w1", ["wf"], now=T0, lease_until=T0 + 30, limit=1)
    assert claimed.headers == headers


def test_the_headers_given_are_copied_not_shared(store):
    given = dict(TRACE)

    run, _ = store.create_run("r1", "wf", b"[]", now=T0, headers=given)
    given["traceparent"] = "changed afterwards"

    assert run.headers == TRACE
    assert store.get_run("r1").headers == TRACE
