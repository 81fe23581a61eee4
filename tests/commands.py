"""The CLI run in-process from one line, as a user types it (paths without spaces)."""

from __future__ import annotations

import shlex

from atari_dt.cli import main


def atari_dt(command: str) -> int:
    """``atari-dt <command>``'s exit status, e.g. ``atari_dt(f"scan {run} --rtg 0:4:3")``."""
    return main(shlex.split(command))
