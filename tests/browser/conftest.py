"""Fixtures of the browser tests: ``browser`` (a headless Chromium) and ``screenshots``.

One Chromium serves the tests of a module; each test gets it back on ``about:blank``, with
one window, no open dialog and no cookies. Missing binaries skip the tests, or fail them
when ``CI=true``, where ``scripts/test`` should have installed them.

Screenshots go to ``$FLUXO_TEST_ARTIFACTS/screenshots``, else to
``tests/.artifacts/screenshots``, one PNG per page a test shows, named after the test and
a label: ``browser.test_browser_harness.test_confirm--01-after-confirm.png``. A test's
screenshots from earlier runs are removed when it starts, so the directory shows the last
run. Test ids are unique within a run, so pytest-xdist's processes never write the same file.

A test whose page comes from servers of its own puts a function in its item's stash
under :data:`SERVER_LOGS`; a failed test's report then ends with what it returns.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import tempfile
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
import urllib3
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser import helpers

ARTIFACTS_ENV = "FLUXO_TEST_ARTIFACTS"
REPO = Path(__file__).resolve().parents[2]
SERVER_LOGS = pytest.StashKey[Callable[[], str]]()
"""The test's servers' logs, added to the report of a test that fails."""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item,
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the servers' logs (:data:`SERVER_LOGS`) to a failed test's report."""
    report = yield
    logs = item.stash.get(SERVER_LOGS, None)
    if logs is not None and report.failed:
        report.sections.append(("servers' logs", logs()))
    return report


def artifacts_dir() -> Path:
    """Where test artifacts go: ``$FLUXO_TEST_ARTIFACTS``, else ``tests/.artifacts``."""
    configured = os.environ.get(ARTIFACTS_ENV)
    return Path(configured) if configured else REPO / "tests" / ".artifacts"


class ChromiumSession:
    """One Chromium and its profile directory, restarted if it dies between tests."""

    def __init__(self, workdir: Path) -> None:
        self._workdir = workdir
        self._starts = 0
        self.driver = self._start()

    def _start(self) -> webdriver.Chrome:
        self._starts += 1
        profile = self._workdir / f"profile-{self._starts}"
        profile.mkdir()
        log = self._workdir / f"chromedriver-{self._starts}.log"
        try:
            return helpers.start_chromium(profile, driver_log=log)
        except WebDriverException as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            chromium, chromedriver = helpers.chromium_paths()
            pytest.fail(
                f"Chromium ({chromium}, driven by {chromedriver}) did not start: "
                f"{exc.msg or exc!r}\nchromedriver log tail:\n{tail}"
            )

    def fresh(self) -> webdriver.Chrome:
        """The browser on ``about:blank``: one window, no dialog, no cookies; restarted if dead."""
        try:
            if not self._driver_alive():
                raise WebDriverException("chromedriver exited")
            self._reset()
        except (WebDriverException, urllib3.exceptions.HTTPError):
            self.quit()
            self.driver = self._start()
        return self.driver

    def _driver_alive(self) -> bool:
        process = getattr(self.driver.service, "process", None)
        return process is not None and process.poll() is None

    def _reset(self) -> None:
        driver = self.driver
        with contextlib.suppress(NoAlertPresentException):
            driver.switch_to.alert.dismiss()
        handles = driver.window_handles
        for handle in handles[1:]:
            driver.switch_to.window(handle)
            driver.close()
        driver.switch_to.window(handles[0])
        driver.delete_all_cookies()
        driver.get("about:blank")

    def quit(self) -> None:
        """Quit Chromium and chromedriver; if that fails, kill their process group."""
        driver = self.driver
        try:
            driver.quit()
        except Exception:
            process = getattr(driver.service, "process", None)
            if process is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)  # chromedriver leads the group
                process.wait(timeout=10)


@pytest.fixture(scope="module")
def chromium_session() -> Iterator[ChromiumSession]:
    """The module's Chromium; tests take ``browser``, which hands it over clean."""
    missing = helpers.missing_binaries()
    if missing:
        message = (
            f"browser tests need Chromium and chromedriver; missing: "
            f"{', '.join(map(str, missing))}. Install Debian's chromium and chromium-driver "
            f"packages (scripts/test does when it can), or set {helpers.CHROMIUM_ENV} and "
            f"{helpers.CHROMEDRIVER_ENV}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    with (
        pytest.MonkeyPatch.context() as env,
        tempfile.TemporaryDirectory(prefix="fluxo-chromium-", ignore_cleanup_errors=True) as tmp,
    ):
        # The binaries are named by path, so Selenium Manager is not run; were it ever,
        # it must not go looking on the network.
        env.setenv("SE_OFFLINE", "true")
        chromium = ChromiumSession(Path(tmp))
        try:
            yield chromium
        finally:
            chromium.quit()


@pytest.fixture
def browser(chromium_session: ChromiumSession) -> WebDriver:
    """A headless Chromium on ``about:blank``, shared by the tests of a module."""
    return chromium_session.fresh()


class Screenshots:
    """Saves PNGs of the browser's page for one test: :meth:`take` per page shown."""

    def __init__(self, driver: WebDriver, directory: Path, stem: str) -> None:
        self._driver = driver
        self.directory = directory
        self._stem = stem
        self._taken = 0
        directory.mkdir(parents=True, exist_ok=True)
        for old in directory.glob(f"{stem}--*.png"):
            old.unlink(missing_ok=True)

    def take(self, label: str) -> Path:
        """Save the page as ``<test>--<nn>-<label>.png`` and return its path."""
        self._taken += 1
        path = self.directory / f"{self._stem}--{self._taken:02d}-{_safe(label)[:60]}.png"
        partial = path.with_name(f".{path.name}.{os.getpid()}.part")
        partial.write_bytes(self._driver.get_screenshot_as_png())
        partial.replace(path)
        return path


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "page"


def _stem(nodeid: str) -> str:
    """``tests/browser/test_x.py::test_y[p]`` as ``browser.test_x.test_y-p``, at most 150 chars.

    Free of glob characters and of ``--``, which separates it from the label in file names.
    """
    path, _, name = nodeid.partition("::")
    path = path.removeprefix("tests/").removesuffix(".py").replace("/", ".")
    stem = _safe(f"{path}.{name.replace('::', '.')}".replace("[", "-").replace("]", ""))
    if len(stem) > 150:
        stem = f"{stem[:140]}-{hashlib.sha1(nodeid.encode()).hexdigest()[:9]}"
    return re.sub(r"-{2,}", "-", stem)


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, browser: WebDriver) -> Screenshots:
    """Screenshots of this test's pages, in the artifacts directory's ``screenshots/``."""
    return Screenshots(browser, artifacts_dir() / "screenshots", _stem(request.node.nodeid))
