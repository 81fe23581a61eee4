"""App benchmark: how long the RTG scan page takes to answer a slider move, against the
library call that computes the answer. Both measured in the same run.

1. The page's rerun after the RTG slider moves to a value not seen before (Streamlit's AppTest
   runs the script as the server would; the browser's drawing is not included): the
   ``decision_at_rtg`` of the new RTG, the probability table, the two in-browser charts and
   the cached scan figure. Target: median < 1 s on 2 cores (the issue's budget), printed as
   a ratio to it.
2. The reference: ``decision_at_rtg`` alone on the same state and RTGs, so the ratio of (1) to
   (2) is what the app adds around the library.

Run: ``python benchmarks/bench_app.py [--run runs/demo/train]`` (``make demo`` makes the run;
``make bench`` runs it when the run exists).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", default=str(ROOT / "runs" / "demo" / "train"))
    parser.add_argument("--moves", type=int, default=9, help="slider moves timed")
    args = parser.parse_args()
    run_dir = str(Path(args.run).resolve())
    if not (Path(run_dir) / "config.yaml").is_file():
        sys.exit(f"bench_app: no run at {run_dir}: make demo first, or pass --run RUN")

    import torch
    from streamlit.testing.v1 import AppTest

    import atari_dt as adt
    from atari_dt.analysis.rtg_point import decision_at_rtg
    from atari_dt.app import RUNS_ENV

    os.environ[RUNS_ENV] = json.dumps([run_dir])
    at = AppTest.from_file(str(ROOT / "atari_dt" / "app" / "main.py"), default_timeout=600)
    at.query_params.update({"page": "rtg-scan", "episode": "1", "step": "100"})
    at.run()
    if at.exception:
        sys.exit(f"bench_app: the page failed: {at.exception[0].value}")
    key = f"rtg:{run_dir}"
    low, high = at.slider(key=key).min, at.slider(key=key).max
    # distinct values, none the default: every move is a cache miss, as a user's would be
    values = [round(low + (high - low) * (i + 0.5) / args.moves, 1) for i in range(args.moves)]
    page = []
    for value in values:
        start = time.perf_counter()
        at.slider(key=key).set_value(value).run()
        page.append(time.perf_counter() - start)
        if at.exception:
            sys.exit(f"bench_app: the page failed at RTG {value}: {at.exception[0].value}")

    with adt.load_run(run_dir) as run:
        ctx = run.contexts(1, 100).encoded(run.model)
        library = []
        for value in values:
            start = time.perf_counter()
            decision_at_rtg(run.model, ctx, value)
            library.append(time.perf_counter() - start)
    page_s, library_s = statistics.median(page), statistics.median(library)
    print(
        f"RTG slider move on {Path(run_dir).name} ({torch.get_num_threads()} threads, "
        f"{args.moves} moves): page {page_s * 1000:.0f} ms (spread "
        f"{min(page) * 1000:.0f}-{max(page) * 1000:.0f}), decision_at_rtg alone "
        f"{library_s * 1000:.0f} ms"
    )
    print(f"  page / 1 s budget: {page_s / 1.0:.2f}x (target < 1)")
    print(f"  page / library call: {page_s / library_s:.1f}x (what the app adds around it)")


if __name__ == "__main__":
    main()
