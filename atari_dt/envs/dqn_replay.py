"""The DQN-replay env, and a random-policy recorder under its preset.

The ``dqn_replay`` preset (:mod:`atari_dt.envs.make`) is how the published logs were made.
Rewards are the raw game rewards (the replay writer and the store clip them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from atari_dt.envs.episode import RecordedEpisode
from atari_dt.envs.make import PRESETS, make_env
from atari_dt.envs.play import play_episode
from atari_dt.envs.policies import RandomPolicy

DQN_REPLAY_PRESET: dict[str, Any] = PRESETS["dqn_replay"]


def make_dqn_replay_env(game: str, **overrides: Any) -> Any:
    """``make_env(game, "dqn_replay", **overrides)``: the env the published logs were made in."""
    return make_env(game, "dqn_replay", **overrides)


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
