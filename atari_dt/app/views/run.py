"""The Run page: config, data provenance and returns, training curves, the sweep, and the
study's headline numbers when the run has a study."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from atari_dt.app import session, show

TITLE = "Run"


def render(state: session.State) -> None:
    from atari_dt.config import config_to_dict
    from atari_dt.datasets.plots import draw_returns
    from atari_dt.datasets.summary import return_histogram, store_summary

    run = session.open_run(state.run)
    directory = Path(state.run)
    marks = session.landmarks(state.run)
    cfg = run.model.cfg
    st.header(f"{run.game}: {session.label(state.run)}")
    columns = st.columns(4)
    columns[0].metric("model step", run.metadata.get("step", "?"))
    columns[1].metric("layers x heads x d", f"{cfg.n_layers} x {cfg.n_heads} x {cfg.d_model}")
    columns[2].metric("context (steps)", cfg.context_len)
    columns[3].metric("episodes in the store", len(run.store))
    with st.expander("Config (config.yaml)"):
        st.json(config_to_dict(run.config))

    st.subheader("Data")
    summary = store_summary(run.store)
    held = " (the top was held out)" if marks.held_out else ""
    st.write(
        f"{summary['transitions']:,} transitions, {summary['n_complete']} complete episodes; "
        f"returns ({summary['reward_units']}) {marks.data_min:g} .. {marks.data_max:g} in the "
        f"store, {len(run.train_episodes)} training episodes up to {marks.train_max:g}{held}."
    )
    show.figure(draw_returns(summary, *return_histogram(run.store.returns[run.store.complete])))
    with st.expander("Provenance (source and behaviour policy)"):
        st.json({"source": summary["source"], "behaviour_policy": summary["behaviour_policy"]})

    st.subheader("Training")
    _training_curves(directory)

    st.subheader("Target-return sweep")
    _sweep(directory)

    st.subheader("RTG-extrapolation study")
    _study(directory)


def _training_curves(directory: Path) -> None:
    import pandas as pd

    from atari_dt.training.metrics import read_metrics

    records = [r for r in read_metrics(directory) if "train/loss" in r]
    if not records:
        st.info(f"no training metrics in {directory / 'metrics.jsonl'}")
        return
    frame = pd.DataFrame(records).set_index("step")
    left, right = st.columns(2)
    left.caption("training loss (cross-entropy of the actions, nats)")
    left.line_chart(frame[["train/loss"]], height=220)
    if "train/action_accuracy" in frame:
        right.caption("action accuracy on the training batches")
        right.line_chart(frame[["train/action_accuracy"]], height=220)


def _sweep(directory: Path) -> None:
    import pandas as pd

    path = directory / "eval" / "sweep.json"
    if not path.is_file():
        st.info(f"no sweep yet: `atari-dt eval {directory}` writes {path}")
        return
    sweep = json.loads(path.read_text())
    rows = [
        {
            "target": t["target"],
            "mean": f"{t['mean']:.1f}",
            "95% interval": "n/a"
            if t["ci95"] is None or None in t["ci95"]
            else f"[{t['ci95'][0]:.1f}, {t['ci95'][1]:.1f}]",
            "episodes": len(t["returns"]),
        }
        for t in sweep["targets"]
    ]
    left, right = st.columns([1, 1])
    left.table(pd.DataFrame(rows).set_index("target"))
    if (directory / "eval" / "sweep.png").is_file():
        right.image(str(directory / "eval" / "sweep.png"))


def _study(directory: Path) -> None:
    import pandas as pd

    from atari_dt.study.compare import study_dir

    path = study_dir(directory) / "summary.json"
    if not path.is_file():
        st.info(f"no study yet: `atari-dt study {directory}` writes {path}")
        return
    try:
        summary = json.loads(path.read_text())
        verdict, headline = summary["verdict"], summary["headline"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        st.error(f"{path} is not a study summary ({err}); run `atari-dt study {directory}` again")
        return
    for sentence in verdict:
        st.markdown(f"- {sentence}")
    rows = [
        {
            "quantity": name,
            "value [95% interval]": show.entry_text(entry),
            "how": entry.get("how", ""),
        }
        for name, entry in headline.items()
        if isinstance(entry, dict)
    ]
    st.table(pd.DataFrame(rows).set_index("quantity"))
    report = path.parent / "report.html"
    if report.is_file():
        st.caption(f"The full report: {report}")
