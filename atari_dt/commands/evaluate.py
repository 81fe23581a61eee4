"""``atari-dt eval``: a target-return sweep of a trained run."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from atari_dt.errors import UserError


def evaluate(args: argparse.Namespace) -> int:
    from atari_dt.compute import torch_threads, warn_if_emulated
    from atari_dt.config import apply_overrides, config_from_dict, config_to_dict
    from atari_dt.io import atomic_write_bytes
    from atari_dt.rollout.evaluate import run_episodes
    from atari_dt.rollout.plots import plot_sweep, save_episode_gif
    from atari_dt.rollout.sweep import summarise
    from atari_dt.training.config import EvalConfig
    from atari_dt.training.run import load_run_config, load_run_model

    run_dir = Path(args.run_dir)
    config = load_run_config(run_dir)
    eval_values = apply_overrides({"eval": config_to_dict(config.eval)}, args.set)["eval"]
    cfg = config_from_dict(EvalConfig, {**eval_values, **_flag_values(args)}, where="eval")
    if not cfg.targets or not all(math.isfinite(t) for t in cfg.targets):
        raise UserError(f"eval targets must be finite returns, got {cfg.targets}")
    model, metadata = load_run_model(run_dir)
    warn_if_emulated(cfg.precision, model.device)
    data = metadata.get("data", {})
    units = config.data.reward_units if cfg.reward_units == "auto" else cfg.reward_units
    game = data.get("game") or args.game
    if not game:
        raise UserError(f"{run_dir}: the run does not name its game; pass --game")
    record = {(i, e) for i in range(len(cfg.targets)) for e in range(min(args.video, cfg.episodes))}
    with torch_threads(cfg.threads):
        results = run_episodes(
            model,
            game,
            cfg.targets,
            cfg.episodes,
            reward_units=units,
            seed=cfg.seed,
            record=record,
            progress=not args.json,
            **cfg.rollout_settings(),
        )
    # The training episodes' returns (not every episode in the store: a return quantile may
    # hold the best ones out, which is the point of an extrapolation study).
    data_range = data.get("train_return_range") if units == config.data.reward_units else None
    sweep = summarise(
        results,
        game=game,
        reward_units=units,
        sample=cfg.sample,
        temperature=cfg.temperature,
        data_return_range=tuple(data_range) if data_range else None,
    )
    out = Path(args.out or run_dir / "eval")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "sweep.json", json.dumps(sweep.to_json(), indent=2).encode())
    atomic_write_bytes(out / "sweep.csv", sweep.to_csv().encode())
    plot_sweep(sweep, out / "sweep.png")
    for result in (r for r in results if r.frames is not None):
        save_episode_gif(
            result,
            out / f"episode_target{result.target:g}_{result.episode}.gif",
            reward_units=units,
        )
    if args.json:
        print(json.dumps(sweep.to_json()))
        return 0
    print(
        f"{game}, model at step {metadata.get('step')}: returns in {units} rewards "
        f"({'sampled' if cfg.sample else 'argmax'}; data range {data_range})"
    )
    for s in sweep.targets:
        top = sorted(range(len(s.action_counts)), key=lambda a: -s.action_counts[a])[:3]
        print(
            f"  target {s.target:>8g}: {s.mean:8.1f} +- {s.std:6.1f}  [{s.min:g}, {s.max:g}]"
            f"  length {sum(s.lengths) / len(s.lengths):7.0f}  top actions {top}"
        )
    print(f"wrote {out}/sweep.json, sweep.csv, sweep.png")
    return 0


def _flag_values(args: argparse.Namespace) -> dict:
    """The eval settings given as flags (they win over the config and --set)."""
    values = {}
    if args.targets is not None:
        try:
            values["targets"] = [float(t) for t in args.targets.split(",") if t.strip()]
        except ValueError:
            raise UserError(
                f"--targets {args.targets!r}: expected comma-separated numbers, e.g. 0,500,1000"
            ) from None
    for flag, key in (
        ("episodes", "episodes"),
        ("envs", "envs"),
        ("seed", "seed"),
        ("temperature", "temperature"),
        ("max_episode_steps", "max_episode_steps"),
        ("reward_units", "reward_units"),
        ("threads", "threads"),
        ("precision", "precision"),
    ):
        if getattr(args, flag) is not None:
            values[key] = getattr(args, flag)
    if args.argmax:
        values["sample"] = False
    return values
