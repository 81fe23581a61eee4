"""The comparison of runs as figures and one self-contained HTML page in the study report's
style (images as data URIs, nothing loaded over the network), plus the table as CSV/JSON.
Everything here only presents a :class:`~atari_dt.study.compare.Comparison`."""

from __future__ import annotations

import csv
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.figures import pyplot, save_figure
from atari_dt.study.compare import (
    COLUMNS_HOW,
    ComparedRun,
    Comparison,
    follows_sentence,
    interval_pair,
)
from atari_dt.study.report import CSS, figure_html

COLOURS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
TOP_OBJECTS = 3  # objects per run in the shares figure: the ones with most attribution


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _errorbar(
    ax: Any, x: np.ndarray, y: np.ndarray, ci: np.ndarray, *, colour: str, label: str
) -> None:
    """``y`` ``[G]`` against ``x`` joined by a line, its intervals ``ci`` ``[G, 2]`` as bars
    (NaN intervals draw no bar)."""
    low, high = np.nan_to_num(y - ci[:, 0]), np.nan_to_num(ci[:, 1] - y)
    ax.errorbar(x, y, yerr=[low, high], fmt="o-", color=colour, capsize=3, label=label)


def _mark_data(ax: Any) -> None:
    ax.axvspan(0.0, 1.0, color="#eeeeee", zorder=0, label="the data's returns")
    ax.axvline(1.0, color="#777777", linestyle="--", linewidth=1, label="data's best")


