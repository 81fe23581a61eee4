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
import torch.nn.functional as F

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
    cfg = model.cfg
    resid, key_mask = model._sequence_input(state_embeddings, actions, rtg, timesteps, mask)
    # Drop the tokens after the last state token (the last step's action): none is seen by it.
    end = resid.shape[1] - (cfg.tokens_per_step - 1 - cfg.state_token_offset)
    resid = resid[:, :end]
    key_mask = None if key_mask is None else key_mask[:, :end]
    for block in model.blocks[:-1]:
        resid = block(resid, key_mask)
    last = model.blocks[-1]
    q, k, v = last.attn.project(last.ln1(resid))
    z = F.scaled_dot_product_attention(
        q[:, -1:].transpose(1, 2),
        k.transpose(1, 2),
        v.transpose(1, 2),
        # The last query sees every real key (causality hides nothing before it).
        attn_mask=None if key_mask is None else key_mask[:, None, None, :],
    ).transpose(1, 2)  # [B, 1, H, d_head]
    x = resid[:, -1:] + last.attn.output(z)
    x = x + last.mlp(last.ln2(x))
    return model.action_logits_at(model.ln_final(x)[:, 0])
