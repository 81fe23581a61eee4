"""What one browser session of the app shares: the runs it may open (only those it was started
with), the chosen run and state (sidebar widgets, mirrored in the URL's query parameters so a
view can be linked), and the library's results, cached per input.

Runs and their encoded contexts are resources (``st.cache_resource``: loaded once, shared, not
copied); analysis results are data (``st.cache_data``: keyed by every input that changes them).
"""

from __future__ import annotations

import json
import os
import threading
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

KEPT = "w."
"""Prefix of the widget keys whose values outlive a rerun that does not draw them."""
FORM = f"{KEPT}attribution."
"""Prefix of the Attribution form's keys: not written back (that would reset a form the user
is editing whenever something outside it reruns); they persist by ``persist_state``."""


@dataclass(frozen=True)
class State:
    """The state every page looks at: ``episode`` (store numbering) and ``step`` of ``run``."""

    run: str
    episode: int
    step: int


def keep_widget_values() -> None:
    """Streamlit forgets the value of a widget that a rerun does not draw (another page's
    slider, another run's episode); assigning each kept key to itself keeps it."""
    for key in list(st.session_state):
        if isinstance(key, str) and key.startswith(KEPT) and not key.startswith(FORM):
            st.session_state[key] = st.session_state[key]


def shown(value: object) -> str:
    """A value from the URL quoted as code, so the page never renders it as Markdown."""
    one_line = " ".join(str(value).replace("`", "").split())  # a newline would end the code
    return "`" + one_line[:80] + "`"


def read_url(runs: list[str], pages: list[str]) -> None:
    """On a session's first run only: start from the URL's ``?run=K&page=P&episode=E&step=T``.
    Values the runs or the store do not have are reported on the page and left at the
    defaults (run 0, the Run page, episode 0, step 50 or the episode's last)."""
    if f"{KEPT}url_read" in st.session_state:
        return
    st.session_state[f"{KEPT}url_read"] = True
    index = _query_int("run", len(runs), "runs")
    st.session_state[f"{KEPT}run"] = index or 0
    page = st.query_params.get("page")
    if page is not None and page not in pages:
        st.error(f"no page {shown(page)}; pages: {', '.join(pages)}")
        page = None
    st.session_state[f"{KEPT}page"] = page or pages[0]
    try:
        lengths = open_run(runs[index or 0]).store.lengths
    except (UserError, FileNotFoundError):
        return  # main says why the run cannot be opened
    episode = _query_int("episode", len(lengths), "episodes in the store")
    if episode is None:
        return
    st.session_state[episode_key(runs[index or 0])] = episode
    step = _query_int("step", int(lengths[episode]), f"steps in episode {episode}")
    if step is not None:
        st.session_state[step_key(runs[index or 0], episode)] = step


def _query_int(name: str, count: int, what: str) -> int | None:
    """The URL's ``name`` as an index below ``count``, or None (missing, or reported)."""
    value = st.query_params.get(name)
    if value is None:
        return None
    try:
        index = int(value)
    except ValueError:
        st.error(f"URL parameter {name}={shown(value)} is not a whole number; ignored")
        return None
    if not 0 <= index < count:
        st.error(f"{name} {index} is not there: there are {count} {what} (0..{count - 1})")
        return None
    return index


def choose_run(runs: list[str]) -> str:
    """The sidebar's run selector."""
    index = st.sidebar.selectbox(
        "Run", range(len(runs)), key=f"{KEPT}run", format_func=lambda i: f"{i}: {label(runs[i])}"
    )
    st.query_params["run"] = str(index)
    return runs[index]


def choose_state(run_dir: str, run: Run) -> State:
    """The sidebar's episode and step of the run's store (each run keeps its own, each episode
    its step); the URL follows the widgets, so a view can be linked."""
    lengths = run.store.lengths
    n_episodes = len(lengths)
    st.session_state.setdefault(episode_key(run_dir), 0)
    episode = int(
        st.sidebar.number_input(
            f"Episode (0..{n_episodes - 1})",
            min_value=0,
            max_value=n_episodes - 1,
            step=1,
            key=episode_key(run_dir),
        )
    )
    last = int(lengths[episode]) - 1
    st.session_state.setdefault(step_key(run_dir, episode), min(50, last))
    # a slider needs a non-empty range: a one-step episode still shows 0..1
    step = st.sidebar.slider(
        "Step", min_value=0, max_value=max(last, 1), key=step_key(run_dir, episode)
    )
    step = min(int(step), last)
    st.query_params.update({"episode": str(episode), "step": str(step)})
    return State(run_dir, episode, step)


def kept(name: str, run_dir: str, default: Any) -> str:
    """The key of a page's widget for one run, kept across pages (``keep_widget_values``),
    started at ``default``; pass it as the widget's ``key`` (and no ``value``)."""
    key = f"{KEPT}{name}:{run_dir}"
    st.session_state.setdefault(key, default)
    return key


def episode_key(run_dir: str) -> str:
    """The session-state key of a run's episode input."""
    return f"{KEPT}episode:{run_dir}"


def step_key(run_dir: str, episode: int) -> str:
    """The session-state key of the step slider of one episode (one per episode: the range
    differs)."""
    return f"{KEPT}step:{run_dir}:{episode}"


# ---------------------------------------------------------------------------- cached results


@st.cache_resource  # never evicted: a second lock for a held one would let two threads in
def model_lock(run_dir: str) -> threading.RLock:
    """One lock per run, held by everything that runs its model. Streamlit serves each browser
    session from its own thread and the analyses add and remove TransformerLens hooks on the
    one shared model: without the lock one session's hooks fire in another's forward pass.
    It is taken only after every cached input (run, window, landmarks) is fetched, never
    around a cached call: a thread holding it never waits on a cache entry's lock."""
    return threading.RLock()


@st.cache_resource(max_entries=64, show_spinner=False)
def context(run_dir: str, episode: int, step: int) -> Contexts:
    """The window ending at ``step`` of ``episode`` as training cut it, encoded once."""
    run = open_run(run_dir)
    window = run.contexts(episode, step)
    with model_lock(run_dir):
        return window.encoded(run.model)


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

    run, ctx = open_run(run_dir), context(run_dir, episode, step)
    with model_lock(run_dir):
        return decision_at_rtg(run.model, ctx, rtg, mode=mode, action=action)


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
    with model_lock(run_dir):
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
    with model_lock(run_dir):
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
    with model_lock(run_dir):
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
    with model_lock(run_dir):
        return (
            patch_heads(run.model, clean, corrupted, metric),
            patch_residual(run.model, clean, corrupted, metric),
        )
