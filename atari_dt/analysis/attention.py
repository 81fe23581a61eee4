"""Attention patterns with token labels, averaged over contexts, and the attention the current
state token pays to the RTG tokens as the RTG changes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from transformer_lens import ActivationCache

from atari_dt.analysis.scan import check_grid, scanned_rtg
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


def token_labels(cfg, T: int) -> list[str]:
    """``R_1, s_1, a_1, ..., R_T, s_T, a_T`` (``s_t, a_t`` for behaviour cloning)."""
    kinds = ("s", "a") if cfg.behaviour_cloning else ("R", "s", "a")
    return [f"{kind}_{t + 1}" for t in range(T) for kind in kinds]


@dataclass(frozen=True)
class AttentionPatterns:
    """Every head's attention ``patterns`` ``[n_layers, n_heads, P, P]`` (query, key),
    averaged over ``contexts`` windows, with the token ``labels`` ``[P]``."""

    patterns: Float[torch.Tensor, "L H P P"]
    labels: list[str]
    contexts: int


@torch.no_grad()
def mean_patterns(
    model, contexts: Contexts, *, cache: ActivationCache | None = None
) -> AttentionPatterns:
    """Every head's attention pattern averaged over the contexts. A padded context counts only
    in the rows of its real queries (which never attend to padding), so every row still sums
    to 1. ``cache``: a cache of these contexts with the patterns (else one run, the frames
    encoded once)."""
    if cache is None:
        _, cache = model.run_with_cache(
            contexts.encoded(model), names_filter=lambda n: n.endswith("hook_pattern")
        )
    k = model.cfg.tokens_per_step
    real = contexts.mask.repeat_interleave(k, dim=1).float()  # [N, P]
    weight = real[:, None, :, None]  # [N, 1, P_query, 1]
    patterns = torch.stack(
        [cache[f"blocks.{layer}.attn.hook_pattern"] for layer in range(model.cfg.n_layers)], dim=1
    )
    mean = (patterns * weight[:, None]).sum(0) / weight.sum(0).clamp(min=1)
    labels = token_labels(model.cfg, contexts.length)
    return AttentionPatterns(mean.cpu(), labels, len(contexts))


@torch.no_grad()
def attention_to_rtg(
    model, contexts: Contexts, rtg_grid: np.ndarray, mode: str = "constant"
) -> Float[torch.Tensor, "G L H"]:
    """Attention from the last state token to all RTG tokens (summed), per head, mean over
    contexts, at each grid RTG: ``[G, n_layers, n_heads]``.

    Raises:
        UserError: a behaviour-cloning model (no RTG tokens).
    """
    if model.cfg.behaviour_cloning:
        raise UserError("a behaviour-cloning model has no RTG tokens")
    contexts = contexts.encoded(model)
    T = contexts.length
    query = model.cfg.token_index(-1, T)
    keys = [model.cfg.token_index(t, T, "rtg") for t in range(T)]
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    out = []
    for value in check_grid(rtg_grid):
        rtg = scanned_rtg(contexts, float(value), mode)  # type: ignore[arg-type]
        patterns: dict[str, torch.Tensor] = {}

        def keep(pattern, hook, patterns=patterns):
            patterns[hook.name] = pattern[:, :, query, keys].sum(-1)  # last s token -> every R

        with model.hooks(fwd_hooks=[(name, keep) for name in names]):
            model(contexts.with_rtg(rtg))
        out.append(torch.stack([patterns[name].mean(0) for name in names]))
    return torch.stack(out).cpu()
