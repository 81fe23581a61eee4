"""Context windows: one episode per window, right-aligned, left padding, on-the-fly frame stacks."""

from __future__ import annotations

import pickle
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import event, given, settings
from hypothesis import strategies as st
from seeds import seed
from torch.utils.data import DataLoader

from atari_dt.datasets.config import DataConfig
from atari_dt.datasets.contexts import Contexts
from atari_dt.datasets.store import EpisodeStore
from atari_dt.datasets.store_writer import EpisodeStoreWriter
from atari_dt.datasets.windows import ContextWindows, select_episodes

N_ACTIONS = 18
ID_SHAPE = (2, 3)
KEYS = ("frames", "actions", "rtg", "timesteps", "mask")


# ---- synthetic stores whose frames say which episode and step they are --------------------


def frame_of(episode: int, step: int, shape: tuple[int, int] = ID_SHAPE) -> np.ndarray:
    """A frame naming its (episode, step), never zero (zero means padding): row 0 holds
    ``episode + 1``, the rest ``(episode * 37 + step) % 251 + 1`` and ``step % 255 + 1``."""
    frame = np.full(shape, (episode * 37 + step) % 251 + 1, dtype=np.uint8)
    frame[0, :] = episode + 1
    frame[1, 0] = step % 255 + 1
    return frame


def action_of(episode: int, step: int) -> int:
    return (episode * 7 + step) % N_ACTIONS


def reward_of(episode: int, step: int) -> float:
    return float((episode + 2 * step) % 3 - 1)


def reference_rtg(episode: int, length: int) -> np.ndarray:
    """Return-to-go of a synthetic episode by a plain backwards loop."""
    rtg, running = np.zeros(length), 0.0
    for step in range(length - 1, -1, -1):
        running += reward_of(episode, step)
        rtg[step] = running
    return rtg


def write_identity_store(
    path: Path,
    lengths: Sequence[int],
    complete: Sequence[bool] | None = None,
    shape: tuple[int, int] = ID_SHAPE,
    rewards: Sequence[np.ndarray] | None = None,
) -> Path:
    """A store of episodes built from frame_of/action_of/reward_of (or the given rewards)."""
    complete = [True] * len(lengths) if complete is None else complete
    with EpisodeStoreWriter(
        path, game="Pong", frame_shape=shape, n_actions=N_ACTIONS, compression=None, chunk_frames=8
    ) as writer:
        for e, (n, done) in enumerate(zip(lengths, complete, strict=True)):
            writer.add_episode(
                np.stack([frame_of(e, s, shape) for s in range(n)]),
                np.array([action_of(e, s) for s in range(n)]),
                np.array([reward_of(e, s) for s in range(n)]) if rewards is None else rewards[e],
                complete=done,
            )
    return path


def expected_window(
    episode: int, step: int, length: int, context_len: int, stack_size: int
) -> dict[str, np.ndarray]:
    """What the window ending at ``step`` of ``episode`` must hold, built step by step."""
    rtg = reference_rtg(episode, length)
    out = {
        "frames": np.zeros((context_len, stack_size, *ID_SHAPE), np.uint8),
        "actions": np.zeros(context_len, np.int64),
        "rtg": np.zeros(context_len, np.float32),
        "timesteps": np.zeros(context_len, np.int64),
        "mask": np.zeros(context_len, bool),
    }
    for j in range(context_len):
        s = step - (context_len - 1) + j
        if s < 0:
            continue
        out["mask"][j] = True
        out["actions"][j], out["rtg"][j], out["timesteps"][j] = action_of(episode, s), rtg[s], s
        for k in range(stack_size):
            u = s - (stack_size - 1) + k
            if u >= 0:
                out["frames"][j, k] = frame_of(episode, u)
    return out


def locate(index: int, episodes: Sequence[int], lengths: Sequence[int]) -> tuple[int, int]:
    """(store episode, step) of window ``index`` over the concatenated selected episodes."""
    for episode, length in zip(episodes, lengths, strict=True):
        if index < length:
            return episode, index
        index -= length
    raise IndexError(index)


def assert_window_equal(actual: dict[str, torch.Tensor], expected: dict[str, Any]) -> None:
    """Every field of a window equals the expected arrays, with the documented dtypes."""
    assert set(actual) == set(KEYS)
    for key in KEYS:
        value = actual[key].numpy()
        assert value.dtype == np.asarray(expected[key]).dtype, key
        np.testing.assert_array_equal(value, expected[key], err_msg=key)


