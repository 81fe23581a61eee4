"""The study as one self-contained HTML page: the verdict on top, then behaviour, the
transformer, the pixels, and the run's config and data provenance. Images are embedded as
data URIs and the page loads nothing over the network, so it opens from a file anywhere."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from atari_dt.study.study import Study

CSS = """
body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.verdict{background:#f4f7fb;border-left:4px solid #4477aa;padding:.6em 1.2em}
.verdict li{margin:.3em 0} figure{margin:1.2em 0} img{max-width:100%}
figcaption{color:#555;font-size:.9em;margin-top:.3em} table{border-collapse:collapse;font-size:.9em}
td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left} code,pre{font-size:.85em}
pre{background:#f6f6f6;padding:.8em;overflow-x:auto} .how{color:#555;font-size:.85em}
"""


def _image(path: Path) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f'<img alt="{html.escape(Path(path).stem)}" src="data:image/png;base64,{data}">'


def figure_html(path: Path, how_to_read: str) -> str:
    return f"<figure>{_image(path)}<figcaption>{html.escape(how_to_read)}</figcaption></figure>"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | dict):
        return html.escape(json.dumps(value, default=str)[:300])
    return html.escape(str(value))


def _headline_table(headline: dict[str, Any]) -> str:
    rows = []
    for name, entry in headline.items():
        interval = entry.get("interval")
        shown = f"[{interval[0]:.4g}, {interval[1]:.4g}]" if interval else "—"
        rows.append(
            f"<tr><td><code>{html.escape(name)}</code></td><td>{_number(entry['value'])}</td>"
            f"<td>{shown}</td><td class='how'>{html.escape(entry['how'])}</td></tr>"
        )
    head = "<tr><th>number</th><th>value</th><th>95% interval</th><th>how it was computed</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


FIGURES = {
    "behaviour": (
        "Left: achieved return per target (dots: episodes; bars: 95% t interval); the grey band "
        "is the data's range, dashed its best return, dotted the best training return. Right: "
        "how often each action was taken at each target — a new behaviour shows as a new pattern."
    ),
    "divergence": (
        "How far the action distribution on the same states moves from the one at the best "
        "training return as the RTG grows (band: 95% bootstrap over contexts); the black line is "
        "where the policy stops changing."
    ),
    "imitation": (
        "Fraction of steps on which the DT does what the scripted expert would do on the same "
        "emulator state; the dash-dotted lines are the same agreement in the data, per behaviour."
    ),
    "scan": (
        "The RTG scan: the mean policy, its entropy and divergence as the RTG asked for sweeps "
        "far beyond the data (shaded); saturation of the RTG embedding on the right."
    ),
    "attention_to_rtg": (
        "Attention from the decision's state token to the RTG tokens, per head (rows) along the "
        "scan (columns): a head that reads the return attends more as it matters."
    ),
    "dla_along_scan": (
        "Direct logit attribution of the reference action per component along the scan: which "
        "component's direct contribution changes with the RTG."
    ),
    "patching": (
        "Fraction of the RTG's effect restored by patching one activation of the high-RTG run into "
        "the low-RTG run (1: that activation carries all of it). Left: residual by position; "
        "right: heads."
    ),
    "steering": (
        "Adding the RTG direction at each residual hook to low-RTG runs of held-out contexts: 1 "
        "means it does what raising the RTG does, 0 nothing (bars: 95% bootstrap)."
    ),
    "pixel_maps": (
        "Integrated gradients of the same decisions at each RTG (red raises the target action's "
        "logit, blue lowers it); the last columns attribute the mechanism's components (the "
        "patched head, the RTG direction) to the same pixels."
    ),
    "pixel_shares": (
        "Left: how similar each RTG's map stays to the in-distribution one. Middle: share of the "
        "attribution on each game object. Right: share of the token attribution on RTG, state "
        "and action tokens."
    ),
}

SECTIONS = (
    ("1. Behaviour", ("behaviour", "divergence", "imitation")),
    (
        "2. Inside the transformer",
        ("scan", "attention_to_rtg", "dla_along_scan", "patching", "steering"),
    ),
    ("3. Pixels, linked to the mechanism", ("pixel_maps", "pixel_shares")),
)


def render_report(study: Study, summary: dict[str, Any], figures: dict[str, Path]) -> str:
    """The report's HTML (``figures``: name -> PNG, as ``write_figures`` made them)."""
    prov = study.provenance
    title = f"RTG-extrapolation study: {prov['game']}, {Path(prov['run']).name}"
    verdict = "".join(f"<li>{html.escape(line)}</li>" for line in summary["verdict"])
    parts = [
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<div class='verdict'><h2 style='border:0;margin-top:.3em'>Verdict</h2>"
        f"<ul>{verdict}</ul></div>",
        f"<p>Returns in <b>{html.escape(study.sweep.reward_units)}</b> rewards. Data: "
        f"{study.marks.data_min:g}–{study.marks.data_max:g} (complete episodes), training "
        f"median {study.marks.train_median:g}, best training return {study.marks.train_max:g}"
        f"{' (top held out)' if study.marks.held_out else ''}. Targets: "
        f"{', '.join(f'{t:g}' for t in study.grid)}.</p>",
    ]
    for heading, names in SECTIONS:
        present = [n for n in names if n in figures]
        parts.append(f"<h2>{html.escape(heading)}</h2>")
        if not present:
            parts.append("<p>Not available for this run (see the summary).</p>")
        parts += [figure_html(figures[n], FIGURES[n]) for n in present]
        if heading.startswith("1") and study.imitation is None:
            parts.append(
                "<p>No expert is recorded in this run's data (or no RAM), so which behaviour "
                "the DT imitates cannot be measured.</p>"
            )
    parts += [
        "<h2>4. Summary: every headline number</h2>",
        _headline_table(summary["headline"]),
        f"<p class='how'>Command: <code>{html.escape(summary['command'])}</code>, seed "
        f"{summary['seed']}. Parts computed now: "
        f"{html.escape(', '.join(summary['cache']['computed']) or 'none')}; "
        f"reused from the cache: {len(summary['cache']['reused'])}.</p>",
        "<h2>5. Run and data provenance</h2>",
        f"<pre>{html.escape(json.dumps(prov, indent=2, default=str))}</pre>",
        "</body></html>",
    ]
    return "\n".join(parts)


def write_figures(study: Study, directory: Path) -> dict[str, Path]:
    """Every figure of the report as a PNG in ``directory``: name -> path."""
    from atari_dt.analysis.plots import plot_heatmap, plot_scan
    from atari_dt.study import plots

    d = Path(directory)
    figures = {
        "behaviour": plots.plot_behaviour(study, d / "behaviour.png"),
        "divergence": plots.plot_divergence(study, d / "divergence.png"),
        "scan": plot_scan(study.scan.scan, study.scan.saturation, d / "scan.png", title="RTG scan"),
        "patching": plots.plot_patching(study, d / "patching.png"),
        "steering": plots.plot_steering(study, d / "steering.png"),
        "pixel_maps": plots.plot_pixel_maps(study, d / "pixel_maps.png"),
        "pixel_shares": plots.plot_pixel_shares(study, d / "pixel_shares.png"),
    }
    cfg = study.scan
    L, H = cfg.attention_to_rtg.shape[1:]
    figures["attention_to_rtg"] = plot_heatmap(
        cfg.attention_to_rtg.numpy().reshape(len(cfg.scan.rtg), -1).T,
        d / "attention_to_rtg.png",
        title="attention from the last state token to the RTG tokens",
        xlabel="scan RTG index",
        ylabel="head",
        yticks=[f"L{layer}H{h}" for layer in range(L) for h in range(H)],
    )
    figures["dla_along_scan"] = plot_heatmap(
        cfg.dla.values.numpy().T,
        d / "dla_along_scan.png",
        title=f"direct logit attribution of action {cfg.dla.target.action} along the scan",
        xlabel="scan RTG index",
        ylabel="component",
        yticks=cfg.dla.labels,
    )
    if study.imitation is not None:
        figures["imitation"] = plots.plot_imitation(study, d / "imitation.png")
    return figures
