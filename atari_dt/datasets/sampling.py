"""Drawing context windows as training draws them: indices into the concatenated transitions
of a set of episodes, and back to (episode, step). Training (``ContextWindows``) and analysis
(``EpisodeStore.sample_contexts``) both sample through here, so a seed draws the same windows."""

from __future__ import annotations

import numpy as np

from atari_dt.errors import UserError


def sample_window_indices(
    lengths: np.ndarray, rng: np.random.Generator, n: int, sampling: str = "transitions"
) -> np.ndarray:
    """``n`` indices (int64 ``[n]``, with replacement) into the concatenated transitions of
    episodes of ``lengths``: every transition equally likely (``transitions``), or every
    episode and then a step in it (``episodes``). Training and analysis sample through this."""
    if sampling == "transitions":
        return rng.integers(0, int(np.sum(lengths)), size=n, dtype=np.int64)
    if sampling != "episodes":
        raise UserError(f"sampling must be 'transitions' or 'episodes', got {sampling!r}")
    episode = rng.integers(0, len(lengths), size=n)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return (starts[episode] + (rng.random(n) * lengths[episode]).astype(np.int64)).astype(np.int64)


def locate(indices: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices into concatenated episodes of ``lengths`` as ``(episode position, step)``."""
    ends = np.cumsum(lengths)
    which = np.searchsorted(ends, indices, side="right")
    return which, indices - (ends[which] - lengths[which])
