"""Inside the transformer for the study: activation patching between an in-distribution and
an out-of-distribution RTG over many contexts (which layers, positions and heads carry the
change), the residual stream hook the RTG has reached by the decision token, the RTG
direction there and the steering check of it on held-out contexts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from atari_dt.analysis.patching import NothingToRestore, patch_heads, patch_residual
from atari_dt.analysis.scan import scanned_rtg
from atari_dt.analysis.steering import MOVED
from atari_dt.attribution.core import Target
from atari_dt.datasets.contexts import Contexts
from atari_dt.intervals import bootstrap_interval

CARRIED = 0.5  # patching the decision token restores at least half the RTG's effect
# A context whose policy the RTG moves by less than MOVED (total variation) is not patched:
# restored fractions of a change near float rounding (~1e-6 on a logit) are noise of order 1.


def rtg_contrast(high_logits: torch.Tensor, low_logits: torch.Tensor) -> Target | None:
    """The logit difference the RTG change moves most: the action whose logit rises most from
    ``low_logits`` to ``high_logits`` (``[n_actions]`` each) minus the one that falls most;
    None when every logit moves alike (the policy does not change)."""
    change = (high_logits - low_logits).double()
    up, down = int(change.argmax()), int(change.argmin())
    if float(change[up] - change[down]) < 1e-6:  # float32 logits round at ~1e-7 each
        return None
    return Target(action=up, kind="logit_diff", other_action=down)


@dataclass(frozen=True)
class RtgPatching:
    """Denoising patches of the ``high_rtg`` run (clean) into the ``low_rtg`` run (corrupted),
    averaged over the ``contexts`` whose policy the change moves by at least ``MOVED`` total
    variation (``skipped`` did not; with ``contexts == 0`` the arrays are NaN: the RTG moves
    nothing there is to trace):
    ``residual`` ``[n_layers, P]`` (``blocks.{l}.hook_resid_pre`` at one position) and
    ``heads`` ``[n_layers, n_heads]`` of the fraction of the change restored (1: that
    activation carries all of it), ``heads_interval`` ``[n_layers, n_heads, 2]`` their 95%
    bootstrap intervals over contexts. The metric of each context is its ``rtg_contrast``."""

    low_rtg: float
    high_rtg: float
    residual: np.ndarray
    heads: np.ndarray
    heads_interval: np.ndarray
    position_labels: list[str]
    head_labels: list[str]
    contexts: int
    skipped: int

    def top_heads(self, k: int = 3) -> list[tuple[str, float, tuple[float, float]]]:
        """The ``k`` heads that restore most, with their intervals (the interval of a head
        picked as the largest of many is optimistic: it is the same contexts' bootstrap)."""
        flat, intervals = self.heads.reshape(-1), self.heads_interval.reshape(-1, 2)
        order = np.argsort(-flat)[:k]
        return [(self.head_labels[i], float(flat[i]), tuple(intervals[i])) for i in order]

    def carrier_hook(self, cfg: Any) -> str | None:
        """The first residual hook (``blocks.{l}.hook_resid_pre``) where patching the last
        state token alone restores at least ``CARRIED`` of the change: the RTG has reached the
        decision by then. None when no layer does (or nothing was patched)."""
        last_state = cfg.token_index(-1, self.residual.shape[1] // cfg.tokens_per_step)
        for layer, restored in enumerate(self.residual[:, last_state]):
            if restored >= CARRIED:
                return f"blocks.{layer}.hook_resid_pre"
        return None


def rtg_patching(
    model: Any, contexts: Contexts, low_rtg: float, high_rtg: float, *, seed: int = 0
) -> RtgPatching:
    """Patch each context's high-RTG run into its low-RTG run (constant RTG), by layer x
    position and by head (see ``RtgPatching``).

    A context whose policy the change moves by less than ``MOVED`` is skipped; when every
    one is, the result says so (``contexts == 0``) rather than tracing rounding noise.
    """
    from atari_dt.analysis.attention import token_labels

    model.eval()
    contexts = contexts.encoded(model)
    residual, heads = [], []
    for i in range(len(contexts)):
        one = contexts[i]
        high = one.with_rtg(scanned_rtg(one, high_rtg, "constant"))
        low = one.with_rtg(scanned_rtg(one, low_rtg, "constant"))
        with torch.no_grad():
            high_logits, low_logits = model(high)[0, -1], model(low)[0, -1]
        moved = 0.5 * float((high_logits.softmax(-1) - low_logits.softmax(-1)).abs().sum())
        target = rtg_contrast(high_logits, low_logits)
        if target is None or moved < MOVED:
            continue
        try:
            residual.append(patch_residual(model, high, low, target).restored.numpy())
            by_head = patch_heads(model, high, low, target)
        except NothingToRestore:
            continue
        heads.append(by_head.restored.numpy())
    labels = [
        f"L{layer}H{h}" for layer in range(model.cfg.n_layers) for h in range(model.cfg.n_heads)
    ]
    P = contexts.length * model.cfg.tokens_per_step
    if not heads:  # nothing moved: NaN results that say so
        residual = [np.full((model.cfg.n_layers, P), np.nan)]
        heads = [np.full((model.cfg.n_layers, model.cfg.n_heads), np.nan)]
    used = 0 if np.isnan(heads[0]).all() else len(heads)
    stacked = np.stack(heads)  # [N, L, H]
    intervals = np.array(
        [
            bootstrap_interval(np.mean, stacked[:, layer, head], seed=seed)
            for layer, head in np.ndindex(stacked.shape[1:])
        ]
    ).reshape(*stacked.shape[1:], 2)
    return RtgPatching(
        low_rtg=float(low_rtg),
        high_rtg=float(high_rtg),
        residual=np.stack(residual).mean(0),
        heads=stacked.mean(0),
        heads_interval=intervals,
        position_labels=token_labels(model.cfg, contexts.length),
        head_labels=labels,
        contexts=used,
        skipped=len(contexts) - used,
    )
