"""Collection benchmarks; every number is a ratio against a reference measured in the same run.

1. Collector steps/s with one worker per core vs a single env (workers=1): target >= 1.8x on 2
   cores. Same config, seed and policy, so both runs produce the same data.
2. Vectorised envs (ale-py's C++ AtariVectorEnv, gymnasium subprocess envs) vs one env,
   random actions, agent steps/s. ale-py's own threaded env shows how far the emulator itself
   scales on this machine (a pure-Python loop is printed too, to show the cores are real).

Run: ``make bench`` or ``python benchmarks/bench_collect.py [--steps N]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from atari_dt.envs.collect import build_policy, collection_record, run_collection
from atari_dt.envs.config import CollectConfig, PolicyComponent
from atari_dt.envs.make import make_env, make_vector_env
from atari_dt.envs.sinks import StoreSink


def collect_seconds(config: CollectConfig, out: Path) -> float:
    spec = build_policy(config.policy, config.game).spec()
    start = time.perf_counter()
    sink = StoreSink(out, config, spec)
    progress = run_collection(config, sink)
    sink.close(collection_record(config, progress))
    return time.perf_counter() - start


def bench_collector(steps: int, policy: str) -> None:
    workers = os.cpu_count() or 1
    config = CollectConfig(game="Seaquest", steps=steps, seed=0, policy=[PolicyComponent(policy)])
    with tempfile.TemporaryDirectory() as tmp:
        one = collect_seconds(_replace(config, workers=1), Path(tmp) / "one.h5")
        many = collect_seconds(_replace(config, workers=workers), Path(tmp) / "many.h5")
    print(
        f"[collect] {policy} Seaquest, {steps:,} steps: 1 worker {steps / one:,.0f} steps/s, "
        f"{workers} workers {steps / many:,.0f} steps/s: {one / many:.2f}x (target >= 1.8x)"
    )


def _replace(config: CollectConfig, **changes: object) -> CollectConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def env_steps_per_second(env: object, n_envs: int, steps: int) -> float:
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        if n_envs == 1:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(18)))
            if terminated or truncated:
                env.reset()
        else:
            env.step(rng.integers(18, size=n_envs))  # next-step autoreset
    return steps * n_envs / (time.perf_counter() - start)


def bench_vector_envs(steps: int) -> None:
    n = os.cpu_count() or 1
    single = env_steps_per_second(make_env("Seaquest"), 1, steps)
    print(f"[envs] single env: {single:,.0f} agent steps/s")
    for backend in ("ale", "subprocess"):
        env = make_vector_env("Seaquest", n, backend=backend)
        rate = env_steps_per_second(env, n, steps // n)
        env.close()
        print(
            f"[envs] {backend} vector env x{n}: {rate:,.0f} agent steps/s: "
            f"{rate / single:.2f}x the single env"
        )


def bench_cpu_scaling() -> None:
    """Reference: how a pure-Python busy loop scales over the cores (are they real cores?)."""
    import multiprocessing

    n, workers = 3_000_000, os.cpu_count() or 1
    start = time.perf_counter()
    for _ in range(workers):
        _busy(n)
    serial = time.perf_counter() - start
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        start = time.perf_counter()
        pool.map(_busy, [n] * workers)
        parallel = time.perf_counter() - start
    print(f"[cpu] pure-Python loop on {workers} processes: {serial / parallel:.2f}x one process")


def _busy(n: int) -> int:
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60_000, help="collector steps per run")
    parser.add_argument("--policy", choices=["random", "expert"], default="random")
    args = parser.parse_args()
    bench_cpu_scaling()
    bench_vector_envs(4_000)
    bench_collector(args.steps, args.policy)


if __name__ == "__main__":
    main()
