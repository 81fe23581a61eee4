"""Context windows: T consecutive steps of one episode, frames stacked on the fly.

Window ``i`` ends at transition ``i`` of the selected episodes (one window per transition) and
never crosses into another episode. Windows that would start before their episode are
right-aligned and padded on the left: the padded steps have zero frames, action 0, RTG 0,
timestep 0 and ``mask`` False. So every transition is the *current* step of exactly one window,
and the short contexts a rollout sees at an episode's start are seen in training too.

The state at step ``t`` stacks frames ``t-3 .. t`` (oldest first), with all-zero frames before
the episode's start, as dopamine pads. Frames are held once (``[N, 84, 84]``), never as 4-frame
stacks (4x the memory, as the original code did).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, RandomSampler, Sampler, WeightedRandomSampler

from atari_dt.datasets.config import DataConfig
from atari_dt.datasets.contexts import Contexts
from atari_dt.datasets.reading import read_span
from atari_dt.datasets.sampling import locate, sample_window_indices
from atari_dt.datasets.store import EpisodeStore
from atari_dt.errors import UserError

_FIELDS = ("frames", "actions", "rtg", "timesteps", "mask")


def select_episodes(
    returns: np.ndarray,
    complete: np.ndarray,
    *,
    include_incomplete: bool = False,
    max_return_quantile: float | None = None,
) -> np.ndarray:
    """Indices of the episodes to train on.

    Args:
        returns: float ``[E]`` episode returns; complete: bool ``[E]``.
        include_incomplete: keep episodes cut at either end.
        max_return_quantile: keep only complete episodes whose return is at most this quantile
            of the complete episodes' returns (incomplete ones are dropped when it is set).

    Returns:
        int64 ``[E']``, sorted.
    """
    keep = complete.copy() if not include_incomplete else np.ones_like(complete)
    if max_return_quantile is not None:
        if not complete.any():
            raise UserError("max_return_quantile needs complete episodes; the store has none")
        threshold = np.quantile(returns[complete], max_return_quantile)
        keep = complete & (returns <= threshold)
    return np.flatnonzero(keep).astype(np.int64)


class ContextWindows(Dataset):
    """A torch ``Dataset`` of context windows over an episode store.

    Args:
        store: an open :class:`EpisodeStore` (or a path, opened with ``config.reward_units``).
        config: the data settings (context length, episode selection, memory policy).
        progress: show a progress bar while loading frames.

    Items are dicts of tensors: ``frames`` uint8 ``[T, 4, 84, 84]``, ``actions`` int64 ``[T]``,
    ``rtg`` float32 ``[T]``, ``timesteps`` int64 ``[T]``, ``mask`` bool ``[T]`` (False on padding);
    ``get_batch`` gives many at once as ``Contexts``.

    Raises:
        ValueError: no episode selected, or ``context_len`` longer than every selected episode.
    """

    def __init__(
        self, store: EpisodeStore | str | Path, config: DataConfig, *, progress: bool = False
    ) -> None:
        if not isinstance(store, EpisodeStore):
            store = EpisodeStore.open(store, reward_units=config.reward_units)
        if store.reward_units != config.reward_units:
            raise UserError(
                f"{store.path} was opened with reward_units={store.reward_units!r} but the config "
                f"asks for {config.reward_units!r}; open it with the config's units"
            )
        self.config = config
        self.store_path = store.path
        self.game = store.game
        self.episodes = select_episodes(
            store.returns,
            store.complete,
            include_incomplete=config.include_incomplete,
            max_return_quantile=config.max_return_quantile,
        )
        if len(self.episodes) == 0:
            raise UserError(f"{store.path}: no episode left after selection ({config})")
        self.lengths = store.lengths[self.episodes]
        self.returns = store.returns[self.episodes]
        self.data_returns = store.returns[store.complete]  # every complete episode, for context
        if config.context_len > self.lengths.max():
            raise UserError(
                f"context_len {config.context_len} is longer than every selected episode of "
                f"{store.path} (longest: {int(self.lengths.max())} steps)"
            )
        self._load_steps(store)
        self._frames = self._load_frames(store, progress) if self._in_memory(store) else None
        self._h5_frames: Any = None

    def _load_steps(self, store: EpisodeStore) -> None:
        """Per-transition arrays of the selected episodes, concatenated (int32 to save RAM)."""
        offsets = store.offsets[self.episodes]
        self._store_index = np.concatenate(
            [np.arange(o, o + n) for o, n in zip(offsets, self.lengths, strict=True)]
        ).astype(np.int64)  # (N',) store position of each selected transition
        starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]])
        self._episode_start = np.repeat(starts, self.lengths).astype(np.int64)  # (N',)
        rtg_name = "rtg" if store.reward_units == "clipped" else "raw_rtg"
        actions = read_span(store.h5["actions"], 0, store.n_transitions)
        self._actions = actions[self._store_index].astype(np.int32)
        rtg = read_span(store.h5[rtg_name], 0, store.n_transitions)
        self._rtg = rtg[self._store_index].astype(np.float32)
        self._timesteps = (np.arange(len(self._store_index)) - self._episode_start).astype(np.int32)

    def _in_memory(self, store: EpisodeStore) -> bool:
        policy = self.config.frames_in_memory
        if policy != "auto":
            return policy == "always"
        import os

        import psutil

        needed = len(self._store_index) * int(np.prod(store.frame_shape))
        # torchrun starts LOCAL_WORLD_SIZE copies on this host: each may take its share only.
        copies = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return needed < 0.5 * psutil.virtual_memory().available / copies

    def _load_frames(self, store: EpisodeStore, progress: bool) -> np.ndarray:
        from tqdm.auto import tqdm

        frames = np.empty((len(self._store_index), *store.frame_shape), dtype=np.uint8)
        offsets = store.offsets[self.episodes]
        position = 0
        for offset, length in tqdm(
            list(zip(offsets, self.lengths, strict=True)),
            desc="load frames",
            unit="episode",
            disable=not progress,
        ):
            frames[position : position + length] = read_span(store.frames, offset, offset + length)
            position += length
        return frames

    # ---- indexing -------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._store_index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        """One window as a dict of ``[T, ...]`` tensors (torch's ``Dataset`` item; batches are
        ``Contexts``, from ``get_batch``)."""
        batch = self.get_batch(np.array([index]))
        return {key: getattr(batch, key)[0] for key in _FIELDS}

    def get_batch(self, indices: np.ndarray, *, channels_last: bool = False) -> Contexts:
        """The windows ending at ``indices`` (int ``[B]``) as one ``Contexts``, gathered in one
        pass: ``frames`` uint8 ``[B, T, 4, H, W]``, ``actions``/``timesteps`` int64 ``[B, T]``,
        ``rtg`` float32 ``[B, T]``, ``mask`` bool ``[B, T]``, and each window's store episode,
        step and row.

        ``channels_last``: the frames are laid out with the stack index innermost (the same
        ``[B, T, 4, H, W]`` tensor, other strides), the layout the encoder's convolutions run
        in on CPU, which it would otherwise copy them to. Gathering straight into it is ~3x
        slower than the plain gather (14 vs 4 ms for 960 stacks) but saves torch's layout copy
        (~25 ms): a paper-size CPU training step took 1056 instead of 1075 ms.

        Raises:
            IndexError: an index outside ``[0, len)``.
        """
        indices = np.asarray(indices, dtype=np.int64)
        if len(indices) and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"window index out of range [0, {len(self)}): {indices}")
        T = self.config.context_len
        episode_start = self._episode_start[indices][:, None]  # (B, 1)
        steps = indices[:, None] + np.arange(-(T - 1), 1)  # (B, T)
        mask = steps >= episode_start
        safe_steps = np.where(mask, steps, 0)
        position, step = locate(indices, self.lengths)
        return Contexts(
            frames=torch.from_numpy(self._frame_stacks(indices, episode_start, channels_last)),
            actions=torch.from_numpy(np.where(mask, self._actions[safe_steps], 0).astype(np.int64)),
            rtg=torch.from_numpy(np.where(mask, self._rtg[safe_steps], 0.0).astype(np.float32)),
            timesteps=torch.from_numpy(
                np.where(mask, self._timesteps[safe_steps], 0).astype(np.int64)
            ),
            mask=torch.from_numpy(mask),
            episodes=self.episodes[position],
            steps=step,
            rows=self._store_index[indices],
            game=self.game,
            reward_units=self.config.reward_units,
        )

    def _frame_stacks(
        self, indices: np.ndarray, episode_start: np.ndarray, channels_last: bool
    ) -> np.ndarray:
        """uint8 ``[B, T, S, H, W]``: the frame stack of every step of every window, zero frames
        before the episode's start; with ``channels_last`` a view of a ``[B, T, H, W, S]``
        array."""
        T, S = self.config.context_len, self.config.stack_size
        if self._frames is not None:
            frame_steps = (
                indices[:, None, None] + np.arange(-(T - 1), 1)[:, None] + np.arange(-(S - 1), 1)
            )  # (B, T, S)
            valid = frame_steps >= episode_start[:, :, None]
            rows = np.where(valid, frame_steps, 0)
            if channels_last:  # one stack slot at a time into the strided view
                stacks = _empty_stacks(len(indices), T, S, self._frames.shape[1:], True)
                for k in range(S):
                    stacks[:, :, k] = self._frames[rows[..., k]]
            else:  # one gather straight into the output (no stacking copy)
                stacks = self._frames[rows]
            if not valid.all():
                stacks[~valid] = 0
            return stacks
        frame_steps = indices[:, None] + np.arange(-(T + S - 2), 1)  # (B, T+S-1)
        frames = self._read_frames_from_store(frame_steps, frame_steps >= episode_start)
        stacks = _empty_stacks(len(indices), T, S, frames.shape[2:], channels_last)
        for k in range(S):
            stacks[:, :, k] = frames[:, k : k + T]
        return stacks

    def _read_frames_from_store(self, steps: np.ndarray, valid: np.ndarray) -> np.ndarray:
        if self._h5_frames is None:  # opened lazily: h5py handles do not survive fork/pickle
            import h5py

            self._h5_frames = h5py.File(self.store_path, "r")["frames"]
        out = np.zeros((*steps.shape, *self._h5_frames.shape[1:]), dtype=np.uint8)
        for row, (row_steps, row_valid) in enumerate(zip(steps, valid, strict=True)):
            first = int(np.argmax(row_valid))  # valid steps are a contiguous suffix
            positions = self._store_index[row_steps[first:]]
            out[row, first:] = read_span(self._h5_frames, positions[0], positions[-1] + 1)
        return out

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_h5_frames"] = None
        return state

    # ---- sampling and description ---------------------------------------------------------

    def sampler(self, num_samples: int, generator: torch.Generator | None = None) -> Sampler:
        """A sampler of window indices following ``config.sampling`` (with replacement)."""
        if self.config.sampling == "transitions":
            return RandomSampler(
                self, replacement=True, num_samples=num_samples, generator=generator
            )
        weights = torch.from_numpy(1.0 / self.lengths[self._episode_of_window()].astype(np.float64))
        return WeightedRandomSampler(weights, num_samples, replacement=True, generator=generator)

    def sample_indices(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """``n`` window indices (int64, with replacement) following ``config.sampling``."""
        return sample_window_indices(self.lengths, rng, n, self.config.sampling)

    def _episode_of_window(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.lengths)), self.lengths)

    @property
    def bytes_held(self) -> int:
        """RAM held by this dataset's arrays (frames and per-transition columns)."""
        arrays = [self._store_index, self._episode_start, self._actions, self._rtg, self._timesteps]
        frames = 0 if self._frames is None else self._frames.nbytes
        return frames + sum(a.nbytes for a in arrays)

    def describe(self) -> dict[str, Any]:
        """What this dataset holds: episodes, transitions, return range of the training episodes
        and of all complete episodes in the store (for plots that mark them)."""
        return {
            "store": str(self.store_path),
            "game": self.game,
            "episodes": len(self.episodes),
            "transitions": len(self),
            "context_len": self.config.context_len,
            "reward_units": self.config.reward_units,
            "train_return_range": [float(self.returns.min()), float(self.returns.max())],
            "data_return_range": (
                [float(self.data_returns.min()), float(self.data_returns.max())]
                if len(self.data_returns)
                else None
            ),
            "frames_in_memory": self._frames is not None,
        }


def _empty_stacks(
    B: int, T: int, S: int, frame_shape: tuple[int, ...], channels_last: bool
) -> np.ndarray:
    """uint8 ``[B, T, S, H, W]`` to fill; with ``channels_last`` the view of a ``[B, T, H, W, S]``
    array (the stack index innermost)."""
    if channels_last:
        return np.moveaxis(np.empty((B, T, *frame_shape, S), np.uint8), -1, 2)
    return np.empty((B, T, S, *frame_shape), np.uint8)
