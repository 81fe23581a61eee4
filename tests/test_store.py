"""The HDF5 episode store: writer, reader, format checks and the integrity verifier."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from unittest import mock

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atari_dt.datasets import store_writer
from atari_dt.datasets.rtg import returns_to_go
from atari_dt.datasets.store import EpisodeStore, StoreFormatError
from atari_dt.datasets.store_writer import EpisodeStoreWriter
from atari_dt.datasets.summary import return_histogram, store_summary
from atari_dt.datasets.verify import verify_store
from atari_dt.envs.episode import RecordedEpisode

FRAME_SHAPE = (6, 5)
METADATA = {
    "source": {"kind": "test", "n": 1},
    "preprocessing": {"frame_skip": 4},
    "behaviour_policy": {"name": "random", "seed": 3},
}


# ---- helpers ------------------------------------------------------------------------------


def write_recorded_store(path: Path, episodes: Sequence[RecordedEpisode]) -> Path:
    """A store of real recorded episodes with raw rewards and RAM (as ``collect`` writes)."""
    with EpisodeStoreWriter(
        path, game="Seaquest", n_actions=18, raw_rewards=True, ram=True, **METADATA
    ) as writer:
        for e in episodes:
            writer.add_episode(e.frames, e.actions, e.rewards, raw_rewards=e.rewards, ram=e.ram)
    return path


def synthetic_frames(length: int, seed: int) -> np.ndarray:
    """Random uint8 frames ``[length, *FRAME_SHAPE]``."""
    return np.random.default_rng(seed).integers(0, 256, (length, *FRAME_SHAPE), dtype=np.uint8)


def write_synthetic_store(
    path: Path,
    lengths: Sequence[int],
    *,
    complete: Sequence[bool] | None = None,
    rewards: Sequence[np.ndarray] | None = None,
    **writer_options: Any,
) -> Path:
    """A small store of episodes with random frames/actions, rewards ``i % 3 - 1`` by default."""
    complete = [True] * len(lengths) if complete is None else complete
    with EpisodeStoreWriter(
        path, game="Pong", frame_shape=FRAME_SHAPE, n_actions=6, **writer_options
    ) as writer:
        for i, (length, done) in enumerate(zip(lengths, complete, strict=True)):
            r = np.arange(length) % 3 - 1.0 if rewards is None else rewards[i]
            writer.add_episode(synthetic_frames(length, i), np.arange(length) % 6, r, complete=done)
    return path


def edit_h5(path: Path, edit: Any) -> None:
    """Open ``path`` read-write and apply ``edit(h5_file)``."""
    with h5py.File(path, "r+") as h5:
        edit(h5)


def set_value(name: str, index: Any, value: Any) -> Any:
    """An ``edit_h5`` edit setting ``h5[name][index] = value``."""

    def edit(h5: h5py.File) -> None:
        data = h5[name][:]
        data[index] = value
        h5[name][...] = data

    return edit


def leftovers(directory: Path) -> list[str]:
    """Every file in ``directory`` (temporary files included)."""
    return sorted(os.listdir(directory))


@pytest.fixture(scope="module")
def seaquest_store(tmp_path_factory: pytest.TempPathFactory, seaquest_episodes) -> Path:
    return write_recorded_store(tmp_path_factory.mktemp("store") / "seaquest.h5", seaquest_episodes)


@pytest.fixture
def store_copy(seaquest_store: Path, tmp_path: Path) -> Path:
    """A private copy of the real store, to tamper with."""
    return Path(shutil.copy(seaquest_store, tmp_path / "copy.h5"))


# ---- round trip ---------------------------------------------------------------------------


def test_round_trip_clipped_units(seaquest_store: Path, seaquest_episodes) -> None:
    """Frames/actions/RAM round-trip; rewards clipped; timesteps 0..L-1; rtg[0] == ret."""
    with EpisodeStore.open(seaquest_store) as store:
        assert len(store) == len(seaquest_episodes)
        for i, recorded in enumerate(seaquest_episodes):
            ep = store.episode(i)
            clipped = np.clip(recorded.rewards, -1, 1)
            assert ep.index == i and len(ep) == len(recorded.actions)
            assert ep.reward_units == "clipped" and ep.complete
            np.testing.assert_array_equal(ep.frames, recorded.frames)
            np.testing.assert_array_equal(ep.actions, recorded.actions)
            np.testing.assert_array_equal(ep.ram, recorded.ram)
            np.testing.assert_array_equal(ep.rewards, clipped)
            np.testing.assert_array_equal(ep.timesteps, np.arange(len(ep)))
            np.testing.assert_allclose(ep.rtg, np.cumsum(clipped[::-1])[::-1])
            assert ep.rtg[0] == ep.ret == clipped.sum()
            assert ep.frames.dtype == np.uint8 and ep.actions.dtype == np.int64


def test_rewards_are_clipped_and_raw_rewards_kept(seaquest_store: Path, seaquest_episodes) -> None:
    """The real data has rewards of 20: /rewards holds them clipped, /raw_rewards unchanged."""
    raw = np.concatenate([e.rewards for e in seaquest_episodes])
    assert raw.max() > 1, "the fixture should contain unclipped rewards"
    with EpisodeStore.open(seaquest_store) as store:
        np.testing.assert_array_equal(store.column("rewards"), np.clip(raw, -1, 1))
        assert np.abs(store.column("rewards")).max() <= 1
    with EpisodeStore.open(seaquest_store, reward_units="raw") as store:
        np.testing.assert_array_equal(store.column("rewards"), raw)


def test_round_trip_raw_units(seaquest_store: Path, seaquest_episodes) -> None:
    """In raw units rewards, rtg and returns are the game's score changes and their sums."""
    with EpisodeStore.open(seaquest_store, reward_units="raw") as store:
        assert store.reward_units == "raw"
        for i, recorded in enumerate(seaquest_episodes):
            ep = store.episode(i)
            assert ep.reward_units == "raw"
            np.testing.assert_array_equal(ep.rewards, recorded.rewards)
            np.testing.assert_allclose(ep.rtg, np.cumsum(recorded.rewards[::-1])[::-1])
            assert ep.rtg[0] == ep.ret == recorded.rewards.sum()
        np.testing.assert_array_equal(store.returns, [e.rewards.sum() for e in seaquest_episodes])


