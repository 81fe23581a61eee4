"""``atari-dt scan``: the RTG scan of a trained run on real context windows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def scan(args: argparse.Namespace) -> int:
    from atari_dt.analysis.plots import plot_heatmap, plot_scan
    from atari_dt.analysis.scan import parse_grid
    from atari_dt.analysis.scan_report import scan_report
    from atari_dt.io import atomic_write_bytes, staged_outputs
    from atari_dt.limits import analysis_bytes, check_at_least, check_memory, device_memory
    from atari_dt.run import load_run

    check_at_least("--contexts", args.contexts, meaning="context windows to scan")
    grid = parse_grid(args.rtg)  # refuses more than analysis.scan.MAX_GRID points
    with load_run(args.run_dir, data=args.data) as run:
        check_memory(
            f"a scan of {args.contexts} contexts at {len(grid)} RTGs",
            analysis_bytes(run.model.cfg, args.contexts, len(grid)),
            device_memory(str(run.model.device)),
            hint="lower --contexts",
        )
        units = run.config.data.reward_units
        result = scan_report(
            run.model,
            run.sample_contexts(args.contexts, seed=args.seed),
            grid,
            mode=args.mode,
            reference_rtg=args.reference,
            data_returns=run.train_returns,
        )
        cfg, game, run_dir = run.model.cfg, run.game, run.directory
    scan, sat, dla = result.scan, result.saturation, result.dla
    to_rtg = result.attention_to_rtg.numpy().reshape(len(grid), -1)  # [G, L * H]
    out = Path(args.out or run_dir / "scan")
    with staged_outputs(out) as stage:  # the outputs appear together or not at all
        title = (
            f"{game}: RTG scan over {result.contexts} contexts "
            f"({units} rewards; rtg_scale {cfg.rtg_scale:g})"
        )
        plot_scan(scan, sat, stage / "scan.png", title=title)
        labels = [f"L{layer}H{h}" for layer in range(cfg.n_layers) for h in range(cfg.n_heads)]
        plot_heatmap(
            to_rtg.T,
            stage / "attention_to_rtg.png",
            title="attention from the last state token to the RTG tokens",
            xlabel="grid RTG index",
            ylabel="head (L{layer}H{head} rows)",
        )
        plot_heatmap(
            dla.values.numpy().T,
            stage / "dla_along_scan.png",
            title=f"direct logit attribution of action {dla.target.action} along the scan",
            xlabel="grid RTG index",
            ylabel="component",
            yticks=dla.labels,
        )
        report = {
            "rtg": scan.rtg.tolist(),
            "mode": scan.mode,
            "reward_units": units,
            "contexts": result.contexts,
            "action_probs": scan.action_probs.tolist(),
            "entropy": scan.entropy.tolist(),
            "divergence_to_reference": scan.js_to_reference.tolist(),
            "divergence": "jensen-shannon (nats)",
            "kl_to_reference": scan.kl_to_reference.tolist(),
            "reference_rtg": scan.reference_rtg,
            "data_return_range": list(scan.data_return_range) if scan.data_return_range else None,
            "data_return_percentiles": scan.data_return_percentiles,
            "saturation_rtg": sat.saturation_rtg,
            "saturation_relative_to_data_max": sat.relative_to_data_max,
            "saturated_fraction": sat.saturated_fraction.tolist(),
            "policy_change_per_unit_rtg": sat.policy_change.tolist(),
            "attention_to_rtg": {"labels": labels, "values": to_rtg.tolist()},
            "dla_along_scan": {
                "action": dla.target.action,
                "labels": dla.labels,
                "values": dla.values.tolist(),
            },
        }
        atomic_write_bytes(
            stage / "scan.json", json.dumps(report, indent=2, allow_nan=False).encode()
        )
    print(title)
    print(f"  reference RTG {scan.reference_rtg:g}; data returns {scan.data_return_range}")
    print(
        f"  policy settles from RTG {sat.saturation_rtg} "
        f"({sat.relative_to_data_max and round(sat.relative_to_data_max, 2)}x the data max); "
        f"saturated RTG units at the grid's end: {sat.saturated_fraction[-1]:.0%}"
    )
    print(f"wrote {out}/scan.json, scan.png, attention_to_rtg.png, dla_along_scan.png")
    return 0
