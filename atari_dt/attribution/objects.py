"""Object-level attribution: how much attribution mass falls inside each labelled game object
(boxes from the RAM, ``atari_dt.envs.objects``), per pixel of box, against the background."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch


@dataclass(frozen=True)
class ObjectMass:
    """|attribution| inside one region: ``mass`` (its sum), ``share`` (of the whole map's),
    ``pixels``, ``density`` (mass per pixel) and ``density_ratio`` (density / the background's;
    None for the background itself, and when the background holds no attribution)."""

    mass: float
    share: float
    pixels: int
    density: float
    density_ratio: float | None


@dataclass(frozen=True)
class ObjectMasses:
    """``objects`` name -> ``ObjectMass`` of each labelled object on screen (boxes may overlap,
    so shares can sum past 1) and the ``background`` (everything outside every box)."""

    objects: dict[str, ObjectMass]
    background: ObjectMass

    def ranked(self) -> list[tuple[str, ObjectMass]]:
        """Objects from the densest (relative to the background) down."""
        return sorted(self.objects.items(), key=lambda item: -(item[1].density_ratio or 0.0))

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """JSON-ready: name -> fields, plus ``background`` (without a density ratio)."""
        out = {name: asdict(mass) for name, mass in self.objects.items()}
        background = asdict(self.background)
        background.pop("density_ratio")
        return {**out, "background": background}


def object_masses(attribution_map: torch.Tensor, boxes: dict[str, np.ndarray]) -> ObjectMasses:
    """How much of a map's |attribution| falls inside each object's box, against the
    background (see ``ObjectMasses``).

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
    objects = {name: _entry(magnitude, mask, total, background) for name, mask in masks.items()}
    return ObjectMasses(objects, background)


def box_mask(box: np.ndarray, height: int, width: int) -> torch.Tensor:
    """Bool ``[H, W]``: pixels whose centre lies inside ``(left, top, right, bottom)``."""
    left, top, right, bottom = (float(v) for v in box)
    cols, rows = torch.arange(width), torch.arange(height)
    inside_x = (cols >= left) & (cols <= right)
    inside_y = (rows >= top) & (rows <= bottom)
    return inside_y[:, None] & inside_x[None, :]


def _entry(
    magnitude: torch.Tensor, mask: torch.Tensor, total: float, background: ObjectMass | None
) -> ObjectMass:
    pixels = int(mask.sum())
    mass = float(magnitude[mask].sum())
    density = mass / max(pixels, 1)
    ratio = None  # undefined when the background holds no attribution
    if background is not None and background.density > 0:
        ratio = density / background.density
    return ObjectMass(mass, mass / total, pixels, density, ratio)