def test_store_attributes(seaquest_store: Path, seaquest_episodes) -> None:
    """Game, action count, metadata, sizes and the episode tables are as written."""
    lengths = [len(e.actions) for e in seaquest_episodes]
    with EpisodeStore.open(seaquest_store) as store:
        assert store.game == "Seaquest" and store.n_actions == 18
        assert store.metadata == METADATA
        assert store.n_transitions == sum(lengths)
        assert store.frame_shape == (84, 84)
        assert store.has_ram and store.has_raw_rewards
        np.testing.assert_array_equal(store.lengths, lengths)
        np.testing.assert_array_equal(store.offsets, np.cumsum([0, *lengths[:-1]]))
        assert store.complete.all()
        terminals = store.column("terminals")
        np.testing.assert_array_equal(np.flatnonzero(terminals), np.cumsum(lengths) - 1)
        assert "Seaquest" in repr(store) and str(sum(lengths)) in repr(store)


def test_returns_and_return_range(seaquest_store: Path, seaquest_episodes) -> None:
    """``returns`` are the per-episode sums; ``return_range`` their (min, max)."""
    clipped = [float(np.clip(e.rewards, -1, 1).sum()) for e in seaquest_episodes]
    raw = [float(e.rewards.sum()) for e in seaquest_episodes]
    with EpisodeStore.open(seaquest_store) as store:
        np.testing.assert_array_equal(store.returns, clipped)
        assert store.return_range() == (min(clipped), max(clipped))
    with EpisodeStore.open(seaquest_store, reward_units="raw") as store:
        assert store.return_range() == (min(raw), max(raw))


def test_return_range_skips_incomplete_episodes(tmp_path: Path) -> None:
    """``return_range`` covers complete episodes unless ``complete_only=False``."""
    rewards = [np.full(3, 1.0), np.full(4, -1.0), np.full(2, 1.0)]
    path = write_synthetic_store(
        tmp_path / "s.h5", [3, 4, 2], complete=[True, False, True], rewards=rewards
    )
    with EpisodeStore.open(path) as store:
        assert store.return_range() == (2.0, 3.0)
        assert store.return_range(complete_only=False) == (-4.0, 3.0)
        np.testing.assert_array_equal(store.complete, [True, False, True])
        assert store.column("terminals")[store.offsets[1] + 3] == 0


