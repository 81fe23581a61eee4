"""Integrity check of an episode store: layout, episode tables, RTG, rewards, every frame, and
the checksums recorded when it was written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.datasets.rtg import returns_to_go
from atari_dt.datasets.store import (
    CHECKSUMS,
    EpisodeStore,
    StoreLayoutError,
    block_digest,
    block_digests,
    checksummed_datasets,
)
from atari_dt.errors import UserError

_COLUMNS = ("actions", "rewards", "terminals", "rtg", "raw_rewards", "raw_rtg", "ram")
# Read frames about this many at a time (a whole number of checksum blocks).
_FRAMES_PER_READ = 4096


@dataclass
class VerifyReport:
    """Result of :func:`verify_store`: ``problems`` is empty when the store is sound."""

    path: str
    episodes: int = 0
    transitions: int = 0
    frames_checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what was not checked, and why

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(
    path: str | Path, *, check_frames: bool = True, progress: bool = False
) -> VerifyReport:
    """Check an episode store end to end.

    Checks: format/version/finalised (else :class:`StoreFormatError` is raised by opening);
    every dataset's dtype and row shape (reported, not raised); every per-transition array has
    ``N`` rows; episodes tile ``[0, N)`` in order with positive lengths; terminals only on
    episodes' last steps and on the last step of every complete one; rewards, RTG and returns
    finite, rewards clipped to [-1, 1]; stored RTG and returns equal those recomputed from the
    rewards; actions in ``[0, n_actions)`` (the game's action set when the store records no
    count); frames of the recorded screen size; (``check_frames``) every frame chunk
    decompresses; and every numeric dataset (frames only with ``check_frames``) still has the
    SHA-256 checksums recorded when it was written, so one flipped bit is found and named. A
    store written before checksums existed verifies without them (a note says so).

    Returns:
        a :class:`VerifyReport` listing every problem found (and in ``notes`` what was not
        checked).
    """
    report = VerifyReport(str(path))
    try:
        store = EpisodeStore.open(path, check_tables=False)
    except StoreLayoutError as err:  # wrong dtypes or shapes: reported like any other damage
        report.problems.extend(err.problems)
        return report
    with store:
        h5 = store.h5
        n = store.n_transitions
        report.episodes, report.transitions = len(store), n
        objects = [f"objects/{name}" for name in h5.get("objects", {})]
        for name in ("frames", *_COLUMNS, *objects):
            if name in h5 and h5[name].shape[0] != n:
                report.problems.append(f"/{name} has {h5[name].shape[0]} rows, expected {n}")
        if report.problems:
            return report
        _check_episodes(store, report)
        if not report.problems:
            _check_columns(store, report)
        _check_frame_size(store, report)
        frames_block_rows = _recorded_block_rows(h5, "frames")
        frame_digests = None
        if check_frames:
            report.frames_checked, frame_digests = _read_all_frames(
                store, report, progress, frames_block_rows
            )
        _check_checksums(store, report, check_frames, frame_digests)
    return report


def _check_episodes(store: EpisodeStore, report: VerifyReport) -> None:
    offsets, lengths = store.offsets, store.lengths
    expected = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else offsets
    if (lengths <= 0).any():
        report.problems.append(f"episodes {np.flatnonzero(lengths <= 0)[:5].tolist()} are empty")
    if not np.array_equal(offsets, expected) or int(lengths.sum()) != store.n_transitions:
        report.problems.append(
            f"episodes do not tile the {store.n_transitions} transitions in order "
            f"(they cover {int(lengths.sum())})"
        )


def _check_columns(store: EpisodeStore, report: VerifyReport) -> None:
    h5 = store.h5
    lengths, offsets = store.lengths, store.offsets
    ends = offsets + lengths - 1
    terminals = h5["terminals"][:].astype(bool)
    inner = terminals.copy()
    inner[ends] = False
    if inner.any():
        report.problems.append(
            f"terminal flags inside episodes at {np.flatnonzero(inner)[:5].tolist()}"
        )
    missing_end = store.complete & ~terminals[ends]
    if missing_end.any():
        report.problems.append(
            f"complete episodes {np.flatnonzero(missing_end)[:5].tolist()} do not end on a terminal"
        )
    for name in (
        "rewards",
        "raw_rewards",
        "rtg",
        "raw_rtg",
        "episodes/return",
        "episodes/raw_return",
    ):
        if name in h5:
            bad = np.flatnonzero(~np.isfinite(h5[name][:]))
            if len(bad):
                report.problems.append(
                    f"/{name} holds {len(bad)} NaN or infinite values (first at row {bad[0]})"
                )
    rewards = h5["rewards"][:]
    if (np.abs(rewards) > 1).any():
        report.problems.append("/rewards holds values outside [-1, 1] (they must be clipped)")
    for reward_key, rtg_key, return_key in (
        ("rewards", "rtg", "return"),
        ("raw_rewards", "raw_rtg", "raw_return"),
    ):
        if reward_key in h5:
            rtg = returns_to_go(h5[reward_key][:], lengths)
            if not np.allclose(h5[rtg_key][:], rtg, rtol=1e-5, atol=1e-3):
                report.problems.append(
                    f"/{rtg_key} differs from the RTG recomputed from /{reward_key}"
                )
            if not np.allclose(h5["episodes"][return_key][:], rtg[offsets], rtol=1e-5, atol=1e-3):
                report.problems.append(
                    f"/episodes/{return_key} differs from the sum of /{reward_key}"
                )
    actions = h5["actions"][:]
    upper = store.n_actions if store.n_actions is not None else _game_action_count(store, report)
    if (actions < 0).any() or (upper is not None and (actions >= upper).any()):
        report.problems.append(
            f"actions outside [0, {upper}): min {actions.min()}, max {actions.max()}"
        )


def _game_action_count(store: EpisodeStore, report: VerifyReport) -> int | None:
    """The game's minimal action-set size, for a store that records no ``n_actions``."""
    from atari_dt.envs.games import minimal_action_count

    try:
        count = minimal_action_count(store.game)
    except UserError:
        report.notes.append(f"no action count recorded and ALE knows no game {store.game!r}")
        return None
    report.notes.append(f"no action count recorded: checked against {store.game}'s {count}")
    return count


