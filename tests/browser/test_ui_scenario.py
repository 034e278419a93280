"""The dashboard as an operator uses it: a real ``fluxo worker``, a real ``fluxo ui``, Chromium.

A worker process runs :mod:`tests.browser.uiapp`'s workflows on an SQLite file or a
PostgreSQL database of the module's own; a ``fluxo ui`` process serves the dashboard on
127.0.0.1 over the same store; headless Chromium reads its pages and presses its buttons,
with the confirm dialogs accepted. What the pages claim is checked against the store.

With ``FLUXO_UPDATE_DOCS_SCREENSHOTS=1`` the SQLite run also writes the screenshots the
dashboard's docs page shows (``docs/images/ui-runs.png``, ``ui-run.png``,
``ui-run-failed.png``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from PIL import Image
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

import fluxo
from fluxo import history
from tests.acceptance import _crash, _servers
from tests.browser import conftest, helpers, uiapp
from tests.browser.conftest import Screenshots
from tests.conftest import fresh_database

pytest.importorskip("uvicorn")
pytestmark = pytest.mark.browser

SQLITE = pytest.param("sqlite")
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
ROOT = _servers.ROOT

FLUXO = str(Path(sys.executable).with_name("fluxo"))  # the installed console script
APP = "tests.browser.uiapp:make_engine"
DOCS_ENV = "FLUXO_UPDATE_DOCS_SCREENSHOTS"
DOCS_IMAGES = ROOT / "docs" / "images"
DOCS_MAX_BYTES = 300_000
WAIT = 30.0
"""Seconds a wait on the worker may take; never reached when things work."""

CHECKOUT = "order-1001"
TO_SIGNAL, TO_CANCEL, PARKED = "refund-2001", "refund-2002", "refund-2003"
TO_FIX, BROKEN = "sync-eu", "sync-us"
HTML_RUN = "comment-1"
HTML = "<img src=x onerror=alert(1)>"
LONG_RUN = "import-5000"
LONG_ITEMS = 4998  # with its start and its end: 5,000 events
INVOICES = [f"invoice-{n:04d}" for n in range(1, 28)]  # more than the smallest page (25)

EXPECTED = {
    **dict.fromkeys(INVOICES, "completed"),
    LONG_RUN: "completed",
    CHECKOUT: "completed",
    TO_SIGNAL: "waiting",
    TO_CANCEL: "waiting",
    PARKED: "waiting",
    TO_FIX: "failed",
    BROKEN: "failed",
    HTML_RUN: "completed",
}
"""The runs the test starts, and the status each reaches before the pages are opened."""


@dataclasses.dataclass
class Stack:
    """A store, a worker and a dashboard on it, and an engine of the test's own."""

    kind: str
    url: str
    base: str
    workdir: Path
    fixes: Path
    releases: Path
    engine: fluxo.Engine
    child: str = ""
    """The checkout's child run (``<parent id>~child-<position>``), once it is done."""

    def expected(self) -> dict[str, str]:
        """Every run in the store and its status, as the scenario starts."""
        return {**EXPECTED, self.child: "completed"}

    def logs(self) -> str:
        return _servers.logs(self.workdir)

    def page(self, path: str = "/", **query: str | list[str]) -> str:
        return f"{self.base}{path}" + (f"?{urlencode(query, doseq=True)}" if query else "")

    def wait_status(self, run_id: str, status: str) -> None:
        """Wait, through the store, until ``run_id`` is ``status``."""
        _crash.wait(
            lambda: self.engine.get_run(run_id).status.value == status,
            WAIT,
            f"run {run_id} to be {status} in the store",
            every=0.05,
            ignoring=(fluxo.RunNotFoundError,),
            details=lambda: f"{self.describe(run_id)}\n{self.logs()}",
        )

    def describe(self, run_id: str) -> str:
        try:
            run = self.engine.get_run(run_id)
        except fluxo.RunNotFoundError:
            return f"no run {run_id} in the store"
        kinds = [event.kind for event in self.engine.history(run_id)]
        return f"run {run_id} is {run.status.value}; its history: {kinds[:40]}"


