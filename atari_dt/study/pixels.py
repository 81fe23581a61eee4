"""Pixels for the study: integrated gradients of the same decisions at returns across the
grid (how far the map moves from the in-distribution one: rank correlation and top-k
overlap), the attribution mass per game object and the share per token type as the return
grows, and the mechanism's components (a head, the RTG direction) attributed to the pixels."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atari_dt.analysis.scan import scanned_rtg
from atari_dt.attribution.core import Metric, Target
from atari_dt.attribution.explain import newest_boxes
from atari_dt.attribution.objects import object_masses
from atari_dt.attribution.pixels import attribute_pixels
from atari_dt.attribution.tokens import attribute_tokens
from atari_dt.datasets.contexts import Contexts

TOP_FRACTION = 0.02  # top-k overlap over the 2% largest |attribution| pixels (141 of 84x84)
TOKEN_TYPES = ("rtg", "state", "action")


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps' |attribution| (``[H, W]`` each; NaN if constant)."""
    from scipy import stats

    result = stats.spearmanr(np.abs(a).reshape(-1), np.abs(b).reshape(-1))
    return float(result.statistic)


def top_overlap(a: np.ndarray, b: np.ndarray, fraction: float = TOP_FRACTION) -> float:
    """Fraction of the ``fraction`` largest-|attribution| pixels of ``a`` that are also among
    ``b``'s (1: the same pixels matter most; ``fraction`` is chance level)."""
    k = max(1, round(fraction * a.size))
    top_a = np.argpartition(-np.abs(a).reshape(-1), k - 1)[:k]
    top_b = np.argpartition(-np.abs(b).reshape(-1), k - 1)[:k]
    return len(np.intersect1d(top_a, top_b)) / k


@dataclass(frozen=True)
class Attributed:
    """One attribution of one context's newest frame stack: its ``map`` ``[H, W]`` (summed
    over the stack), ``objects`` name -> share of |attribution| (with ``background``; empty
    without object labels), the target's ``change`` (f(input) - f(baseline)) and Captum's
    ``delta`` (completeness: the map sums to change + delta)."""

    map: np.ndarray
    objects: dict[str, float]
    change: float
    delta: float


