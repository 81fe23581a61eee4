"""atari-dt: mechanistic interpretability of Decision Transformers that play Atari from pixels.

The public API, for notebooks and scripts (``docs/api.md`` has an example per function)::

    import atari_dt as adt

    run = adt.load_run("runs/demo/train")            # model, config, store, from any directory
    ctx = run.contexts(episode=3, step=200)          # one context window (a Contexts)
    logits, cache = run.model.run_with_cache(ctx)
    pixels = adt.attribute_pixels(run.model, ctx, adt.Target(action=int(logits[0, -1].argmax())))
    scan = adt.rtg_scan(run.model, run.sample_contexts(64), [0, 100, 200])

Sub-packages follow the pipeline's stages (see DESIGN.md): ``datasets``, ``envs``, ``encoders``,
``model``, ``training``, ``rollout``, ``attribution``, ``analysis``. Names are imported on first
use, so ``import atari_dt`` (and the CLI's start-up) stays free of torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (imported on first access)
_EXPORTS: dict[str, str] = {
    # a run and its data
    "load_run": "atari_dt.run",
    "Run": "atari_dt.run",
    "Contexts": "atari_dt.datasets.contexts",
    "EpisodeStore": "atari_dt.datasets.store",
    "DataConfig": "atari_dt.datasets.config",
    "UserError": "atari_dt.errors",
    # the model
    "HookedDecisionTransformer": "atari_dt.model.hooked_dt",
    "ModelConfig": "atari_dt.model.config",
    # attribution
    "Target": "atari_dt.attribution.core",
    "HookTarget": "atari_dt.attribution.hook_targets",
    "head_logit_target": "atari_dt.attribution.hook_targets",
    "residual_target": "atari_dt.attribution.hook_targets",
    "attribute_pixels": "atari_dt.attribution.pixels",
    "attribute_tokens": "atari_dt.attribution.tokens",
    "attribute_channels": "atari_dt.attribution.channels",
    "object_masses": "atari_dt.attribution.objects",
    "explain_decision": "atari_dt.attribution.explain",
    "randomisation_test": "atari_dt.attribution.sanity",
    "deletion_curve": "atari_dt.attribution.sanity",
    # transformer analysis
    "rtg_scan": "atari_dt.analysis.scan",
    "saturation": "atari_dt.analysis.saturation",
    "scan_report": "atari_dt.analysis.scan_report",
    "decision_at_rtg": "atari_dt.analysis.rtg_point",
    "direct_logit_attribution": "atari_dt.analysis.dla",
    "logit_lens": "atari_dt.analysis.dla",
    "dla_along_scan": "atari_dt.analysis.dla",
    "residual_by_layer": "atari_dt.analysis.dla",
    "mean_patterns": "atari_dt.analysis.attention",
    "attention_to_rtg": "atari_dt.analysis.attention",
    "patch_residual": "atari_dt.analysis.patching",
    "patch_heads": "atari_dt.analysis.patching",
    "probe": "atari_dt.analysis.probes",
    "context_probes": "atari_dt.analysis.probes",
    "component_means": "atari_dt.analysis.ablation",
    "ablation_effects": "atari_dt.analysis.ablation",
    "mean_ablated": "atari_dt.analysis.ablation",
    "analyze_decision": "atari_dt.analysis.decision",
    # the RTG direction and steering
    "rtg_direction": "atari_dt.analysis.steering",
    "steering": "atari_dt.analysis.steering",
    "steering_effect": "atari_dt.analysis.steering",
    # the study
    "StudyConfig": "atari_dt.study.config",
    "run_study": "atari_dt.study.study",
    "summarise_study": "atari_dt.study.summary",
    # comparing runs and games
    "compare_runs": "atari_dt.study.compare",
    "human_normalised": "atari_dt.study.scores",
    # rollouts
    "run_episodes": "atari_dt.rollout.evaluate",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'atari_dt' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs; never executed
    from atari_dt.analysis.ablation import ablation_effects, component_means, mean_ablated
    from atari_dt.analysis.attention import attention_to_rtg, mean_patterns
    from atari_dt.analysis.decision import analyze_decision
    from atari_dt.analysis.dla import (
        direct_logit_attribution,
        dla_along_scan,
        logit_lens,
        residual_by_layer,
    )
    from atari_dt.analysis.patching import patch_heads, patch_residual
    from atari_dt.analysis.probes import context_probes, probe
    from atari_dt.analysis.rtg_point import decision_at_rtg
    from atari_dt.analysis.saturation import saturation
    from atari_dt.analysis.scan import rtg_scan
    from atari_dt.analysis.scan_report import scan_report
    from atari_dt.analysis.steering import rtg_direction, steering, steering_effect
    from atari_dt.attribution.channels import attribute_channels
    from atari_dt.attribution.core import Target
    from atari_dt.attribution.explain import explain_decision
    from atari_dt.attribution.hook_targets import HookTarget, head_logit_target, residual_target
    from atari_dt.attribution.objects import object_masses
    from atari_dt.attribution.pixels import attribute_pixels
    from atari_dt.attribution.sanity import deletion_curve, randomisation_test
    from atari_dt.attribution.tokens import attribute_tokens
    from atari_dt.datasets.config import DataConfig
    from atari_dt.datasets.contexts import Contexts
    from atari_dt.datasets.store import EpisodeStore
    from atari_dt.errors import UserError
    from atari_dt.model.config import ModelConfig
    from atari_dt.model.hooked_dt import HookedDecisionTransformer
    from atari_dt.rollout.evaluate import run_episodes
    from atari_dt.run import Run, load_run
    from atari_dt.study.config import StudyConfig
    from atari_dt.study.study import run_study
    from atari_dt.study.summary import summarise_study
