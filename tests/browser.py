"""Driving a Gradio page in headless Chromium, as a user does: start the app, click image pixels, download.

Chromium is the system's (`/usr/bin/chromium`, Debian package `chromium`), driven by Playwright's
Python package, so no browser is downloaded. Gradio re-renders an image after every event; a click
here waits for the new picture before it returns, or the next click would land on the old one and
get lost.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from src.config import PROJECT_ROOT
from tests.system_packages import ensure_debian_packages

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-quic",
    "--no-first-run",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 60_000

# Gradio 6's own mapping from a click to image pixels (js/image ImagePreview): the picture is scaled
# down to fit its box, never up, and centred; a click at offset d is pixel round(d / scale).
_PIXEL_TO_CLIENT = """([selector, x, y]) => {
    const img = document.querySelector(selector);
    const box = img.getBoundingClientRect();
    const scale = Math.min(box.width / img.naturalWidth, box.height / img.naturalHeight, 1);
    return [
        Math.round(box.left + (box.width - img.naturalWidth * scale) / 2 + x * scale),
        Math.round(box.top + (box.height - img.naturalHeight * scale) / 2 + y * scale),
    ];
}"""
_IMAGE_READY = """([selector, previous]) => {
    const img = document.querySelector(selector);
    return img !== null && img.src !== previous && img.complete && img.naturalWidth > 0;
}"""


def require_chromium() -> None:
    """Install Chromium where the machine allows it (CI runs as root), else skip with the command."""
    reason = ensure_debian_packages(["chromium"], ["chromium"])
    if reason:
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def served(module: str, args: list[str], port: int, timeout: float = 180) -> Iterator[str]:
    """Run `python -m <module> <args>` (a server on 127.0.0.1:<port>) until the block ends; yield its URL."""
    url = f"http://127.0.0.1:{port}/"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", module, *args], cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
        )
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=5):
                        break
                except (urllib.error.URLError, ConnectionError, TimeoutError):
                    log.seek(0)
                    if process.poll() is not None:
                        problem = f"{module} exited with {process.returncode}"
                    elif time.monotonic() > deadline:
                        problem = f"{url} did not answer within {timeout}s"
                    else:
                        time.sleep(0.5)
                        continue
                    raise AssertionError(f"{problem}:\n{log.read()[-4000:]}") from None
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextlib.contextmanager
def browser_page(url: str) -> Iterator:
    """A Chromium page open on `url` (downloads allowed)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url, wait_until="domcontentloaded")
            yield page
        finally:
            browser.close()


def image_selector(elem_id: str) -> str:
    return f"#{elem_id} img"


def wait_for_image(page, elem_id: str, previous_src: str | None = None) -> str:
    """Wait until the image of component `elem_id` is loaded (and differs from `previous_src`); return its src."""
    selector = image_selector(elem_id)
    page.wait_for_function(_IMAGE_READY, arg=[selector, previous_src], timeout=TIMEOUT_MS)
    return page.locator(selector).get_attribute("src")


def click_image(page, elem_id: str, x: int, y: int) -> str:
    """Click pixel (x, y) of the image in component `elem_id`; return once the re-rendered image has loaded."""
    selector = image_selector(elem_id)
    before = wait_for_image(page, elem_id)
    client_x, client_y = page.evaluate(_PIXEL_TO_CLIENT, [selector, x, y])
    page.mouse.click(client_x, client_y)
    return wait_for_image(page, elem_id, before)


def download(page, elem_id: str, destination: Path) -> Path:
    """Click the download link of file component `elem_id`; save what the browser received."""
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.locator(f"#{elem_id} a[download]").first.click()
    info.value.save_as(destination)
    return destination
