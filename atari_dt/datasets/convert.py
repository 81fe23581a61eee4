"""Convert a DQN-replay ``replay_logs`` directory into an episode store, in one streaming pass:
all of it, or the Decision Transformer paper's subset (``subset=``; which episodes it takes is
decided in :mod:`atari_dt.datasets.paper_subset`)."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.datasets.paper_subset import (
    RECIPE,
    PaperSubsetOptions,
    WindowEpisodes,
    select_paper_subset,
)
from atari_dt.datasets.replay_files import LayoutName
from atari_dt.datasets.replay_reader import ReplayBlock, ReplayLogs
from atari_dt.datasets.store_writer import EpisodeStoreWriter
from atari_dt.errors import UserError

# How the published DQN-replay data was made (FACTS.md §1); recorded in every converted store.
DQN_REPLAY_PREPROCESSING = {
    "preset": "dqn_replay",
    "frame_skip": 4,
    "repeat_action_probability": 0.25,
    "max_pool_last_two_frames": True,
    "grayscale": True,
    "resize": "cv2.INTER_AREA to 84x84",
    "terminal": "game over (not life loss)",
    "max_episode_steps": 27000,
    "reward": "clipped to [-1, 1]",
    "frame_stack": 4,
}


def infer_game(replay_dir: Path) -> str | None:
    """``<Game>/<run>/replay_logs`` -> ``Game``; None when the path does not look like that."""
    replay_dir = Path(replay_dir).resolve()
    if replay_dir.name == "replay_logs" and replay_dir.parent.name.isdigit():
        return replay_dir.parent.parent.name
    return None


def convert_replay_logs(
    source: str | Path,
    destination: str | Path,
    *,
    game: str | None = None,
    n_actions: int | None = None,
    checkpoints: Sequence[int] | None = None,
    layout: LayoutName = "auto",
    subset: PaperSubsetOptions | None = None,
    chunk_rows: int = 4096,
    compression: str | None = "gzip",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Read DQN-replay logs and write an episode store (padding removed, episodes joined across
    files, cut episodes marked incomplete). Memory is bounded by ``chunk_rows`` frames plus one
    checkpoint's small arrays, whatever the checkpoint size.

    With ``subset``, only the Decision Transformer paper's subset of the selected checkpoints
    is written: whole episodes drawn ``trajectories_per_checkpoint`` at a time from checkpoints
    picked at random, from the first ``window`` slots of each file, until ``sample_transitions``
    are taken (:func:`atari_dt.datasets.paper_subset.select_paper_subset`). The store then
    holds them grouped by checkpoint (in checkpoint order, each one's in order of addition);
    ``source["subset"]`` records the settings, the totals and per episode
    ``[checkpoint, first_slot, end_slot, pick]`` (file slots ``[first, end)``; its padding lies
    just before ``first_slot``). A checkpoint's frames are decompressed only up to the end of
    its last episode taken; those never picked are not decompressed at all.

    Args:
        source: the ``replay_logs`` directory.
        destination: the ``.h5`` to write (atomically: nothing appears there on failure).
        game: game name (any spelling ALE knows); inferred from ``<Game>/<run>/replay_logs``
            when omitted.
        n_actions: size of the action set (default: the game's minimal action set, as the
            DQN-replay agents used), recorded in the store; every action must lie in it.
        checkpoints: checkpoint numbers (default all), e.g. ``parse_checkpoint_selection("0-4")``.
        layout: ``auto``, ``logged`` or ``circular`` (see :mod:`atari_dt.datasets.replay_files`).
        subset: write the paper's subset only (None: everything).
        chunk_rows: frames decompressed at a time.
        compression: of the store's frames (``gzip``, ``lzf`` or None).
        overwrite: replace an existing destination.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        the destination path.

    Raises:
        ReplayFileError: bad or inconsistent replay files (names the file), actions outside
            the game's action set, rewards that are NaN or infinite.
        UserError: no game name given or inferable, or a game ALE does not know; for a subset,
            a wrapped plain dopamine snapshot (its file slots are not in order of addition).
    """
    from tqdm.auto import tqdm

    logs, game, n_actions = _open_logs(source, game, n_actions, checkpoints, layout)
    # Logs written by `atari-dt collect` carry each episode's behaviour beside them; it lines up
    # with the store's episodes only when the selection starts at the run's first transition.
    collection = _read_collection_record(logs)
    source_info = {
        "kind": "dqn-replay",
        "path": str(logs.directory.resolve()),
        "checkpoints": logs.checkpoints,
        "capacity": logs.capacity,
        "layouts": sorted({lay.kind for lay in logs.layouts}),
    }
    plan = None if subset is None else _plan_subset(logs, subset)
    if plan is not None:
        source_info["subset"] = plan.record
    with (
        EpisodeStoreWriter(
            destination,
            game=game,
            frame_shape=logs.frame_shape,  # type: ignore[arg-type]
            n_actions=n_actions,
            source=source_info,
            preprocessing=collection.get("preprocessing", DQN_REPLAY_PREPROCESSING),
            behaviour_policy=collection.get("behaviour_policy"),
            compression=compression,
            overwrite=overwrite,
        ) as writer,
        tqdm(
            total=logs.n_rows if plan is None else plan.rows,
            unit="frame",
            unit_scale=True,
            desc=f"convert {game}",
            disable=not progress,
        ) as bar,
    ):
        if plan is None:
            _write_all(writer, logs, collection.get("behaviours", []), chunk_rows, bar)
        else:
            _write_subset(writer, logs, plan, chunk_rows, bar)
    return Path(destination)