@pytest.fixture(scope="module", params=[SQLITE, POSTGRES])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """A worker and ``fluxo ui`` on a new SQLite file or PostgreSQL database, and its runs."""
    workdir = tmp_path_factory.mktemp(f"ui-{request.param}")
    with contextlib.ExitStack() as cleanup:
        if request.param == "sqlite":
            url = f"sqlite:///{workdir / 'runs.db'}"
        else:  # a database of the module's own; no server fails the tests under CI=true
            url = cleanup.enter_context(fresh_database(request.getfixturevalue("postgres_server")))
        fixes, flaky, releases = workdir / "fixes", workdir / "flaky", workdir / "releases"
        for directory in (fixes, flaky, releases):
            directory.mkdir()
        engine = cleanup.enter_context(fluxo.Engine(url, workflows=uiapp.WORKFLOWS))
        port = _servers.free_port()
        env = _servers.environment(
            ("FLUXO_",),
            **{
                uiapp.STORE_ENV: url,
                uiapp.FIXES_ENV: str(fixes),
                uiapp.FLAKY_ENV: str(flaky),
                uiapp.RELEASES_ENV: str(releases),
            },
        )
        stack = Stack(
            request.param, url, f"http://127.0.0.1:{port}", workdir, fixes, releases, engine
        )
        for number, run_id in enumerate(INVOICES, 1):  # the first write makes the tables
            engine.start(uiapp.invoice.options(id=run_id), number)
        command = [FLUXO, "worker", APP, "--concurrency", "4"]
        cleanup.enter_context(_servers.running(command, env, workdir / "worker.log", ROOT))
        command = [FLUXO, "ui", "--store", url, "--app", APP, "--port", str(port)]
        cleanup.enter_context(_servers.running(command, env, workdir / "ui.log", ROOT))
        _servers.wait_for(
            lambda: httpx.get(f"{stack.base}/static/fluxo.css").status_code == 200,
            WAIT,
            "fluxo ui to answer",
            workdir,
        )
        for run_id in INVOICES:  # the worker is up: the timelines show work, not a start-up
            stack.wait_status(run_id, "completed")
        _start_runs(engine)
        for run_id, status in EXPECTED.items():
            stack.wait_status(run_id, status)
        (child,) = engine.list_runs(id_prefix=f"{CHECKOUT}~child-")
        stack.child = child.id
        yield stack


def _start_runs(engine: fluxo.Engine) -> None:
    engine.start(uiapp.import_catalog.options(id=LONG_RUN), LONG_ITEMS)
    engine.start(uiapp.checkout.options(id=CHECKOUT), "o-1001")
    engine.signal(CHECKOUT, "go", {"approved_by": "ops"})  # kept until the run waits for it
    for run_id in (TO_SIGNAL, TO_CANCEL, PARKED):
        engine.start(uiapp.refund.options(id=run_id), f"o-{run_id[-4:]}")
    engine.start(uiapp.sync_catalog.options(id=TO_FIX), "eu")
    engine.start(uiapp.sync_catalog.options(id=BROKEN), "us")
    engine.start(uiapp.comment.options(id=HTML_RUN), HTML)


@pytest.fixture
def dashboard(stack: Stack, request: pytest.FixtureRequest) -> Stack:
    """The module's stack, whose logs end the report of a test that fails."""
    request.node.stash[conftest.SERVER_LOGS] = stack.logs
    return stack


# -- page helpers ------------------------------------------------------------------------------


def _wait(browser: WebDriver, condition: Callable[[WebDriver], Any], message: str) -> Any:
    return helpers.wait_for(browser, condition, message=message, timeout=WAIT)


def _open(browser: WebDriver, url: str, what: str) -> None:
    browser.get(url)
    _wait(
        browser,
        lambda d: d.execute_script("return document.readyState") == "complete",
        f"{what} to load",
    )


def _status(browser: WebDriver) -> str:
    """The run page's status badge, read at once: live refresh replaces it."""
    return str(
        browser.execute_script(
            "var badge = document.querySelector('#live .facts [data-status]');"
            " return badge ? badge.getAttribute('data-status') : 'no status badge';"
        )
    )


def _text(browser: WebDriver, css: str) -> str:
    """The text shown by the element ``css`` finds, read at once: live refresh replaces it."""
    text = browser.execute_script(
        "var found = document.querySelector(arguments[0]); return found && found.innerText;", css
    )
    assert text is not None, f"nothing on the page matches {css}"
    return str(text)


