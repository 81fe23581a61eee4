"""Pixel attribution: which pixels of which frame stacks moved the target.

One call shape for every method: ``attribute_pixels(model, contexts, target, method=...,
baseline=..., steps=...)`` returns a ``PixelAttribution`` whose ``attributions`` has the shape
of the attributed frames, ``[k, S, H, W]`` for the ``k`` attributed window steps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float

from atari_dt.attribution.baselines import BaselineName, make_baseline
from atari_dt.attribution.core import (
    FastForward,
    FullForward,
    Metric,
    eval_model,
    integrated_gradients,
    metric_step,
)
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError

Method = Literal[
    "ig", "smoothgrad", "gradient_shap", "occlusion", "ablation_frames", "ablation_superpixels"
]
METHODS: tuple[str, ...] = get_args(Method)


@dataclass(frozen=True)
class PixelAttribution:
    """Attributions of ``target`` to the pixels of window ``steps``.

    ``attributions`` float ``[k, S, H, W]`` (k = len(steps)), signed, in target units: for IG
    they sum to ``target_value - baseline_value + convergence_delta`` (Captum's delta).
    """

    method: str
    baseline: str
    target: Metric
    steps: list[int]
    attributions: Float[torch.Tensor, "k S H W"]
    target_value: float
    baseline_value: float
    convergence_delta: float | None
    window_len: int
    """T of the explained context (window steps are ``0..T-1``)."""

    @property
    def attribution_sum(self) -> float:
        return float(self.attributions.sum())

    def map(self, step: int | None = None) -> Float[torch.Tensor, "H W"]:
        """``[H, W]``: summed over the frame stack (and over steps, or of one window step).

        Raises:
            KeyError: ``step`` was not attributed (the message lists those that were).
        """
        if step is None:
            return self.attributions.sum(dim=(0, 1))
        return self.stack(step).sum(dim=0)

    def stack(self, step: int) -> Float[torch.Tensor, "S H W"]:
        """The attributions ``[S, H, W]`` of window step ``step``'s frame stack (``-1``: the
        newest step of the window, when it was attributed).

        Raises:
            KeyError: ``step`` was not attributed (the message lists those that were).
        """
        if step < 0:
            step += self.window_len
        if step not in self.steps:
            raise KeyError(f"window step {step} was not attributed (attributed: {self.steps})")
        return self.attributions[self.steps.index(step)]

    @property
    def newest(self) -> Float[torch.Tensor, "S H W"] | None:
        """The newest window step's stack attributions, or None when it was not attributed."""
        return self.stack(-1) if self.window_len - 1 in self.steps else None


