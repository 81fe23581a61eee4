"""Figures of the data layer. They only draw what the data functions return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.figures import pyplot, save_figure


def draw_returns(summary: dict[str, Any], counts: np.ndarray, edges: np.ndarray) -> Any:
    """Histogram of complete episodes' returns with lengths vs returns beside it (a Figure)."""
    plt = pyplot()
    episodes = summary["episodes"]
    complete = [e for e in episodes if e["complete"]]
    fig, (ax_hist, ax_scatter) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_hist.bar(
        edges[:-1], counts, width=np.diff(edges), align="edge", color="#4477aa", edgecolor="white"
    )
    ax_hist.set_xlabel(f"episode return ({summary['reward_units']} rewards)")
    ax_hist.set_ylabel("episodes")
    ax_hist.yaxis.get_major_locator().set_params(integer=True)
    ax_hist.set_title(f"{summary['game']}: {len(complete)} complete episodes")
    ax_scatter.scatter(
        [e["length"] for e in complete],
        [e["return"] for e in complete],
        s=14,
        color="#4477aa",
        label="complete",
    )
    cut = [e for e in episodes if not e["complete"]]
    if cut:
        ax_scatter.scatter(
            [e["length"] for e in cut],
            [e["return"] for e in cut],
            s=14,
            color="#cc6677",
            marker="x",
            label="cut (not trained on)",
        )
    ax_scatter.set_xlabel("episode length (agent steps)")
    ax_scatter.set_ylabel("return")
    ax_scatter.legend(frameon=False, fontsize=8)
    fig.tight_layout()
    return fig


def plot_returns(
    summary: dict[str, Any], counts: np.ndarray, edges: np.ndarray, path: Path
) -> Path:
    """``draw_returns`` written as a PNG at ``path``."""
    return save_figure(draw_returns(summary, counts, edges), path, dpi=110)


def plot_window(window: dict[str, Any], title: str, path: Path, max_steps: int = 8) -> Path:
    """The last ``max_steps`` steps of a context window (newest frame of each state, with its
    action, RTG and timestep) over the 4-frame stack of the current step (PNG)."""
    plt = pyplot()
    frames = np.asarray(window["frames"])  # (T, 4, H, W)
    steps = list(range(max(0, len(frames) - max_steps), len(frames)))
    n_cols = max(len(steps), frames.shape[1])
    fig, axes = plt.subplots(2, n_cols, figsize=(1.6 * n_cols, 3.9), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for col, t in enumerate(steps):
        ax = axes[0, col]
        ax.imshow(frames[t, -1], cmap="gray", vmin=0, vmax=255)
        if bool(window["mask"][t]):
            label = (
                f"t={int(window['timesteps'][t])}\na={int(window['actions'][t])} "
                f"R={float(window['rtg'][t]):g}"
            )
        else:
            label = "padding"
        ax.set_title(label, fontsize=7)
    for k in range(frames.shape[1]):
        axes[1, k].imshow(frames[-1, k], cmap="gray", vmin=0, vmax=255)
        axes[1, k].set_title(
            f"stack[{k}]" + (" (newest)" if k == frames.shape[1] - 1 else ""), fontsize=7
        )
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)
