"""A headless Chromium driven by Selenium, for the browser tests of the station page, its live
view and the hub's dashboard: one way to launch it, one place for screenshots.

``with chromium_driver(require, size=(1200, 1000)) as driver:`` starts Debian's ``chromium``
through ``chromedriver`` (paths from ``$FIELDSTATION_CHROMIUM`` / ``$FIELDSTATION_CHROMEDRIVER``,
else found on ``PATH``) headless, without sandbox, GPU or audio output; the driver quits on
exit. When the browser, its driver or selenium is missing, ``require("chromium", reason)`` is
called (the tests' helper: skip, or fail under ``FIELDSTATION_REQUIRE``); it must not return.

``screenshot(driver, name)`` saves ``name.png`` in :func:`screenshots_dir`:
``$FIELDSTATION_ARTIFACTS/screenshots``, else ``test-artifacts/screenshots`` of the current
folder (the repository root under pytest; CI keeps it as an artefact).

selenium is imported only when a browser is started.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

__all__ = ["browser_missing", "chromium_driver", "screenshot", "screenshots_dir"]

Require = Callable[[str, str], NoReturn]
"""``require(what, reason)``: called with ``"chromium"`` and why the browser cannot start."""

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--mute-audio",
    "--autoplay-policy=no-user-gesture-required",
)
"""Command-line flags of every test browser (headless, in a container, sound played silently)."""


def _binaries() -> tuple[str | None, str | None]:
    chromium = os.environ.get("FIELDSTATION_CHROMIUM") or (
        shutil.which("chromium") or shutil.which("chromium-browser")
    )
    driver = os.environ.get("FIELDSTATION_CHROMEDRIVER") or shutil.which("chromedriver")
    return chromium, driver


def browser_missing() -> str | None:
    """None when chromium, chromedriver and selenium are installed, else what is missing."""
    chromium, driver = _binaries()
    missing = [
        name
        for name, path in (("chromium", chromium), ("chromedriver", driver))
        if path is None or not Path(path).exists()
    ]
    if missing:
        return f"{', '.join(missing)} not installed: apt-get install chromium chromium-driver"
    try:
        import selenium  # noqa: F401
    except ImportError as error:
        return f"selenium is not installed ({error})"
    return None


@contextmanager
def chromium_driver(
    require: Require,
    *,
    size: tuple[int, int] = (1200, 900),
    flags: Sequence[str] = (),
    timeout: float = 60.0,
) -> Iterator[Any]:
    """A headless Chromium ``selenium.webdriver.Chrome`` of window ``size`` (width, height in
    CSS pixels), with :data:`FLAGS` plus ``flags``; page loads and scripts time out after
    ``timeout`` seconds, no implicit wait. Calls ``require("chromium", reason)`` when it cannot
    start (see :func:`browser_missing`). Quits the browser on exit."""
    reason = browser_missing()
    if reason is not None:
        require("chromium", reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver_path = _binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = str(chromium)
    for flag in (*FLAGS, f"--window-size={size[0]},{size[1]}", *flags):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=str(driver_path)), options=options)
    try:
        driver.set_page_load_timeout(timeout)
        driver.set_script_timeout(timeout)
        driver.implicitly_wait(0)
        yield driver
    finally:
        driver.quit()


def screenshots_dir() -> Path:
    """``$FIELDSTATION_ARTIFACTS/screenshots`` or ``test-artifacts/screenshots`` (created)."""
    base = os.environ.get("FIELDSTATION_ARTIFACTS")
    folder = (Path(base) if base else Path("test-artifacts")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def screenshot(driver: Any, name: str) -> Path:
    """Save what ``driver`` shows as ``name.png`` in :func:`screenshots_dir`; its path."""
    path = screenshots_dir() / f"{name}.png"
    driver.save_screenshot(str(path))
    return path
