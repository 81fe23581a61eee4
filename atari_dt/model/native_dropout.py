"""Dropout of float32 CPU tensors in one C pass (``atari_dt/native/dropout.c``).

The mask is a counter-based hash of (seed, element index), regenerated in the backward pass
instead of stored; the seed is drawn from torch's generator, so ``torch.manual_seed`` fixes
every mask. ``components.Dropout`` uses it where the library is built and falls back to its
numpy masks (the same distribution, other draws) elsewhere.
"""

from __future__ import annotations

import ctypes
import functools

import torch
from torch.autograd.function import once_differentiable

from atari_dt import native


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels with ``dropout_apply`` declared, or None (``atari_dt.native``)."""
    argtypes = [
        ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_uint64, ctypes.c_uint32,
        ctypes.c_float,
    ]  # fmt: skip
    return native.bind({"dropout_apply": (argtypes, None)})


def _apply(x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
    """``x`` with the mask of ``seed`` applied: kept elements scaled by ``1 / (1 - p)``."""
    x = x.contiguous()
    out = torch.empty_like(x)
    scale = 1.0 / (1.0 - p)
    library().dropout_apply(
        x.data_ptr(), out.data_ptr(), x.numel(), seed, native.keep_threshold(p), scale
    )
    return out


class HashDropout(torch.autograd.Function):
    """``dropout(x)`` for a float32 CPU tensor with the mask of ``seed``; the backward pass
    applies the same mask to the gradient."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float, seed: int) -> torch.Tensor:
        ctx.p, ctx.seed = p, seed
        return _apply(x, p, seed)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        return _apply(grad, ctx.p, ctx.seed), None, None
