"""Pieces every state encoder shares: pixel scaling and the size of its flattened features."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from atari_dt.hooks import is_hooked


def to_unit_range(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Frames on the 0-255 scale (uint8, or float so that attribution can differentiate
    through pixels) in [0, 1], as ``dtype`` (the encoder's weights' dtype); uint8 frames under
    autocast come out in the autocast dtype instead."""
    # channels_last: oneDNN's convolutions run ~1.3x faster on CPU in that layout. The layout
    # change is done on the uint8 frames (a quarter of the bytes), then converted: 2.5x faster
    # than converting and changing the layout in one pass (46 vs 115 ms a batch of 960 stacks).
    channels_last = torch.channels_last
    if frames.dtype == torch.uint8:
        if torch.is_autocast_enabled(frames.device.type):
            # Straight to the autocast dtype: the convolutions would cast a float32 copy again
            # (bf16 holds 0-255 exactly, so the division rounds once, as float32 then a cast).
            dtype = torch.get_autocast_dtype(frames.device.type)
        frames = frames.contiguous(memory_format=channels_last)
        return frames.to(dtype).div_(255.0)  # in place: a fresh copy (channels_last is kept)
    return frames.to(dtype, memory_format=channels_last) / 255.0


def conv_relu(conv: nn.Module, relu: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``relu(conv(x))``, the ReLU in place when no module hook (Captum's layer methods,
    DeepLift's ReLU hooks) can hold or replace the convolution's output: the conv's backward
    does not need its output, and in place the ReLU skips writing a second copy of the
    largest activations (~10% of the first conv's forward and backward on CPU)."""
    out = conv(x)
    if is_hooked(conv) or is_hooked(relu):
        return relu(out)
    return out.relu_()


def flat_linear(linear: nn.Linear, features: torch.Tensor) -> torch.Tensor:
    """``linear(features.flatten(1))`` for conv features ``[N, C, H, W]``. On channels_last
    features of a batch of at least ``out_features`` (so that copying the weight costs less
    than the features' layout copy it saves) with no hook on ``linear``, the features are
    flattened in their memory order (h, w, c) and the weight's columns permuted to match: the
    same function, and the gradient comes back channels_last like the ReLU output it meets (a
    mismatched layout made the last ReLU's backward 5x slower: 11 vs 2 ms a batch of 960
    stacks, 1 thread)."""
    N, C, H, W = features.shape
    small = linear.out_features > N  # an agent's step: the plain flatten copies less
    if small or is_hooked(linear) or not features.is_contiguous(memory_format=torch.channels_last):
        return linear(features.flatten(1))
    weight = linear.weight.reshape(-1, C, H, W).permute(0, 2, 3, 1).reshape(-1, H * W * C)
    return F.linear(features.permute(0, 2, 3, 1).reshape(N, H * W * C), weight, linear.bias)


def flat_size(
    features: Callable[[torch.Tensor], torch.Tensor], stack_size: int, frame_size: int
) -> int:
    """Number of features ``features`` makes from one ``[1, stack_size, frame_size,
    frame_size]`` input (3136 for the Nature CNN on 84x84 frames)."""
    with torch.no_grad():
        return int(features(torch.zeros(1, stack_size, frame_size, frame_size)).numel())