def plot_sweeps(comparison: Comparison, path: Path) -> Path:
    """Left: human-normalised achieved score against the target in data units (0: the data's
    worst return, 1: its best; one line per run, 95% intervals). Right: the achieved return in
    the same units, with the diagonal where achieved = target."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    top = 1.0
    for i, run in enumerate(comparison.runs):
        x = run.in_data_units(run.targets)
        if not np.isfinite(x).any():
            continue  # no span: every complete episode has one return
        top = max(top, float(np.nanmax(x)))
        if np.isfinite(run.normalised).any():
            _errorbar(
                left, x, run.normalised, run.normalised_interval, colour=_colour(i), label=run.label
            )
        achieved, ci = run.in_data_units(run.achieved), run.in_data_units(run.achieved_interval)
        _errorbar(right, x, achieved, ci, colour=_colour(i), label=run.label)
    for ax in (left, right):
        _mark_data(ax)
        ax.set_xlabel("target return, in data units (0: data's worst, 1: data's best)")
        ax.legend(fontsize=7)
    left.axhline(0.0, color="#bbbbbb", linewidth=0.8)
    left.set_ylabel("human-normalised score (%; raw game points)")
    left.set_title("achieved score, human-normalised", fontsize=10)
    right.plot([0, top], [0, top], color="#999999", linewidth=0.8, label="achieved = target")
    right.set_ylabel("achieved return, in data units")
    right.set_title("achieved against target, in units of each run's data", fontsize=10)
    return save_figure(fig, path)


def _not_available(ax: Any, row: int, why: str) -> None:
    ax.text(0.02, row, why, transform=ax.get_yaxis_transform(), va="center", fontsize=7)


def plot_gains(comparison: Comparison, path: Path) -> Path:
    """Left: the extrapolation gain above the data's best return in data units (95%
    interval). Right: where the policy saturates, in data units."""
    plt = pyplot()
    runs = comparison.runs
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.5 * len(runs) + 3.0))
    for i, run in enumerate(runs):
        gain = run.gain or {}
        if gain.get("value") is None or run.span is None:
            why = "n/a: no target above the data" if run.span else "n/a: the data has no span"
            _not_available(left, i, why)
            continue
        value = float(run.in_data_units(gain["value"], shift=False))
        interval = run.in_data_units(np.array(interval_pair(gain.get("interval"))), shift=False)
        err = (
            [[value - interval[0]], [interval[1] - value]] if np.isfinite(interval).all() else None
        )
        left.errorbar([value], [i], xerr=err, fmt="o", color=_colour(i), capsize=4)
    left.axvline(0.0, color="#777777", linewidth=1)
    left.set_xlabel("extrapolation gain, in data units (the data's span = 1)")
    left.set_title("asked for more than the data holds: gain (95% interval)", fontsize=10)
    for i, run in enumerate(runs):
        if run.saturation is None:
            _not_available(right, i, "never saturates on the study's grid")
        elif run.span is None:
            _not_available(right, i, "n/a: the data has no span")
        else:
            right.barh([i], [float(run.in_data_units(run.saturation))], color=_colour(i))
    right.axvline(1.0, color="#777777", linestyle="--", linewidth=1)
    right.set_xlabel("saturation RTG, in data units (1: the data's best)")
    right.set_title("where the policy stops changing", fontsize=10)
    for ax in (left, right):
        ax.set_yticks(np.arange(len(runs)), [r.label for r in runs], fontsize=8)
        ax.set_ylim(len(runs) - 0.5, -0.5)  # first run on top, rows aligned across panels
    return save_figure(fig, path)


def _top_objects(run: ComparedRun) -> list[str]:
    objects = run.shares.get("objects", {})
    at_ref = run.reference_index
    ranked = [(v[at_ref] or 0.0, k) for k, v in objects.items() if k != "background" and v]
    return [k for _, k in sorted(ranked, reverse=True)[:TOP_OBJECTS]]


def _token_panel(ax: Any, runs: tuple[ComparedRun, ...]) -> None:
    """Stacked token-type shares at the reference (best training return) and top RTG."""
    kinds = ("rtg", "state", "action")
    stacks = np.full((len(kinds), 2 * len(runs)), np.nan)  # (kinds, runs x {ref, top})
    labels = []
    for i, run in enumerate(runs):
        tokens, ref = run.shares.get("tokens", {}), run.reference_index
        for k, kind in enumerate(kinds):
            values = tokens.get(kind)
            if values:
                stacks[k, 2 * i : 2 * i + 2] = [_float(values[ref]), _float(values[-1])]
        labels += [f"{run.label}\nref", f"{run.label}\ntop"]
    bottoms = np.zeros(stacks.shape[1])
    for k, kind in enumerate(kinds):
        ax.bar(range(stacks.shape[1]), stacks[k], bottom=bottoms, label=kind, color=_colour(k))
        bottoms += np.nan_to_num(stacks[k])
    ax.set_xticks(range(len(labels)), labels, fontsize=7)
    ax.set_ylabel("share of |token IG|")
    ax.set_title("token types: best training return (ref) vs top target", fontsize=10)
    ax.legend(fontsize=7)


def _object_panel(ax: Any, runs: tuple[ComparedRun, ...]) -> None:
    """Each run's most attributed objects' share of |pixel IG| at the reference and top RTG."""
    names, at_ref, at_top = [], [], []
    for run in runs:
        objects, ref = run.shares.get("objects", {}), run.reference_index
        for name in _top_objects(run):
            names.append(f"{run.label}: {name}")
            at_ref.append(_float(objects[name][ref]))
            at_top.append(_float(objects[name][-1]))
    if names:
        y = np.arange(len(names))
        ax.barh(y - 0.2, at_ref, height=0.4, color="#4477aa", label="at ref")
        ax.barh(y + 0.2, at_top, height=0.4, color="#ee6677", label="at top")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, "no game-object labels for these runs", ha="center", va="center")
    ax.set_xlabel("share of |pixel IG| (newest frame)")
    ax.set_title("most attributed game objects", fontsize=10)


def _float(value: float | None) -> float:
    return np.nan if value is None else float(value)


def plot_shares(comparison: Comparison, path: Path) -> Path:
    """Left: the share of |token IG| on RTG, state and action tokens at the best training
    return and at the top target, per run. Right: each run's most attributed game objects'
    share of |pixel IG| at the same two RTGs."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    if not any(run.shares for run in comparison.runs):
        for ax in (left, right):
            ax.text(
                0.5,
                0.5,
                "no shares in these summaries (studies from before shares were recorded):\n"
                "re-run `atari-dt study RUN --force`",
                ha="center",
                va="center",
                fontsize=8,
            )
        return save_figure(fig, path)
    _token_panel(left, comparison.runs)
    _object_panel(right, comparison.runs)
    return save_figure(fig, path)


FIGURES = {
    "sweeps": (
        "Each run's achieved score per target, targets in data units (0: the data's worst "
        "return, 1: its best; shaded), so a game's scale and sign drop out. Left: "
        "human-normalised (0 = random play, 100 = a human tester), from the episodes' raw game "
        "points; right: the achieved return in the same data units. Right of the dashed line "
        "the target asks for more than any episode in that run's data."
    ),
    "gains": (
        "Left: how much more a run achieves when asked for more than its data's best return "
        "(the study's paired gain, 95% interval), in data units: an interval holding 0 means "
        "no detectable extrapolation. Right: the RTG from which the policy stops changing, in "
        "data units (1: the data's best)."
    ),
    "shares": (
        "Where the decision's attribution goes. Left: token types (RTG, state, action) at the "
        "best training return and at the top target; right: the most attributed game objects."
    ),
}