def _open_logs(
    source: str | Path,
    game: str | None,
    n_actions: int | None,
    checkpoints: Sequence[int] | None,
    layout: LayoutName,
) -> tuple[ReplayLogs, str, int]:
    """The logs, the canonical game name and its action-set size, every action and reward
    checked (so logs of another game, or damaged ones, are refused before anything is written).
    """
    from atari_dt.envs.games import canonical_game, minimal_action_count

    logs = ReplayLogs(source, checkpoints, layout=layout)
    name = game or infer_game(logs.directory)
    if not name:
        raise UserError(f"cannot infer the game from {logs.directory}; pass game= (--game)")
    try:
        game = canonical_game(name)
    except UserError as err:
        inferred = "" if game else f" (taken from the path {logs.directory}; pass --game)"
        raise UserError(f"{err}{inferred}") from None
    n_actions = minimal_action_count(game) if n_actions is None else int(n_actions)
    logs.check_values(n_actions, game)
    return logs, game, n_actions


def _write_all(
    writer: EpisodeStoreWriter, logs: ReplayLogs, behaviours: list, chunk_rows: int, bar: Any
) -> None:
    """Every transition of the selected checkpoints, block by block."""
    for block in logs.iter_blocks():
        first = writer.append_transitions(
            block.actions[block.keep], block.rewards[block.keep], block.terminals[block.keep]
        )
        kept_positions = block.positions[block.keep]
        if len(kept_positions) and kept_positions[0] != first:
            raise RuntimeError(
                f"position mismatch: block starts at {kept_positions[0]}, store at {first}"
            )
        for rows, positions, frames in block.iter_frames(chunk_rows):
            _write_frames(writer, positions, frames)
            bar.update(rows)
        for span in block.episodes:
            episode = writer.n_episodes
            behaviour = behaviours[episode] if episode < len(behaviours) else None
            writer.add_span(span.offset, span.length, span.complete, behaviour)


@dataclass(frozen=True)
class _SubsetPlan:
    """What a subset takes: per checkpoint its offer and how many of its episodes (a prefix:
    draws take them in order), and the ``source["subset"]`` record."""

    offers: dict[int, WindowEpisodes]
    taken: dict[int, int]
    record: dict[str, Any]

    @property
    def rows(self) -> int:
        """Observation rows to decompress in all."""
        return sum(offer.rows_to_read(self.taken[c]) for c, offer in self.offers.items())


def _plan_subset(logs: ReplayLogs, options: PaperSubsetOptions) -> _SubsetPlan:
    """Find each checkpoint's offer (small arrays only) and draw the subset."""
    offers = {
        lay.checkpoint: _window_episodes(logs, i, options.window)
        for i, lay in enumerate(logs.layouts)
    }
    subset = select_paper_subset(
        {checkpoint: offer.lengths for checkpoint, offer in offers.items()},
        budget=options.sample_transitions,
        per_pick=options.trajectories_per_checkpoint,
        seed=options.seed,
    )
    if not subset.episodes:
        most = max((len(offer.lengths) for offer in offers.values()), default=0)
        raise UserError(
            f"no checkpoint holds {options.trajectories_per_checkpoint} complete episodes within "
            f"its first {options.window:,} slots (at most {most}): nothing to take; lower "
            "--trajectories-per-checkpoint"
        )
    taken = Counter(e.checkpoint for e in subset.episodes)
    pick_of = {(e.checkpoint, e.episode): e.pick for e in subset.episodes}
    record = {
        "recipe": RECIPE,
        "reference": "kzl/decision-transformer atari/create_dataset.py",
        **dataclasses.asdict(options),
        "transitions": subset.n_transitions,
        "available_transitions": subset.available,
        "picks": subset.n_picks,
        "budget_reached": subset.budget_reached,
        "checkpoints_used": sorted(taken),
        "episode_fields": ["checkpoint", "first_slot", "end_slot", "pick"],
        "episodes": [
            [checkpoint, *offer.slots(e), pick_of[checkpoint, e]]
            for checkpoint, offer in offers.items()
            for e in range(taken[checkpoint])
        ],
    }
    return _SubsetPlan(offers, {c: taken[c] for c in offers}, record)


