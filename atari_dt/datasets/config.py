"""Settings of the data stage: which episode store, which episodes, and the context windows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from atari_dt.config import ConfigError


@dataclass
class DataConfig:
    """Where the training data is and how context windows are cut from it."""

    path: str | None = None
    """Episode store (``.h5``) made by ``atari-dt data convert``; None until a command sets it."""

    reward_units: Literal["clipped", "raw"] = "clipped"
    """Rewards behind returns-to-go: ``clipped`` to [-1, 1] as DQN-replay stores them (and as the
    original DT trains), or ``raw`` game score (only for stores that recorded it)."""

    context_len: int = 30
    """T, steps per context window (30 in the DT paper for Seaquest, Breakout, Qbert; 50 Pong)."""

    stack_size: int = 4
    """Frames per state (the DQN frame stack)."""

    sampling: Literal["transitions", "episodes"] = "transitions"
    """``transitions``: every transition equally likely to end a window (as the original);
    ``episodes``: every episode equally likely, then a step in it."""

    max_return_quantile: float | None = None
    """Train only on episodes whose return is at most this quantile (0-1] of the complete
    episodes' returns: holds the best behaviour out to study RTG extrapolation. None keeps all."""

    include_incomplete: bool = False
    """Also use episodes cut at either end of the data (their returns are unknown)."""

    frames_in_memory: Literal["auto", "always", "never"] = "auto"
    """Hold the selected frames in RAM (``auto``: when they take under half the free memory) or
    read each window from the store."""

    def __post_init__(self) -> None:
        if self.context_len < 1:
            raise ConfigError(f"context_len must be >= 1, got {self.context_len}")
        if self.stack_size < 1:
            raise ConfigError(f"stack_size must be >= 1, got {self.stack_size}")
        q = self.max_return_quantile
        if q is not None and not 0.0 < q <= 1.0:
            raise ConfigError(f"max_return_quantile must be in (0, 1] or null, got {q}")
