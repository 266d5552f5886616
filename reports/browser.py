"""Open a report in the system's headless Chromium (Selenium, no browser download).

Used by the report's browser test and for the README's screenshot:

    python -m convlstm_conformance.reports.browser reports/out/report.html docs/report.png

Chromium and its driver come from the system (Debian: ``apt-get install
chromium chromium-driver``); :func:`missing` says what is absent.
"""
from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"
WINDOW = (1400, 1000)


def binaries() -> tuple[str | None, str | None]:
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    return browser, shutil.which(DRIVER)


def missing() -> str:
    """What is absent to drive the system Chromium, '' when nothing is."""
    browser, driver = binaries()
    if browser is None:
        return f"no Chromium on PATH ({', '.join(BROWSERS)})"
    if driver is None:
        return f"no {DRIVER} on PATH (Debian: apt-get install chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "the Python package selenium is not installed (the [test] extra)"
    return ""


def open_report(path: str | Path):
    """A headless Chromium WebDriver showing ``path``; the caller quits it."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver = binaries()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={WINDOW[0]},{WINDOW[1]}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # The system driver: Selenium Manager would otherwise download one.
    drv = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    drv.get(Path(path).resolve().as_uri())
    return drv


def console_errors(drv) -> list[str]:
    """Messages the page logged at level SEVERE (errors) since the last call."""
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m convlstm_conformance.reports.browser REPORT.html OUT.png",
              file=sys.stderr)
        return 2
    why = missing()
    if why:
        print(f"error: {why}", file=sys.stderr)
        return 2
    drv = open_report(args[0])
    try:
        drv.save_screenshot(args[1])
        errors = console_errors(drv)
    finally:
        drv.quit()
    for e in errors:
        print(f"console error: {e}", file=sys.stderr)
    print(args[1])
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
