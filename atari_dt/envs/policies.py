"""Behaviour policies: the interface every policy (and later a trained DT agent) implements,
and the generic ones: random, epsilon-greedy wrapping, action repeat, and per-episode mixtures.

A policy is stepped once per agent step with a :class:`StepInput` and returns an action index in
the game's *minimal* action set (what DQN-replay used). Randomness comes only from the
``numpy.random.Generator`` handed to :meth:`Policy.reset` at every episode start, so a collection
is deterministic for a given seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True)
class StepInput:
    """What a policy sees at one agent step.

    Attributes:
        frame: uint8 ``[84, 84]``, the newest preprocessed frame (the last of the DQN stack).
        ram: uint8 ``[128]``, the Atari RAM when that frame was shown.
        reward: raw game reward received for the previous action (0 at an episode's start).
        t: agent steps taken so far in this episode.
        action_meanings: names of the minimal action set, e.g. ``("NOOP", "FIRE", ...)``.
    """

    frame: np.ndarray
    ram: np.ndarray
    reward: float
    t: int
    action_meanings: tuple[str, ...]


@runtime_checkable
class Policy(Protocol):
    """Chooses actions; a trained DT agent implements the same three methods."""

    def reset(self, rng: np.random.Generator) -> None:
        """Start an episode; keep ``rng`` for every random choice until the next reset."""

    def act(self, step: StepInput) -> int:
        """The action (index into ``step.action_meanings``) to take at this step."""

    def spec(self) -> dict[str, Any]:
        """A JSON-able description recorded with the data (name and parameters)."""


class RandomPolicy:
    """Uniformly random actions."""

    def __init__(self) -> None:
        self._rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng

    def act(self, step: StepInput) -> int:
        return int(self._rng.integers(len(step.action_meanings)))

    def spec(self) -> dict[str, Any]:
        return {"name": "random"}


class EpsilonPolicy:
    """With probability ``epsilon`` a uniformly random action, else ``base``'s action.

    Raises:
        ValueError: epsilon outside [0, 1].
    """

    def __init__(self, base: Policy, epsilon: float) -> None:
        if not 0.0 <= epsilon <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {epsilon}")
        self.base, self.epsilon = base, float(epsilon)
        self._rng = np.random.default_rng(0)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self.base.reset(rng)

    def act(self, step: StepInput) -> int:
        action = self.base.act(step)  # always asked, so the base keeps its own state in step
        if self._rng.random() < self.epsilon:
            return int(self._rng.integers(len(step.action_meanings)))
        return action

    def spec(self) -> dict[str, Any]:
        return {"name": "epsilon", "epsilon": self.epsilon, "base": self.base.spec()}


class RepeatPolicy:
    """Agent-level sticky actions: with probability ``repeat`` the previous action is repeated
    instead of asking ``base`` (on top of the emulator's own sticky actions).

    Raises:
        ValueError: repeat outside [0, 1).
    """

    def __init__(self, base: Policy, repeat: float) -> None:
        if not 0.0 <= repeat < 1.0:
            raise ValueError(f"repeat must be in [0, 1), got {repeat}")
        self.base, self.repeat = base, float(repeat)
        self._rng = np.random.default_rng(0)
        self._previous: int | None = None

    def reset(self, rng: np.random.Generator) -> None:
        self._rng, self._previous = rng, None
        self.base.reset(rng)

    def act(self, step: StepInput) -> int:
        action = self.base.act(step)
        if self._previous is not None and self._rng.random() < self.repeat:
            action = self._previous
        self._previous = action
        return action

    def spec(self) -> dict[str, Any]:
        return {"name": "repeat", "repeat": self.repeat, "base": self.base.spec()}


class MixturePolicy:
    """Picks one of several policies per episode (with the given weights) and plays it for the
    whole episode: datasets with a wide, known spread of returns. :attr:`current` tells which.

    Raises:
        ValueError: no policies, or weights of another length / not positive.
    """

    def __init__(self, policies: list[Policy], weights: list[float] | None = None) -> None:
        if not policies:
            raise ValueError("a mixture needs at least one policy")
        weights = [1.0] * len(policies) if weights is None else list(weights)
        if len(weights) != len(policies) or min(weights) <= 0:
            raise ValueError(
                f"mixture weights must be {len(policies)} positive numbers, got {weights}"
            )
        self.policies = policies
        self.weights = np.asarray(weights, dtype=np.float64) / sum(weights)
        self.current = 0

    def reset(self, rng: np.random.Generator) -> None:
        self.current = int(rng.choice(len(self.policies), p=self.weights))
        self.policies[self.current].reset(rng)

    def act(self, step: StepInput) -> int:
        return self.policies[self.current].act(step)

    def spec(self) -> dict[str, Any]:
        return {
            "name": "mixture",
            "weights": self.weights.tolist(),
            "policies": [policy.spec() for policy in self.policies],
        }

    def episode_spec(self) -> dict[str, Any]:
        """The component played in the current episode (recorded per episode)."""
        return {"component": self.current, **self.policies[self.current].spec()}
