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
from atari_dt.study.compare import COLUMNS_HOW, ComparedRun, Comparison, follows_sentence
from atari_dt.study.report import CSS, figure_html

COLOURS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
TOP_OBJECTS = 3  # objects per run in the shares figure: the ones with most attribution


def _colour(i: int) -> str:
    return COLOURS[i % len(COLOURS)]


def _errorbar(ax, x, y, ci, *, colour: str, label: str) -> None:
    ax.errorbar(
        x, y, yerr=[y - ci[:, 0], ci[:, 1] - y], fmt="o-", color=colour, capsize=3, label=label
    )


def plot_sweeps(comparison: Comparison, path: Path) -> Path:
    """Left: human-normalised achieved score against the target as a multiple of each run's
    data max (one line per run, 95% intervals). Right: achieved / data max on the same axis,
    with the diagonal where achieved = target."""
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    for i, run in enumerate(comparison.runs):
        x = run.targets / run.data_max if run.data_max else run.targets
        if np.isfinite(run.normalised).any():
            _errorbar(
                left, x, run.normalised, run.normalised_interval, colour=_colour(i), label=run.label
            )
        scale = run.data_max or 1.0
        _errorbar(
            right,
            x,
            run.achieved / scale,
            run.achieved_interval / scale,
            colour=_colour(i),
            label=run.label,
        )
    for ax in (left, right):
        ax.axvline(1.0, color="#777777", linestyle="--", linewidth=1, label="data's best")
        ax.set_xlabel("target return / the data's best return")
        ax.legend(fontsize=7)
    left.axhline(0.0, color="#bbbbbb", linewidth=0.8)
    left.set_ylabel("human-normalised score (%; raw game points)")
    left.set_title("achieved score, human-normalised", fontsize=10)
    top = max(float(np.nanmax(r.targets / (r.data_max or 1.0))) for r in comparison.runs)
    right.plot([0, top], [0, top], color="#999999", linewidth=0.8, label="achieved = target")
    right.set_ylabel("achieved return / the data's best return")
    right.set_title("achieved against target, in units of each run's data", fontsize=10)
    return save_figure(fig, path)


def plot_gains(comparison: Comparison, path: Path) -> Path:
    """Left: the extrapolation gain above the data's best return as a fraction of it (95%
    interval). Right: where the policy saturates, as a multiple of the data's best return."""
    plt = pyplot()
    runs = comparison.runs
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.5 * len(runs) + 3.0))
    rows = np.arange(len(runs))
    for i, run in enumerate(runs):
        gain = run.gain or {}
        if gain.get("value") is None or not run.data_max:
            continue
        value = gain["value"] / run.data_max
        low, high = (np.array(gain.get("interval") or [np.nan, np.nan]) / run.data_max).tolist()
        err = [[value - low], [high - value]] if np.isfinite([low, high]).all() else None
        left.errorbar([value], [i], xerr=err, fmt="o", color=_colour(i), capsize=4)
    left.axvline(0.0, color="#777777", linewidth=1)
    left.set_xlabel("extrapolation gain / the data's best return")
    left.set_title("asked for more than the data holds: gain (95% interval)", fontsize=10)
    ratios = [r.saturation_ratio if r.saturation_ratio is not None else np.nan for r in runs]
    right.barh(rows, ratios, color=[_colour(i) for i in rows])
    right.axvline(1.0, color="#777777", linestyle="--", linewidth=1)
    right.set_xlabel("saturation RTG / the data's best return (missing: never saturates)")
    right.set_title("where the policy stops changing", fontsize=10)
    for ax in (left, right):
        ax.set_yticks(rows, [r.label for r in runs], fontsize=8)
        ax.set_ylim(len(runs) - 0.5, -0.5)  # first run on top, rows aligned across panels
    return save_figure(fig, path)


def _top_objects(run: ComparedRun) -> list[str]:
    objects = run.shares.get("objects", {})
    at_ref = run.reference_index
    ranked = [(v[at_ref] or 0.0, k) for k, v in objects.items() if k != "background" and v]
    return [k for _, k in sorted(ranked, reverse=True)[:TOP_OBJECTS]]


