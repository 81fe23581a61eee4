"""Checkpoint file names, checkpoint selections, and the slot order of each dump kind."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from atari_dt.datasets.npy_gzip import ReplayFileError, load_npy_gz, save_npy_gz
from atari_dt.datasets.replay_files import (
    _slot_order,
    discover_checkpoints,
    parse_checkpoint_selection,
    read_layout,
    replay_file,
)
from atari_dt.datasets.replay_writer import ReplayLogWriter

PAD = 3  # stack_size - 1 padding transitions before every episode
FRAME = (2, 3)  # tiny frames: these tests are about slot order, not pixels

# --------------------------------------------------------------------------- selections


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0-4", [0, 1, 2, 3, 4]),
        ("7", [7]),
        ("0-2,5,9-10", [0, 1, 2, 5, 9, 10]),
        (" 3 - 5 , 1 ", [1, 3, 4, 5]),
        ("5,1,3", [1, 3, 5]),
        ("0-3,2-5,4", [0, 1, 2, 3, 4, 5]),
        ("6-6", [6]),
        ("48-50", [48, 49, 50]),
    ],
)
def test_parse_checkpoint_selection(text: str, expected: list[int]) -> None:
    """Ranges and single numbers give the sorted set of checkpoint numbers."""
    assert parse_checkpoint_selection(text) == expected


@pytest.mark.parametrize(
    ("text", "bad_part"),
    [
        ("", ""),
        ("abc", "abc"),
        ("1-", "1-"),
        ("-3", "-3"),
        ("1-2-3", "1-2-3"),
        ("1,,2", ""),
        ("1.5", "1.5"),
        ("0-4;7", "0-4;7"),
        ("2,x", "x"),
    ],
)
def test_parse_checkpoint_selection_rejects_garbage(text: str, bad_part: str) -> None:
    """Anything but numbers and ranges raises ValueError naming the whole text and the bad part."""
    pattern = re.escape(f"bad checkpoint selection {text!r} (part {bad_part!r})")
    with pytest.raises(ValueError, match=pattern):
        parse_checkpoint_selection(text)


def test_parse_checkpoint_selection_rejects_reversed_range() -> None:
    """A range whose end is before its start is an error, not an empty selection."""
    with pytest.raises(ValueError, match=re.escape("bad checkpoint range '5-3': 3 < 5")):
        parse_checkpoint_selection("1,5-3")


# --------------------------------------------------------------------------- file names


def test_replay_file_names(tmp_path: Path) -> None:
    """Store arrays carry the '$store$_' prefix, add_count and invalid_range do not."""
    assert replay_file(tmp_path, "observation", 3).name == "$store$_observation_ckpt.3.gz"
    assert replay_file(tmp_path, "terminal", 50).name == "$store$_terminal_ckpt.50.gz"
    assert replay_file(tmp_path, "add_count", 0).name == "add_count_ckpt.0.gz"
    assert replay_file(tmp_path, "invalid_range", 1).name == "invalid_range_ckpt.1.gz"
    assert replay_file(tmp_path, "action", 1).parent == tmp_path


def test_discover_checkpoints_sorts_numerically_and_ignores_other_files(tmp_path: Path) -> None:
    """Any file of a checkpoint set counts (so a set missing its observation file is still
    found and reported); numbers sort as numbers (2 < 10), not as strings."""
    for n in (10, 2, 0):
        replay_file(tmp_path, "observation", n).write_bytes(b"")
    for name in (
        "$store$_action_ckpt.5.gz",
        "$store$_observation_ckpt.7.gz.tmp",
        "notes.txt",
        "$store$_observation_ckpt.x.gz",
        "add_count_ckpt.11.gz",
    ):
        (tmp_path / name).write_bytes(b"")
    assert discover_checkpoints(tmp_path) == [0, 2, 5, 10, 11]


def test_discover_checkpoints_errors(tmp_path: Path) -> None:
    """A missing directory, or one without DQN-replay files, raises ReplayFileError naming it."""
    with pytest.raises(ReplayFileError, match=re.escape(f"directory not found: {tmp_path / 'no'}")):
        discover_checkpoints(tmp_path / "no")
    (tmp_path / "notes.txt").write_bytes(b"")
    with pytest.raises(ReplayFileError, match=re.escape(f"{tmp_path}: no '$store$_observation")):
        discover_checkpoints(tmp_path)


# --------------------------------------------------------------------------- slot order rules


def _order(
    checkpoint: int, capacity: int, add_count: int, *, is_last: bool = False, layout: str = "auto"
) -> tuple[str, list[int], int]:
    """``_slot_order`` with slots as a list."""
    kind, slots, first = _slot_order(checkpoint, capacity, add_count, is_last, layout, Path("d"))
    assert slots.dtype == np.int64
    return kind, slots.tolist(), first


def test_slot_order_logged_first_dump() -> None:
    """Dump 0 (add_count C-1) holds slots 0..C-2 from transition 0; slot C-1 is garbage."""
    assert _order(0, 10, 9) == ("logged", list(range(9)), 0)


@pytest.mark.parametrize("checkpoint", [1, 2, 49])
def test_slot_order_logged_later_dump(checkpoint: int) -> None:
    """Dump k>0 (add_count (k+1)C-1) starts with slot C-1 (transition kC-1), then 0..C-2."""
    kind, slots, first = _order(checkpoint, 10, (checkpoint + 1) * 10 - 1)
    assert (kind, slots, first) == ("logged", [9, *range(9)], checkpoint * 10 - 1)


@pytest.mark.parametrize(
    ("cursor", "expected"), [(0, [9]), (1, [9, 0]), (4, [9, 0, 1, 2, 3]), (8, [9, *range(8)])]
)
def test_slot_order_logged_final(cursor: int, expected: list[int]) -> None:
    """The final dump k>0 (add_count = cursor < C) holds slot C-1 then slots 0..cursor-1."""
    assert _order(3, 10, cursor, is_last=True) == ("logged_final", expected, 29)


def test_slot_order_logged_final_with_nothing_new() -> None:
    """A final dump right after dump k-1 (cursor C-1) holds no new transition."""
    assert _order(3, 10, 9, is_last=True) == ("logged_final", [], 29)
    assert _order(3, 10, 9, layout="logged") == ("logged_final", [], 29)


def test_slot_order_final_dump_zero() -> None:
    """A run shorter than C: the only dump is final with slots 0..cursor-1 from transition 0."""
    assert _order(0, 10, 4, is_last=True) == ("logged_final", [0, 1, 2, 3], 0)


@pytest.mark.parametrize(("add_count", "oldest"), [(23, 3), (20, 0), (29, 9), (11, 1), (1000, 0)])
def test_slot_order_circular_wrapped(add_count: int, oldest: int) -> None:
    """A wrapped plain checkpoint starts at the oldest slot add_count % C and has C slots."""
    kind, slots, first = _order(0, 10, add_count, is_last=True)
    assert kind == "circular"
    assert slots == [*range(oldest, 10), *range(oldest)]
    assert first == add_count - 10


def test_slot_order_circular_not_wrapped() -> None:
    """A plain checkpoint with add_count <= C holds slots 0..add_count-1 from transition 0."""
    assert _order(4, 10, 7) == ("circular", list(range(7)), 0)  # not last: not a final dump
    assert _order(4, 10, 10, is_last=True) == ("circular", list(range(10)), 0)
    assert _order(4, 10, 4, is_last=True, layout="circular") == ("circular", [0, 1, 2, 3], 0)


def test_slot_order_circular_layout_ignores_logged_rule() -> None:
    """layout='circular' reads a file whose add_count fits a logged dump as circular."""
    assert _order(1, 10, 19, layout="circular") == ("circular", [9, *range(9)], 9)
    assert _order(0, 10, 9, layout="circular") == ("circular", list(range(9)), 0)


@pytest.mark.parametrize(("checkpoint", "add_count"), [(1, 23), (2, 19), (0, 10), (1, 10)])
def test_slot_order_logged_layout_rejects_other_add_counts(checkpoint: int, add_count: int) -> None:
    """layout='logged' with an add_count that is neither (k+1)C-1 nor < C is an error that
    names the add_count file and the expected value."""
    expected = (checkpoint + 1) * 10 - 1
    pattern = re.escape(
        f"add_count_ckpt.{checkpoint}.gz: add_count {add_count} fits no logged dump: "
        f"expected {expected}"
    )
    with pytest.raises(ReplayFileError, match=pattern):
        _slot_order(checkpoint, 10, add_count, True, "logged", Path("d"))


# ------------------------------------------------------------------ read_layout on written files


def _episodes(lengths: list[int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Tiny episodes whose actions are unique ids (>= 1) so every transition is identifiable."""
    rng = np.random.default_rng(seed)
    episodes, next_id = [], 1
    for length in lengths:
        ids = np.arange(next_id, next_id + length)
        next_id += length
        frames = rng.integers(1, 256, (length, *FRAME), dtype=np.uint8)
        rewards = rng.choice([0.0, 1.0, 20.0, -5.0], length).astype(np.float32)
        episodes.append((frames, ids, rewards))
    return episodes


