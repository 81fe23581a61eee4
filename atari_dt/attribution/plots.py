"""Figures of attributions. They only draw what the attribution functions return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from atari_dt.attribution.objects import ObjectMasses
from atari_dt.figures import pyplot, save_captioned_gif, save_figure


def symmetric_limit(values: np.ndarray) -> float:
    """The colour limit of a signed map: its 99.5th percentile of |value| (1 for all zeros)."""
    limit = float(np.percentile(np.abs(values), 99.5))
    return limit if limit > 0 else 1.0


def overlay(ax, frame: np.ndarray, attribution: np.ndarray, limit: float, title: str) -> None:
    """A grayscale frame under a signed attribution map (red: raises the target, blue: lowers)."""
    ax.imshow(frame, cmap="gray", vmin=0, vmax=255)
    alpha = np.clip(np.abs(attribution) / limit, 0, 1) * 0.85
    ax.imshow(attribution, cmap="RdBu_r", vmin=-limit, vmax=limit, alpha=alpha)
    ax.set_title(title, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])


def draw_stack_overlay(
    frames: torch.Tensor,
    attributions: torch.Tensor,
    *,
    title: str,
    boxes: dict[str, np.ndarray] | None = None,
) -> Any:
    """Each frame of one stack (``frames`` ``[S, H, W]``) with its attribution (``[S, H, W]``),
    and their sum over the stack on the newest frame, object boxes outlined (a Figure)."""
    plt = pyplot()
    frames_np, attr_np = frames.cpu().numpy(), attributions.detach().cpu().numpy()
    S = frames_np.shape[0]
    limit = symmetric_limit(attr_np)
    fig, axes = plt.subplots(1, S + 1, figsize=(2.3 * (S + 1), 2.7))
    for i in range(S):
        overlay(axes[i], frames_np[i], attr_np[i], limit, f"frame t-{S - 1 - i}")
    total = attr_np.sum(0)
    overlay(axes[S], frames_np[-1], total, symmetric_limit(total), "sum over the stack")
    for name, box in (boxes or {}).items():
        if not np.isnan(box).any():
            left, top, right, bottom = box
            axes[S].add_patch(
                plt.Rectangle(
                    (left, top),
                    right - left,
                    bottom - top,
                    fill=False,
                    edgecolor="#ffcc00",
                    linewidth=0.8,
                )
            )
            axes[S].text(left, top - 1, name, color="#ffcc00", fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_stack_overlay(
    frames: torch.Tensor,
    attributions: torch.Tensor,
    path: Path,
    *,
    title: str,
    boxes: dict[str, np.ndarray] | None = None,
) -> Path:
    """``draw_stack_overlay`` written as a PNG at ``path``."""
    return save_figure(
        draw_stack_overlay(frames, attributions, title=title, boxes=boxes), path, dpi=130
    )


def plot_window_strip(
    frames: torch.Tensor, maps: torch.Tensor, steps: list[int], path: Path, *, title: str
) -> Path:
    """The newest frame of every attributed window step with its stack-summed map
    (``frames`` ``[k, H, W]``, ``maps`` ``[k, H, W]``), one shared colour scale (PNG)."""
    plt = pyplot()
    maps_np = maps.detach().cpu().numpy()
    limit = symmetric_limit(maps_np)
    fig, axes = plt.subplots(1, len(steps), figsize=(1.6 * len(steps), 2.0), squeeze=False)
    for ax, frame, attribution, step in zip(
        axes[0], frames.cpu().numpy(), maps_np, steps, strict=True
    ):
        overlay(ax, frame, attribution, limit, f"step {step}")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=130)


def draw_object_masses(masses: ObjectMasses, *, title: str) -> Any:
    """Attribution density inside each object's box relative to the background (bar chart)."""
    plt = pyplot()
    names = list(masses.objects)
    ratios = [masses.objects[n].density_ratio or 0.0 for n in names]  # None: no background mass
    shares = [masses.objects[n].share for n in names]
    fig, ax = plt.subplots(figsize=(max(4, 0.7 * len(names) + 2), 3))
    bars = ax.bar(names, ratios, color="#4477aa")
    ax.axhline(1.0, color="#888888", linestyle="--", linewidth=1, label="background density")
    for bar, share in zip(bars, shares, strict=True):
        ax.text(
            bar.get_x() + bar.get_width() / 2,
            bar.get_height(),
            f"{share:.0%}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_ylabel("|attribution| per pixel / background's")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    fig.tight_layout()
    return fig


def plot_object_masses(masses: ObjectMasses, path: Path, *, title: str) -> Path:
    """``draw_object_masses`` written as a PNG at ``path``."""
    return save_figure(draw_object_masses(masses, title=title), path, dpi=130)


def save_attribution_gif(
    frames: list[np.ndarray],
    maps: list[np.ndarray],
    captions: list[str],
    path: Path,
    *,
    scale: int = 3,
    fps: int = 6,
) -> Path:
    """An animated GIF along an episode: each newest frame (``[H, W]`` uint8) with its signed
    attribution map (``[H, W]``; red raises the target, blue lowers it), one colour scale for
    the whole GIF, and a caption per frame."""
    from matplotlib import colormaps

    limit = symmetric_limit(np.concatenate([m.ravel() for m in maps]))
    colormap = colormaps["RdBu_r"]
    images = []
    for frame, attribution in zip(frames, maps, strict=True):
        gray = np.repeat(frame[..., None].astype(np.float32) / 255, 3, axis=2)
        colour = colormap(np.clip(attribution / (2 * limit) + 0.5, 0, 1))[..., :3]
        alpha = np.clip(np.abs(attribution) / limit, 0, 1)[..., None] * 0.85
        images.append(((gray * (1 - alpha) + colour * alpha) * 255).astype(np.uint8))
    return save_captioned_gif(images, captions, path, scale=scale, fps=fps)
