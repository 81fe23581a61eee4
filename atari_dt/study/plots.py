"""The study's figures: each takes a ``Study`` (data only) and writes one PNG. The data's range
is shaded and its best return (and the best training return, when the top was held out) marked
in every plot over returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from atari_dt.figures import pyplot, save_figure
from atari_dt.study.study import Study

DATA = "#dddddd"


def _mark(ax, study: Study, *, vertical: bool = True) -> None:
    """Shade the data's returns; dashed line at its best, dotted at the best training return."""
    m = study.marks
    span = ax.axvspan if vertical else ax.axhspan
    line = ax.axvline if vertical else ax.axhline
    span(m.data_min, m.data_max, color=DATA, zorder=0, label="data's returns")
    line(m.data_max, color="#777777", linestyle="--", linewidth=1, label="data's best")
    if m.held_out:
        line(
            m.train_max, color="#aa3377", linestyle=":", linewidth=1.2, label="best training return"
        )


def _means_with_intervals(
    ax, x, means: np.ndarray, ci: np.ndarray, *, color: str, label: str
) -> None:
    """Means joined by a line, with their intervals ``ci`` ``[n, 2]`` as error bars."""
    ax.errorbar(
        x,
        means,
        yerr=[means - ci[:, 0], ci[:, 1] - means],
        fmt="o-",
        color=color,
        capsize=3,
        label=label,
    )


