"""Reference inputs for path methods, on the 0-255 pixel scale like the frames."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from atari_dt.errors import UserError

BaselineName = Literal["black", "blur", "mean", "noise"]
BLUR_SIGMA = 5.0  # pixels of the 84x84 frame: objects vanish, the layout stays


def gaussian_blur(frames: torch.Tensor, sigma: float = BLUR_SIGMA) -> torch.Tensor:
    """Each ``H x W`` image of ``frames`` (``[..., H, W]``) blurred with a Gaussian."""
    radius = int(3 * sigma)
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=frames.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    images = frames.float().reshape(-1, 1, *frames.shape[-2:])
    images = F.conv2d(
        F.pad(images, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1)
    )
    images = F.conv2d(
        F.pad(images, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1)
    )
    return images.reshape(frames.shape)


def make_baseline(
    name: BaselineName,
    frames: torch.Tensor,
    *,
    mean_frame: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """A float baseline shaped like ``frames`` (``[..., H, W]``, 0-255 scale).

    ``black``: zeros. ``blur``: the frames blurred (sigma 5 px, as Greydanus et al. 2018 perturb).
    ``mean``: ``mean_frame`` (``[H, W]``, e.g. the dataset's mean frame) everywhere.
    ``noise``: uniform noise in [0, 255], seeded.

    Raises:
        ValueError: unknown name, or ``mean`` without ``mean_frame``.
    """
    if name == "black":
        return torch.zeros_like(frames, dtype=torch.float32)
    if name == "blur":
        return gaussian_blur(frames)
    if name == "mean":
        if mean_frame is None:
            raise UserError("baseline 'mean' needs mean_frame (the dataset's mean frame)")
        return mean_frame.float().to(frames.device).expand(frames.shape).clone()
    if name == "noise":
        generator = torch.Generator().manual_seed(seed)
        return (torch.rand(frames.shape, generator=generator) * 255).to(frames.device)
    raise UserError(f"unknown baseline {name!r}; valid: black, blur, mean, noise")
