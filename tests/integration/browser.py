"""A real headless browser (Debian ``chromium``) for tests of the HTML pages.

``dump_dom`` loads a URL in a fresh Chromium profile and returns the DOM after the page
loaded (scripts, had there been any, run): what a person's browser would show. The
process is ended by its id when it overruns. Without chromium the test skips, except
under ``CI=true`` (``.ci/run`` installs it), where it fails.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from html.parser import HTMLParser

import pytest
from promstack import in_ci

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def require_chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        reason = "chromium is not installed (Debian/Ubuntu: apt-get install chromium)"
        if in_ci():
            pytest.fail(f"CI=true: {reason}")
        pytest.skip(reason)
    return path


def dump_dom(url: str, *, timeout: float = 60.0) -> str:
    """The DOM of ``url`` as Chromium serialises it after loading the page."""
    chromium = require_chromium()
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        process = subprocess.Popen(
            [chromium, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            out, err = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()  # by its id: this process only
            process.communicate()
            pytest.fail(f"chromium did not finish loading {url} within {timeout:.0f} s")
    if process.returncode != 0 or not out.strip():
        pytest.fail(f"chromium exited with {process.returncode}: {err.decode(errors='replace')}")
    return out.decode("utf-8", "replace")


class Page(HTMLParser):
    """What a DOM holds: its element names, title, visible text, and the text of each
    element with an id."""

    def __init__(self, dom: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.title = ""
        self.text: list[str] = []
        self.by_id: dict[str, list[str]] = {}
        self._open: list[tuple[str, str | None]] = []
        self.feed(dom)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in ("br", "meta", "link", "img", "input", "hr"):
            return
        element_id = dict(attrs).get("id")
        self._open.append((tag, element_id))
        if element_id is not None:
            self.by_id.setdefault(element_id, [])

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            name, _ = self._open.pop()
            if name == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(name == "title" for name, _ in self._open):
            self.title += data
            return
        if any(name in ("style", "script") for name, _ in self._open):
            return
        self.text.append(data)
        for _, element_id in self._open:
            if element_id is not None:
                self.by_id[element_id].append(data)

    def visible(self, element_id: str | None = None) -> str:
        """The text (whitespace collapsed) of the page or of one element."""
        parts = self.text if element_id is None else self.by_id[element_id]
        return " ".join("".join(parts).split())