def test_return_range_without_complete_episodes_raises(tmp_path: Path) -> None:
    """A store with only cut episodes has no complete return range."""
    path = write_synthetic_store(tmp_path / "s.h5", [3], complete=[False])
    with EpisodeStore.open(path) as store, pytest.raises(ValueError, match="no complete episodes"):
        store.return_range()


def test_negative_episode_index_counts_from_the_end(seaquest_store: Path) -> None:
    """``episode(-k)`` is episode ``len - k``, with that index."""
    with EpisodeStore.open(seaquest_store) as store:
        last, first = store.episode(-1), store.episode(-len(store))
        assert last.index == len(store) - 1 and first.index == 0
        np.testing.assert_array_equal(last.frames, store.episode(len(store) - 1).frames)
        np.testing.assert_array_equal(first.actions, store.episode(0).actions)


@pytest.mark.parametrize("index", [5, 6, -6, 100])
def test_episode_index_out_of_range(seaquest_store: Path, index: int) -> None:
    """Out-of-range episode numbers raise IndexError naming the store's size."""
    with (
        EpisodeStore.open(seaquest_store) as store,
        pytest.raises(
            IndexError, match=rf"episode {index} out of range: .*seaquest.h5 has 5 episodes"
        ),
    ):
        store.episode(index)


def test_episode_arrays_are_copies(seaquest_store: Path) -> None:
    """Modifying an episode's arrays does not change what the store returns next."""
    with EpisodeStore.open(seaquest_store) as store:
        ep = store.episode(0)
        ep.frames[:] = 0
        ep.rtg[:] = -5
        again = store.episode(0)
        assert again.frames.any() and (again.rtg != -5).all()


def test_store_without_ram_or_raw_rewards(tmp_path: Path) -> None:
    """Optional arrays are absent when not declared: ram is None and column('ram') a KeyError."""
    path = write_synthetic_store(tmp_path / "s.h5", [4, 2])
    with EpisodeStore.open(path) as store:
        assert not store.has_ram and not store.has_raw_rewards
        assert store.episode(0).ram is None
        with pytest.raises(KeyError, match="no per-transition array 'ram'"):
            store.column("ram")


@pytest.mark.parametrize("compression", ["gzip", "lzf", None])
def test_compression_round_trip(tmp_path: Path, compression: str | None) -> None:
    """Frames round-trip under every compression, with chunks straddling episodes."""
    lengths = [7, 1, 12]
    path = write_synthetic_store(
        tmp_path / "s.h5", lengths, compression=compression, chunk_frames=5
    )
    with EpisodeStore.open(path) as store:
        for i, length in enumerate(lengths):
            np.testing.assert_array_equal(store.episode(i).frames, synthetic_frames(length, i))


def test_empty_store_round_trip(tmp_path: Path) -> None:
    """A store with no episodes is valid: zero transitions, zero episodes."""
    with EpisodeStoreWriter(tmp_path / "e.h5", game="Pong", frame_shape=FRAME_SHAPE):
        pass
    with EpisodeStore.open(tmp_path / "e.h5") as store:
        assert len(store) == 0 and store.n_transitions == 0
    assert verify_store(tmp_path / "e.h5").ok


@settings(max_examples=25, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=10),
    group=st.integers(1, 20),
    seed=st.integers(0, 2**16),
)
def test_rtg_written_in_groups_matches_whole(lengths: list[int], group: int, seed: int) -> None:
    """RTG and returns finalised in small groups of episodes equal the whole-array RTG."""
    rng = np.random.default_rng(seed)
    rewards = [rng.integers(-3, 4, n).astype(np.float32) for n in lengths]
    with (
        tempfile.TemporaryDirectory() as tmp,
        mock.patch.object(store_writer, "_FINALIZE_GROUP", group),
    ):
        path = write_synthetic_store(
            Path(tmp) / "s.h5", lengths, rewards=rewards, raw_rewards=False
        )
        with EpisodeStore.open(path) as store:
            clipped = np.clip(np.concatenate(rewards), -1, 1)
            np.testing.assert_array_equal(store.column("rtg"), returns_to_go(clipped, lengths))
            np.testing.assert_array_equal(store.returns, [np.clip(r, -1, 1).sum() for r in rewards])


