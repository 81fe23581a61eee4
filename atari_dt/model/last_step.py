"""The action logits of a window's last state token only: what an agent acting now needs.

The full forward computes every token in every layer, but an agent reads one logit vector per
window. Two parts of that work cannot reach it: the last step's action token (a placeholder,
later than the state token, so causal attention hides it) and, in the last layer, every query
but the last state token's (only the keys and values of the other tokens are needed there).
Exact up to float rounding. No hook fires on this path: while any hook is attached to the model
(an ablation, a steering vector, a cache, a plain torch module hook) it runs the full forward, so
hooks still act.
"""

from __future__ import annotations

import torch

from atari_dt.hooks import any_hooked


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
    ``[B, T, d_model]``, actions/timesteps ``[B, T]``, rtg ``[B, T]``, mask ``[B, T]``), for a
    model in eval mode."""
    if model.training or any_hooked(model):
        logits = model.forward_from_state_embeddings(
            state_embeddings, actions, rtg, timesteps, mask
        )
        return logits[:, -1]
    last_state = model.cfg.token_index(-1, actions.shape[1])
    final = model.final_resid_at([last_state], state_embeddings, actions, rtg, timesteps, mask)
    return model.action_logits_at(final[:, 0])
