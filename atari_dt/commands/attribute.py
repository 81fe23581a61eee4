"""``atari-dt attribute``: explain one decision of a trained run (images + attribution.json)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def attribute(args: argparse.Namespace) -> int:

    from atari_dt.attribution.windows import StoreWindows
    from atari_dt.training.run import load_run_config, load_run_model

    config = load_run_config(Path(args.run_dir))
    model, _ = load_run_model(Path(args.run_dir))
    with StoreWindows(args.data or config.data.path, config.data) as windows:
        return _explain(args, model, windows)


def _explain(args: argparse.Namespace, model, windows) -> int:
    import torch

    from atari_dt.attribution.core import Target
    from atari_dt.attribution.objects import object_masses
    from atari_dt.attribution.pixels import attribute_pixels
    from atari_dt.attribution.plots import plot_object_masses, plot_stack_overlay, plot_window_strip
    from atari_dt.attribution.tokens import attribute_tokens
    from atari_dt.io import atomic_write_bytes

    window = windows.at(args.episode, args.step)
    if args.other_action is not None and args.kind != "logit_diff":
        raise ValueError("--other-action is only used with --kind logit_diff")
    with torch.no_grad():  # encoded once: the choice, the pixel and the token attributions
        states = model.embed_states(window.frames)
        logits = model.forward_from_state_embeddings(states, *window.rest())[0, -1]
    action = int(logits.argmax()) if args.action is None else args.action
    if not 0 <= action < model.cfg.n_actions:
        raise ValueError(f"--action {action} is not in [0, {model.cfg.n_actions})")
    target = Target(action=action, kind=args.kind, other_action=args.other_action)
    steps = list(range(window.length)) if args.steps == "all" else None
    mean_frame = windows.mean_frame() if args.baseline == "mean" else None
    result = attribute_pixels(model, window, target, method=args.method, baseline=args.baseline,
                              steps=steps, n_steps=args.n_steps, mean_frame=mean_frame,
                              state_embeddings=states)  # fmt: skip
    tokens = attribute_tokens(model, window, target, n_steps=args.n_steps,
                              state_embeddings=states)  # fmt: skip
    boxes = _boxes(window)
    # The boxes describe the newest frame: weigh that frame's attribution against them.
    last_step = window.length - 1
    newest = (
        result.attributions[result.steps.index(last_step), -1]
        if last_step in result.steps
        else None
    )
    masses = object_masses(newest, boxes) if boxes and newest is not None else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    title = (f"{window.game} episode {args.episode} step {args.step}: {args.method} "
             f"({args.baseline}) of {target.kind} of action {action}")  # fmt: skip
    last = result.steps.index(window.length - 1) if window.length - 1 in result.steps else -1
    plot_stack_overlay(window.frames[0, result.steps[last]], result.attributions[last],
                       out / "overlay.png", title=title, boxes=boxes)  # fmt: skip
    if len(result.steps) > 1:
        plot_window_strip(window.frames[0, result.steps, -1], result.attributions.sum(1),
                          result.steps, out / "window.png", title=title)  # fmt: skip
    if masses:
        plot_object_masses(masses, out / "objects.png", title=title)
    report = {
        "run": str(args.run_dir), "episode": args.episode, "step": args.step,
        "method": result.method, "baseline": result.baseline, "target": target.describe(),
        "probabilities": torch.softmax(logits, -1).tolist(),
        "target_value": result.target_value, "baseline_value": result.baseline_value,
        "attribution_sum": result.attribution_sum, "convergence_delta": result.convergence_delta,
        "attributed_window_steps": result.steps,
        "tokens": {"rtg": tokens.by_token[0].tolist(), "state": tokens.by_token[1].tolist(),
                   "action": tokens.by_token[2].tolist(),
                   "convergence_delta": tokens.convergence_delta},
        "objects": masses,
    }  # fmt: skip
    atomic_write_bytes(
        out / "attribution.json", json.dumps(report, indent=2, allow_nan=False).encode()
    )
    print(title)
    print(
        f"  target {result.target_value:.4g} (baseline {result.baseline_value:.4g}), "
        f"attribution sum {result.attribution_sum:.4g}, delta {result.convergence_delta}"
    )
    if masses:
        ranked = sorted((n for n in masses if n != "background"),
                        key=lambda n: -(masses[n]["density_ratio"] or 0))  # fmt: skip
        print("  densest objects (newest frame): " + ", ".join(
            f"{n} {masses[n]['density_ratio'] or 0:.1f}x" for n in ranked[:4]))  # fmt: skip
    if args.gif:
        _episode_gif(args, model, windows, out / "episode.gif", mean_frame)
    print(f"wrote {out}/attribution.json and images")
    return 0


def _episode_gif(args: argparse.Namespace, model, windows, path: Path, mean_frame) -> None:
    """IG of the model's own choice at ``--gif`` consecutive steps from ``--step``."""
    import torch
    from tqdm.auto import tqdm

    from atari_dt.attribution.core import Target
    from atari_dt.attribution.pixels import attribute_pixels
    from atari_dt.attribution.plots import save_attribution_gif

    frames, maps, captions = [], [], []
    for step in tqdm(range(args.step, args.step + args.gif), desc="attribution GIF", unit="step"):
        try:
            window = windows.at(args.episode, step)
        except IndexError:
            break  # the episode ended
        with torch.no_grad():
            states = model.embed_states(window.frames)
            logits = model.forward_from_state_embeddings(states, *window.rest())
        action = int(logits[0, -1].argmax())
        result = attribute_pixels(model, window, Target(action=action), method="ig",
                                  baseline=args.baseline, n_steps=args.n_steps,
                                  mean_frame=mean_frame, state_embeddings=states)  # fmt: skip
        frames.append(window.frames[0, -1, -1].cpu().numpy())
        maps.append(result.map().cpu().numpy())
        captions.append(f"step {step}  action {action}  RTG {float(window.rtg[0, -1]):.4g}")
    save_attribution_gif(frames, maps, captions, path)


def _boxes(window) -> dict | None:
    from atari_dt.envs.objects import OBJECT_GAMES, object_boxes

    if window.ram is None or window.game not in OBJECT_GAMES:
        return None
    return {name: boxes[-1] for name, boxes in object_boxes(window.game, window.ram).items()}