def test_store_summary(tmp_path: Path) -> None:
    """store_summary lists every episode and aggregates over the complete ones only."""
    rewards = [np.full(3, 1.0), np.full(4, -1.0), np.full(5, 1.0)]
    path = write_synthetic_store(
        tmp_path / "s.h5", [3, 4, 5], complete=[True, False, True], rewards=rewards
    )
    with EpisodeStore.open(path) as store:
        summary = store_summary(store)
    assert summary["game"] == "Pong" and summary["transitions"] == 12
    assert summary["episodes"] == [
        {"length": 3, "return": 3.0, "complete": True},
        {"length": 4, "return": -4.0, "complete": False},
        {"length": 5, "return": 5.0, "complete": True},
    ]
    assert (summary["n_complete"], summary["n_incomplete"]) == (2, 1)
    assert summary["return_stats"]["min"] == 3.0 and summary["return_stats"]["max"] == 5.0
    assert summary["length_stats"]["mean"] == 4.0


@settings(max_examples=50, deadline=None)
@given(
    returns=st.lists(
        st.integers(-50, 50) | st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40
    ),
    bins=st.integers(1, 12),
)
def test_return_histogram_counts_every_return(returns: list[float], bins: int) -> None:
    """Histogram counts every return once; integer returns in few values get unit bins."""
    counts, edges = return_histogram(np.array(returns, dtype=float), bins)
    assert counts.sum() == len(returns) and len(edges) == len(counts) + 1
    assert (np.diff(edges) > 0).all()
    assert edges[0] <= min(returns) and max(returns) <= edges[-1]
    values = np.array(returns, dtype=float)
    if np.all(values == np.round(values)) and values.max() - values.min() + 1 <= bins:
        np.testing.assert_array_equal(np.diff(edges), 1.0)


# ---- opening errors -----------------------------------------------------------------------


def assert_handle_released(path: Path) -> None:
    """The file can be opened for writing again (a failed open closed its handle)."""
    with h5py.File(path, "r+"):
        pass


def test_other_format_version_is_refused(store_copy: Path) -> None:
    """A store of another format version raises StoreFormatError naming the version."""
    edit_h5(store_copy, lambda h5: h5.attrs.__setitem__("format_version", 2))
    with pytest.raises(StoreFormatError, match="format version 2; this atari-dt reads version 1"):
        EpisodeStore.open(store_copy)
    assert_handle_released(store_copy)


def test_other_format_is_refused(store_copy: Path) -> None:
    """An HDF5 file of another format raises StoreFormatError."""
    edit_h5(store_copy, lambda h5: h5.attrs.__setitem__("format", "something-else"))
    with pytest.raises(StoreFormatError, match="not an atari-dt episode store"):
        EpisodeStore.open(store_copy)


def test_plain_hdf5_file_is_refused(tmp_path: Path) -> None:
    """An HDF5 file with no attributes at all is not a store."""
    with h5py.File(tmp_path / "plain.h5", "w") as h5:
        h5["x"] = np.arange(3)
    with pytest.raises(StoreFormatError, match=r"format attribute None"):
        EpisodeStore.open(tmp_path / "plain.h5")


def test_unfinalized_store_is_refused(store_copy: Path) -> None:
    """A store whose ``finalized`` attribute is False (an interrupted write) is refused."""
    edit_h5(store_copy, lambda h5: h5.attrs.__setitem__("finalized", False))
    with pytest.raises(StoreFormatError, match="never finalized"):
        EpisodeStore.open(store_copy)
    assert_handle_released(store_copy)


def test_store_missing_an_episode_table_is_refused(store_copy: Path) -> None:
    """A store without /episodes/return is refused at open (not a KeyError later in info or
    verify), naming the missing table."""
    edit_h5(store_copy, lambda h5: h5.__delitem__("episodes/return"))
    with pytest.raises(StoreFormatError, match=re.escape("missing datasets ['episodes/return']")):
        EpisodeStore.open(store_copy)
    assert_handle_released(store_copy)


