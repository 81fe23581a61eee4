"""Shared test data, made by the project itself from real ALE frames (ROMs ship with ale-py)."""

from __future__ import annotations

import numpy as np
import pytest

from atari_dt.envs.dqn_replay import RecordedEpisode, record_random_episodes


@pytest.fixture(scope="session")
def seaquest_episodes() -> list[RecordedEpisode]:
    """Real Seaquest episodes under the DQN-replay preprocessing, random policy: 5 episodes of
    180-330 agent steps (a per-episode step cap keeps them short but unequal), returns 0-60."""
    episodes = []
    for i, cap in enumerate((260, 180, 330, 220, 300)):
        episodes.extend(record_random_episodes("Seaquest", 1, seed=10 + i, max_episode_steps=cap))
    assert all(e.frames.shape[1:] == (84, 84) and e.frames.any() for e in episodes)
    return episodes


@pytest.fixture(scope="session")
def replay_episodes(seaquest_episodes) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(frames, actions, rewards)`` of the real episodes, as the replay writer takes them."""
    return [(e.frames, e.actions, e.rewards) for e in seaquest_episodes]
