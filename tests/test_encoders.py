"""State encoders: shapes, hooks, pixel scaling, and modules fit for attribution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from seeds import seed
from torch import nn

from atari_dt.encoders import ENCODERS, ImpalaCNN, NatureCNN, make_encoder

HOOK_SHAPES = {
    "nature": {
        "hook_conv0": (32, 20, 20),
        "hook_conv1": (64, 9, 9),
        "hook_conv2": (64, 7, 7),
        "hook_out": (48,),
    },
    "impala": {
        "hook_conv0": (16, 42, 42),
        "hook_conv1": (32, 21, 21),
        "hook_conv2": (32, 11, 11),
        "hook_out": (48,),
    },
}


@pytest.fixture(scope="module")
def stacks(seaquest_windows) -> torch.Tensor:
    """Real Seaquest frame stacks, uint8 ``[12, 4, 84, 84]``."""
    return torch.from_numpy(np.ascontiguousarray(seaquest_windows["frames"][:, -2:])).flatten(0, 1)


def record_hooks(encoder: nn.Module, frames: torch.Tensor) -> dict[str, torch.Tensor]:
    seen: dict[str, torch.Tensor] = {}
    handles = [
        module.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out))
        for name, module in encoder.named_modules()
        if name.split(".")[-1].startswith("hook_")
    ]
    try:
        encoder(frames)
    finally:
        for handle in handles:
            handle.remove()
    return seen


@pytest.mark.parametrize("name", ["nature", "impala"])
def test_hooks_and_output(name, stacks) -> None:
    torch.manual_seed(seed(0))
    encoder = make_encoder(name, d_model=48).eval()
    with torch.no_grad():
        out = encoder(stacks)
        seen = record_hooks(encoder, stacks)
    assert out.shape == (12, 48) and out.abs().max() <= 1.0  # tanh output
    for hook, shape in HOOK_SHAPES[name].items():
        assert tuple(seen[hook].shape) == (12, *shape), hook
    assert torch.equal(seen["hook_out"], out)
    # Different real frames give different embeddings.
    assert torch.cdist(out, out).fill_diagonal_(1).min() > 0


def test_impala_hooks_every_conv(stacks) -> None:
    encoder = ImpalaCNN(d_model=48).eval()
    convs = [n for n, m in encoder.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        seen = record_hooks(encoder, stacks)
    inner = [n for n in seen if n.startswith("stages.")]
    assert len(convs) == 15 == len(inner)


@pytest.mark.parametrize("name", ["nature", "impala"])
def test_pixels_are_scaled_inside(name, stacks) -> None:
    torch.manual_seed(seed(0))
    encoder = make_encoder(name, d_model=48).eval()
    with torch.no_grad():
        as_uint8 = encoder(stacks)
        as_float = encoder(stacks.float())
        black = encoder(torch.zeros_like(stacks))
    torch.testing.assert_close(as_uint8, as_float, rtol=0, atol=1e-6)
    assert not torch.allclose(as_uint8[0], black[0])


@pytest.mark.parametrize("name", ["nature", "impala"])
def test_each_activation_module_runs_once_and_not_in_place(name, stacks) -> None:
    """Attribution methods that hook a module (Captum's layer methods, DeepLift) need each
    nonlinearity to be its own module, called once, and never in place."""
    encoder = make_encoder(name, d_model=48)
    calls: Counter[str] = Counter()
    activations = {
        n: m for n, m in encoder.named_modules() if isinstance(m, nn.ReLU | nn.Tanh | nn.GELU)
    }
    handles = [
        m.register_forward_hook(lambda mod, i, o, n=n: calls.update([n]))
        for n, m in activations.items()
    ]
    encoder(stacks[:2])
    for handle in handles:
        handle.remove()
    assert activations and set(calls) == set(activations)
    assert set(calls.values()) == {1}
    assert not any(getattr(m, "inplace", False) for m in encoder.modules())


def test_gradients_reach_the_pixels(stacks) -> None:
    encoder = NatureCNN(d_model=48).eval()
    pixels = stacks[:2].float().requires_grad_(True)
    encoder(pixels).sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0


def test_registry() -> None:
    assert {"nature": NatureCNN, "impala": ImpalaCNN} == ENCODERS
    with pytest.raises(ValueError, match="unknown encoder 'resnet'; registered: nature, impala"):
        make_encoder("resnet", d_model=8)


def test_other_frame_sizes_and_stacks() -> None:
    encoder = NatureCNN(d_model=16, stack_size=2, frame_size=64)
    assert encoder(torch.zeros(3, 2, 64, 64, dtype=torch.uint8)).shape == (3, 16)