def test_stale_temporary_of_a_killed_writer_is_cleaned_up(tmp_path: Path) -> None:
    """A temporary left by a SIGKILLed writer (its process gone) is removed by the next writer
    of the same destination."""
    stale = tmp_path / ".s.h5.999999999.tmp"  # no such process
    stale.write_bytes(b"partial")
    write_synthetic_store(tmp_path / "s.h5", [3])
    assert leftovers(tmp_path) == ["s.h5"]


def test_store_missing_a_dataset_is_refused(store_copy: Path) -> None:
    """A store without /rtg is refused, naming the missing dataset."""
    edit_h5(store_copy, lambda h5: h5.__delitem__("rtg"))
    with pytest.raises(StoreFormatError, match=r"missing datasets \['rtg'\]"):
        EpisodeStore.open(store_copy)


def test_non_hdf5_file_is_refused(tmp_path: Path) -> None:
    """A file that is not HDF5 raises StoreFormatError naming it."""
    path = tmp_path / "garbage.h5"
    path.write_bytes(b"not an hdf5 file at all\n" * 10)
    with pytest.raises(StoreFormatError, match=r"garbage\.h5: not a readable HDF5 file"):
        EpisodeStore.open(path)


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.98])
def test_truncated_store_is_refused(store_copy: Path, fraction: float) -> None:
    """A store cut short (an interrupted copy) raises StoreFormatError."""
    data = store_copy.read_bytes()
    store_copy.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(StoreFormatError, match=r"copy\.h5"):
        EpisodeStore.open(store_copy)


def test_missing_store_is_refused(tmp_path: Path) -> None:
    """A path that does not exist (or is a directory) raises StoreFormatError."""
    with pytest.raises(StoreFormatError, match=r"episode store not found: .*nope\.h5"):
        EpisodeStore.open(tmp_path / "nope.h5")
    with pytest.raises(StoreFormatError, match="not found"):
        EpisodeStore.open(tmp_path)


def test_raw_units_of_store_without_raw_rewards(tmp_path: Path) -> None:
    """Asking raw rewards of a store that only has clipped ones raises StoreFormatError."""
    path = write_synthetic_store(tmp_path / "s.h5", [3])
    with pytest.raises(StoreFormatError, match="reward_units='raw' asked"):
        EpisodeStore.open(path, reward_units="raw")


def test_unknown_reward_units(seaquest_store: Path) -> None:
    """Reward units other than clipped/raw raise ValueError."""
    with pytest.raises(ValueError, match="reward_units must be 'clipped' or 'raw'"):
        EpisodeStore.open(seaquest_store, reward_units="scaled")  # type: ignore[arg-type]


# ---- writer -------------------------------------------------------------------------------


def test_exception_inside_writer_leaves_nothing(tmp_path: Path) -> None:
    """An exception inside ``with EpisodeStoreWriter`` leaves neither the file nor a temp file."""
    path = tmp_path / "out.h5"
    with (
        pytest.raises(RuntimeError, match="boom"),
        EpisodeStoreWriter(path, game="Pong", frame_shape=FRAME_SHAPE) as writer,
    ):
        writer.add_episode(synthetic_frames(4, 0), np.zeros(4, int), np.zeros(4))
        assert (tmp_path / f".out.h5.{os.getpid()}.tmp").exists()
        raise RuntimeError("boom")
    assert leftovers(tmp_path) == []


def test_temp_file_only_until_close(tmp_path: Path) -> None:
    """While writing only ``.NAME.h5.<pid>.tmp`` exists; after close only ``NAME.h5``."""
    path = tmp_path / "out.h5"
    writer = EpisodeStoreWriter(path, game="Pong", frame_shape=FRAME_SHAPE)
    writer.add_episode(synthetic_frames(2, 0), np.zeros(2, int), np.zeros(2))
    assert leftovers(tmp_path) == [f".out.h5.{os.getpid()}.tmp"]
    assert writer.close() == path
    assert leftovers(tmp_path) == ["out.h5"]