def _wait_status(browser: WebDriver, status: str, what: str) -> None:
    _wait(browser, lambda d: _status(d) == status, f"{what}: the status badge to say {status!r}")


def _listed(browser: WebDriver) -> list[str]:
    """The ids of the runs listed, read at once: the list is replaced as the store changes."""
    ids = browser.execute_script(
        "return Array.from(document.querySelectorAll('table.runs tbody tr[data-run]'),"
        " function (row) { return row.getAttribute('data-run'); });"
    )
    return [str(run_id) for run_id in ids]


def _counts(browser: WebDriver) -> dict[str, str]:
    """The counts shown per status, read at once."""
    found = browser.execute_script(
        "var shown = {}; document.querySelectorAll('[data-count]').forEach(function (cell) {"
        " shown[cell.getAttribute('data-count')] = cell.textContent; }); return shown;"
    )
    return {str(status): str(text) for status, text in found.items()}


def _click(browser: WebDriver, css: str, what: str) -> None:
    """Click the element ``css`` finds, found again if a live refresh replaced it."""
    _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, css).click() or True, f"click {what}")


def _mark_page(browser: WebDriver) -> None:
    """Mark the loaded page: a reload (or another page) would lose the mark."""
    browser.execute_script("window.fluxoTestMark = 'same page';")


def _same_page(browser: WebDriver) -> bool:
    return bool(browser.execute_script("return window.fluxoTestMark === 'same page';"))


@contextlib.contextmanager
def _navigation(browser: WebDriver, what: str) -> Iterator[None]:
    """Wait, after the block, until another page than the one before it has loaded."""
    _mark_page(browser)
    yield

    def loaded(driver: WebDriver) -> bool:
        try:
            return not _same_page(driver) and driver.execute_script(
                "return document.readyState === 'complete';"
            )
        except WebDriverException:  # the page is going away as the script runs
            return False

    _wait(browser, loaded, f"{what} to load")


def _submit_confirmed(browser: WebDriver, button: WebElement) -> str:
    button.click()
    return helpers.accept_confirm(browser)


def _filter_form(browser: WebDriver) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, "form.filters")


def _checked(browser: WebDriver, shot: Path, labels: list[str]) -> None:
    """The screenshot is not blank and shows every label (the page is still on screen)."""
    helpers.check_screenshot(shot, labels, browser)


def _docs_screenshot(stack: Stack, shot: Path, name: str) -> None:
    """Copy ``shot`` to docs/images/``name`` when asked to, from the SQLite run only."""
    if os.environ.get(DOCS_ENV) != "1" or stack.kind != "sqlite":
        return
    with Image.open(shot) as image:
        picture = image.convert("RGB")
    DOCS_IMAGES.mkdir(exist_ok=True)
    picture.save(DOCS_IMAGES / name, "PNG", optimize=True)  # tests/integration/test_docs_images.py
    assert (DOCS_IMAGES / name).stat().st_size <= DOCS_MAX_BYTES, (
        f"{name} is too heavy for the docs"
    )


# -- the runs page -----------------------------------------------------------------------------


