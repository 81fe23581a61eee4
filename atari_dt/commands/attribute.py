"""``atari-dt attribute``: explain one decision of a trained run (images + attribution.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def attribute(args: argparse.Namespace) -> int:
    import torch

    from atari_dt.attribution.explain import attribution_movie, explain_decision
    from atari_dt.attribution.plots import (
        plot_object_masses,
        plot_stack_overlay,
        plot_window_strip,
        save_attribution_gif,
    )
    from atari_dt.io import atomic_write_bytes, staged_outputs
    from atari_dt.limits import check_at_least
    from atari_dt.run import load_run

    check_at_least("--n-steps", args.n_steps, meaning="integration points of IG")
    check_at_least("--gif", args.gif, 0, meaning="steps of the GIF; 0 writes none")
    with load_run(args.run_dir, data=args.data) as run:
        contexts = run.contexts(args.episode, args.step)
        mean_frame = torch.from_numpy(run.store.mean_frame()) if args.baseline == "mean" else None
        explained = explain_decision(
            run.model,
            contexts,
            action=args.action,
            kind=args.kind,
            other_action=args.other_action,
            method=args.method,
            baseline=args.baseline,
            all_steps=args.steps == "all",
            n_steps=args.n_steps,
            mean_frame=mean_frame,
        )
        movie = None
        if args.gif:
            last = min(args.step + args.gif, int(run.store.lengths[args.episode]))
            steps = list(range(args.step, last))  # the episode may end first
            movie = attribution_movie(
                run.model,
                run.contexts([args.episode] * len(steps), steps),
                baseline=args.baseline,
                n_steps=args.n_steps,
                mean_frame=mean_frame,
            )
    pixels, tokens, target = explained.pixels, explained.tokens, explained.target
    out = Path(args.out)
    with staged_outputs(out) as stage:  # the outputs appear together or not at all
        title = (
            f"{contexts.game} episode {args.episode} step {args.step}: {args.method} "
            f"({args.baseline}) of {target.kind} of action {target.action}"
        )
        shown = pixels.steps[-1]  # the newest attributed step
        plot_stack_overlay(
            contexts.frames[0, shown],
            pixels.stack(shown),
            stage / "overlay.png",
            title=title,
            boxes=explained.boxes,
        )
        if len(pixels.steps) > 1:
            plot_window_strip(
                contexts.frames[0, pixels.steps, -1],
                pixels.attributions.sum(1),
                pixels.steps,
                stage / "window.png",
                title=title,
            )
        if explained.objects:
            plot_object_masses(explained.objects, stage / "objects.png", title=title)
        report = {
            "run": str(args.run_dir),
            "episode": args.episode,
            "step": args.step,
            "method": pixels.method,
            "baseline": pixels.baseline,
            "target": target.describe(),
            "probabilities": explained.probabilities.tolist(),
            "target_value": pixels.target_value,
            "baseline_value": pixels.baseline_value,
            "attribution_sum": pixels.attribution_sum,
            "convergence_delta": pixels.convergence_delta,
            "attributed_window_steps": pixels.steps,
            "tokens": {
                "rtg": tokens.rtg.tolist(),
                "state": tokens.state.tolist(),
                "action": tokens.action.tolist(),
                "convergence_delta": tokens.convergence_delta,
            },
            "objects": None if explained.objects is None else explained.objects.as_dict(),
        }
        atomic_write_bytes(
            stage / "attribution.json", json.dumps(report, indent=2, allow_nan=False).encode()
        )
        print(title)
        print(
            f"  target {pixels.target_value:.4g} (baseline {pixels.baseline_value:.4g}), "
            f"attribution sum {pixels.attribution_sum:.4g}, delta {pixels.convergence_delta}"
        )
        if explained.objects is not None:
            densest = explained.objects.ranked()[:4]
            print(
                "  densest objects (newest frame): "
                + ", ".join(f"{n} {m.density_ratio or 0:.1f}x" for n, m in densest)
            )
        if movie is not None:
            captions = [
                f"step {args.step + i}  action {a}  RTG {r:.4g}"
                for i, (a, r) in enumerate(zip(movie.actions, movie.rtg, strict=True))
            ]
            save_attribution_gif(
                list(movie.frames), list(movie.maps), captions, stage / "episode.gif"
            )
    print(f"wrote {out}/attribution.json and images")
    return 0
