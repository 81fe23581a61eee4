"""The Heads page: every head's attention pattern on the chosen state with ``R/s/a`` token
labels, the direct logit attribution per head, and activation patching from an in-distribution
return into an out-of-distribution one (per head, and per layer and position)."""

from __future__ import annotations

import streamlit as st

from atari_dt.app import session, show

TITLE = "Heads"


def render(state: session.State) -> None:
    from atari_dt.analysis.patching import NothingToRestore
    from atari_dt.analysis.plots import draw_attention_grid

    run = session.open_run(state.run)
    marks = session.landmarks(state.run)
    low, high = session.rtg_range(state.run)
    names = show.action_names(run.game, run.model.cfg.n_actions)
    units = run.store.reward_units
    st.header(f"Heads: episode {state.episode}, step {state.step}")
    blind = run.model.cfg.behaviour_cloning  # no RTG tokens: nothing to ask for or patch
    if blind:
        clean_rtg = corrupted_rtg = None
        st.caption("a behaviour-cloning model: no RTG tokens, so no return to ask for or patch")
    else:
        columns = st.columns(2)
        clean_rtg = columns[0].number_input(
            f"In-distribution RTG ({units})",
            float(low),
            float(high),
            key=session.kept("heads.clean_rtg", state.run, float(marks.train_max)),
        )
        corrupted_rtg = columns[1].number_input(
            f"Out-of-distribution RTG ({units})",
            float(low),
            float(high),
            key=session.kept("heads.corrupted_rtg", state.run, float(high)),
        )
    decision = session.decision(state.run, state.episode, state.step, clean_rtg, "constant", None)
    action = decision.action
    patterns = session.patterns(state.run, state.episode, state.step, clean_rtg)
    at = "" if clean_rtg is None else f" at RTG {clean_rtg:g}"

    st.subheader(f"Attention patterns{at}")
    show.figure(
        draw_attention_grid(
            patterns.patterns.numpy(), patterns.labels, title="query (down) attends to key (across)"
        )
    )

    left, right = st.columns(2)
    left.subheader(f"Direct logit attribution of {names[action]} per head")
    heads = decision.dla.heads[:, :, 0].numpy()  # [L, H]
    with left:
        _heatmap(
            heads,
            title=f"each head's direct push on the logit of {names[action]}{at}",
            xlabel="head",
            ylabel="layer",
            xticks=[str(h) for h in range(heads.shape[1])],
        )

    if clean_rtg is None or corrupted_rtg is None:
        return  # behaviour cloning: no return to patch
    right.subheader("Activation patching: in- vs out-of-distribution return")
    other = int(decision.probabilities.argmin())
    right.caption(
        f"Metric: logit({names[action]}) - logit({names[other]}). Each head's output (or the "
        f"residual stream at one layer and position) from the run at RTG {clean_rtg:g} is "
        f"patched into the run at RTG {corrupted_rtg:g}; 1 restores the in-distribution value."
    )
    try:
        by_head, by_position = session.patching(
            state.run,
            state.episode,
            state.step,
            clean_rtg,
            corrupted_rtg,
            action,
            other,
        )
    except NothingToRestore as err:
        right.info(f"Nothing to patch: {err}")
        return
    restored = by_head.restored.numpy()
    with right:
        _heatmap(
            restored,
            title="restored by each head (hook_z)",
            xlabel="head",
            ylabel="layer",
            xticks=[str(h) for h in range(restored.shape[1])],
        )
    _heatmap(
        by_position.restored.numpy(),
        title="restored by the residual stream at one layer and position (hook_resid_pre)",
        xlabel="token",
        ylabel="layer",
        xticks=patterns.labels,
        yticks=by_position.labels,
    )
    st.caption(
        f"metric at RTG {clean_rtg:g}: {by_head.clean_metric:.3f}; at RTG {corrupted_rtg:g}: "
        f"{by_head.corrupted_metric:.3f}"
    )


def _heatmap(values, **labels) -> None:
    """A signed matrix at the column's width."""
    from atari_dt.analysis.plots import draw_heatmap

    show.figure(draw_heatmap(values, **labels), stretch=True)