def plot_behaviour(study: Study, path: Path) -> Path:
    """Achieved vs target return (mean, 95% interval, each episode) beside the action histogram
    per target."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    sweep, units = study.sweep, study.sweep.reward_units
    targets = np.array([s.target for s in sweep.targets])
    means = np.array([s.mean for s in sweep.targets])
    ci = np.array([s.ci95 for s in sweep.targets])
    _mark(left, study)
    for s in sweep.targets:
        left.scatter([s.target] * len(s.returns), s.returns, s=9, color="#4477aa", alpha=0.35)
    _means_with_intervals(left, targets, means, ci, color="#4477aa", label="mean, 95% interval")
    lim = [min(targets.min(), 0), targets.max()]
    left.plot(lim, lim, color="#999999", linewidth=0.8, label="achieved = target")
    left.set_xlabel(f"target return ({units} rewards)")
    left.set_ylabel(f"achieved return ({units})")
    left.legend(fontsize=7, loc="upper left")
    left.set_title("behaviour sweep", fontsize=10)
    hist = study.action_histograms
    image = right.imshow(hist, aspect="auto", cmap="viridis")
    right.set_yticks(range(len(targets)), [f"{t:g}" for t in targets], fontsize=7)
    right.set_xlabel("action")
    right.set_ylabel("target return")
    right.set_title("action frequencies per target", fontsize=10)
    fig.colorbar(image, ax=right)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_divergence(study: Study, path: Path) -> Path:
    """The policy's divergence from the best training return's on the same states, along the
    scan, with the saturation RTG."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.6))
    d = study.divergence
    _mark(ax, study)
    ax.fill_between(d.rtg, d.interval[:, 0], d.interval[:, 1], color="#cc6677", alpha=0.25)
    ax.plot(d.rtg, d.mean, color="#cc6677", label="JS to the policy at the best training return")
    sat = study.scan.saturation.saturation_rtg
    if sat is not None:
        ax.axvline(sat, color="black", linewidth=1, label=f"stops changing ({sat:.3g})")
    ax.set_xlabel(f"RTG asked for ({study.sweep.reward_units})")
    ax.set_ylabel("Jensen-Shannon (nats)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_imitation(study: Study, path: Path) -> Path:
    """The DT's agreement with the expert per target, against each data behaviour's."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    im = study.imitation
    if im is None:
        raise ValueError("the study measured no imitation (no expert or RAM in the data)")
    _mark(ax, study)
    means = np.array([a.mean for a in im.rollouts])
    ci = np.array([a.interval for a in im.rollouts], dtype=float)
    _means_with_intervals(ax, im.targets, means, ci, color="#228833", label="the DT")
    colours = pyplot().cm.Greys(np.linspace(0.35, 0.9, len(im.data)))
    for (label, agreement), colour in zip(im.data.items(), colours, strict=True):
        ax.axhline(agreement.mean, color=colour, linewidth=1, linestyle="-.")
        ax.annotate(label, (ax.get_xlim()[1], agreement.mean), fontsize=6, ha="right", va="bottom")
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"target return ({study.sweep.reward_units})")
    ax.set_ylabel(f"agreement with {im.expert}")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_patching(study: Study, path: Path) -> Path:
    """Fraction of the RTG's effect restored by patching each layer x position and each head."""
    plt = pyplot()
    p = study.patching
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 3.6), gridspec_kw={"width_ratios": [3, 1]})
    for ax, values, title in (
        (left, p.residual, "residual (resid_pre) by position"),
        (right, p.heads, "heads (hook_z)"),
    ):
        image = ax.imshow(values, cmap="RdBu_r", vmin=-1, vmax=1, aspect="auto")
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("layer")
        ax.set_yticks(range(values.shape[0]))
        fig.colorbar(image, ax=ax)
    step = max(1, len(p.position_labels) // 24)
    left.set_xticks(range(0, len(p.position_labels), step), p.position_labels[::step], fontsize=6)
    right.set_xticks(range(p.heads.shape[1]))
    right.set_xlabel("head")
    fig.suptitle(
        f"restored fraction, RTG {p.high_rtg:g} into RTG {p.low_rtg:g}, {p.contexts} contexts",
        fontsize=9,
    )
    fig.tight_layout()
    return save_figure(fig, path)


def plot_steering(study: Study, path: Path) -> Path:
    """How much of the RTG's effect steering recovers at each residual hook."""
    plt = pyplot()
    s = study.steering
    fig, ax = plt.subplots(figsize=(7, 3.4))
    x = np.arange(len(s.hooks))
    colours = ["#ee7733" if h == study.carrier_hook else "#4477aa" for h in s.hooks]
    ax.bar(x, s.recovered, color=colours)
    ax.errorbar(
        x,
        s.recovered,
        yerr=[s.recovered - s.interval[:, 0], s.interval[:, 1] - s.recovered],
        fmt="none",
        color="black",
        capsize=3,
    )
    ax.axhline(1, color="#999999", linestyle="--", linewidth=0.8)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xticks(x, [h.replace("blocks.", "").replace("hook_", "") for h in s.hooks], fontsize=7)
    ax.set_ylabel("effect recovered")
    ax.set_title("steering by the RTG direction (orange: where patching finds the RTG)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pixel_maps(study: Study, path: Path, decisions: int = 2) -> Path:
    """The newest frame with its IG map at each RTG, for the first ``decisions`` decisions,
    and the mechanism's components attributed to the same frames."""
    from atari_dt.attribution.plots import overlay, symmetric_limit

    px = study.pixels
    mech = list(px.mechanism.items())
    rows = min(decisions, len(px.attributions))
    cols = len(px.rtg) + 2 * len(mech)
    plt = pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.1 * rows), squeeze=False)
    for k in range(rows):
        maps = [a.map for a in px.attributions[k]]
        limit = symmetric_limit(np.stack(maps))
        for g, m in enumerate(maps):
            overlay(axes[k, g], px.frames[k], m, limit, f"RTG {px.rtg[g]:g}")
        for j, (label, runs) in enumerate(mech):
            for i, side in enumerate(("reference", "top")):
                m = runs[side][k].map
                ax = axes[k, len(px.rtg) + 2 * j + i]
                overlay(ax, px.frames[k], m, symmetric_limit(m), f"{label.split(' ')[0]} @{side}")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_pixel_shares(study: Study, path: Path) -> Path:
    """Rank correlation and top-2% overlap with the reference map, object shares and token-type
    shares, against the RTG (means over decisions)."""
    plt = pyplot()
    px = study.pixels
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.6))
    axes[0].plot(px.rtg, px.rank_correlation.mean(0), "o-", label="Spearman of |IG|")
    axes[0].plot(px.rtg, px.top_overlap.mean(0), "s-", label="top-2% overlap")
    axes[0].set_ylim(-0.05, 1.05)
    axes[0].set_title("map vs the best training return's", fontsize=9)
    for name, shares in px.object_shares().items():
        axes[1].plot(px.rtg, np.nanmean(shares, axis=0), "o-", label=name)
    axes[1].set_title("share of |IG| per object (newest frame)", fontsize=9)
    bottom = np.zeros(len(px.rtg))
    for i, kind in enumerate(("RTG", "state", "action")):
        share = px.token_shares[:, :, i].mean(0)
        axes[2].bar(np.arange(len(px.rtg)), share, bottom=bottom, label=f"{kind} tokens")
        bottom += share
    axes[2].set_xticks(np.arange(len(px.rtg)), [f"{v:g}" for v in px.rtg], fontsize=7)
    axes[2].set_title("share of |token IG| per token type", fontsize=9)
    for ax in axes[:2]:
        _mark(ax, study)
    for ax in axes:
        ax.set_xlabel(f"RTG ({study.sweep.reward_units})")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save_figure(fig, path)
