"""One recorded episode: what the agent saw and did, as ``play_episode`` returns it and the
collector, the replay writer and the tests consume it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
