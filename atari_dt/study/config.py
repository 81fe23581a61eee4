"""What a study asks for: the targets, how many contexts and episodes, and the seeds."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from atari_dt.errors import UserError

MAX_TARGETS = 64  # every target plays `episodes` rollouts: more is a typo, not a study
MAX_CONTEXTS = 4096
MAX_EPISODES = 1000


@dataclass(frozen=True)
class StudyConfig:
    """One study of a trained run."""

    targets: tuple[float, ...] | None = None
    """Target returns to play and attribute at, in the run's reward units; None: the default
    grid from below the data's minimum to 4x its maximum (``study.grid.target_grid``)."""

    contexts: int = 64
    """Context windows from the training data for the scan, patching and the RTG direction
    (and as many held-out ones for the steering check)."""

    episodes: int = 6
    """Rollouts per target."""

    patch_contexts: int = 8
    """Contexts patched one at a time (each costs (3T + n_heads) x n_layers forward passes)."""

    pixel_contexts: int = 4
    """Decisions attributed to pixels at every target."""

    n_steps: int = 64
    """Integration points of every integrated-gradients attribution."""

    max_episode_steps: int | None = None
    """Cap on agent steps per rollout; None: the run's eval setting."""

    steer: bool = False
    """Also play rollouts steered by the RTG direction (``--steer``)."""

    steer_scale: float = 1.0
    """Multiple of the RTG direction added when steering."""

    seed: int = 0
    """Seeds context sampling, rollouts and bootstraps."""

    threads: int | None = None
    """torch threads while the study plays rollouts (0: torch's default); None: the run's eval
    setting. The scan, patching and attribution keep the caller's thread count."""

    precision: Literal["float32", "bfloat16"] | None = None
    """The rollouts' model precision; None: the run's eval setting."""

    def __post_init__(self) -> None:
        for name, value, top in (
            ("contexts", self.contexts, MAX_CONTEXTS),
            ("episodes", self.episodes, MAX_EPISODES),
            ("patch_contexts", self.patch_contexts, MAX_CONTEXTS),
            ("pixel_contexts", self.pixel_contexts, MAX_CONTEXTS),
            ("n_steps", self.n_steps, 4096),
        ):
            if not 1 <= value <= top:
                raise UserError(f"study {name} must be in 1..{top}, got {value}")
        if self.episodes < 2:
            raise UserError("study episodes must be >= 2 per target (an interval needs two)")
        if self.targets is not None:
            targets = list(self.targets)
            if not 2 <= len(targets) <= MAX_TARGETS or not all(math.isfinite(t) for t in targets):
                raise UserError(
                    f"study targets must be 2..{MAX_TARGETS} finite returns, got {targets[:8]}"
                )
        if self.max_episode_steps is not None and self.max_episode_steps < 1:
            raise UserError(f"max_episode_steps must be >= 1, got {self.max_episode_steps}")
        if self.threads is not None and self.threads < 0:
            raise UserError(f"study threads must be >= 0, got {self.threads}")
        if self.precision not in (None, "float32", "bfloat16"):
            raise UserError(f"study precision must be float32 or bfloat16, got {self.precision!r}")
        if not math.isfinite(self.steer_scale):
            raise UserError(f"steer_scale must be finite, got {self.steer_scale}")