@contextmanager
def _unconverged_quietly() -> Iterator[None]:
    """No per-map convergence warning: the study reports the pixel maps' worst once
    (``PixelStudy.worst_completeness``), where a hundred warnings would bury it; token IG
    serves only as shares."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="integrated gradients did not converge")
        yield


def _attributed(model: Any, context: Contexts, metric: Metric, n_steps: int) -> Attributed:
    with _unconverged_quietly():
        result = attribute_pixels(model, context, metric, baseline="black", n_steps=n_steps)
    boxes = newest_boxes(context)
    newest = result.newest
    shares: dict[str, float] = {}
    if boxes and newest is not None:
        masses = object_masses(newest.sum(0), boxes)
        shares = {name: mass.share for name, mass in masses.objects.items()}
        shares["background"] = masses.background.share
    change = result.target_value - result.baseline_value
    return Attributed(result.map().numpy(), shares, change, float(result.convergence_delta or 0.0))


@dataclass(frozen=True)
class PixelStudy:
    """IG of ``K`` decisions at each of ``rtg`` ``[G]`` (constant RTG; each decision explains
    the ``actions`` ``[K]`` it prefers at ``reference_rtg``, so maps are comparable):
    ``attributions[k][g]``; ``rank_correlation`` and ``top_overlap`` ``[K, G]`` against the map
    at the reference; ``token_shares`` ``[K, G, 3]`` (|IG| share of the RTG, state and action
    tokens, ``TOKEN_TYPES``); ``frames`` ``[K, H, W]`` the newest frames. ``mechanism``: the
    components of the mechanism attributed to the same pixels (label -> per-context
    ``Attributed`` at ``reference_rtg`` and at the grid's top)."""

    rtg: np.ndarray
    reference_rtg: float
    actions: list[int]
    frames: np.ndarray
    attributions: list[list[Attributed]]
    rank_correlation: np.ndarray
    top_overlap: np.ndarray
    token_shares: np.ndarray
    mechanism: dict[str, dict[str, list[Attributed]]] = field(default_factory=dict)

    def object_shares(self) -> dict[str, np.ndarray]:
        """Object name -> ``[K, G]`` share of |attribution| (NaN where the object was off
        screen), over every object seen in any decision."""
        names = sorted({n for row in self.attributions for a in row for n in a.objects})
        return {
            name: np.array(
                [[a.objects.get(name, np.nan) for a in row] for row in self.attributions]
            )
            for name in names
        }

    def worst_completeness(self) -> float:
        """The largest |delta| / max(|change|, 1e-3) of every attribution made (see
        ``attribution.core.warn_if_unconverged``)."""
        every = [a for row in self.attributions for a in row]
        every += [a for runs in self.mechanism.values() for side in runs.values() for a in side]
        return max(abs(a.delta) / max(abs(a.change), 1e-3) for a in every)


def _token_shares(model: Any, context: Contexts, target: Target, n_steps: int) -> np.ndarray:
    with _unconverged_quietly():
        tokens = attribute_tokens(model, context, target, n_steps=n_steps)
    magnitude = tokens.by_token.abs().sum(dim=1).double().numpy()  # [3]
    return magnitude / max(magnitude.sum(), 1e-12)


def pixel_study(
    model: Any,
    contexts: Contexts,
    rtg_grid: np.ndarray,
    reference_rtg: float,
    *,
    mechanism: dict[str, Any] | None = None,
    n_steps: int = 64,
    progress: bool = True,
) -> PixelStudy:
    """Attribute each context's decision at every grid RTG (``reference_rtg`` must be one).
    ``mechanism``: label -> a function ``(context, action) -> metric`` (e.g. a hook target for
    a head the patching found) attributed at the reference and the grid's top RTG."""
    from tqdm.auto import tqdm

    grid = np.asarray(rtg_grid, dtype=np.float64)
    reference = int(np.flatnonzero(np.isclose(grid, reference_rtg))[0])
    model.eval()
    contexts = contexts.encoded(model)
    K, G = len(contexts), len(grid)
    rows, actions, shares = [], [], np.zeros((K, G, len(TOKEN_TYPES)))
    hooked: dict[str, dict[str, list[Attributed]]] = {
        label: {"reference": [], "top": []} for label in mechanism or {}
    }
    bar = tqdm(total=K * G, desc="pixel attribution", unit="map", disable=not progress)
    for k in range(K):
        at = [contexts[k].with_rtg(scanned_rtg(contexts[k], float(v), "constant")) for v in grid]
        with torch.no_grad():
            action = int(model(at[reference])[0, -1].argmax())
        target = Target(action=action)
        row = []
        for g in range(G):
            row.append(_attributed(model, at[g], target, n_steps))
            shares[k, g] = _token_shares(model, at[g], target, n_steps)
            bar.update(1)
        for label, make_metric in (mechanism or {}).items():
            metric = make_metric(contexts[k], action)
            hooked[label]["reference"].append(_attributed(model, at[reference], metric, n_steps))
            hooked[label]["top"].append(_attributed(model, at[-1], metric, n_steps))
        rows.append(row)
        actions.append(action)
    bar.close()
    maps = [[a.map for a in row] for row in rows]
    return PixelStudy(
        rtg=grid,
        reference_rtg=float(grid[reference]),
        actions=actions,
        frames=contexts.frames[:, -1, -1].cpu().numpy(),
        attributions=rows,
        rank_correlation=np.array(
            [[rank_correlation(m, row[reference]) for m in row] for row in maps]
        ),
        top_overlap=np.array([[top_overlap(m, row[reference]) for m in row] for row in maps]),
        token_shares=shares,
        mechanism=hooked,
    )
