"""The original DT's optimiser: AdamW with weight decay on Linear and Conv weights only, and a
linear warm-up followed by a cosine decay to a floor."""

from __future__ import annotations

import math

import torch
from torch import nn

from atari_dt.training.config import TrainConfig

# Parameters that are Linear/Conv weights in our model (TransformerLens names the transformer's
# matrices W_*): the original decays exactly these; biases, LayerNorm gains, embeddings and
# positional tables are not decayed.
_DECAYED_MATRICES = ("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U")


def decays(name: str, module: nn.Module) -> bool:
    """Whether parameter ``name`` of ``module`` gets weight decay."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in _DECAYED_MATRICES:
        return True
    return leaf == "weight" and isinstance(module, nn.Linear | nn.Conv2d)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: decayed (Linear/Conv weights) and not decayed (everything else)."""
    decayed, plain = [], []
    for module_name, module in model.named_modules():
        for name, param in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            (decayed if decays(full, module) else plain).append(param)
    return [
        {"params": decayed, "weight_decay": weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    # foreach=False: the per-parameter kernels give the same bits however the run is split.
    return torch.optim.AdamW(
        param_groups(model, config.weight_decay), lr=config.lr, betas=config.betas, foreach=False
    )


def lr_at(step: int, config: TrainConfig) -> float:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up over
    ``warmup_steps``, then the original's cosine ``max(floor, 0.5 (1 + cos(pi progress)))``
    times ``lr``, which reaches the floor (``final_lr_fraction``) at ~80% of the decay."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay_steps = max(1, config.max_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / decay_steps)
    return config.lr * max(config.final_lr_fraction, 0.5 * (1 + math.cos(math.pi * progress)))
