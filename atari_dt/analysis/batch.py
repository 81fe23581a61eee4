"""Context batches for analysis, encoded once.

A batch is a dict of ``frames``, ``actions``, ``rtg``, ``timesteps``, ``mask`` (``[N, T, ...]``,
as ``ContextWindows.get_batch`` gives). Analyses run the same frames many times (every grid RTG,
every patch, every ablated head), so ``encoded`` adds ``state_embeddings`` once and every run
below starts from them instead of re-running the CNN.
"""

from __future__ import annotations

from typing import Any

import torch

Batch = dict[str, torch.Tensor]


@torch.no_grad()
def encoded(model: Any, batch: Batch) -> Batch:
    """``batch`` with ``state_embeddings`` ``[N, T, d_model]`` (computed unless present)."""
    if "state_embeddings" in batch:
        return batch
    return {**batch, "state_embeddings": model.embed_states(batch["frames"])}


def run(model: Any, batch: Batch, rtg: torch.Tensor | None = None) -> torch.Tensor:
    """Logits ``[N, T, n_actions]`` of the (encoded) batch, optionally with another RTG."""
    batch = encoded(model, batch)
    return model.forward_from_state_embeddings(
        batch["state_embeddings"], batch["actions"], batch["rtg"] if rtg is None else rtg,
        batch["timesteps"], batch["mask"],
    )  # fmt: skip


def run_cached(
    model: Any, batch: Batch, rtg: torch.Tensor | None = None, *, names_filter: Any = None
) -> tuple[torch.Tensor, Any]:
    """``(logits, ActivationCache)`` of the (encoded) batch, optionally with another RTG."""
    batch = encoded(model, batch)
    return model.run_with_cache_from_states(
        batch["state_embeddings"], batch["actions"], batch["rtg"] if rtg is None else rtg,
        batch["timesteps"], batch["mask"], names_filter=names_filter,
    )  # fmt: skip
