"""Causal attention with dropout in one C pass per CPU thread (``atari_dt/native/attention.c``).

torch's CPU attention under dropout falls back to its math path, and our explicit path
(``Attention._explicit``) writes several ``[B, H, Q, P]`` tensors per layer; the C kernel
writes none: it recomputes scores and pattern in the backward pass from each query's
log-sum-exp (flash-attention style) and regenerates the dropout mask from a counter-based hash
of (seed, batch-head pair, query position, key). The seed is drawn from torch's generator, so
``torch.manual_seed`` fixes every mask, and the masks do not depend on the thread count.

The kernel is compiled on first use (``atari_dt.native``). Without a compiler, or with
``ATARI_DT_NATIVE=0``, ``library()`` is None and the model keeps its torch path: the two
compute the same attention to float rounding and the same dropout distribution.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import functools
import itertools
import math
import operator
import os
from concurrent.futures import ThreadPoolExecutor

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from atari_dt import native

MAX_KEYS = 65536
"""Most tokens a window may have here: the dropout hash counts keys in 16 bits."""
KEY_BLOCK = 16
"""The kernel's head dimension is padded to a multiple of this (``W`` in C)."""


class _Attention(ctypes.Structure):
    """The C kernel's arguments (``Attention`` in ``attention.c``); strides in floats."""

    _fields_ = [
        *[(name, ctypes.c_void_p) for name in ("q", "k", "v", "dz")],
        *[(name, ctypes.c_int64) for name in ("q_batch", "q_row", "kv_batch", "kv_row")],
        *[(name, ctypes.c_int64) for name in ("dz_batch", "dz_row")],
        ("key_mask", ctypes.c_void_p),
        ("key_mask_batch", ctypes.c_int64),
        ("positions", ctypes.c_void_p),
        *[(name, ctypes.c_int32) for name in ("H", "Q", "P", "E")],
        ("scale", ctypes.c_float),
        ("p_drop", ctypes.c_float),
        ("threshold", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        *[(name, ctypes.c_void_p) for name in ("z", "lse", "dq", "dk", "dv")],
    ]


_PAIRS = [ctypes.POINTER(_Attention), ctypes.c_int64, ctypes.c_int64]
_SIGNATURES = {  # (argument types in the C order, result type: 0 when scratch ran out)
    "attention_forward": (_PAIRS, ctypes.c_int),
    "attention_backward": (_PAIRS, ctypes.c_int),
    "dropout_keep": ([
        ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32, ctypes.c_uint32, ctypes.c_uint64,
        ctypes.c_int64, ctypes.c_void_p,
    ], None),
}  # fmt: skip


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels with this module's functions declared, or None where they
    cannot be built (``atari_dt.native``)."""
    return native.bind(_SIGNATURES)


@functools.cache
def _pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="atari-dt-attention")


# A forked child has none of its parent's threads: it must not submit to their pool.
os.register_at_fork(after_in_child=_pool.cache_clear)


def _over_pairs(call, n_pairs: int) -> None:
    """Run ``call(begin, end)`` over ``[0, n_pairs)`` split between torch's intra-op threads,
    the last share on the calling thread (ctypes releases the GIL, so the shares run in
    parallel). Every share has finished when this returns or raises: an error or a Ctrl-C in
    one must not free tensors another is still writing."""
    workers = min(torch.get_num_threads(), n_pairs)
    edges = [n_pairs * w // workers for w in range(workers + 1)]
    shares = list(itertools.pairwise(edges))
    futures = [_pool(workers - 1).submit(call, lo, hi) for lo, hi in shares[:-1]]
    try:
        call(*shares[-1])
    finally:
        concurrent.futures.wait(futures)
    for future in futures:
        future.result()  # re-raises a share's error


def _checked(succeeded: int) -> None:
    if not succeeded:
        raise MemoryError("the C attention kernel could not allocate its scratch buffers")


def _round_up(size: int, multiple: int = KEY_BLOCK) -> int:
    return -(-size // multiple) * multiple


def _positions(positions: list[int]) -> torch.Tensor:
    return torch.tensor(positions, dtype=torch.int32)


def _rows(tensor: torch.Tensor, e_padded: int) -> torch.Tensor:
    """``tensor`` ``[B, tokens, H, e]`` as the kernel reads it: heads and their dimensions
    contiguous (the q, k, v views of one projection already are), ``e`` zero-padded."""
    e = tensor.shape[-1]
    if e != e_padded:
        return F.pad(tensor, (0, e_padded - e)).contiguous()
    if tensor.stride(-1) != 1 or tensor.stride(-2) != e:
        return tensor.contiguous()
    return tensor


def _check_inputs(q, k, v, key_mask, positions, p_drop) -> None:
    """What the C kernel assumes and cannot check itself (it would read out of bounds)."""
    B, Q, H, e = q.shape
    P = k.shape[1]
    for name, tensor in (("q", q), ("k", k), ("v", v), ("key_mask", key_mask)):
        if tensor.dtype != torch.float32 or tensor.device.type != "cpu":
            raise ValueError(
                f"{name} must be a float32 CPU tensor, got {tensor.dtype} on {tensor.device}"
            )
    if k.shape != (B, P, H, e) or v.shape != k.shape:
        raise ValueError(
            f"k and v must be [B, P, H, e] = [{B}, P, {H}, {e}], "
            f"got {list(k.shape)} and {list(v.shape)}"
        )
    if not 0 < P <= MAX_KEYS:
        raise ValueError(f"the kernel takes 1 to {MAX_KEYS} keys, got {P}")
    if key_mask.shape not in ((1, _round_up(P)), (B, _round_up(P))) or not key_mask.is_contiguous():
        raise ValueError(
            f"key_mask must be contiguous [1 or {B}, {_round_up(P)}] (key_mask_floats), "
            f"got {list(key_mask.shape)}"
        )
    if len(positions) != Q or any(b <= a for a, b in itertools.pairwise(positions)):
        raise ValueError(
            f"positions must be {Q} ascending token positions, got {list(positions)[:8]}..."
        )
    if Q and not 0 <= positions[0] <= positions[-1] < P:
        raise ValueError(f"positions must lie in [0, {P}), got {positions[0]}..{positions[-1]}")
    if not 0.0 <= p_drop < 1.0:
        raise ValueError(f"the kernel's dropout probability must be in [0, 1), got {p_drop}")


class CausalAttention(torch.autograd.Function):
    """``z = dropout(softmax(q k^T / sqrt(e) + mask)) v`` for float32 CPU tensors.

    ``q`` ``[B, Q, H, e]`` at token ``positions`` (ascending ints); ``k``, ``v`` ``[B, P, H,
    e]``; ``key_mask`` float ``[B or 1, P rounded up to 16]`` (1 = a real token, 0 = padding
    and after P). Query i sees key j when ``j <= positions[i]`` and (``key_mask[b, j]`` or
    ``j == positions[i]``). Returns ``z`` ``[B, Q, H, e]``.
    """

    @staticmethod
    def forward(ctx, q, k, v, key_mask, positions, p_drop, seed):
        positions = _ints(positions)
        _check_inputs(q, k, v, key_mask, positions, p_drop)
        B, Q, H, e = q.shape
        e_padded = _round_up(e)
        q_rows, k_rows, v_rows = (_rows(t, e_padded) for t in (q, k, v))
        if k_rows.stride() != v_rows.stride():  # the kernel takes one stride for both
            k_rows, v_rows = k_rows.contiguous(), v_rows.contiguous()
        position_ints = _positions(positions)
        z = q.new_empty(B, Q, H, e_padded)
        lse = q.new_empty(B, H, Q)
        args = _arguments(q_rows, k_rows, v_rows, key_mask, position_ints, z, lse, e, p_drop, seed)
        lib = library()
        _over_pairs(lambda begin, end: _checked(lib.attention_forward(args, begin, end)), B * H)
        ctx.save_for_backward(q_rows, k_rows, v_rows, key_mask, position_ints, z, lse)
        ctx.e, ctx.p_drop, ctx.seed = e, p_drop, seed
        return z[..., :e] if e != e_padded else z

    @staticmethod
    @once_differentiable
    def backward(ctx, dz):
        # Pointers from the saved tensors as unpacked now (saved-tensor hooks may have moved
        # them), in a struct of this call's own.
        q_rows, k_rows, v_rows, key_mask, position_ints, z, lse = ctx.saved_tensors
        e, e_padded = ctx.e, z.shape[-1]
        args = _arguments(
            q_rows, k_rows, v_rows, key_mask, position_ints, z, lse, e, ctx.p_drop, ctx.seed
        )
        dz_rows = _rows(dz, e_padded)
        dq, dk, dv = (
            torch.empty_like(t, memory_format=torch.contiguous_format) for t in (z, k_rows, k_rows)
        )
        args.dz, args.dz_batch, args.dz_row = dz_rows.data_ptr(), *dz_rows.stride()[:2]
        args.dq, args.dk, args.dv = dq.data_ptr(), dk.data_ptr(), dv.data_ptr()
        lib = library()
        _over_pairs(
            lambda begin, end: _checked(lib.attention_backward(args, begin, end)),
            dz.shape[0] * args.H,
        )
        if e != e_padded:
            dq, dk, dv = dq[..., :e], dk[..., :e], dv[..., :e]
        return dq, dk, dv, None, None, None, None


def _arguments(q_rows, k_rows, v_rows, key_mask, position_ints, z, lse, e, p_drop, seed):
    """The kernel's struct for these tensors (which must outlive its use)."""
    _, Q, H, e_padded = z.shape
    return _Attention(
        q=q_rows.data_ptr(), k=k_rows.data_ptr(), v=v_rows.data_ptr(),
        q_batch=q_rows.stride(0), q_row=q_rows.stride(1),
        kv_batch=k_rows.stride(0), kv_row=k_rows.stride(1),
        key_mask=key_mask.data_ptr(),
        key_mask_batch=0 if key_mask.shape[0] == 1 else key_mask.stride(0),
        positions=position_ints.data_ptr(), H=H, Q=Q, P=k_rows.shape[1], E=e_padded,
        scale=1.0 / math.sqrt(e), p_drop=p_drop, threshold=native.keep_threshold(p_drop),
        seed=seed, z=z.data_ptr(), lse=lse.data_ptr(),
    )  # fmt: skip


def key_mask_floats(key_mask: torch.Tensor | None, n_keys: int) -> torch.Tensor:
    """The kernel's key mask: ``key_mask`` (bool ``[B, P]``, True = a real token; None: no
    padding) as 0/1 floats ``[B or 1, P rounded up to 16]``, zero past P."""
    padded = _round_up(n_keys)
    if key_mask is None:
        floats = torch.zeros(1, padded)
        floats[:, :n_keys] = 1.0
        return floats
    return F.pad(key_mask.float(), (0, padded - n_keys))


def causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None,
    positions: list[int],
    p_drop: float,
) -> torch.Tensor:
    """The C kernel's attention (see ``CausalAttention``): ``q`` ``[B, Q, H, e]`` at token
    ``positions``, ``k``, ``v`` ``[B, P, H, e]``, ``key_mask`` bool ``[B, P]`` or None ->
    ``z`` ``[B, Q, H, e]`` float32. Half-precision inputs (bf16 autocast) are computed in
    float32. A dropout seed is drawn from torch's generator when ``p_drop > 0``."""
    seed = int(torch.randint(0, 2**62, (1,))) if p_drop > 0 else 0
    q, k, v = (t.float() for t in (q, k, v))
    mask = key_mask_floats(key_mask, k.shape[1])
    return CausalAttention.apply(q, k, v, mask, positions, float(p_drop), seed)


def _ints(positions) -> list[int]:
    try:  # numpy ints pass, floats do not (int32 would truncate 2.5 to 2)
        return [operator.index(position) for position in positions]
    except TypeError:
        raise ValueError(f"positions must be ints, got {list(positions)[:8]}") from None


def dropout_keep(
    positions: list[int], n_keys: int, p_drop: float, seed: int, n_pairs: int
) -> torch.Tensor:
    """The 0/1 keep mask ``[n_pairs, Q, n_keys]`` the kernel applies for ``seed`` (keys after
    a query's position are 0): lets tests replay its dropout on the torch path."""
    positions = _ints(positions)
    if not 0 < n_keys <= MAX_KEYS or any(not 0 <= position < n_keys for position in positions):
        raise ValueError(f"positions must lie in [0, {n_keys}) and n_keys in [1, {MAX_KEYS}]")
    keep = torch.empty(n_pairs, len(positions), n_keys)
    position_ints = _positions(positions)
    library().dropout_keep(
        position_ints.data_ptr(), len(positions), n_keys, native.keep_threshold(p_drop), seed,
        n_pairs, keep.data_ptr(),
    )  # fmt: skip
    return keep
