"""The RTG scan: the policy on real context windows as the return-to-go asked for sweeps a grid
from below the data's returns to far beyond them, and how the RTG embedding saturates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from atari_dt.analysis.batch import Batch, encoded
from atari_dt.analysis.divergence import js, kl, log_policy

PERCENTILES = (5, 25, 50, 75, 95)


def scanned_rtg(
    batch: Batch, value: float, mode: Literal["constant", "decremented"]
) -> torch.Tensor:
    """The windows' RTG replaced by ``value``: the same at every step (``constant``), or
    ``value`` at each window's first real step, decremented by the rewards the window then
    received (``decremented``; the rewards are the drops of the window's own RTG)."""
    rtg, mask = batch["rtg"].float(), batch["mask"]
    if mode == "constant":
        return torch.full_like(rtg, value)
    first = mask.long().argmax(dim=1, keepdim=True)
    received = rtg.gather(1, first) - rtg  # rewards so far within the window, [N, T]
    return torch.where(mask, value - received, torch.zeros_like(rtg))


@dataclass(frozen=True)
class RtgScan:
    """Policy statistics at each grid RTG, over N contexts (the last step of each window).

    Shapes: ``rtg`` ``[G]``; ``logits`` ``[G, N, A]``; ``action_probs`` ``[G, A]`` (mean over
    contexts); ``entropy``, ``kl_to_reference``, ``js_to_reference`` ``[G]`` (means over
    contexts of each context's value); ``state_resid`` ``[G, N, d]`` (final residual at the
    last state token). Returns in the training data's reward units, like the RTG.
    """

    rtg: np.ndarray
    mode: str
    logits: torch.Tensor
    action_probs: np.ndarray
    entropy: np.ndarray
    kl_to_reference: np.ndarray
    js_to_reference: np.ndarray
    reference_rtg: float
    state_resid: torch.Tensor
    data_return_range: tuple[float, float] | None
    data_return_percentiles: dict[int, float] | None


@torch.no_grad()
def rtg_scan(
    model,
    batch: Batch,
    rtg_grid: np.ndarray,
    *,
    mode: Literal["constant", "decremented"] = "constant",
    reference_rtg: float | None = None,
    data_returns: np.ndarray | None = None,
) -> RtgScan:
    """Run the contexts at every grid RTG (each frame encoded once). ``reference_rtg``
    (default: the data's median return, else the grid's middle) is where divergences are
    measured from; it is added to the grid's evaluations but not to the grid."""
    model.eval()
    batch = encoded(model, batch)
    grid = np.asarray(rtg_grid, dtype=np.float64)
    if reference_rtg is None:
        reference_rtg = (
            float(np.median(data_returns)) if data_returns is not None else float(np.median(grid))
        )
    logits, resid = [], []
    for value in [*grid, reference_rtg]:
        rtg = scanned_rtg(batch, float(value), mode)
        final = model.transformer(batch["state_embeddings"], batch["actions"], rtg,
                                  batch["timesteps"], batch["mask"])  # fmt: skip
        state_token = final[:, model.cfg.state_token_offset :: model.cfg.tokens_per_step][:, -1]
        logits.append(model.action_logits_at(state_token))
        resid.append(state_token)
    logits_t = torch.stack(logits[:-1])  # [G, N, A]
    log_p, log_ref = log_policy(logits_t), log_policy(logits[-1])  # float64
    p = log_p.exp()
    return RtgScan(
        rtg=grid,
        mode=mode,
        logits=logits_t,
        action_probs=p.mean(1).numpy(),
        entropy=(-(p * log_p).sum(-1)).mean(1).numpy(),
        kl_to_reference=kl(log_p, log_ref).mean(1).numpy(),
        js_to_reference=js(log_p, log_ref).mean(1).numpy(),
        reference_rtg=float(reference_rtg),
        state_resid=torch.stack(resid[:-1]),
        data_return_range=_range(data_returns),
        data_return_percentiles=_percentiles(data_returns),
    )


def _range(returns: np.ndarray | None) -> tuple[float, float] | None:
    return (
        None
        if returns is None or len(returns) == 0
        else (float(np.min(returns)), float(np.max(returns)))
    )


def _percentiles(returns: np.ndarray | None) -> dict[int, float] | None:
    if returns is None or len(returns) == 0:
        return None
    return {q: float(np.percentile(returns, q)) for q in PERCENTILES}


def parse_grid(text: str) -> np.ndarray:
    """``start:stop:count`` (inclusive, like ``np.linspace``) or comma-separated values.

    Raises:
        ValueError: anything else, with an example.
    """
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            grid = np.linspace(float(start), float(stop), int(count))
        else:
            grid = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise ValueError(
            f"RTG grid {text!r}: expected start:stop:count (0:3000:31) or 0,10,20"
        ) from None
    if len(grid) < 2 or np.any(np.diff(grid) <= 0):
        raise ValueError(
            f"RTG grid {text!r}: needs at least 2 increasing values, got {grid.tolist()}"
        )
    return grid
