"""What one browser session of the app shares: the runs it may open (only those it was started
with), the chosen run and state (sidebar widgets, mirrored in the URL's query parameters so a
view can be linked), and the library's results, cached per input.

Runs and their encoded contexts are resources (``st.cache_resource``: loaded once, shared, not
copied); analysis results are data (``st.cache_data``: keyed by every input that changes them).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import streamlit as st

from atari_dt.app import RUNS_ENV
from atari_dt.errors import UserError

if TYPE_CHECKING:
    from atari_dt.analysis.patching import PatchingResult
    from atari_dt.analysis.rtg_point import DecisionAtRtg
    from atari_dt.analysis.scan_report import ScanReport
    from atari_dt.attribution.explain import Explanation
    from atari_dt.datasets.contexts import Contexts
    from atari_dt.run import Run
    from atari_dt.study.grid import Landmarks


def run_dirs() -> list[str]:
    """The run directories the app was started with, in order.

    Raises:
        UserError: none were given, or the variable is not a JSON list of paths.
    """
    text = os.environ.get(RUNS_ENV, "")
    try:
        runs = json.loads(text) if text else []
    except json.JSONDecodeError as err:
        raise UserError(f"{RUNS_ENV} must be a JSON list of run directories: {err}") from None
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs) or not runs:
        raise UserError(
            f"start the app with run directories: atari-dt app RUN [RUN ...] ({RUNS_ENV})"
        )
    return runs


@st.cache_resource(show_spinner="Opening the run ...", max_entries=8)
def open_run(path: str) -> Run:
    """The run at ``path`` with its model and store, once per server (shared by sessions).

    Raises:
        FileNotFoundError, UserError: see ``load_run``.
    """
    from atari_dt.run import load_run

    return load_run(path)


def label(path: str) -> str:
    """A run's name in the sidebar: its directory and its parent (``demo/train``)."""
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


# ---------------------------------------------------------------------------- the selection


@dataclass(frozen=True)
class State:
    """The state every page looks at: ``episode`` (store numbering) and ``step`` of ``run``."""

    run: str
    episode: int
    step: int


def _query_int(name: str) -> int | None:
    value = st.query_params.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        st.error(f"URL parameter {name}={value!r} is not a whole number; ignored")
        return None


def choose_run(runs: list[str]) -> str:
    """The sidebar's run selector (``?run=K`` picks the K-th run)."""
    asked = _query_int("run")
    if asked is not None and not 0 <= asked < len(runs):
        st.error(f"URL parameter run={asked}: there are {len(runs)} runs (0..{len(runs) - 1})")
        asked = None
    index = st.sidebar.selectbox(
        "Run", range(len(runs)), index=asked or 0, format_func=lambda i: label(runs[i])
    )
    st.query_params["run"] = str(index)
    return runs[index]


def choose_state(run_dir: str, run: Run) -> State:
    """The sidebar's episode and step of the run's store. A new session starts at the URL's
    ``?episode=E&step=T`` (values outside the store are reported on the page and replaced by
    0 and step 50 or the last); the URL then follows the widgets, so a view can be linked."""
    lengths = run.store.lengths
    n_episodes = len(lengths)
    episode_key = f"episode:{run_dir}"
    if episode_key not in st.session_state:
        asked = _query_int("episode")
        if asked is not None and not 0 <= asked < n_episodes:
            st.error(f"episode {asked} is not in the store: it has episodes 0..{n_episodes - 1}")
            asked = None
        st.session_state[episode_key] = asked or 0
    episode = int(
        st.sidebar.number_input(
            f"Episode (0..{n_episodes - 1})",
            min_value=0,
            max_value=n_episodes - 1,
            step=1,
            key=episode_key,
        )
    )
    last = int(lengths[episode]) - 1
    key = step_key(run_dir, episode)
    if key not in st.session_state:
        asked = _query_int("step") if st.query_params.get("episode") == str(episode) else None
        if asked is not None and not 0 <= asked <= last:
            st.error(f"step {asked} is not in episode {episode}: it has steps 0..{last}")
            asked = None
        st.session_state[key] = min(asked if asked is not None else 50, last)
    # a slider needs a non-empty range: a one-step episode still shows 0..1
    step = min(int(st.sidebar.slider("Step", min_value=0, max_value=max(last, 1), key=key)), last)
    st.query_params.update({"episode": str(episode), "step": str(step)})
    return State(run_dir, episode, step)


def step_key(run_dir: str, episode: int) -> str:
    """The session-state key of the step slider of one episode (one per episode: the range
    differs)."""
    return f"step:{run_dir}:{episode}"


# ---------------------------------------------------------------------------- cached results


@st.cache_resource(max_entries=64, show_spinner=False)
def context(run_dir: str, episode: int, step: int) -> Contexts:
    """The window ending at ``step`` of ``episode`` as training cut it, encoded once."""
    run = open_run(run_dir)
    return run.contexts(episode, step).encoded(run.model)


