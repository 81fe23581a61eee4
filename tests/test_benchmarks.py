"""The benchmarks' own machinery: the original DT's data pipeline that ``bench_train`` times
beside ours must hand the model the same windows ours does (else the ratio compares different
work), and contenders in processes of their own must each run there, under their own settings.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from original_dt import OriginalDataset
from timing import alternate, in_processes

from atari_dt.datasets import ContextWindows, DataConfig, EpisodeStoreWriter
from atari_dt.envs.dqn_replay import record_random_episodes

T = 8


@pytest.fixture(scope="module")
def episodes() -> list:
    return list(record_random_episodes("Seaquest", 400, seed=0, max_episode_steps=200))


def test_original_pipeline_gives_our_windows(episodes: list, tmp_path: Path) -> None:
    store = tmp_path / "seaquest.h5"
    with EpisodeStoreWriter(store, game="Seaquest", n_actions=18) as writer:
        for episode in episodes:
            writer.add_episode(episode.frames, episode.actions, episode.rewards)
    ours = ContextWindows(store, DataConfig(path=str(store), context_len=T))
    original = OriginalDataset(episodes, T)
    first = len(episodes[0].actions)
    # Windows wholly inside the first episode, including ones whose first stacks reach back
    # before its start (zero frames on both sides), and windows inside the second episode.
    starts = [0, 1, 5, first - T, first, first + 3]
    assert sum(float(episode.rewards.max()) for episode in episodes) > 1  # raw points, clipped
    for start in starts:
        states, actions, rtgs, timestep = original[start]
        window = ours.get_batch(np.array([start + T - 1]))
        assert window.mask.all()
        frames = window.frames[0].reshape(T, -1).float() / 255.0
        torch.testing.assert_close(states, frames, rtol=0, atol=0)
        assert torch.equal(actions[:, 0], window.actions[0])
        torch.testing.assert_close(rtgs[:, 0], window.rtg[0])
        assert int(timestep) == int(window.timesteps[0, 0])
    assert float(original[0][2][0, 0]) > 0  # the RTGs compared are not all zero


def _report(work: float) -> float:
    """A round that did ``work`` and says where it ran: pid * 1000 + torch threads + work."""
    return work + os.getpid() * 1000 + torch.get_num_threads()


def _factory(work: float) -> Callable[[], float]:  # module level: a spawned process unpickles it
    return functools.partial(_report, work)


def test_in_processes_runs_each_contender_in_its_own_process() -> None:
    factories = {"a": functools.partial(_factory, 0.25), "b": functools.partial(_factory, 0.5)}
    with in_processes(factories, threads=1) as remote:
        codes = {name: round_trip() for name, round_trip in remote.items()}
        rates = alternate(remote, rounds=2, warmup=0)
    pids = {name: int(code // 1000) for name, code in codes.items()}
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert all(round(code % 1000, 2) in (1.25, 1.5) for code in codes.values())  # 1 thread
    assert all(rate.rounds == 2 and rate.median > 0 for rate in rates.values())