def _check_frame_size(store: EpisodeStore, report: VerifyReport) -> None:
    """Frames of the screen size the recorded preprocessing made (collected stores)."""
    size = store.metadata.get("preprocessing", {}).get("screen_size")
    if isinstance(size, int) and store.frame_shape != (size, size):
        height, width = store.frame_shape
        report.problems.append(
            f"/frames holds {height}x{width} frames, but the recorded preprocessing made "
            f"{size}x{size} (screen_size)"
        )


def _recorded_block_rows(h5: Any, name: str) -> int | None:
    """Rows per checksum block of dataset ``name``; None when it has no checksum."""
    recorded = h5.get(CHECKSUMS, {})
    return int(recorded[name].attrs["block_rows"]) if name in recorded else None


def _check_checksums(
    store: EpisodeStore,
    report: VerifyReport,
    check_frames: bool,
    frame_digests: dict[int, bytes] | None,
) -> None:
    """Recompute every dataset's block checksums and compare them with the recorded ones."""
    h5 = store.h5
    if CHECKSUMS not in h5:
        report.notes.append(
            "no checksums recorded (the store was written before atari-dt kept them): values "
            "checked for consistency only"
        )
        return
    recorded = h5[CHECKSUMS]
    names = checksummed_datasets(h5)
    for name in names:
        if name not in recorded:
            report.problems.append(
                f"/{name} has no checksum recorded (added or replaced after the store was written)"
            )
            continue
        table = recorded[name]
        block_rows = int(table.attrs["block_rows"])
        if name == "frames":
            if not check_frames:
                report.notes.append("frame checksums not compared (frames not read: --quick)")
                continue
            if frame_digests is None:  # unreadable frames: already reported
                continue
            digests = frame_digests
        else:
            digests = _digests(h5[name], block_rows, report)
            if digests is None:
                continue
        _compare_digests(name, table[:], digests, block_rows, h5[name].shape[0], report)
    stray: list[str] = []

    def visit(name: str, item: Any) -> None:  # (returning anything else would stop the walk)
        if hasattr(item, "dtype"):
            stray.append(name)

    recorded.visititems(visit)
    for name in sorted(set(stray) - set(names)):
        report.problems.append(f"/{CHECKSUMS}/{name} is recorded but /{name} is missing")


def _digests(dataset: Any, block_rows: int, report: VerifyReport) -> dict[int, bytes] | None:
    """Block digests of a (non-frame) dataset; None, with the problem reported, when a chunk
    of it does not decompress."""
    digests: dict[int, bytes] = {}
    try:
        for block, digest in block_digests(dataset, block_rows):
            digests[block] = digest
    except (OSError, RuntimeError) as err:
        first = len(digests) * block_rows
        report.problems.append(
            f"{dataset.name} rows {first}..{first + block_rows - 1} unreadable: {err}"
        )
        return None
    return digests


def _compare_digests(
    name: str,
    table: np.ndarray,
    digests: dict[int, bytes],
    block_rows: int,
    n_rows: int,
    report: VerifyReport,
) -> None:
    """Name the rows of ``/name`` whose digests differ from the recorded ``table`` [K, 32]."""
    if len(table) != len(digests):
        report.problems.append(
            f"/{name} has {n_rows} rows, but its checksums were recorded for "
            f"{len(table)} blocks of {block_rows} rows"
        )
        return
    changed = [block for block in range(len(table)) if bytes(table[block]) != digests[block]]
    if changed:
        first = changed[0] * block_rows
        last = min(first + block_rows, n_rows) - 1
        more = f" and {len(changed) - 1} more blocks" if len(changed) > 1 else ""
        report.problems.append(
            f"/{name} differs from the checksum recorded when the store was written, in rows "
            f"{first}..{last}{more}: its data changed since (a flipped bit or an edit)"
        )


def _read_all_frames(
    store: EpisodeStore, report: VerifyReport, progress: bool, block_rows: int | None
) -> tuple[int, dict[int, bytes] | None]:
    """Decompress every frame chunk (a damaged chunk raises in h5py), hashing blocks of
    ``block_rows`` frames on the way when checksums are recorded; return the frames read and
    the block digests (None without checksums, or when a chunk is unreadable)."""
    from tqdm.auto import tqdm

    frames = store.frames
    if block_rows is None:
        step = (frames.chunks[0] if frames.chunks else 1024) * 64
    else:
        step = block_rows * max(1, _FRAMES_PER_READ // block_rows)
    read, digests = 0, {}
    with tqdm(total=len(frames), unit="frame", desc="verify frames", disable=not progress) as bar:
        for start in range(0, len(frames), step):
            try:
                rows = frames[start : start + step]
            except (OSError, RuntimeError) as err:
                report.problems.append(f"frames {start}..{start + step - 1} unreadable: {err}")
                return read, None
            read += len(rows)
            if block_rows is not None:
                for offset in range(0, len(rows), block_rows):
                    block = (start + offset) // block_rows
                    digests[block] = block_digest(rows[offset : offset + block_rows])
            bar.update(len(rows))
    return read, (digests if block_rows is not None else None)
