"""The Decision Transformer paper's subset of DQN-replay logs (`data convert --sample-transitions`).

The logs are written by the project's own replay writer from small synthetic episodes whose
every frame names its episode and step, so a stored episode can be matched to its source
frame for frame. Which episodes a checkpoint may offer comes from FACTS.md §1, not from the
reader: dump ``k``'s file slot ``s`` holds global transition ``k*C + s`` (``s <= C-2``, and only
up to the cursor in the final dump), and an episode is offered when all its real transitions
lie in slots ``[0, window)`` of one dump.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from commands import atari_dt
from seeds import seed

from atari_dt.datasets import (
    EpisodeStore,
    PaperSubsetOptions,
    ReplayLogWriter,
    convert_replay_logs,
    select_paper_subset,
    write_replay_logs,
)
from atari_dt.datasets.npy_gzip import NpyGzipReader
from atari_dt.errors import UserError

PAD = 3  # padding transitions the writer adds before each episode
CAPACITY = 120  # transitions per checkpoint file
SHAPE = (6, 6)  # frame shape: tiny, the reader takes any
EpisodeArrays = tuple[np.ndarray, np.ndarray, np.ndarray]  # frames, actions, rewards


def make_episodes(n: int, rng: np.random.Generator) -> list[EpisodeArrays]:
    """``n`` episodes of 4-40 steps; frame ``[0, 0]`` is the episode, ``[0, 1]`` the step."""
    episodes = []
    for e in range(n):
        length = int(rng.integers(4, 41))
        frames = rng.integers(1, 256, size=(length, *SHAPE), dtype=np.uint8)
        frames[:, 0, 0], frames[:, 0, 1] = e + 1, np.arange(length) + 1
        actions = rng.integers(0, 4, size=length).astype(np.int32)
        rewards = rng.choice([0.0, 1.0, 3.0], size=length).astype(np.float32)
        episodes.append((frames, actions, rewards))
    return episodes


def window_episodes(
    lengths: Sequence[int], n_total: int, window: int
) -> dict[int, list[tuple[int, int, int]]]:
    """Checkpoint -> ``(episode, first_slot, end_slot)`` of each episode lying wholly in slots
    ``[0, window)`` of that dump (module docstring)."""
    starts = np.cumsum([0, *[n + PAD for n in lengths[:-1]]]) + PAD  # first real transition
    offered: dict[int, list[tuple[int, int, int]]] = {}
    for k in range(n_total // CAPACITY + 1):
        low = k * CAPACITY
        high = min(low + min(window, CAPACITY - 1), n_total)  # the final dump stops at the end
        offered[k] = [
            (e, int(s) - low, int(s) + n - low)
            for e, (s, n) in enumerate(zip(starts, lengths, strict=True))
            if low <= s and s + n <= high
        ]
    return offered


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[EpisodeArrays]]:
    """About 13 logged dumps of capacity 120 holding 60 short episodes."""
    episodes = make_episodes(60, np.random.default_rng(seed(7)))
    directory = tmp_path_factory.mktemp("subset") / "replay_logs"
    write_replay_logs(directory, episodes, CAPACITY, frame_shape=SHAPE, compresslevel=1)
    return directory, episodes


def convert(source: Path, destination: Path, chunk_rows: int = 4096, **settings) -> Path:
    """The paper's subset of ``source`` (``settings`` of ``PaperSubsetOptions``)."""
    subset = PaperSubsetOptions(**settings)
    return convert_replay_logs(
        source,
        destination,
        game="Breakout",
        n_actions=4,
        subset=subset,
        chunk_rows=chunk_rows,
        progress=False,
    )


def subset_record(path: Path) -> dict:
    with EpisodeStore.open(path) as store:
        return store.metadata["source"]["subset"]


# --------------------------------------------------------------------------- the selection alone