def test_existing_destination_without_overwrite(tmp_path: Path) -> None:
    """An existing destination raises FileExistsError up front and is left untouched."""
    path = tmp_path / "s.h5"
    path.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match=r"s\.h5 exists; pass overwrite=True"):
        EpisodeStoreWriter(path, game="Pong")
    assert path.read_bytes() == b"precious" and leftovers(tmp_path) == ["s.h5"]


def test_failed_overwrite_keeps_the_old_store(tmp_path: Path) -> None:
    """overwrite=True: an aborted write keeps the old store, a finished one replaces it."""
    path = write_synthetic_store(tmp_path / "s.h5", [3, 3])
    with (
        pytest.raises(RuntimeError),
        EpisodeStoreWriter(path, game="Pong", overwrite=True, frame_shape=FRAME_SHAPE),
    ):
        raise RuntimeError("interrupted")
    with EpisodeStore.open(path) as store:
        assert len(store) == 2
    write_synthetic_store(path, [5], overwrite=True)
    with EpisodeStore.open(path) as store:
        assert len(store) == 1 and store.n_transitions == 5
    assert leftovers(tmp_path) == ["s.h5"]


@pytest.mark.parametrize("options", [{"compression": "bogus"}, {"chunk_frames": 0}])
def test_invalid_writer_options_leave_no_temp_file(tmp_path: Path, options: dict) -> None:
    """A writer refused at construction leaves no temporary file behind."""
    with pytest.raises(ValueError):
        EpisodeStoreWriter(tmp_path / "s.h5", game="Pong", **options)
    assert leftovers(tmp_path) == []