def _stream(
    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray]:
    """(action ids, terminals) of every transition the writer adds, padding included."""
    actions, terminals = [], []
    for _, ids, _ in episodes:
        actions += [0] * PAD + ids.tolist()
        terminals += [0] * (PAD + len(ids) - 1) + [1]
    return np.array(actions), np.array(terminals)


def _write(
    directory: Path,
    episodes: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
    capacity: int,
    *,
    log_dumps: bool = True,
) -> ReplayLogWriter:
    """Write episodes with a ReplayLogWriter of tiny frames; close (logged) or leave as is."""
    writer = ReplayLogWriter(
        directory, capacity, frame_shape=FRAME, log_dumps=log_dumps, compresslevel=1
    )
    for frames, actions, rewards in episodes:
        writer.add_episode(frames, actions, rewards)
    if log_dumps:
        writer.close()
    return writer


def _assert_layout_reads_stream(
    directory: Path,
    checkpoint: int,
    layout_kind: str,
    *,
    is_last: bool,
    stream: tuple[np.ndarray, np.ndarray],
    layout: str = "auto",
) -> tuple[int, int]:
    """The checkpoint's arrays read at its slots equal the stream from its first transition;
    return its global range."""
    lay = read_layout(directory, checkpoint, is_last=is_last, layout=layout)  # type: ignore[arg-type]
    assert lay.kind == layout_kind
    assert lay.checkpoint == checkpoint and lay.frame_shape == FRAME
    actions, terminals = stream
    span = slice(lay.first_transition, lay.next_transition)
    np.testing.assert_array_equal(load_npy_gz(lay.path("action"))[lay.slots], actions[span])
    np.testing.assert_array_equal(load_npy_gz(lay.path("terminal"))[lay.slots], terminals[span])
    assert len(lay.slots) == len(set(lay.slots.tolist()))  # no slot read twice
    return lay.first_transition, lay.next_transition


