"""The hooked Decision Transformer: config, model, checkpoints and importers.

``ModelConfig`` is torch-free; the model (torch, transformer_lens) loads on first use.
"""

from __future__ import annotations

from typing import Any

from atari_dt.model.config import ModelConfig

__all__ = ["CheckpointError", "HookedDecisionTransformer", "ModelConfig"]


def __getattr__(name: str) -> Any:
    if name == "HookedDecisionTransformer":
        from atari_dt.model.hooked_dt import HookedDecisionTransformer

        return HookedDecisionTransformer
    if name == "CheckpointError":
        from atari_dt.model.checkpoint import CheckpointError

        return CheckpointError
    raise AttributeError(f"module 'atari_dt.model' has no attribute {name!r}")
