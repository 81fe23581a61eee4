"""Behaviour at the study's target returns: episodes played by the DT in environments that
record the RAM (so a scripted expert can be asked what it would have done on the same
emulator state), the extrapolation gain with its interval, action histograms, and how the
action distribution on the same states diverges between in- and out-of-distribution targets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atari_dt.analysis.divergence import js, log_policy
from atari_dt.analysis.scan import RtgScan
from atari_dt.intervals import bootstrap_interval, mean_interval
from atari_dt.rollout.evaluate import EpisodeResult
from atari_dt.rollout.sweep import SweepResult


def play_target(
    model: Any,
    game: str,
    target: float,
    episodes: int,
    *,
    reward_units: str,
    max_episode_steps: int,
    preset: str = "dqn_replay",
    seed: int = 0,
    sample: bool = True,
    temperature: float = 1.0,
    n_envs: int = 8,
    precision: str = "float32",
) -> list[EpisodeResult]:
    """``episodes`` episodes asking for ``target`` (actions sampled at ``temperature``, or
    the argmax without ``sample``), each keeping its actions and the RAM
    at every decision. Every target is played from the same env seeds (common random numbers:
    targets are compared on the same starts and sticky-action draws)."""
    from atari_dt.rollout.evaluate import run_episodes

    return run_episodes(
        model,
        game,
        [float(target)],
        episodes,
        reward_units=reward_units,
        n_envs=min(n_envs, episodes),
        sample=sample,
        temperature=temperature,
        max_episode_steps=max_episode_steps,
        preset=preset,
        seed=seed,
        record_ram=True,
        precision=precision,
        progress=False,
    )


@dataclass(frozen=True)
class ExtrapolationGain:
    """What asking for more than ``reference`` (a target of the sweep: the data's max, or the
    best training return) gains. Every target is played from the same seeds, so episode ``e``
    of each target is one unit: ``achieved`` ``[E]`` is each episode's return averaged over the
    targets ``above`` the reference, and ``gain`` the mean of ``achieved - at_reference``
    (paired) with its 95% t ``interval`` over the ``episodes`` units; ``achieved_interval``
    the t interval of ``achieved``'s mean (pooling the targets' episodes as independent would
    count one seed several times and narrow the interval)."""

    reference: float
    reference_name: str
    above: list[float]
    gain: float
    interval: tuple[float, float]
    achieved: np.ndarray
    achieved_interval: tuple[float, float]
    episodes: int


def per_episode(rows: list[list[float]]) -> np.ndarray:
    """``[E]``: each episode index's mean over the given targets' rows (episode order), over
    the episodes every row has."""
    n = min(len(r) for r in rows)
    return np.mean([np.asarray(r[:n], dtype=np.float64) for r in rows], axis=0)


def extrapolation_gain(
    sweep: SweepResult, reference: float, reference_name: str
) -> ExtrapolationGain | None:
    """The gain of asking for more than ``reference`` (see ``ExtrapolationGain``); None when
    the sweep has no target above it.

    Raises:
        ValueError: ``reference`` is not one of the sweep's targets.
    """
    by_target = {s.target: list(s.returns) for s in sweep.targets}
    if reference not in by_target:
        raise ValueError(f"the reference {reference:g} is not a target of the sweep")
    above = [t for t in by_target if t > reference]
    if not above:
        return None
    achieved = per_episode([by_target[t] for t in above])
    at = np.asarray(by_target[reference], dtype=np.float64)
    n = min(len(achieved), len(at))
    differences = achieved[:n] - at[:n]
    return ExtrapolationGain(
        reference=float(reference),
        reference_name=reference_name,
        above=above,
        gain=float(differences.mean()),
        interval=mean_interval(differences),
        achieved=achieved,
        achieved_interval=mean_interval(achieved),
        episodes=n,
    )


def action_histograms(sweep: SweepResult) -> np.ndarray:
    """``[G, n_actions]``: the fraction of each action over every step played at each target."""
    counts = np.array([s.action_counts for s in sweep.targets], dtype=np.float64)
    return counts / counts.sum(axis=1, keepdims=True).clip(min=1)


@dataclass(frozen=True)
class PolicyDivergence:
    """Jensen-Shannon divergence (nats) between the policy at each grid RTG and at
    ``reference_rtg`` on the same contexts (the scan's last steps): ``mean`` ``[G]`` over
    contexts, with 95% bootstrap ``interval`` ``[G, 2]`` over contexts."""

    rtg: np.ndarray
    reference_rtg: float
    mean: np.ndarray
    interval: np.ndarray


def policy_divergence(scan: RtgScan, reference_rtg: float, *, seed: int = 0) -> PolicyDivergence:
    """The divergence of the scan's policies from the one at grid RTG ``reference_rtg``.

    Raises:
        ValueError: ``reference_rtg`` is not a grid point of the scan.
    """
    where = np.flatnonzero(np.isclose(scan.rtg, reference_rtg))
    if not len(where):
        raise ValueError(f"the reference {reference_rtg:g} is not a grid RTG of the scan")
    log_p = log_policy(scan.logits)  # [G, N, A]
    per_context = js(log_p, log_p[int(where[0])][None]).numpy()  # [G, N]
    mean = per_context.mean(axis=1)
    interval = [bootstrap_interval(np.mean, row, seed=seed) for row in per_context]
    return PolicyDivergence(scan.rtg, float(reference_rtg), mean, np.array(interval))
