"""The Attribution page: pixel attribution (integrated gradients and the other methods) of the
chosen state's decision at one RTG and, beside it, the same decision at a second RTG: the
overlay per frame of the stack, the object masses and the convergence delta."""

from __future__ import annotations

import functools

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
    blind = run.model.cfg.behaviour_cloning  # no RTG tokens: one explanation, no returns
    key = functools.partial(_key, state.run)
    with st.form("attribution"):
        columns = st.columns(3)
        method = columns[0].selectbox(
            "Method", METHODS, key=key("method", METHODS[0]), persist_state="session"
        )
        baseline = columns[1].selectbox(
            "Baseline", BASELINES, key=key("baseline", "blur"), persist_state="session"
        )
        n_steps = int(
            columns[2].number_input(
                "Steps (IG)", 4, 512, step=4, key=key("n_steps", 50), persist_state="session"
            )
        )
        columns = st.columns(3)
        if blind:
            first = second = None
            columns[0].caption("a behaviour-cloning model: no return to ask for")
        else:
            first = columns[0].number_input(
                f"RTG A ({units})",
                float(low),
                float(high),
                key=key("rtg_a", marks.train_max),
                persist_state="session",
            )
            second = columns[1].number_input(
                f"RTG B ({units})",
                float(low),
                float(high),
                key=key("rtg_b", float(high)),
                persist_state="session",
            )
        options = ["the model's most likely" + ("" if blind else " at RTG A"), *names]
        chosen = columns[2].selectbox(
            "Action explained",
            range(len(options)),
            format_func=options.__getitem__,
            key=key("action", 0),
            persist_state="session",
        )
        st.form_submit_button("Attribute")
    action = None if chosen == 0 else chosen - 1
    explain = functools.partial(
        session.explanation, state.run, state.episode, state.step, method=method,
        baseline=baseline, n_steps=n_steps,
    )  # fmt: skip
    first_result = explain(rtg=first, action=action)
    # B explains the same action as A, so the two maps answer one question at two returns
    results = [(first, first_result)]
    if not blind:
        results.append((second, explain(rtg=second, action=first_result.target.action)))
    st.caption(
        f"Explained: the logit of {names[first_result.target.action]}, {method} against the "
        f"{baseline} baseline. Red raises it, blue lowers it."
    )
    frames = session.context(state.run, state.episode, state.step).frames[0, -1]  # [S, H, W]
    for column, (rtg, result) in zip(st.columns(2), results, strict=False):
        with column:
            _one(rtg, result, frames, units)


def _key(run_dir: str, name: str, default: object) -> str:
    return session.kept(f"{session.FORM[len(session.KEPT) :]}{name}", run_dir, default)


def _one(rtg: float | None, result, frames, units: str) -> None:
    """One explanation: its numbers, the overlay per frame of the stack, the object masses."""
    from atari_dt.attribution.plots import draw_object_masses, draw_stack_overlay

    st.subheader("no RTG (behaviour cloning)" if rtg is None else f"RTG {rtg:g} ({units})")
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
