"""Headless Chromium for tests that look at a page as a user's browser renders it (Debian's ``chromium``)."""

from __future__ import annotations

import html.parser
import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

#: the flags of every run: no sandbox (containers, root), no GPU, and no network or background activity
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    """Path of the Chromium binary, or None (install it with ``apt-get install chromium``, as ``.ci/run`` does)."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _run(page: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    binary = chromium()
    if binary is None:
        raise RuntimeError("chromium is not installed")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        # the virtual-time budget lets the page's scripts (the report's React app) run before the DOM is taken
        cmd = [binary, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args,
               Path(page).resolve().as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return proc


def dump_dom(page: Path) -> str:
    """The page's DOM after its scripts ran (``--dump-dom``)."""
    return _run(page, "--dump-dom").stdout


def screenshot(page: Path, out: Path, width: int = 1400, height: int = 1000) -> Path:
    """A PNG of the page as a window of ``width`` × ``height`` shows it."""
    _run(page, f"--window-size={width},{height}", f"--screenshot={Path(out).resolve()}")
    return out


class RenderedPage(html.parser.HTMLParser):
    """The visible text and images of a DOM (script and style contents excluded)."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self._skip = 0
        self.texts: list[str] = []
        self.images: list[str] = []
        self.feed(dom)

    @property
    def text(self) -> str:
        return re.sub(r"\s+", " ", " ".join(self.texts))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "img" and not self._skip:
            self.images.append(dict(attrs).get("src") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.texts.append(data)


def report_variable(dom: str, name: str) -> dict:
    """A data variable of a Snakemake HTML report (``var results = {...};``) from the page's scripts."""
    m = re.search(rf'<script id="{name}">\s*var {name} = (.*?);?\s*</script>', dom, re.S)
    if m is None:
        raise AssertionError(f"the page has no script#{name}")
    return json.loads(m.group(1))
