"""Store conformance: ``list_runs(id_prefix=...)``, runs whose id starts with a text.

The prefix is compared character for character on every store: case counts, and
the wildcards and escapes of SQL ``LIKE``, glob patterns and regular expressions
are plain characters. It combines with every other filter, the order (newest
``created_at`` first) and the limit.
"""

from __future__ import annotations

import pytest

from fluxo import history

RunStatus = history.RunStatus

T0 = 1_700_000_000.0

ODD_IDS = [
    "100%_off",
    "100%x_off",
    "1000_off",
    "a_b",
    "axb",
    "path\\to\\run",
    "path\\x",
    "pathxto",
    "re.+*?^$()[]{}|#-~ &",
    "re.x",
    "rex",
    "order-1",
    "order-10",
    "order-2",
    "Order-3",
    "ORDER-4",
    "order.5",
    "order",
    "run9",
    "run95",
    "run:",
    "ünïcødé-订单-🚀",
    "ünïcødé-订单-🚂",
    "ünïcødé-订",
    "unicode",
    "\ud7ff-before-surrogates",
    "\ue000-after-surrogates",
    "\U0010ffff-last",
    "\U0010ffff\U0010ffff",
]


@pytest.fixture
def odd(store, runs):
    """A run for each of ``ODD_IDS``, created a second apart in that order."""
    for i, run_id in enumerate(ODD_IDS):
        runs.start(run_id, now=T0 + i)
    return ODD_IDS


def ids(listed):
    return [run.id for run in listed]


def expected(prefix, among=ODD_IDS):
    """The ids of ``among`` that start with ``prefix``, newest (last created) first."""
    return [run_id for run_id in reversed(among) if run_id.startswith(prefix)]


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("order-", id="plain"),
        pytest.param("order-1", id="a-prefix-and-a-whole-id"),
        pytest.param("order", id="a-whole-id-and-longer-ones"),
        pytest.param("100%", id="percent"),
        pytest.param("100%_", id="percent-underscore"),
        pytest.param("a_", id="underscore"),
        pytest.param("path\\", id="backslash"),
        pytest.param("path\\t", id="backslash-letter"),
        pytest.param("re.", id="dot"),
        pytest.param("re.+*?^$()[]{}|#-~ ", id="regex-metacharacters"),
        pytest.param("run9", id="digit-then-colon"),
        pytest.param("ünïcødé-订", id="unicode"),
        pytest.param("ünïcødé-订单-", id="unicode-longer"),
        pytest.param("ünïcødé-订单-🚀", id="astral"),
        pytest.param("\ud7ff", id="before-the-surrogates"),
        pytest.param("\ue000", id="after-the-surrogates"),
        pytest.param("\U0010ffff", id="the-last-code-point"),
        pytest.param("\U0010ffff\U0010ffff", id="the-last-code-point-twice"),
    ],
)
def test_list_runs_by_id_prefix_keeps_the_ids_starting_with_it(store, odd, prefix):
    found = ids(store.list_runs(id_prefix=prefix))

    assert found == expected(prefix)
    assert found  # every prefix here names at least one run


def test_a_prefix_matches_a_whole_id_exactly(store, odd):
    assert ids(store.list_runs(id_prefix="order-10")) == ["order-10"]
    assert ids(store.list_runs(id_prefix="run:")) == ["run:"]
    assert ids(store.list_runs(id_prefix="re.+*?^$()[]{}|#-~ &")) == ["re.+*?^$()[]{}|#-~ &"]


def test_case_counts(store, odd):
    assert ids(store.list_runs(id_prefix="Order")) == ["Order-3"]
    assert ids(store.list_runs(id_prefix="ORDER-")) == ["ORDER-4"]
    assert store.list_runs(id_prefix="oRDER") == []
    assert store.list_runs(id_prefix="ÜNÏ") == []
    assert ids(store.list_runs(id_prefix="UNI")) == []


@pytest.mark.parametrize(
    "prefix",
    [
        pytest.param("order-%", id="percent-wildcard"),
        pytest.param("order_", id="underscore-wildcard"),
        pytest.param("order-*", id="glob-star"),
        pytest.param("order-?", id="glob-question"),
        pytest.param("order-[12]", id="glob-class"),
        pytest.param("order.", id="regex-dot"),
        pytest.param("ord.*", id="regex-any"),
        pytest.param("^order", id="regex-anchor"),
        pytest.param("100\\%", id="escaped-percent"),
        pytest.param("a\\_", id="escaped-underscore"),
        pytest.param("path\\\\", id="doubled-backslash"),
        pytest.param("re\\.", id="escaped-dot"),
        pytest.param("order-1 ", id="trailing-space"),
        pytest.param("unicodé", id="an-accent-more"),
        pytest.param("ünicode", id="an-accent-less"),
        pytest.param("nope", id="nothing"),
    ],
)
def test_patterns_are_plain_text(store, odd, prefix):
    found = ids(store.list_runs(id_prefix=prefix))

    assert found == expected(prefix)
    assert found == [run_id for run_id in found if run_id.startswith(prefix)]


def test_pattern_characters_match_only_themselves(store, odd):
    assert ids(store.list_runs(id_prefix="order.")) == ["order.5"]
    assert ids(store.list_runs(id_prefix="100%_")) == ["100%_off"]
    assert ids(store.list_runs(id_prefix="a_")) == ["a_b"]
    assert store.list_runs(id_prefix="order_") == []
    assert store.list_runs(id_prefix="order-%") == []
    assert store.list_runs(id_prefix="ord.*") == []


