"""Checks of the self-contained HTML pages (study report, comparison page): no reference
leaves the page, and a real headless Chromium renders it."""

from __future__ import annotations

import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class _References(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.references: list[str] = []
        self.tags: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.references += [v or "" for k, v in attrs if k in ("src", "href", "srcset", "data")]


def assert_self_contained(page: str) -> None:
    """Every reference of ``page`` is a data URI; no scripts, links, frames or CSS imports."""
    parser = _References()
    parser.feed(page)
    assert parser.references and all(r.startswith("data:") for r in parser.references)
    assert not {"script", "link", "iframe"} & parser.tags
    assert "url(" not in page and "@import" not in page


def render_in_chromium(page: Path, screenshot: Path) -> str:
    """The DOM headless Chromium builds from ``page`` (a file), after checking that its
    screenshot is not blank. Every host resolves to nothing, so a network request would fail."""
    uri = Path(page).resolve().as_uri()
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
    flags.append("--host-resolver-rules=MAP * ~NOTFOUND")
    dom = subprocess.run([*flags, "--dump-dom", uri], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = subprocess.run(
        [*flags, f"--screenshot={screenshot}", "--window-size=1200,2400", uri],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    from PIL import Image

    pixels = np.asarray(Image.open(screenshot).convert("L"))
    assert pixels.std() > 5  # text and plots, not a blank page
    return dom.stdout