def test_the_runs_page_counts_lists_filters_and_pages(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page(), "the runs page")
    _wait(
        browser,
        lambda d: d.find_element(By.CSS_SELECTOR, ".counts").get_attribute("data-loaded") == "1",
        "the counts to load",
    )
    expected_counts = dict.fromkeys((s.value for s in history.RunStatus), 0)
    for status in dashboard.expected().values():
        expected_counts[status] += 1
    assert _counts(browser) == {status: str(n) for status, n in expected_counts.items()}
    assert set(_listed(browser)) == set(dashboard.expected())  # 38 runs: one page of 50
    assert _listed(browser) == [run.id for run in dashboard.engine.list_runs()]  # newest first
    shot = screenshots.take("runs")
    _checked(browser, shot, ["Runs", "completed", "waiting", "failed", CHECKOUT, TO_FIX])
    _docs_screenshot(dashboard, shot, "ui-runs.png")

    # by status: tick one box, submit
    _filter_form(browser).find_element(By.CSS_SELECTOR, "input[name=status][value=failed]").click()
    with _navigation(browser, "the failed runs' page"):
        _filter_form(browser).find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "status=failed" in browser.current_url
    assert sorted(_listed(browser)) == sorted([TO_FIX, BROKEN])
    checkbox = _filter_form(browser).find_element(By.CSS_SELECTOR, "input[value=failed]")
    assert checkbox.is_selected()
    _checked(browser, screenshots.take("failed"), ["failed", TO_FIX, BROKEN])

    # by workflow (the status box ticked still counts: unticked now)
    _open(browser, dashboard.page(), "the runs page")
    field = _filter_form(browser).find_element(By.NAME, "workflow")
    field.send_keys("shop.refund")
    with _navigation(browser, "the refunds' page"):
        field.submit()
    assert "workflow=shop.refund" in browser.current_url
    assert sorted(_listed(browser)) == sorted([TO_SIGNAL, TO_CANCEL, PARKED])
    _checked(browser, screenshots.take("refunds"), ["shop.refund", PARKED])

    # by id prefix, a page of 25, then the next page
    _open(browser, dashboard.page(), "the runs page")
    _filter_form(browser).find_element(By.NAME, "id").send_keys("invoice-")
    _filter_form(browser).find_element(
        By.CSS_SELECTOR, "select[name=size] option[value='25']"
    ).click()
    with _navigation(browser, "the invoices' first page"):
        _filter_form(browser).find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    assert "id=invoice-" in browser.current_url
    first = _listed(browser)
    assert len(first) == 25
    assert first == sorted(INVOICES, reverse=True)[:25]
    with _navigation(browser, "the invoices' second page"):
        _click(browser, "nav.pager a[rel=next]", "the next page's link")
    assert "after=" in browser.current_url
    second = _listed(browser)
    assert second == sorted(INVOICES, reverse=True)[25:]
    assert not browser.find_elements(By.CSS_SELECTOR, "nav.pager a[rel=next]")
    _checked(browser, screenshots.take("invoices-page-2"), ["First page", INVOICES[0]])


# -- the run page ------------------------------------------------------------------------------

ROW_KINDS = ("start", "step", "timer", "signal", "child", "parallel", "branch", "end")


def _rows(browser: WebDriver, kind: str) -> list[WebElement]:
    return browser.find_elements(By.CSS_SELECTOR, f"li.tl-row[data-kind={kind}]")


def test_a_runs_timeline_shows_every_shape_and_links_its_child(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page("/run", id=CHECKOUT), "the checkout's page")
    _wait_status(browser, "completed", "the checkout")
    for kind in ROW_KINDS:
        assert _rows(browser, kind), f"no {kind} row in the timeline"
    assert len(_rows(browser, "branch")) == 3
    retried = [row for row in _rows(browser, "step") if "charge_card" in row.text]
    assert len(retried) == 1, [row.text for row in _rows(browser, "step")]
    assert retried[0].find_element(By.CSS_SELECTOR, ".tl-tries").text == "2 attempts"
    attempt = retried[0].find_element(By.CSS_SELECTOR, ".tl-attempt")  # the failed one, in red
    assert "payment gateway did not answer" in str(attempt.get_attribute("title"))
    assert "tl-ok" in str(retried[0].get_attribute("class"))

    events = browser.find_elements(By.CSS_SELECTOR, "table.events tbody tr[data-seq]")
    recorded = dashboard.engine.history(CHECKOUT)
    assert [row.find_elements(By.TAG_NAME, "td")[1].text for row in events] == [
        event.kind for event in recorded
    ]
    result = _text(browser, ".io")
    assert "charged o-1001" in result
    assert "approved_by" in result

    labels = [CHECKOUT, "completed", "Timeline", "Events", "Result", "2 attempts"]
    _checked(browser, screenshots.take("checkout"), labels)
    whole = _whole_page_shot(browser, screenshots, "checkout-whole")
    _checked(browser, whole, labels)
    _docs_screenshot(dashboard, whole, "ui-run.png")

    # the child row links to the child's page, which links back to its parent
    link = _rows(browser, "child")[0].find_element(By.CSS_SELECTOR, "a.tl-link")
    assert link.text == dashboard.child
    with _navigation(browser, "the child's page"):
        link.click()
    assert browser.find_element(By.CSS_SELECTOR, ".run-id").text == dashboard.child
    _wait_status(browser, "completed", "the child")
    assert _rows(browser, "step")
    _checked(browser, screenshots.take("child"), [dashboard.child, "shop.ship", "Parent"])
    with _navigation(browser, "the parent's page"):
        browser.find_element(By.XPATH, "//dt[.='Parent']/following-sibling::dd[1]/a").click()
    assert browser.find_element(By.CSS_SELECTOR, ".run-id").text == CHECKOUT
    assert _rows(browser, "parallel")


