"""``atari-dt compare``: several runs' studies side by side, as ``table.csv``/``table.json``,
figures and one self-contained ``compare.html``."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from atari_dt.errors import UserError


def compare(args: argparse.Namespace) -> int:
    from atari_dt.commands.study import study_run
    from atari_dt.io import atomic_write_bytes, staged_outputs
    from atari_dt.study.compare import compare_runs, follows_sentence, missing_studies
    from atari_dt.study.compare_report import render_page, table_csv, write_figures

    argv = sys.argv[1:]
    command = shlex.join(["atari-dt", *argv]) if argv[:1] == ["compare"] else "atari-dt compare"
    missing = missing_studies(args.runs)  # refuses paths that do not exist
    if missing and not args.study_missing:
        commands = "; ".join(f"atari-dt study {p}" for p in missing)
        raise UserError(
            f"{len(missing)} of the runs have no study yet ({', '.join(map(str, missing))}); "
            f"run {commands} first, or pass --study-missing"
        )
    for i, path in enumerate(missing, 1):
        print(f"[{i}/{len(missing)}] studying {path} (no study yet)", file=sys.stderr)
        study_run(path, args, command=f"atari-dt study {path} (from {command})")
    comparison = compare_runs(args.runs)
    rows = comparison.table()
    with staged_outputs(Path(args.out)) as stage:  # table, figures and page appear together
        figures = write_figures(comparison, stage)
        atomic_write_bytes(stage / "table.csv", table_csv(rows).encode())
        text = json.dumps({"command": command, "runs": rows}, indent=2)
        atomic_write_bytes(stage / "table.json", text.encode())
        page = render_page(comparison, figures, command=command)
        atomic_write_bytes(stage / "compare.html", page.encode())
    for run, row in zip(comparison.runs, rows, strict=True):
        score = row["normalised_at_data_max"]
        shown = f"{score:.1f}%" if score is not None else "n/a (no random/human scores)"
        print(
            f"{run.label}: human-normalised {shown} at the data's best return; "
            f"{follows_sentence(run.follows, len(run.targets))}"
        )
        print(f"  {run.verdict[0]}")
    print(f"wrote {args.out}/table.csv, table.json")
    print(f"page: {Path(args.out) / 'compare.html'}")
    return 0
