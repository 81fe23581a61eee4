"""The study's grid of target returns: from below the data's minimum to several times its
maximum, always holding the points the study compares against (the training data's median and
best return, the whole store's best return)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BEYOND = (1.5, 2.0, 3.0, 4.0)  # "multiples" of the data's max asked for beyond it (see below)


@dataclass(frozen=True)
class Landmarks:
    """Returns the study marks everywhere (the run's reward units): the store's ``data_min``
    and ``data_max`` over complete episodes, and the training episodes' ``train_median`` and
    ``train_max`` (below ``data_max`` when ``data.max_return_quantile`` held the top out)."""

    data_min: float
    data_max: float
    train_median: float
    train_max: float

    @property
    def held_out(self) -> bool:
        return self.train_max < self.data_max


def landmarks(store_returns: np.ndarray, train_returns: np.ndarray) -> Landmarks:
    """The landmarks of a store's (complete) episode returns and the run's training returns."""
    return Landmarks(
        data_min=float(np.min(store_returns)),
        data_max=float(np.max(store_returns)),
        train_median=float(np.median(train_returns)),
        train_max=float(np.max(train_returns)),
    )


def target_grid(marks: Landmarks, targets: tuple[float, ...] | None = None) -> np.ndarray:
    """Increasing targets ``[G]``: ``targets`` when given, else a point below the data's
    minimum, the minimum, the training median and max, the data max and ``BEYOND`` multiples of
    it; the training median and max and the data max are always included."""
    if targets is None:
        span = max(marks.data_max - marks.data_min, 1.0)
        # m x the data's max for a max that dominates its span (Seaquest's 20..420); steps of
        # the span beyond a max near or below 0 (Pong's clipped -21..+1), so points lie above.
        step = max(abs(marks.data_max), span)
        points = [marks.data_min - 0.25 * span, marks.data_min]
        points += [marks.data_max + (m - 1) * step for m in BEYOND]
    else:
        points = list(targets)
    points += [marks.train_median, marks.train_max, marks.data_max]
    return np.unique(np.round(np.asarray(points, dtype=np.float64), 6))


def scan_grid(grid: np.ndarray, points: int = 33) -> np.ndarray:
    """A finer grid over the same span for the RTG scan, holding every target of ``grid``."""
    fine = np.linspace(grid[0], grid[-1], points)
    return np.unique(np.concatenate([fine, grid]))
