"""Saturation of the RTG embedding and of the policy: beyond which RTG does asking for more
stop changing anything?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atari_dt.analysis.scan import RtgScan

SATURATED = 0.99  # |tanh| above this counts as saturated (pre-activation beyond ~2.65)


@dataclass(frozen=True)
class Saturation:
    """Per grid RTG ``[G]``: ``saturated_fraction`` of RTG-embedding units (tanh only; zeros for
    a linear embedding), ``embed_change`` and ``resid_change`` (norm of the change of the RTG
    embedding and of the final residual at the state token, per unit RTG, between this grid
    point and the next; the last repeats), ``policy_change`` (mean total variation between the
    action distributions at consecutive grid points, per unit RTG). ``saturation_rtg``: the
    smallest grid RTG from which the policy's remaining total change stays below ``tolerance``
    (None if it never settles); ``relative_to_data_max``: that over the data's max return."""

    rtg: np.ndarray
    saturated_fraction: np.ndarray
    embed_change: np.ndarray
    resid_change: np.ndarray
    policy_change: np.ndarray
    saturation_rtg: float | None
    relative_to_data_max: float | None


def rtg_embedding(model, rtg: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The RTG token embedding and its pre-activation for each RTG value: ``[G, d]`` each."""
    values = torch.as_tensor(np.asarray(rtg), dtype=torch.float32, device=model.device)
    with torch.no_grad():
        pre = model.rtg_embed(values[:, None] / model.cfg.rtg_scale).cpu()
    return (torch.tanh(pre) if model.cfg.rtg_embedding == "tanh" else pre), pre


def saturation(model, scan: RtgScan, *, tolerance: float = 0.02) -> Saturation:
    """Saturation along an RTG scan (see ``Saturation``). ``tolerance``: total variation
    (0-1) the policy may still move beyond the saturation RTG, summed to the grid's end."""
    grid = scan.rtg
    embed, _ = rtg_embedding(model, grid)
    if model.cfg.rtg_embedding == "tanh":
        saturated = (embed.abs() > SATURATED).float().mean(1).numpy()
    else:
        saturated = np.zeros(len(grid))
    step = np.diff(grid)
    embed_change = _per_unit(torch.linalg.norm(embed.diff(dim=0), dim=-1).numpy(), step)
    resid_change = _per_unit(
        torch.linalg.norm(scan.state_resid.diff(dim=0), dim=-1).mean(1).numpy(), step
    )
    probs = torch.softmax(scan.logits, -1)
    tv = 0.5 * (probs.diff(dim=0)).abs().sum(-1).mean(1).numpy()  # [G-1]
    policy_change = _per_unit(tv, step)
    remaining = np.concatenate([np.cumsum(tv[::-1])[::-1], [0.0]])  # change from each point on
    settled = np.flatnonzero(remaining < tolerance)
    saturation_rtg = (
        float(grid[settled[0]]) if len(settled) and settled[0] < len(grid) - 1 else None
    )
    data_max = scan.data_return_range[1] if scan.data_return_range else None
    relative = saturation_rtg / data_max if saturation_rtg is not None and data_max else None
    return Saturation(
        grid, saturated, embed_change, resid_change, policy_change, saturation_rtg, relative
    )


def _per_unit(change: np.ndarray, step: np.ndarray) -> np.ndarray:
    """Change between consecutive grid points per unit RTG, ``[G]`` (the last repeated)."""
    rate = change / np.where(step == 0, 1, np.abs(step))
    return np.concatenate([rate, rate[-1:]]) if len(rate) else np.zeros(1)
