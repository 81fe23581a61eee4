"""Figures and videos of rollouts. They only draw what ``sweep`` and ``evaluate`` return."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atari_dt.figures import pyplot, save_captioned_gif, save_figure
from atari_dt.rollout.evaluate import EpisodeResult
from atari_dt.rollout.sweep import SweepResult


def plot_sweep(sweep: SweepResult, path: Path) -> Path:
    """Achieved vs target return in the style of the DT paper's Figure 4: mean with its 95%
    interval, every episode as a dot, the y = x line, and the training data's return range
    shaded with its best return marked (PNG)."""
    plt = pyplot()
    targets = np.array([s.target for s in sweep.targets])
    means = np.array([s.mean for s in sweep.targets])
    low = np.array([s.ci95[0] for s in sweep.targets])
    high = np.array([s.ci95[1] for s in sweep.targets])
    fig, ax = plt.subplots(figsize=(6.4, 4.8))
    if sweep.data_return_range is not None:
        lo, hi = sweep.data_return_range
        ax.axhspan(lo, hi, color="#dddddd", label="training episodes' returns")
        ax.axhline(hi, color="#888888", linestyle="--", linewidth=1, label=f"data max ({hi:g})")
    span = [min(targets.min(), 0.0), targets.max()]
    ax.plot(span, span, color="#999999", linestyle=":", label="y = x (target reached)")
    for s in sweep.targets:
        ax.scatter([s.target] * len(s.returns), s.returns, s=10, color="#4477aa", alpha=0.35)
    ax.fill_between(
        targets,
        np.where(np.isnan(low), means, low),
        np.where(np.isnan(high), means, high),
        color="#4477aa",
        alpha=0.25,
        label="95% interval of the mean",
    )
    ax.plot(targets, means, marker="o", color="#4477aa", label="achieved (mean)")
    mode = f"sampled, temperature {sweep.temperature:g}" if sweep.sample else "argmax"
    ax.set_xlabel(f"target return ({sweep.reward_units} rewards)")
    ax.set_ylabel(f"achieved return ({sweep.reward_units} rewards)")
    n = len(sweep.targets[0].returns)
    ax.set_title(f"{sweep.game}: target-return sweep ({n} episodes per target, {mode})")
    ax.legend(fontsize=8, loc="best", framealpha=0.8)
    fig.tight_layout()
    return save_figure(fig, path)


def save_episode_gif(
    result: EpisodeResult, path: Path, *, reward_units: str, scale: int = 3, fps: int = 15
) -> Path:
    """An animated GIF of a recorded episode, each frame captioned with the step, the return
    still asked for and the action taken.

    Raises:
        ValueError: the episode was not recorded (pass it in ``record`` to ``run_episodes``).
    """
    if result.frames is None:
        raise ValueError(f"episode {result.episode} at target {result.target:g} was not recorded")
    captions = [
        f"t={step}  RTG left={left:.4g} ({reward_units})  a={int(action)}"
        for step, (left, action) in enumerate(zip(result.targets_left, result.actions, strict=True))
    ]
    return save_captioned_gif(list(result.frames), captions, path, scale=scale, fps=fps)
