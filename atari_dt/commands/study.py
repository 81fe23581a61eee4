"""``atari-dt study``: the RTG-extrapolation study of a trained run, as ``summary.json`` and a
self-contained ``report.html`` (parts cached in ``OUT/cache`` and reused by a re-run)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

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


def study_config(args: argparse.Namespace) -> Any:
    """The ``StudyConfig`` of the study settings in ``args`` (``cli._add_study_settings``)."""
    from atari_dt.study.config import StudyConfig

    return StudyConfig(
        targets=_targets(args.targets),
        contexts=args.contexts,
        episodes=args.episodes,
        patch_contexts=args.patch_contexts,
        pixel_contexts=args.pixel_contexts,
        n_steps=args.n_steps,
        max_episode_steps=args.max_episode_steps,
        steer=args.steer,
        seed=args.seed,
        threads=getattr(args, "threads", None),
        precision=getattr(args, "precision", None),
    )


def study_run(
    run_dir: str | Path, args: argparse.Namespace, *, command: str, out: str | None = None
) -> tuple[dict[str, Any], Path]:
    """Study one run with the settings in ``args``; write its summary, figures and report to
    ``out`` (default RUN/study) together. Returns the summary and the directory."""
    from atari_dt.compute import warn_if_emulated
    from atari_dt.io import atomic_write_bytes, staged_outputs
    from atari_dt.rollout.sweep import no_nan
    from atari_dt.run import load_run
    from atari_dt.study.report import render_report, write_figures
    from atari_dt.study.study import run_study
    from atari_dt.study.summary import summarise_study

    config = study_config(args)
    with load_run(run_dir, data=getattr(args, "data", None)) as run:
        warn_if_emulated(config.precision or run.config.eval.precision, run.model.device)
        directory = Path(out or run.directory / "study")
        result = run_study(
            run,
            config,
            cache_dir=directory / "cache",
            force=args.force,
            progress=not args.no_progress,
        )
    summary = summarise_study(result, command=command)
    with staged_outputs(directory) as stage:  # summary, figures and report appear together
        figures = write_figures(result, stage)
        text = json.dumps(no_nan(summary), indent=2, default=str, allow_nan=False)
        atomic_write_bytes(stage / "summary.json", text.encode())
        atomic_write_bytes(stage / "report.html", render_report(result, summary, figures).encode())
    return summary, directory


def study(args: argparse.Namespace) -> int:
    command = (
        shlex.join(["atari-dt", *sys.argv[1:]]) if sys.argv[1:2] == ["study"] else "atari-dt study"
    )
    summary, out = study_run(args.run_dir, args, command=command, out=args.out)
    prov = summary["provenance"]
    print(f"{prov['game']}: RTG-extrapolation study of {prov['run']}")
    for line in summary["verdict"]:
        print(f"  - {line}")
    cache = summary["cache"]
    print(
        f"parts computed: {len(cache['computed'])}, reused from the cache: {len(cache['reused'])}"
    )
    print(f"wrote {out}/summary.json")
    print(f"report: {out / 'report.html'}")
    return 0
