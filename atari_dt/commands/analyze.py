"""``atari-dt analyze``: DLA, logit lens, RTG patching, attention, probes and mean ablation of
one decision of a trained run, over real contexts from its data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def analyze(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from atari_dt.analysis import plots
    from atari_dt.analysis.ablation import ablation_effects, component_means
    from atari_dt.analysis.attention import mean_patterns, token_labels
    from atari_dt.analysis.batch import encoded
    from atari_dt.analysis.contexts import sample_contexts
    from atari_dt.analysis.dla import direct_logit_attribution, logit_lens, residual_by_layer
    from atari_dt.analysis.patching import patch_heads, patch_residual
    from atari_dt.analysis.probes import probe
    from atari_dt.attribution.windows import StoreWindows
    from atari_dt.io import atomic_write_bytes
    from atari_dt.training.run import load_run_config, load_run_model

    run = Path(args.run_dir)
    config = load_run_config(run)
    model, _ = load_run_model(run)
    store = args.data or config.data.path
    with StoreWindows(store, config.data) as windows:
        window = windows.at(args.episode, args.step)
    clean = (window.frames, window.actions, window.rtg, window.timesteps, window.mask)
    contexts = sample_contexts(store, config.data, args.contexts, seed=args.seed)
    batch = encoded(model, contexts.batch)  # attention, probes and ablation reuse the encoding
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        logits, cache = model.run_with_cache(*clean)
    action = int(logits[0, -1].argmax())
    other = int(logits[0, -1].argmin()) if args.other_action is None else args.other_action
    dla, dla_labels = direct_logit_attribution(model, cache, action)
    lens, lens_labels = logit_lens(model, cache)
    L, H = model.cfg.n_layers, model.cfg.n_heads
    head_dla = dla[2 : 2 + L * H, 0].reshape(L, H).numpy()  # rows after embed, pos_embed
    title = f"{window.game} episode {args.episode} step {args.step}, action {action}"
    plots.plot_bars(dla[:, 0].numpy(), dla_labels, out / "dla.png",
                    title=f"{title}: direct logit attribution", ylabel="logit")  # fmt: skip
    plots.plot_heatmap(head_dla, out / "dla_heads.png", title=f"{title}: DLA per head",
                       xlabel="head", ylabel="layer")  # fmt: skip
    plots.plot_heatmap(lens[:, 0].numpy(), out / "logit_lens.png", title=f"{title}: logit lens",
                       xlabel="action", ylabel="layer")  # fmt: skip
    report = {"episode": args.episode, "step": args.step, "action": action,
              "dla": dict(zip(dla_labels, dla[:, 0].tolist(), strict=True)),
              "logit_lens": {"labels": lens_labels, "probs": lens[:, 0].tolist()}}  # fmt: skip
    top = float(np.abs(contexts.returns).max()) if len(contexts.returns) else 1.0
    high = args.corrupt_rtg if args.corrupt_rtg is not None else 3 * max(top, 1.0)
    if args.corrupt == "frame":  # the current frame stack blurred: what did the pixels add?
        from atari_dt.attribution.baselines import gaussian_blur

        frames = window.frames.clone()
        frames[:, -1] = gaussian_blur(frames[:, -1]).round().clamp(0, 255).to(torch.uint8)
        corrupted, what = (frames, *clean[1:]), "blurred current frames"
    else:
        corrupted = (*clean[:2], torch.full_like(window.rtg, high), *clean[3:])
        what = f"RTG {high:g}"
    if args.corrupt == "frame" or not model.cfg.behaviour_cloning:
        try:
            residual = patch_residual(model, clean, corrupted, action, other)
            heads = patch_heads(model, clean, corrupted, action, other)
        except ValueError as err:  # the change does not move this decision
            report["patching"] = str(err)
        else:
            labels = token_labels(model.cfg, window.length)
            plots.plot_heatmap(residual.restored.numpy(), out / "patching_residual.png",
                               title=f"{title}: restored by clean resid_pre (corrupt: {what})",
                               xlabel="token", ylabel="layer", xticks=labels)  # fmt: skip
            plots.plot_heatmap(heads.restored.numpy(), out / "patching_heads.png",
                               title=f"{title}: restored by clean head outputs",
                               xlabel="head", ylabel="layer")  # fmt: skip
            report["patching"] = {"corrupted": what, "other_action": other,
                                  "residual": residual.restored.tolist(),
                                  "heads": heads.restored.tolist()}  # fmt: skip
    patterns, labels = mean_patterns(model, batch)
    plots.plot_attention_grid(patterns.numpy(), labels, out / "attention.png",
                              title=f"mean attention over {args.contexts} contexts")  # fmt: skip
    features = residual_by_layer(model, batch).numpy()
    layer_labels = [f"{i}" for i in range(model.cfg.n_layers)] + ["final"]
    groups = contexts.episodes  # held-out episodes, not just held-out windows
    probes = {"rtg": probe(features, contexts.batch["rtg"][:, -1].numpy(), layer_labels,
                           groups=groups)}  # fmt: skip
    known = [b for b in contexts.behaviour if b is not None]
    if len(known) == len(contexts.behaviour) and len(set(known)) > 1:
        probes["behaviour"] = probe(features, np.array(known), layer_labels, kind="classification",
                                    groups=groups)  # fmt: skip
    for name, positions in contexts.objects.items():
        visible = np.isfinite(positions).all(1)  # only contexts where the object is on screen
        if len(np.unique(contexts.episodes[visible])) >= 4:
            probes[f"{name}_xy"] = probe(features[:, visible], positions[visible], layer_labels,
                                         groups=contexts.episodes[visible])  # fmt: skip
    plots.plot_probe_scores(probes, out / "probes.png", title="linear probes (held-out)")
    means = component_means(model, batch)
    effects = ablation_effects(model, batch, means)
    plots.plot_heatmap(effects["heads"].numpy(), out / "ablation_heads.png",
                       title="mean ablation: KL of the policy (nats)", xlabel="head",
                       ylabel="layer")  # fmt: skip
    report["probes"] = {k: {"kind": v.kind, "scores": v.scores.tolist(), "chance": v.chance}
                        for k, v in probes.items()}  # fmt: skip
    report["mean_ablation_kl"] = {k: v.tolist() for k, v in effects.items()}
    atomic_write_bytes(
        out / "analysis.json", json.dumps(report, indent=2, allow_nan=False).encode()
    )
    top = sorted(range(len(dla_labels)), key=lambda i: -abs(float(dla[i, 0])))[:5]
    print(title)
    print(
        "  largest direct effects: "
        + ", ".join(f"{dla_labels[i]} {float(dla[i, 0]):+.2f}" for i in top)
    )
    best = sorted(probes.items(), key=lambda item: -(item[1].scores.max() - item[1].chance))[:5]
    print("  probes, best layer vs chance (top 5): " + ", ".join(
        f"{k} {v.scores.max():.2f} ({v.chance:.2f})" for k, v in best))  # fmt: skip
    print(f"wrote {out}/analysis.json and plots")
    return 0
