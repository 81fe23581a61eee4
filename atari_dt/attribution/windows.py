"""Context windows to explain, cut from an episode store exactly as training cuts them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from atari_dt.attribution.core import ContextWindow
from atari_dt.datasets.config import DataConfig
from atari_dt.datasets.store import EpisodeStore


class StoreWindows:
    """The windows of one store: its per-step columns are read once, then each ``at`` reads
    only that window's frames and RAM (an attribution GIF asks for one window per step)."""

    def __init__(self, store_path: str | Path, data: DataConfig, device: str = "cpu") -> None:
        from atari_dt.datasets import ContextWindows

        # Every episode, in store order, frames read on demand: window index = offset + step.
        config = dataclasses.replace(
            data, include_incomplete=True, max_return_quantile=None, frames_in_memory="never"
        )
        self.path, self.context_len, self.device = store_path, config.context_len, device
        self.store = EpisodeStore.open(store_path, reward_units=data.reward_units)
        self.windows = ContextWindows(self.store, config)

    def at(self, episode: int, step: int) -> ContextWindow:
        """The window ending at ``step`` of ``episode`` (store numbering), with left padding
        when ``step < T - 1``, and the RAM of its steps when the store has RAM.

        Raises:
            IndexError: no such episode or step (the message gives the valid range).
        """
        store = self.store
        if not 0 <= episode < len(store):
            raise IndexError(f"episode {episode} is not in {self.path} (0..{len(store) - 1})")
        length = int(store.lengths[episode])
        if not 0 <= step < length:
            raise IndexError(f"step {step} is not in episode {episode} (0..{length - 1})")
        row = int(store.offsets[episode]) + step
        batch = self.windows.get_batch(np.array([row]))
        T = self.context_len
        ram = None
        if store.has_ram:  # no RAM before the episode's start: zeros, like the padded frames
            first = max(int(store.offsets[episode]), row - T + 1)
            ram = np.zeros((T, 128), dtype=np.uint8)
            ram[T - (row + 1 - first) :] = store.h5["ram"][first : row + 1]
        tensors = {k: v.to(self.device) for k, v in batch.items()}
        return ContextWindow(**tensors, ram=ram, game=store.game)

    def mean_frame(self, samples: int = 4096) -> torch.Tensor:
        """The mean of up to ``samples`` frames spread over the store, float ``[H, W]`` (the
        ``mean`` baseline), read in one call."""
        n = self.store.n_transitions
        picks = np.unique(np.linspace(0, n - 1, min(samples, n)).astype(np.int64))
        return torch.from_numpy(self.store.frames[picks].astype(np.float32).mean(0))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> StoreWindows:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def window_at(
    store_path: str | Path, episode: int, step: int, data: DataConfig, device: str = "cpu"
) -> ContextWindow:
    """One window (see ``StoreWindows.at``); for many, keep a ``StoreWindows``."""
    with StoreWindows(store_path, data, device) as windows:
        return windows.at(episode, step)
