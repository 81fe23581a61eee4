"""The Attribution page: pixel attribution (integrated gradients and the other methods) of the
chosen state's decision at one RTG and, beside it, the same decision at a second RTG: the
overlay per frame of the stack, the object masses and the convergence delta."""

from __future__ import annotations

import streamlit as st

from atari_dt.app import session, show

TITLE = "Attribution"

METHODS = (
    "ig",
    "smoothgrad",
    "gradient_shap",
    "occlusion",
    "ablation_frames",
    "ablation_superpixels",
)
BASELINES = ("black", "blur", "mean", "noise")


def render(state: session.State) -> None:
    run = session.open_run(state.run)
    marks = session.landmarks(state.run)
    low, high = session.rtg_range(state.run)
    names = show.action_names(run.game, run.model.cfg.n_actions)
    units = run.store.reward_units
    st.header(f"Attribution: episode {state.episode}, step {state.step}")
    with st.form("attribution"):
        columns = st.columns(3)
        method = columns[0].selectbox("Method", METHODS)
        baseline = columns[1].selectbox("Baseline", BASELINES, index=1)
        n_steps = int(columns[2].number_input("Steps (IG)", 4, 512, 50, step=4))
        columns = st.columns(3)
        first = columns[0].number_input(
            f"RTG A ({units})", float(low), float(high), float(marks.train_max)
        )
        second = columns[1].number_input(f"RTG B ({units})", float(low), float(high), float(high))
        options = ["the model's most likely at RTG A", *names]
        chosen = columns[2].selectbox(
            "Action explained", range(len(options)), format_func=options.__getitem__
        )
        st.form_submit_button("Attribute")
    action = None if chosen == 0 else chosen - 1
    first_result = session.explanation(
        state.run, state.episode, state.step, float(first), action, method, baseline, n_steps
    )
    # B explains the same action as A, so the two maps answer one question at two returns
    second_result = session.explanation(
        state.run,
        state.episode,
        state.step,
        float(second),
        first_result.target.action,
        method,
        baseline,
        n_steps,
    )
    st.caption(
        f"Explained: the logit of {names[first_result.target.action]}, {method} against the "
        f"{baseline} baseline. Red raises it, blue lowers it."
    )
    frames = session.context(state.run, state.episode, state.step).frames[0, -1]  # [S, H, W]
    left, right = st.columns(2)
    for column, rtg, result in ((left, first, first_result), (right, second, second_result)):
        with column:
            _one(rtg, result, frames, units)


def _one(rtg: float, result, frames, units: str) -> None:
    """One explanation: its numbers, the overlay per frame of the stack, the object masses."""
    from atari_dt.attribution.plots import draw_object_masses, draw_stack_overlay

    st.subheader(f"RTG {rtg:g} ({units})")
    pixels = result.pixels
    delta = pixels.convergence_delta
    columns = st.columns(3)
    columns[0].metric(
        "P(explained action)", f"{float(result.probabilities[result.target.action]):.3f}"
    )
    columns[1].metric("target value", f"{float(pixels.target_value):.3g}")
    columns[2].metric(
        "convergence delta",
        "n/a" if delta is None else f"{float(delta):.2g}",
        help="IG completeness: sum of attributions minus (f(x) - f(baseline)); "
        "only the path methods have one",
    )
    newest = pixels.newest
    if newest is None:
        st.info("the newest step was not attributed")
        return
    show.figure(
        draw_stack_overlay(frames, newest, title="per frame of the stack", boxes=result.boxes),
        stretch=True,
    )
    if result.objects is not None:
        show.figure(draw_object_masses(result.objects, title="attribution per object"))
    else:
        st.caption("no object labels for this game or store (RAM not recorded)")