def test_draws_take_whole_picks_in_order_within_the_budget() -> None:
    lengths = {c: [10 + c] * 7 for c in range(5)}  # 7 episodes each, 10-14 transitions
    subset = select_paper_subset(lengths, budget=100, per_pick=2, seed=seed(0))
    picks: dict[int, list] = {}
    for taken in subset.episodes:
        picks.setdefault(taken.pick, []).append(taken)
    assert len(picks) == subset.n_picks
    seen = dict.fromkeys(lengths, 0)
    for pick in picks.values():  # 2 consecutive episodes of one checkpoint, from where it was
        assert len({t.checkpoint for t in pick}) == 1 and len(pick) == 2
        checkpoint = pick[0].checkpoint
        assert [t.episode for t in pick] == [seen[checkpoint], seen[checkpoint] + 1]
        seen[checkpoint] += 2
    sizes = [sum(lengths[p[0].checkpoint][t.episode] for t in p) for p in picks.values()]
    assert subset.n_transitions == sum(sizes)
    # the bound: reached, and short of it before the last pick (taken whole)
    assert subset.budget_reached and subset.n_transitions - sizes[-1] < 100 <= sum(sizes)


def test_spent_checkpoints_and_a_budget_above_everything() -> None:
    lengths = {0: [5] * 5, 3: [7] * 2, 9: [4]}  # 5, 2 and 1 episodes
    subset = select_paper_subset(lengths, budget=10**12, per_pick=2, seed=seed(1))
    taken = {(t.checkpoint, t.episode) for t in subset.episodes}
    # a checkpoint with fewer than 2 episodes left is never drawn again (the rest is left)
    assert taken == {(0, 0), (0, 1), (0, 2), (0, 3), (3, 0), (3, 1)}
    assert not subset.budget_reached
    assert (subset.n_transitions, subset.available, subset.n_picks) == (34, 43, 3)


def test_the_seed_decides_the_selection() -> None:
    lengths = {c: [3] * 20 for c in range(8)}
    draw = [select_paper_subset(lengths, budget=30, per_pick=1, seed=s).episodes for s in range(5)]
    assert select_paper_subset(lengths, budget=30, per_pick=1, seed=3).episodes == draw[3]
    assert len(set(draw)) > 1  # 8^10 possible orders: five seeds cannot all agree


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"budget": 0}, r"--sample-transitions must be a positive number .* got 0"),
        ({"per_pick": -1}, r"--trajectories-per-checkpoint must be a positive .* got -1"),
        ({"seed": -2}, r"--seed must be a non-negative integer, got -2"),
    ],
)
def test_bad_arguments(options: dict, message: str) -> None:
    arguments = {"budget": 10, "per_pick": 1, "seed": 0, **options}
    with pytest.raises(UserError, match=message):
        select_paper_subset({0: [5]}, **arguments)


def test_settings_are_checked_before_any_file_is_read() -> None:
    with pytest.raises(UserError, match=r"window must be a positive number of slots, got 0"):
        PaperSubsetOptions(100, window=0)
    with pytest.raises(UserError, match=r"--sample-transitions must be a positive .* got -5"):
        PaperSubsetOptions(-5)


# --------------------------------------------------------------------------- from the files


def test_a_wrapped_plain_snapshot_is_refused(tmp_path: Path) -> None:
    """A plain dopamine checkpoint whose oldest slot is mid-file has no "first 100k slots"."""
    directory = tmp_path / "replay_logs"
    writer = ReplayLogWriter(directory, 50, frame_shape=SHAPE, log_dumps=False)
    for frames, actions, rewards in make_episodes(10, np.random.default_rng(seed(8))):
        writer.add_episode(frames, actions, rewards)
        if writer.add_count > 50 and writer.add_count % 50 not in (0, 49):
            break  # wrapped, the oldest slot inside the file
    assert writer.add_count > 50 and writer.add_count % 50 not in (0, 49)
    writer.save_checkpoint(0)
    with pytest.raises(UserError, match=r"checkpoint 0 is a wrapped plain dopamine snapshot"):
        convert(directory, tmp_path / "w.h5", sample_transitions=10)


