"""The RTG direction in the residual stream and a causal check of it by steering.

The direction at each residual hook is the mean difference of the activation between the same
contexts asked for a high and for a low return (per token kind: RTG, state, action tokens).
Steering adds ``scale`` x that direction at one hook to every token of its kind and asks
whether the policy then moves the way raising the RTG moves it, on contexts the direction
was not measured on.

At ``blocks.0.hook_resid_pre`` the answer is known exactly: changing a constant RTG changes
only the RTG tokens' embeddings, by the same vector at every step, so adding the direction
there reproduces the high-RTG run (up to float rounding) — a check the tests rely on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from atari_dt.analysis.scan import ScanMode, scanned_rtg
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError
from atari_dt.intervals import bootstrap_interval

KINDS = ("rtg", "state", "action")
MOVED = 1e-3  # mean total variation below which the RTG counts as moving no policy


def residual_hooks(n_layers: int) -> list[str]:
    """The residual stream before each layer and after the last: ``n_layers + 1`` hook names."""
    return [f"blocks.{layer}.hook_resid_pre" for layer in range(n_layers)] + [
        f"blocks.{n_layers - 1}.hook_resid_post"
    ]


@dataclass(frozen=True)
class RtgDirection:
    """``directions`` ``[L + 1, 3, d]``: at each of ``hooks`` (``residual_hooks``), the mean over
    contexts and real positions of each token kind (``KINDS``) of the residual at ``high_rtg``
    minus at ``low_rtg``; ``last_state`` ``[L + 1, d]`` the same at the last state token only
    (where the logits are read); ``norms`` ``[L + 1, 3]`` the directions' lengths."""

    hooks: list[str]
    directions: Float[torch.Tensor, "L1 3 d"]
    last_state: Float[torch.Tensor, "L1 d"]
    low_rtg: float
    high_rtg: float
    mode: str
    contexts: int

    @property
    def norms(self) -> Float[torch.Tensor, "L1 3"]:
        return torch.linalg.norm(self.directions, dim=-1)

    def index(self, hook: str) -> int:
        """The row of ``hook``.

        Raises:
            UserError: not one of ``hooks`` (the message lists them).
        """
        if hook not in self.hooks:
            raise UserError(f"no RTG direction at {hook!r}; measured at {', '.join(self.hooks)}")
        return self.hooks.index(hook)


def _kind_of_position(model: Any, positions: int) -> torch.Tensor:
    """Long ``[P]``: the ``KINDS`` index of each token position."""
    return torch.arange(positions) % model.cfg.tokens_per_step


@torch.no_grad()
def rtg_direction(
    model: Any,
    contexts: Contexts,
    low_rtg: float,
    high_rtg: float,
    *,
    mode: ScanMode = "constant",
) -> RtgDirection:
    """The RTG direction of ``contexts`` between ``low_rtg`` and ``high_rtg`` (returns in the
    contexts' reward units; ``mode`` as ``rtg_scan``); the frames are encoded once.

    Raises:
        UserError: a behaviour-cloning model, or ``high_rtg <= low_rtg``.
    """
    if model.cfg.behaviour_cloning:
        raise UserError("a behaviour-cloning model has no RTG, hence no RTG direction")
    if not high_rtg > low_rtg:
        raise UserError(f"the high RTG ({high_rtg}) must exceed the low one ({low_rtg})")
    model.eval()
    contexts = contexts.encoded(model)
    hooks = residual_hooks(model.cfg.n_layers)
    runs = []
    for value in (high_rtg, low_rtg):
        rtg = scanned_rtg(contexts, float(value), mode)
        _, cache = model.run_with_cache(contexts.with_rtg(rtg), names_filter=hooks)
        runs.append(torch.stack([cache[h] for h in hooks]))  # [L + 1, N, P, d]
    difference = (runs[0] - runs[1]).double()
    P = difference.shape[2]
    real = contexts.mask.repeat_interleave(model.cfg.tokens_per_step, dim=1).double()  # [N, P]
    kind = _kind_of_position(model, P).to(real.device)
    per_kind = []
    for k in range(len(KINDS)):
        weight = real * (kind == k)  # [N, P]
        total = (difference * weight[None, :, :, None]).sum(dim=(1, 2))
        per_kind.append(total / weight.sum().clamp(min=1))
    last = model.cfg.token_index(-1, contexts.length)
    return RtgDirection(
        hooks=hooks,
        directions=torch.stack(per_kind, dim=1).float().cpu(),
        last_state=difference[:, :, last].mean(1).float().cpu(),
        low_rtg=float(low_rtg),
        high_rtg=float(high_rtg),
        mode=mode,
        contexts=len(contexts),
    )