def write_figures(comparison: Comparison, directory: Path) -> dict[str, Path]:
    """Every figure of the page as a PNG in ``directory``: name -> path."""
    d = Path(directory)
    return {
        "sweeps": plot_sweeps(comparison, d / "sweeps.png"),
        "gains": plot_gains(comparison, d / "gains.png"),
        "shares": plot_shares(comparison, d / "shares.png"),
    }


def table_csv(rows: list[dict[str, Any]]) -> str:
    """The table as CSV (the union of every row's columns, in first-seen order)."""
    columns = list(dict.fromkeys(k for row in rows for k in row))
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


SHOWN = (
    ("run", "run"),
    ("reward_units", "units"),
    ("held_out_quantile", "held out above quantile"),
    ("data_min", "data's worst"),
    ("data_max", "data's best"),
    ("normalised_at_data_max", "human-norm. % at data's best"),
    ("capped_at_top", "capped at top"),
    ("follows_target_rho", "follows target: rho"),
    ("follows_target_p", "p (rho > 0)"),
    ("gain_vs_data_max", "gain above data's best"),
    ("gain_vs_train_max", "gain above best training"),
    ("saturation_in_data_units", "saturation (data units)"),
    ("carrier_hook", "RTG read in at"),
    ("top_head", "top head"),
    ("steering_recovered", "steering recovers"),
)
CAPPED = 0.5  # as the study: more than half the episodes at the cap bounds their return


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "—"
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if low is not None and high is not None:  # a number with its 95% interval
        return (
            f"{value:+.3g} [{low:.3g}, {high:.3g}]"
            if "gain" in key
            else (f"{value:.3g} [{low:.3g}, {high:.3g}]")
        )
    return f"{value:.3g}" if isinstance(value, float) else html.escape(str(value))


def _run_lines(run: ComparedRun) -> str:
    """The run's extrapolation verdicts, its rank test and a cap caution, as list items."""
    lines = [run.verdict[0]] if run.verdict else []
    lines += [v for v in run.verdict[1:] if v.startswith("Against the best training return")]
    lines.append(follows_sentence(run.follows, len(run.targets)))
    if np.isfinite(run.capped[-1]) and run.capped[-1] > CAPPED:
        lines.append(
            "Caution: most top-target episodes ran into the step cap, which bounds their score."
        )
    text = " ".join(html.escape(line) for line in lines)
    return f"<li><b>{html.escape(run.label)}</b>: {text}</li>"


def render_page(comparison: Comparison, figures: dict[str, Path], *, command: str) -> str:
    """The comparison's HTML (``figures``: name -> PNG, as ``write_figures`` made them)."""
    rows = comparison.table()
    title = "Comparing runs: " + ", ".join(r.label for r in comparison.runs)
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in SHOWN)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row, key)}</td>" for key, _ in SHOWN) + "</tr>"
        for row in rows
    )
    verdicts = "".join(_run_lines(run) for run in comparison.runs)
    how = "".join(
        f"<li><code>{html.escape(k)}</code>: {html.escape(v)}</li>" for k, v in COLUMNS_HOW.items()
    )
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<div class='verdict'><h2 style='border:0;margin-top:.3em'>Per run</h2><ul>{verdicts}"
        "</ul></div>",
        f"<h2>1. The table</h2><table><tr>{head}</tr>{body}</table>",
        f"<p class='how'>Also as <code>table.csv</code> and <code>table.json</code>.</p><ul "
        f"class='how'>{how}</ul>",
        "<h2>2. Achieved score across games</h2>",
        figure_html(figures["sweeps"], FIGURES["sweeps"]),
        "<h2>3. Extrapolation and saturation</h2>",
        figure_html(figures["gains"], FIGURES["gains"]),
        "<h2>4. Where the attribution goes</h2>",
        figure_html(figures["shares"], FIGURES["shares"]),
        "<h2>5. The studies compared</h2><ul>",
        *(
            f"<li>{html.escape(r.label)}: <code>{html.escape(str(r.study_dir))}</code></li>"
            for r in comparison.runs
        ),
        f"</ul><p class='how'>Command: <code>{html.escape(command)}</code></p></body></html>",
    ]
    return "\n".join(parts)
