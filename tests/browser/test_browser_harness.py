"""The browser harness itself: Chromium drives a page, and screenshot checks catch bad pages.

The pages come from a local ``http.server`` in a thread, so these tests need nothing but
Chromium and chromedriver.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from PIL import Image
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import conftest, helpers
from tests.browser.conftest import Screenshots

PAGES = {
    "/confirm.html": """<!doctype html>
<html><head><title>Harness page</title><style>
  body { font-family: sans-serif; margin: 40px; }
  button { font-size: 18px; padding: 8px 16px; }
</style></head>
<body>
  <h1>Fluxo harness</h1>
  <p>Run <b>r-42</b> is <span id="status">running</span></p>
  <p>It's "quoted"</p>
  <p style="display: none">Hidden note</p>
  <button id="cancel" onclick="
    document.getElementById('status').textContent =
      confirm('Cancel run r-42?') ? 'cancelled' : 'kept running';
  ">Cancel run</button>
</body></html>
""",
    "/blank.html": """<!doctype html>
<html><head><title>Blank</title></head><body style="background: #fff"></body></html>
""",
}


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        page = PAGES.get(self.path)
        if page is None:
            self.send_error(404)
            return
        body = page.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The base URL of a local server of :data:`PAGES`."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, name="harness-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def _status(driver: WebDriver) -> str:
    return str(driver.find_element(By.ID, "status").text)


@pytest.mark.browser
def test_a_page_is_driven_through_a_confirm_dialog(
    browser: WebDriver, screenshots: Screenshots, site: str
) -> None:
    browser.get(f"{site}/confirm.html")
    assert browser.title == "Harness page"
    before = screenshots.take("before")
    helpers.check_screenshot(before, ["Fluxo harness", "Run r-42 is running"], browser)

    browser.find_element(By.ID, "cancel").click()
    assert helpers.accept_confirm(browser) == "Cancel run r-42?"
    helpers.wait_for(browser, lambda d: _status(d) == "cancelled", message="status cancelled")

    after = screenshots.take("after confirm")
    check = helpers.check_screenshot(after, ["Fluxo harness", "Run r-42 is cancelled"], browser)
    assert not check.blank
    assert check.colours >= helpers.MIN_COLOURS
    assert "Run r-42 is cancelled" in check.visible_text
    assert before != after
    assert before.parent == after.parent == conftest.artifacts_dir() / "screenshots"
    with Image.open(after) as image:
        assert image.format == "PNG"
        assert image.size == tuple(browser.execute_script("return [innerWidth, innerHeight]"))
    assert image.width == 1400  # --window-size=1400,1000: the viewport is as wide


@pytest.mark.browser
def test_a_blank_page_fails_the_check(
    browser: WebDriver, screenshots: Screenshots, site: str
) -> None:
    browser.get(f"{site}/blank.html")
    path = screenshots.take("blank")
    with pytest.raises(helpers.ScreenshotCheckFailed, match="blank screenshot") as failed:
        helpers.check_screenshot(path, [], browser)
    check = failed.value.check
    assert check.blank
    assert check.colours == 1
    assert check.gray_stddev == 0.0
    assert check.dominant_share == 1.0
    assert check.missing_labels == ()


@pytest.mark.browser
def test_a_missing_or_hidden_label_fails_the_check(
    browser: WebDriver, screenshots: Screenshots, site: str
) -> None:
    browser.get(f"{site}/confirm.html")
    path = screenshots.take("labels")
    expected = ["Fluxo harness", 'It\'s "quoted"', "No such label", "Hidden note"]
    with pytest.raises(helpers.ScreenshotCheckFailed) as failed:
        helpers.check_screenshot(path, expected, browser)
    check = failed.value.check
    assert not check.blank
    assert check.missing_labels == ("No such label", "Hidden note")
    message = str(failed.value)
    assert "label 'No such label' is not visible on the page" in message
    assert "label 'Hidden note' is not visible on the page" in message
    assert f"screenshot: {path}" in message
    assert "visible text: 'Fluxo harness Run r-42 is running" in message
    assert "blank" not in message


@pytest.mark.browser
def test_pages_on_localhost_load_and_other_hosts_do_not(browser: WebDriver, site: str) -> None:
    browser.get(f"{site.replace('127.0.0.1', 'localhost')}/confirm.html")
    assert _status(browser) == "running"
    with pytest.raises(WebDriverException, match="ERR_NAME_NOT_RESOLVED"):
        browser.get("https://example.com/")


@pytest.mark.browser
def test_each_test_gets_the_browser_back_clean(
    chromium_session: conftest.ChromiumSession, site: str
) -> None:
    driver = chromium_session.fresh()
    driver.switch_to.new_window("tab")
    driver.get(f"{site}/confirm.html")
    driver.find_element(By.ID, "cancel").click()  # leaves the confirm() dialog open
    assert len(driver.window_handles) == 2

    driver = chromium_session.fresh()
    assert driver.current_url == "about:blank"
    assert len(driver.window_handles) == 1

    driver.quit()  # a browser that died is started again
    driver = chromium_session.fresh()
    assert driver is not None
    driver.get(f"{site}/confirm.html")
    assert _status(driver) == "running"


@pytest.mark.browser
def test_screenshots_are_numbered_and_replace_the_last_runs(
    browser: WebDriver, screenshots: Screenshots, site: str
) -> None:
    browser.get(f"{site}/confirm.html")
    first = screenshots.take("runs: page 1/2")
    again = screenshots.take("runs: page 1/2")
    assert first.name.endswith("--01-runs_page_1_2.png")
    assert again.name.endswith("--02-runs_page_1_2.png")
    stem = first.name.removesuffix("--01-runs_page_1_2.png")
    test = "test_screenshots_are_numbered_and_replace_the_last_runs"
    assert stem == f"browser.test_browser_harness.{test}"

    rerun = Screenshots(browser, screenshots.directory, stem)  # the same test, run again
    assert not first.exists()
    assert not again.exists()
    assert rerun.take("runs") == first.with_name(f"{stem}--01-runs.png")
    assert sorted(p.name for p in screenshots.directory.glob(f"{stem}--*")) == [
        f"{stem}--01-runs.png"
    ]


def test_screenshot_names_are_per_test_and_never_collide() -> None:
    stems = {
        conftest._stem("tests/browser/test_ui.py::test_runs"),
        conftest._stem("tests/browser/test_ui.py::test_runs_page"),
        conftest._stem("tests/browser/test_ui.py::test_runs[postgres]"),
        conftest._stem("tests/browser/test_ui.py::test_runs[sqlite]"),
        conftest._stem("tests/browser/test_ui.py::TestRuns::test_runs"),
        conftest._stem("tests/browser/other/test_ui.py::test_runs"),
    }
    assert len(stems) == 6
    assert conftest._stem("tests/browser/test_ui.py::test_runs[--x]") == (
        "browser.test_ui.test_runs-x"
    )
    long_a = conftest._stem("tests/browser/test_ui.py::test_" + "a" * 300 + "[1]")
    long_b = conftest._stem("tests/browser/test_ui.py::test_" + "a" * 300 + "[2]")
    assert long_a != long_b
    assert len(long_a) <= 150
    assert "--" not in long_a
