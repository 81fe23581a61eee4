"""Figures of the analysis results. They only draw what the analysis functions return."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.analysis.saturation import Saturation
from atari_dt.analysis.scan import RtgScan
from atari_dt.figures import pyplot, save_figure


def _mark_data(ax, scan: RtgScan) -> None:
    if scan.data_return_range is not None:
        lo, hi = scan.data_return_range
        ax.axvspan(lo, hi, color="#dddddd", label="training returns")
        ax.axvline(hi, color="#888888", linestyle="--", linewidth=1)


def draw_scan(scan: RtgScan, sat: Saturation, *, title: str, top: int = 6) -> Any:
    """Action probabilities (the ``top`` most used), entropy and divergence to the reference,
    and RTG-embedding saturation against the RTG, the training returns shaded (a Figure)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    probs = scan.action_probs
    for action in np.argsort(-probs.mean(0))[:top]:
        axes[0].plot(scan.rtg, probs[:, action], label=f"action {action}")
    axes[0].set_ylabel("mean probability")
    axes[1].plot(scan.rtg, scan.entropy, color="#4477aa", label="entropy (nats)")
    axes[1].plot(
        scan.rtg, scan.js_to_reference, color="#cc6677", label=f"JS to RTG {scan.reference_rtg:g}"
    )
    axes[2].plot(scan.rtg, sat.saturated_fraction, color="#228833", label="saturated RTG units")
    axes[2].plot(
        scan.rtg,
        sat.policy_change / max(sat.policy_change.max(), 1e-12),
        color="#aa3377",
        label="policy change (scaled)",
    )
    if sat.saturation_rtg is not None:
        for ax in axes:
            ax.axvline(sat.saturation_rtg, color="#aa3377", linestyle=":", linewidth=1)
    for ax in axes:
        _mark_data(ax, scan)
        ax.set_xlabel(f"RTG ({scan.mode} over the window)")
        ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_scan(scan: RtgScan, sat: Saturation, path: Path, *, title: str, top: int = 6) -> Path:
    """``draw_scan`` written as a PNG at ``path``."""
    return save_figure(draw_scan(scan, sat, title=title, top=top), path)


def draw_heatmap(
    values: np.ndarray,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xticks: list[str] | None = None,
    yticks: list[str] | None = None,
) -> Any:
    """A signed matrix (layer x head, layer x position, ...) with a diverging colour map."""
    plt = pyplot()
    limit = float(np.abs(values).max()) or 1.0
    fig, ax = plt.subplots(figsize=(max(4, 0.25 * values.shape[1] + 2), 0.5 * values.shape[0] + 2))
    image = ax.imshow(values, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
    if xticks is not None:
        ax.set_xticks(range(len(xticks)), xticks, rotation=90, fontsize=6)
    if yticks is not None:
        ax.set_yticks(range(len(yticks)), yticks, fontsize=6)
    else:
        ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax)
    fig.tight_layout()
    return fig


def plot_heatmap(
    values: np.ndarray,
    path: Path,
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    xticks: list[str] | None = None,
    yticks: list[str] | None = None,
) -> Path:
    """``draw_heatmap`` written as a PNG at ``path``."""
    return save_figure(
        draw_heatmap(
            values, title=title, xlabel=xlabel, ylabel=ylabel, xticks=xticks, yticks=yticks
        ),
        path,
    )


def draw_bars(values: np.ndarray, labels: list[str], *, title: str, ylabel: str) -> Any:
    """Signed bars, one per component (e.g. direct logit attribution)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5, 0.22 * len(labels) + 2), 3.2))
    ax.bar(range(len(labels)), values, color=np.where(values >= 0, "#cc6677", "#4477aa"))
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.axhline(0, color="#888888", linewidth=0.8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_bars(
    values: np.ndarray, labels: list[str], path: Path, *, title: str, ylabel: str
) -> Path:
    """``draw_bars`` written as a PNG at ``path``."""
    return save_figure(draw_bars(values, labels, title=title, ylabel=ylabel), path)


def draw_attention_grid(patterns: np.ndarray, labels: list[str], *, title: str) -> Any:
    """Every head's mean attention pattern (``[L, H, P, P]``), rows layers, columns heads,
    queries down and keys across, labelled by token (R_t / s_t / a_t)."""
    plt = pyplot()
    L, H, P, _ = patterns.shape
    fig, axes = plt.subplots(L, H, figsize=(2.6 * H, 2.6 * L), squeeze=False)
    step = max(1, P // 12)
    for layer in range(L):
        for head in range(H):
            ax = axes[layer, head]
            ax.imshow(patterns[layer, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"L{layer}H{head}", fontsize=8)
            ax.set_xticks(range(0, P, step), labels[::step], rotation=90, fontsize=5)
            ax.set_yticks(range(0, P, step), labels[::step], fontsize=5)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_attention_grid(patterns: np.ndarray, labels: list[str], path: Path, *, title: str) -> Path:
    """``draw_attention_grid`` written as a PNG at ``path``."""
    return save_figure(draw_attention_grid(patterns, labels, title=title), path)


def plot_probe_scores(results: dict, path: Path, *, title: str) -> Path:
    """Held-out probe score by layer for each probed quantity, with its chance level."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, result in results.items():
        line = ax.plot(result.labels, result.scores, marker="o", label=f"{name} ({result.kind})")
        ax.axhline(result.chance, color=line[0].get_color(), linestyle=":", linewidth=0.8)
    ax.set_ylabel("held-out R^2 / accuracy")
    ax.set_xlabel("residual stream before layer ... / final")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)
