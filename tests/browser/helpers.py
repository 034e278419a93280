"""Helpers of the browser tests: start Chromium, wait, accept ``confirm()``, check screenshots.

The browser is Debian's Chromium driven by Debian's chromedriver (the ``chromium`` and
``chromium-driver`` packages, which ``scripts/test`` installs when it can), both named by
path, so Selenium Manager never looks for (or downloads) a browser or a driver.
``FLUXO_TEST_CHROMIUM`` and ``FLUXO_TEST_CHROMEDRIVER`` name other binaries.

:func:`check_screenshot` is what a page test ends with: the screenshot is not blank, and
every label the test expects is visible text on the page.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageStat
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM_ENV = "FLUXO_TEST_CHROMIUM"
CHROMEDRIVER_ENV = "FLUXO_TEST_CHROMEDRIVER"
CHROMIUM_DEFAULT = "/usr/bin/chromium"
CHROMEDRIVER_DEFAULT = "/usr/bin/chromedriver"

WAIT = 10.0
"""Seconds :func:`wait_for` waits by default; never reached when the page works."""

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests may run as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1400,1000",
    # Chromium still reaches for Google and its default search engine in the background:
    # no host name but localhost resolves, so the tests stay on this machine.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE [::1]",
)

T = TypeVar("T")


def chromium_paths() -> tuple[Path, Path]:
    """The Chromium binary and the chromedriver binary the tests use (they may be missing)."""
    return (
        Path(os.environ.get(CHROMIUM_ENV) or CHROMIUM_DEFAULT),
        Path(os.environ.get(CHROMEDRIVER_ENV) or CHROMEDRIVER_DEFAULT),
    )


def missing_binaries() -> list[Path]:
    """Those of :func:`chromium_paths` that are not executable files."""
    return [path for path in chromium_paths() if not (path.is_file() and os.access(path, os.X_OK))]


def start_chromium(user_data_dir: Path, *, driver_log: Path | None = None) -> webdriver.Chrome:
    """A headless Chromium with a profile of its own in ``user_data_dir`` (an empty directory).

    Args:
        user_data_dir: where Chromium keeps the profile; a fresh directory per browser.
        driver_log: where chromedriver writes its log; nowhere when ``None``.
    """
    chromium, chromedriver = chromium_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={user_data_dir}")
    service = Service(
        executable_path=str(chromedriver),
        log_output=str(driver_log) if driver_log is not None else os.devnull,
        # a process group of its own, with the browser's processes: see ChromiumSession.quit
        popen_kw={"start_new_session": True},
    )
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(30)
    return driver


def wait_for(
    driver: WebDriver,
    condition: Callable[[WebDriver], T],
    *,
    timeout: float = WAIT,
    message: str = "",
) -> T:
    """Wait until ``condition(driver)`` is truthy and return it; fail after ``timeout`` seconds.

    Example:
        ``wait_for(browser, lambda d: d.find_element(By.ID, "status").text == "done")``

    Args:
        driver: the browser.
        condition: called with the driver every half second; exceptions Selenium raises for
            elements not found yet, or replaced (stale) since they were found, as a live
            page does, count as falsy.
        timeout: seconds to wait before raising ``TimeoutException``.
        message: what was awaited, for the failure message.
    """
    waiting = WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(condition, message)


def accept_confirm(driver: WebDriver, *, timeout: float = WAIT) -> str:
    """Wait for a JavaScript ``confirm()`` (or ``alert()``) dialog, accept it, return its text."""
    alert = WebDriverWait(driver, timeout).until(
        expected_conditions.alert_is_present(), "no confirm() dialog opened"
    )
    text = alert.text
    alert.accept()
    return text


MIN_COLOURS = 8
"""Fewer distinct colours than this make a screenshot blank: anti-aliased text alone has more."""
MIN_GRAY_STDDEV = 2.0
"""A grayscale standard deviation below this makes a screenshot blank (flat, nearly one tone)."""
MAX_DOMINANT_SHARE = 0.999
"""A screenshot whose most common colour covers more than this share of its pixels is blank."""


@dataclasses.dataclass(frozen=True)
class ScreenshotCheck:
    """What :func:`inspect_screenshot` found; :attr:`problems` is empty when the page passes."""

    path: Path
    colours: int
    """Distinct colours, counted up to 4096."""
    gray_stddev: float
    dominant_share: float
    """Share of the pixels of the most common colour."""
    missing_labels: tuple[str, ...]
    visible_text: str
    """The page's visible text (``document.body``, as rendered)."""

    @property
    def blank(self) -> bool:
        """Whether the screenshot shows (nearly) nothing: one flat colour."""
        return (
            self.colours < MIN_COLOURS
            or self.gray_stddev < MIN_GRAY_STDDEV
            or self.dominant_share > MAX_DOMINANT_SHARE
        )

    @property
    def problems(self) -> list[str]:
        """One line per reason the screenshot fails; empty when it passes."""
        found = []
        if self.blank:
            found.append(
                f"blank screenshot: {self.colours} colours (need {MIN_COLOURS}), grayscale "
                f"stddev {self.gray_stddev:.2f} (need {MIN_GRAY_STDDEV}), most common colour "
                f"on {self.dominant_share:.2%} of the pixels (at most {MAX_DOMINANT_SHARE:.1%})"
            )
        found.extend(f"label {label!r} is not visible on the page" for label in self.missing_labels)
        return found

    def report(self, text_head: int = 500) -> str:
        """The problems, the screenshot's path and the head of the page's visible text."""
        text = self.visible_text[:text_head] + ("…" if len(self.visible_text) > text_head else "")
        return "\n".join(
            [*self.problems, f"screenshot: {self.path}", f"visible text: {text!r}"],
        )


