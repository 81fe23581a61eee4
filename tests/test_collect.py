"""The collector: deterministic for a seed whatever the workers, resumable after an interrupt,
and its two output formats hold the same transitions."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from atari_dt.datasets import EpisodeStore, convert_replay_logs
from atari_dt.envs.collect import build_policy, collection_record, run_collection
from atari_dt.envs.config import CollectConfig, PolicyComponent
from atari_dt.envs.sinks import ReplaySink, StoreSink

# Short episodes keep the suite fast; two behaviours so the mixture choice matters.
MIX = [PolicyComponent("random"), PolicyComponent("random", repeat=0.6, weight=2.0)]


def small_config(**changes: object) -> CollectConfig:
    base = CollectConfig(
        game="Seaquest",
        steps=500,
        seed=7,
        workers=1,
        max_episode_steps=90,
        policy=MIX,
        capacity=250,
    )
    return dataclasses.replace(base, **changes)


def collect_to(path: Path, config: CollectConfig, *, resume: bool = False, stop_after=None):
    """Run a collection into ``path`` (store or replay logs by config.format); ``stop_after``
    episodes simulates a Ctrl-C right after that many episodes were written."""
    sink_class = StoreSink if config.format == "h5" else ReplaySink
    spec = build_policy(config.policy, config.game).spec()
    sink = sink_class(path, config, spec, resume=resume)

    def maybe_interrupt(played, progress) -> None:
        if stop_after is not None and progress.episodes >= stop_after:
            raise KeyboardInterrupt

    progress = run_collection(config, sink, on_episode=maybe_interrupt)
    sink.close(collection_record(config, progress))
    return progress


def store_arrays(path: Path) -> dict[str, object]:
    with EpisodeStore.open(path, reward_units="raw") as store:
        return {
            "frames": store.frames[:],
            "actions": store.column("actions"),
            "rewards": store.column("rewards"),
            "ram": store.column("ram"),
            "lengths": store.lengths,
            "behaviours": store.behaviours,
        }


def assert_same_store(a: Path, b: Path) -> None:
    left, right = store_arrays(a), store_arrays(b)
    for key in left:
        if isinstance(left[key], np.ndarray):
            np.testing.assert_array_equal(left[key], right[key], err_msg=key)
        else:
            assert left[key] == right[key], key


@pytest.fixture(scope="module")
def reference_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An uninterrupted single-worker collection."""
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    progress = collect_to(path, small_config())
    assert progress.steps >= 500 and not progress.interrupted
    return path


def test_output_does_not_depend_on_workers(reference_store: Path, tmp_path: Path) -> None:
    """Two worker processes write exactly the single worker's episodes, in the same order."""
    collect_to(tmp_path / "two.h5", small_config(workers=2))
    assert_same_store(reference_store, tmp_path / "two.h5")


def test_store_contents(reference_store: Path) -> None:
    """The store holds raw rewards, RAM, the preset, and each episode's mixture component."""
    with EpisodeStore.open(reference_store, reward_units="raw") as store:
        assert store.n_transitions >= 500 and store.n_transitions - store.lengths[-1] < 500
        assert store.has_raw_rewards and store.column("ram").shape == (store.n_transitions, 128)
        assert store.metadata["preprocessing"]["repeat_action_probability"] == 0.25
        assert store.metadata["behaviour_policy"]["name"] == "mixture"
        record = store.metadata["collection"]
        assert record["finished"] and record["steps"] == store.n_transitions
        components = [b["component"] for b in store.behaviours]
        assert set(components) <= {0, 1} and [b["episode"] for b in store.behaviours] == list(
            range(len(store))
        )
        assert all(store.complete) and (store.lengths <= 90).all()
        objects = store.h5["objects"]
        assert {"player", "oxygen", "diver0"} <= set(objects)
        for name in objects:
            xy = objects[name][:]
            assert xy.shape == (store.n_transitions, 2)
            seen = xy[~np.isnan(xy).any(axis=1)]
            assert ((seen >= -0.5) & (seen <= 84)).all(), name  # inside the 84x84 frame
        assert not np.isnan(objects["player"][:]).all()


def test_interrupt_then_resume_equals_an_uninterrupted_run(
    reference_store: Path, tmp_path: Path
) -> None:
    """An interrupt keeps the completed episodes in a valid store that says it is unfinished;
    --resume continues at the next episode and ends with exactly the uninterrupted data."""
    path = tmp_path / "cut.h5"
    progress = collect_to(path, small_config(), stop_after=2)
    assert progress.interrupted and progress.episodes == 2
    with EpisodeStore.open(path) as store:
        assert len(store) == 2 and not store.metadata["collection"]["finished"]
    collect_to(path, small_config(workers=2), resume=True)
    assert_same_store(reference_store, path)


def test_resume_refuses_other_settings(reference_store: Path, tmp_path: Path) -> None:
    """Resuming with another seed or policy would mix two datasets: refused, naming them."""
    path = tmp_path / "r.h5"
    path.write_bytes(reference_store.read_bytes())
    with pytest.raises(ValueError, match=r"settings differ .*seed: 7 -> 8"):
        collect_to(path, small_config(seed=8), resume=True)


