"""Write transitions as DQN-replay logs, exactly as batch_rl's logged replay buffer does.

The writer keeps one circular buffer of capacity ``C`` (``C`` frames in RAM, as dopamine does).
Before every episode it adds ``stack_size - 1`` all-zero padding transitions; after each add that
makes ``add_count % C == C - 1`` it dumps the whole buffer as checkpoint ``k`` (``k`` += 1), and
:meth:`ReplayLogWriter.close` writes the final partial buffer with ``add_count`` set to the cursor.
Rewards are clipped to [-1, 1] as the DQN agent stored them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.datasets.npy_gzip import (
    NpyGzipReader,
    ReplayFileError,
    load_npy_gz,
    save_npy_gz,
)
from atari_dt.datasets.replay_files import replay_file
from atari_dt.errors import UserError


class ReplayLogWriter:
    """Add transitions or episodes; checkpoints appear in ``directory`` as the buffer fills.

    Args:
        directory: output ``replay_logs`` folder (created).
        capacity: buffer size ``C`` (1,000,000 in the published logs; small in tests).
        frame_shape: shape of one observation.
        stack_size: frames per state; ``stack_size - 1`` padding transitions start each episode.
        log_dumps: dump on every fill (batch_rl's logged buffer). False gives a plain dopamine
            buffer that only :meth:`save_checkpoint` writes (a circular checkpoint once wrapped).
        compresslevel: gzip level of the files (dopamine used 9; lower is much faster).
    """

    def __init__(
        self,
        directory: str | Path,
        capacity: int,
        *,
        frame_shape: tuple[int, int] = (84, 84),
        stack_size: int = 4,
        log_dumps: bool = True,
        compresslevel: int = 4,
    ) -> None:
        if capacity < stack_size + 1:
            raise UserError(
                f"capacity must be at least stack_size + 1 = {stack_size + 1}, got {capacity}"
            )
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self.stack_size = stack_size
        self.log_dumps = log_dumps
        self.compresslevel = compresslevel
        self.observation = np.zeros((capacity, *frame_shape), dtype=np.uint8)
        self.action = np.zeros(capacity, dtype=np.int32)
        self.reward = np.zeros(capacity, dtype=np.float32)
        self.terminal = np.zeros(capacity, dtype=np.uint8)
        self.add_count = 0
        self.checkpoints_written: list[int] = []
        self.next_checkpoint = 0  # number of the next logged dump
        self._episode_open = False

    def add_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        *,
        terminated: bool = True,
    ) -> None:
        """Add one episode (or, with ``terminated=False``, the first part of one).

        Args:
            frames: uint8 ``[L, H, W]``, the observation each action was taken at.
            actions: int ``[L]``.
            rewards: float ``[L]``, raw or clipped (clipped to [-1, 1] here).
            terminated: mark the last transition terminal; False leaves the episode open so the
                next call continues it (an episode cut by the end of data collection).
        """
        length = len(frames)
        frames = np.asarray(frames)
        if length == 0:
            raise ValueError("an episode needs at least one transition")
        if frames.dtype != np.uint8 or frames.shape[1:] != self.observation.shape[1:]:
            raise ValueError(
                f"frames must be uint8 [L, {', '.join(map(str, self.observation.shape[1:]))}] "
                f"(one frame per step, not stacks), got {frames.dtype} {list(frames.shape)}"
            )
        if not (len(actions) == len(rewards) == length):
            raise ValueError(
                f"frames, actions and rewards must have one length, got "
                f"{length}, {len(actions)}, {len(rewards)}"
            )
        terminals = np.zeros(length, dtype=np.uint8)
        if terminated and length:
            terminals[-1] = 1
        if not self._episode_open:
            pad = self.stack_size - 1
            frames = np.concatenate([np.zeros((pad, *frames.shape[1:]), np.uint8), frames])
            actions = np.concatenate([np.zeros(pad, np.int32), np.asarray(actions, np.int32)])
            rewards = np.concatenate([np.zeros(pad, np.float32), np.asarray(rewards, np.float32)])
            terminals = np.concatenate([np.zeros(pad, np.uint8), terminals])
        self._add_many(frames, actions, np.clip(rewards, -1.0, 1.0), terminals)
        self._episode_open = not terminated

    def _add_many(
        self, frames: np.ndarray, actions: np.ndarray, rewards: np.ndarray, terminals: np.ndarray
    ) -> None:
        done = 0
        while done < len(frames):
            until_dump = (self.capacity - 1 - self.add_count) % self.capacity or self.capacity
            count = min(len(frames) - done, until_dump)
            slots = np.arange(self.add_count, self.add_count + count) % self.capacity
            piece = slice(done, done + count)
            self.observation[slots] = frames[piece]
            self.action[slots] = actions[piece]
            self.reward[slots] = rewards[piece]
            self.terminal[slots] = terminals[piece]
            self.add_count += count
            done += count
            if self.log_dumps and self.add_count % self.capacity == self.capacity - 1:
                self._dump(self.next_checkpoint, self.add_count)
                self.next_checkpoint += 1

    @classmethod
    def resume(cls, directory: str | Path, **options: Any) -> ReplayLogWriter:
        """Continue logs that :meth:`close` finished: the final dump's buffer is loaded back and
        later dumps continue the numbering (the final dump is rewritten when the buffer next
        fills or at the next :meth:`close`). Only whole episodes may have been added before.

        Raises:
            ReplayFileError: the directory holds no logged dumps or its last one is not a final
                partial dump.
        """
        from atari_dt.datasets.replay_files import discover_checkpoints, read_layout

        directory = Path(directory)
        last = discover_checkpoints(directory)[-1]
        layout = read_layout(directory, last, is_last=True, layout="logged")
        if layout.kind != "logged_final":
            raise ReplayFileError(
                f"{directory}: checkpoint {last} is a full dump, not a final one; "
                "these logs were not closed by ReplayLogWriter.close and cannot be resumed"
            )
        writer = cls(directory, layout.capacity, frame_shape=layout.frame_shape, **options)
        with NpyGzipReader(layout.path("observation")) as reader:  # straight into the buffer
            for first_row, rows in reader.iter_chunks(4096):
                writer.observation[first_row : first_row + len(rows)] = rows
        for name in ("action", "reward", "terminal"):
            getattr(writer, name)[:] = load_npy_gz(layout.path(name))
        writer.add_count = layout.next_transition
        writer.next_checkpoint = last
        return writer

    def save_checkpoint(self, checkpoint: int) -> None:
        """Write the buffer as a plain dopamine checkpoint (``add_count`` as is)."""
        self._dump(checkpoint, self.add_count)

    def close(self) -> None:
        """Write the final partial dump (``add_count`` = cursor), as batch_rl's
        ``log_final_buffer``; only for logged writers."""
        if self.log_dumps:
            self._dump(self.next_checkpoint, self.add_count % self.capacity)

    def _dump(self, checkpoint: int, add_count: int) -> None:
        cursor = self.add_count % self.capacity
        # dopamine's invalid_range(cursor, C, stack_size, update_horizon=1)
        invalid = (cursor - 1 + np.arange(self.stack_size + 1)) % self.capacity
        arrays = {
            "observation": self.observation,
            "action": self.action,
            "reward": self.reward,
            "terminal": self.terminal,
            "invalid_range": invalid.astype(np.int64),
            "add_count": np.array(add_count, dtype=np.int64),  # written last: marks a full set
        }
        for name, array in arrays.items():
            save_npy_gz(replay_file(self.directory, name, checkpoint), array, self.compresslevel)
        self.checkpoints_written.append(checkpoint)


def write_replay_logs(
    directory: str | Path,
    episodes: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    capacity: int,
    **writer_options: object,
) -> list[int]:
    """Write ``(frames, actions, rewards)`` episodes as DQN-replay logs; return the checkpoint
    numbers written. See :class:`ReplayLogWriter` for the options."""
    writer = ReplayLogWriter(directory, capacity, **writer_options)  # type: ignore[arg-type]
    for frames, actions, rewards in episodes:
        writer.add_episode(frames, actions, rewards)
    writer.close()
    return writer.checkpoints_written
