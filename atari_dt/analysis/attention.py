"""Attention patterns with token labels, averaged over contexts, and the attention the current
state token pays to the RTG tokens as the RTG changes."""

from __future__ import annotations

import numpy as np
import torch

from atari_dt.analysis.batch import Batch, encoded, run, run_cached
from atari_dt.analysis.scan import scanned_rtg


def token_labels(cfg, T: int) -> list[str]:
    """``R_1, s_1, a_1, ..., R_T, s_T, a_T`` (``s_t, a_t`` for behaviour cloning)."""
    kinds = ("s", "a") if cfg.behaviour_cloning else ("R", "s", "a")
    return [f"{kind}_{t + 1}" for t in range(T) for kind in kinds]


@torch.no_grad()
def mean_patterns(model, batch: Batch) -> tuple[torch.Tensor, list[str]]:
    """Every head's attention pattern averaged over the contexts: ``[n_layers, n_heads, P, P]``
    (query, key) and the token labels. A padded context counts only in the rows of its real
    queries (which never attend to padding), so every row still sums to 1."""
    _, cache = run_cached(model, batch, names_filter=lambda n: n.endswith("hook_pattern"))
    k = model.cfg.tokens_per_step
    real = batch["mask"].repeat_interleave(k, dim=1).float()  # [N, P]
    weight = real[:, None, :, None]  # [N, 1, P_query, 1]
    patterns = torch.stack([cache[f"blocks.{layer}.attn.hook_pattern"]
                            for layer in range(model.cfg.n_layers)], dim=1)  # fmt: skip
    mean = (patterns * weight[:, None]).sum(0) / weight.sum(0).clamp(min=1)
    return mean, token_labels(model.cfg, batch["frames"].shape[1])


@torch.no_grad()
def attention_to_rtg(
    model, batch: Batch, rtg_grid: np.ndarray, mode: str = "constant"
) -> torch.Tensor:
    """Attention from the last state token to all RTG tokens (summed), per head, mean over
    contexts, at each grid RTG: ``[G, n_layers, n_heads]``."""
    if model.cfg.behaviour_cloning:
        raise ValueError("a behaviour-cloning model has no RTG tokens")
    batch = encoded(model, batch)
    out = []
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    for value in rtg_grid:
        rtg = scanned_rtg(batch, float(value), mode)
        patterns: dict[str, torch.Tensor] = {}

        def keep(pattern, hook, patterns=patterns):
            patterns[hook.name] = pattern[:, :, -2, 0::3].sum(-1)  # last s token -> every R

        with model.hooks(fwd_hooks=[(name, keep) for name in names]):
            run(model, batch, rtg)
        out.append(torch.stack([patterns[name].mean(0) for name in names]))
    return torch.stack(out)
