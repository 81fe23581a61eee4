"""Attribution benchmark: seconds per integrated-gradients explanation of the current frame
stack (n_steps 50, T 30, paper-size model, real Seaquest frames), our fast path (the CNN only
on the attributed stack, the other 29 embeddings reused) vs plain Captum over the full model
(the CNN on all 30 stacks at every integration point), in the same run. Target >= 5x. Prints
the max abs difference of the two attributions.

Run: ``make bench`` (or ``python benchmarks/bench_attribution.py --small``).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from atari_dt.attribution.core import Target
from atari_dt.attribution.pixels import attribute_pixels
from atari_dt.datasets.contexts import Contexts
from atari_dt.envs.dqn_replay import record_random_episodes
from atari_dt.model import HookedDecisionTransformer, ModelConfig

T = 30


def real_window() -> Contexts:
    episode = next(record_random_episodes("Seaquest", 200, seed=0, max_episode_steps=200))
    steps = np.arange(100 - T + 1, 101)
    stacks = steps[:, None] + np.arange(-3, 1)
    return Contexts(
        frames=torch.from_numpy(episode.frames[stacks])[None],
        actions=torch.from_numpy(episode.actions[steps])[None],
        rtg=torch.full((1, T), 10.0),
        timesteps=torch.from_numpy(steps)[None],
        mask=torch.ones(1, T, dtype=torch.bool),
        game="Seaquest",
    )


def seconds(run, repeats: int) -> tuple[float, object]:
    result = run()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        result = run()
    return (time.perf_counter() - start) / repeats, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="one repeat")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = HookedDecisionTransformer(
        ModelConfig(n_actions=18, context_len=T, max_timestep=1000)
    ).eval()
    window = real_window()
    target = Target(action=1)
    repeats = 1 if args.small else 3

    def explain(fast: bool):
        return attribute_pixels(
            model, window, target, n_steps=50, internal_batch_size=10, baseline="blur", fast=fast
        )

    fast_s, fast = seconds(lambda: explain(True), repeats)
    full_s, full = seconds(lambda: explain(False), repeats)
    difference = float((fast.attributions - full.attributions).abs().max())
    scale = float(full.attributions.abs().max())
    print(
        f"IG of the current stack, n_steps 50, T {T}, paper-size model, "
        f"{torch.get_num_threads()} threads:"
    )
    print(
        f"  fast path {fast_s:.2f} s vs plain Captum over the full model {full_s:.2f} s: "
        f"{full_s / fast_s:.1f}x (target >= 5x)"
    )
    print(
        f"  max |difference| {difference:.2e} (largest attribution {scale:.2e}); "
        f"convergence delta {fast.convergence_delta:.2e} vs {full.convergence_delta:.2e}"
    )


if __name__ == "__main__":
    main()
