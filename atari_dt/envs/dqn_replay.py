"""Recorded episodes, and a random-policy recorder under the DQN-replay preset.

The ``dqn_replay`` preset (:mod:`atari_dt.envs.make`) is how the published logs were made.
Rewards are the raw game rewards (the replay writer and the store clip them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from atari_dt.envs.make import PRESETS, make_env

DQN_REPLAY_PRESET: dict[str, Any] = PRESETS["dqn_replay"]


def make_dqn_replay_env(game: str, **overrides: Any) -> Any:
    """``make_env(game, "dqn_replay", **overrides)``: the env the published logs were made in."""
    return make_env(game, "dqn_replay", **overrides)


@dataclass(frozen=True)
class RecordedEpisode:
    """One episode as the agent saw it.

    Attributes:
        frames: uint8 ``[L, 84, 84]``, the frame each action was taken at.
        actions: int64 ``[L]``; rewards: float32 ``[L]`` raw game rewards.
        ram: uint8 ``[L, 128]``, the RAM when each frame was shown.
        terminated: True if it ended by game over or the step cap (a DQN-replay terminal).
    """

    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    ram: np.ndarray
    terminated: bool


def record_random_episodes(
    game: str, n_steps: int, *, seed: int = 0, **env_overrides: Any
) -> Iterator[RecordedEpisode]:
    """Play uniformly random actions until at least ``n_steps`` agent steps are recorded; the last
    episode is played to its end. Deterministic for a given seed.

    Args:
        game: any spelling of an ALE game.
        n_steps: agent steps to record (at least).
        seed: seeds the env and the action sampler.
        env_overrides: ``dqn_replay`` preset values to change, e.g. ``max_episode_steps=200``.
    """
    from atari_dt.envs.play import play_episode
    from atari_dt.envs.policies import RandomPolicy

    env = make_dqn_replay_env(game, **env_overrides)
    policy = RandomPolicy()
    recorded, episode_index = 0, 0
    try:
        while recorded < n_steps:
            episode = play_episode(env, policy, seed=seed + episode_index)
            recorded += len(episode.actions)
            episode_index += 1
            yield episode
    finally:
        env.close()
