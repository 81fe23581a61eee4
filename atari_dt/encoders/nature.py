"""The Nature DQN CNN (Mnih et al. 2015) as the Decision Transformer paper's state encoder."""

from __future__ import annotations

import torch
from torch import nn
from transformer_lens.hook_points import HookPoint

from atari_dt.encoders.common import conv_relu, flat_linear, flat_size, to_unit_range


class NatureCNN(nn.Module):
    """``Conv(C,32,8,s4) ReLU Conv(32,64,4,s2) ReLU Conv(64,64,3,s1) ReLU Flatten
    Linear(3136, d) Tanh`` on frames scaled to [0, 1], as the DT paper's encoder.

    Hooks: ``hook_conv{0,1,2}`` after each conv's ReLU (``[N, 32, 20, 20]``, ``[N, 64, 9, 9]``,
    ``[N, 64, 7, 7]`` for 84x84 frames) and ``hook_out`` (``[N, d_model]``, after the tanh).
    Every activation has its own module, and a ReLU acts in place only while neither it nor
    its convolution carries a module hook, so attribution methods that hook modules (Captum's
    layer and neuron methods) see each one.
    """

    n_conv_hooks = 3

    def __init__(self, d_model: int, stack_size: int = 4, frame_size: int = 84) -> None:
        super().__init__()
        self.conv0 = nn.Conv2d(stack_size, 32, kernel_size=8, stride=4)
        self.relu0 = nn.ReLU()
        self.hook_conv0 = HookPoint()  # [N, 32, 20, 20]
        self.conv1 = nn.Conv2d(32, 64, kernel_size=4, stride=2)
        self.relu1 = nn.ReLU()
        self.hook_conv1 = HookPoint()  # [N, 64, 9, 9]
        self.conv2 = nn.Conv2d(64, 64, kernel_size=3, stride=1)
        self.relu2 = nn.ReLU()
        self.hook_conv2 = HookPoint()  # [N, 64, 7, 7]
        self.linear = nn.Linear(flat_size(self._features, stack_size, frame_size), d_model)
        self.tanh = nn.Tanh()
        self.hook_out = HookPoint()  # [N, d_model]

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.hook_conv0(conv_relu(self.conv0, self.relu0, pixels))
        x = self.hook_conv1(conv_relu(self.conv1, self.relu1, x))
        return self.hook_conv2(conv_relu(self.conv2, self.relu2, x))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        """``frames`` ``[N, C, H, W]``, uint8 or float on the 0-255 scale -> ``[N, d_model]``."""
        features = self._features(to_unit_range(frames, self.linear.weight.dtype))
        return self.hook_out(self.tanh(flat_linear(self.linear, features)))