LENGTHS = [17, 5, 23, 1, 40, 9, 2, 31]  # 128 real + 24 padding = 152 transitions


@pytest.mark.parametrize("capacity", [5, 6, 7, 9, 16, 19, 37, 50, 76, 151, 152, 153, 200])
def test_logged_dumps_tile_the_stream(tmp_path: Path, capacity: int) -> None:
    """Every logged dump written by ReplayLogWriter maps, through read_layout's slot order, onto
    consecutive transitions; together the dumps cover the whole stream exactly once."""
    episodes = _episodes(LENGTHS)
    stream = _stream(episodes)
    n_total = len(stream[0])
    writer = _write(tmp_path, episodes, capacity)
    n_full = (n_total + 1) // capacity
    assert writer.checkpoints_written == list(range(n_full + 1))
    assert discover_checkpoints(tmp_path) == writer.checkpoints_written
    covered = 0
    for checkpoint in writer.checkpoints_written:
        is_last = checkpoint == n_full
        kind = "logged_final" if is_last and checkpoint > 0 else "logged"
        if is_last and checkpoint == 0:
            kind = "logged" if n_total == capacity - 1 else "logged_final"
        first, stop = _assert_layout_reads_stream(
            tmp_path, checkpoint, kind, is_last=is_last, stream=stream
        )
        assert first == covered
        covered = stop
        assert load_npy_gz(replay_file(tmp_path, "add_count", checkpoint)) == (
            n_total % capacity if is_last else (checkpoint + 1) * capacity - 1
        )
    assert covered == n_total


@pytest.mark.parametrize("capacity", [7, 37, 152])
def test_explicit_logged_layout_reads_logged_files(tmp_path: Path, capacity: int) -> None:
    """layout='logged' gives the same slot order as auto on logged dumps."""
    episodes = _episodes(LENGTHS, seed=1)
    stream = _stream(episodes)
    writer = _write(tmp_path, episodes, capacity)
    for checkpoint in writer.checkpoints_written:
        is_last = checkpoint == writer.checkpoints_written[-1]
        auto = read_layout(tmp_path, checkpoint, is_last=is_last)
        logged = read_layout(tmp_path, checkpoint, is_last=is_last, layout="logged")
        assert auto.kind == logged.kind and auto.first_transition == logged.first_transition
        np.testing.assert_array_equal(auto.slots, logged.slots)
        _assert_layout_reads_stream(
            tmp_path, checkpoint, logged.kind, is_last=is_last, stream=stream, layout="logged"
        )