def test_everything_in_the_windows_is_taken_whole(source, tmp_path: Path) -> None:
    """With a budget above everything and one episode a pick, the store holds exactly the
    episodes lying wholly inside a window (none cut, none from beyond it), each equal to its
    source; a dump starting mid-episode does not offer that episode."""
    directory, episodes = source
    lengths = [len(a) for _, a, _ in episodes]
    n_total = sum(lengths) + PAD * len(lengths)
    window = 70  # of the 119 slots 0..C-2 of each dump
    offered = window_episodes(lengths, n_total, window)
    starts = np.cumsum([0, *[n + PAD for n in lengths[:-1]]]) + PAD
    cut = [  # dumps whose slot 0 is inside an episode begun in the dump before
        k
        for k in range(1, len(offered))
        if any(s < k * CAPACITY < s + n for s, n in zip(starts, lengths, strict=True))
    ]
    assert cut, "the test data should have dumps that start mid-episode"
    path = convert(
        directory,
        tmp_path / "all.h5",
        sample_transitions=10**12,
        trajectories_per_checkpoint=1,
        seed=seed(2),
        window=window,
    )
    record = subset_record(path)
    expected = [(k, first, end) for k in sorted(offered) for _, first, end in offered[k]]
    assert [tuple(e[:3]) for e in record["episodes"]] == expected
    assert not record["budget_reached"] and record["transitions"] == sum(
        end - first for _, first, end in expected
    )
    source_of = {(k, first): e for k in offered for e, first, _ in offered[k]}
    assert len(source_of) < len(episodes)  # the windows leave episodes out
    with EpisodeStore.open(path) as store:
        assert store.complete.all() and len(store) == len(expected)
        for i, (k, first, _) in enumerate(expected):
            frames, actions, rewards = episodes[source_of[k, first]]
            got = store.episode(i)
            np.testing.assert_array_equal(got.frames, frames)
            np.testing.assert_array_equal(got.actions, actions)
            np.testing.assert_array_equal(got.rewards, np.clip(rewards, -1, 1))


def test_without_the_previous_dump_a_first_episode_counts_as_cut(source, tmp_path) -> None:
    """Dumps 4-7 copied alone: dump 4's first episode cannot be told whole without dump 3's
    terminals (or a pass over all its frames), so it may be left out; nothing else changes."""
    import shutil

    directory, _ = source
    alone = tmp_path / "alone" / "replay_logs"
    alone.mkdir(parents=True)
    for path in directory.glob("*_ckpt.[4-7].gz"):
        shutil.copy(path, alone / path.name)
    settings = {"sample_transitions": 10**12, "trajectories_per_checkpoint": 1, "seed": seed(9)}
    full = subset_record(convert(directory, tmp_path / "full.h5", **settings))
    part = subset_record(convert(alone, tmp_path / "part.h5", **settings))
    in_full = [e[:3] for e in full["episodes"] if 4 <= e[0] <= 7]
    in_part = [e[:3] for e in part["episodes"]]
    assert [e for e in in_part if e[0] > 4] == [e for e in in_full if e[0] > 4]
    first_four = [e for e in in_full if e[0] == 4]
    assert [e for e in in_part if e[0] == 4] in (first_four, first_four[1:])


def test_nothing_to_take_is_an_error(source, tmp_path: Path) -> None:
    directory, _ = source
    with pytest.raises(UserError, match=r"no checkpoint holds 50 complete episodes within its"):
        convert(
            directory, tmp_path / "none.h5", sample_transitions=10, trajectories_per_checkpoint=50
        )
    assert not (tmp_path / "none.h5").exists()


def test_a_budget_is_met_by_whole_picks(source, tmp_path: Path) -> None:
    settings = {"sample_transitions": 300, "trajectories_per_checkpoint": 2, "window": 100}
    path = convert(source[0], tmp_path / "s.h5", seed=seed(3), **settings)
    record = subset_record(path)
    sizes: dict[int, int] = {}
    for _, first, end, pick in record["episodes"]:
        sizes[pick] = sizes.get(pick, 0) + end - first
    last = max(sizes)
    with EpisodeStore.open(path) as store:
        assert store.n_transitions == record["transitions"] == sum(sizes.values())
        assert record["transitions"] - sizes[last] < 300 <= record["transitions"]
    assert all(end <= 100 for _, _, end, _ in record["episodes"])
    assert record["picks"] == len(sizes) and record["budget_reached"]
    assert {key: record[key] for key in settings} == settings and record["seed"] == seed(3)