@st.cache_data(max_entries=32, show_spinner=False)
def landmarks(run_dir: str) -> Landmarks:
    """The store's and the training data's returns the study marks (min, median, max)."""
    from atari_dt.study.grid import landmarks as marks_of

    run = open_run(run_dir)
    return marks_of(run.store.returns[run.store.complete], run.train_returns)


def rtg_range(run_dir: str) -> tuple[float, float]:
    """The RTG slider's range: the study's target grid (below the data's minimum to four
    times its maximum, or steps of its span when the maximum is near or below 0)."""
    from atari_dt.study.grid import target_grid

    grid = target_grid(landmarks(run_dir))
    return float(grid[0]), float(grid[-1])


@st.cache_data(max_entries=1024, show_spinner=False)
def decision(
    run_dir: str, episode: int, step: int, rtg: float | None, mode: str, action: int | None
) -> DecisionAtRtg:
    """``decision_at_rtg`` of the state at ``rtg`` (None: the data's own RTG)."""
    from atari_dt.analysis.rtg_point import decision_at_rtg

    run = open_run(run_dir)
    return decision_at_rtg(
        run.model, context(run_dir, episode, step), rtg, mode=mode, action=action
    )


POPULATION = 64
"""Training windows of the batch scan (drawn as training draws them, seed 0)."""


@st.cache_data(max_entries=32, show_spinner="Scanning the RTG ...")
def scan(run_dir: str, episode: int | None, step: int | None, mode: str) -> ScanReport:
    """``scan_report`` over the study's fine scan grid: of the state (``episode``, ``step``),
    or with both None of ``POPULATION`` training windows (the batch scan)."""
    from atari_dt.analysis.scan_report import scan_report
    from atari_dt.study.grid import scan_grid, target_grid

    run = open_run(run_dir)
    grid = scan_grid(target_grid(landmarks(run_dir)))
    if episode is None or step is None:
        contexts = run.sample_contexts(POPULATION, seed=0)
    else:
        contexts = context(run_dir, episode, step)
    return scan_report(run.model, contexts, grid, mode=mode, data_returns=run.train_returns)


@st.cache_data(max_entries=64, show_spinner="Attributing ...")
def explanation(
    run_dir: str,
    episode: int,
    step: int,
    rtg: float | None,
    action: int | None,
    method: str,
    baseline: str,
    n_steps: int,
) -> Explanation:
    """``explain_decision`` of the state at ``rtg`` (None: its own), for ``action``."""
    from atari_dt.analysis.scan import scanned_rtg
    from atari_dt.attribution.explain import explain_decision

    run = open_run(run_dir)
    ctx = context(run_dir, episode, step)
    if rtg is not None:
        ctx = ctx.with_rtg(scanned_rtg(ctx, rtg, "constant"))
    mean_frame = _mean_frame(run_dir) if baseline == "mean" else None
    return explain_decision(
        run.model,
        ctx,
        action=action,
        method=method,  # type: ignore[arg-type]
        baseline=baseline,  # type: ignore[arg-type]
        n_steps=n_steps,
        mean_frame=mean_frame,
    )


@st.cache_resource(max_entries=8, show_spinner="Averaging frames ...")
def _mean_frame(run_dir: str) -> Any:
    import torch

    return torch.as_tensor(open_run(run_dir).store.mean_frame())


@st.cache_data(max_entries=64, show_spinner=False)
def patterns(run_dir: str, episode: int, step: int, rtg: float | None) -> Any:
    """``mean_patterns`` of the one state (its attention patterns) at ``rtg``."""
    from atari_dt.analysis.attention import mean_patterns
    from atari_dt.analysis.scan import scanned_rtg

    run = open_run(run_dir)
    ctx = context(run_dir, episode, step)
    if rtg is not None:
        ctx = ctx.with_rtg(scanned_rtg(ctx, rtg, "constant"))
    return mean_patterns(run.model, ctx)


@st.cache_data(max_entries=32, show_spinner="Patching ...")
def patching(
    run_dir: str,
    episode: int,
    step: int,
    clean_rtg: float,
    corrupted_rtg: float,
    action: int,
    other_action: int,
) -> tuple[PatchingResult, PatchingResult]:
    """Activation patching (denoising) from the state asked for ``clean_rtg`` into the same
    state asked for ``corrupted_rtg``, on the logit difference ``action - other_action``: per
    head (``patch_heads``) and per layer and position (``patch_residual``).

    Raises:
        NothingToRestore: both RTGs give the same logit difference.
    """
    from atari_dt.analysis.patching import patch_heads, patch_residual
    from atari_dt.analysis.scan import scanned_rtg
    from atari_dt.attribution.core import Target

    run = open_run(run_dir)
    ctx = context(run_dir, episode, step)
    clean = ctx.with_rtg(scanned_rtg(ctx, clean_rtg, "constant"))
    corrupted = ctx.with_rtg(scanned_rtg(ctx, corrupted_rtg, "constant"))
    metric = Target(action=action, kind="logit_diff", other_action=other_action)
    return (
        patch_heads(run.model, clean, corrupted, metric),
        patch_residual(run.model, clean, corrupted, metric),
    )
