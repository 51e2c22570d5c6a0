"""A PNG of a worker's operator page, taken in headless Chromium once the page's script has rendered the status.

Usage: ``python scripts/operator_screenshot.py http://127.0.0.1:6066/ --out results/operator-page.png``

Uses Debian's ``chromium`` and ``chromium-driver`` (``scripts/install_system_packages.sh``) through Selenium, with
both paths given so Selenium never tries to download a browser (the machines have no internet). The browser
helpers are shared with the page's browser test (``tests/test_operator_page_kafka.py``).
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait


def headless_chromium(width: int = 1440, height: int = 1100) -> webdriver.Chrome:
    """A headless Chromium driven by chromedriver; fails with the missing package's name."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        raise RuntimeError("chromium or chromedriver is missing: run scripts/install_system_packages.sh "
                           "(Debian packages chromium and chromium-driver)")  # fmt: skip
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):  # fmt: skip
        options.add_argument(argument)
    return webdriver.Chrome(options=options, service=Service(executable_path=driver))


def wait_rendered(browser: webdriver.Chrome, timeout_s: float = 30.0) -> None:
    """Until the script has rendered a status document (``#updated`` leaves its placeholder)."""
    WebDriverWait(browser, timeout_s).until(
        lambda b: b.find_element("id", "updated").text not in ("", "never"), "the page never rendered a status"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the operator page, e.g. http://127.0.0.1:6066/")
    parser.add_argument("--out", type=Path, default=Path("results/operator-page.png"))
    parser.add_argument("--timeout-s", type=float, default=30.0)
    parser.add_argument("--open-first", action="store_true", help="unfold the newest high score's features")
    args = parser.parse_args(argv)
    browser = headless_chromium()
    try:
        browser.get(args.url)
        wait_rendered(browser, args.timeout_s)
        if args.open_first:
            for summary in browser.find_elements("css selector", "#high-scores summary")[:1]:
                summary.click()
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(1440, max(700, int(height) + 200))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if not browser.save_screenshot(str(args.out)):
            print(f"could not write {args.out}", file=sys.stderr)
            return 1
    finally:
        browser.quit()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
