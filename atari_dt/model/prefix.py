"""Run the transformer on a suffix of the tokens, reusing the keys and values of a fixed prefix.

Integrated gradients evaluates the model at many inputs that differ only in a few frame stacks:
every token before the first changed state token has the same activations each time. This
computes their keys and values once and, per call, only the tokens from there to the target's
state token (later tokens cannot affect it). Exact up to float rounding; no hooks fire on the
suffix run (use the full forward for caches), and the model must be in eval mode.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PrefixCache:
    """Keys and values ``[1, start, H, d_head]`` of tokens ``0..start-1`` per layer, and the
    window's inputs. Calls compute tokens ``start..end-1``."""

    start: int
    end: int
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    key_mask: torch.Tensor | None  # bool [1, end], None without padding


def build_prefix_cache(
    model,
    state_embeddings: torch.Tensor,
    actions: torch.Tensor,
    rtg: torch.Tensor | None,
    timesteps: torch.Tensor,
    mask: torch.Tensor | None,
    *,
    start: int,
    end: int,
) -> PrefixCache:
    """Run the window once (batch 1) and keep the keys and values of its first ``start`` tokens."""
    if model.training:
        raise ValueError("the prefix cache needs the model in eval() (dropout off)")
    captured: dict[str, torch.Tensor] = {}

    def keep(activation: torch.Tensor, hook) -> None:
        captured[hook.name] = activation[:, :start].detach()

    names = [f"blocks.{i}.attn.hook_{x}" for i in range(model.cfg.n_layers) for x in "kv"]
    with torch.no_grad(), model.hooks(fwd_hooks=[(name, keep) for name in names]):
        model.forward_from_state_embeddings(state_embeddings, actions, rtg, timesteps, mask)
    key_mask = None
    if mask is not None and not bool(mask.all()):
        key_mask = mask.repeat_interleave(model.cfg.tokens_per_step, dim=1)[:, :end]
    n = model.cfg.n_layers
    return PrefixCache(
        start=start,
        end=end,
        keys=[captured[f"blocks.{i}.attn.hook_k"] for i in range(n)],
        values=[captured[f"blocks.{i}.attn.hook_v"] for i in range(n)],
        key_mask=key_mask,
    )


def forward_suffix(
    model,
    cache: PrefixCache,
    state_embeddings: torch.Tensor,
    actions: torch.Tensor,
    rtg: torch.Tensor | None,
    timesteps: torch.Tensor,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """The final normalised residual ``[n, end - start, d_model]`` of tokens start..end-1 for
    ``n`` variants of the window (inputs batched as for ``transformer``)."""
    s, e = cache.start, cache.end
    tokens = model._token_embeddings(state_embeddings.to(model.W_U.dtype), actions, rtg)
    x = (tokens + model._position_embeddings(timesteps, mask))[:, s:e]  # [n, e - s, d]
    n = x.shape[0]
    allowed = _allowed(s, e, cache.key_mask, x.device)
    for layer, block in enumerate(model.blocks):
        q, k, v = block.attn.project(block.ln1(x))
        keys = torch.cat([cache.keys[layer].expand(n, -1, -1, -1), k], dim=1)
        values = torch.cat([cache.values[layer].expand(n, -1, -1, -1), v], dim=1)
        z = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2), attn_mask=allowed
        ).transpose(1, 2)
        x = x + block.attn.output(z)
        x = x + block.mlp(block.ln2(x))
    return model.ln_final(x)


def _allowed(start: int, end: int, key_mask: torch.Tensor | None, device) -> torch.Tensor:
    """Bool ``[1 or B, 1, end - start, end]``: causal, padding keys hidden, self always seen."""
    queries = torch.arange(start, end, device=device)[:, None]
    keys = torch.arange(end, device=device)[None, :]
    allowed = keys <= queries
    if key_mask is not None:
        allowed = allowed & (key_mask[:, None, :] | (keys == queries))
        return allowed[:, None]
    return allowed[None, None]