def plot_shares(comparison: Comparison, path: Path) -> Path:
    """Left: the share of |token IG| on RTG, state and action tokens at the best training
    return and at the top target, per run. Right: each run's most attributed game objects'
    share of |pixel IG| at the same two RTGs."""
    plt = pyplot()
    runs = comparison.runs
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4))
    labels, bottoms = [], None
    kinds = ("rtg", "state", "action")
    stacks = np.zeros((len(kinds), 2 * len(runs)))
    for i, run in enumerate(runs):
        tokens, ref = run.shares.get("tokens", {}), run.reference_index
        for k, kind in enumerate(kinds):
            values = tokens.get(kind) or [np.nan]
            stacks[k, 2 * i] = values[ref] if values[ref] is not None else np.nan
            stacks[k, 2 * i + 1] = values[-1] if values[-1] is not None else np.nan
        labels += [f"{run.label}\nref", f"{run.label}\ntop"]
    bottoms = np.zeros(stacks.shape[1])
    for k, kind in enumerate(kinds):
        left.bar(range(stacks.shape[1]), stacks[k], bottom=bottoms, label=kind, color=_colour(k))
        bottoms += np.nan_to_num(stacks[k])
    left.set_xticks(range(len(labels)), labels, fontsize=7)
    left.set_ylabel("share of |token IG|")
    left.set_title("token types: best training return (ref) vs top target", fontsize=10)
    left.legend(fontsize=7)
    names, ref_values, top_values = [], [], []
    for run in runs:
        objects, ref = run.shares.get("objects", {}), run.reference_index
        for name in _top_objects(run):
            names.append(f"{run.label}: {name}")
            ref_values.append(objects[name][ref] if objects[name][ref] is not None else np.nan)
            top_values.append(objects[name][-1] if objects[name][-1] is not None else np.nan)
    if names:
        y = np.arange(len(names))
        right.barh(y - 0.2, ref_values, height=0.4, color="#4477aa", label="at ref")
        right.barh(y + 0.2, top_values, height=0.4, color="#ee6677", label="at top")
        right.set_yticks(y, names, fontsize=7)
        right.invert_yaxis()
        right.legend(fontsize=7)
    else:
        right.text(0.5, 0.5, "no game-object labels for these runs", ha="center", va="center")
    right.set_xlabel("share of |pixel IG| (newest frame)")
    right.set_title("most attributed game objects", fontsize=10)
    return save_figure(fig, path)


FIGURES = {
    "sweeps": (
        "Each run's achieved score per target. Left: human-normalised (0 = random play, 100 = "
        "a human tester), from the episodes' raw game points; right: in units of each run's "
        "best data return, so a game's scale drops out. Right of the dashed line the target "
        "asks for more than any episode in that run's data."
    ),
    "gains": (
        "Left: how much more a run achieves when asked for more than its data's best return "
        "(the study's paired gain, 95% interval), as a fraction of that return: an interval "
        "holding 0 means no detectable extrapolation. Right: the RTG from which the policy "
        "stops changing, as a multiple of the data's best return."
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
    ("data_max", "data's best"),
    ("best_normalised", "best human-norm. %"),
    ("follows_target_rho", "follows target: rho"),
    ("follows_target_p", "p (rho > 0)"),
    ("gain_vs_data_max", "gain above data"),
    ("saturation_over_data_max", "saturation / data's best"),
    ("carrier_hook", "RTG read in at"),
    ("top_head", "top head"),
    ("steering_recovered", "steering recovers"),
)


def _cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "—"
    if key == "gain_vs_data_max" and row.get("gain_low") is not None:
        return f"{value:+.3g} [{row['gain_low']:.3g}, {row['gain_high']:.3g}]"
    return f"{value:.3g}" if isinstance(value, float) else html.escape(str(value))


def render_page(comparison: Comparison, figures: dict[str, Path], *, command: str) -> str:
    """The comparison's HTML (``figures``: name -> PNG, as ``write_figures`` made them)."""
    rows = comparison.table()
    title = "Comparing runs: " + ", ".join(r.label for r in comparison.runs)
    head = "".join(f"<th>{html.escape(name)}</th>" for _, name in SHOWN)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row, key)}</td>" for key, _ in SHOWN) + "</tr>"
        for row in rows
    )
    verdicts = "".join(
        f"<li><b>{html.escape(run.label)}</b>: {html.escape(run.verdict[0])} "
        f"{html.escape(follows_sentence(run.follows))}</li>"
        for run in comparison.runs
    )
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
