"""A single ALE environment with the DQN-replay preprocessing, and a random-policy recorder.

The ``dqn_replay`` preset is how the published logs were made (FACTS.md §1): sticky actions
0.25, frame skip 4, max-pool over the last two frames, grayscale, 84x84 ``cv2.INTER_AREA``,
episode end at game over, at most 27,000 agent steps. Rewards are the raw game rewards (the
replay writer and the store clip them).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from atari_dt.envs.games import env_id

DQN_REPLAY_PRESET: dict[str, Any] = {
    "repeat_action_probability": 0.25,
    "frame_skip": 4,
    "screen_size": 84,
    "terminal_on_life_loss": False,
    "noop_max": 0,
    "max_episode_steps": 27_000,
    "full_action_space": False,
}


def make_dqn_replay_env(game: str, **overrides: Any) -> Any:
    """A gymnasium env of ``game`` with the ``dqn_replay`` preset (any key overridable).

    Raises:
        ValueError: unknown game or preset key.
    """
    import ale_py
    import gymnasium as gym

    unknown = set(overrides) - set(DQN_REPLAY_PRESET)
    if unknown:
        raise ValueError(
            f"unknown env options {sorted(unknown)}; valid: {sorted(DQN_REPLAY_PRESET)}"
        )
    settings = {**DQN_REPLAY_PRESET, **overrides}
    gym.register_envs(ale_py)
    env = gym.make(
        env_id(game),
        frameskip=1,  # AtariPreprocessing skips frames and max-pools the last two itself
        repeat_action_probability=settings["repeat_action_probability"],
        full_action_space=settings["full_action_space"],
        max_episode_steps=None,
    )
    env = gym.wrappers.AtariPreprocessing(
        env,
        noop_max=settings["noop_max"],
        frame_skip=settings["frame_skip"],
        screen_size=settings["screen_size"],
        terminal_on_life_loss=settings["terminal_on_life_loss"],
        grayscale_obs=True,
        scale_obs=False,
    )
    env = gym.wrappers.TimeLimit(env, max_episode_steps=settings["max_episode_steps"])
    return env


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
    env = make_dqn_replay_env(game, **env_overrides)
    rng = np.random.default_rng(seed)
    recorded, episode_index = 0, 0
    try:
        while recorded < n_steps:
            episode = _play_random(env, rng, seed + episode_index)
            recorded += len(episode.actions)
            episode_index += 1
            yield episode
    finally:
        env.close()


def _play_random(env: Any, rng: np.random.Generator, seed: int) -> RecordedEpisode:
    frame, _ = env.reset(seed=seed)
    frames, actions, rewards, ram = [], [], [], []
    n_actions = env.action_space.n
    while True:
        action = int(rng.integers(n_actions))
        frames.append(frame)
        ram.append(env.unwrapped.ale.getRAM())
        frame, reward, terminated, truncated, _ = env.step(action)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return RecordedEpisode(
        frames=np.stack(frames).astype(np.uint8),
        actions=np.array(actions, dtype=np.int64),
        rewards=np.array(rewards, dtype=np.float32),
        ram=np.stack(ram).astype(np.uint8),
        terminated=True,
    )
