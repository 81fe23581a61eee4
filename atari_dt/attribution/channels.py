"""Encoder channels: which CNN channels and locations carry the target, by layer integrated
gradients at ``encoder.hook_conv{i}`` on the attributed frame stack."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from atari_dt.attribution.baselines import BaselineName, make_baseline
from atari_dt.attribution.core import (
    FastForward,
    Metric,
    eval_model,
    integrated_gradients,
    metric_step,
)
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


@dataclass(frozen=True)
class ChannelAttribution:
    """``by_location`` float ``[C, h, w]`` at conv layer ``layer`` for the stack of window step
    ``step``; ``by_channel`` ``[C]`` its sums (largest magnitude = the channels that matter)."""

    layer: int
    step: int
    by_location: torch.Tensor
    convergence_delta: float

    @property
    def by_channel(self) -> torch.Tensor:
        return self.by_location.sum(dim=(1, 2))

    def top_channels(self, k: int = 5) -> list[int]:
        return self.by_channel.abs().argsort(descending=True)[:k].tolist()


def attribute_channels(
    model: Any,
    contexts: Contexts,
    target: Metric,
    *,
    layer: int = 2,
    baseline: BaselineName = "black",
    n_steps: int = 50,
    mean_frame: torch.Tensor | None = None,
) -> ChannelAttribution:
    """Layer IG at ``encoder.hook_conv{layer}`` of the stack of the target's window step (a
    ``Target``'s or ``HookTarget``'s step; the newest for a callable on the logits). Only that
    stack goes through the CNN (the fast path), so the layer's batch is the input's batch, as
    Captum needs.

    Raises:
        ValueError: the encoder has no such conv hook, or a batch of more than one context.
    """
    model = eval_model(model)
    hook = getattr(model.encoder, f"hook_conv{layer}", None)
    if hook is None:
        raise UserError(
            f"the encoder has no hook_conv{layer} (layers 0..{model.encoder.n_conv_hooks - 1})"
        )
    step = contexts.step_index(metric_step(target))
    forward = FastForward(model, contexts, target, [step])
    inputs = contexts.frames.float()[:, [step]]
    baselines = make_baseline(baseline, inputs, mean_frame=mean_frame)
    ig = integrated_gradients(forward, inputs, baselines, n_steps=n_steps, layer=hook)
    return ChannelAttribution(layer, step, ig.attributions[0].cpu(), ig.convergence_delta)
