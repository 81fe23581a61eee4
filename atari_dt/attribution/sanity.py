"""Sanity checks of attribution maps, as functions returning data.

- Model-parameter randomisation (Adebayo et al. 2018): a faithful method's map changes when
  the weights are replaced by random ones; a map that survives (an edge detector) explains the
  input, not the model.
- Deletion / insertion: removing the most-attributed pixels first should move the target
  faster than removing them in random order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atari_dt.attribution.baselines import BaselineName, make_baseline
from atari_dt.attribution.core import FastForward, Metric, eval_model
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError

RANDOMISATION_THRESHOLD = 0.5  # |Spearman| of trained vs random-weight maps below this passes


def rank_correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two maps of any shapes holding as many values
    (``scipy.stats.spearmanr`` of the flattened maps; tied values share their average rank, so
    e.g. common zeros do not inflate it).

    NaN when a map is constant or has fewer than 2 values (undefined; returned without scipy's
    ``ConstantInputWarning``), and when a map holds a NaN.

    Raises:
        ValueError: the maps hold different numbers of values.
    """
    from scipy import stats  # here: scipy.stats costs ~0.9 s to import

    x, y = (m.detach().cpu().double().flatten().numpy() for m in (a, b))
    if x.size != y.size:
        raise ValueError(
            f"maps must hold as many values, got {x.size} {tuple(a.shape)} and "
            f"{y.size} {tuple(b.shape)}"
        )
    if any(v.size < 2 or v.min() == v.max() for v in (x, y)):  # NaN maps fall through: NaN
        return float("nan")
    return float(stats.spearmanr(x, y).statistic)


@dataclass(frozen=True)
class RandomisationResult:
    """Spearman correlation of the maps of the trained model and of a random-weight model:
    ``correlation`` on the signed maps (decides ``passed``), ``abs_correlation`` on their
    magnitudes. Methods that multiply by ``input - baseline`` (IG, GradientSHAP) keep the
    input's structure in the magnitudes (measured ~0.35-0.7 on a trained demo model against
    ~0 signed), so the signed maps are what shows whether the weights matter."""

    correlation: float
    abs_correlation: float
    threshold: float

    @property
    def passed(self) -> bool:
        """False also when the correlation is undefined (a constant map)."""
        return bool(abs(self.correlation) < self.threshold)


def randomisation_test(
    model: Any,
    explain: Callable[[Any], torch.Tensor],
    *,
    seed: int = 12345,
    threshold: float = RANDOMISATION_THRESHOLD,
) -> RandomisationResult:
    """Compare ``explain(model)`` with ``explain(random_model)``, where the random model has
    the same config and freshly initialised weights. ``explain`` returns a map (any shape)."""
    from atari_dt.model import HookedDecisionTransformer

    trained = explain(eval_model(model))
    with torch.random.fork_rng():  # the random weights follow `seed` only
        torch.manual_seed(seed)
        random_model = HookedDecisionTransformer(model.cfg)
    random_model = random_model.to(next(model.parameters()).device).eval()
    randomised = explain(random_model)
    return RandomisationResult(
        rank_correlation(trained, randomised),
        rank_correlation(trained.abs(), randomised.abs()),
        threshold,
    )


@dataclass(frozen=True)
class DeletionResult:
    """Target values as pixels are removed (``deletion``) or restored (``insertion``) in
    attribution order and in random order, at ``fractions`` of the attributed pixels."""

    mode: str
    fractions: np.ndarray
    by_attribution: np.ndarray
    random_order: np.ndarray

    @property
    def auc_attribution(self) -> float:
        return _area(self.by_attribution, self.fractions)

    @property
    def auc_random(self) -> float:
        return _area(self.random_order, self.fractions)

    @property
    def passed(self) -> bool:
        """Deletion: the target falls faster (smaller area); insertion: it rises faster."""
        if self.mode == "deletion":
            return self.auc_attribution < self.auc_random
        return self.auc_attribution > self.auc_random


def _area(values: np.ndarray, fractions: np.ndarray) -> float:
    """Trapezoid area under ``values`` over ``fractions``."""
    return float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(fractions)))


def deletion_curve(
    model: Any,
    contexts: Contexts,
    target: Metric,
    attributions: torch.Tensor,
    steps: list[int],
    *,
    mode: str = "deletion",
    baseline: BaselineName = "black",
    fractions: np.ndarray | None = None,
    seed: int = 0,
) -> DeletionResult:
    """Remove (``deletion``: input -> baseline) or restore (``insertion``: baseline -> input)
    the pixels of the attributed stacks (``attributions`` ``[k, S, H, W]`` for window
    ``steps`` of one context) from the most positive attribution down, and in a random
    order."""
    if mode not in ("deletion", "insertion"):
        raise UserError(f"mode must be deletion or insertion, got {mode!r}")
    model = eval_model(model)
    steps = [contexts.step_index(s) for s in steps]
    fractions = np.linspace(0, 1, 21) if fractions is None else np.asarray(fractions)
    forward = FastForward(model, contexts, target, steps)
    inputs = contexts.frames.float()[:, steps][0]  # [k, S, H, W]
    base = make_baseline(baseline, inputs)
    order = attributions.flatten().argsort(descending=True)
    shuffled = torch.randperm(order.numel(), generator=torch.Generator().manual_seed(seed))
    curves = [_curve(forward, inputs, base, o, fractions, mode) for o in (order, shuffled)]
    return DeletionResult(mode, fractions, *curves)


def _curve(
    forward: FastForward,
    inputs: torch.Tensor,
    base: torch.Tensor,
    order: torch.Tensor,
    fractions: np.ndarray,
    mode: str,
) -> np.ndarray:
    start, end = (inputs, base) if mode == "deletion" else (base, inputs)
    batch = []
    for fraction in fractions:
        chosen = order[: round(fraction * order.numel())]
        image = start.flatten().clone()
        image[chosen] = end.flatten()[chosen]
        batch.append(image.view(inputs.shape))
    with torch.no_grad():
        return forward(torch.stack(batch)).cpu().numpy()


@dataclass(frozen=True)
class Agreement:
    """How two maps agree: Spearman ``rank_correlation`` of the signed maps,
    ``abs_rank_correlation`` of their magnitudes, and ``top_overlap`` (intersection over union)
    of their largest-magnitude pixels."""

    rank_correlation: float
    abs_rank_correlation: float
    top_overlap: float


def agreement(a: torch.Tensor, b: torch.Tensor, *, top_fraction: float = 0.1) -> Agreement:
    """How two maps of the same decision agree (e.g. IG cross-checked by blur occlusion), over
    their ``top_fraction`` largest-magnitude pixels for the overlap (see ``Agreement``)."""
    k = max(1, round(top_fraction * a.numel()))
    top_a = set(a.detach().abs().flatten().topk(k).indices.tolist())
    top_b = set(b.detach().abs().flatten().topk(k).indices.tolist())
    return Agreement(
        rank_correlation(a, b),
        rank_correlation(a.abs(), b.abs()),
        len(top_a & top_b) / len(top_a | top_b),
    )