def _window_episodes(logs: ReplayLogs, index: int, window: int) -> WindowEpisodes:
    """The episodes a draw of checkpoint ``logs.layouts[index]`` may take: complete, starting
    at or after file slot 0 and ending before slot ``window`` (small arrays only)."""
    lay = logs.layouts[index]
    if lay.n_slots and lay.start_slot not in (0, lay.capacity - 1):
        raise UserError(
            f"{lay.path('observation')}: checkpoint {lay.checkpoint} is a wrapped plain dopamine "
            f"snapshot (its oldest slot is {lay.start_slot}), so its file slots are not in order "
            "of addition; the paper's subset needs batch_rl's logged dumps"
        )
    skip = int(lay.n_slots > 0 and lay.start_slot != 0)  # slot C-1 comes first, before slot 0
    block = _window_block(logs, index, skip + window)
    order = np.flatnonzero(block.keep)  # order of addition of each position
    spans = [s for s in block.episodes if s.complete and order[s.offset] >= skip]
    starts = np.array([order[s.offset] for s in spans], dtype=np.int64)
    lengths = np.array([s.length for s in spans], dtype=np.int64)
    return WindowEpisodes(skip, skip + window, starts, lengths)


def _window_block(logs: ReplayLogs, index: int, max_transitions: int) -> ReplayBlock:
    # Without the previous dump's files, whether the first episode starts right at the file is
    # not decided from frames (that would decompress the whole file): it counts as cut.
    return logs.read_alone(index, max_transitions=max_transitions, look_at_frames=False)


def _write_subset(
    writer: EpisodeStoreWriter, logs: ReplayLogs, plan: _SubsetPlan, chunk_rows: int, bar: Any
) -> None:
    """Each checkpoint's taken episodes, in checkpoint order, its frames decompressed only up
    to the last of them."""
    for index, lay in enumerate(logs.layouts):
        offer, n_episodes = plan.offers[lay.checkpoint], plan.taken[lay.checkpoint]
        if n_episodes == 0:
            continue
        block = _window_block(logs, index, offer.max_transitions)
        take = np.zeros(len(block.keep), dtype=bool)
        for start, length in zip(
            offer.starts[:n_episodes], offer.lengths[:n_episodes], strict=True
        ):
            take[start : start + length] = True
        first = writer.append_transitions(
            block.actions[take], block.rewards[take], block.terminals[take]
        )
        positions = np.where(block.keep, -2, -1)  # padding frames on the way are still checked
        positions[take] = first + np.arange(int(take.sum()))
        remaining = int(take.sum())
        selected = dataclasses.replace(block, positions=positions)
        with contextlib.closing(selected.iter_frames(chunk_rows)) as chunks:
            for rows, chunk_positions, frames in chunks:
                _write_frames(writer, chunk_positions, frames)
                bar.update(rows)
                remaining -= len(chunk_positions)
                if remaining == 0:
                    break
        for length in offer.lengths[:n_episodes]:
            writer.add_span(first, int(length), True)
            first += int(length)


def _read_collection_record(logs: ReplayLogs) -> dict:
    """``collection.json`` of logs made by ``atari-dt collect`` (empty if absent, or if the
    selection does not start at the run's first transition)."""
    import json

    path = logs.directory / "collection.json"
    if not path.is_file() or logs.layouts[0].first_transition != 0:
        return {}
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _write_frames(writer: EpisodeStoreWriter, positions: np.ndarray, frames: np.ndarray) -> None:
    """Write ``frames [m, H, W]`` at store ``positions [m]``, one call per consecutive run."""
    for start, stop in _consecutive_runs(positions):
        writer.write_frames(int(positions[start]), frames[start:stop])


def _consecutive_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges ``[start, stop)`` of ``positions`` that increase by exactly 1."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    edges = [0, *breaks.tolist(), len(positions)]
    return list(itertools.pairwise(edges))
