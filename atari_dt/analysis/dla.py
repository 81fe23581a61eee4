"""Direct logit attribution and the logit lens, from a TransformerLens cache."""

from __future__ import annotations

import torch
from transformer_lens import ActivationCache


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
        parts += [model.blocks[layer].attn.b_O.expand_as(cache["hook_embed"]),
                  cache[f"blocks.{layer}.hook_mlp_out"]]  # fmt: skip
        labels += [f"{layer}_b_O", f"{layer}_mlp_out"]
    return torch.stack(parts), labels


def direct_logit_attribution(
    model, cache: ActivationCache, action: int, *, step: int = -1, other_action: int | None = None
) -> tuple[torch.Tensor, list[str]]:
    """Each component's direct contribution to the logit of ``action`` (minus that of
    ``other_action`` when given) at window ``step``'s state token, with the final LayerNorm's
    cached scale: ``[n + 1, B]``, the last entry ``ln_final.b + b_U`` (label ``bias``). The
    entries sum to the logit (difference) the model outputs."""
    components, labels = residual_components(model, cache)
    k, offset = model.cfg.tokens_per_step, model.cfg.state_token_offset
    T = components.shape[2] // k
    position = k * (step % T) + offset
    scaled = cache.apply_ln_to_stack(components, layer=-1)[:, :, position]  # [n, B, d]
    direction = model.W_U[:, action]
    bias = model.ln_final.b @ model.W_U[:, action] + model.b_U[action]
    if other_action is not None:
        direction = direction - model.W_U[:, other_action]
        bias = bias - model.ln_final.b @ model.W_U[:, other_action] - model.b_U[other_action]
    per_component = (scaled * model.ln_final.w) @ direction  # [n, B]
    bias_row = bias.expand(1, per_component.shape[1])
    return torch.cat([per_component, bias_row]).detach(), [*labels, "bias"]


def logit_lens(model, cache: ActivationCache, *, step: int = -1) -> tuple[torch.Tensor, list[str]]:
    """Action distributions read from the residual stream after each layer (through the final
    LayerNorm, recomputed per layer, and the unembedding): ``[n_layers + 1, B, n_actions]``
    probabilities at window ``step``'s state token; the last row is the model's output."""
    accumulated, labels = cache.accumulated_resid(apply_ln=True, return_labels=True)
    k, offset = model.cfg.tokens_per_step, model.cfg.state_token_offset
    T = accumulated.shape[2] // k
    at_state = accumulated[:, :, k * (step % T) + offset]  # [L + 1, B, d]
    return torch.softmax(model.action_logits_at(at_state), dim=-1).detach(), labels


@torch.no_grad()
def dla_along_scan(
    model, batch: dict[str, torch.Tensor], rtg_grid, action: int, *, mode: str = "constant"
) -> tuple[torch.Tensor, list[str]]:
    """Direct logit attribution of ``action`` at the last step, averaged over the contexts,
    at each grid RTG: ``[G, n_components + 1]`` (components as ``direct_logit_attribution``)."""
    from atari_dt.analysis.batch import encoded, run_cached
    from atari_dt.analysis.scan import scanned_rtg

    batch = encoded(model, batch)
    rows, labels = [], []
    for value in rtg_grid:
        rtg = scanned_rtg(batch, float(value), mode)  # type: ignore[arg-type]
        _, cache = run_cached(model, batch, rtg)
        values, labels = direct_logit_attribution(model, cache, action)
        rows.append(values.mean(1))
    return torch.stack(rows), labels


@torch.no_grad()
def residual_by_layer(model, batch: dict[str, torch.Tensor], *, step: int = -1) -> torch.Tensor:
    """The residual stream at window ``step``'s state token before each layer and after the
    last: ``[n_layers + 1, N, d]`` (probe features)."""
    from atari_dt.analysis.batch import run_cached

    _, cache = run_cached(model, batch, names_filter=lambda n: "resid" in n)
    accumulated = cache.accumulated_resid()
    k, offset = model.cfg.tokens_per_step, model.cfg.state_token_offset
    T = accumulated.shape[2] // k
    return accumulated[:, :, k * (step % T) + offset]
