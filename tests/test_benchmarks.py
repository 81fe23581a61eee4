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
from timing import count_flops, in_processes

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
    # before its start (zero frames on both sides), windows inside the second episode, and
    # (last) one that would run past the first episode's end: the original shifts it back to
    # end there, i.e. our window ending at the episode's last step.
    ends = {start: start + T - 1 for start in (0, 1, 5, first - T, first, first + 3)}
    ends[first - 3] = first - 1
    assert max(float(episode.rewards.max()) for episode in episodes) > 1  # raw points, clipped
    for start, end in ends.items():
        states, actions, rtgs, timestep = original[start]
        window = ours.get_batch(np.array([end]))
        assert window.mask.all()
        frames = window.frames[0].reshape(T, -1).float() / 255.0
        torch.testing.assert_close(states, frames, rtol=0, atol=0)
        assert torch.equal(actions[:, 0], window.actions[0])
        torch.testing.assert_close(rtgs[:, 0], window.rtg[0])
        assert int(timestep) == int(window.timesteps[0, 0])
    assert float(original[0][2][0, 0]) > 0  # the RTGs compared are not all zero


_SETTING = 0  # a process-wide setting: each contender's process has its own


def _report(work: float) -> tuple[int, int, float, int]:
    """A round's reply: where it ran (pid, torch threads), its work and the process's setting."""
    return os.getpid(), torch.get_num_threads(), work, _SETTING


def _factory(work: float, setting: int | None) -> Callable[[], tuple]:
    """Module level, so a spawned process can unpickle it; sets ``_SETTING`` unless None."""
    global _SETTING
    if setting is not None:
        _SETTING = setting
    return functools.partial(_report, work)


def _failing_factory() -> Callable[[], float]:
    raise ValueError("no contender here")


def _dying_factory() -> Callable[[], float]:
    return functools.partial(os._exit, 3)  # the process ends mid-round, without a reply


def test_in_processes_runs_each_contender_in_its_own_process() -> None:
    """Each contender runs in a process of its own at the thread count asked (one the test
    process does not have), with only the settings its own factory made."""
    threads = 1 if torch.get_num_threads() != 1 else 2
    factories = {
        "setter": functools.partial(_factory, 0.25, 7),
        "reader": functools.partial(_factory, 0.5, None),
    }
    with in_processes(factories, threads=threads) as remote:
        replies = {name: round_trip() for name, round_trip in remote.items()}
    pids = {pid for pid, *_ in replies.values()}
    assert len(pids) == 2 and os.getpid() not in pids
    assert replies["setter"][1:] == (threads, 0.25, 7)
    assert replies["reader"][1:] == (threads, 0.5, 0)  # the setter's setting did not reach it
    assert _SETTING == 0  # nor this process


def test_in_processes_names_a_contender_that_fails() -> None:
    """A factory that raises in its process is a RuntimeError here, naming the contender and
    carrying the child's traceback; a process that dies mid-round one with its exit code. Not
    a hang."""
    factories = {"good": functools.partial(_factory, 1.0, None), "bad": _failing_factory}
    failed = pytest.raises(RuntimeError, match=r"(?s)contender 'bad' failed.*no contender here")
    with failed, in_processes(factories, threads=1):
        pass
    dying = {"dying": _dying_factory}
    died = pytest.raises(RuntimeError, match=r"'dying': its process died \(exit code 3\)")
    with died, in_processes(dying, threads=1) as remote:
        remote["dying"]()


def test_count_flops_counts_what_torchs_counter_counts() -> None:
    """``count_flops`` hooks no module (so the model keeps its fast paths) but must count the
    same matmul and convolution FLOPs as torch's FlopCounterMode, forward and backward, also
    under inference mode, where ``aten.linear`` reaches it undecomposed."""
    from torch.utils.flop_counter import FlopCounterMode

    net = torch.nn.Sequential(
        torch.nn.Conv2d(4, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(288, 5)
    )
    x = torch.randn(2, 4, 8, 8)

    def train_step() -> None:
        net(x).sum().backward()

    def infer() -> None:
        with torch.inference_mode():
            net(x)

    for work in (train_step, infer):
        with FlopCounterMode(display=False) as torch_counter:
            work()
        expected = torch_counter.get_total_flops()
        assert expected > 0  # so that an empty count cannot pass
        assert count_flops(work) == expected