def test_an_empty_prefix_or_none_keeps_every_run(store, odd):
    every = ids(store.list_runs(limit=1000))

    assert every == list(reversed(ODD_IDS))
    assert ids(store.list_runs(id_prefix="", limit=1000)) == every
    assert ids(store.list_runs(id_prefix=None, limit=1000)) == every


def test_a_prefix_longer_than_every_id_matches_nothing(store, odd):
    assert store.list_runs(id_prefix="order-10-") == []
    assert store.list_runs(id_prefix="x" * 255) == []


# -- with the other filters ---------------------------------------------------------


@pytest.fixture
def fleet(store, runs):
    """Eight runs of two workflows, created a second apart, in various states."""
    plan = [
        ("eu-a0", "shop.a", RunStatus.COMPLETED),
        ("us-b1", "shop.b", RunStatus.FAILED),
        ("eu-a2", "shop.a", RunStatus.WAITING),
        ("eu-b3", "shop.b", RunStatus.PENDING),
        ("us-a4", "shop.a", RunStatus.FAILED),
        ("eu-b5", "shop.b", RunStatus.CANCELLED),
        ("eu-a6", "shop.a", RunStatus.FAILED),
        ("EU-a7", "shop.a", RunStatus.FAILED),
    ]
    for i, (run_id, workflow, status) in enumerate(plan):
        runs.start(run_id, workflow, now=T0 + i)
        runs.put(run_id, status, now=T0 + i)
    return plan


def test_the_prefix_keeps_the_order_newest_first(store, fleet):
    assert ids(store.list_runs(id_prefix="eu-")) == ["eu-a6", "eu-b5", "eu-b3", "eu-a2", "eu-a0"]
    assert ids(store.list_runs(id_prefix="us-")) == ["us-a4", "us-b1"]


def test_the_prefix_combines_with_statuses(store, fleet):
    failed = [RunStatus.FAILED]

    assert ids(store.list_runs(id_prefix="eu-", statuses=failed)) == ["eu-a6"]
    assert ids(store.list_runs(id_prefix="us-", statuses=failed)) == ["us-a4", "us-b1"]
    assert ids(
        store.list_runs(id_prefix="eu-", statuses=[RunStatus.PENDING, RunStatus.WAITING])
    ) == ["eu-b3", "eu-a2"]
    assert store.list_runs(id_prefix="eu-", statuses=[RunStatus.RUNNING]) == []
    assert store.list_runs(id_prefix="eu-", statuses=[]) == []


def test_the_prefix_combines_with_workflows(store, fleet):
    assert ids(store.list_runs(id_prefix="eu-", workflows=["shop.a"])) == [
        "eu-a6",
        "eu-a2",
        "eu-a0",
    ]
    assert ids(store.list_runs(id_prefix="us-", workflows=["shop.b"])) == ["us-b1"]
    assert store.list_runs(id_prefix="eu-", workflows=["shop.c"]) == []
    assert store.list_runs(id_prefix="eu-", workflows=[]) == []


def test_the_prefix_combines_with_statuses_and_workflows(store, fleet):
    listed = store.list_runs(
        id_prefix="eu-a", statuses=[RunStatus.FAILED, RunStatus.WAITING], workflows=["shop.a"]
    )

    assert ids(listed) == ["eu-a6", "eu-a2"]


def test_the_prefix_combines_with_a_created_range(store, fleet):
    assert ids(store.list_runs(id_prefix="eu-", created_after=T0 + 2)) == [
        "eu-a6",
        "eu-b5",
        "eu-b3",
        "eu-a2",
    ]
    assert ids(store.list_runs(id_prefix="eu-", created_before=T0 + 3)) == ["eu-a2", "eu-a0"]
    assert ids(store.list_runs(id_prefix="eu-b", created_after=T0 + 1, created_before=T0 + 5)) == [
        "eu-b3"
    ]


def test_the_prefix_respects_the_limit(store, fleet):
    assert ids(store.list_runs(id_prefix="eu-", limit=2)) == ["eu-a6", "eu-b5"]
    assert ids(store.list_runs(id_prefix="eu-", statuses=[RunStatus.FAILED], limit=1)) == ["eu-a6"]
    assert ids(store.list_runs(id_prefix="eu-", workflows=["shop.b"], limit=1)) == ["eu-b5"]
    assert store.list_runs(id_prefix="eu-", limit=0) == []


def test_the_limit_counts_matching_runs_only(store, runs):
    # The newest runs do not match: a store must look past them to fill the limit.
    for i in range(150):
        runs.start(f"old-{i:03}", now=T0 + i)
    for i in range(150):
        runs.start(f"new-{i:03}", now=T0 + 150 + i)

    listed = store.list_runs(id_prefix="old-", limit=120)

    assert ids(listed) == [f"old-{i:03}" for i in range(149, 29, -1)]


def test_the_listed_runs_are_as_they_stand(store, fleet):
    listed = store.list_runs(id_prefix="us-")

    assert listed == [store.get_run(run.id) for run in listed]
    assert [run.status for run in listed] == [RunStatus.FAILED, RunStatus.FAILED]


def test_a_prefix_in_an_empty_store(store):
    assert store.list_runs(id_prefix="eu-") == []
