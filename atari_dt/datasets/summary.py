"""What an episode store holds, as plain data (for ``data info``, its JSON and its plots)."""

from __future__ import annotations

from typing import Any

import numpy as np

from atari_dt.datasets.store import EpisodeStore


def store_summary(store: EpisodeStore) -> dict[str, Any]:
    """Summary of a store: ``game``, ``transitions``, per-episode ``episodes`` (``length``,
    ``return`` in the store's reward units, ``complete``) and aggregates over complete episodes.
    """
    complete = store.complete
    returns = store.returns[complete]
    lengths = store.lengths[complete]
    return {
        "path": str(store.path),
        "game": store.game,
        "reward_units": store.reward_units,
        "n_actions": store.n_actions,
        "transitions": store.n_transitions,
        "frame_shape": list(store.frame_shape),
        "has_raw_rewards": store.has_raw_rewards,
        "has_ram": store.has_ram,
        "source": store.metadata.get("source", {}),
        "behaviour_policy": store.metadata.get("behaviour_policy", {}),
        "n_complete": int(complete.sum()),
        "n_incomplete": int((~complete).sum()),
        "return_stats": _stats(returns),
        "length_stats": _stats(lengths),
        "episodes": [
            {"length": int(n), "return": float(r), "complete": bool(c)}
            for n, r, c in zip(store.lengths, store.returns, complete, strict=True)
        ],
    }


def _stats(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    return {
        "mean": float(values.mean()),
        "std": float(values.std()),
        "min": float(values.min()),
        "max": float(values.max()),
        "p50": float(np.percentile(values, 50)),
        "p90": float(np.percentile(values, 90)),
    }


def return_histogram(returns: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(counts [bins], edges [bins + 1])`` of episode returns; integer-aligned edges when the
    returns are integers and span fewer values than ``bins``."""
    returns = np.asarray(returns, dtype=np.float64)
    if len(returns) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(1)
    low, high = float(returns.min()), float(returns.max())
    if np.all(returns == np.round(returns)) and high - low + 1 <= bins:
        edges = np.arange(low - 0.5, high + 1.5)
    else:
        edges = np.linspace(low, high if high > low else low + 1, bins + 1)
    counts, edges = np.histogram(returns, bins=edges)
    return counts, edges
