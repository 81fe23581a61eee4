"""The RTG scan page: for the chosen state, a slider over the return-to-go (from below the
data's minimum to several times its maximum, the data's range marked) that updates the action
distribution, the current state token's attention to the RTG tokens and the direct logit
attribution of the chosen action; the scan curves over the whole range beside it."""

from __future__ import annotations

import streamlit as st

from atari_dt.app import session, show

TITLE = "RTG scan"


def render(state: session.State) -> None:
    run = session.open_run(state.run)
    if run.model.cfg.behaviour_cloning:
        st.warning("a behaviour-cloning model has no RTG tokens: there is nothing to scan")
        return
    marks = session.landmarks(state.run)
    low, high = session.rtg_range(state.run)
    names = show.action_names(run.game, run.model.cfg.n_actions)
    units = run.store.reward_units
    st.header(f"RTG scan: episode {state.episode}, step {state.step}")
    st.caption(
        f"Training returns {marks.data_min:g} .. {marks.train_max:g}, the store's best "
        f"{marks.data_max:g} ({units} rewards). The slider asks this state for a return; "
        "constant: the same RTG at every step of the window, decremented: the RTG at its first "
        "step, lowered by the rewards the window then received."
    )
    mode = st.radio(
        "RTG over the window",
        ["constant", "decremented"],
        horizontal=True,
        key=session.kept("scan.mode", state.run, "constant"),
    )
    rtg = st.slider(
        f"Return-to-go asked for ({units})",
        min_value=float(low),
        max_value=float(high),
        step=_step(low, high),
        key=rtg_key(state.run),
        help=f"data range {marks.data_min:g} .. {marks.data_max:g}",
    )
    show.range_strip(low, high, marks, rtg, units=units)
    where = "inside" if marks.data_min <= rtg <= marks.data_max else "outside"
    st.markdown(
        f"RTG **{rtg:g}** is {where} the data's range [{marks.data_min:g}, {marks.data_max:g}]."
    )
    decision = session.decision(state.run, state.episode, state.step, float(rtg), mode, None)

    left, right = st.columns([1, 1])
    with left:
        st.subheader("Action distribution")
        show.probability_table(decision.probabilities, names, marked=decision.action)
    with right:
        st.subheader("Attention to the RTG tokens")
        show.grouped_bars(
            decision.attention_to_rtg.numpy(), rows="layer", columns="head", value="attention"
        )
        st.caption("the last state token's attention, summed over the window's RTG tokens")
        st.subheader(f"Direct logit attribution of {names[decision.action]}")
        show.component_bars(
            decision.dla.values[:, 0].numpy(), decision.dla.labels, value="logit contribution"
        )
    st.subheader("Over the whole range")
    tabs = st.tabs(["this state", f"{session.POPULATION} training windows (the batch scan)"])
    tabs[0].image(_scan_png(state.run, state.episode, state.step, mode), width="stretch")
    tabs[1].image(_scan_png(state.run, None, None, mode), width="stretch")
    st.caption(
        "Action probabilities, entropy and divergence to the reference RTG, and the "
        "saturation of the RTG embedding along the study's scan grid; grey: training returns."
    )


@st.cache_data(max_entries=32, show_spinner=False)
def _scan_png(run_dir: str, episode: int | None, step: int | None, mode: str) -> bytes:
    """A scan's figure (``session.scan``), drawn once per input, not on every slider move."""
    from atari_dt.analysis.plots import draw_scan

    report = session.scan(run_dir, episode, step, mode)
    title = "this state" if episode is not None else f"{report.contexts} training windows"
    return show.png(draw_scan(report.scan, report.saturation, title=title))


def rtg_key(run_dir: str) -> str:
    """The RTG slider's key (started at the best training return)."""
    return session.kept("scan.rtg", run_dir, float(session.landmarks(run_dir).train_max))


def _step(low: float, high: float) -> float:
    """A slider step of about 1/200 of the range, a round number."""
    import math

    raw = (high - low) / 200
    if raw <= 0:
        return 1.0
    return float(10 ** math.floor(math.log10(raw)))
