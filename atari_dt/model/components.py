"""Transformer parts with TransformerLens weight names, shapes and hook points.

``B`` batch, ``P`` tokens, ``H`` heads. Weights follow TransformerLens (``W_Q [H, d_model,
d_head]``, ``W_O [H, d_head, d_model]``, ``W_in [d_model, d_mlp]``, LayerNorm ``w, b``) so its
``ActivationCache`` helpers (``decompose_resid``, ``stack_head_results``, ``apply_ln_to_stack``)
work on our caches unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from atari_dt.model.config import ModelConfig


class LayerNorm(nn.Module):
    """LayerNorm with ``hook_scale`` (``[B, P, 1]``, the std the input is divided by) and
    ``hook_normalized`` (``[B, P, d_model]``, the output), as TransformerLens caches them."""

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # [B, P, 1]
        self.hook_normalized = HookPoint()  # [B, P, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale * self.w + self.b)


class Attention(nn.Module):
    """Causal multi-head self-attention. ``key_mask`` (``[B, P]`` bool) hides padding tokens
    from every query; a padding query still sees itself so its softmax stays finite."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        H, d, e = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(H, d, e))
        self.W_K = nn.Parameter(torch.empty(H, d, e))
        self.W_V = nn.Parameter(torch.empty(H, d, e))
        self.W_O = nn.Parameter(torch.empty(H, e, d))
        self.b_Q = nn.Parameter(torch.zeros(H, e))
        self.b_K = nn.Parameter(torch.zeros(H, e))
        self.b_V = nn.Parameter(torch.zeros(H, e))
        self.b_O = nn.Parameter(torch.zeros(d))
        self.register_buffer(
            "causal", torch.ones(cfg.n_ctx, cfg.n_ctx, dtype=torch.bool).tril(), persistent=False
        )
        self.pattern_dropout = nn.Dropout(cfg.dropout)
        self.hook_q = HookPoint()  # [B, P, H, d_head]
        self.hook_k = HookPoint()  # [B, P, H, d_head]
        self.hook_v = HookPoint()  # [B, P, H, d_head]
        self.hook_attn_scores = HookPoint()  # [B, H, P_query, P_key], masked entries -inf
        self.hook_pattern = HookPoint()  # [B, H, P_query, P_key]
        self.hook_z = HookPoint()  # [B, P, H, d_head]

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``[B, P, d_model]`` -> attention output ``[B, P, d_model]``."""
        q = self.hook_q(torch.einsum("bpd,hde->bphe", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("bpd,hde->bphe", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("bpd,hde->bphe", x, self.W_V) + self.b_V)
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        scores = self.hook_attn_scores(scores.masked_fill(~self._allowed(x, key_mask), -math.inf))
        pattern = self.pattern_dropout(self.hook_pattern(scores.softmax(dim=-1)))
        z = self.hook_z(torch.einsum("bhqk,bkhe->bqhe", pattern, v))
        return torch.einsum("bqhe,hed->bqd", z, self.W_O) + self.b_O

    def _allowed(self, x: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Bool ``[B or 1, 1, P, P]``: which key each query may attend to."""
        P = x.shape[1]
        allowed = self.causal[:P, :P]
        if key_mask is None:
            return allowed[None, None]
        diagonal = torch.eye(P, dtype=torch.bool, device=x.device)
        return (allowed & (key_mask[:, None, :] | diagonal))[:, None]


class MLP(nn.Module):
    """``GELU(x W_in + b_in) W_out + b_out`` (exact GELU, as ``nn.GELU()`` in the original)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_pre = HookPoint()  # [B, P, d_mlp]
        self.hook_post = HookPoint()  # [B, P, d_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(x @ self.W_in + self.b_in)
        return self.hook_post(F.gelu(pre)) @ self.W_out + self.b_out


class TransformerBlock(nn.Module):
    """Pre-LN block: ``resid_mid = resid_pre + attn(ln1(resid_pre))``,
    ``resid_post = resid_mid + mlp(ln2(resid_mid))``. Dropout acts before ``hook_attn_out`` /
    ``hook_mlp_out``, so the hooked outputs are exactly what the residual stream receives."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln1 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.attn = Attention(cfg)
        self.ln2 = LayerNorm(cfg.d_model, cfg.layer_norm_eps)
        self.mlp = MLP(cfg)
        self.attn_dropout = nn.Dropout(cfg.dropout)
        self.mlp_dropout = nn.Dropout(cfg.dropout)
        self.hook_resid_pre = HookPoint()  # [B, P, d_model]
        self.hook_attn_out = HookPoint()  # [B, P, d_model]
        self.hook_resid_mid = HookPoint()  # [B, P, d_model]
        self.hook_mlp_out = HookPoint()  # [B, P, d_model]
        self.hook_resid_post = HookPoint()  # [B, P, d_model]

    def forward(self, resid: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        resid = self.hook_resid_pre(resid)
        attn_out = self.hook_attn_out(self.attn_dropout(self.attn(self.ln1(resid), key_mask)))
        resid = self.hook_resid_mid(resid + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp_dropout(self.mlp(self.ln2(resid))))
        return self.hook_resid_post(resid + mlp_out)
