"""``atari-dt study``: the RTG-extrapolation study of a trained run, as ``summary.json`` and a
self-contained ``report.html`` (parts cached in ``OUT/cache`` and reused by a re-run)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from atari_dt.errors import UserError


def _targets(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise UserError(
            f"--targets {text!r}: expected comma-separated returns, e.g. 0,200,800"
        ) from None


def study(args: argparse.Namespace) -> int:
    from atari_dt.io import atomic_write_bytes, staged_outputs
    from atari_dt.rollout.sweep import no_nan
    from atari_dt.run import load_run
    from atari_dt.study.config import StudyConfig
    from atari_dt.study.report import render_report, write_figures
    from atari_dt.study.study import run_study
    from atari_dt.study.summary import summarise_study

    config = StudyConfig(
        targets=_targets(args.targets),
        contexts=args.contexts,
        episodes=args.episodes,
        patch_contexts=args.patch_contexts,
        pixel_contexts=args.pixel_contexts,
        n_steps=args.n_steps,
        max_episode_steps=args.max_episode_steps,
        steer=args.steer,
        seed=args.seed,
    )
    command = (
        shlex.join(["atari-dt", *sys.argv[1:]]) if sys.argv[1:2] == ["study"] else "atari-dt study"
    )
    with load_run(args.run_dir, data=args.data) as run:
        out = Path(args.out or run.directory / "study")
        result = run_study(
            run, config, cache_dir=out / "cache", force=args.force, progress=not args.no_progress
        )
    summary = summarise_study(result, command=command)
    with staged_outputs(out) as stage:  # summary, figures and report appear together
        figures = write_figures(result, stage)
        text = json.dumps(no_nan(summary), indent=2, default=str, allow_nan=False)
        atomic_write_bytes(stage / "summary.json", text.encode())
        atomic_write_bytes(stage / "report.html", render_report(result, summary, figures).encode())
    print(f"{result.provenance['game']}: RTG-extrapolation study of {result.provenance['run']}")
    for line in summary["verdict"]:
        print(f"  - {line}")
    print(f"parts computed: {len(result.computed)}, reused from the cache: {len(result.reused)}")
    print(f"wrote {out}/summary.json")
    print(f"report: {out / 'report.html'}")
    return 0
