"""``atari-dt model ...``: import-original, info."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def import_original(args: argparse.Namespace) -> int:
    from atari_dt.model.original import import_original as run_import

    out = Path(args.out_dir)
    if out.exists() and any(out.iterdir()) and not args.force:
        raise FileExistsError(f"{out} exists; pass --force to replace it")
    report = run_import(
        args.checkpoint,
        out,
        n_heads=args.n_heads,
        behaviour_cloning=args.behaviour_cloning,
        overwrite=args.force,
    )
    print(f"wrote {out} (positional: original)")
    print("inferred from the tensors:")
    for name, entry in report.inferred.items():
        print(f"  {name:<18} {entry['value']!s:<8} ({entry['from']})")
    print("assumed (not stored in the checkpoint):")
    for name, value in report.assumed.items():
        print(f"  {name:<18} {value}")
    if report.ignored:
        print(f"ignored: {', '.join(sorted(report.ignored))}")
    dropped = sorted(k for k in report.ignored if k.startswith("ret_emb."))
    if dropped:  # the original makes ret_emb even for its naive model: say what was assumed
        print(
            f"warning: --behaviour-cloning dropped the checkpoint's RTG embedding "
            f"({', '.join(dropped)}). The original creates it even for its behaviour-cloning "
            "('naive') model, so it cannot tell; if this model was trained with returns, "
            "import it again without --behaviour-cloning.",
            file=sys.stderr,
        )
    return 0


def info(args: argparse.Namespace) -> int:
    from atari_dt.model.checkpoint import read_metadata
    from atari_dt.model.hooked_dt import HookedDecisionTransformer
    from atari_dt.model.summary import model_summary

    summary = model_summary(HookedDecisionTransformer.from_pretrained(args.path))
    summary["metadata"] = read_metadata(args.path)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    parameters = summary["parameters"]
    print(f"{args.path}: HookedDecisionTransformer, {parameters['total']:,} parameters")
    print("  config: " + ", ".join(f"{k}={v}" for k, v in summary["config"].items()))
    parts = (f"{k} {v:,}" for k, v in parameters.items() if k != "total")
    print("  parameters: " + ", ".join(parts))
    hooks = summary["hooks"]
    print(f"  hook points: {sum(hooks.values())} ({', '.join(hooks)})")
    if summary["metadata"]:
        print(f"  metadata: {json.dumps(summary['metadata'])[:300]}")
    return 0


HANDLERS = {"import-original": import_original, "info": info}
