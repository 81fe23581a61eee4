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
from atari_dt.attribution.core import Target
from atari_dt.datasets.contexts import Contexts
from atari_dt.intervals import bootstrap_interval

CARRIED = 0.5  # patching the decision token restores at least half the RTG's effect


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
    averaged over the ``contexts`` whose policy the change moves (``skipped`` did not):
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
        """The ``k`` heads that restore most, with their intervals."""
        flat, intervals = self.heads.reshape(-1), self.heads_interval.reshape(-1, 2)
        order = np.argsort(-flat)[:k]
        return [(self.head_labels[i], float(flat[i]), tuple(intervals[i])) for i in order]

    def carrier_hook(self, tokens_per_step: int) -> str:
        """The first residual hook where patching the last state token alone restores at least
        ``CARRIED`` of the change (the RTG has reached the decision by then); the final
        residual when no earlier one does."""
        last_state = self.residual.shape[1] - tokens_per_step + 1  # steps are (R, s, a)
        for layer, restored in enumerate(self.residual[:, last_state]):
            if restored >= CARRIED:
                return f"blocks.{layer}.hook_resid_pre"
        return f"blocks.{self.residual.shape[0] - 1}.hook_resid_post"


def rtg_patching(
    model: Any, contexts: Contexts, low_rtg: float, high_rtg: float, *, seed: int = 0
) -> RtgPatching:
    """Patch each context's high-RTG run into its low-RTG run (constant RTG), by layer x
    position and by head (see ``RtgPatching``).

    Raises:
        UserError: no context's policy changes between the two RTGs.
    """
    from atari_dt.analysis.attention import token_labels
    from atari_dt.errors import UserError

    model.eval()
    contexts = contexts.encoded(model)
    residual, heads, labels = [], [], []
    for i in range(len(contexts)):
        one = contexts[i]
        high = one.with_rtg(scanned_rtg(one, high_rtg, "constant"))
        low = one.with_rtg(scanned_rtg(one, low_rtg, "constant"))
        with torch.no_grad():
            target = rtg_contrast(model(high)[0, -1], model(low)[0, -1])
        if target is None:
            continue
        try:
            residual.append(patch_residual(model, high, low, target).restored.numpy())
            by_head = patch_heads(model, high, low, target)
        except NothingToRestore:
            continue
        heads.append(by_head.restored.numpy())
        labels = by_head.labels
    if not heads:
        raise UserError(
            f"raising the RTG from {low_rtg:g} to {high_rtg:g} changes none of the "
            f"{len(contexts)} contexts' policies: there is nothing for patching to trace"
        )
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
        contexts=len(heads),
        skipped=len(contexts) - len(heads),
    )
