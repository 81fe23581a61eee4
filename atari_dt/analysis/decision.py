"""One decision of a trained run taken apart: direct logit attribution and the logit lens of
its cache, activation patching against a corrupted copy (an out-of-distribution RTG, or the
current frames blurred), and, over a population of contexts from the same data, mean attention,
probes and mean ablation. ``atari-dt analyze`` renders the ``DecisionAnalysis`` and nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from atari_dt.analysis.ablation import AblationEffects, ablation_effects, component_means
from atari_dt.analysis.attention import AttentionPatterns, mean_patterns
from atari_dt.analysis.dla import (
    LogitAttribution,
    LogitLens,
    direct_logit_attribution,
    logit_lens,
    residual_by_layer,
)
from atari_dt.analysis.patching import NothingToRestore, PatchingResult, patch_heads, patch_residual
from atari_dt.analysis.probes import ProbeResult, context_probes
from atari_dt.attribution.core import Target
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError

Corruption = Literal["rtg", "frame"]
OOD_FACTOR = 3.0  # the corrupted RTG: this many times the data's largest |return|


def contrast_target(logits: torch.Tensor, other_action: int | None = None) -> Target:
    """The logit difference patching measures: the action the model prefers (``logits``
    ``[n_actions]`` at the decision) minus ``other_action`` (default: the least likely one).

    An ``other_action`` equal to the preferred one gives a metric that is always 0: patching
    then reports that it has nothing to restore, as for any corruption that moves nothing.

    Raises:
        UserError: ``other_action`` outside the model's actions.
    """
    n = int(logits.shape[-1])
    action = int(logits.argmax())
    other = int(logits.argmin()) if other_action is None else other_action
    if not 0 <= other < n:
        raise UserError(f"other action {other} is not an action of the model (0..{n - 1})")
    return Target(action=action, kind="logit_diff", other_action=other)


def out_of_distribution_rtg(data_returns: np.ndarray | None) -> float:
    """An RTG far above the data: ``OOD_FACTOR`` x the largest |return| (at least 1)."""
    top = (
        float(np.abs(data_returns).max()) if data_returns is not None and len(data_returns) else 1.0
    )
    return OOD_FACTOR * max(top, 1.0)


def corrupted(
    contexts: Contexts, how: Corruption, *, rtg: float | None = None
) -> tuple[Contexts, str]:
    """A corrupted copy of ``contexts`` and a description: ``rtg`` asks for ``rtg`` at every
    step; ``frame`` blurs the current frame stack (what did the pixels add?).

    Raises:
        UserError: an unknown corruption, or ``rtg`` corruption without an RTG.
    """
    if how == "frame":
        from atari_dt.attribution.baselines import gaussian_blur

        frames = contexts.frames.clone()
        frames[:, -1] = gaussian_blur(frames[:, -1]).round().clamp(0, 255).to(torch.uint8)
        return contexts.with_frames(frames), "blurred current frames"
    if how != "rtg":
        raise UserError(f"corruption must be rtg or frame, got {how!r}")
    if rtg is None:
        raise UserError("rtg corruption needs the RTG to ask for")
    return contexts.with_rtg(rtg), f"RTG {rtg:g}"


@dataclass(frozen=True)
class Patching:
    """Patching of the decision against its corrupted copy (``corruption`` says how):
    ``residual`` ``[n_layers, P]`` and ``heads`` ``[n_layers, n_heads]`` results, or, when the
    corruption does not move the metric, ``skipped`` with the reason."""

    corruption: str
    target: Target
    residual: PatchingResult | None
    heads: PatchingResult | None
    skipped: str | None


@dataclass(frozen=True)
class DecisionAnalysis:
    """Everything ``analyze_decision`` found (each field is the named analysis's result)."""

    action: int
    dla: LogitAttribution
    logit_lens: LogitLens
    patching: Patching | None
    """None for a behaviour-cloning model asked to corrupt the RTG (it has none)."""
    attention: AttentionPatterns
    probes: dict[str, ProbeResult]
    ablation: AblationEffects
    population: int


def analyze_decision(
    model: Any,
    decision: Contexts,
    population: Contexts,
    *,
    other_action: int | None = None,
    corrupt: Corruption = "rtg",
    corrupt_rtg: float | None = None,
    data_returns: np.ndarray | None = None,
) -> DecisionAnalysis:
    """Take one decision apart (the last step of the single context ``decision``), and the
    population of contexts it comes from.

    Args:
        decision: one context (``run.contexts(episode, step)``).
        population: contexts for attention, probes and ablation (``run.sample_contexts(n)``).
        other_action: the contrast of the patched logit difference (``contrast_target``).
        corrupt, corrupt_rtg: the corrupted run of patching (``corrupted``); the RTG
            defaults to ``out_of_distribution_rtg(data_returns)``.
        data_returns: the training episodes' returns (``run.train_returns``).

    Raises:
        UserError: a ``decision`` of more than one context, or a bad ``other_action``.
    """
    if len(decision) != 1:
        raise UserError(f"analyze_decision takes one decision context, got {len(decision)}")
    model.eval()
    decision = decision.encoded(model)  # the cache and patching's clean run share one encoding
    with torch.no_grad():
        logits, cache = model.run_with_cache(decision)
    action = int(logits[0, -1].argmax())
    patching = None
    if corrupt == "frame" or not model.cfg.behaviour_cloning:
        contrast = contrast_target(logits[0, -1], other_action)
        rtg = corrupt_rtg if corrupt_rtg is not None else out_of_distribution_rtg(data_returns)
        patching = _patching(model, decision, contrast, *corrupted(decision, corrupt, rtg=rtg))
    population = population.encoded(model)  # attention, probes and ablation share one encoding
    features = residual_by_layer(model, population)
    layer_labels = [f"{i}" for i in range(model.cfg.n_layers)] + ["final"]
    return DecisionAnalysis(
        action=action,
        dla=direct_logit_attribution(model, cache, Target(action=action)),
        logit_lens=logit_lens(model, cache),
        patching=patching,
        attention=mean_patterns(model, population),
        probes=context_probes(features.cpu().numpy(), population, layer_labels),
        ablation=ablation_effects(model, population, component_means(model, population)),
        population=len(population),
    )


def _patching(
    model: Any, clean: Contexts, target: Target, corrupt: Contexts, what: str
) -> Patching:
    try:
        residual = patch_residual(model, clean, corrupt, target)
        heads = patch_heads(model, clean, corrupt, target)
    except NothingToRestore as err:  # the change does not move this decision
        return Patching(what, target, None, None, str(err))
    return Patching(what, target, residual, heads, None)
