"""Settings of data collection: game, env preset, behaviour policy mixture, budget, output;
and the layout of a collection's config file (``configs/collect/*.yaml``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from atari_dt.config import ConfigError

WORKERS_PER_CORE = 4
"""Most collection workers per usable core. ALE is CPU-bound: beyond a few per core, workers only
time-share the cores (and each holds an env and an episode's frames: up to ~190 MB for a
27,000-step episode), so more cannot collect faster."""


@dataclass
class PolicyComponent:
    """One behaviour of a mixture, chosen for whole episodes."""

    policy: Literal["random", "expert"] = "random"
    """``random`` (uniform actions) or ``expert`` (the game's scripted RAM expert)."""

    epsilon: float = 0.0
    """Probability of a uniformly random action instead of the policy's, per step."""

    repeat: float = 0.0
    """Probability of repeating the previous action instead of asking the policy, per step."""

    weight: float = 1.0
    """Relative chance of this component being picked for an episode."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must be in [0, 1], got {self.epsilon}")
        if not 0.0 <= self.repeat < 1.0:
            raise ConfigError(f"repeat must be in [0, 1), got {self.repeat}")
        if self.weight <= 0:
            raise ConfigError(f"weight must be > 0, got {self.weight}")


def _default_mixture() -> list[PolicyComponent]:
    # From expert to random: returns spread from near-expert to near-random (docs/policies.md).
    return [
        PolicyComponent("expert", epsilon=0.0),
        PolicyComponent("expert", epsilon=0.1),
        PolicyComponent("expert", epsilon=0.3),
        PolicyComponent("expert", epsilon=0.6),
        PolicyComponent("random"),
    ]


@dataclass
class CollectConfig:
    """What ``atari-dt collect`` plays and where it writes."""

    game: str = "Seaquest"
    """ALE game (any spelling: ``Seaquest``, ``seaquest``, ``ALE/Seaquest-v5``)."""

    preset: Literal["dqn_replay", "dt_original_eval"] = "dqn_replay"
    """Env preset; ``dqn_replay`` makes data comparable with the published logs."""

    max_episode_steps: int | None = None
    """Cap on agent steps per episode (None: the preset's 27,000)."""

    steps: int = 200_000
    """Agent steps to collect; the episode that crosses the budget is finished."""

    seed: int = 0
    """Episode ``i`` is played with a seed derived from (seed, i): output is deterministic and
    does not depend on the number of workers."""

    workers: int = 0
    """Worker processes (0: one per usable CPU core). More than ``WORKERS_PER_CORE`` per core,
    or than there are steps left to collect, is reduced with a note (see ``worker_count``):
    the output does not depend on it, so there is nothing to refuse."""

    format: Literal["h5", "dqn-replay"] = "h5"
    """Write an episode store (with raw rewards, RAM and object positions) or DQN-replay logs."""

    capacity: int = 1_000_000
    """Buffer size C of DQN-replay logs (as the published ones)."""

    policy: list[PolicyComponent] = field(default_factory=_default_mixture)
    """Mixture components; one is picked per episode (recorded with the episode)."""

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if not self.policy:
            raise ConfigError("policy needs at least one component")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a container's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def worker_count(requested: int, steps_left: int, cores: int | None = None) -> tuple[int, str]:
    """The workers to start for ``requested`` (0: one per core) with ``steps_left`` agent steps
    to collect, and a note saying why when that is fewer than asked ("" otherwise).

    The cap is ``WORKERS_PER_CORE`` x ``cores`` (None: ``usable_cores()``), and one worker per
    step left: an episode has at least one step, so a worker beyond that could only play an
    episode that is thrown away."""
    cores = cores or usable_cores()
    wanted = requested or cores
    limit = max(1, min(WORKERS_PER_CORE * cores, steps_left))
    if wanted <= limit:
        return wanted, ""
    reason = (
        f"{WORKERS_PER_CORE} per usable core, {cores} cores"
        if limit == WORKERS_PER_CORE * cores
        else f"one per step left to collect, {steps_left}"
    )
    return limit, f"collect: {wanted} workers reduced to {limit} (at most {reason})"


@dataclass
class CollectFileConfig:
    """A collection's config file (``configs/collect/*.yaml``): one ``collect`` section, so
    overrides read ``--set collect.steps=1000`` as in every other config."""

    collect: CollectConfig = field(default_factory=CollectConfig)
    """What ``atari-dt collect`` plays and where it writes."""
