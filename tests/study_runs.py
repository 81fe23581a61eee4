"""Tiny real runs for the study and comparison tests: a store collected with a game's
expert-to-random mixture and a tiny DT trained on it, in seconds."""

from __future__ import annotations

from pathlib import Path

from commands import atari_dt
from seeds import seed

STUDY = "--episodes 2 --contexts 8 --patch-contexts 3 --pixel-contexts 2 --n-steps 16 --steer"
"""Study settings small enough for tests (every part runs; numbers are not meaningful)."""


def mixture_run_in(tmp: Path, game: str) -> Path:
    """A tiny DT (2 layers, 2 heads, d 32, T 4, 40 steps) trained on 3,000 real steps of
    ``game``'s expert-to-random mixture (configs/collect/<game>.yaml, episodes capped at 300
    steps), with the top 20% of returns held out; rollouts capped at 40 steps."""
    import yaml

    store = tmp / "mixture.h5"
    collect = (
        f"collect --config configs/collect/{game}.yaml --steps 3000 --max-episode-steps 300 "
        f"--seed {seed(0)} --out {store}"
    )
    assert atari_dt(collect) == 0
    config = tmp / "train.yaml"
    data = {"path": str(store), "reward_units": "raw", "context_len": 4}
    config.write_text(
        yaml.safe_dump(
            {
                "data": {**data, "max_return_quantile": 0.8},
                "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_timestep": 512},
                "train": {
                    "max_steps": 40,
                    "batch_size": 8,
                    "checkpoint_every": 40,
                    "seed": seed(0),
                },
                "eval": {"max_episode_steps": 40},
            }
        )
    )
    assert atari_dt(f"train {config} --out {tmp / 'run'} --no-progress") == 0
    return tmp / "run"
