"""Shared test data, made by the project itself from real ALE frames (ROMs ship with ale-py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from seeds import seed
from study_runs import STUDY, mixture_run_in

from atari_dt.envs.dqn_replay import record_random_episodes
from atari_dt.envs.episode import RecordedEpisode


@pytest.fixture(scope="session")
def seaquest_episodes() -> list[RecordedEpisode]:
    """Real Seaquest episodes under the DQN-replay preprocessing, random policy: 5 episodes of
    180-330 agent steps (a per-episode step cap keeps them short but unequal), returns 0-60."""
    episodes = []
    for i, cap in enumerate((260, 180, 330, 220, 300)):
        episodes.extend(
            record_random_episodes("Seaquest", 1, seed=seed(10 + i), max_episode_steps=cap)
        )
    assert all(e.frames.shape[1:] == (84, 84) and e.frames.any() for e in episodes)
    return episodes


@pytest.fixture(scope="session")
def replay_episodes(seaquest_episodes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(frames, actions, rewards)`` of the real episodes, as the replay writer takes them."""
    return [(e.frames, e.actions, e.rewards) for e in seaquest_episodes]


@pytest.fixture(scope="session")
def seaquest_windows(seaquest_episodes) -> dict[str, np.ndarray]:
    """Context windows of real Seaquest frame stacks, as the model takes them: 6 windows of
    T=8 steps from different episodes and times. ``frames`` uint8 ``[6, 8, 4, 84, 84]``,
    ``actions``/``timesteps`` int64 ``[6, 8]``, ``rtg`` float32 ``[6, 8]`` (clipped rewards)."""
    T, windows = 8, []
    for i, end in enumerate((40, 7, 120, 170, 90, 60)):
        episode = seaquest_episodes[i % len(seaquest_episodes)]
        steps = np.arange(end - T + 1, end + 1)  # the window's steps
        stack = np.clip(steps[:, None] + np.arange(-3, 1), 0, None)  # [T, 4] frame indices
        clipped = np.clip(episode.rewards, -1, 1)
        rtg = np.cumsum(clipped[::-1])[::-1]
        windows.append(
            {
                "frames": episode.frames[stack],
                "actions": episode.actions[np.clip(steps, 0, None)],
                "rtg": rtg[np.clip(steps, 0, None)].astype(np.float32),
                "timesteps": np.clip(steps, 0, None),
            }
        )
    return {key: np.stack([w[key] for w in windows]) for key in windows[0]}


@pytest.fixture(scope="session")
def padded_contexts(seaquest_windows):
    """The real windows as ``Contexts``, the first one padded (its first 3 steps masked)."""
    import torch

    from atari_dt.datasets.contexts import Contexts

    frames, actions, rtg, timesteps = (
        torch.from_numpy(seaquest_windows[k]) for k in ("frames", "actions", "rtg", "timesteps")
    )
    mask = torch.ones(actions.shape, dtype=torch.bool)
    mask[0, :3] = False  # one padded context
    return Contexts(frames, actions, rtg, timesteps, mask)


@pytest.fixture(scope="session")
def seaquest_store_path(tmp_path_factory: pytest.TempPathFactory, seaquest_episodes) -> Path:
    """The real episodes as an episode store (raw and clipped rewards), 18 actions."""
    from atari_dt.datasets import EpisodeStoreWriter

    path = tmp_path_factory.mktemp("store") / "seaquest.h5"
    with EpisodeStoreWriter(path, game="Seaquest", n_actions=18, raw_rewards=True) as writer:
        for e in seaquest_episodes:
            writer.add_episode(e.frames, e.actions, e.rewards, raw_rewards=e.rewards)
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, seaquest_store_path: Path) -> Path:
    """A training run of a tiny DT (2 layers, 2 heads, d 32, T 4; 3 steps) on the real store:
    something for the eval, scan and analyze commands to open. Do not write into it."""
    import yaml

    from atari_dt.cli import main

    tmp = tmp_path_factory.mktemp("tiny_run")
    config = tmp / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(seaquest_store_path), "context_len": 4},
                "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_timestep": 512},
                "train": {"max_steps": 3, "batch_size": 4, "checkpoint_every": 3, "seed": seed(0)},
                "eval": {"envs": 2, "max_episode_steps": 30},
            }
        )
    )
    assert main(["train", str(config), "--out", str(tmp / "run"), "--no-progress"]) == 0
    return tmp / "run"


@pytest.fixture(scope="session")
def mixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Seaquest mixture run (see ``study_runs.mixture_run_in``)."""
    return mixture_run_in(tmp_path_factory.mktemp("study_run"), "seaquest")


@pytest.fixture(scope="session")
def breakout_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny recipe on Breakout, for comparisons across games (no study yet)."""
    return mixture_run_in(tmp_path_factory.mktemp("breakout_run"), "breakout")


@pytest.fixture(scope="session")
def study_dir(mixture_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``atari-dt study`` of the Seaquest mixture run (``STUDY`` settings)."""
    from commands import atari_dt

    out = tmp_path_factory.mktemp("study") / "study"
    assert atari_dt(f"study {mixture_run} {STUDY} --seed {seed(0)} --out {out} --no-progress") == 0
    return out
