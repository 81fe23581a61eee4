"""Returns-to-go: the undiscounted sum of rewards from each step to the end of its episode."""

from __future__ import annotations

import numpy as np


def returns_to_go(rewards: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Return-to-go of every transition of consecutive episodes, vectorised.

    Args:
        rewards: float ``[N]``, the rewards of episodes stored back to back.
        lengths: int ``[E]``, episode lengths summing to ``N``.

    Returns:
        float32 ``[N]``: ``rtg[i] = sum(rewards[i : end of i's episode])``, so ``rtg`` at an
        episode's first step is its return and at its last step its last reward. Sums run in
        float64 (exact for integer rewards up to 2**53).

    Raises:
        ValueError: ``lengths`` do not sum to ``len(rewards)`` or are negative.
    """
    rewards = np.asarray(rewards, dtype=np.float64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths < 0).any() or int(lengths.sum()) != len(rewards):
        raise ValueError(
            f"episode lengths must be >= 0 and sum to the {len(rewards)} rewards, "
            f"got sum {int(lengths.sum())}"
        )
    suffix = np.cumsum(rewards[::-1])[::-1]  # suffix[i] = sum(rewards[i:])
    ends = np.cumsum(lengths)  # exclusive end of each episode
    after_end = np.append(suffix, 0.0)[ends]  # what the episodes after each one contribute
    return (suffix - np.repeat(after_end, lengths)).astype(np.float32)
