"""Data layer: DQN-replay logs (read and write), Minari Atari datasets (read, with the optional
``minari`` package), the HDF5 episode store, context windows.

``ContextWindows`` (which imports torch) is loaded on first use, so the CLI stays fast.
"""

from __future__ import annotations

from typing import Any

from atari_dt.datasets.config import DataConfig
from atari_dt.datasets.convert import convert_replay_logs
from atari_dt.datasets.minari_reader import convert_minari_dataset
from atari_dt.datasets.npy_gzip import ReplayFileError
from atari_dt.datasets.paper_subset import PaperSubsetOptions, select_paper_subset
from atari_dt.datasets.replay_files import parse_checkpoint_selection
from atari_dt.datasets.replay_reader import ReplayLogs
from atari_dt.datasets.replay_writer import ReplayLogWriter, write_replay_logs
from atari_dt.datasets.rtg import returns_to_go
from atari_dt.datasets.store import Episode, EpisodeStore, StoreFormatError
from atari_dt.datasets.store_writer import EpisodeStoreWriter

__all__ = [
    "ContextWindows",
    "DataConfig",
    "Episode",
    "EpisodeStore",
    "EpisodeStoreWriter",
    "PaperSubsetOptions",
    "ReplayFileError",
    "ReplayLogWriter",
    "ReplayLogs",
    "StoreFormatError",
    "convert_minari_dataset",
    "convert_replay_logs",
    "parse_checkpoint_selection",
    "returns_to_go",
    "select_episodes",
    "select_paper_subset",
    "write_replay_logs",
]


def __getattr__(name: str) -> Any:
    if name in ("ContextWindows", "select_episodes"):
        from atari_dt.datasets import windows

        return getattr(windows, name)
    raise AttributeError(f"module 'atari_dt.datasets' has no attribute {name!r}")
