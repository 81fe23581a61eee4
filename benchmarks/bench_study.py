"""Study benchmark: what recording the RAM costs the study's rollouts, and what the cache
saves. Ratios against references measured in the same run.

1. Rollouts with the RAM recorded (``run_episodes(record_ram=True)``: subprocess environments,
   which can read the emulator's RAM) against the same rollouts without (ale-py's threaded
   ``AtariVectorEnv``), same model, targets, episodes and cap, alternating rounds. Target:
   <= 2x (the expert-agreement measure must not dominate a study's cost).
2. The cached re-read of a study part against computing it (the pickled rollouts of one target
   vs playing them). Target: >= 20x.

Run: ``make bench`` (or ``python benchmarks/bench_study.py --small``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from atari_dt.model import HookedDecisionTransformer
from atari_dt.model.config import ModelConfig
from atari_dt.rollout.evaluate import run_episodes
from atari_dt.study.cache import StudyCache


def play(model, *, record_ram: bool, episodes: int, cap: int) -> float:
    start = time.perf_counter()
    run_episodes(
        model,
        "Seaquest",
        [0.0, 10.0],
        episodes,
        reward_units="raw",
        n_envs=episodes,
        max_episode_steps=cap,
        record_ram=record_ram,
        progress=False,
    )
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer, shorter episodes")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    episodes, cap = (2, 100) if args.small else (6, 400)
    cfg = ModelConfig(n_actions=18, d_model=64, n_layers=2, n_heads=4, context_len=10)
    model = HookedDecisionTransformer(cfg).eval()
    plain, ram = [], []
    for _ in range(args.rounds):  # alternating: machine noise hits both alike
        plain.append(play(model, record_ram=False, episodes=episodes, cap=cap))
        ram.append(play(model, record_ram=True, episodes=episodes, cap=cap))
    ratio = statistics.median(ram) / statistics.median(plain)
    steps = 2 * episodes * cap
    print(
        f"rollouts of up to {steps} agent steps: plain {statistics.median(plain):.2f} s, "
        f"with RAM {statistics.median(ram):.2f} s -> {ratio:.2f}x (target <= 2x)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = StudyCache(Path(tmp), {"model": "bench"})
        start = time.perf_counter()
        cache.get(
            "rollouts",
            {},
            lambda: run_episodes(
                model,
                "Seaquest",
                [0.0],
                episodes,
                reward_units="raw",
                n_envs=episodes,
                max_episode_steps=cap,
                record_ram=True,
                progress=False,
            ),
        )
        computed = time.perf_counter() - start
        start = time.perf_counter()
        StudyCache(Path(tmp), {"model": "bench"}).get("rollouts", {}, list)
        reused = time.perf_counter() - start
    print(
        f"one target's rollouts: computed {computed:.2f} s, from the cache {reused * 1e3:.1f} ms "
        f"-> {computed / reused:.0f}x faster (target >= 20x)"
    )


if __name__ == "__main__":
    main()
