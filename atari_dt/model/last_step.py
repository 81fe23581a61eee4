"""The action logits of a window's last state token only: what an agent acting now needs.

The full forward computes every token in every layer, but an agent reads one logit vector per
window: ``HookedDecisionTransformer.final_resid_at`` at the last state token skips the last
step's placeholder action token and, in the last layer, every other query. Exact up to float
rounding; while any hook is attached it runs the full forward, so ablations and steering act.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def last_state_logits(
    model,
    state_embeddings: torch.Tensor,
    actions: torch.Tensor,
    rtg: torch.Tensor | None,
    timesteps: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Logits ``[B, n_actions]`` at the last step's state token of each window, equal to
    ``model.forward_from_state_embeddings(...)[:, -1]`` (same inputs: state embeddings
    ``[B, T, d_model]``, actions/timesteps ``[B, T]``, rtg ``[B, T]``, mask ``[B, T]``). In
    training mode that full forward itself runs, so its dropout draws are the full model's."""
    if model.training:
        logits = model.forward_from_state_embeddings(
            state_embeddings, actions, rtg, timesteps, mask
        )
        return logits[:, -1]
    last_state = model.cfg.token_index(-1, actions.shape[1])
    final = model.final_resid_at([last_state], state_embeddings, actions, rtg, timesteps, mask)
    return model.action_logits_at(final[:, 0])