def test_failed_rename_leaves_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A destination that is a directory is refused up front; a final rename that fails anyway
    leaves no temporary file and no store."""
    (tmp_path / "d.h5").mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        EpisodeStoreWriter(tmp_path / "d.h5", game="Pong", frame_shape=FRAME_SHAPE, overwrite=True)
    writer = EpisodeStoreWriter(tmp_path / "s.h5", game="Pong", frame_shape=FRAME_SHAPE)
    writer.add_episode(synthetic_frames(2, 0), np.zeros(2, int), np.zeros(2))

    def failing_replace(*args: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr("atari_dt.datasets.store_writer.os.replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        writer.close()
    assert leftovers(tmp_path) == ["d.h5"]


def test_declared_objects_are_required(tmp_path: Path) -> None:
    """A store declaring game objects needs their positions with every append; they read back."""
    writer = make_writer(tmp_path / "s.h5", objects=("player",))
    with pytest.raises(ValueError, match=r"objects/player: expected 2 values .*got nothing"):
        writer.add_episode(synthetic_frames(2, 0), np.zeros(2, int), np.zeros(2))
    xy = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
    writer.add_episode(
        synthetic_frames(2, 0), np.zeros(2, int), np.zeros(2), objects={"player": xy}
    )
    writer.close()
    with EpisodeStore.open(tmp_path / "s.h5") as store:
        np.testing.assert_array_equal(store.column("objects/player"), xy)


def make_writer(path: Path, **options: Any) -> EpisodeStoreWriter:
    """A small writer for error tests."""
    return EpisodeStoreWriter(path, game="Pong", frame_shape=FRAME_SHAPE, **options)


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"rewards": np.zeros(2)}, "rewards: expected 3 values .*got length 2"),
        ({"terminals": np.zeros(4, np.uint8)}, "terminals: expected 3 values .*got length 4"),
        ({"raw_rewards": None}, "raw_rewards: expected 3 values .*got nothing"),
        ({"ram": np.zeros((3, 128), np.uint8)}, "created without 'ram'"),
    ],
    ids=["short-rewards", "long-terminals", "missing-raw", "undeclared-ram"],
)
def test_append_transitions_checks_lengths_and_layout(
    tmp_path: Path, arrays: dict, message: str
) -> None:
    """append_transitions refuses wrong lengths or undeclared arrays, appending nothing."""
    writer = make_writer(tmp_path / "s.h5", raw_rewards=True)
    given_arrays = {
        "actions": np.zeros(3, int),
        "rewards": np.zeros(3),
        "terminals": np.zeros(3, np.uint8),
        "raw_rewards": np.zeros(3),
        **arrays,
    }
    with pytest.raises(ValueError, match=message):
        writer.append_transitions(**given_arrays)
    assert writer.n_transitions == 0
    writer.abort()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("position", "frames", "message"),
    [
        (0, np.zeros((2, *FRAME_SHAPE), np.int64), "must be uint8 .* got int64"),
        (0, np.zeros((2, 5, 6), np.uint8), r"must be uint8 \[m, 6, 5\], got uint8 \[2, 5, 6\]"),
        (0, np.zeros((2, *FRAME_SHAPE, 1), np.uint8), "must be uint8"),
        (2, np.zeros((2, *FRAME_SHAPE), np.uint8), "frames 2..3 lie outside the 3 appended"),
        (-1, np.zeros((1, *FRAME_SHAPE), np.uint8), "lie outside"),
    ],
    ids=["dtype", "transposed", "extra-axis", "past-end", "negative"],
)
def test_write_frames_checks_dtype_shape_and_range(
    tmp_path: Path, position: int, frames: np.ndarray, message: str
) -> None:
    """write_frames refuses frames of another dtype or shape, or outside the appended rows."""
    writer = make_writer(tmp_path / "s.h5")
    writer.append_transitions(np.zeros(3, int), np.zeros(3), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match=message):
        writer.write_frames(position, frames)
    writer.abort()


def test_add_episode_checks_its_arguments(tmp_path: Path) -> None:
    """An empty episode or frames/actions of different lengths are refused."""
    writer = make_writer(tmp_path / "s.h5")
    with pytest.raises(ValueError, match="at least one transition"):
        writer.add_episode(np.zeros((0, *FRAME_SHAPE), np.uint8), np.zeros(0, int), np.zeros(0))
    with pytest.raises(ValueError, match="3 frames but 2 actions"):
        writer.add_episode(synthetic_frames(3, 0), np.zeros(2, int), np.zeros(2))
    writer.abort()


def test_terminated_flag_overrides_complete(tmp_path: Path) -> None:
    """``terminated`` sets the last terminal independently of ``complete``."""
    with make_writer(tmp_path / "s.h5") as writer:
        for complete, terminated in ((True, False), (False, True), (False, None)):
            writer.add_episode(
                synthetic_frames(2, 0),
                np.zeros(2, int),
                np.zeros(2),
                complete=complete,
                terminated=terminated,
            )
    with EpisodeStore.open(tmp_path / "s.h5") as store:
        np.testing.assert_array_equal(store.column("terminals"), [0, 0, 0, 1, 0, 0])
        np.testing.assert_array_equal(store.complete, [True, False, False])


@pytest.mark.parametrize(
    "spans",
    [
        [(0, 2)],
        [(0, 2), (3, 2)],
        [(0, 3), (2, 3)],
        [(0, 3), (3, 3)],
        [(2, 3), (0, 2)],
        [(0, 0), (0, 5)],
        [],
    ],
    ids=["short", "gap", "overlap", "past-end", "out-of-order", "empty-episode", "none"],
)
def test_spans_that_do_not_tile_are_refused_on_close(
    tmp_path: Path, spans: list[tuple[int, int]]
) -> None:
    """Spans not tiling the transitions raise ValueError on close; nothing is written."""
    path = tmp_path / "s.h5"
    with (
        pytest.raises(ValueError, match="episodes must tile the 5 transitions"),
        make_writer(path) as writer,
    ):
        start = writer.append_transitions(np.zeros(5, int), np.zeros(5), np.zeros(5, np.uint8))
        writer.write_frames(start, synthetic_frames(5, 0))
        for offset, length in spans:
            writer.add_span(offset, length, True)
    assert leftovers(tmp_path) == []


def test_spans_over_appended_transitions(tmp_path: Path) -> None:
    """Transitions appended in pieces and declared as episodes by add_span read back whole."""
    frames = synthetic_frames(7, 1)
    with make_writer(tmp_path / "s.h5") as writer:
        for lo, hi in ((0, 4), (4, 7)):
            start = writer.append_transitions(
                np.arange(lo, hi), np.ones(hi - lo), np.zeros(hi - lo, np.uint8)
            )
            writer.write_frames(start, frames[lo:hi])
        writer.add_span(0, 2, False)
        writer.add_span(2, 5, True)
    with EpisodeStore.open(tmp_path / "s.h5") as store:
        np.testing.assert_array_equal(store.episode(1).frames, frames[2:])
        np.testing.assert_array_equal(store.episode(1).rtg, [5, 4, 3, 2, 1])
        np.testing.assert_array_equal(store.episode(0).actions, [0, 1])


# ---- verify -------------------------------------------------------------------------------


def test_verify_good_store(seaquest_store: Path, seaquest_episodes) -> None:
    """A freshly written store verifies OK with every frame read back."""
    n = sum(len(e.actions) for e in seaquest_episodes)
    report = verify_store(seaquest_store)
    assert report.ok, report.problems
    assert (report.episodes, report.transitions, report.frames_checked) == (5, n, n)
    assert verify_store(seaquest_store, check_frames=False).frames_checked == 0


TAMPER_LENGTHS = (6, 4, 8)  # episodes at 0..5, 6..9, 10..17


@pytest.fixture
def tamper_store(tmp_path: Path) -> Path:
    """A small store with every optional column (raw rewards, RAM), to damage."""
    rng = np.random.default_rng(0)
    path = tmp_path / "t.h5"
    with make_writer(path, n_actions=6, raw_rewards=True, ram=True) as writer:
        for i, n in enumerate(TAMPER_LENGTHS):
            raw = rng.choice([0.0, 10.0, -5.0], n)
            writer.add_episode(
                synthetic_frames(n, i),
                rng.integers(0, 6, n),
                raw,
                raw_rewards=raw,
                ram=np.zeros((n, 128), np.uint8),
            )
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (set_value("rtg", 10, 123.0), "/rtg differs from the RTG recomputed from /rewards"),
        (set_value("raw_rtg", 0, -70.0), "/raw_rtg differs from the RTG recomputed"),
        (set_value("episodes/return", 2, 99.0), "/episodes/return differs from the sum"),
        (set_value("episodes/raw_return", 0, 99.0), "/episodes/raw_return differs"),
        (set_value("terminals", 3, 1), r"terminal flags inside episodes at \[3\]"),
        (set_value("terminals", 9, 0), r"complete episodes \[1\] do not end on a terminal"),
        (set_value("rewards", 3, 20.0), r"/rewards holds values outside \[-1, 1\]"),
        (set_value("actions", 7, 6), r"actions outside \[0, 6\)"),
        (set_value("actions", 7, -1), r"actions outside \[0, 6\)"),
        (set_value("episodes/offset", 1, 5), "episodes do not tile the 18 transitions"),
        (set_value("episodes/length", 2, 7), r"do not tile .*\(they cover 17\)"),
        (set_value("episodes/length", 1, 0), r"episodes \[1\] are empty"),
    ],
    ids=[
        "rtg",
        "raw-rtg",
        "return",
        "raw-return",
        "inner-terminal",
        "missing-terminal",
        "unclipped",
        "action-high",
        "action-negative",
        "offset",
        "length",
        "empty-episode",
    ],
)
def test_verify_detects_tampering(tamper_store: Path, edit: Any, message: str) -> None:
    """Each kind of damage to a good store is reported by verify_store."""
    assert verify_store(tamper_store).ok
    edit_h5(tamper_store, edit)
    report = verify_store(tamper_store)
    assert not report.ok
    assert any(re.search(message, p) for p in report.problems), report.problems


def test_verify_detects_wrong_row_count(tamper_store: Path) -> None:
    """An optional column with the wrong number of rows is reported."""

    def shrink_ram(h5: h5py.File) -> None:
        ram = h5["ram"][:-3]
        del h5["ram"]
        h5["ram"] = ram

    edit_h5(tamper_store, shrink_ram)
    assert verify_store(tamper_store).problems == ["/ram has 15 rows, expected 18"]


def test_verify_detects_corrupt_frame_chunk(store_copy: Path) -> None:
    """Garbage in a compressed frame chunk is reported as unreadable frames."""
    with h5py.File(store_copy, "r") as h5:
        info = h5["frames"].id.get_chunk_info(3)
    with open(store_copy, "r+b") as f:
        f.seek(info.byte_offset)
        f.write(b"\xff" * info.size)
    report = verify_store(store_copy)
    assert not report.ok
    assert any("unreadable" in p for p in report.problems), report.problems
    assert report.frames_checked < report.transitions
