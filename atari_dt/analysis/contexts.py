"""Context windows for analysis, sampled from an episode store as training samples them, with
what the store says about them (behaviour policy, object positions) as probe labels."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from atari_dt.datasets.config import DataConfig


@dataclass(frozen=True)
class Contexts:
    """``batch`` (frames, actions, rtg, timesteps, mask: ``[N, T, ...]``), the store row of
    each window's last step ``rows`` ``[N]``, each window's ``behaviour`` label (a string,
    e.g. ``expert eps=0.3``; None without one) and ``objects`` name -> ``[N, 2]`` positions."""

    batch: dict[str, torch.Tensor]
    rows: np.ndarray
    behaviour: list[str | None]
    objects: dict[str, np.ndarray]
    episodes: np.ndarray
    """The store episode of each window ``[N]`` (group held-out splits by it)."""
    returns: np.ndarray
    """Returns of the training episodes (for scans and plots)."""


def sample_contexts(store_path: str, data: DataConfig, n: int, *, seed: int = 0) -> Contexts:
    """``n`` windows sampled as training samples them (reading only their frames)."""
    from atari_dt.datasets import ContextWindows
    from atari_dt.datasets.store import EpisodeStore

    data = dataclasses.replace(data, path=store_path, frames_in_memory="never")
    windows = ContextWindows(store_path, data)
    indices = np.sort(windows.sample_indices(np.random.default_rng(seed), n))
    rows = windows._store_index[indices]
    with EpisodeStore.open(store_path, reward_units=data.reward_units) as store:
        episode_of_row = np.searchsorted(store.offsets, rows, side="right") - 1
        behaviour = [_behaviour_label(store.behaviours[int(e)]) for e in episode_of_row]
        objects = {name.split("/", 1)[1]: store.h5[name][:][rows]
                   for name in _object_columns(store)}  # fmt: skip
    return Contexts(windows.get_batch(indices), rows, behaviour, objects, episode_of_row,
                    windows.returns)  # fmt: skip


def _behaviour_label(spec: dict | None) -> str | None:
    """The policy that played the episode, e.g. ``component 2: epsilon 0.3 of expert_seaquest``."""
    if not spec:
        return None
    label = str(spec.get("name", "?"))
    if "epsilon" in spec:
        label += f" {spec['epsilon']:g}"
    base = spec.get("base")
    if isinstance(base, dict) and "name" in base:
        label += f" of {base['name']}"
    return f"component {spec['component']}: {label}" if "component" in spec else label


def _object_columns(store) -> list[str]:
    group = store.h5.get("objects")
    return [] if group is None else [f"objects/{name}" for name in group]
