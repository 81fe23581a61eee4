"""Activation patching between two runs of one context that differ in one input (the RTG in vs
out of distribution, or one frame), as TransformerLens's ``generic_activation_patch``: the
caller brings the metric (a ``Target``, e.g. a logit difference; a ``HookTarget`` read inside
the model; or any ``logits -> [n]``). The result is ``(patched - corrupted) / (clean -
corrupted)`` of the metric: denoising (clean activations into the corrupted run) reads 0 for no
effect and 1 for full restoration; noising (corrupted activations into the clean run) reads 1
for no effect and 0 when the patch destroys the clean behaviour."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float

from atari_dt.attribution.core import Metric, describe_metric, measure
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError

Direction = Literal["denoising", "noising"]


@dataclass(frozen=True)
class PatchingResult:
    """``restored`` ``[...]`` (layer x position, or layer x head; rows and columns named by
    ``labels``): the fraction of the metric's clean - corrupted change that the patch
    restores, in ``direction`` (denoising: clean activations into the corrupted run; noising:
    corrupted activations into the clean run, where 1 - restored is what the patch destroys)."""

    restored: Float[torch.Tensor, "rows cols"]
    direction: str
    clean_metric: float
    corrupted_metric: float
    labels: list[str]
    metric: dict


class NothingToRestore(UserError):
    """The clean and corrupted runs give the same metric: patching has nothing to measure."""


def _restored(values: torch.Tensor, clean: float, corrupted: float) -> torch.Tensor:
    span = clean - corrupted
    if abs(span) < 1e-9:
        raise NothingToRestore(
            f"the clean and corrupted runs give the same metric ({clean:.6g}); nothing to restore"
        )
    return (values - corrupted) / span


@torch.no_grad()
def _sweep(
    model,
    clean: Contexts,
    corrupted: Contexts,
    metric: Metric,
    direction: Direction,
    names: list[str],
    variants: int,
    patch: Callable,
) -> tuple[torch.Tensor, float, float]:
    """Patch hook ``names[l]`` of the run being patched with the other run's activation, in
    ``variants`` copies at once (``patch(activation, source)`` patches variant i its own way):
    ``[len(names), variants]`` of the metric, and the clean and corrupted metrics. Each run's
    frames go through the CNN once."""
    for label, contexts in (("clean", clean), ("corrupted", corrupted)):
        if len(contexts) != 1:
            raise UserError(
                f"patching takes one context: the {label} contexts hold "
                f"{len(contexts)}; index them (contexts[i])"
            )
    if direction not in ("denoising", "noising"):
        raise UserError(f"direction must be denoising or noising, got {direction!r}")
    source, target = (clean, corrupted) if direction == "denoising" else (corrupted, clean)
    source = source.encoded(model)
    _, cache = model.run_with_cache(source, names_filter=names)
    target = target.encoded(model)
    target_metric = float(measure(model, metric, lambda: model(target))[0])
    source_metric = float(measure(model, metric, lambda: model(source))[0])
    clean_m, corrupted_m = (
        (source_metric, target_metric)
        if direction == "denoising"
        else (target_metric, source_metric)
    )
    copies = target.repeat(variants)
    out = torch.zeros(len(names), variants)
    for row, name in enumerate(names):
        hook = (name, lambda activation, hook, source=cache[name]: patch(activation, source))
        with model.hooks(fwd_hooks=[hook]):
            out[row] = measure(model, metric, lambda: model(copies))
    return _restored(out, clean_m, corrupted_m), clean_m, corrupted_m


def patch_residual(
    model,
    clean: Contexts,
    corrupted: Contexts,
    metric: Metric,
    *,
    direction: Direction = "denoising",
) -> PatchingResult:
    """Patch ``blocks.{l}.hook_resid_pre`` at one position at a time: ``[n_layers, P]``.

    Raises:
        NothingToRestore: the two runs give the same metric; UserError: not one context each.
    """
    P = clean.length * model.cfg.tokens_per_step

    def one_position_each(activation: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        patched, index = activation.clone(), torch.arange(P)
        patched[index, index] = source[0, index]  # variant p gets position p
        return patched

    names = [f"blocks.{layer}.hook_resid_pre" for layer in range(model.cfg.n_layers)]
    restored, clean_m, corrupted_m = _sweep(
        model, clean, corrupted, metric, direction, names, P, one_position_each
    )
    labels = [f"{layer}_resid_pre" for layer in range(model.cfg.n_layers)]
    return PatchingResult(
        restored, direction, clean_m, corrupted_m, labels, describe_metric(metric)
    )


def patch_heads(
    model,
    clean: Contexts,
    corrupted: Contexts,
    metric: Metric,
    *,
    direction: Direction = "denoising",
    what: Literal["z", "pattern"] = "z",
) -> PatchingResult:
    """Patch each head's output (``hook_z``) or attention pattern (``hook_pattern``) at every
    position: ``[n_layers, n_heads]``.

    Raises:
        NothingToRestore: the two runs give the same metric; UserError: not one context each.
    """
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
    restored, clean_m, corrupted_m = _sweep(
        model, clean, corrupted, metric, direction, names, H, one_head_each
    )
    labels = [f"L{layer}H{h}" for layer in range(model.cfg.n_layers) for h in range(H)]
    return PatchingResult(
        restored, direction, clean_m, corrupted_m, labels, describe_metric(metric)
    )


@torch.no_grad()
def run_patched(
    model, contexts: Contexts, source: dict[str, torch.Tensor], names: list[str]
) -> torch.Tensor:
    """Logits of ``contexts`` with the whole activation at each hook in ``names`` replaced by
    ``source[name]`` (e.g. another run's cache)."""
    hooks = [(name, lambda activation, hook: source[hook.name]) for name in names]
    with model.hooks(fwd_hooks=hooks):
        return model(contexts)
