"""Data-layer benchmarks. Every number is a ratio against a reference measured in the same run.

1. RAM per transition held by ContextWindows vs a copy of 4-frame stacks (target <= 0.3x).
2. Windows/s of ContextWindows.get_batch (T=30, batch 64) vs a naive per-window implementation.
3. Peak RSS converting a 200k-transition checkpoint vs a 50k one (must not grow with the size).

Frames are real ALE Seaquest frames (random policy, DQN-replay preprocessing), tiled to size.
Run: ``make bench`` (or ``python benchmarks/bench_data.py --small`` for a quick look).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from atari_dt.datasets import ContextWindows, DataConfig, EpisodeStoreWriter, ReplayLogWriter
from atari_dt.envs.dqn_replay import record_random_episodes


def real_episodes(n_steps: int) -> list:
    return list(record_random_episodes("Seaquest", n_steps, seed=0))


def build_store(path: Path, episodes: list, n_transitions: int) -> None:
    """A store of about ``n_transitions`` made by repeating the real episodes."""
    with EpisodeStoreWriter(path, game="Seaquest", compression=None) as writer:
        written, i = 0, 0
        while written < n_transitions:
            episode = episodes[i % len(episodes)]
            writer.add_episode(episode.frames, episode.actions, episode.rewards)
            written += len(episode.actions)
            i += 1


def naive_window(
    frames: np.ndarray, actions: np.ndarray, rtg: np.ndarray, start: np.ndarray, index: int, T: int
) -> dict:
    """Reference: one window built step by step with a Python loop and per-step np.stack."""
    first = start[index]
    stacks, acts, rtgs, mask = [], [], [], []
    for t in range(index - T + 1, index + 1):
        stack = [frames[k] if k >= first else np.zeros_like(frames[0]) for k in range(t - 3, t + 1)]
        stacks.append(np.stack(stack))
        acts.append(actions[t] if t >= first else 0)
        rtgs.append(rtg[t] if t >= first else 0.0)
        mask.append(t >= first)
    return {
        "frames": np.stack(stacks),
        "actions": np.array(acts),
        "rtg": np.array(rtgs),
        "mask": np.array(mask),
    }


def bench_memory_and_sampler(store_path: Path, batches: int) -> None:
    T, batch = 30, 64
    windows = ContextWindows(store_path, DataConfig(context_len=T, frames_in_memory="always"))
    n = len(windows)
    per_transition = windows.bytes_held / n
    stacked = 4 * 84 * 84 + (windows.bytes_held - windows._frames.nbytes) / n  # same columns
    print(
        f"[memory] {per_transition:,.0f} B/transition held vs {stacked:,.0f} B for a 4-frame-stack "
        f"copy: ratio {per_transition / stacked:.3f}x (target <= 0.3x)"
    )

    rng = np.random.default_rng(0)
    index_batches = [rng.integers(0, n, batch) for _ in range(batches)]
    start = time.perf_counter()
    for indices in index_batches:
        windows.get_batch(indices)
    ours = batches * batch / (time.perf_counter() - start)
    frames, actions, rtg = windows._frames, windows._actions, windows._rtg
    episode_start = windows._episode_start
    start = time.perf_counter()
    for indices in index_batches[: max(1, batches // 4)]:
        [naive_window(frames, actions, rtg, episode_start, int(i), T) for i in indices]
    naive = max(1, batches // 4) * batch / (time.perf_counter() - start)
    print(
        f"[sampler] {ours:,.0f} windows/s (T={T}, batch {batch}) vs naive per-window "
        f"{naive:,.0f} windows/s: {ours / naive:.1f}x faster"
    )


# VmHWM, not ru_maxrss: Linux carries ru_maxrss of the parent's image across fork + exec.
_CONVERT_CHILD = """
import sys
from atari_dt.datasets import convert_replay_logs
convert_replay_logs(sys.argv[1], sys.argv[2], game="Seaquest", progress=False, overwrite=True)
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))
"""


def write_one_checkpoint(directory: Path, episodes: list, capacity: int) -> None:
    """Exactly one full logged dump (checkpoint 0) of ``capacity - 1`` transitions."""
    writer = ReplayLogWriter(directory, capacity, compresslevel=1)
    i = 0
    while not writer.checkpoints_written:
        episode = episodes[i % len(episodes)]
        writer.add_episode(episode.frames, episode.actions, episode.rewards)
        i += 1


def bench_convert_rss(workdir: Path, episodes: list, sizes: tuple[int, int]) -> None:
    peaks = {}
    for size in sizes:
        logs = workdir / f"logs_{size}"
        write_one_checkpoint(logs, episodes, size)
        start = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", _CONVERT_CHILD, str(logs), str(workdir / f"store_{size}.h5")],
            capture_output=True,
            text=True,
            check=True,
        )
        peaks[size] = int(out.stdout.strip().splitlines()[-1]) / 1024  # KiB -> MiB
        rate = size / (time.perf_counter() - start)
        print(
            f"[convert] {size:,} transitions: peak RSS {peaks[size]:,.0f} MiB, {rate:,.0f} frames/s"
        )
    small, large = sizes
    print(
        f"[convert] peak RSS {large:,} vs {small:,} transitions: "
        f"ratio {peaks[large] / peaks[small]:.2f}x "
        f"for {large / small:.0f}x the data (target ~1x: memory bounded by a chunk)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smaller sizes for a quick look")
    args = parser.parse_args()
    sizes = (12_500, 50_000) if args.small else (50_000, 200_000)
    episodes = real_episodes(3_000)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        build_store(workdir / "bench.h5", episodes, 20_000 if args.small else 100_000)
        bench_memory_and_sampler(workdir / "bench.h5", batches=20 if args.small else 50)
        bench_convert_rss(workdir, episodes, sizes)


if __name__ == "__main__":
    main()