def _whole_page_shot(browser: WebDriver, screenshots: Screenshots, label: str) -> Path:
    """The whole page in one screenshot: a window as tall as the page (then the usual size).

    1,080 pixels wide, where the page puts the timeline above the events, each full width.
    """
    browser.set_window_size(1080, 1000)
    height = int(browser.execute_script("return document.documentElement.scrollHeight;"))
    browser.set_window_size(1080, min(height + 100, 2400))
    try:
        return screenshots.take(label)
    finally:
        browser.set_window_size(1400, 1000)


# -- actions -----------------------------------------------------------------------------------


def _signal_form(browser: WebDriver) -> WebElement:
    return browser.find_element(By.CSS_SELECTOR, "form.signal-form")


def test_a_signal_sent_from_the_page_completes_the_run_live(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page("/run", id=TO_SIGNAL), "the refund's page")
    _wait_status(browser, "waiting", "the refund")
    form = _signal_form(browser)
    form.find_element(By.NAME, "name").send_keys("approve")
    form.find_element(By.NAME, "payload").send_keys('{"approved": true, "by": "ops"}')
    with _navigation(browser, "the page after the signal"):
        question = _submit_confirmed(browser, form.find_element(By.NAME, "send"))
    assert question == f"Send this signal to {TO_SIGNAL}?"
    assert "done=signal" in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, ".alert-ok").text == "Signal sent."
    assert _status(browser) in ("pending", "running"), "the run went on without its release"
    _mark_page(browser)
    (dashboard.releases / "o-2001").touch()  # the run pays back and completes
    _wait_status(browser, "completed", "the signalled refund, refreshed live")
    assert _same_page(browser), "the page was reloaded: the live refresh did not bring it"
    result = _text(browser, ".io")
    assert '"by": "ops"' in result
    assert "paid back o-2001" in result
    assert dashboard.engine.get_run(TO_SIGNAL).status is history.RunStatus.COMPLETED
    shot = screenshots.take("signalled")
    _checked(browser, shot, ["Signal sent.", "completed", "Result", TO_SIGNAL])


def test_a_run_cancelled_from_the_page_shows_cancelled(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page("/run", id=TO_CANCEL), "the refund's page")
    _wait_status(browser, "waiting", "the refund")
    with _navigation(browser, "the page after the cancel"):
        question = _submit_confirmed(browser, browser.find_element(By.NAME, "cancel"))
    assert question == f"Cancel run {TO_CANCEL}?"
    assert "done=cancel" in browser.current_url
    assert browser.find_element(By.CSS_SELECTOR, ".alert-ok").text == "Cancellation requested."
    _mark_page(browser)
    _wait_status(browser, "cancelled", "the cancelled refund")
    assert _same_page(browser), "the page was reloaded: the live refresh did not bring it"
    assert not browser.find_elements(By.NAME, "cancel")
    assert browser.find_elements(By.NAME, "resume")
    dashboard.wait_status(TO_CANCEL, "cancelled")
    _checked(browser, screenshots.take("cancelled"), ["cancelled", "Resume run", TO_CANCEL])


