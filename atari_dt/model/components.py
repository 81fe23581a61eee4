"""Transformer parts with TransformerLens weight names, shapes and hook points.

``B`` batch, ``P`` tokens, ``H`` heads. Weights follow TransformerLens (``W_Q [H, d_model,
d_head]``, ``W_O [H, d_head, d_model]``, ``W_in [d_model, d_mlp]``, LayerNorm ``w, b``) so its
``ActivationCache`` helpers (``decompose_resid``, ``stack_head_results``, ``apply_ln_to_stack``)
work on our caches unchanged.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformer_lens.hook_points import HookPoint

from atari_dt import native
from atari_dt.hooks import is_hooked
from atari_dt.model import native_attention, native_dropout
from atari_dt.model.config import ModelConfig


class LayerNorm(nn.Module):
    """LayerNorm with ``hook_scale`` (``[B, P, 1]``, the std the input is divided by) and
    ``hook_normalized`` (``[B, P, d_model]``, the output), as TransformerLens caches them.

    While anything is hooked at ``hook_scale`` (a cache, a patch, an attribution method), the
    scale is computed explicitly and the output divides by the hooked value, so editing it
    works. Otherwise torch's fused ``layer_norm`` runs: the explicit form costs ~7% of a
    paper-size model's training step. The two agree to float rounding (~1e-7).
    """

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()  # [B, P, 1]
        self.hook_normalized = HookPoint()  # [B, P, d_model]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not is_hooked(self.hook_scale):
            return self.hook_normalized(F.layer_norm(x, x.shape[-1:], self.w, self.b, self.eps))
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.var(-1, unbiased=False, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(torch.addcmul(self.b, x / scale, self.w))


class Dropout(nn.Dropout):
    """``nn.Dropout`` whose masks on CPU are seeded from torch's generator (``torch.manual_seed``
    still fixes every mask) and drawn outside torch: torch's CPU ``bernoulli_`` was 13% of a
    paper-size training step. float32 tensors go through the C kernel of ``native_dropout``
    (one pass, the mask a hash regenerated in the backward: a [32, 90, 128] mask forward and
    backward took 0.3 instead of 1.2 ms); others, or without a C compiler, get a mask from
    numpy's SFC64 bit generator (2.5x faster than torch). Both draw the same distribution (each
    element kept with probability ``1 - p`` to within 2^-32, kept ones scaled by
    ``1 / (1 - p)``). Other devices, eval mode, ``p == 0`` and ``p == 1`` run torch's own
    dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or not 0.0 < self.p < 1.0:
            return super().forward(x)
        seed = int(torch.randint(0, 2**62, (1,)))
        if x.dtype == torch.float32 and native_dropout.library() is not None:
            return native_dropout.HashDropout.apply(x, self.p, seed)
        n = x.numel()
        bits = np.random.SFC64(seed).random_raw((n + 1) // 2).view(np.uint32)[:n]
        keep = bits >= np.uint32(native.keep_threshold(self.p))
        if x.dtype == torch.float32:  # the scaled mask made in the same numpy pass
            mask = np.multiply(keep, np.float32(1.0 / (1.0 - self.p)), dtype=np.float32)
            return x * torch.from_numpy(mask).view(x.shape)
        # numpy has no bf16. The 0/1 mask is exact in any dtype; the scale is applied as a
        # Python float so that it is rounded once with the product (a bf16 1/0.9 would be
        # 1.109375, 0.16% short).
        return x * torch.from_numpy(keep).view(x.shape).to(x.dtype) * (1.0 / (1.0 - self.p))


def _softmax(scores: torch.Tensor) -> torch.Tensor:
    """Softmax over keys; under autocast, bf16/fp16 scores (which it leaves in half precision
    on CPU) give a float32 pattern: torch's float32 kernel took half the time of its bf16 one
    (2.6 vs 5.0 ms for 32 windows' pattern), and the cached pattern and the softmax backward
    are exact to float32 (``pattern @ v`` still rounds it to bf16 under autocast)."""
    half = scores.dtype in (torch.bfloat16, torch.float16)
    upcast = half and torch.is_autocast_enabled(scores.device.type)  # else v is half too
    return scores.softmax(-1, dtype=torch.float32 if upcast else None)


QUERY_BLOCKS = 3
"""Blocks of queries the unhooked explicit attention runs in (2-4 measured within 2%)."""


class Attention(nn.Module):
    """Causal multi-head self-attention. ``key_mask`` (``[B, P]`` bool) hides padding tokens
    from every query; a padding query still sees itself so its softmax stays finite.

    While ``hook_attn_scores`` or ``hook_pattern`` is hooked, scores and pattern are computed
    explicitly on their hooks' path. Otherwise torch's fused ``scaled_dot_product_attention``
    runs (2-5x faster on CPU), except on CPU under dropout or bf16 autocast, where the C
    kernel of ``native_attention`` runs (or, without a C compiler, the explicit path in
    ``QUERY_BLOCKS`` causal blocks of queries). All agree to float rounding; the kernel's
    dropout draws other masks from the same distribution.
    """

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
        self.pattern_dropout = Dropout(cfg.dropout)
        self.hook_q = HookPoint()  # [B, P, H, d_head]
        self.hook_k = HookPoint()  # [B, P, H, d_head]
        self.hook_v = HookPoint()  # [B, P, H, d_head]
        self.hook_attn_scores = HookPoint()  # [B, H, P_query, P_key], masked entries -inf
        self.hook_pattern = HookPoint()  # [B, H, P_query, P_key]
        self.hook_z = HookPoint()  # [B, P, H, d_head]

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        queries: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``x`` ``[B, P, d_model]`` -> attention output ``[B, P, d_model]``, or
        ``[B, len(queries), d_model]`` at the token positions ``queries`` (ascending) only:
        every token's key and value are still computed. The hooks see whole tensors without
        ``queries``; pass it only to a model no hook is attached to (``any_hooked``)."""
        q, k, v = self.project(x)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        allowed = self._allowed(x, key_mask)
        positions = None if queries is None else list(queries)
        if positions is not None:
            if positions != sorted(set(positions)):  # each query block cuts the keys after it
                raise ValueError(f"queries must be ascending and distinct, got {positions}")
            q, allowed = q[:, positions], allowed[:, :, positions]
        if is_hooked(self.hook_attn_scores) or is_hooked(self.hook_pattern):
            z = self._explicit(q, k, v, allowed, 1, positions)
        elif self._fused_is_slow(x):
            z = self._native(q, k, v, key_mask, positions)
            if z is None:
                z = self._explicit(q, k, v, allowed, QUERY_BLOCKS, positions)
        else:  # torch's fused kernel: nothing asks for the scores or the pattern
            causal_only = key_mask is None and queries is None
            # The last token alone (an agent's decision) sees every key: no mask to apply.
            unmasked = key_mask is None and positions == [x.shape[1] - 1]
            z = F.scaled_dot_product_attention(
                q.transpose(1, 2),
                k.transpose(1, 2),
                v.transpose(1, 2),
                attn_mask=None if causal_only or unmasked else allowed,
                dropout_p=self.pattern_dropout.p if self.pattern_dropout.training else 0.0,
                is_causal=causal_only,
            ).transpose(1, 2)
        return self.output(self.hook_z(z))  # z: [B, Q, H, e]

    def _fused_is_slow(self, x: torch.Tensor) -> bool:
        """Whether torch's fused kernel loses to explicit attention here: on CPU under dropout
        (it falls back to its math path, with a mask check and torch's slow masks) and under
        bf16 autocast (its kernel was ~4x slower than the explicit one; both measured per
        block, forward and backward, B 32, 90 tokens, on an AVX512 CPU with AMX)."""
        if x.device.type != "cpu":
            return False
        dropout = self.pattern_dropout.training and self.pattern_dropout.p > 0
        return dropout or torch.is_autocast_enabled("cpu")

    def _native(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor | None,
        positions: Sequence[int] | None,
    ) -> torch.Tensor | None:
        """The C kernel's attention (``native_attention``), or None where it does not apply:
        no compiled library, float64 inputs, ``p == 1`` dropout, a hooked or replaced pattern
        dropout (the kernel draws its own masks), a hooked ``hook_z`` (a hook may edit z in
        place, which the kernel's saved output does not allow). Under bf16 autocast it
        computes in float32 and returns float32 ``z`` (the output projection casts it)."""
        lib_inputs = q.dtype == torch.float32 or (
            q.dtype == torch.bfloat16 and torch.is_autocast_enabled("cpu")
        )
        dropout = self.pattern_dropout
        if type(dropout) is not Dropout or is_hooked(dropout) or is_hooked(self.hook_z):
            return None
        p = dropout.p if dropout.training else 0.0
        if not lib_inputs or not 0.0 <= p < 1.0 or k.shape[1] > native_attention.MAX_KEYS:
            return None
        if native_attention.library() is None:
            return None
        positions = list(range(q.shape[1])) if positions is None else list(positions)
        return native_attention.causal_attention(q, k, v, key_mask, positions, p)

    def _explicit(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        allowed: torch.Tensor,
        query_blocks: int = 1,
        positions: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Attention with the scores and the pattern on the path of their hooks, for queries
        ``q`` ``[B, Q, H, e]`` at token ``positions`` (ascending; all ``P`` tokens when None;
        ``allowed`` ``[B or 1, 1, Q, P]``), in ``query_blocks`` blocks of queries in turn.
        Causality hides every key after a block's last query, so a block needs keys ``[0, last
        position + 1)`` only: 3 blocks skip a third of the scores, softmax and dropout masks (a
        paper-size block's attention, B 32, 90 tokens, dropout 0.1, forward and backward: 30
        instead of 35 ms on 1 thread), with dropout masks drawn block by block (the same
        distribution, other draws). The hooks see whole ``[B, H, P, P]`` tensors with one block
        of every query only; ``forward`` sends a layer whose scores or pattern are hooked here
        so."""
        Q = q.shape[1]
        positions = range(Q) if positions is None else positions
        queries = q.transpose(1, 2) / math.sqrt(q.shape[-1])  # [B, H, Q, e], smaller than scores
        keys, values = k.permute(0, 2, 3, 1), v.transpose(1, 2)  # [B, H, e, P], [B, H, P, e]
        edges = sorted({round(Q * i / query_blocks) for i in range(query_blocks + 1)})
        z = []
        for lo, hi in itertools.pairwise(edges):
            end = positions[hi - 1] + 1  # the block's last query sees no later key
            scores = queries[:, :, lo:hi] @ keys[..., :end]  # [B, H, hi - lo, end]
            # An additive -inf bias masks as masked_fill does, but its backward is a plain
            # copy: a paper-size block's attention, forward and backward, took 34 ms, not 53.
            seen = allowed[..., lo:hi, :end]  # [B or 1, 1, hi - lo, end]
            bias = scores.new_zeros(seen.shape).masked_fill_(~seen, -math.inf)
            scores = self.hook_attn_scores(scores + bias)
            pattern = self.pattern_dropout(self.hook_pattern(_softmax(scores)))
            z.append(pattern @ values[:, :, :end])
        return torch.cat(z, dim=2).transpose(1, 2)

    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v ``[B, P, H, d_head]`` of ``x`` (before their hooks), from one matmul."""
        B, P, _ = x.shape
        H, e = self.W_Q.shape[0], self.W_Q.shape[2]
        # [d, 3*H*e], head-major within each third
        weight = torch.cat([w.transpose(0, 1).reshape(-1, H * e) for w in self._qkv()], dim=1)
        bias = torch.cat([self.b_Q.flatten(), self.b_K.flatten(), self.b_V.flatten()])
        return F.linear(x, weight.T, bias).view(B, P, 3, H, e).unbind(dim=2)

    def output(self, z: torch.Tensor) -> torch.Tensor:
        """``z`` ``[B, P, H, d_head]`` -> what the attention adds to the residual."""
        B, P, H, e = z.shape
        return F.linear(z.reshape(B, P, H * e), self.W_O.reshape(H * e, -1).T, self.b_O)

    def _qkv(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.W_Q, self.W_K, self.W_V

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
        # F.linear fuses the bias into the matmul (x @ W + b as one addmm).
        pre = self.hook_pre(F.linear(x, self.W_in.T, self.b_in))
        return F.linear(self.hook_post(F.gelu(pre)), self.W_out.T, self.b_out)


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
        self.attn_dropout = Dropout(cfg.dropout)
        self.mlp_dropout = Dropout(cfg.dropout)
        self.hook_resid_pre = HookPoint()  # [B, P, d_model]
        self.hook_attn_out = HookPoint()  # [B, P, d_model]
        self.hook_resid_mid = HookPoint()  # [B, P, d_model]
        self.hook_mlp_out = HookPoint()  # [B, P, d_model]
        self.hook_resid_post = HookPoint()  # [B, P, d_model]

    def forward(
        self,
        resid: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        queries: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """``resid`` ``[B, P, d_model]`` -> ``resid_post`` ``[B, P, d_model]``, or
        ``[B, len(queries), d_model]`` at the token positions ``queries`` only (for a model no
        hook is attached to: see ``Attention.forward``)."""
        resid = self.hook_resid_pre(resid)
        attn_in = self.ln1(resid)
        if queries is not None:
            resid = resid[:, list(queries)]
        attn_out = self.hook_attn_out(self.attn_dropout(self.attn(attn_in, key_mask, queries)))
        resid = self.hook_resid_mid(resid + attn_out)
        mlp_out = self.hook_mlp_out(self.mlp_dropout(self.mlp(self.ln2(resid))))
        return self.hook_resid_post(resid + mlp_out)
