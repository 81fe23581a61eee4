"""``atari-dt analyze``: DLA, logit lens, RTG patching, attention, probes and mean ablation of
one decision of a trained run, over real contexts from its data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def analyze(args: argparse.Namespace) -> int:
    from atari_dt.analysis import plots
    from atari_dt.analysis.attention import token_labels
    from atari_dt.analysis.decision import analyze_decision
    from atari_dt.io import atomic_write_bytes, staged_outputs
    from atari_dt.limits import analysis_bytes, check_at_least, check_memory, device_memory
    from atari_dt.run import load_run

    check_at_least("--contexts", args.contexts, meaning="context windows for attention and probes")
    with load_run(args.run_dir, data=args.data) as run:
        check_memory(
            f"an analysis over {args.contexts} contexts",
            analysis_bytes(run.model.cfg, args.contexts),
            device_memory(str(run.model.device)),
            hint="lower --contexts",
        )
        decision = run.contexts(args.episode, args.step)
        population = run.sample_contexts(args.contexts, seed=args.seed)
        result = analyze_decision(
            run.model,
            decision,
            population,
            other_action=args.other_action,
            corrupt=args.corrupt,
            corrupt_rtg=args.corrupt_rtg,
            data_returns=run.train_returns,
        )
        cfg = run.model.cfg
    out = Path(args.out)
    with staged_outputs(out) as stage:  # the outputs appear together or not at all
        dla, lens = result.dla, result.logit_lens
        title = f"{decision.game} episode {args.episode} step {args.step}, action {result.action}"
        plots.plot_bars(
            dla.values[:, 0].numpy(),
            dla.labels,
            stage / "dla.png",
            title=f"{title}: direct logit attribution",
            ylabel="logit",
        )
        plots.plot_heatmap(
            dla.heads[:, :, 0].numpy(),
            stage / "dla_heads.png",
            title=f"{title}: DLA per head",
            xlabel="head",
            ylabel="layer",
        )
        plots.plot_heatmap(
            lens.probs[:, 0].numpy(),
            stage / "logit_lens.png",
            title=f"{title}: logit lens",
            xlabel="action",
            ylabel="layer",
        )
        report = {
            "episode": args.episode,
            "step": args.step,
            "action": result.action,
            "dla": dict(zip(dla.labels, dla.values[:, 0].tolist(), strict=True)),
            "logit_lens": {"labels": lens.labels, "probs": lens.probs[:, 0].tolist()},
        }
        patching = result.patching
        if patching is not None and patching.skipped is not None:
            report["patching"] = patching.skipped
        elif patching is not None:
            residual, heads = patching.residual, patching.heads
            plots.plot_heatmap(
                residual.restored.numpy(),
                stage / "patching_residual.png",
                title=f"{title}: restored by clean resid_pre (corrupt: {patching.corruption})",
                xlabel="token",
                ylabel="layer",
                xticks=token_labels(cfg, decision.length),
            )
            plots.plot_heatmap(
                heads.restored.numpy(),
                stage / "patching_heads.png",
                title=f"{title}: restored by clean head outputs",
                xlabel="head",
                ylabel="layer",
            )
            report["patching"] = {
                "corrupted": patching.corruption,
                "other_action": patching.target.other_action,
                "residual": residual.restored.tolist(),
                "heads": heads.restored.tolist(),
            }
        attention = result.attention
        plots.plot_attention_grid(
            attention.patterns.numpy(),
            attention.labels,
            stage / "attention.png",
            title=f"mean attention over {attention.contexts} contexts",
        )
        plots.plot_probe_scores(
            result.probes, stage / "probes.png", title="linear probes (held-out)"
        )
        plots.plot_heatmap(
            result.ablation.heads.numpy(),
            stage / "ablation_heads.png",
            title="mean ablation: KL of the policy (nats)",
            xlabel="head",
            ylabel="layer",
        )
        report["probes"] = {
            k: {"kind": v.kind, "scores": v.scores.tolist(), "chance": v.chance}
            for k, v in result.probes.items()
        }
        report["mean_ablation_kl"] = {
            "heads": result.ablation.heads.tolist(),
            "mlps": result.ablation.mlps.tolist(),
        }
        atomic_write_bytes(
            stage / "analysis.json", json.dumps(report, indent=2, allow_nan=False).encode()
        )
    print(title)
    print(
        "  largest direct effects: "
        + ", ".join(f"{label} {value:+.2f}" for label, value in dla.largest(5))
    )
    best = sorted(result.probes.items(), key=lambda item: -(item[1].scores.max() - item[1].chance))[
        :5
    ]
    print(
        "  probes, best layer vs chance (top 5): "
        + ", ".join(f"{k} {v.scores.max():.2f} ({v.chance:.2f})" for k, v in best)
    )
    print(f"wrote {out}/analysis.json and plots")
    return 0
