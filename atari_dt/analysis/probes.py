"""Linear probes on the residual stream, closed form: ridge regression for continuous targets
(RTG, object positions) and a ridge classifier on one-hot labels (behaviour policy), each scored
on held-out contexts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


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


def ridge_fit(features: np.ndarray, targets: np.ndarray, alpha: float) -> np.ndarray:
    """Weights ``[d + 1, k]`` (last row: intercept) minimising ||X w - y||^2 + alpha ||w||^2."""
    X = np.hstack([features, np.ones((len(features), 1))])
    penalty = alpha * np.eye(X.shape[1])
    penalty[-1, -1] = 0.0  # no penalty on the intercept
    return np.linalg.solve(X.T @ X + penalty, X.T @ targets)


def ridge_predict(features: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return np.hstack([features, np.ones((len(features), 1))]) @ weights


def probe(
    layers: torch.Tensor | np.ndarray, targets: np.ndarray, labels: list[str], *,
    kind: str = "regression", alpha: float = 1.0, held_out: float = 0.3, seed: int = 0,
    groups: np.ndarray | None = None,
) -> ProbeResult:  # fmt: skip
    """Fit one probe per layer on ``layers`` ``[n_layers + 1, N, d]`` (e.g. the accumulated
    residual at a token) to ``targets`` ``[N]`` (or ``[N, k]`` for regression), score it on a
    held-out ``held_out`` share of the contexts (of the ``groups``, when given).

    Raises:
        ValueError: unknown kind, or fewer than 4 contexts.
    """
    features = np.asarray(layers, dtype=np.float64)
    n = features.shape[1]
    if n < 4:
        raise ValueError(f"probes need at least 4 contexts, got {n}")
    train, test = _split(n, held_out, seed, None if groups is None else np.asarray(groups))
    if len(train) < 2 or len(test) < 1:
        raise ValueError(
            f"probes need contexts on both sides of the split (got {len(train)}, {len(test)})"
        )
    scores = []
    if kind == "regression":
        y = np.asarray(targets, dtype=np.float64).reshape(n, -1)
        for layer in features:
            w = ridge_fit(layer[train], y[train], alpha)
            residual = ((ridge_predict(layer[test], w) - y[test]) ** 2).sum()
            total = ((y[test] - y[train].mean(0)) ** 2).sum()
            scores.append(1 - residual / max(total, 1e-12))
        return ProbeResult(kind, np.array(scores), labels, 0.0)
    if kind != "classification":
        raise ValueError(f"kind must be regression or classification, got {kind!r}")
    classes, y = np.unique(np.asarray(targets), return_inverse=True)
    onehot = np.eye(len(classes))[y]
    for layer in features:
        w = ridge_fit(layer[train], onehot[train], alpha)
        scores.append(float((ridge_predict(layer[test], w).argmax(1) == y[test]).mean()))
    chance = float(np.bincount(y[test], minlength=len(classes)).max() / len(test))
    return ProbeResult(kind, np.array(scores), labels, chance)
