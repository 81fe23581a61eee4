"""Model benchmark: our hooked model against the plain reference model, side by side.

The same weights (the reference's, converted by the importer) and the same inputs (real
Seaquest frame stacks, uint8; the reference's scaling to [0, 1] is timed with it, as ours
happens inside the encoder), the paper's model (6 layers, 8 heads, 128 dims, T 30). The
reference is ``tests/reference_dt.py``, an independent plain-PyTorch model with the original's
module layout and no hook points. What a ratio measures is everything our model does
differently: its hook points (none attached), fused q/k/v projection, attention path and
dropout masks, not hooks alone. Rounds alternate (``timing.alternate``); each figure prints
the median and range of its rounds and one ratio line:

1. forward + backward in train mode with dropout 0.1 (what training runs), windows/s.
2. forward without gradients in eval mode (what analysis and attribution run), windows/s.

Every figure runs at 1 torch thread and at 2. Prints the max abs difference of the two models'
eval logits as a check that the same function is timed.

Run: ``make bench`` (or ``python benchmarks/bench_model.py --small`` for a quick look).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from timing import alternate, cpu_capability, ratio_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_dt import ReferenceAtariDT, randomise

from atari_dt.compute import torch_threads
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="fewer rounds, smaller batch")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9, help="alternated rounds (>= 5)")
    args = parser.parse_args()
    torch.manual_seed(0)
    T, batch, rounds = 30, (4 if args.small else 16), (5 if args.small else args.rounds)
    # The paper's model: 6 layers, 8 heads, 128 dims, T 30; Seaquest's 18 actions; dropout 0.1.
    reference = ReferenceAtariDT(18, T, 2654, n_layer=6, n_head=8, n_embd=128)
    randomise(reference, torch.Generator().manual_seed(0))
    state_dict, report = convert_original_state_dict(reference.state_dict(), n_heads=8)
    hooked = HookedDecisionTransformer(report.config)
    hooked.load_state_dict(state_dict)

    windows = real_windows(batch, T)
    frames, actions = torch.from_numpy(windows["frames"]), torch.from_numpy(windows["actions"])
    rtg, timesteps = torch.from_numpy(windows["rtg"]), torch.from_numpy(windows["timesteps"])
    original = {
        "actions": actions[..., None],
        "rtgs": rtg[..., None],
        "timesteps": timesteps[:, :1, None],
    }

    def reference_logits() -> torch.Tensor:
        # Both start from the uint8 frames: the reference's scaling to [0, 1] is timed too.
        return reference(frames.float().div(255).flatten(2), **original)

    def hooked_logits() -> torch.Tensor:
        return hooked(frames, actions, rtg, timesteps)

    def training(model: torch.nn.Module, logits: Callable[[], torch.Tensor]) -> Callable:
        def step() -> float:
            model.train().zero_grad()
            logits().logsumexp(-1).mean().backward()
            return float(batch)

        return step

    def inference(model: torch.nn.Module, logits: Callable[[], torch.Tensor]) -> Callable:
        def step() -> float:
            with torch.no_grad():
                model.eval()
                logits()
            return float(batch)

        return step

    with torch.no_grad():
        reference.eval(), hooked.eval()
        difference = (reference_logits() - hooked_logits()).abs().max()
    print(
        f"paper-size model, batch {batch} x T {T}, real Seaquest frames, {rounds} alternated "
        f"rounds, windows/s; max |eval logit diff| {difference:.2e}"
    )
    for n_threads in args.threads:
        with torch_threads(n_threads):
            print(f"{n_threads} thread(s), {cpu_capability()} kernels")
            for label, make in (
                ("1. forward+backward, train mode, dropout 0.1", training),
                ("2. forward, eval mode, no gradients", inference),
            ):
                rates = alternate(
                    {"ours": make(hooked, hooked_logits), "ref": make(reference, reference_logits)},
                    rounds,
                )
                print("  " + ratio_line(label, rates["ours"], rates["ref"], ">= 1x"))


if __name__ == "__main__":
    main()
