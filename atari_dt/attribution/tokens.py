"""Token-level attribution: how much of the target comes from the RTG, state and action token
of each step, and how much from the scalar RTG inputs themselves."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from atari_dt.attribution.core import (
    ContextWindow,
    Target,
    check_target,
    eval_model,
    warn_if_unconverged,
)


@dataclass(frozen=True)
class TokenAttribution:
    """Integrated gradients over the token embeddings (baseline: all-zero embeddings).

    ``by_token`` float ``[3, T]``: rows RTG, state, action tokens (RTG row zero for behaviour
    cloning); summed over ``d_model``. Completeness: ``by_token.sum()`` equals
    ``target_value - baseline_value + convergence_delta``.
    """

    target: Target
    by_token: torch.Tensor
    target_value: float
    baseline_value: float
    convergence_delta: float
    rtg_inputs: torch.Tensor | None
    """IG on the scalar RTG inputs ``[T]`` (baseline RTG 0), or None without RTG tokens."""
    rtg_delta: float | None


def attribute_tokens(
    model: Any, window: ContextWindow, target: Target, *, n_steps: int = 50,
    state_embeddings: torch.Tensor | None = None,
) -> TokenAttribution:  # fmt: skip
    """IG with the three token embeddings as inputs (fed through ``hook_rtg_embed``,
    ``hook_state_embed``, ``hook_action_embed``), and IG on the RTG values."""
    from captum.attr import IntegratedGradients

    model = eval_model(model)
    check_target(model, window, target)
    with torch.no_grad():
        states = model.embed_states(window.frames) if state_embeddings is None else state_embeddings
        _, cache = model.run_with_cache_from_states(
            states, *window.rest(), names_filter=lambda n: n in _EMBEDS
        )
    bc = model.cfg.behaviour_cloning
    names = [n for n in _EMBEDS if not (bc and n == "hook_rtg_embed")]
    inputs = tuple(cache[n] for n in names)
    forward = _EmbeddingForward(model, window, target, names, states)
    ig = IntegratedGradients(forward)
    baselines = tuple(torch.zeros_like(x) for x in inputs)
    result, delta = ig.attribute(inputs, baselines, n_steps=n_steps, return_convergence_delta=True)
    by_token = torch.zeros(3, window.length)
    for name, values in zip(names, result, strict=True):
        by_token[_EMBEDS.index(name)] = values[0].sum(-1).detach()
    with torch.no_grad():
        at_input, at_base = float(forward(*inputs)[0]), float(forward(*baselines)[0])
    warn_if_unconverged(float(delta[0]), at_input - at_base, n_steps)
    rtg_inputs, rtg_delta = None, None
    if not bc:
        rtg_inputs, rtg_delta = _rtg_inputs(model, window, target, states, n_steps)
    return TokenAttribution(target, by_token, at_input, at_base, float(delta[0]), rtg_inputs,
                            rtg_delta)  # fmt: skip


_EMBEDS = ("hook_rtg_embed", "hook_state_embed", "hook_action_embed")


class _EmbeddingForward:
    """``f(*token embeddings [n, T, d])``: the transformer with those embeddings in place."""

    def __init__(self, model: Any, window: ContextWindow, target: Target, names: list[str],
                 states: torch.Tensor) -> None:  # fmt: skip
        self.model, self.window, self.target, self.names, self.states = (
            model,
            window,
            target,
            names,
            states,
        )

    def __call__(self, *embeddings: torch.Tensor) -> torch.Tensor:
        n = embeddings[0].shape[0]
        replace = [(name, _replacer(value)) for name, value in zip(self.names, embeddings,
                                                                    strict=True)]  # fmt: skip
        with self.model.hooks(fwd_hooks=replace):
            logits = self.model.forward_from_state_embeddings(
                self.states.expand(n, -1, -1), *self.window.rest(n)
            )
        return self.target(logits)


def _replacer(value: torch.Tensor) -> Any:
    return lambda activation, hook: value


def _rtg_inputs(
    model: Any, window: ContextWindow, target: Target, states: torch.Tensor, n_steps: int
) -> tuple[torch.Tensor, float]:
    from captum.attr import IntegratedGradients

    actions, _, timesteps, mask = window.rest()

    def forward(rtg: torch.Tensor) -> torch.Tensor:
        n = rtg.shape[0]
        logits = model.forward_from_state_embeddings(
            states.expand(n, -1, -1), actions.expand(n, -1), rtg, timesteps.expand(n, -1),
            mask.expand(n, -1),
        )  # fmt: skip
        return target(logits)

    rtg = window.rtg.float()
    result, delta = IntegratedGradients(forward).attribute(
        rtg, torch.zeros_like(rtg), n_steps=n_steps, return_convergence_delta=True
    )
    return result[0].detach(), float(delta[0])
