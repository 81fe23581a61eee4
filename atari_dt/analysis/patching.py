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


def _runs(model, clean: Inputs, corrupted: Inputs, direction: Direction):
    for name, run in (("clean", clean), ("corrupted", corrupted)):
        if run[0].shape[0] != 1:
            raise ValueError(f"patching takes one context: the {name} inputs have a batch of "
                             f"{run[0].shape[0]}; pass [1, T, ...] tensors")  # fmt: skip
    source, target = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    with torch.no_grad():
        _, cache = model.run_with_cache(*source)
    return cache, target


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
def patch_residual(model, clean: Inputs, corrupted: Inputs, action: int, other_action: int,
                   *, direction: Direction = "denoising") -> PatchingResult:  # fmt: skip
    """Patch ``blocks.{l}.hook_resid_pre`` at one position at a time: ``[n_layers, P]``."""
    metric = _metric(action, other_action)
    cache, target = _runs(model, clean, corrupted, direction)
    clean_m, corrupted_m = float(metric(model(*clean))[0]), float(metric(model(*corrupted))[0])
    P = cache["hook_embed"].shape[1]
    batch = tuple(t.expand(P, *t.shape[1:]) for t in target)  # one variant per position
    out = torch.zeros(model.cfg.n_layers, P)
    for layer in range(model.cfg.n_layers):
        source = cache[f"blocks.{layer}.hook_resid_pre"]

        def patch(activation, hook, source=source):
            patched = activation.clone()
            index = torch.arange(P)
            patched[index, index] = source[0, index]
            return patched

        with model.hooks(fwd_hooks=[(f"blocks.{layer}.hook_resid_pre", patch)]):
            out[layer] = metric(model(*batch))
    labels = [f"{layer}_resid_pre" for layer in range(model.cfg.n_layers)]
    restored = _restored(out, clean_m, corrupted_m, direction)
    return PatchingResult(restored, direction, clean_m, corrupted_m, labels)


@torch.no_grad()
def patch_heads(
    model, clean: Inputs, corrupted: Inputs, action: int, other_action: int, *,
    direction: Direction = "denoising", what: Literal["z", "pattern"] = "z",
) -> PatchingResult:  # fmt: skip
    """Patch each head's output (``hook_z``) or attention pattern (``hook_pattern``) at every
    position: ``[n_layers, n_heads]``."""
    metric = _metric(action, other_action)
    cache, target = _runs(model, clean, corrupted, direction)
    clean_m, corrupted_m = float(metric(model(*clean))[0]), float(metric(model(*corrupted))[0])
    H = model.cfg.n_heads
    batch = tuple(t.expand(H, *t.shape[1:]) for t in target)  # one variant per head
    out = torch.zeros(model.cfg.n_layers, H)
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_{what}"
        source = cache[name]

        def patch(activation, hook, source=source):
            patched = activation.clone()
            heads = torch.arange(H)
            if what == "z":  # [B, P, H, e]
                patched[heads, :, heads] = source[0, :, heads].transpose(0, 1)
            else:  # [B, H, P, P]
                patched[heads, heads] = source[0, heads]
            return patched

        with model.hooks(fwd_hooks=[(name, patch)]):
            out[layer] = metric(model(*batch))
    labels = [f"L{layer}H{h}" for layer in range(model.cfg.n_layers) for h in range(H)]
    return PatchingResult(_restored(out, clean_m, corrupted_m, direction), direction, clean_m,
                          corrupted_m, labels)  # fmt: skip


@torch.no_grad()
def run_patched(
    model, inputs: Inputs, source: dict[str, torch.Tensor], names: list[str]
) -> torch.Tensor:
    """Logits of ``inputs`` with the whole activation at each hook in ``names`` replaced by
    ``source[name]`` (e.g. another run's cache)."""
    hooks = [(name, lambda activation, hook: source[hook.name]) for name in names]
    with model.hooks(fwd_hooks=hooks):
        return model(*inputs)
