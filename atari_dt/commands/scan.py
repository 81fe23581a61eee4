"""``atari-dt scan``: the RTG scan of a trained run on real context windows."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def scan(args: argparse.Namespace) -> int:
    import dataclasses

    import numpy as np

    from atari_dt.analysis.attention import attention_to_rtg
    from atari_dt.analysis.batch import encoded
    from atari_dt.analysis.dla import dla_along_scan
    from atari_dt.analysis.plots import plot_heatmap, plot_scan
    from atari_dt.analysis.saturation import saturation
    from atari_dt.analysis.scan import parse_grid, rtg_scan
    from atari_dt.datasets import ContextWindows
    from atari_dt.io import atomic_write_bytes
    from atari_dt.training.run import load_run_config, load_run_model

    run = Path(args.run_dir)
    config = load_run_config(run)
    model, _ = load_run_model(run)
    if model.cfg.behaviour_cloning:
        raise ValueError(f"{run} is a behaviour-cloning model: it has no RTG to scan")
    grid = parse_grid(args.rtg)
    data = dataclasses.replace(config.data, path=args.data or config.data.path,
                               frames_in_memory="never")  # fmt: skip
    windows = ContextWindows(data.path, data)
    rng = np.random.default_rng(args.seed)
    # Encoded once: the scan, attention and DLA below rerun these frames at every grid RTG.
    batch = encoded(model, windows.get_batch(np.sort(windows.sample_indices(rng, args.contexts))))
    result = rtg_scan(model, batch, grid, mode=args.mode, data_returns=windows.returns,
                      reference_rtg=args.reference)  # fmt: skip
    sat = saturation(model, result)
    to_rtg = attention_to_rtg(model, batch, grid, args.mode).numpy()  # [G, L, H]
    reference_action = int(
        np.argmax(result.action_probs[np.argmin(np.abs(grid - result.reference_rtg))])
    )
    dla, dla_labels = dla_along_scan(model, batch, grid, reference_action, mode=args.mode)
    out = Path(args.out or run / "scan")
    out.mkdir(parents=True, exist_ok=True)
    title = (f"{windows.game}: RTG scan over {args.contexts} contexts "
             f"({data.reward_units} rewards; rtg_scale {model.cfg.rtg_scale:g})")  # fmt: skip
    plot_scan(result, sat, out / "scan.png", title=title)
    labels = [
        f"L{layer}H{h}" for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)
    ]
    plot_heatmap(to_rtg.reshape(len(grid), -1).T, out / "attention_to_rtg.png",
                 title="attention from the last state token to the RTG tokens",
                 xlabel="grid RTG index", ylabel="head (L{layer}H{head} rows)")  # fmt: skip
    plot_heatmap(dla.numpy().T, out / "dla_along_scan.png",
                 title=f"direct logit attribution of action {reference_action} along the scan",
                 xlabel="grid RTG index", ylabel="component", yticks=dla_labels)  # fmt: skip
    report = {
        "rtg": result.rtg.tolist(), "mode": result.mode, "reward_units": data.reward_units,
        "contexts": args.contexts, "action_probs": result.action_probs.tolist(),
        "entropy": result.entropy.tolist(),
        "divergence_to_reference": result.js_to_reference.tolist(),
        "divergence": "jensen-shannon (nats)", "kl_to_reference": result.kl_to_reference.tolist(),
        "reference_rtg": result.reference_rtg,
        "data_return_range": list(result.data_return_range) if result.data_return_range else None,
        "data_return_percentiles": result.data_return_percentiles,
        "saturation_rtg": sat.saturation_rtg,
        "saturation_relative_to_data_max": sat.relative_to_data_max,
        "saturated_fraction": sat.saturated_fraction.tolist(),
        "policy_change_per_unit_rtg": sat.policy_change.tolist(),
        "attention_to_rtg": {"labels": labels, "values": to_rtg.reshape(len(grid), -1).tolist()},
        "dla_along_scan": {"action": reference_action, "labels": dla_labels,
                           "values": dla.tolist()},
    }  # fmt: skip
    atomic_write_bytes(out / "scan.json", json.dumps(report, indent=2, allow_nan=False).encode())
    print(title)
    print(f"  reference RTG {result.reference_rtg:g}; data returns {result.data_return_range}")
    print(f"  policy settles from RTG {sat.saturation_rtg} "
          f"({sat.relative_to_data_max and round(sat.relative_to_data_max, 2)}x the data max); "
          f"saturated RTG units at the grid's end: {sat.saturated_fraction[-1]:.0%}")  # fmt: skip
    print(f"wrote {out}/scan.json, scan.png, attention_to_rtg.png, dla_along_scan.png")
    return 0
