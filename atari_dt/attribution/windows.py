"""Context windows to explain, cut from an episode store exactly as training cuts them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from atari_dt.attribution.core import ContextWindow
from atari_dt.datasets.config import DataConfig
from atari_dt.datasets.store import EpisodeStore


def window_at(
    store_path: str | Path, episode: int, step: int, data: DataConfig, device: str = "cpu"
) -> ContextWindow:
    """The window ending at ``step`` of ``episode`` (store numbering), with left padding when
    ``step < T - 1``, and the RAM of its steps when the store has RAM.

    Raises:
        IndexError: no such episode or step (the message gives the valid range).
    """
    from atari_dt.datasets import ContextWindows

    # Every episode, in store order, frames read on demand: window index = offset + step.
    config = dataclasses.replace(
        data, include_incomplete=True, max_return_quantile=None, frames_in_memory="never"
    )
    with EpisodeStore.open(store_path, reward_units=data.reward_units) as store:
        if not 0 <= episode < len(store):
            raise IndexError(f"episode {episode} is not in {store_path} (0..{len(store) - 1})")
        length = int(store.lengths[episode])
        if not 0 <= step < length:
            raise IndexError(f"step {step} is not in episode {episode} (0..{length - 1})")
        offset = int(store.offsets[episode])
        ram = store.h5["ram"][offset : offset + step + 1] if store.has_ram else None
        game = store.game
        windows = ContextWindows(store, config)
        batch = windows.get_batch([offset + step])
    T = config.context_len
    if ram is not None:
        ram = ram[-T:]
        if len(ram) < T:  # left padding: no RAM before the episode's start
            ram = torch.cat([torch.zeros(T - len(ram), 128, dtype=torch.uint8),
                             torch.from_numpy(ram)]).numpy()  # fmt: skip
    tensors = {k: v.to(device) for k, v in batch.items()}
    return ContextWindow(**tensors, ram=ram, game=game)
