"""``atari-dt app``: the interactive app (Streamlit) on the given runs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from atari_dt.errors import UserError


def app(args: argparse.Namespace) -> int:
    """Check every run opens (as the app will open it), then serve the app on ``--host``:
    ``--port`` until interrupted."""
    import importlib.util

    from atari_dt.app import RUNS_ENV
    from atari_dt.run import load_run

    if importlib.util.find_spec("streamlit") is None:
        raise UserError("the app needs Streamlit: pip install -e '.[app]' (or make app RUN=...)")
    if not 0 < args.port < 65536:
        raise UserError(f"--port must be 1..65535, got {args.port}")
    runs = []
    for path in args.runs:
        with load_run(path):  # the errors the app would show, here in one line
            runs.append(str(Path(path).resolve()))
    script = Path(__file__).resolve().parents[1] / "app" / "main.py"
    command = [
        sys.executable, "-m", "streamlit", "run", str(script),
        "--server.address", args.host,
        "--server.port", str(args.port),
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--browser.gatherUsageStats", "false",
        "--runner.magicEnabled", "false",
    ]  # fmt: skip
    print(f"atari-dt app: http://{args.host}:{args.port} ({len(runs)} runs); Ctrl-C stops it")
    return subprocess.call(command, env={**os.environ, RUNS_ENV: json.dumps(runs)})
