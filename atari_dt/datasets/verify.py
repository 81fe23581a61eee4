"""Integrity check of an episode store: layout, episode tables, RTG, rewards and every frame."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atari_dt.datasets.rtg import returns_to_go
from atari_dt.datasets.store import EpisodeStore

_COLUMNS = ("actions", "rewards", "terminals", "rtg", "raw_rewards", "raw_rtg", "ram")


@dataclass
class VerifyReport:
    """Result of :func:`verify_store`: ``problems`` is empty when the store is sound."""

    path: str
    episodes: int = 0
    transitions: int = 0
    frames_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(
    path: str | Path, *, check_frames: bool = True, progress: bool = False
) -> VerifyReport:
    """Check an episode store end to end.

    Checks: format/version/finalised (else :class:`StoreFormatError` is raised by opening);
    every per-transition array has ``N`` rows; episodes tile ``[0, N)`` in order with positive
    lengths; terminals only on episodes' last steps and on the last step of every complete one;
    rewards clipped to [-1, 1]; stored RTG and returns equal those recomputed from the rewards;
    actions in ``[0, n_actions)``; and (``check_frames``) every frame chunk decompresses.

    Returns:
        a :class:`VerifyReport` listing every problem found.
    """
    report = VerifyReport(str(path))
    with EpisodeStore.open(path) as store:
        h5 = store.h5
        n = store.n_transitions
        report.episodes, report.transitions = len(store), n
        for name in ("frames", *_COLUMNS):
            if name in h5 and h5[name].shape[0] != n:
                report.problems.append(f"/{name} has {h5[name].shape[0]} rows, expected {n}")
        if report.problems:
            return report
        _check_episodes(store, report)
        if not report.problems:
            _check_columns(store, report)
        if check_frames:
            report.frames_checked = _read_all_frames(store, report, progress)
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
    upper = store.n_actions
    if (actions < 0).any() or (upper is not None and (actions >= upper).any()):
        report.problems.append(
            f"actions outside [0, {upper}): min {actions.min()}, max {actions.max()}"
        )


def _read_all_frames(store: EpisodeStore, report: VerifyReport, progress: bool) -> int:
    """Decompress every frame chunk (a damaged chunk raises in h5py); return frames read."""
    from tqdm.auto import tqdm

    frames = store.frames
    step = (frames.chunks[0] if frames.chunks else 1024) * 64
    read = 0
    with tqdm(total=len(frames), unit="frame", desc="verify frames", disable=not progress) as bar:
        for start in range(0, len(frames), step):
            try:
                read += len(frames[start : start + step])
            except (OSError, RuntimeError) as err:
                report.problems.append(f"frames {start}..{start + step - 1} unreadable: {err}")
                return read
            bar.update(min(step, len(frames) - start))
    return read
