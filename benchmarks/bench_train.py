"""Training and rollout benchmarks. Every number is a ratio against a reference measured in the
same run.

1. Training frames/s (frame stacks per second through forward + backward + AdamW) of our
   trainer vs a plain PyTorch loop over the reference model (``tests/reference_dt.py``) fed
   the way the original code feeds it (float32 states divided by 255 per sample), at the
   paper's model (6 layers, 8 heads, 128 dims, T 30). Target >= 1.5x.
2. Our training FLOP/s (FLOPs of one step counted by torch's FlopCounterMode) as a fraction of
   this machine's float32 matmul FLOP/s (a 2048 x 2048 matmul). Target >= 50%.
3. Rollout agent steps/s: our agent (cached state embeddings, 8 envs per batched forward) vs
   the original-style evaluation (one env, the whole window re-encoded every step). Target
   >= 10x.

Frames are real ALE Seaquest frames (random policy). Run: ``make bench`` (or ``python
benchmarks/bench_train.py --small``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_dt import ReferenceAtariDT

from atari_dt.datasets import ContextWindows, DataConfig, EpisodeStoreWriter
from atari_dt.envs.dqn_replay import record_random_episodes
from atari_dt.model import HookedDecisionTransformer, ModelConfig
from atari_dt.training.config import ExperimentConfig, TrainConfig
from atari_dt.training.distributed import Distributed
from atari_dt.training.metrics import read_metrics
from atari_dt.training.trainer import train

T = 30


def real_store(path: Path, n_steps: int) -> list:
    episodes = list(record_random_episodes("Seaquest", n_steps, seed=0, max_episode_steps=1500))
    with EpisodeStoreWriter(path, game="Seaquest", n_actions=18, compression=None) as writer:
        for e in episodes:
            writer.add_episode(e.frames, e.actions, e.rewards)
    return episodes


def reference_steps_per_s(episodes: list, batch: int, steps: int) -> float:
    """The original recipe as a plain loop: per-sample float32/255 states, AdamW, clip."""
    frames = np.concatenate([e.frames for e in episodes])
    actions = np.concatenate([e.actions for e in episodes])
    model = ReferenceAtariDT(18, T, 1500, n_layer=6, n_head=8, n_embd=128).train()
    decay = [
        p
        for n, p in model.named_parameters()
        if n.endswith("weight") and p.ndim >= 2 and "emb" not in n
    ]
    rest = [p for p in model.parameters() if all(p is not q for q in decay)]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
        lr=6e-4,
        betas=(0.9, 0.95),
    )
    rng = np.random.default_rng(0)

    def sample(index: int) -> tuple[torch.Tensor, ...]:
        stacks = np.stack([frames[i - 3 : i + 1] for i in range(index, index + T)])
        states = torch.tensor(stacks, dtype=torch.float32).reshape(T, -1) / 255.0
        acts = torch.tensor(actions[index : index + T], dtype=torch.long)[:, None]
        return states, acts, torch.rand(T, 1), torch.tensor([[index % 1000]])

    def step() -> None:
        items = [sample(int(i)) for i in rng.integers(3, len(frames) - T, size=batch)]
        states, acts, rtgs, timesteps = (torch.stack(x) for x in zip(*items, strict=True))
        logits = model(states, acts, rtgs, timesteps)
        loss = F.cross_entropy(logits.reshape(-1, 18), acts.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - start)


def our_steps_per_s(
    store: Path, batch: int, steps: int, workdir: Path, precision: str = "float32"
) -> float:
    """Our trainer on the same frames, timed by its own perf/frames_per_s over the last half."""
    config = ExperimentConfig(
        data=DataConfig(path=str(store), context_len=T),
        model=ModelConfig(n_actions=18, context_len=T, max_timestep=1500, rtg_scale=10.0),
        train=TrainConfig(
            max_steps=2 * steps,
            batch_size=batch,
            log_every=steps,
            checkpoint_every=10**6,
            warmup_steps=1,
            precision=precision,
        ),
    )
    windows = ContextWindows(store, config.data)
    train(config, workdir, windows, Distributed(0, 1, torch.device("cpu")), progress=False)
    return read_metrics(workdir)[-1]["perf/frames_per_s"] / (batch * T)


def step_flops(batch: int) -> float:
    """FLOPs of one forward + backward of the paper-size model on ``batch`` windows."""
    from torch.utils.flop_counter import FlopCounterMode

    model = HookedDecisionTransformer(ModelConfig(n_actions=18, context_len=T, max_timestep=1500))
    frames = torch.randint(0, 255, (batch, T, 4, 84, 84), dtype=torch.uint8)
    actions = torch.randint(0, 18, (batch, T))
    with FlopCounterMode(display=False) as counter:
        model(frames, actions, torch.rand(batch, T), actions).logsumexp(-1).mean().backward()
    return float(counter.get_total_flops())


def matmul_flops_per_s(n: int = 2048, reps: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - start)


def rollout_ratio(steps: int) -> tuple[float, float]:
    """Agent steps/s: our batched cached agent over 8 envs vs the original evaluation."""
    from atari_dt.rollout.evaluate import run_episodes

    model = HookedDecisionTransformer(
        ModelConfig(n_actions=18, context_len=T, max_timestep=30000)
    ).eval()
    start = time.perf_counter()
    results = run_episodes(
        model,
        "Seaquest",
        [0.0],
        8,
        reward_units="clipped",
        n_envs=8,
        max_episode_steps=steps,
        progress=False,
    )
    # The agent steps actually played: an episode that ends before the cap counts its length.
    ours = sum(r.length for r in results) / (time.perf_counter() - start)
    return ours, original_style_steps_per_s(steps // 2)


def original_style_steps_per_s(steps: int) -> float:
    """The original evaluation loop: one env; every step the whole window of states (as
    float32 / 255), the previous actions and the RTGs go through the reference model (its
    3t-1-token evaluation form, window start's timestep), re-encoding every frame stack."""
    from atari_dt.envs.make import make_env

    model = ReferenceAtariDT(18, T, 30000, n_layer=6, n_head=8, n_embd=128).eval()
    env = make_env("Seaquest")
    frame, _ = env.reset(seed=0)
    stacks, actions = [], []
    stack = np.zeros((4, 84, 84), dtype=np.uint8)
    start = time.perf_counter()
    for _ in range(steps):
        stack = np.concatenate([stack[1:], frame[None]])
        stacks.append(stack)
        first = max(0, len(stacks) - T)
        states = torch.from_numpy(np.stack(stacks[first:])).float().div(255).flatten(1)[None]
        previous = torch.tensor(actions[first:], dtype=torch.long).reshape(1, -1, 1)
        with torch.no_grad():
            logits = model(
                states,
                previous,
                torch.full((1, states.shape[1], 1), 10.0),
                torch.tensor([[[first]]]),
                training_shape=False,
            )
        action = int(torch.multinomial(torch.softmax(logits[0, -1], -1), 1))
        actions.append(action)
        frame, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            frame, _ = env.reset()
            stacks, actions, stack = [], [], np.zeros_like(stack)
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="smaller batch and fewer steps")
    args = parser.parse_args()
    batch, steps = (16, 3) if args.small else (64, 6)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "seaquest.h5"
        episodes = real_store(store, 6000)
        ours = our_steps_per_s(store, batch, steps, Path(tmp) / "run")
        bf16 = our_steps_per_s(store, batch, steps, Path(tmp) / "bf16", "bfloat16")
        reference = reference_steps_per_s(episodes, batch, steps)
    frames = batch * T
    print(f"1. training, paper model, batch {batch} x T {T}, {torch.get_num_threads()} threads:")
    print(
        f"   ours {ours * frames:7.0f} frames/s vs plain loop over the reference "
        f"{reference * frames:7.0f}: {ours / reference:.2f}x (target >= 1.5x)"
    )
    print(
        f"   ours with train.precision=bfloat16: {bf16 * frames:7.0f} frames/s, "
        f"{bf16 / reference:.2f}x"
    )
    flops, peak = step_flops(batch), matmul_flops_per_s()
    achieved = flops * ours
    print(
        f"2. training FLOP/s {achieved / 1e9:.1f} G = {achieved / peak:.0%} of the matmul peak "
        f"{peak / 1e9:.1f} G (target >= 50%; {flops / 1e9:.1f} GFLOP per step)"
    )
    agent, original = rollout_ratio(200 if args.small else 600)
    print(
        f"3. rollout: cached agent x8 envs {agent:.0f} steps/s vs original-style "
        f"{original:.0f}: {agent / original:.1f}x (target >= 10x)"
    )


if __name__ == "__main__":
    main()
