"""Settings of data collection: game, env preset, behaviour policy mixture, budget, output;
and the layout of a collection's config file (``configs/collect/*.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from atari_dt.config import ConfigError


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
    """Worker processes (0: one per CPU core)."""

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


@dataclass
class CollectFileConfig:
    """A collection's config file (``configs/collect/*.yaml``): one ``collect`` section, so
    overrides read ``--set collect.steps=1000`` as in every other config."""

    collect: CollectConfig = field(default_factory=CollectConfig)
    """What ``atari-dt collect`` plays and where it writes."""
