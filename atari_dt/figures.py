"""What every figure and video of the project shares: a headless pyplot, and atomic writes of
PNGs and captioned GIFs (a killed process never leaves half an image)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.io import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend (imported on first use)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)
    return Path(path)


def save_captioned_gif(
    images: list[np.ndarray],
    captions: list[str],
    path: str | Path,
    *,
    scale: int = 3,
    fps: int = 10,
) -> Path:
    """An animated GIF of ``images`` (uint8 ``[H, W]`` gray or ``[H, W, 3]`` RGB), each
    enlarged ``scale`` times under a one-line caption, written atomically."""
    from PIL import Image, ImageDraw

    frames = []
    for image, caption in zip(images, captions, strict=True):
        big = Image.fromarray(image).convert("RGB")
        big = big.resize((big.width * scale, big.height * scale), Image.NEAREST)
        canvas = Image.new("RGB", (big.width, big.height + 18), "black")
        canvas.paste(big, (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), caption, fill="white")
        frames.append(canvas)
    with atomic_path(path) as tmp:
        frames[0].save(
            tmp,
            format="GIF",
            save_all=True,
            append_images=frames[1:],
            duration=int(1000 / fps),
            loop=0,
        )
    return Path(path)
