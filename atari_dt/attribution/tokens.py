"""Token-level attribution: how much of the target comes from the RTG, state and action token
of each step, and how much from the scalar RTG inputs themselves."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from jaxtyping import Float

from atari_dt.attribution.core import (
    Metric,
    check_target,
    eval_model,
    integrated_gradients,
    measure,
)
from atari_dt.datasets.contexts import Contexts

_EMBEDS = ("hook_rtg_embed", "hook_state_embed", "hook_action_embed")


@dataclass(frozen=True)
class TokenAttribution:
    """Integrated gradients over the token embeddings (baseline: all-zero embeddings), summed
    over ``d_model``: ``rtg``, ``state``, ``action`` float ``[T]``, one per window step (``rtg``
    zero for behaviour cloning). Completeness: ``rtg + state + action`` sums to
    ``target_value - baseline_value + convergence_delta``."""

    target: Metric
    rtg: Float[torch.Tensor, " T"]
    state: Float[torch.Tensor, " T"]
    action: Float[torch.Tensor, " T"]
    target_value: float
    baseline_value: float
    convergence_delta: float
    rtg_inputs: Float[torch.Tensor, " T"] | None
    """IG on the scalar RTG inputs ``[T]`` (baseline RTG 0), or None without RTG tokens."""
    rtg_delta: float | None

    @property
    def by_token(self) -> Float[torch.Tensor, "3 T"]:
        """``[3, T]``: rows ``rtg``, ``state``, ``action``."""
        return torch.stack([self.rtg, self.state, self.action])


def attribute_tokens(
    model: Any, contexts: Contexts, target: Metric, *, n_steps: int = 50
) -> TokenAttribution:
    """IG with the three token embeddings of one context as inputs (fed through
    ``hook_rtg_embed``, ``hook_state_embed``, ``hook_action_embed``), and IG on its RTG values.
    The context's state embeddings are used when present (else computed once).

    Args:
        target: a ``Target``, a ``HookTarget`` (e.g. ``head_logit_target``), or any
            ``logits [n, T, A] -> [n]``.

    Raises:
        ValueError: a batch of more than one context, a target action the model lacks, or a
            hook target the model cannot give.
    """
    model = eval_model(model)
    check_target(model, contexts, target)
    contexts = contexts.encoded(model)
    with torch.no_grad():
        _, cache = model.run_with_cache(contexts, names_filter=lambda n: n in _EMBEDS)
    bc = model.cfg.behaviour_cloning
    names = [n for n in _EMBEDS if not (bc and n == "hook_rtg_embed")]
    inputs = tuple(cache[n] for n in names)
    forward = _EmbeddingForward(model, contexts, target, names)
    ig = integrated_gradients(
        forward, inputs, tuple(torch.zeros_like(x) for x in inputs), n_steps=n_steps
    )
    rows = {n: v[0].sum(-1).cpu() for n, v in zip(names, ig.attributions, strict=True)}
    zeros = torch.zeros(contexts.length)
    rtg_inputs, rtg_delta = None, None
    if not bc:
        rtg_ig = integrated_gradients(
            _RtgForward(model, contexts, target),
            contexts.rtg.float(),
            torch.zeros_like(contexts.rtg.float()),
            n_steps=n_steps,
        )
        rtg_inputs, rtg_delta = rtg_ig.attributions[0].cpu(), rtg_ig.convergence_delta
    return TokenAttribution(
        target,
        rows.get("hook_rtg_embed", zeros),
        rows["hook_state_embed"],
        rows["hook_action_embed"],
        ig.at_input,
        ig.at_baseline,
        ig.convergence_delta,
        rtg_inputs,
        rtg_delta,
    )


class _EmbeddingForward:
    """``f(*token embeddings [n, T, d])``: the transformer with those embeddings in place."""

    def __init__(self, model: Any, contexts: Contexts, target: Metric, names: list[str]) -> None:
        self.model, self.contexts, self.target, self.names = model, contexts, target, names

    def __call__(self, *embeddings: torch.Tensor) -> torch.Tensor:
        replace = [
            (name, _replacer(value)) for name, value in zip(self.names, embeddings, strict=True)
        ]
        contexts = self.contexts.repeat(embeddings[0].shape[0])
        with self.model.hooks(fwd_hooks=replace):
            return measure(self.model, self.target, partial(self.model, contexts))


class _RtgForward:
    """``f(rtg [n, T])``: the model with those RTG inputs."""

    def __init__(self, model: Any, contexts: Contexts, target: Metric) -> None:
        self.model, self.contexts, self.target = model, contexts, target

    def __call__(self, rtg: torch.Tensor) -> torch.Tensor:
        rest = self.contexts.repeat(rtg.shape[0]).with_rtg(rtg)
        return measure(self.model, self.target, partial(self.model, rest))


def _replacer(value: torch.Tensor) -> Any:
    return lambda activation, hook: value