def test_a_failed_run_is_retried_from_the_page_after_a_fix(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page("/run", id=TO_FIX), "the failed sync's page")
    _wait_status(browser, "failed", "the sync")
    error = browser.find_element(By.CSS_SELECTOR, ".outcome-error")
    assert "KeyError" in error.find_element(By.CSS_SELECTOR, ".error-text").text
    assert "has no 'currency'" in error.text
    traceback = error.find_element(By.CSS_SELECTOR, "pre.traceback").text
    assert "push_catalog" in traceback
    assert "Traceback" in traceback
    assert [row.get_attribute("data-status") for row in _rows(browser, "end")] == ["failed"]
    failed_shot = screenshots.take("failed")
    _checked(browser, failed_shot, ["failed", "Error", "Raised in step", "Traceback", "Retry run"])
    _docs_screenshot(dashboard, failed_shot, "ui-run-failed.png")

    (dashboard.fixes / "eu").touch()  # the fix, as deployed: the worker reads it at the attempt
    with _navigation(browser, "the page after the retry"):
        question = _submit_confirmed(browser, browser.find_element(By.NAME, "retry"))
    assert question == f"Retry run {TO_FIX} from its history?"
    assert "done=retry" in browser.current_url
    assert "Run retried" in browser.find_element(By.CSS_SELECTOR, ".alert-ok").text
    _mark_page(browser)
    _wait_status(browser, "completed", "the retried sync, refreshed live")
    assert _same_page(browser), "the page was reloaded: the live refresh did not bring it"
    assert "catalog pushed to eu" in _text(browser, ".io")
    assert _rows(browser, "retried"), "no row for the operator's retry"
    _checked(browser, screenshots.take("retried"), ["completed", "catalog pushed to eu"])
    assert dashboard.engine.get_run(BROKEN).status is history.RunStatus.FAILED  # not fixed


def test_an_input_of_html_is_shown_as_text(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page("/run", id=HTML_RUN), "the comment's page")
    _wait_status(browser, "completed", "the comment")
    shown = _text(browser, ".io")
    assert shown.count(HTML) == 2, shown  # the input and the result, as text
    assert not browser.find_elements(By.CSS_SELECTOR, "main img")
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # the property raises when no dialog is open
    _checked(browser, screenshots.take("html-input"), [HTML, HTML_RUN])


def test_a_payload_that_is_not_json_is_named_on_the_page(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    _open(browser, dashboard.page("/run", id=PARKED), "the parked refund's page")
    form = _signal_form(browser)
    form.find_element(By.NAME, "name").send_keys("approve")
    form.find_element(By.NAME, "payload").send_keys("{approved: yes}")
    with _navigation(browser, "the page refusing the payload"):
        _submit_confirmed(browser, form.find_element(By.NAME, "send"))
    alert = browser.find_element(By.CSS_SELECTOR, "p.alert-error[role=alert]")
    assert alert.text.startswith("payload: not JSON (Expecting property name enclosed in double")
    assert 'for example {"approved": true}' in alert.text
    assert "\n" not in alert.text
    assert _signal_form(browser).find_element(By.NAME, "payload").get_attribute("value") == (
        "{approved: yes}"
    )  # kept, to be corrected
    assert _status(browser) == "waiting"
    assert dashboard.engine.get_run(PARKED).status is history.RunStatus.WAITING
    _checked(browser, screenshots.take("bad-payload"), ["payload: not JSON", PARKED])


def _count(browser: WebDriver, css: str) -> int:
    return int(
        browser.execute_script("return document.querySelectorAll(arguments[0]).length;", css)
    )


def test_a_page_of_five_thousand_events_becomes_interactive(
    dashboard: Stack, browser: WebDriver, screenshots: Screenshots
) -> None:
    assert len(dashboard.engine.history(LONG_RUN)) == 5000
    _open(browser, dashboard.page("/run", id=LONG_RUN), "the long run's page")
    timing = browser.execute_script(
        "var n = performance.getEntriesByType('navigation')[0];"
        "return {responseStart: n.responseStart, domContentLoadedEventEnd:"
        " n.domContentLoadedEventEnd, loadEventEnd: n.loadEventEnd, bytes: n.transferSize};"
    )
    print(f"\n5,000-event run page on {dashboard.kind}, ms after navigation start: {timing}")
    assert _count(browser, "li.tl-row") >= 4000  # the start, 4,998 steps, the end
    assert _count(browser, "table.events tbody tr[data-seq]") == 5000
    assert _status(browser) == "completed"
    _checked(browser, screenshots.take("long"), [LONG_RUN, "5000 events", "completed"])
    with _navigation(browser, "the runs page, from the long run's"):
        browser.find_element(By.CSS_SELECTOR, ".crumbs a").click()  # the page answers a click
    assert LONG_RUN in _listed(browser)
