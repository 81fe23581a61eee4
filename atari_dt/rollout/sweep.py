"""Target-return sweeps as data: per target, what the agent achieved (mean, spread, 95%
interval), episode lengths and actions; plus the training data's return range, so plots and
reports can mark where the targets leave the data."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from atari_dt.rollout.evaluate import EpisodeResult


@dataclass(frozen=True)
class TargetSummary:
    """What one target return achieved over its episodes (returns in ``reward_units``)."""

    target: float
    returns: list[float]
    mean: float
    std: float
    min: float
    max: float
    ci95: tuple[float, float]
    """95% t-interval of the mean (NaN-wide with one episode)."""
    raw_returns: list[float]
    lengths: list[int]
    truncated: int
    action_counts: list[int]


@dataclass(frozen=True)
class SweepResult:
    """A target-return sweep: every target's summary and the data it is compared with."""

    game: str
    reward_units: str
    targets: list[TargetSummary]
    data_return_range: tuple[float, float] | None
    """Min and max return of the training episodes (same units), or None."""
    sample: bool
    temperature: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON-able data; an undefined interval (one episode) becomes null."""
        return no_nan(asdict(self))

    def to_csv(self) -> str:
        """One row per target: target, n, mean, std, min, max, ci95_low, ci95_high, mean_length."""
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(
            [
                "target",
                "episodes",
                "mean",
                "std",
                "min",
                "max",
                "ci95_low",
                "ci95_high",
                "mean_length",
                "reward_units",
            ]
        )
        for s in self.targets:
            writer.writerow(
                [
                    s.target,
                    len(s.returns),
                    s.mean,
                    s.std,
                    s.min,
                    s.max,
                    *s.ci95,
                    float(np.mean(s.lengths)),
                    self.reward_units,
                ]
            )
        return out.getvalue()


def no_nan(value: Any) -> Any:
    """``value`` (nested dicts, lists, tuples) with every NaN float as None, for strict JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: no_nan(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [no_nan(v) for v in value]
    return value


def summarise(
    results: list[EpisodeResult],
    *,
    game: str,
    reward_units: str,
    data_return_range: tuple[float, float] | None,
    sample: bool,
    temperature: float,
) -> SweepResult:
    """Group episode results by target (in first-seen order) into a ``SweepResult``."""
    by_target: dict[float, list[EpisodeResult]] = {}
    for result in results:
        by_target.setdefault(result.target, []).append(result)
    return SweepResult(
        game=game,
        reward_units=reward_units,
        targets=[_summary(target, rs, reward_units) for target, rs in by_target.items()],
        data_return_range=data_return_range,
        sample=sample,
        temperature=temperature,
    )


def _summary(target: float, results: list[EpisodeResult], units: str) -> TargetSummary:
    from atari_dt.intervals import mean_interval

    returns = np.array([r.achieved(units) for r in results], dtype=np.float64)
    n = len(returns)
    std = float(returns.std(ddof=1)) if n > 1 else 0.0
    mean = float(returns.mean())
    return TargetSummary(
        target=float(target),
        returns=returns.tolist(),
        mean=mean,
        std=std,
        min=float(returns.min()),
        max=float(returns.max()),
        ci95=mean_interval(returns),
        raw_returns=[r.return_raw for r in results],
        lengths=[r.length for r in results],
        truncated=sum(r.truncated for r in results),
        action_counts=np.sum([r.action_counts for r in results], axis=0).tolist(),
    )