@contextmanager
def steering(
    model: Any, hook: str, vectors: Float[torch.Tensor, "3 d"], scale: float = 1.0
) -> Iterator[None]:
    """While active, every forward pass adds ``scale * vectors[kind]`` at ``hook`` to each
    token of that kind (``KINDS`` order), in analyses and rollouts alike."""
    vectors = vectors.to(model.device)

    def add(activation: torch.Tensor, hook: Any) -> torch.Tensor:
        kinds = _kind_of_position(model, activation.shape[1]).to(activation.device)
        return activation + scale * vectors.to(activation.dtype)[kinds]

    with model.hooks(fwd_hooks=[(hook, add)]):
        yield


@dataclass(frozen=True)
class SteeringEffect:
    """Steering the low-RTG run of held-out contexts by ``scale`` x the RTG direction at each
    of ``hooks``: ``recovered`` ``[L + 1]`` is 1 - mean TV(steered, high) / mean TV(low, high)
    (1: steering does what raising the RTG does; 0: nothing; < 0: it moves the policy away),
    with 95% bootstrap intervals ``interval`` ``[L + 1, 2]`` over contexts; ``rtg_effect`` the
    mean total variation between the low- and high-RTG policies it is measured against."""

    hooks: list[str]
    recovered: np.ndarray
    interval: np.ndarray
    rtg_effect: float
    scale: float
    contexts: int


def _policy(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits[:, -1].double(), dim=-1).cpu()


def _tv(p: torch.Tensor, q: torch.Tensor) -> np.ndarray:
    return (0.5 * (p - q).abs().sum(-1)).numpy()


@torch.no_grad()
def steering_effect(
    model: Any,
    contexts: Contexts,
    direction: RtgDirection,
    *,
    scale: float = 1.0,
    seed: int = 0,
) -> SteeringEffect:
    """How far adding the RTG direction (at each hook in turn) moves the low-RTG policy of
    ``contexts`` (ideally others than the direction was measured on) to the high-RTG one.
    When the RTG change moves none of their policies, ``recovered`` is NaN (and
    ``rtg_effect`` says how little moved): there is nothing to recover."""
    model.eval()
    contexts = contexts.encoded(model)
    low = contexts.with_rtg(scanned_rtg(contexts, direction.low_rtg, direction.mode))  # type: ignore[arg-type]
    high = contexts.with_rtg(scanned_rtg(contexts, direction.high_rtg, direction.mode))  # type: ignore[arg-type]
    p_low, p_high = _policy(model(low)), _policy(model(high))
    effect = _tv(p_low, p_high)
    recovered, intervals = [], []
    if len(effect) == 0 or effect.mean() < MOVED:
        nan = np.full(len(direction.hooks), np.nan)
        return SteeringEffect(
            direction.hooks,
            nan,
            np.stack([nan, nan], 1),
            float(effect.mean()),
            scale,
            len(contexts),
        )
    for row, hook in enumerate(direction.hooks):
        with steering(model, hook, direction.directions[row], scale):
            remaining = _tv(_policy(model(low)), p_high)

        def statistic(rem: np.ndarray, eff: np.ndarray, axis: int = -1) -> np.ndarray:
            return 1.0 - rem.mean(axis=axis) / np.maximum(eff.mean(axis=axis), 1e-12)

        recovered.append(float(statistic(remaining, effect)))
        intervals.append(bootstrap_interval(statistic, remaining, effect, seed=seed))
    return SteeringEffect(
        direction.hooks,
        np.array(recovered),
        np.array(intervals),
        float(effect.mean()),
        scale,
        len(contexts),
    )
