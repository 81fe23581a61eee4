"""Replay logs written from real Seaquest episodes, read back and converted to an episode store.

The expected store contents come from FACTS.md §1, not from the reader: the writer adds
``PAD`` zero padding transitions before each episode; logged dump ``k`` holds the global
transitions ``[k*C - 1, (k+1)*C - 1)`` (``[0, C-1)`` for ``k = 0``; the final dump stops at the
last transition); a plain circular checkpoint holds the last ``min(C, add_count)`` transitions.
A selection of checkpoints is thus a union of global ranges; each maximal run of abutting ranges
is one stream, whose real transitions (padding dropped) are cut at episode ends. An episode is
complete when its terminal is in the stream and its start is known (the stream began at
transition 0 or at an earlier episode's end inside the stream).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atari_dt.datasets import (
    Episode,
    EpisodeStore,
    ReplayFileError,
    ReplayLogs,
    ReplayLogWriter,
    convert_replay_logs,
    write_replay_logs,
)
from atari_dt.datasets.npy_gzip import load_npy_gz, save_npy_gz
from atari_dt.datasets.replay_files import replay_file

PAD = 3  # stack_size - 1
EpisodeArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # frames, actions, raw rewards


# --------------------------------------------------------------------------- the expected contents


@dataclass(frozen=True)
class Piece:
    """Steps ``start .. stop-1`` of original episode ``episode``, as one store episode."""

    episode: int
    start: int
    stop: int
    complete: bool


def n_added(lengths: Sequence[int]) -> int:
    """Transitions the writer adds for these episodes (padding included)."""
    return sum(lengths) + PAD * len(lengths)


def padding_positions(lengths: Sequence[int], episode: int) -> list[int]:
    """Global indices of the padding transitions written before ``episode``."""
    first = n_added(lengths[:episode])
    return list(range(first, first + PAD))


def logged_ranges(capacity: int, n_total: int, checkpoints: Sequence[int]) -> list[tuple[int, int]]:
    """Global ``[start, stop)`` of the selected logged dumps, abutting ranges merged."""
    ranges: list[tuple[int, int]] = []
    for k in sorted(checkpoints):
        start = 0 if k == 0 else k * capacity - 1
        stop = min((k + 1) * capacity - 1, n_total)
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], stop)
        else:
            ranges.append((start, stop))
    return ranges


def expected_pieces(
    lengths: Sequence[int], ranges: Sequence[tuple[int, int]], *, previous_known: bool = True
) -> list[Piece]:
    """The store episodes that streams over these global ranges must give (module docstring).

    A stream's first episode is complete at its start when the stream begins at transition 0,
    inside the padding before the episode, or exactly at its first step when the transitions
    before the stream can be read (``previous_known``: the previous logged dump is on disk)."""
    episode_of = np.concatenate([np.full(PAD + n, e) for e, n in enumerate(lengths)])
    step_of = np.concatenate([np.arange(-PAD, n) for n in lengths])
    pieces = []
    for start, stop in ranges:
        episodes, steps = episode_of[start:stop], step_of[start:stop]
        real = steps >= 0
        boundary_known = steps[0] < 0 or (steps[0] == 0 and previous_known)
        for i, episode in enumerate(dict.fromkeys(episodes[real].tolist())):
            own = steps[real & (episodes == episode)]
            first, last = int(own[0]), int(own[-1]) + 1
            complete = last == lengths[episode] and (start == 0 or i > 0 or boundary_known)
            pieces.append(Piece(episode, first, last, complete))
    return pieces


def whole(lengths: Sequence[int]) -> list[Piece]:
    """Every original episode, complete."""
    return [Piece(e, 0, n, True) for e, n in enumerate(lengths)]


def store_summary(store: EpisodeStore) -> list[tuple[int, bool]]:
    """(length, complete) of every store episode: a readable first comparison."""
    return [(int(n), bool(c)) for n, c in zip(store.lengths, store.complete, strict=True)]


def assert_store_holds(
    path: Path, episodes: Sequence[EpisodeArrays], pieces: Sequence[Piece]
) -> None:
    """The store at ``path`` holds exactly ``pieces`` of the original episodes, in order: frames,
    actions, clipped rewards, returns-to-go, terminals, lengths, returns and complete flags."""
    with EpisodeStore.open(path) as store:
        assert store_summary(store) == [(p.stop - p.start, p.complete) for p in pieces]
        assert store.n_transitions == sum(p.stop - p.start for p in pieces)
        ends = np.cumsum([p.stop - p.start for p in pieces])
        np.testing.assert_array_equal(store.offsets, ends - store.lengths)
        terminals = store.column("terminals")
        for i, piece in enumerate(pieces):
            frames, actions, rewards = episodes[piece.episode]
            part = slice(piece.start, piece.stop)
            clipped = np.clip(rewards, -1.0, 1.0)[part]
            got = store.episode(i)
            np.testing.assert_array_equal(got.frames, frames[part], err_msg=f"frames of {i}")
            np.testing.assert_array_equal(got.actions, actions[part], err_msg=f"actions of {i}")
            np.testing.assert_array_equal(got.rewards, clipped, err_msg=f"rewards of {i}")
            np.testing.assert_allclose(got.rtg, np.cumsum(clipped[::-1])[::-1], atol=1e-5)
            assert store.returns[i] == pytest.approx(float(clipped.sum()))
            ends_here = np.arange(piece.start, piece.stop) == len(actions) - 1
            np.testing.assert_array_equal(terminals[store.offsets[i] : ends[i]], ends_here)


def matching_original(got: Episode, originals: Sequence[EpisodeArrays], where: str) -> int:
    """Index of the original episode that ``got`` is the ``where`` (suffix, prefix or whole) of,
    by frames and actions (Seaquest's first frames are the same in every episode); fails if
    none."""
    n = len(got)
    for index, (frames, actions, _) in enumerate(originals):
        part = {
            "suffix": slice(len(frames) - n, None),
            "prefix": slice(0, n),
            "whole": slice(None),
        }[where]
        if (
            n <= len(frames)
            and len(frames[part]) == n
            and np.array_equal(frames[part], got.frames)
            and np.array_equal(actions[part], got.actions)
        ):
            return index
    raise AssertionError(f"a store episode of {n} transitions is no {where} of an original")


def convert(source: Path, destination: Path, **options: Any) -> Path:
    """convert_replay_logs as a test uses it (no progress bar, game given)."""
    options.setdefault("game", "Seaquest")
    return convert_replay_logs(source, destination, progress=False, **options)


def lengths_of(episodes: Sequence[EpisodeArrays]) -> list[int]:
    return [len(actions) for _, actions, _ in episodes]


def divisor_near(number: int, target: int) -> int:
    """The divisor of ``number`` closest to ``target`` (at least 5, the smallest capacity)."""
    divisors = [d for d in range(5, number + 1) if number % d == 0]
    return min(divisors, key=lambda d: abs(d - target))


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def logs(
    tmp_path_factory: pytest.TempPathFactory, replay_episodes: list[EpisodeArrays]
) -> Callable[[int], Path]:
    """``logs(C)``: the real episodes written as logged dumps of capacity C (made once per C)."""
    made: dict[int, Path] = {}
    n_total = n_added(lengths_of(replay_episodes))

    def make(capacity: int) -> Path:
        if capacity not in made:
            directory = tmp_path_factory.mktemp(f"logs{capacity}") / "replay_logs"
            written = write_replay_logs(directory, replay_episodes, capacity, compresslevel=1)
            assert written == list(range((n_total + 1) // capacity + 1))
            made[capacity] = directory
        return made[capacity]

    return make


@pytest.fixture(scope="module")
def lengths(replay_episodes: list[EpisodeArrays]) -> list[int]:
    return lengths_of(replay_episodes)


@pytest.fixture(scope="module")
def n_total(lengths: list[int]) -> int:
    return n_added(lengths)


def test_fixture_is_long_enough(lengths: list[int], replay_episodes: list[EpisodeArrays]) -> None:
    """The choices of capacities and checkpoints below assume 5 episodes of 180-330 steps with
    frames that are never all zero (so padding frames are distinguishable)."""
    assert len(lengths) == 5 and all(180 <= n <= 330 for n in lengths)
    assert all(
        frames.reshape(len(frames), -1).any(axis=1).all() for frames, _, _ in replay_episodes
    )
    assert any((np.abs(r) > 1).any() for _, _, r in replay_episodes)  # clipping matters


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize(("capacity", "chunk_rows"), [(97, 7), (97, 4096), (301, 50)])
def test_all_checkpoints_round_trip(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    capacity: int,
    chunk_rows: int,
) -> None:
    """Converting every checkpoint gives back every real transition in order: each episode
    complete and equal to its original, padding removed, rewards clipped."""
    source = logs(capacity)
    n_checkpoints = (n_total + 1) // capacity + 1
    ranges = logged_ranges(capacity, n_total, range(n_checkpoints))
    assert ranges == [(0, n_total)]
    assert expected_pieces(lengths, ranges) == whole(lengths)
    store_path = convert(source, tmp_path / "all.h5", chunk_rows=chunk_rows, n_actions=18)
    assert_store_holds(store_path, replay_episodes, whole(lengths))
    with EpisodeStore.open(store_path) as store:
        assert store.n_transitions == sum(lengths)
        assert store.n_actions == 18 and store.frame_shape == (84, 84)
        assert store.metadata["source"]["checkpoints"] == list(range(n_checkpoints))
        assert store.metadata["source"]["capacity"] == capacity
        assert store.metadata["source"]["layouts"] == ["logged", "logged_final"]
        assert store.metadata["preprocessing"]["reward"] == "clipped to [-1, 1]"


def test_explicit_logged_layout(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
) -> None:
    """layout='logged' reads logged files exactly like auto, for all checkpoints and a subset."""
    assert_store_holds(
        convert(logs(97), tmp_path / "a.h5", layout="logged"), replay_episodes, whole(lengths)
    )
    pieces = expected_pieces(lengths, logged_ranges(97, n_added(lengths), [3, 4, 5]))
    assert_store_holds(
        convert(logs(97), tmp_path / "b.h5", layout="logged", checkpoints=[3, 4, 5]),
        replay_episodes,
        pieces,
    )


def test_replay_logs_reader_api(
    logs: Callable[[int], Path], lengths: list[int], n_total: int
) -> None:
    """ReplayLogs reports its checkpoints, capacity, frame shape and rows; its blocks keep every
    real transition once, with store positions 0..n-1 in order."""
    reader = ReplayLogs(logs(97))
    n_checkpoints = (n_total + 1) // 97 + 1
    assert reader.checkpoints == list(range(n_checkpoints))
    assert (reader.capacity, reader.frame_shape, reader.n_rows) == (
        97,
        (84, 84),
        97 * n_checkpoints,
    )
    blocks = list(reader.iter_blocks())
    assert len(blocks) == n_checkpoints
    positions = np.concatenate([b.positions[b.keep] for b in blocks])
    np.testing.assert_array_equal(positions, np.arange(sum(lengths)))
    assert all((b.positions[~b.keep] == -1).all() for b in blocks)
    spans = [s for b in blocks for s in b.episodes]
    assert [(s.length, s.complete) for s in spans] == [(n, True) for n in lengths]


@pytest.mark.parametrize(
    ("capacity", "checkpoints"),
    [(97, [2, 3]), (301, [1, 2]), (97, [4, 5, 6, 7, 8]), (97, [6, 7, 8, 9, 10])],
)
def test_middle_subset(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    capacity: int,
    checkpoints: list[int],
) -> None:
    """A middle run of checkpoints: the first episode is an incomplete suffix of an original, the
    last an incomplete prefix, those in between complete and equal to the next originals."""
    ranges = logged_ranges(capacity, n_total, checkpoints)
    assert len(ranges) == 1 and ranges[0][0] > 0 and ranges[0][1] < n_total
    store_path = convert(logs(capacity), tmp_path / "mid.h5", checkpoints=checkpoints)
    assert_store_holds(store_path, replay_episodes, expected_pieces(lengths, ranges))
    with EpisodeStore.open(store_path) as store:
        assert len(store) >= 2
        assert not store.complete[0] and not store.complete[-1]
        assert store.complete[1:-1].all()
        first = matching_original(store.episode(0), replay_episodes, "suffix")
        last = matching_original(store.episode(-1), replay_episodes, "prefix")
        middle = [
            matching_original(store.episode(i), replay_episodes, "whole")
            for i in range(1, len(store) - 1)
        ]
        assert [first, *middle, last] == list(range(first, first + len(store)))
        assert store.n_transitions < ranges[0][1] - ranges[0][0]  # padding inside was dropped


def test_selection_inside_one_episode(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
) -> None:
    """Checkpoints lying inside one long episode give one incomplete episode: the original's
    steps from the stream's start to its end, cut at both ends."""
    ranges = logged_ranges(97, n_total, [5, 6, 7])
    pieces = expected_pieces(lengths, ranges)
    assert len(pieces) == 1 and pieces[0].start > 0 and pieces[0].stop < lengths[pieces[0].episode]
    assert pieces[0].stop - pieces[0].start == ranges[0][1] - ranges[0][0]
    assert_store_holds(
        convert(logs(97), tmp_path / "in.h5", checkpoints=[5, 6, 7]), replay_episodes, pieces
    )


def test_last_checkpoints(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
) -> None:
    """The last checkpoints (the final partial dump included): the stream ends at the last
    episode's terminal, so that episode is complete and equal to the original."""
    last = (n_total + 1) // 97
    checkpoints = list(range(last - 4, last + 1))
    pieces = expected_pieces(lengths, logged_ranges(97, n_total, checkpoints))
    assert not pieces[0].complete and pieces[0].start > 0
    assert pieces[-1] == Piece(len(lengths) - 1, 0, lengths[-1], True)
    assert_store_holds(
        convert(logs(97), tmp_path / "end.h5", checkpoints=checkpoints), replay_episodes, pieces
    )


@pytest.mark.parametrize(
    ("capacity", "checkpoints"),
    [(97, [0]), (97, [0, 1, 2]), (301, [0]), (97, [0, 1, 2, 3, 4, 5, 6])],
)
def test_first_checkpoints(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    capacity: int,
    checkpoints: list[int],
) -> None:
    """The first checkpoints: the stream starts at transition 0, so the first episode starts at
    the original's step 0 (complete if its terminal is in the stream); the last one is cut."""
    pieces = expected_pieces(lengths, logged_ranges(capacity, n_total, checkpoints))
    store_path = convert(logs(capacity), tmp_path / "first.h5", checkpoints=checkpoints)
    assert_store_holds(store_path, replay_episodes, pieces)
    with EpisodeStore.open(store_path) as store:
        assert matching_original(store.episode(0), replay_episodes, "prefix") == 0
        assert store.complete[0] == (len(store) > 1)
        assert not store.complete[-1]
        assert matching_original(store.episode(-1), replay_episodes, "prefix") == len(store) - 1


@pytest.mark.parametrize(
    ("capacity", "checkpoints"),
    [(97, [0, 2]), (301, [0, 2]), (97, [1, 2, 5, 6]), (97, [0, 3, 4, 8])],
)
def test_gap_in_selection_splits_episodes(
    tmp_path: Path,
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    capacity: int,
    checkpoints: list[int],
) -> None:
    """A gap in the selected checkpoints ends one stream and starts another: the episodes on both
    sides of the gap are incomplete and never joined across it."""
    ranges = logged_ranges(capacity, n_total, checkpoints)
    assert len(ranges) >= 2
    pieces = expected_pieces(lengths, ranges)
    store_path = convert(logs(capacity), tmp_path / "gap.h5", checkpoints=checkpoints)
    assert_store_holds(store_path, replay_episodes, pieces)
    with EpisodeStore.open(store_path) as store:
        boundary = 0
        for run in ranges[:-1]:
            boundary += len(expected_pieces(lengths, [run]))
            assert not store.complete[boundary - 1]
        assert store.n_transitions == sum(p.stop - p.start for p in pieces)


def _circular_checkpoint(directory: Path, episodes: Sequence[EpisodeArrays], capacity: int) -> Path:
    """A plain dopamine buffer (no logged dumps) holding ``episodes``, saved as checkpoint 0."""
    writer = ReplayLogWriter(directory, capacity, log_dumps=False, compresslevel=1)
    for frames, actions, rewards in episodes:
        writer.add_episode(frames, actions, rewards)
    writer.save_checkpoint(0)
    assert writer.checkpoints_written == [0]
    return directory


@pytest.mark.parametrize("capacity", [500, 1000])
def test_wrapped_circular_checkpoint(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    capacity: int,
) -> None:
    """A wrapped plain checkpoint starts at its oldest slot: the first episode is an incomplete
    suffix of the right original, the following ones complete and equal to the originals."""
    source = _circular_checkpoint(tmp_path / "replay_logs", replay_episodes, capacity)
    pieces = expected_pieces(lengths, [(n_total - capacity, n_total)], previous_known=False)
    store_path = convert(source, tmp_path / "circ.h5")
    assert_store_holds(store_path, replay_episodes, pieces)
    with EpisodeStore.open(store_path) as store:
        assert store.metadata["source"]["layouts"] == ["circular"]
        assert not store.complete[0] and store.complete[1:].all()
        first = matching_original(store.episode(0), replay_episodes, "suffix")
        assert first == pieces[0].episode and pieces[0].start > 0
        assert [
            matching_original(store.episode(i), replay_episodes, "whole")
            for i in range(1, len(store))
        ] == list(range(first + 1, len(lengths)))


@pytest.mark.parametrize("layout", ["auto", "circular"])
def test_unwrapped_circular_checkpoint(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    layout: str,
) -> None:
    """A plain checkpoint that never wrapped (C > transitions) holds every episode, complete."""
    source = _circular_checkpoint(tmp_path / "replay_logs", replay_episodes, 2000)
    store_path = convert(source, tmp_path / "c.h5", layout=layout)
    assert_store_holds(store_path, replay_episodes, whole(lengths))


@pytest.mark.parametrize(
    "layout",
    [
        "auto",
        "circular",
    ],
)
def test_unwrapped_plain_checkpoint_numbered_after_zero(
    tmp_path: Path, replay_episodes: list[EpisodeArrays], layout: str
) -> None:
    """Dopamine numbers plain checkpoints by iteration: a non-wrapped one saved as checkpoint 3
    (the only file set) still holds every episode from transition 0, complete."""
    writer = ReplayLogWriter(tmp_path / "replay_logs", 2000, log_dumps=False, compresslevel=1)
    for episode in replay_episodes[:2]:
        writer.add_episode(*episode)
    writer.save_checkpoint(3)
    store_path = convert(tmp_path / "replay_logs", tmp_path / "p.h5", layout=layout)
    assert_store_holds(store_path, replay_episodes, whole(lengths_of(replay_episodes[:2])))


def test_open_episode_at_the_end(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
) -> None:
    """An episode left open (terminated=False) when the writer closes is kept, marked incomplete,
    with no terminal flag."""
    writer = ReplayLogWriter(tmp_path / "replay_logs", 97, compresslevel=1)
    *done, (frames, actions, rewards) = replay_episodes
    for episode in done:
        writer.add_episode(*episode)
    writer.add_episode(frames[:150], actions[:150], rewards[:150], terminated=False)
    writer.close()
    pieces = [*whole(lengths[:-1]), Piece(len(lengths) - 1, 0, 150, False)]
    assert_store_holds(
        convert(tmp_path / "replay_logs", tmp_path / "o.h5"), replay_episodes, pieces
    )


def test_episode_added_in_two_parts_is_joined(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
) -> None:
    """An episode added as an open part and then its rest is one complete episode (no padding
    between the parts)."""
    writer = ReplayLogWriter(tmp_path / "replay_logs", 97, compresslevel=1)
    for frames, actions, rewards in replay_episodes:
        writer.add_episode(frames[:101], actions[:101], rewards[:101], terminated=False)
        writer.add_episode(frames[101:], actions[101:], rewards[101:])
    writer.close()
    assert_store_holds(
        convert(tmp_path / "replay_logs", tmp_path / "j.h5"), replay_episodes, whole(lengths)
    )


@pytest.mark.parametrize(
    ("edge", "new_in_final"),
    [("n_plus_1", 0), ("divides_n_plus_1", 0), ("n", 1), ("divides_n", 1)],
)
def test_final_dump_edges(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    edge: str,
    new_in_final: int,
) -> None:
    """Capacities where the final dump holds nothing new (add_count % C == C-1 at the end) or
    only slot C-1 (add_count % C == 0) still round-trip exactly."""
    capacity = {
        "n_plus_1": n_total + 1,
        "divides_n_plus_1": divisor_near(n_total + 1, 600),
        "n": n_total,
        "divides_n": divisor_near(n_total, 250),
    }[edge]
    assert capacity < n_total + 1 or edge == "n_plus_1"
    source = tmp_path / "replay_logs"
    written = write_replay_logs(source, replay_episodes, capacity, compresslevel=1)
    reader = ReplayLogs(source)
    assert reader.checkpoints == written
    final = reader.layouts[-1]
    assert final.kind == "logged_final" and len(final.slots) == new_in_final
    assert final.next_transition == n_total
    assert_store_holds(convert(source, tmp_path / "e.h5"), replay_episodes, whole(lengths))
    assert_store_holds(
        convert(source, tmp_path / "l.h5", layout="logged"), replay_episodes, whole(lengths)
    )


@pytest.mark.parametrize(
    "case",
    ["logged_pad0", "logged_pad1", "logged_pad2", "lonely_pad0", "lonely_pad2", "circular_pad1"],
)
def test_stream_starting_inside_padding(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
    n_total: int,
    case: str,
) -> None:
    """A selection whose first transition falls on the padding before an episode drops that
    padding like any other: the store holds no all-zero frame, and the episode is the original."""
    kind, which = case.split("_pad")
    start = padding_positions(lengths, 1)[int(which)]
    source = tmp_path / "replay_logs"
    if kind in ("logged", "lonely"):
        # Dump 1 of capacity C starts at global transition C - 1.
        write_replay_logs(source, replay_episodes, start + 1, compresslevel=1)
        if kind == "lonely":  # without dump 0 the reader must look at the leading frames
            for path in source.glob("*_ckpt.0.gz"):
                path.unlink()
        ranges = logged_ranges(start + 1, n_total, [1, 2])
        store_path = convert(source, tmp_path / "p.h5", checkpoints=[1, 2])
    else:
        _circular_checkpoint(source, replay_episodes, n_total - start)
        ranges = [(start, n_total)]
        store_path = convert(source, tmp_path / "p.h5")
    assert ranges[0][0] == start
    with EpisodeStore.open(store_path) as store:
        frames = store.frames[:]
        all_zero = np.flatnonzero(~frames.reshape(len(frames), -1).any(axis=1))
        assert all_zero.tolist() == [], "store positions holding all-zero padding frames"
        assert store.lengths[0] == lengths[1]
    pieces = expected_pieces(lengths, ranges, previous_known=kind == "logged")
    if kind == "lonely" and which == "0":
        pieces[0] = Piece(pieces[0].episode, pieces[0].start, pieces[0].stop, True)
    assert pieces[0].complete, "a stream starting inside the padding sees the episode's start"
    assert_store_holds(store_path, replay_episodes, pieces)


# --------------------------------------------------------------------------- the writer itself


def test_writer_files(
    logs: Callable[[int], Path],
    replay_episodes: list[EpisodeArrays],
    n_total: int,
) -> None:
    """The writer stores clipped rewards, add_count per dump, dopamine's invalid_range around the
    cursor, and garbage zeros in slot C-1 of dump 0."""
    source, capacity = logs(97), 97
    final = (n_total + 1) // capacity
    rewards = np.concatenate([load_npy_gz(replay_file(source, "reward", k)) for k in range(final)])
    assert rewards.dtype == np.float32 and set(np.unique(rewards)) <= {0.0, 1.0}
    assert (rewards == 1.0).sum() > 0
    assert int(load_npy_gz(replay_file(source, "add_count", 2))) == 3 * capacity - 1
    cursor = n_total % capacity
    assert int(load_npy_gz(replay_file(source, "add_count", final))) == cursor
    np.testing.assert_array_equal(
        load_npy_gz(replay_file(source, "invalid_range", final)),
        (cursor - 1 + np.arange(5)) % capacity,
    )
    observation = load_npy_gz(replay_file(source, "observation", 0))
    assert observation.shape == (capacity, 84, 84) and not observation[-1].any()
    np.testing.assert_array_equal(observation[PAD], replay_episodes[0][0][0])
    assert load_npy_gz(replay_file(source, "action", 0)).dtype == np.int32


def test_writer_rejects_bad_arguments(tmp_path: Path) -> None:
    """A capacity below stack_size + 1, or arrays of different lengths, raise ValueError."""
    with pytest.raises(
        ValueError, match=re.escape("capacity must be at least stack_size + 1 = 5, got 4")
    ):
        ReplayLogWriter(tmp_path, 4)
    writer = ReplayLogWriter(tmp_path, 10, frame_shape=(2, 2))
    with pytest.raises(ValueError, match="must have one length, got 3, 2, 3"):
        writer.add_episode(np.zeros((3, 2, 2), np.uint8), np.zeros(2), np.zeros(3))
    assert writer.add_count == 0


def test_game_is_inferred_from_the_path(
    tmp_path: Path, replay_episodes: list[EpisodeArrays]
) -> None:
    """<Game>/<run>/replay_logs names the game; elsewhere, without game=, conversion refuses
    and writes nothing."""
    source = tmp_path / "Seaquest" / "3" / "replay_logs"
    write_replay_logs(source, replay_episodes[1:2], 97, compresslevel=1)
    with EpisodeStore.open(convert(source, tmp_path / "g.h5", game=None)) as store:
        assert store.game == "Seaquest"
        assert len(store) == 1
    other = tmp_path / "logs"
    shutil.copytree(source, other)
    with pytest.raises(ValueError, match=re.escape(f"cannot infer the game from {other}")):
        convert(other, tmp_path / "out" / "x.h5", game=None)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- bad input

SMALL_CAPACITY = 97


@pytest.fixture(scope="module")
def small_logs(
    tmp_path_factory: pytest.TempPathFactory, replay_episodes: list[EpisodeArrays]
) -> tuple[Path, Path]:
    """(replay_logs of the first two real episodes at C=97, a good store converted from it)."""
    directory = tmp_path_factory.mktemp("small") / "replay_logs"
    assert write_replay_logs(directory, replay_episodes[:2], SMALL_CAPACITY, compresslevel=1) == [
        0,
        1,
        2,
        3,
        4,
    ]
    good = convert(directory, directory.parent / "good.h5")
    return directory, good


def locate(transition: int, capacity: int = SMALL_CAPACITY) -> tuple[int, int]:
    """(logged dump, slot) holding global transition ``transition`` as a new transition."""
    checkpoint = (transition + 1) // capacity
    return checkpoint, (transition - checkpoint * capacity) % capacity


def set_value(directory: Path, name: str, transition: int, value: float) -> tuple[int, int]:
    """Overwrite one transition's ``name`` array entry (or whole frame) in its dump."""
    checkpoint, slot = locate(transition)
    path = replay_file(directory, name, checkpoint)
    array = load_npy_gz(path)
    array[slot] = value
    save_npy_gz(path, array)
    return checkpoint, slot


def rewrite(
    directory: Path, name: str, checkpoint: int, change: Callable[[np.ndarray], np.ndarray]
) -> None:
    """Replace one file by ``change`` of its array."""
    path = replay_file(directory, name, checkpoint)
    save_npy_gz(path, change(load_npy_gz(path)))


def cut_bytes(path: Path, fraction: float) -> None:
    """Keep the first ``fraction`` of a file's bytes."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def flip_byte(path: Path, fraction: float) -> None:
    """Invert one byte at ``fraction`` of the file."""
    data = bytearray(path.read_bytes())
    data[int(len(data) * fraction)] ^= 0xFF
    path.write_bytes(bytes(data))


def drop_checkpoint(directory: Path, checkpoint: int) -> None:
    """Delete every file of one checkpoint."""
    for name in ("observation", "action", "reward", "terminal", "add_count", "invalid_range"):
        replay_file(directory, name, checkpoint).unlink()


def empty_directory(directory: Path) -> None:
    """Delete every file of the directory, keeping the directory."""
    for path in directory.iterdir():
        path.unlink()


def _file(d: Path, name: str, checkpoint: int) -> str:
    return re.escape(str(replay_file(d, name, checkpoint)))


@dataclass(frozen=True)
class BadCase:
    """A damaged copy of the small logs and the error converting it must raise."""

    damage: Callable[[Path, list[int]], None]  # (replay_logs copy, episode lengths)
    match: Callable[[Path, list[int]], str]  # regex the error must match
    options: dict[str, Any] = field(default_factory=dict)


def _pad(lengths: list[int], i: int) -> int:
    """Global index of the i-th padding transition before the second episode."""
    return padding_positions(lengths, 1)[i]


BAD_CASES: dict[str, BadCase] = {
    "missing_reward_file": BadCase(
        lambda d, _: replay_file(d, "reward", 2).unlink(),
        lambda d, _: re.escape(
            f"checkpoint 2 in {d} is incomplete: missing $store$_reward_ckpt.2.gz"
        ),
    ),
    "missing_add_count_of_final": BadCase(
        lambda d, _: replay_file(d, "add_count", 4).unlink(),
        lambda d, _: re.escape(f"checkpoint 4 in {d} is incomplete: missing add_count_ckpt.4.gz"),
    ),
    "short_action_file": BadCase(
        lambda d, _: rewrite(d, "action", 1, lambda a: a[:-5]),
        lambda d, _: (
            _file(d, "action", 1) + re.escape(": expected shape [97] (the observation file's")
        ),
    ),
    "float_reward_as_int": BadCase(
        lambda d, _: rewrite(d, "reward", 3, lambda a: a.astype(np.int64)),
        lambda d, _: _file(d, "reward", 3) + ": unexpected dtype int64 for reward",
    ),
    "float_observation": BadCase(
        lambda d, _: rewrite(d, "observation", 0, lambda a: a.astype(np.float32)),
        lambda d, _: (
            _file(d, "observation", 0)
            + re.escape(": expected uint8 [C, H, W] frames, got float32 [97, 84, 84]")
        ),
    ),
    "flat_observation": BadCase(
        lambda d, _: rewrite(d, "observation", 3, lambda a: a.reshape(len(a), -1)),
        lambda d, _: (
            _file(d, "observation", 3)
            + re.escape(": expected uint8 [C, H, W] frames, got uint8 [97, 7056]")
        ),
    ),
    "truncated_observation": BadCase(
        lambda d, _: cut_bytes(replay_file(d, "observation", 3), 0.5),
        lambda d, _: _file(d, "observation", 3) + ": (corrupt or truncated gzip stream|truncated)",
    ),
    "truncated_final_observation": BadCase(
        lambda d, _: cut_bytes(replay_file(d, "observation", 4), 0.97),
        lambda d, _: _file(d, "observation", 4) + ": (corrupt or truncated gzip stream|truncated)",
    ),
    "corrupt_observation": BadCase(
        lambda d, _: flip_byte(replay_file(d, "observation", 2), 0.6),
        # The flipped byte may first break the stream's check or the padding frames it
        # decodes to (which byte ends where depends on the data): either way the file is named.
        lambda d, _: _file(d, "observation", 2) + ": (.* )?(corrupt|truncated|unexpected)",
    ),
    "truncated_terminal": BadCase(
        lambda d, _: cut_bytes(replay_file(d, "terminal", 1), 0.5),
        lambda d, _: _file(d, "terminal", 1),
    ),
    "padding_action_at_run_start": BadCase(
        lambda d, _: set_value(d, "action", 1, 3),
        lambda d, _: re.escape(
            f"{d} checkpoint 0: transition 1 (in order of addition) should be one "
            "of the 3 zero padding transitions"
        ),
    ),
    "padding_action_after_terminal": BadCase(
        lambda d, n: set_value(d, "action", _pad(n, 1), 5),
        lambda d, n: (
            re.escape(f"{d} checkpoint {locate(_pad(n, 1))[0]}: transition ")
            + r"\d+ .*zero padding transitions after a terminal"
        ),
    ),
    "padding_reward": BadCase(
        lambda d, n: set_value(d, "reward", _pad(n, 2), 1.0),
        lambda d, n: re.escape(f"{d} checkpoint {locate(_pad(n, 2))[0]}: ") + ".*zero padding",
    ),
    "padding_terminal": BadCase(
        lambda d, n: set_value(d, "terminal", _pad(n, 0), 1),
        lambda d, n: re.escape(f"{d} checkpoint {locate(_pad(n, 0))[0]}: ") + ".*zero padding",
    ),
    "padding_frame": BadCase(
        lambda d, n: set_value(d, "observation", _pad(n, 1), 7),
        lambda d, n: (
            _file(d, "observation", locate(_pad(n, 1))[0])
            + re.escape(f": slot {locate(_pad(n, 1))[1]} should be an all-zero padding frame")
        ),
    ),
    "padding_frame_after_terminal": BadCase(  # as padding_frame, without naming the slot
        lambda d, n: set_value(d, "observation", _pad(n, 2), 255),
        lambda d, n: (
            _file(d, "observation", locate(_pad(n, 2))[0])
            + r": slot \d+ should be an all-zero padding frame \(it follows a terminal\)"
        ),
    ),
    "first_padding_frame": BadCase(
        lambda d, _: set_value(d, "observation", 0, 1),
        lambda d, _: (
            _file(d, "observation", 0) + re.escape(": slot 0 should be an all-zero padding")
        ),
    ),
    "middle_checkpoint_missing": BadCase(
        lambda d, _: drop_checkpoint(d, 2),
        lambda d, _: re.escape(f"{d}: checkpoints [2] are missing between 0 and 4"),
    ),
    "middle_observation_missing": BadCase(
        lambda d, _: replay_file(d, "observation", 1).unlink(),
        lambda d, _: re.escape(
            f"checkpoint 1 in {d} is incomplete: missing $store$_observation_ckpt.1.gz"
        ),
    ),
    "last_observation_missing": BadCase(  # must not silently drop the last checkpoint
        lambda d, _: replay_file(d, "observation", 4).unlink(),
        lambda d, _: re.escape(
            f"checkpoint 4 in {d} is incomplete: missing $store$_observation_ckpt.4.gz"
        ),
    ),
    "add_count_not_a_scalar": BadCase(
        lambda d, _: save_npy_gz(replay_file(d, "add_count", 1), np.array([39, 1])),
        lambda d, _: _file(d, "add_count", 1) + re.escape(": expected one non-negative integer"),
    ),
    "frame_shape_differs_between_checkpoints": BadCase(
        lambda d, _: rewrite(d, "observation", 2, lambda a: np.ascontiguousarray(a[:, :80, :80])),
        lambda d, _: (
            _file(d, "observation", 2)
            + re.escape(": frames of shape [80, 80], but checkpoint 0 has [84, 84]")
        ),
    ),
    "unknown_checkpoint": BadCase(
        lambda d, _: None,
        lambda d, _: re.escape(f"{d}: no checkpoint(s) [7, 9]; available: 0-4"),
        {"checkpoints": [1, 7, 9]},
    ),
    "unknown_checkpoint_after_gap": BadCase(
        lambda d, _: drop_checkpoint(d, 2),
        lambda d, _: re.escape(f"{d}: no checkpoint(s) [2]; available: 0-1,3-4"),
        {"checkpoints": [1, 2, 3]},
    ),
    "add_count_fits_no_logged_dump": BadCase(
        lambda d, _: save_npy_gz(replay_file(d, "add_count", 1), np.array(150)),
        lambda d, _: re.escape(
            "add_count_ckpt.1.gz: add_count 150 fits no logged dump: expected 193"
        ),
        {"layout": "logged"},
    ),
    "empty_directory": BadCase(
        lambda d, _: empty_directory(d),
        lambda d, _: re.escape(f"{d}: no '$store$_observation_ckpt.N.gz' files"),
    ),
    "missing_directory": BadCase(
        lambda d, _: shutil.rmtree(d),
        lambda d, _: re.escape(f"replay_logs directory not found: {d}"),
    ),
}


def assert_conversion_fails(
    source: Path,
    out: Path,
    error: type[Exception],
    match: str,
    *,
    old_store: Path | None,
    **options: Any,
) -> None:
    """Converting ``source`` into ``out/store.h5`` raises ``error`` matching ``match`` and leaves
    ``out`` exactly as before: no store, no temporary file, an older store untouched."""
    out.mkdir(exist_ok=True)
    destination = out / "store.h5"
    if old_store is not None:
        shutil.copyfile(old_store, destination)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    options.setdefault("overwrite", old_store is not None)
    with pytest.raises(error, match=match):
        convert(source, destination, **options)
    after = {p.name: p.read_bytes() for p in out.iterdir()}
    assert sorted(after) == sorted(before), f"left behind: {sorted(set(after) - set(before))}"
    assert after == before
    assert destination.exists() == (old_store is not None)
    assert not list(out.glob(".store.h5.*.tmp"))


# Cases whose error message is wrong in atari_dt (see the reasons).
KNOWN_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("old_store", [False, True], ids=["fresh", "overwrite"])
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(name, marks=pytest.mark.xfail(reason=KNOWN_BUGS[name], strict=True))
        if name in KNOWN_BUGS
        else name
        for name in sorted(BAD_CASES)
    ],
)
def test_bad_input_fails_cleanly(
    tmp_path: Path,
    small_logs: tuple[Path, Path],
    replay_episodes: list[EpisodeArrays],
    case: str,
    old_store: bool,
) -> None:
    """Each kind of damaged or mis-selected input raises ReplayFileError naming the file or
    argument, and writes nothing (with overwrite=True the old store stays byte for byte)."""
    source, good = small_logs
    damaged = tmp_path / "Seaquest" / "1" / "replay_logs"
    shutil.copytree(source, damaged)
    bad = BAD_CASES[case]
    lengths = lengths_of(replay_episodes[:2])
    bad.damage(damaged, lengths)
    assert_conversion_fails(
        damaged,
        tmp_path / "out",
        ReplayFileError,
        bad.match(damaged, lengths),
        old_store=good if old_store else None,
        **bad.options,
    )


def test_good_copy_converts(
    tmp_path: Path, small_logs: tuple[Path, Path], replay_episodes: list[EpisodeArrays]
) -> None:
    """The undamaged copy the bad-input cases start from converts fine (the damage is the cause)."""
    source, good = small_logs
    copy = tmp_path / "Seaquest" / "1" / "replay_logs"
    shutil.copytree(source, copy)
    assert_store_holds(
        convert(copy, tmp_path / "ok.h5"), replay_episodes, whole(lengths_of(replay_episodes[:2]))
    )
    assert_store_holds(good, replay_episodes, whole(lengths_of(replay_episodes[:2])))


def test_several_circular_checkpoints_are_refused(
    tmp_path: Path,
    replay_episodes: list[EpisodeArrays],
    lengths: list[int],
) -> None:
    """Several plain circular checkpoints overlap: selecting them together is refused (nothing
    written), while each one alone converts to its own window of transitions."""
    source = tmp_path / "replay_logs"
    writer = ReplayLogWriter(source, 300, log_dumps=False, compresslevel=1)
    for i, episode in enumerate(replay_episodes):
        writer.add_episode(*episode)
        if i in (1, 3):
            writer.save_checkpoint(i // 2)
    add_counts = [n_added(lengths[:2]), n_added(lengths[:4])]
    assert all(a > 300 and a % 300 != 299 for a in add_counts)  # wrapped, not a logged dump
    for old_store in (None, tmp_path / "old.h5"):
        if old_store is not None:
            old_store.write_bytes(b"an older store")
        assert_conversion_fails(
            source,
            tmp_path / "out",
            ReplayFileError,
            re.escape(f"{source}: checkpoints [0, 1] are plain dopamine snapshots"),
            old_store=old_store,
        )
    for checkpoint, add_count in enumerate(add_counts):
        pieces = expected_pieces(lengths, [(add_count - 300, add_count)], previous_known=False)
        store_path = convert(source, tmp_path / f"one{checkpoint}.h5", checkpoints=[checkpoint])
        assert_store_holds(store_path, replay_episodes, pieces)


def test_existing_destination_needs_overwrite(
    tmp_path: Path, small_logs: tuple[Path, Path], replay_episodes: list[EpisodeArrays]
) -> None:
    """An existing destination is refused with FileExistsError (left byte for byte) unless
    overwrite=True, which replaces it with the new store."""
    source, _ = small_logs
    out = tmp_path / "out"
    out.mkdir()
    old = tmp_path / "old.h5"
    old.write_bytes(b"not even a store")
    assert_conversion_fails(
        source,
        out,
        FileExistsError,
        r"store\.h5 exists; pass overwrite=True",
        old_store=old,
        overwrite=False,
    )
    convert(source, out / "store.h5", overwrite=True)
    assert_store_holds(out / "store.h5", replay_episodes, whole(lengths_of(replay_episodes[:2])))
    assert sorted(p.name for p in out.iterdir()) == ["store.h5"]


# --------------------------------------------------------------------------- review follow-ups


def test_plain_unwrapped_checkpoint_with_a_short_empty_tail(
    tmp_path: Path, replay_episodes: list[EpisodeArrays]
) -> None:
    """A never-wrapped plain buffer numbered above 0 whose unused tail is short (< 64 slots) is
    still read from slot 0 (it starts with padding), not as a final logged dump."""
    frames, actions, rewards = replay_episodes[0]
    writer = ReplayLogWriter(tmp_path / "replay_logs", PAD + 2 + 41, log_dumps=False)
    writer.add_episode(frames[:2], actions[:2], rewards[:2])
    writer.save_checkpoint(1)
    store_path = convert(tmp_path / "replay_logs", tmp_path / "p.h5")
    with EpisodeStore.open(store_path) as store:
        assert store_summary(store) == [(2, True)]
        np.testing.assert_array_equal(store.episode(0).frames, frames[:2])


def test_layouts_hold_no_slot_arrays(logs: Callable[[int], Path]) -> None:
    """A layout is a few numbers (memory must not grow with the number of checkpoints); its
    slots are recomputed on demand and follow the dump rule."""
    reader = ReplayLogs(logs(97))
    for lay in reader.layouts:
        assert not any(isinstance(value, np.ndarray) for value in vars(lay).values())
    later = reader.layouts[1]
    np.testing.assert_array_equal(later.slots, [96, *range(96)])


@pytest.mark.parametrize(
    ("frames", "match"),
    [
        (np.zeros((0, 84, 84), np.uint8), "at least one transition"),
        (np.zeros((3, 84, 84), np.float32), re.escape("frames must be uint8 [L, 84, 84]")),
        (np.zeros((3, 4, 84, 84), np.uint8), re.escape("got uint8 [3, 4, 84, 84]")),
    ],
    ids=["empty", "float", "stacks"],
)
def test_writer_refuses_bad_frames(tmp_path: Path, frames: np.ndarray, match: str) -> None:
    """Empty episodes, non-uint8 frames and 4-frame stacks are refused before anything is added."""
    writer = ReplayLogWriter(tmp_path, 10)
    with pytest.raises(ValueError, match=match):
        writer.add_episode(frames, np.zeros(len(frames)), np.zeros(len(frames)))
    assert writer.add_count == 0
