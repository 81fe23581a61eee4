"""What a model holds, as plain data for ``atari-dt model info`` and reports."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from atari_dt.config import config_to_dict

if TYPE_CHECKING:
    from atari_dt.model.hooked_dt import HookedDecisionTransformer


def model_summary(model: HookedDecisionTransformer) -> dict[str, Any]:
    """Config, parameter counts per part (encoder, embeddings, blocks, unembed, heads) and
    the hook points grouped by kind (e.g. ``attn.hook_pattern: 6``)."""
    parts: Counter[str] = Counter()
    for name, param in model.named_parameters():
        parts[_part_of(name)] += param.numel()
    hooks = Counter(
        name.split(".", 2)[-1] if name.startswith("blocks.") else name for name in model.hook_dict
    )
    return {
        "config": config_to_dict(model.cfg),
        "derived": {"d_head": model.cfg.d_head, "d_mlp": model.cfg.d_mlp, "n_ctx": model.cfg.n_ctx},
        "parameters": {"total": sum(parts.values()), **dict(parts)},
        "hooks": dict(hooks),
    }


def _part_of(name: str) -> str:
    if name.startswith("encoder."):
        return "encoder"
    if name.startswith("blocks."):
        return "blocks"
    if name.startswith(("W_U", "b_U", "return_head")):
        return "heads"
    if name.startswith("ln_final"):
        return "ln_final"
    return "embeddings"