def test_the_seed_reproduces_the_store(source, tmp_path: Path) -> None:
    directory, _ = source
    options = {"sample_transitions": 150, "trajectories_per_checkpoint": 1, "window": 100}
    paths = [
        convert(directory, tmp_path / f"{i}.h5", seed=s, **options)
        for i, s in enumerate([seed(4), seed(4), *range(seed(5), seed(5) + 4)])
    ]
    records = [subset_record(p) for p in paths]
    assert records[0] == records[1]
    with EpisodeStore.open(paths[0]) as one, EpisodeStore.open(paths[1]) as two:
        for name in ("frames", "actions", "rewards", "terminals", "rtg"):
            np.testing.assert_array_equal(one.column(name), two.column(name))
    assert len({json.dumps(r["episodes"]) for r in records}) > 1


def test_frames_are_read_only_as_far_as_needed(source, tmp_path: Path, monkeypatch) -> None:
    directory, _ = source
    read: dict[str, int] = {}
    original = NpyGzipReader.iter_chunks

    def counting(self, chunk_rows):
        for first_row, rows in original(self, chunk_rows):
            read[self.path.name] = first_row + len(rows)
            yield first_row, rows

    monkeypatch.setattr(NpyGzipReader, "iter_chunks", counting)
    path = convert(
        directory,
        tmp_path / "r.h5",
        sample_transitions=60,
        trajectories_per_checkpoint=1,
        seed=seed(6),
        window=100,
        chunk_rows=8,
    )
    last_slot: dict[int, int] = {}
    for checkpoint, _, end, _ in subset_record(path)["episodes"]:
        last_slot[checkpoint] = max(last_slot.get(checkpoint, 0), end)
    assert read == {
        f"$store$_observation_ckpt.{k}.gz": -(-end // 8) * 8 for k, end in last_slot.items()
    }


# --------------------------------------------------------------------------- the command line


def convert_command(directory: Path, out: Path, flags: str) -> int:
    """``atari-dt data convert`` of the test logs (Breakout, no progress bar)."""
    return atari_dt(f"data convert {directory} {out} --game Breakout --no-progress {flags}")


def test_cli_writes_and_shows_the_subset(source, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.h5"
    flags = "--checkpoints 1-10 --sample-transitions 200 --trajectories-per-checkpoint 3 --seed 5"
    assert convert_command(source[0], out, flags) == 0
    printed = capsys.readouterr().out
    assert "subset decision-transformer-1pct" in printed and "seed 5" in printed
    record = subset_record(out)
    assert record["trajectories_per_checkpoint"] == 3 and record["sample_transitions"] == 200
    assert set(record["checkpoints_used"]) <= set(range(1, 11))
    assert atari_dt(f"data info {out}") == 0
    assert "draws of 3" in capsys.readouterr().out
    assert atari_dt(f"data info {out} --json") == 0
    assert json.loads(capsys.readouterr().out)["source"]["subset"] == record


def test_cli_warns_when_the_checkpoints_run_out(source, tmp_path: Path, capsys) -> None:
    flags = "--sample-transitions 1000000000000 --trajectories-per-checkpoint 2"
    assert convert_command(source[0], tmp_path / "all.h5", flags) == 0
    err = capsys.readouterr().err
    assert "warning: every checkpoint ran out of whole draws before the budget" in err
    assert "of the 1,000,000,000,000 transitions asked" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--sample-transitions 0", "--sample-transitions must be a positive number"),
        (
            "--sample-transitions 9 --trajectories-per-checkpoint 0",
            "--trajectories-per-checkpoint must be a positive number",
        ),
        ("--seed 3", "--seed: only with --sample-transitions N"),
    ],
)
def test_cli_refuses_bad_subset_flags(source, tmp_path: Path, capsys, flags, message) -> None:
    out = tmp_path / "bad.h5"
    assert convert_command(source[0], out, flags) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
