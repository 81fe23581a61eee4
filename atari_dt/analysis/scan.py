"""The RTG scan: the policy on real context windows as the return-to-go asked for sweeps a grid
from below the data's returns to far beyond them, and how the RTG embedding saturates."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from atari_dt.analysis.divergence import js, kl, log_policy
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError

PERCENTILES = (5, 25, 50, 75, 95)


ScanMode = Literal["constant", "decremented"]


def scanned_rtg(contexts: Contexts, value: float, mode: ScanMode) -> torch.Tensor:
    """The windows' RTG ``[B, T]`` replaced by ``value``: the same at every step
    (``constant``), or ``value`` at each window's first real step, decremented by the rewards
    the window then received (``decremented``; the rewards are the drops of its own RTG).

    Raises:
        UserError: an unknown mode.
    """
    if mode not in ("constant", "decremented"):
        raise UserError(f"scan mode must be constant or decremented, got {mode!r}")
    rtg, mask = contexts.rtg.float(), contexts.mask
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

    @property
    def reference_action(self) -> int:
        """The action the mean policy prefers at the grid RTG nearest ``reference_rtg`` (what
        the scan's DLA follows)."""
        nearest = int(np.argmin(np.abs(self.rtg - self.reference_rtg)))
        return int(np.argmax(self.action_probs[nearest]))


@torch.no_grad()
def rtg_scan(
    model,
    contexts: Contexts,
    rtg_grid: np.ndarray | list[float],
    *,
    mode: ScanMode = "constant",
    reference_rtg: float | None = None,
    data_returns: np.ndarray | None = None,
) -> RtgScan:
    """Run the contexts at every grid RTG (each frame encoded once). ``reference_rtg``
    (default: the data's median return, else the grid's middle) is where divergences are
    measured from; it is added to the grid's evaluations but not to the grid.

    Args:
        contexts: ``N`` windows (e.g. ``run.sample_contexts(n)``); the last step is scanned.
        rtg_grid: ``[G]`` increasing returns, in the contexts' reward units.
        data_returns: the training episodes' returns (``run.train_returns``), for the
            reference and for the data's range and percentiles in the result.

    Raises:
        UserError: a behaviour-cloning model (no RTG), or a grid that is not increasing.
    """
    if model.cfg.behaviour_cloning:
        raise UserError("a behaviour-cloning model has no RTG to scan")
    grid = check_grid(rtg_grid)
    model.eval()
    contexts = contexts.encoded(model)
    if reference_rtg is not None and not np.isfinite(reference_rtg):
        raise UserError(f"the reference RTG must be a finite return, got {reference_rtg}")
    if reference_rtg is None:
        reference_rtg = (
            float(np.median(data_returns)) if data_returns is not None else float(np.median(grid))
        )
    logits, resid = [], []
    last_state = model.cfg.token_index(-1, contexts.length)
    for value in [*grid, reference_rtg]:
        rtg = scanned_rtg(contexts, float(value), mode)
        state_token = model.final_resid_at(
            [last_state],
            contexts.state_embeddings,
            contexts.actions,
            rtg,
            contexts.timesteps,
            contexts.mask,
        )[:, 0]
        logits.append(model.action_logits_at(state_token))
        resid.append(state_token)
    logits_t = torch.stack(logits[:-1]).cpu()  # [G, N, A]; results live on the CPU
    log_p, log_ref = log_policy(logits_t), log_policy(logits[-1].cpu())  # float64
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
        state_resid=torch.stack(resid[:-1]).cpu(),
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


MAX_GRID = 10_000  # grid points: each runs every context once; more is a typo, not a scan


def parse_grid(text: str) -> np.ndarray:
    """``start:stop:count`` (inclusive, like ``np.linspace``) or comma-separated values.

    Raises:
        UserError: anything else, with an example; see ``check_grid``.
    """
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if not 2 <= int(count) <= MAX_GRID:
                raise UserError(f"RTG grid {text!r}: count must be in 2..{MAX_GRID}, got {count}")
            grid = np.linspace(float(start), float(stop), int(count))
        else:
            grid = np.array([float(v) for v in text.split(",") if v.strip()])
    except UserError:
        raise
    except ValueError:
        raise UserError(
            f"RTG grid {text!r}: expected start:stop:count (0:3000:31) or 0,10,20"
        ) from None
    return check_grid(grid, text, minimum=2)


def check_grid(
    grid: np.ndarray | list[float], text: str | None = None, *, minimum: int = 1
) -> np.ndarray:
    """``grid`` as float64 ``[G]``: ``minimum``..``MAX_GRID`` finite increasing values (the
    CLI asks for 2: a scan of one RTG is a forward pass).

    Raises:
        UserError: anything else, naming the grid.
    """
    values = np.asarray(grid, dtype=np.float64).reshape(-1)
    name = repr(text) if text is not None else f"{values.tolist()[:8]}"
    if (
        not minimum <= len(values) <= MAX_GRID
        or not np.isfinite(values).all()
        or np.any(np.diff(values) <= 0)
    ):
        shown = values.tolist() if len(values) <= 8 else f"{len(values)} values"
        raise UserError(
            f"RTG grid {name}: needs {minimum}..{MAX_GRID} finite increasing values, got {shown}"
        )
    return values
