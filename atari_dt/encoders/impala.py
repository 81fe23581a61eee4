"""The IMPALA ResNet encoder (Espeholt et al. 2018), as procgen agents use it."""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from atari_dt.encoders.common import flat_linear, flat_size, to_unit_range


class ResidualBlock(nn.Module):
    """``x + Conv(ReLU(Conv(ReLU(x))))`` with 3x3 convs; hooks ``hook_conv0`` (after the
    inner ReLU) and ``hook_conv1`` (the second conv's output, before the skip sum)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu_in = nn.ReLU()
        self.conv0 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.relu0 = nn.ReLU()
        self.hook_conv0 = HookPoint()  # [N, channels, h, w]
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.hook_conv1 = HookPoint()  # [N, channels, h, w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inner = self.hook_conv0(self.relu0(self.conv0(self.relu_in(x))))
        return x + self.hook_conv1(self.conv1(inner))


class ConvSequence(nn.Module):
    """Conv 3x3, max-pool 3x3 stride 2, two residual blocks (one IMPALA stage)."""

    def __init__(self, in_channels: int, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, channels, kernel_size=3, padding=1)
        self.hook_conv = HookPoint()  # [N, channels, H, W]
        self.pool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.blocks = nn.ModuleList([ResidualBlock(channels), ResidualBlock(channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.hook_conv(self.conv(x)))
        for block in self.blocks:
            x = block(x)
        return x


class ImpalaCNN(nn.Module):
    """Three stages of ``(16, 32, 32)`` channels, ReLU, Flatten, ``Linear(., d)`` and tanh (the
    tanh matches the Nature encoder so both give state embeddings in [-1, 1]).

    Hooks: ``hook_conv{i}`` on the output of stage ``i`` (``[N, 16, 42, 42]``,
    ``[N, 32, 21, 21]``, ``[N, 32, 11, 11]`` for 84x84 frames), ``hook_out`` ``[N, d_model]``,
    and inside each stage every conv: ``stages.{i}.hook_conv`` and
    ``stages.{i}.blocks.{j}.hook_conv{0,1}``.
    """

    n_conv_hooks = 3

    def __init__(
        self,
        d_model: int,
        stack_size: int = 4,
        frame_size: int = 84,
        channels: tuple[int, ...] = (16, 32, 32),
    ) -> None:
        super().__init__()
        ins = (stack_size, *channels[:-1])
        self.stages = nn.ModuleList(
            [ConvSequence(i, c) for i, c in zip(ins, channels, strict=True)]
        )
        for i in range(len(channels)):
            setattr(self, f"hook_conv{i}", HookPoint())
        self.relu = nn.ReLU()
        self.linear = nn.Linear(flat_size(self._features, stack_size, frame_size), d_model)
        self.tanh = nn.Tanh()
        self.hook_out = HookPoint()  # [N, d_model]

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels
        for i, stage in enumerate(self.stages):
            x = getattr(self, f"hook_conv{i}")(stage(x))
        return self.relu(x)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` ``[N, C, H, W]``, uint8 or float on the 0-255 scale -> ``[N, d_model]``."""
        features = self._features(to_unit_range(frames, self.linear.weight.dtype))
        return self.hook_out(self.tanh(flat_linear(self.linear, features)))