def test_replay_logs_hold_the_same_transitions(reference_store: Path, tmp_path: Path) -> None:
    """DQN-replay output, read back by the reader, is the store's data with clipped rewards;
    collection.json records each episode's behaviour; interrupt + resume gives the same files."""
    logs = tmp_path / "replay_logs"
    collect_to(logs, small_config(format="dqn-replay"), stop_after=3)
    collect_to(logs, small_config(format="dqn-replay"), resume=True)
    record = json.loads((logs / "collection.json").read_text())
    assert record["finished"] and len(record["behaviours"]) == record["episodes"]
    convert_replay_logs(logs, tmp_path / "from_logs.h5", game="Seaquest", progress=False)
    reference = store_arrays(reference_store)
    with EpisodeStore.open(tmp_path / "from_logs.h5") as store:
        np.testing.assert_array_equal(store.frames[:], reference["frames"])
        np.testing.assert_array_equal(store.column("actions"), reference["actions"])
        np.testing.assert_array_equal(store.column("rewards"), np.clip(reference["rewards"], -1, 1))
        np.testing.assert_array_equal(store.lengths, reference["lengths"])
        assert store.complete.all()


def test_existing_output_needs_force_or_resume(reference_store: Path) -> None:
    """Collecting onto existing output without --force or --resume is refused."""
    with pytest.raises(FileExistsError, match="exists"):
        collect_to(reference_store, small_config())


def test_expert_for_a_game_without_one() -> None:
    """Asking for the scripted expert of a game that has none names the games that do."""
    pytest.importorskip("atari_dt.envs.experts")
    with pytest.raises(ValueError, match="no scripted expert for MontezumaRevenge"):
        build_policy([PolicyComponent("expert")], "MontezumaRevenge")


def test_converted_collected_logs_keep_behaviours(tmp_path: Path) -> None:
    """Converting logs written by the collector attaches each episode's behaviour and the
    policy and preset records from collection.json."""
    logs = tmp_path / "replay_logs"
    collect_to(logs, small_config(format="dqn-replay", steps=300))
    record = json.loads((logs / "collection.json").read_text())
    convert_replay_logs(logs, tmp_path / "c.h5", game="Seaquest", progress=False)
    with EpisodeStore.open(tmp_path / "c.h5") as store:
        assert [b["episode"] for b in store.behaviours] == list(range(record["episodes"]))
        assert store.metadata["behaviour_policy"]["name"] == "mixture"
        assert store.metadata["preprocessing"]["max_episode_steps"] == 90


def test_failed_resume_of_replay_logs_keeps_the_finished_logs(tmp_path: Path) -> None:
    """A resumed dqn-replay run that crashes leaves the earlier logs byte for byte, still
    resumable (it works on a hard-linked copy swapped in only at close)."""
    logs = tmp_path / "replay_logs"
    config = small_config(format="dqn-replay", steps=300)
    collect_to(logs, config)
    before = {p.name: p.read_bytes() for p in logs.iterdir()}
    spec = build_policy(config.policy, config.game).spec()
    longer = dataclasses.replace(config, steps=700)
    sink = ReplaySink(logs, longer, spec, resume=True)

    def crash(played, progress) -> None:
        raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError, match="simulated crash"):
        run_collection(longer, sink, on_episode=crash)
    sink.abort()
    assert {p.name: p.read_bytes() for p in logs.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replay_logs"]
    collect_to(logs, longer, resume=True)  # still resumable
    assert json.loads((logs / "collection.json").read_text())["steps"] >= 700


def test_replay_output_onto_a_file_is_refused_up_front(tmp_path: Path) -> None:
    """--format dqn-replay --force onto an existing file fails before collecting anything."""
    target = tmp_path / "file"
    target.write_text("x")
    config = small_config(format="dqn-replay")
    with pytest.raises(NotADirectoryError, match="is a file"):
        ReplaySink(target, config, {}, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_cli_interrupt_keeps_episodes_and_leaves_no_workers(tmp_path: Path) -> None:
    """SIGINT to the whole process group (as Ctrl-C does) during a 2-worker collection: exit
    130, a valid store with the completed episodes, and no worker process left running."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import psutil

    out = tmp_path / "c.h5"
    command = [
        sys.executable,
        "-m",
        "atari_dt",
        "collect",
        "--policy",
        "random",
        "--steps",
        "100000",
        "--workers",
        "2",
        "--set",
        "collect.max_episode_steps=60",
        "--out",
        str(out),
    ]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, start_new_session=True)
    seen = ""
    deadline = time.monotonic() + 60
    while "episodes=3" not in seen and time.monotonic() < deadline:
        seen += process.stderr.read(1)
    assert "episodes=3" in seen, seen[-500:]
    workers = psutil.Process(process.pid).children(recursive=True)
    assert workers
    os.killpg(process.pid, signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    assert process.returncode == 130, rest[-800:]
    time.sleep(0.5)
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    with EpisodeStore.open(out) as store:
        assert len(store) >= 3 and not store.metadata["collection"]["finished"]
        assert store.metadata["collection"]["steps"] == store.n_transitions


GAMES = ("breakout", "pong", "qbert", "seaquest")


@pytest.mark.parametrize("game", GAMES)
def test_every_game_collect_config_runs(game: str, tmp_path: Path) -> None:
    """Each game's shipped config (expert-to-random mixture) collects a real store: the game's
    minimal action set, RAM, and each episode's behaviour one of the config's components."""
    from atari_dt.config import load_config
    from atari_dt.envs.config import CollectFileConfig
    from atari_dt.envs.games import minimal_action_count

    root = Path(__file__).resolve().parents[1]
    config = load_config(CollectFileConfig, root / "configs" / "collect" / f"{game}.yaml").collect
    config = dataclasses.replace(config, steps=300, max_episode_steps=100, workers=1)
    collect_to(tmp_path / "store.h5", config)
    with EpisodeStore.open(tmp_path / "store.h5", reward_units="raw") as store:
        assert store.game == config.game and store.n_transitions >= 300
        assert store.n_actions == minimal_action_count(config.game)
        assert store.column("ram").shape == (store.n_transitions, 128)
        assert {b["component"] for b in store.behaviours} <= set(range(len(config.policy)))
        assert (store.column("actions") < store.n_actions).all()
