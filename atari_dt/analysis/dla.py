"""Direct logit attribution and the logit lens, from a TransformerLens cache."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from transformer_lens import ActivationCache

from atari_dt.analysis.scan import check_grid, scanned_rtg
from atari_dt.attribution.core import Target
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


def residual_components(model, cache: ActivationCache) -> tuple[torch.Tensor, list[str]]:
    """Every additive piece of the final residual stream, ``[n, B, P, d]``: ``embed``,
    ``pos_embed``, each head ``L{l}H{h}``, each layer's attention bias ``{l}_b_O`` and MLP
    ``{l}_mlp_out``. They sum to ``blocks.{L-1}.hook_resid_post``."""
    parts = [cache["hook_embed"], cache["hook_pos_embed"]]
    labels = ["embed", "pos_embed"]
    heads, head_labels = cache.stack_head_results(layer=-1, return_labels=True)
    parts.extend(heads)
    labels += head_labels
    for layer in range(model.cfg.n_layers):
        parts += [
            model.blocks[layer].attn.b_O.expand_as(cache["hook_embed"]),
            cache[f"blocks.{layer}.hook_mlp_out"],
        ]
        labels += [f"{layer}_b_O", f"{layer}_mlp_out"]
    return torch.stack(parts), labels


@dataclass(frozen=True)
class LogitAttribution:
    """Each residual component's direct contribution to ``target`` (a logit, or a logit
    difference) through the final LayerNorm's cached scale: ``values`` ``[n + 1, B]`` with
    ``labels`` (``embed``, ``pos_embed``, ``L{l}H{h}``..., ``{l}_b_O``, ``{l}_mlp_out``, and
    last ``bias`` = ``ln_final.b`` and ``b_U``). The entries sum to the model's output."""

    target: Target
    values: Float[torch.Tensor, "n B"]
    labels: list[str]
    n_layers: int
    n_heads: int

    def __getitem__(self, label: str) -> Float[torch.Tensor, " B"]:
        """One component's values ``[B]`` by label (``"L1H0"``, ``"0_mlp_out"``, ``"bias"``)."""
        if label not in self.labels:
            raise KeyError(f"no component {label!r}; components: {', '.join(self.labels)}")
        return self.values[self.labels.index(label)]

    @property
    def heads(self) -> Float[torch.Tensor, "L H B"]:
        """The heads' values as ``[n_layers, n_heads, B]``."""
        rows = [
            self.labels.index(f"L{l}H{h}")
            for l in range(self.n_layers)  # noqa: E741
            for h in range(self.n_heads)
        ]
        return self.values[rows].view(self.n_layers, self.n_heads, -1)

    def largest(self, k: int = 5, context: int = 0) -> list[tuple[str, float]]:
        """The ``k`` components of largest magnitude in ``context``, with their values."""
        column = self.values[:, context]
        order = sorted(range(len(self.labels)), key=lambda i: -abs(float(column[i])))[:k]
        return [(self.labels[i], float(column[i])) for i in order]


def direct_logit_attribution(
    model, cache: ActivationCache, target: Target | int
) -> LogitAttribution:
    """Direct logit attribution of ``target`` (an action's ``logit`` or a ``logit_diff``, at
    the target's window step) from a cache of ``run_with_cache``.

    Raises:
        UserError: a ``log_prob`` target (not linear in the residual stream).
    """
    target = Target(action=target) if isinstance(target, int) else target
    if target.kind == "log_prob":
        raise UserError(
            "direct logit attribution needs a logit or logit_diff target, not "
            "log_prob (the softmax is not linear in the residual stream)"
        )
    components, labels = residual_components(model, cache)
    T = components.shape[2] // model.cfg.tokens_per_step
    scaled = cache.apply_ln_to_stack(components, layer=-1)
    scaled = scaled[:, :, model.cfg.token_index(target.step, T)]  # [n, B, d]
    direction = model.W_U[:, target.action]
    bias = model.ln_final.b @ model.W_U[:, target.action] + model.b_U[target.action]
    if target.other_action is not None:
        other = target.other_action
        direction = direction - model.W_U[:, other]
        bias = bias - model.ln_final.b @ model.W_U[:, other] - model.b_U[other]
    per_component = (scaled * model.ln_final.w) @ direction  # [n, B]
    bias_row = bias.expand(1, per_component.shape[1])
    values = torch.cat([per_component, bias_row]).detach().cpu()
    return LogitAttribution(
        target, values, [*labels, "bias"], model.cfg.n_layers, model.cfg.n_heads
    )


@dataclass(frozen=True)
class LogitLens:
    """Action probabilities ``probs`` ``[n_layers + 1, B, n_actions]`` read from the residual
    stream before each layer and after the last (``labels``), at window ``step``'s state
    token; the last row is the model's output."""

    probs: Float[torch.Tensor, "L1 B A"]
    labels: list[str]
    step: int


def logit_lens(model, cache: ActivationCache, *, step: int = -1) -> LogitLens:
    """The logit lens (through the final LayerNorm, recomputed per layer, and the unembedding)
    at window ``step``'s state token."""
    accumulated, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    T = accumulated.shape[2] // model.cfg.tokens_per_step
    at_state = accumulated[:, :, model.cfg.token_index(step, T)]  # [L + 1, B, d]
    probs = torch.softmax(model.action_logits_at(at_state), dim=-1).detach().cpu()
    return LogitLens(probs, labels, step)


@dataclass(frozen=True)
class ScanAttribution:
    """Direct logit attribution of ``target`` at the last step, averaged over the contexts, at
    each grid RTG: ``values`` ``[G, n + 1]`` (components ``labels`` as
    ``LogitAttribution``), ``rtg`` ``[G]``."""

    target: Target
    rtg: np.ndarray
    values: Float[torch.Tensor, "G n"]
    labels: list[str]


@torch.no_grad()
def dla_along_scan(
    model, contexts: Contexts, rtg_grid, target: Target | int, *, mode: str = "constant"
) -> ScanAttribution:
    """``direct_logit_attribution`` of ``target``, mean over the contexts, at each grid RTG
    (``mode`` as ``rtg_scan``); the frames are encoded once."""
    target = Target(action=target) if isinstance(target, int) else target
    grid = check_grid(rtg_grid)
    contexts = contexts.encoded(model)
    rows, labels = [], []
    for value in grid:
        rtg = scanned_rtg(contexts, float(value), mode)  # type: ignore[arg-type]
        _, cache = model.run_with_cache(contexts.with_rtg(rtg))
        attribution = direct_logit_attribution(model, cache, target)
        rows.append(attribution.values.mean(1))
        labels = attribution.labels
    return ScanAttribution(target, grid, torch.stack(rows), labels)


@torch.no_grad()
def residual_by_layer(
    model, contexts: Contexts, *, step: int = -1, cache: ActivationCache | None = None
) -> Float[torch.Tensor, "L1 N d"]:
    """The residual stream at window ``step``'s state token before each layer and after the
    last: ``[n_layers + 1, N, d]`` (probe features). ``cache``: a cache of these contexts with
    the residual streams (else one run, the frames encoded once)."""
    if cache is None:
        names = lambda n: "resid" in n  # noqa: E731
        _, cache = model.run_with_cache(contexts.encoded(model), names_filter=names)
    accumulated = cache.accumulated_resid()
    T = accumulated.shape[2] // model.cfg.tokens_per_step
    return accumulated[:, :, model.cfg.token_index(step, T)]
