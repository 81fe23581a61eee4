"""Convert a DQN-replay ``replay_logs`` directory into an episode store, in one streaming pass."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from atari_dt.datasets.replay_files import LayoutName
from atari_dt.datasets.replay_reader import ReplayLogs
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
    chunk_rows: int = 4096,
    compression: str | None = "gzip",
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Read DQN-replay logs and write an episode store (padding removed, episodes joined across
    files, cut episodes marked incomplete). Memory is bounded by ``chunk_rows`` frames plus one
    checkpoint's small arrays, whatever the checkpoint size.

    Args:
        source: the ``replay_logs`` directory.
        destination: the ``.h5`` to write (atomically: nothing appears there on failure).
        game: game name (any spelling ALE knows); inferred from ``<Game>/<run>/replay_logs``
            when omitted.
        n_actions: size of the action set (default: the game's minimal action set, as the
            DQN-replay agents used), recorded in the store; every action must lie in it.
        checkpoints: checkpoint numbers (default all), e.g. ``parse_checkpoint_selection("0-4")``.
        layout: ``auto``, ``logged`` or ``circular`` (see :mod:`atari_dt.datasets.replay_files`).
        chunk_rows: frames decompressed at a time.
        compression: of the store's frames (``gzip``, ``lzf`` or None).
        overwrite: replace an existing destination.
        progress: show a progress bar (tqdm, on stderr).

    Returns:
        the destination path.

    Raises:
        ReplayFileError: bad or inconsistent replay files (names the file), actions outside
            the game's action set, rewards that are NaN or infinite.
        UserError: no game name given or inferable, or a game ALE does not know.
    """
    from tqdm.auto import tqdm

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
    # Every action is checked against the game's action set, so logs of another game (or
    # damaged ones) are refused before anything is written.
    n_actions = minimal_action_count(game) if n_actions is None else int(n_actions)
    logs.check_values(n_actions, game)
    # Logs written by `atari-dt collect` carry each episode's behaviour beside them; it lines up
    # with the store's episodes only when the selection starts at the run's first transition.
    collection = _read_collection_record(logs)
    behaviours = collection.get("behaviours", [])
    source_info = {
        "kind": "dqn-replay",
        "path": str(logs.directory.resolve()),
        "checkpoints": logs.checkpoints,
        "capacity": logs.capacity,
        "layouts": sorted({lay.kind for lay in logs.layouts}),
    }
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
            total=logs.n_rows,
            unit="frame",
            unit_scale=True,
            desc=f"convert {game}",
            disable=not progress,
        ) as bar,
    ):
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
                for start, stop in _consecutive_runs(positions):
                    writer.write_frames(int(positions[start]), frames[start:stop])
                bar.update(rows)
            for span in block.episodes:
                episode = writer.n_episodes
                behaviour = behaviours[episode] if episode < len(behaviours) else None
                writer.add_span(span.offset, span.length, span.complete, behaviour)
    return Path(destination)


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


def _consecutive_runs(positions: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges ``[start, stop)`` of ``positions`` that increase by exactly 1."""
    if len(positions) == 0:
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    edges = [0, *breaks.tolist(), len(positions)]
    return list(itertools.pairwise(edges))