class ScreenshotCheckFailed(AssertionError):
    """A screenshot is blank or lacks a label; :attr:`check` holds what was found."""

    def __init__(self, check: ScreenshotCheck) -> None:
        super().__init__(check.report())
        self.check = check


def _xpath_literal(text: str) -> str:
    """``text`` as an XPath 1.0 string literal (which has no escapes: quotes need ``concat``)."""
    if "'" not in text:
        return f"'{text}'"
    if '"' not in text:
        return f'"{text}"'
    parts = ', "\'", '.join(f"'{part}'" for part in text.split("'"))
    return f"concat({parts})"


def label_visible(driver: WebDriver, label: str) -> bool:
    """Whether ``label`` is text of a displayed element of the page (whitespace normalized).

    The innermost elements whose text contains the whole label are looked at, so a label
    split across inline elements (``Run <b>42</b>``) is found on their parent.
    """
    wanted = _xpath_literal(" ".join(label.split()))
    has = f"contains(normalize-space(.), {wanted})"
    xpath = f"//body/descendant-or-self::*[{has} and not(*[{has}])]"
    return any(element.is_displayed() for element in driver.find_elements(By.XPATH, xpath))


def inspect_screenshot(path: Path, labels: Collection[str], driver: WebDriver) -> ScreenshotCheck:
    """Measure the screenshot at ``path`` and look for ``labels`` on the driver's current page."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    colours = rgb.getcolors(maxcolors=4096)
    pixels = rgb.width * rgb.height
    if colours is None:  # more than 4096: certainly not one flat colour
        count, dominant = 4096, 0.0
    else:
        count, dominant = len(colours), max(n for n, _ in colours) / pixels
    stddev = ImageStat.Stat(rgb.convert("L")).stddev[0]
    missing = tuple(label for label in labels if not label_visible(driver, label))
    # the browser's own rendered text: WebDriver's element text takes minutes on a big page
    rendered = driver.execute_script("return document.body ? document.body.innerText : '';")
    text = re.sub(r"\s+", " ", str(rendered or "")).strip()
    return ScreenshotCheck(
        path=path,
        colours=count,
        gray_stddev=stddev,
        dominant_share=dominant,
        missing_labels=missing,
        visible_text=text,
    )


def check_screenshot(path: Path, labels: Collection[str], driver: WebDriver) -> ScreenshotCheck:
    """Fail unless the screenshot is not blank and every label is visible text on the page.

    Args:
        path: a PNG of the page, as the ``screenshots`` fixture saves it.
        labels: texts the page must show (each must be inside one displayed element).
        driver: the browser, still on the page the screenshot shows.

    Returns:
        The measurements, for tests that want to say more.

    Raises:
        ScreenshotCheckFailed: naming each problem, the screenshot and the page's text.
    """
    check = inspect_screenshot(path, labels, driver)
    if check.problems:
        raise ScreenshotCheckFailed(check)
    return check