def stack_items(windows: ContextWindows, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """The windows at ``indices`` fetched one by one with __getitem__, stacked."""
    items = [windows[int(i)] for i in indices]
    return {key: torch.stack([item[key] for item in items]) for key in KEYS}


def as_fields(batch: Contexts | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A batch's tensors by name (``Contexts`` from ``get_batch``, or stacked items)."""
    return batch if isinstance(batch, dict) else {key: getattr(batch, key) for key in KEYS}


def assert_batches_equal(a: Contexts | dict, b: Contexts | dict) -> None:
    a, b = as_fields(a), as_fields(b)
    for key in KEYS:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


# ---- the windowing property ---------------------------------------------------------------


@st.composite
def window_cases(draw: st.DrawFn) -> dict[str, Any]:
    """Random episode lengths, completeness, selection, context and stack sizes, and indices."""
    n = draw(st.integers(1, 6))
    lengths = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    return {
        "lengths": lengths,
        "complete": draw(st.lists(st.booleans(), min_size=n, max_size=n)),
        "include_incomplete": draw(st.booleans()),
        "context_len": draw(st.integers(1, max(lengths) + 2)),
        "stack_size": draw(st.integers(1, 5)),
        "picks": draw(st.lists(st.integers(0, 10**6), min_size=1, max_size=12)),
    }


@settings(max_examples=25, deadline=None)
@given(window_cases())
def test_windows_hold_one_episode_right_aligned(case: dict[str, Any]) -> None:
    """Windows hold one episode's steps right-aligned, zero left padding, S-frame stacks."""
    lengths, complete = case["lengths"], case["complete"]
    selected = [e for e in range(len(lengths)) if complete[e] or case["include_incomplete"]]
    selected_lengths = [lengths[e] for e in selected]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_identity_store(Path(tmp) / "id.h5", lengths, complete)
        datasets = []
        for mode in ("always", "never"):
            config = DataConfig(
                context_len=case["context_len"],
                stack_size=case["stack_size"],
                include_incomplete=case["include_incomplete"],
                frames_in_memory=mode,
            )
            if not selected:
                event("no episode selected")
                with pytest.raises(ValueError, match="no episode left after selection"):
                    ContextWindows(path, config)
                return
            if case["context_len"] > max(selected_lengths):
                event("context longer than every episode")
                with pytest.raises(ValueError, match="longer than every selected episode"):
                    ContextWindows(path, config)
                return
            datasets.append(ContextWindows(path, config))
        event("windows checked")
        indices = [p % sum(selected_lengths) for p in case["picks"]]
        for windows in datasets:
            assert len(windows) == sum(selected_lengths)
            np.testing.assert_array_equal(windows.episodes, selected)
            for index in indices:
                episode, step = locate(index, selected, selected_lengths)
                expected = expected_window(
                    episode, step, lengths[episode], case["context_len"], case["stack_size"]
                )
                assert_window_equal(windows[index], expected)
            assert_batches_equal(
                windows.get_batch(np.array(indices)), stack_items(windows, indices)
            )
        assert_batches_equal(
            datasets[0].get_batch(np.arange(len(datasets[0]))),
            datasets[1].get_batch(np.arange(len(datasets[1]))),
        )
        # The store cuts the same windows, reading each from the file (the analysis path).
        batch = datasets[0].get_batch(np.array(indices))
        with EpisodeStore.open(path) as store:
            cut = store.contexts(
                batch.episodes,
                batch.steps,
                context_len=case["context_len"],
                stack_size=case["stack_size"],
            )
        assert_batches_equal(cut, batch)
        np.testing.assert_array_equal(cut.rows, batch.rows)


def test_whole_dataset_batch_shapes(tmp_path: Path) -> None:
    """A batch has the documented shapes: frames [B, T, S, H, W], the rest [B, T]."""
    path = write_identity_store(tmp_path / "id.h5", [5, 9])
    windows = ContextWindows(path, DataConfig(context_len=4, frames_in_memory="always"))
    batch = windows.get_batch(np.arange(len(windows)))
    assert batch.frames.shape == (14, 4, 4, *ID_SHAPE)
    assert all(getattr(batch, key).shape == (14, 4) for key in KEYS[1:])
    # every transition is the current (last) step of exactly one window
    assert batch.mask[:, -1].all()
    np.testing.assert_array_equal(batch.timesteps[:, -1], [*range(5), *range(9)])
    # where each window came from: store episode, step in it and store row of its last step
    np.testing.assert_array_equal(batch.episodes, [0] * 5 + [1] * 9)
    np.testing.assert_array_equal(batch.steps, [*range(5), *range(9)])
    np.testing.assert_array_equal(batch.rows, np.arange(14))


@pytest.mark.parametrize("index", [-1, 14, 100])
def test_window_index_out_of_range(tmp_path: Path, index: int) -> None:
    """Window indices outside [0, len) raise IndexError naming the range."""
    path = write_identity_store(tmp_path / "id.h5", [5, 9])
    windows = ContextWindows(path, DataConfig(context_len=3, frames_in_memory="always"))
    with pytest.raises(IndexError, match=r"window index out of range \[0, 14\)"):
        windows.get_batch(np.array([0, index]))


def test_context_longer_than_every_episode(tmp_path: Path) -> None:
    """context_len above the longest selected episode raises ValueError naming the longest."""
    path = write_identity_store(tmp_path / "id.h5", [5, 9, 30], [True, True, False])
    with pytest.raises(ValueError, match=r"context_len 10 is longer than every .*longest: 9"):
        ContextWindows(path, DataConfig(context_len=10))
    ContextWindows(path, DataConfig(context_len=10, include_incomplete=True))


# ---- episode selection --------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(-5, 30), st.booleans()), min_size=1, max_size=30),
    quantile=st.floats(0.01, 1.0),
    include_incomplete=st.booleans(),
)
def test_select_episodes_by_return_quantile(
    data: list[tuple[int, bool]], quantile: float, include_incomplete: bool
) -> None:
    """The quantile keeps exactly the complete episodes at or below it, sorted."""
    returns = np.array([r for r, _ in data], dtype=np.float64)
    complete = np.array([c for _, c in data])
    if not complete.any():
        with pytest.raises(ValueError, match="needs complete episodes"):
            select_episodes(returns, complete, max_return_quantile=quantile)
        return
    kept = select_episodes(
        returns, complete, include_incomplete=include_incomplete, max_return_quantile=quantile
    )
    threshold = np.quantile(returns[complete], quantile)
    assert kept.dtype == np.int64 and (np.diff(kept) > 0).all()
    assert complete[kept].all() and (returns[kept] <= threshold).all()
    np.testing.assert_array_equal(kept, np.flatnonzero(complete & (returns <= threshold)))
    n = int(complete.sum())
    assert len(kept) >= int(np.floor((n - 1) * quantile)) + 1
    if quantile == 1.0:
        np.testing.assert_array_equal(kept, np.flatnonzero(complete))


def test_select_episodes_completeness() -> None:
    """Without a quantile cut episodes are dropped unless include_incomplete."""
    returns, complete = np.array([1.0, 2.0, 3.0]), np.array([True, False, True])
    np.testing.assert_array_equal(select_episodes(returns, complete), [0, 2])
    np.testing.assert_array_equal(
        select_episodes(returns, complete, include_incomplete=True), [0, 1, 2]
    )


def test_windows_with_return_quantile(tmp_path: Path) -> None:
    """Quantile-limited windows train on low-return episodes; describe() sees all."""
    totals = [0.0, 1.0, 2.0, 3.0, 4.0]
    rewards = [(np.arange(5) < t).astype(float) for t in totals]
    path = write_identity_store(tmp_path / "id.h5", [5] * 5, rewards=rewards)
    windows = ContextWindows(path, DataConfig(context_len=3, max_return_quantile=0.5))
    np.testing.assert_array_equal(windows.episodes, [0, 1, 2])
    info = windows.describe()
    assert info["train_return_range"] == [0.0, 2.0]
    assert info["data_return_range"] == [0.0, 4.0]
    assert info["episodes"] == 3 and info["transitions"] == 15 and info["context_len"] == 3


# ---- sampling, memory, pickling -----------------------------------------------------------


def episode_counts(windows: ContextWindows, sampling_seed: int, n: int) -> np.ndarray:
    """Fraction of ``n`` sampled windows falling in each selected episode."""
    sampler = windows.sampler(n, generator=torch.Generator().manual_seed(seed(sampling_seed)))
    indices = np.fromiter(iter(sampler), dtype=np.int64)
    assert len(indices) == n and indices.min() >= 0 and indices.max() < len(windows)
    episode = np.searchsorted(np.cumsum(windows.lengths), indices, side="right")
    return np.bincount(episode, minlength=len(windows.lengths)) / n


@pytest.mark.parametrize("sampling", ["episodes", "transitions"])
def test_sampling_weights(tmp_path: Path, sampling: str) -> None:
    """``episodes`` sampling is equal per episode; ``transitions`` proportional to length."""
    lengths = np.array([10, 100, 1000])
    path = write_identity_store(tmp_path / "id.h5", lengths.tolist())
    windows = ContextWindows(path, DataConfig(context_len=5, sampling=sampling))  # type: ignore[arg-type]
    share = episode_counts(windows, sampling_seed=0, n=30_000)
    expected = np.full(3, 1 / 3) if sampling == "episodes" else lengths / lengths.sum()
    np.testing.assert_allclose(share, expected, atol=0.02)


def test_frames_held_once(tmp_path: Path) -> None:
    """Frames are held once (<= 0.3x a 4-stack copy) in memory, not at all from the store."""
    lengths = [40, 60, 50]
    path = write_identity_store(tmp_path / "big.h5", lengths, shape=(84, 84))
    n, stack_copy = sum(lengths), 4 * 84 * 84
    in_memory = ContextWindows(path, DataConfig(context_len=8, frames_in_memory="always"))
    assert n * 84 * 84 <= in_memory.bytes_held <= 0.3 * stack_copy * n
    from_store = ContextWindows(path, DataConfig(context_len=8, frames_in_memory="never"))
    assert from_store.bytes_held <= 64 * n
    assert in_memory.describe()["frames_in_memory"]
    assert not from_store.describe()["frames_in_memory"]
    batch = np.arange(0, n, 7)
    assert_batches_equal(in_memory.get_batch(batch), from_store.get_batch(batch))
    # Asked for, the frames come in the encoder's channels-last layout (no copy before its
    # convolutions), with the same values, held or read from the store.
    for windows in (in_memory, from_store):
        plain = windows.get_batch(batch)
        assert plain.frames.is_contiguous()
        last = windows.get_batch(batch, channels_last=True)
        assert last.frames.flatten(0, 1).is_contiguous(memory_format=torch.channels_last)
        assert_batches_equal(last, plain)


@pytest.mark.parametrize("mode", ["never", "always"])
def test_pickle_round_trip(tmp_path: Path, mode: str) -> None:
    """A pickled dataset (even with its store handle open) gives the same windows."""
    path = write_identity_store(tmp_path / "id.h5", [7, 12, 3])
    windows = ContextWindows(path, DataConfig(context_len=6, frames_in_memory=mode))  # type: ignore[arg-type]
    indices = np.arange(len(windows))
    before = windows.get_batch(indices)  # opens the store in "never" mode
    clone = pickle.loads(pickle.dumps(windows))
    assert_batches_equal(clone.get_batch(indices), before)


def test_dataloader_workers_after_parent_read(tmp_path: Path) -> None:
    """Forked DataLoader workers of a "never" dataset give the parent's windows."""
    path = write_identity_store(tmp_path / "id.h5", [30, 50, 20])
    windows = ContextWindows(path, DataConfig(context_len=6, frames_in_memory="never"))
    expected = windows.get_batch(np.arange(len(windows)))
    loader = DataLoader(windows, batch_size=10, num_workers=2, multiprocessing_context="fork")
    batches = list(loader)
    assert_batches_equal({k: torch.cat([b[k] for b in batches]) for k in KEYS}, expected)


def test_auto_memory_policy_and_describe(tmp_path: Path) -> None:
    """``auto`` keeps a tiny store in memory; no complete episode -> no data range."""
    path = write_identity_store(tmp_path / "id.h5", [4, 6], [False, False])
    windows = ContextWindows(path, DataConfig(context_len=2, include_incomplete=True))
    info = windows.describe()
    assert info["frames_in_memory"] and info["data_return_range"] is None
    assert info["episodes"] == 2 and info["transitions"] == 10
    assert info["store"] == str(path) and info["reward_units"] == "clipped"


def test_auto_memory_policy_shares_ram_between_ranks(tmp_path: Path, monkeypatch) -> None:
    """Under torchrun each of the LOCAL_WORLD_SIZE copies on a host may take only its share."""
    import psutil

    path = write_identity_store(tmp_path / "id.h5", [4, 6])
    needed = 10 * ID_SHAPE[0] * ID_SHAPE[1]
    free = type("Memory", (), {"available": 3 * needed})()
    monkeypatch.setattr(psutil, "virtual_memory", lambda: free)
    assert ContextWindows(path, DataConfig(context_len=2)).describe()["frames_in_memory"]
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # 3x / 2 ranks / 2 (headroom) < 1x
    assert not ContextWindows(path, DataConfig(context_len=2)).describe()["frames_in_memory"]


# ---- real data ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seaquest_store(tmp_path_factory: pytest.TempPathFactory, seaquest_episodes) -> Path:
    path = tmp_path_factory.mktemp("windows") / "seaquest.h5"
    with EpisodeStoreWriter(path, game="Seaquest", raw_rewards=True) as writer:
        for e in seaquest_episodes:
            writer.add_episode(e.frames, e.actions, e.rewards, raw_rewards=e.rewards)
    return path


def recorded_stacks(frames: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """4-frame stacks ``[T, 4, H, W]`` at ``steps`` of one episode, zero before its start."""
    out = np.zeros((len(steps), 4, *frames.shape[1:]), np.uint8)
    for j, s in enumerate(steps):
        for k in range(4):
            if s - 3 + k >= 0:
                out[j, k] = frames[s - 3 + k]
    return out


@pytest.mark.parametrize("mode", ["always", "never"])
def test_real_windows_match_recorded_frames(
    seaquest_store: Path, seaquest_episodes, mode: str
) -> None:
    """Windows over real Seaquest data hold the recorded frames, actions and raw RTG."""
    T = 30
    windows = ContextWindows(
        seaquest_store, DataConfig(context_len=T, reward_units="raw", frames_in_memory=mode)
    )  # type: ignore[arg-type]
    lengths = [len(e.actions) for e in seaquest_episodes]
    starts = np.cumsum([0, *lengths[:-1]])
    for e, (start, length) in enumerate(zip(starts, lengths, strict=True)):
        recorded = seaquest_episodes[e]
        rtg = np.cumsum(recorded.rewards[::-1])[::-1]
        for t in (0, 1, 3, T - 1, T, length // 2, length - 1):
            window = {k: v.numpy() for k, v in windows[int(start + t)].items()}
            valid = np.arange(t - T + 1, t + 1)
            mask = valid >= 0
            np.testing.assert_array_equal(window["mask"], mask)
            np.testing.assert_array_equal(window["actions"][mask], recorded.actions[valid[mask]])
            np.testing.assert_allclose(window["rtg"][mask], rtg[valid[mask]])
            np.testing.assert_array_equal(window["frames"], recorded_stacks(recorded.frames, valid))
    assert windows.describe()["reward_units"] == "raw"


def test_open_store_is_accepted(seaquest_store: Path) -> None:
    """An already open EpisodeStore can be given instead of a path."""
    with EpisodeStore.open(seaquest_store) as store:
        windows = ContextWindows(store, DataConfig(context_len=4, frames_in_memory="never"))
        assert len(windows) == store.n_transitions
    assert windows[len(windows) - 1]["mask"].all()


@pytest.mark.parametrize("sampling", ["transitions", "episodes"])
def test_sample_indices_follow_the_sampling_mode(tmp_path: Path, sampling: str) -> None:
    """Per-step sampling from a numpy generator: reproducible, in range, and weighted like
    ``sampler`` (episodes equally likely, or transitions)."""
    path = write_identity_store(tmp_path / "s.h5", [10, 90])
    windows = ContextWindows(path, DataConfig(context_len=4, sampling=sampling))
    draw = windows.sample_indices(np.random.default_rng(3), 20_000)
    assert np.array_equal(draw, windows.sample_indices(np.random.default_rng(3), 20_000))
    assert draw.min() >= 0 and draw.max() < len(windows)
    share_first = np.mean(draw < 10)
    assert abs(share_first - (0.5 if sampling == "episodes" else 0.1)) < 0.02