def attribute_pixels(
    model: Any,
    contexts: Contexts,
    target: Metric,
    *,
    method: Method = "ig",
    baseline: BaselineName = "black",
    steps: list[int] | None = None,
    n_steps: int = 50,
    internal_batch_size: int | None = 16,
    fast: bool = True,
    mean_frame: torch.Tensor | None = None,
    n_samples: int = 16,
    noise_std: float = 0.1,
    seed: int = 0,
) -> PixelAttribution:
    """Attribute ``target`` to the pixels of the frame stacks at window ``steps`` (default:
    the target's own step; the last step for a callable on the logits) of one context.

    Args:
        contexts: a batch of one (``run.contexts(episode, step)``, or ``contexts[i]``); its
            ``state_embeddings``, when present, spare the fast path encoding the window again.
        target: a ``Target``, a ``HookTarget`` (a scalar read at a hook, e.g.
            ``head_logit_target``), or any ``logits [n, T, A] -> [n]``.
        method: ``ig`` (integrated gradients), ``smoothgrad`` (NoiseTunnel over gradients,
            ``n_samples`` noisy copies, noise std ``noise_std`` x 255), ``gradient_shap``
            (``n_samples`` draws between the input and the baseline), ``occlusion`` (8x8
            patches, stride 4, replaced by the baseline: with ``blur``, the perturbation of
            Greydanus et al. 2018), ``ablation_frames`` (each stacked frame replaced whole by the
            baseline), ``ablation_superpixels`` (7x7 grid of 12x12 superpixels per frame).
        baseline: ``black``, ``blur``, ``mean`` (needs ``mean_frame``) or ``noise``.
        n_steps, internal_batch_size: IG's integration points and the batch they run in.
        fast: run the CNN only on the attributed stacks (True) or the whole model on every
            frame (False, plain Captum); the results agree to float rounding.

    Raises:
        ValueError: unknown method or baseline, a batch of more than one context;
        IndexError: a step outside the window.
    """
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; valid: {', '.join(METHODS)}")
    model = eval_model(model)
    steps = sorted({contexts.step_index(s) for s in (steps or [metric_step(target)])})
    frames = contexts.frames.float()  # [1, T, S, H, W]
    base_all = make_baseline(baseline, frames, mean_frame=mean_frame, seed=seed)
    if fast:
        forward: Any = FastForward(model, contexts, target, steps)
        inputs, base = frames[:, steps], base_all[:, steps]
    else:  # the whole window is the input; only the attributed steps leave the input
        forward = FullForward(model, contexts, target)
        inputs, base = frames, frames.clone()
        base[:, steps] = base_all[:, steps]
    delta = None
    if method == "ig":
        ig = integrated_gradients(
            forward, inputs, base, n_steps=n_steps, internal_batch_size=internal_batch_size
        )
        result, delta = ig.attributions, ig.convergence_delta
        at_input, at_baseline = ig.at_input, ig.at_baseline
    else:
        with torch.no_grad():
            at_input, at_baseline = float(forward(inputs)[0]), float(forward(base)[0])
    if method in ("smoothgrad", "gradient_shap"):
        with torch.random.fork_rng():  # their random draws follow `seed`, nothing else's
            torch.manual_seed(seed)
            result, delta = _sampled(method, forward, inputs, base, n_samples, noise_std)
    elif method != "ig":
        result = _perturbation(method, forward, inputs, base)
    if not fast:
        result = result[:, steps]
    return PixelAttribution(
        method,
        baseline,
        target,
        steps,
        result[0].detach().cpu(),
        at_input,
        at_baseline,
        delta,
        contexts.length,
    )


def _sampled(
    method: str,
    forward: Any,
    inputs: torch.Tensor,
    base: torch.Tensor,
    n_samples: int,
    noise_std: float,
) -> tuple[torch.Tensor, float | None]:
    from captum import attr

    if method == "smoothgrad":
        tunnel = attr.NoiseTunnel(attr.Saliency(forward))
        return tunnel.attribute(
            inputs, nt_type="smoothgrad", nt_samples=n_samples, stdevs=noise_std * 255, abs=False
        ), None
    # Expected gradients between the input and the one baseline (its f is baseline_value).
    shap = attr.GradientShap(forward)
    result, delta = shap.attribute(inputs, base, n_samples=n_samples, return_convergence_delta=True)
    return result, float(delta.mean())


def _perturbation(method: str, forward: Any, inputs: torch.Tensor, base: torch.Tensor) -> Any:
    from captum import attr

    if method == "occlusion":
        window = (1, 1, 8, 8) if inputs.ndim == 5 else (1, 8, 8)
        strides = (1, 1, 4, 4) if inputs.ndim == 5 else (1, 4, 4)
        return attr.Occlusion(forward).attribute(
            inputs,
            sliding_window_shapes=window,
            strides=strides,
            baselines=base,
            perturbations_per_eval=16,
        )
    ablation = attr.FeatureAblation(forward)
    return ablation.attribute(
        inputs,
        baselines=base,
        feature_mask=_feature_mask(method, inputs),
        perturbations_per_eval=16,
    )


def _feature_mask(method: str, inputs: torch.Tensor) -> torch.Tensor:
    """Integer ids ``[1, k, S, H, W]``: one per stacked frame, or per 12x12 superpixel of each."""
    _, k, S, H, W = inputs.shape
    frame_id = torch.arange(k * S).view(1, k, S, 1, 1)
    if method == "ablation_frames":
        return frame_id.expand(1, k, S, H, W).contiguous()
    cell = (torch.arange(H) // 12)[:, None] * ((W + 11) // 12) + (torch.arange(W) // 12)[None]
    return (frame_id * cell.numel() + cell.view(1, 1, 1, H, W)).contiguous()
