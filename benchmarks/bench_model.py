"""Model benchmark: the cost of hooks. A ratio against a reference measured in the same run.

Forward + backward throughput (windows/s) of ``HookedDecisionTransformer`` vs the same
architecture without any hook point (the independent plain-PyTorch implementation of the
original DT in ``tests/reference_dt.py``), with the same weights (converted by the importer)
and the same inputs: real Seaquest frame stacks (uint8; the reference's scaling to [0, 1] is
timed with it, as ours happens inside the encoder). Target: hook overhead <= 5%.

The two models are timed in alternating rounds and the median round is compared, so machine
noise hits both alike. Prints the max abs difference of their logits as a check that the same
computation is timed.

Run: ``make bench`` (or ``python benchmarks/bench_model.py --small`` for a quick look).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_dt import ReferenceAtariDT, randomise

from atari_dt.envs.dqn_replay import record_random_episodes
from atari_dt.model import HookedDecisionTransformer
from atari_dt.model.original import convert_original_state_dict


def real_windows(batch: int, T: int) -> dict[str, np.ndarray]:
    """``batch`` windows of T steps of real Seaquest frame stacks (random policy)."""
    episode = next(
        record_random_episodes("Seaquest", batch + T + 4, seed=0, max_episode_steps=2000)
    )
    rng = np.random.default_rng(0)
    ends = rng.integers(T + 3, len(episode.actions), size=batch)
    steps = ends[:, None] + np.arange(-T + 1, 1)  # [B, T]
    stacks = steps[..., None] + np.arange(-3, 1)  # [B, T, 4]
    return {
        "frames": episode.frames[stacks],
        "actions": episode.actions[steps],
        "rtg": rng.uniform(0, 20, size=steps.shape).astype(np.float32),
        "timesteps": steps,
    }


def time_rounds(steps: dict[str, Callable[[], None]], rounds: int) -> dict[str, float]:
    """Median seconds per call of each step, alternating between them every round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for step in steps.values():  # warm-up
        step()
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer rounds, smaller batch")
    args = parser.parse_args()
    torch.manual_seed(0)
    T, batch, rounds = 30, (4 if args.small else 16), (5 if args.small else 15)
    # The paper's model: 6 layers, 8 heads, 128 dims, T 30; Seaquest's 18 actions.
    reference = ReferenceAtariDT(18, T, 2654, n_layer=6, n_head=8, n_embd=128).train()
    randomise(reference, torch.Generator().manual_seed(0))
    state_dict, report = convert_original_state_dict(reference.state_dict(), n_heads=8)
    hooked = HookedDecisionTransformer(report.config).train()
    hooked.load_state_dict(state_dict)
    for module in (reference, hooked):  # dropout off: both compute the same function
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0

    windows = real_windows(batch, T)
    frames, actions = torch.from_numpy(windows["frames"]), torch.from_numpy(windows["actions"])
    rtg, timesteps = torch.from_numpy(windows["rtg"]), torch.from_numpy(windows["timesteps"])
    original = {
        "actions": actions[..., None],
        "rtgs": rtg[..., None],
        "timesteps": timesteps[:, :1, None],
    }

    def step_reference() -> None:
        # Both start from the uint8 frames: the reference's scaling to [0, 1] is timed too.
        reference.zero_grad()
        states = frames.float().div(255).flatten(2)
        reference(states, **original).logsumexp(-1).mean().backward()

    def step_hooked() -> None:
        hooked.zero_grad()
        hooked(frames, actions, rtg, timesteps).logsumexp(-1).mean().backward()

    with torch.no_grad():
        states = frames.float().div(255).flatten(2)
        difference = (
            (reference(states, **original) - hooked(frames, actions, rtg, timesteps)).abs().max()
        )
    seconds = time_rounds({"reference": step_reference, "hooked": step_hooked}, rounds)
    overhead = seconds["hooked"] / seconds["reference"] - 1
    threads = torch.get_num_threads()
    print(f"forward+backward, batch {batch} x T {T}, paper-size model, {threads} threads")
    print(f"  reference (no hooks): {batch / seconds['reference']:8.1f} windows/s")
    print(f"  hooked:               {batch / seconds['hooked']:8.1f} windows/s")
    print(f"  hook overhead: {overhead:+.1%} (target <= +5%); max |logit diff| {difference:.2e}")


if __name__ == "__main__":
    main()
