"""What a request will cost, checked before the work starts: a request that cannot fit is
refused with the estimate, the limit and what to change, instead of ending minutes later in the
kernel's OOM killer with no message.

The estimates are arithmetic on config values (no torch here, so commands can call them before
loading anything). They count the large tensors a computation holds at its peak, from the
layer shapes: rough (within ~2x of a measured peak), but an absurd request is off by orders of
magnitude, which is all a refusal needs. Being rough, a request is refused only when the
estimate exceeds all the memory that is available, never for being merely large.
"""

from __future__ import annotations

import os
from typing import Any

from atari_dt.errors import UserError

FLOAT = 4  # bytes of a float32 activation

# Activations an encoder keeps per frame pixel (H x W) of one state, besides its float input:
# counted from the layer shapes at 84 x 84. Training keeps every layer's output (and ReLU
# copies) for backward; inference without gradients holds about two layers at a time.
_ENCODER_TRAIN = {"nature": 6, "impala": 121}
_ENCODER_INFERENCE = {"nature": 2, "impala": 32}

# Floats a transformer block keeps per token for backward: LayerNorms (2 x 2d), q/k/v (3d),
# z, attention output, resid_mid (3d), MLP pre and post (2 x 4d), MLP output and dropout masks
# (~3d) -- about 22 d; plus scores, pattern and dropout mask of the pattern (3 x heads x tokens).
# A TransformerLens cache of one forward pass holds about 17 d + 2 x heads x tokens.
_BLOCK_TRAIN_D, _BLOCK_TRAIN_ATTN = 22, 3
_BLOCK_CACHE_D, _BLOCK_CACHE_ATTN = 17, 2


def format_bytes(n: float) -> str:
    """``n`` bytes in the largest binary unit that keeps it >= 1 (``1.5 GiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def available_memory() -> int:
    """Bytes of RAM that can be used now without swapping (``psutil``'s ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def device_memory(device: str) -> int:
    """Bytes free for tensors on ``device``: the RAM available for ``cpu``, the device's free
    memory for ``cuda``/``cuda:N``; ``auto`` is CUDA when there is one (as training decides)."""
    if device == "cpu":
        return available_memory()
    import torch

    if device == "auto":
        if not torch.cuda.is_available():
            return available_memory()
        device = "cuda"
    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def check_memory(
    what: str, needed_bytes: int, available: int | None = None, *, hint: str = ""
) -> None:
    """Refuse ``what`` when it needs more than the ``available`` bytes (None: the RAM
    available now).

    Raises:
        UserError: naming ``what``, the estimate, the limit and ``hint`` (what to lower).
    """
    if available is None:
        available = available_memory()
    if needed_bytes > available:
        advice = f"; {hint}" if hint else ""
        raise UserError(
            f"{what} needs about {format_bytes(needed_bytes)} of memory but only "
            f"{format_bytes(available)} is available{advice}"
        )


def check_at_least(name: str, value: int | None, minimum: int = 1, meaning: str = "") -> None:
    """Refuse a count argument below ``minimum`` (None: not given, nothing to check).

    Raises:
        UserError: ``name must be >= minimum (meaning), got value``.
    """
    if value is not None and value < minimum:
        note = f" ({meaning})" if meaning else ""
        raise UserError(f"{name} must be >= {minimum}{note}, got {value}")


def frame_bytes(contexts: int, context_len: int, stack_size: int, frame_size: int) -> int:
    """The uint8 frames of ``contexts`` windows ``[N, T, S, H, W]``."""
    return contexts * context_len * stack_size * frame_size * frame_size


def cache_bytes(contexts: int, n_layers: int, tokens: int, d_model: int, n_heads: int) -> int:
    """One forward pass's TransformerLens cache (every hook of every layer) of ``contexts``
    windows of ``tokens`` tokens."""
    per_token = _BLOCK_CACHE_D * d_model + _BLOCK_CACHE_ATTN * n_heads * tokens
    return contexts * n_layers * tokens * per_token * FLOAT


def analysis_bytes(cfg: Any, contexts: int, grid: int = 1) -> int:
    """Peak memory of an analysis of ``contexts`` windows of the model ``cfg`` (a
    ``ModelConfig``) at ``grid`` RTG values, as ``scan`` and ``analyze`` run it: the frames
    and state embeddings are held throughout; the frames are encoded at once (float input and
    the encoder's layers) and then each RTG is one cached forward pass at a time, keeping the
    last state token's residual and logits of every grid point."""
    T, pixels = cfg.context_len, cfg.frame_size * cfg.frame_size
    states = contexts * T
    held = frame_bytes(contexts, T, cfg.stack_size, cfg.frame_size)
    held += states * cfg.d_model * FLOAT  # state embeddings
    held += grid * contexts * (cfg.d_model + _actions(cfg)) * FLOAT  # per-grid results
    encode = states * (cfg.stack_size + _ENCODER_INFERENCE[cfg.encoder]) * pixels * FLOAT
    one_pass = cache_bytes(contexts, cfg.n_layers, cfg.n_ctx, cfg.d_model, cfg.n_heads)
    return held + max(encode, one_pass)


def train_step_bytes(cfg: Any, batch: int) -> int:
    """Activation memory of one training step of the model ``cfg`` (a ``ModelConfig``) on
    ``batch`` windows: the uint8 batch, the encoder's float input and layer outputs of every
    state, and each block's activations kept for backward. Weights and optimiser state (a few
    MB for DT sizes) are not counted."""
    T, pixels, tokens = cfg.context_len, cfg.frame_size * cfg.frame_size, cfg.n_ctx
    states = batch * T
    frames = frame_bytes(batch, T, cfg.stack_size, cfg.frame_size)
    encoder = states * (cfg.stack_size + _ENCODER_TRAIN[cfg.encoder]) * pixels * FLOAT
    per_token = _BLOCK_TRAIN_D * cfg.d_model + _BLOCK_TRAIN_ATTN * cfg.n_heads * tokens
    blocks = batch * cfg.n_layers * tokens * per_token * FLOAT
    embeddings = batch * tokens * cfg.d_model * FLOAT * 4  # token embeddings, positions, sums
    return frames + encoder + blocks + embeddings


def batch_on_this_host(batch: int) -> int:
    """The share of a global ``batch`` that this host's processes hold: all of it, unless
    torchrun spreads the ranks over several hosts (``WORLD_SIZE`` > ``LOCAL_WORLD_SIZE``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    return -(-batch * local // max(world, 1))


def _actions(cfg: Any) -> int:
    n = cfg.n_actions
    return n if isinstance(n, int) else 18  # "auto": at most ALE's full action set
