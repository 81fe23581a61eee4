"""95% intervals for the numbers the framework reports, all from ``scipy.stats``: a mean
(Student t; of paired differences, for a difference between runs on the same seeds) and any
statistic of resampled units (percentile bootstrap). Each returns ``(low, high)``, NaN-wide
when the data cannot give one."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

NAN_INTERVAL = (math.nan, math.nan)


def mean_interval(values: np.ndarray | list[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (NaN-wide for fewer than 2; zero-wide
    when they are all equal)."""
    from scipy import stats  # ~0.9 s to import: only when an interval is asked for

    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    if n < 2:
        return NAN_INTERVAL
    mean = float(values.mean())
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * float(values.std(ddof=1)) / math.sqrt(n)
    return (mean - half, mean + half)


def bootstrap_interval(
    statistic: Callable[..., np.ndarray],
    *samples: np.ndarray,
    paired: bool = True,
    seed: int = 0,
    level: float = 0.95,
    resamples: int = 2000,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of ``statistic(*samples, axis=-1)`` resampling units
    (contexts, episodes) jointly when ``paired`` (NaN-wide for fewer than 2 units; the
    statistic's value when every resample gives the same)."""
    from scipy import stats

    if any(len(s) < 2 for s in samples):
        return NAN_INTERVAL
    result = stats.bootstrap(
        samples,
        statistic,
        paired=paired,
        vectorized=True,
        n_resamples=resamples,
        confidence_level=level,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    low, high = result.confidence_interval.low, result.confidence_interval.high
    if not (np.isfinite(low) and np.isfinite(high)):  # a degenerate (constant) resampling
        value = float(statistic(*samples, axis=-1))
        return (value, value)
    return (float(low), float(high))


def jsonable(interval: tuple[float, float]) -> list[float] | None:
    """An interval for JSON: None when undefined."""
    return None if any(math.isnan(v) for v in interval) else [float(v) for v in interval]