@pytest.mark.parametrize("capacity", [10, 33, 64, 151, 152, 153, 500])
def test_plain_checkpoint_is_circular(tmp_path: Path, capacity: int) -> None:
    """A plain dopamine checkpoint holds the last min(C, add_count) transitions, oldest first."""
    episodes = _episodes(LENGTHS, seed=2)
    stream = _stream(episodes)
    n_total = len(stream[0])
    writer = _write(tmp_path, episodes, capacity, log_dumps=False)
    assert writer.checkpoints_written == []  # nothing is dumped on its own
    writer.save_checkpoint(0)
    # Same slots whatever the name: a short run's only dump looks like a logged dump 0.
    kind = {capacity - 1: "logged"}.get(
        n_total, "logged_final" if n_total < capacity else "circular"
    )
    first, stop = _assert_layout_reads_stream(tmp_path, 0, kind, is_last=True, stream=stream)
    assert (first, stop) == (max(0, n_total - capacity), n_total)
    _assert_layout_reads_stream(
        tmp_path, 0, "circular", is_last=True, stream=stream, layout="circular"
    )


def test_logged_layout_rejects_a_wrapped_plain_checkpoint(tmp_path: Path) -> None:
    """layout='logged' on a wrapped plain checkpoint fails naming its add_count file."""
    writer = _write(tmp_path, _episodes(LENGTHS), 40, log_dumps=False)
    writer.save_checkpoint(2)
    with pytest.raises(
        ReplayFileError, match=re.escape("add_count_ckpt.2.gz: add_count 152 fits no")
    ):
        read_layout(tmp_path, 2, is_last=True, layout="logged")


def test_layout_properties(tmp_path: Path) -> None:
    """CheckpointLayout reports capacity, add_count, file paths and next_transition."""
    _write(tmp_path, _episodes(LENGTHS), 50)
    lay = read_layout(tmp_path, 1, is_last=False)
    assert (lay.capacity, lay.add_count, lay.first_transition) == (50, 99, 49)
    assert lay.next_transition == 49 + 50
    assert lay.path("reward") == tmp_path / "$store$_reward_ckpt.1.gz"


# --------------------------------------------------------------------------- read_layout errors


@pytest.mark.parametrize("name", ["observation", "action", "reward", "terminal", "add_count"])
def test_read_layout_missing_file(tmp_path: Path, name: str) -> None:
    """A checkpoint missing any required file is reported as incomplete, naming the file."""
    _write(tmp_path, _episodes(LENGTHS), 50)
    replay_file(tmp_path, name, 1).unlink()
    pattern = re.escape(
        f"checkpoint 1 in {tmp_path} is incomplete: missing {replay_file(tmp_path, name, 1).name}"
    )
    with pytest.raises(ReplayFileError, match=pattern):
        read_layout(tmp_path, 1, is_last=False)


def _rewrite(directory: Path, name: str, checkpoint: int, array: np.ndarray) -> None:
    """Replace one array file of a checkpoint."""
    save_npy_gz(replay_file(directory, name, checkpoint), array)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("action", lambda a: a[:-1], "$store$_action_ckpt.0.gz: expected shape [50]"),
        (
            "terminal",
            lambda a: np.concatenate([a, a[:1]]),
            "$store$_terminal_ckpt.0.gz: expected shape [50]",
        ),
        ("reward", lambda a: a.reshape(10, 5), "$store$_reward_ckpt.0.gz: expected shape [50]"),
        (
            "reward",
            lambda a: a.astype(np.int32),
            "$store$_reward_ckpt.0.gz: unexpected dtype int32",
        ),
        (
            "action",
            lambda a: a.astype(np.float32),
            "$store$_action_ckpt.0.gz: unexpected dtype float32",
        ),
        (
            "observation",
            lambda a: a.astype(np.float32),
            "$store$_observation_ckpt.0.gz: expected uint8 [C, H, W] frames, got float32",
        ),
        (
            "observation",
            lambda a: a.reshape(50, -1),
            "$store$_observation_ckpt.0.gz: expected uint8 [C, H, W] frames, got uint8 [50, 6]",
        ),
    ],
    ids=[
        "short_action",
        "long_terminal",
        "2d_reward",
        "int_reward",
        "float_action",
        "float_obs",
        "flat_obs",
    ],
)
def test_read_layout_rejects_inconsistent_arrays(
    tmp_path: Path, name: str, make: object, message: str
) -> None:
    """Arrays of the wrong length, shape or dtype are refused, naming the file and the problem."""
    _write(tmp_path, _episodes(LENGTHS), 50)
    original = load_npy_gz(replay_file(tmp_path, name, 0))
    _rewrite(tmp_path, name, 0, make(original))  # type: ignore[operator]
    with pytest.raises(ReplayFileError, match=re.escape(message)):
        read_layout(tmp_path, 0, is_last=False)
