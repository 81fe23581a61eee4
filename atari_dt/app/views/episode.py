"""The Episode page: a frame player over one episode of the store (the sidebar's episode and
step): the frame stack the model sees, the action the data took, the RTG, and the model's
action distribution at that step."""

from __future__ import annotations

import streamlit as st

from atari_dt.app import session, show

TITLE = "Episode"


def render(state: session.State) -> None:
    run = session.open_run(state.run)
    ctx = session.context(state.run, state.episode, state.step)
    names = show.action_names(run.game, run.model.cfg.n_actions)
    st.header(
        f"Episode {state.episode}, step {state.step} of {int(run.store.lengths[state.episode])}"
    )
    st.caption(
        f"return {float(run.store.returns[state.episode]):g} ({run.store.reward_units} rewards)"
        f"{'' if bool(run.store.complete[state.episode]) else ', cut (not trained on)'}; "
        f"behaviour: {_behaviour(ctx)}. Move the step in the sidebar to play the episode."
    )
    _player(state, int(run.store.lengths[state.episode]))
    frames = ctx.frames[0, -1].cpu().numpy()  # [S, H, W] the newest stack of the window
    show.frame_stack(frames)
    taken = int(ctx.actions[0, -1])
    columns = st.columns(3)
    columns[0].metric("action taken (data)", names[taken] if taken < len(names) else taken)
    columns[1].metric(f"RTG ({run.store.reward_units})", f"{float(ctx.rtg[0, -1]):g}")
    columns[2].metric("timestep", int(ctx.timesteps[0, -1]))
    decision = session.decision(state.run, state.episode, state.step, None, "constant", None)
    st.subheader("The model's action distribution at this step (the data's RTG)")
    left, right = st.columns([2, 1])
    with left:
        show.probability_bars(decision.probabilities, names)
    with right:
        show.probability_table(decision.probabilities, names, marked=taken, mark="taken")


def _player(state: session.State, length: int) -> None:
    """Buttons that step the sidebar's step slider back and forth."""
    key = session.step_key(state.run, state.episode)

    def move(by: int) -> None:
        st.session_state[key] = min(max(st.session_state.get(key, state.step) + by, 0), length - 1)

    columns = st.columns(6)
    for column, by, text in zip(
        columns, (-10, -1, 1, 10), ("<< 10", "< 1", "1 >", "10 >>"), strict=False
    ):
        column.button(text, on_click=move, args=(by,), key=f"move{by}", width="stretch")


def _behaviour(ctx) -> str:
    labels = getattr(ctx, "behaviour", None)
    return str(labels[0]) if labels is not None and len(labels) and labels[0] else "not recorded"
