"""Activation patching between two runs of one context that differ in one input (the RTG in vs
out of distribution, or one frame). The metric is ``(patched - corrupted) / (clean - corrupted)``
of a logit difference: denoising (clean activations into the corrupted run) reads 0 for no
effect and 1 for full restoration; noising (corrupted activations into the clean run) reads 1
for no effect and 0 when the patch destroys the clean behaviour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch

Inputs = tuple[torch.Tensor, ...]  # (frames, actions, rtg, timesteps, mask), batch of one
Direction = Literal["denoising", "noising"]


@dataclass(frozen=True)
class PatchingResult:
    """``restored`` ``[...]`` (layer x position, or layer x head): the fraction of the logit
    difference (``action`` minus ``other_action`` at the last step) the patch restores, in
    ``direction`` (denoising: clean activations into the corrupted run; noising: corrupted
    activations into the clean run, where 1 - restored is what the patch destroys)."""

    restored: torch.Tensor
    direction: str
    clean_metric: float
    corrupted_metric: float
    labels: list[str]


def _metric(action: int, other: int) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda logits: logits[:, -1, action] - logits[:, -1, other]


def _restored(
    values: torch.Tensor, clean: float, corrupted: float, direction: Direction
) -> torch.Tensor:
    span = clean - corrupted
    if abs(span) < 1e-9:
        raise ValueError(
            "the clean and corrupted runs give the same logit difference; nothing to restore"
        )
    return (values - corrupted) / span


@torch.no_grad()
def _sweep(
    model, clean: Inputs, corrupted: Inputs, action: int, other_action: int,
    direction: Direction, names: list[str], variants: int, patch: Callable,
) -> tuple[torch.Tensor, float, float]:  # fmt: skip
    """Patch hook ``names[l]`` of the run being patched with the other run's activation, in
    ``variants`` copies at once (``patch(activation, source)`` patches variant i its own way):
    ``[len(names), variants]`` of the metric, and the clean and corrupted metrics. Each run's
    frames go through the CNN once."""
    for label, inputs in (("clean", clean), ("corrupted", corrupted)):
        if inputs[0].shape[0] != 1:
            raise ValueError(f"patching takes one context: the {label} inputs have a batch of "
                             f"{inputs[0].shape[0]}; pass [1, T, ...] tensors")  # fmt: skip
    metric = _metric(action, other_action)
    source, target = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    source_logits, cache = model.run_with_cache_from_states(
        model.embed_states(source[0]), *source[1:], names_filter=names
    )
    states = model.embed_states(target[0])
    target_metric = float(metric(model.forward_from_state_embeddings(states, *target[1:]))[0])
    source_metric = float(metric(source_logits)[0])
    clean_m, corrupted_m = (
        (source_metric, target_metric)
        if direction == "denoising"
        else (target_metric, source_metric)
    )
    copies = [t.expand(variants, *t.shape[1:]) for t in (states, *target[1:])]
    out = torch.zeros(len(names), variants)
    for row, name in enumerate(names):
        hook = (name, lambda activation, hook, source=cache[name]: patch(activation, source))
        with model.hooks(fwd_hooks=[hook]):
            out[row] = metric(model.forward_from_state_embeddings(*copies))
    return _restored(out, clean_m, corrupted_m, direction), clean_m, corrupted_m


def patch_residual(model, clean: Inputs, corrupted: Inputs, action: int, other_action: int,
                   *, direction: Direction = "denoising") -> PatchingResult:  # fmt: skip
    """Patch ``blocks.{l}.hook_resid_pre`` at one position at a time: ``[n_layers, P]``."""
    P = clean[1].shape[1] * model.cfg.tokens_per_step

    def one_position_each(activation: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        patched, index = activation.clone(), torch.arange(P)
        patched[index, index] = source[0, index]  # variant p gets position p
        return patched

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    restored, clean_m, corrupted_m = _sweep(model, clean, corrupted, action, other_action,
                                            direction, names, P, one_position_each)  # fmt: skip
    labels = [f"{layer}_resid_pre" for layer in range(model.cfg.n_layers)]
    return PatchingResult(restored, direction, clean_m, corrupted_m, labels)


def patch_heads(
    model, clean: Inputs, corrupted: Inputs, action: int, other_action: int, *,
    direction: Direction = "denoising", what: Literal["z", "pattern"] = "z",
) -> PatchingResult:  # fmt: skip
    """Patch each head's output (``hook_z``) or attention pattern (``hook_pattern``) at every
    position: ``[n_layers, n_heads]``."""
    H = model.cfg.n_heads
    heads = torch.arange(H)

    def one_head_each(activation: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        patched = activation.clone()  # variant h gets head h
        if what == "z":  # [B, P, H, e]
            patched[heads, :, heads] = source[0, :, heads].transpose(0, 1)
        else:  # [B, H, P, P]
            patched[heads, heads] = source[0, heads]
        return patched

    names = [f"blocks.{layer}.attn.hook_{what}" for layer in range(model.cfg.n_layers)]
    restored, clean_m, corrupted_m = _sweep(model, clean, corrupted, action, other_action,
                                            direction, names, H, one_head_each)  # fmt: skip
    labels = [f"L{layer}H{h}" for layer in range(model.cfg.n_layers) for h in range(H)]
    return PatchingResult(restored, direction, clean_m, corrupted_m, labels)


@torch.no_grad()
def run_patched(
    model, inputs: Inputs, source: dict[str, torch.Tensor], names: list[str]
) -> torch.Tensor:
    """Logits of ``inputs`` with the whole activation at each hook in ``names`` replaced by
    ``source[name]`` (e.g. another run's cache)."""
    hooks = [(name, lambda activation, hook: source[hook.name]) for name in names]
    with model.hooks(fwd_hooks=hooks):
        return model(*inputs)
