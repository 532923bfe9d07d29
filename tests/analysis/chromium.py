"""Headless Chromium for the browser tests: found on PATH, else installed with ``make chromium``
(``apt-get install -y chromium``, as root); tests skip with the reason only if neither works."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]


def find_chromium() -> tuple[str | None, str]:
    """(path, reason): the browser, installing it through the Makefile when missing."""
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name), ""
    try:
        r = subprocess.run(["make", "-s", "-C", str(ROOT), "chromium"], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        return None, f"chromium missing and `make chromium` failed: {e}"
    path = shutil.which("chromium")
    return (path, "") if path else (None, f"chromium missing; `make chromium` said: {(r.stderr or r.stdout)[-300:]}")


def run(browser: str, *args: str, timeout: int = 90) -> tuple[str, str]:
    """Run headless Chromium with a throw-away profile; returns (stdout, stderr with console lines)."""
    with tempfile.TemporaryDirectory() as prof:
        r = subprocess.run([browser, *FLAGS, "--enable-logging=stderr", "--v=0", f"--user-data-dir={prof}", *args],
                           capture_output=True, text=True, timeout=timeout, env={**os.environ, "LANG": "C.UTF-8"})
    return r.stdout, r.stderr


def console_lines(stderr: str) -> list[str]:
    """Messages the page wrote to the JS console (or CSP violations Chromium reported there)."""
    return [ln for ln in stderr.splitlines() if ":CONSOLE" in ln]
