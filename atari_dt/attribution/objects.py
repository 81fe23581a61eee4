"""Object-level attribution: how much attribution mass falls inside each labelled game object
(boxes from the RAM, ``atari_dt.envs.objects``), per pixel of box, against the background."""

from __future__ import annotations

import numpy as np
import torch


def object_masses(
    attribution_map: torch.Tensor, boxes: dict[str, np.ndarray]
) -> dict[str, dict[str, float]]:
    """Per object: ``mass`` (sum of |attribution| inside its box), ``share`` (of the total),
    ``density`` (mass per pixel) and ``density_ratio`` (density / the background's density,
    None when the background has none); boxes may overlap, so shares can sum past 1;
    plus ``background`` (everything outside every box).

    Args:
        attribution_map: float ``[H, W]``.
        boxes: name -> ``(left, top, right, bottom)`` in frame index coordinates (one step of
            ``object_boxes``); NaN boxes (absent objects) are skipped.
    """
    magnitude = attribution_map.abs().double()
    H, W = magnitude.shape
    total = float(magnitude.sum()) or 1.0
    outside = torch.ones(H, W, dtype=torch.bool)
    masks = {}
    for name, box in boxes.items():
        if np.isnan(box).any():
            continue
        mask = box_mask(box, H, W)
        if mask.any():
            masks[name] = mask
            outside &= ~mask
    background = _entry(magnitude, outside, total, None)
    result = {
        name: _entry(magnitude, mask, total, background["density"]) for name, mask in masks.items()
    }
    result["background"] = background
    return result


def box_mask(box: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Bool ``[H, W]``: pixels whose centre lies inside ``(left, top, right, bottom)``."""
    left, top, right, bottom = (float(v) for v in box)
    cols, rows = torch.arange(width), torch.arange(height)
    inside_x = (cols >= left) & (cols <= right)
    inside_y = (rows >= top) & (rows <= bottom)
    return inside_y[:, None] & inside_x[None, :]


def _entry(
    magnitude: torch.Tensor, mask: torch.Tensor, total: float, reference: float | None
) -> dict[str, float]:
    pixels = int(mask.sum())
    mass = float(magnitude[mask].sum())
    density = mass / max(pixels, 1)
    entry = {"mass": mass, "share": mass / total, "pixels": pixels, "density": density}
    if reference is not None:  # undefined (None) when the background holds no attribution
        entry["density_ratio"] = density / reference if reference > 0 else None
    return entry
