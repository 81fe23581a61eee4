"""Linear probes on the residual stream (scikit-learn, closed form): ridge regression for
continuous targets (RTG, object positions) and a ridge classifier (behaviour policy), each scored
on held-out contexts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


@dataclass(frozen=True)
class ProbeResult:
    """Held-out score per layer (``R^2`` for regression, accuracy for classification), with
    ``chance`` (0 for R^2; the majority class's share for classification)."""

    kind: str
    scores: np.ndarray  # [n_layers + 1]
    labels: list[str]
    chance: float


def _split(
    n: int, held_out: float, seed: int, groups: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Train and held-out indices; with ``groups`` (e.g. episodes) whole groups are held out,
    so windows of one episode never sit on both sides."""
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        cut = round(n * (1 - held_out))
        return order[:cut], order[cut:]
    names = rng.permutation(np.unique(groups))
    test_names = names[: max(1, round(len(names) * held_out))]
    test = np.isin(groups, test_names)
    return np.flatnonzero(~test), np.flatnonzero(test)


def probe(
    layers: torch.Tensor | np.ndarray,
    targets: np.ndarray,
    labels: list[str],
    *,
    kind: str = "regression",
    alpha: float = 1.0,
    held_out: float = 0.3,
    seed: int = 0,
    groups: np.ndarray | None = None,
) -> ProbeResult:
    """Fit one probe per layer on ``layers`` ``[n_layers + 1, N, d]`` (e.g. the accumulated
    residual at a token) to ``targets`` ``[N]`` (or ``[N, k]`` for regression), score it on a
    held-out ``held_out`` share of the contexts (of the ``groups``, when given).

    Both probes minimise ||X w + b - y||^2 + alpha ||w||^2 (the intercept ``b`` unpenalised):
    ``sklearn.linear_model.Ridge`` and ``RidgeClassifier`` (targets coded -1/+1 per class,
    predicted class the argmax, as ridge on one-hot labels would give).

    Raises:
        ValueError: unknown kind, or fewer than 4 contexts.
    """
    from sklearn.linear_model import Ridge, RidgeClassifier  # here: ~0.7 s to import

    features = np.asarray(layers, dtype=np.float64)
    n = features.shape[1]
    if n < 4:
        raise UserError(f"probes need at least 4 contexts, got {n}")
    train, test = _split(n, held_out, seed, None if groups is None else np.asarray(groups))
    if len(train) < 2 or len(test) < 1:
        raise UserError(
            f"probes need contexts on both sides of the split (got {len(train)}, {len(test)})"
        )
    scores = []
    if kind == "regression":
        y = np.asarray(targets, dtype=np.float64).reshape(n, -1)
        for layer in features:
            fit = Ridge(alpha=alpha).fit(layer[train], y[train])
            predicted = fit.predict(layer[test]).reshape(len(test), -1)  # (n_test, k), k=1 too
            residual = ((predicted - y[test]) ** 2).sum()
            # R^2 against the *training* mean, pooled over the k outputs: a probe that knows only
            # the training split's mean scores 0. sklearn's r2_score would use the held-out mean
            # (a baseline that has seen the test labels) and average the outputs' R^2 instead.
            total = ((y[test] - y[train].mean(0)) ** 2).sum()
            scores.append(1 - residual / max(total, 1e-12))
        return ProbeResult(kind, np.array(scores), labels, 0.0)
    if kind != "classification":
        raise UserError(f"kind must be regression or classification, got {kind!r}")
    classes, y = np.unique(np.asarray(targets), return_inverse=True)
    for layer in features:
        fit = RidgeClassifier(alpha=alpha).fit(layer[train], y[train])
        scores.append(float((fit.predict(layer[test]) == y[test]).mean()))
    chance = float(np.bincount(y[test], minlength=len(classes)).max() / len(test))
    return ProbeResult(kind, np.array(scores), labels, chance)


MIN_PROBE_EPISODES = 4  # an object probe needs this many episodes where it is visible


def context_probes(
    features: torch.Tensor | np.ndarray, contexts: Contexts, labels: list[str], *, seed: int = 0
) -> dict[str, ProbeResult]:
    """The probes of what the store knows about each context, on ``features``
    ``[n_layers + 1, N, d]`` (``residual_by_layer``), held out by whole episodes:

    - ``rtg``: the RTG asked for at the last step (regression);
    - ``behaviour``: the policy that played the episode, when every context has a label and
      there are at least two (classification);
    - ``<object>_xy``: each labelled object's position at the last step, over the contexts
      where it is on screen, when those span at least ``MIN_PROBE_EPISODES`` episodes.

    Raises:
        UserError: contexts without episode provenance (probes hold out whole episodes).
    """
    if contexts.episodes is None:
        raise UserError(
            "probes hold out whole episodes: the contexts must come from a store "
            "(store.sample_contexts / run.sample_contexts)"
        )
    groups = contexts.episodes  # held-out episodes, not just held-out windows
    probes = {
        "rtg": probe(features, contexts.rtg[:, -1].cpu().numpy(), labels, groups=groups, seed=seed)
    }
    behaviour = contexts.behaviour or ()
    known = [b for b in behaviour if b is not None]
    if behaviour and len(known) == len(behaviour) and len(set(known)) > 1:
        probes["behaviour"] = probe(
            features, np.array(known), labels, kind="classification", groups=groups, seed=seed
        )
    features = np.asarray(features)
    for name, positions in (contexts.objects or {}).items():
        visible = np.isfinite(positions).all(1)  # only contexts where the object is on screen
        if len(np.unique(groups[visible])) >= MIN_PROBE_EPISODES:
            probes[f"{name}_xy"] = probe(
                features[:, visible], positions[visible], labels, groups=groups[visible], seed=seed
            )
    return probes
