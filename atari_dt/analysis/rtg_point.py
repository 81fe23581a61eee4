"""One decision at one return-to-go: the policy, the attention to the RTG tokens and the direct
logit attribution of an action, from a single forward pass. What the app's RTG slider shows;
``rtg_scan`` and ``scan_report`` give the same quantities along a grid."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float

from atari_dt.analysis.dla import LogitAttribution, direct_logit_attribution
from atari_dt.analysis.scan import ScanMode, scanned_rtg
from atari_dt.attribution.core import Target, eval_model
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


@dataclass(frozen=True)
class DecisionAtRtg:
    """The last step's decision of one context asked for ``rtg`` (None: the context's own
    RTG): ``probabilities`` ``[A]``, the explained ``action`` (the most likely unless one was
    given), ``attention_to_rtg`` ``[L, H]`` (the last state token's attention summed over every
    RTG token of the window; zeros for a behaviour-cloning model, which has none) and ``dla``,
    the direct logit attribution of the action's logit (``values`` ``[n + 1, 1]``)."""

    rtg: float | None
    mode: ScanMode
    probabilities: Float[torch.Tensor, " A"]
    action: int
    attention_to_rtg: Float[torch.Tensor, "L H"]
    dla: LogitAttribution


@torch.no_grad()
def decision_at_rtg(
    model,
    contexts: Contexts,
    rtg: float | None = None,
    *,
    mode: ScanMode = "constant",
    action: int | None = None,
) -> DecisionAtRtg:
    """The decision at the last step of one context when it asks for ``rtg`` (``mode`` as
    ``rtg_scan``: the same RTG at every step, or ``rtg`` at the window's first step decremented
    by the rewards it received), from one forward pass with a cache.

    Args:
        contexts: one window (``ctx[i]``); its state embeddings are used when present.
        rtg: the return asked for, in the run's reward units; None keeps the context's own.
        action: the action whose logit is attributed (default: the most likely one).

    Raises:
        UserError: not exactly one context, or an action outside the model's action set.
    """
    if len(contexts) != 1:
        raise UserError(f"decision_at_rtg explains one context, got {len(contexts)}")
    model = eval_model(model)  # dropout would make the decision random
    contexts = contexts.encoded(model)
    if rtg is not None:
        contexts = contexts.with_rtg(scanned_rtg(contexts, float(rtg), mode))
    logits, cache = model.run_with_cache(contexts)
    probabilities = torch.softmax(logits[0, -1].double(), dim=-1).float().cpu()
    n_actions = probabilities.shape[0]
    if action is None:
        action = int(probabilities.argmax())
    elif not 0 <= action < n_actions:
        raise UserError(f"action must be in 0..{n_actions - 1}, got {action}")
    cfg, T = model.cfg, contexts.length
    attention = torch.zeros(cfg.n_layers, cfg.n_heads)
    if not cfg.behaviour_cloning:
        query = cfg.token_index(-1, T)
        keys = [cfg.token_index(t, T, "rtg") for t in range(T)]
        for layer in range(cfg.n_layers):
            pattern = cache[f"blocks.{layer}.attn.hook_pattern"][0]  # [H, P, P]
            attention[layer] = pattern[:, query, keys].sum(-1).cpu()
    dla = direct_logit_attribution(model, cache, Target(action=action))
    return DecisionAtRtg(
        None if rtg is None else float(rtg), mode, probabilities, action, attention, dla
    )
