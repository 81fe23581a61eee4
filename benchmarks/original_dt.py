"""What the original DT code (kzl/decision-transformer ``atari/``) does per training step and
per evaluation step, rebuilt here so the benchmarks can time it beside ours. No code of the
original is in this file; it follows its behaviour as FACTS.md §2 and the paper describe it:

- **Data** (``run_dt_atari.py``'s ``create_dataset`` and ``StateActionReturnDataset``): every
  transition's state is held as its own 4-frame stack (uint8 ``[4, 84, 84]``, 4x the frames);
  an item is T consecutive stacks ending at ``idx + T`` or at the episode's end if that comes
  first (found by a scan of the episode ends), converted to float32 and divided by 255 per item,
  with actions, RTGs and the window's first timestep; a ``DataLoader`` (shuffled) collates them.
- **Training** (``trainer_atari.py``): ``model(states, actions, targets, rtgs, timesteps)``,
  cross-entropy over all T actions, ``zero_grad``, ``backward``, gradient clipping at 1.0, AdamW
  (betas 0.9/0.95, decay 0.1 on Linear/Conv weights), and the learning rate set from the tokens
  seen (linear warm-up, cosine decay).
- **Evaluation** (``get_returns`` and ``utils.sample``): one env; every state kept as a float
  stack in one tensor grown by ``torch.cat`` each step; every step the episode's action and
  RTG lists are turned into tensors whole, and the last T states, actions and RTGs go through
  the model in its 3T-1-token form, with the *current* timestep (capped at ``max_timestep``)
  as the position; the action is sampled from the softmax of the last logits.

The model is ``tests/reference_dt.py`` (an independent rewrite with the original's module
layout; ``tests/test_import_original.py`` checks it computes the same logits as ours after
the importer converts its weights).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_dt import ReferenceAtariDT

__all__ = ["OriginalDataset", "OriginalEvaluation", "OriginalTrainer", "ReferenceAtariDT"]


class OriginalDataset(Dataset):
    """The original's training items from episodes of frames ``[n, 84, 84]``, actions and
    (clipped) rewards: states ``[T, 4*84*84]`` float in [0, 1], actions ``[T, 1]``, RTGs
    ``[T, 1]``, the first timestep ``[1, 1]``."""

    def __init__(self, episodes: list, context_len: int) -> None:
        self.T = context_len
        self.stacks: list[np.ndarray] = []  # one uint8 [4, 84, 84] per transition
        actions, rtgs, timesteps, ends = [], [], [], []
        for episode in episodes:
            frames = np.concatenate([np.zeros((3, 84, 84), np.uint8), episode.frames])
            # Copies, not views: the original holds every transition's stack as its own array.
            self.stacks += [frames[t : t + 4].copy() for t in range(len(episode.actions))]
            actions.append(episode.actions)
            # DQN-replay logs, which the original reads, hold rewards clipped to [-1, 1].
            rewards = np.clip(np.asarray(episode.rewards, dtype=np.float64), -1.0, 1.0)
            rtgs.append(np.cumsum(rewards[::-1])[::-1])
            timesteps.append(np.arange(len(episode.actions)))
            ends.append(len(self.stacks))
        self.actions = np.concatenate(actions)
        self.rtgs = np.concatenate(rtgs)
        self.timesteps = np.concatenate(timesteps)
        self.ends = ends

    def __len__(self) -> int:
        return len(self.stacks) - 3 * self.T  # as the original: block_size = 3T

    def __getitem__(self, idx: int) -> tuple[torch.Tensor, ...]:
        # The window is cut at the end of idx's episode, which the original finds by scanning
        # the list of episode ends from the start on every item: that cost is kept here.
        episode_end = next(end for end in self.ends if end > idx)
        window = slice(min(idx + self.T, episode_end) - self.T, min(idx + self.T, episode_end))
        floats = torch.tensor(np.array(self.stacks[window]), dtype=torch.float32) / 255.0
        return (
            floats.reshape(self.T, -1),
            torch.tensor(self.actions[window], dtype=torch.long)[:, None],
            torch.tensor(self.rtgs[window], dtype=torch.float32)[:, None],
            torch.tensor([[self.timesteps[window.start]]], dtype=torch.int64),
        )


def decayed_parameters(model: torch.nn.Module) -> list[dict]:
    """The original's two AdamW groups: Linear and Conv2d weights decayed, the rest not."""
    decay, plain = [], []
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            is_matrix = name == "weight" and isinstance(module, torch.nn.Linear | torch.nn.Conv2d)
            (decay if is_matrix else plain).append(param)
    return [{"params": decay, "weight_decay": 0.1}, {"params": plain, "weight_decay": 0.0}]


class OriginalTrainer:
    """The original's training loop, one step per ``step()``; ``autocast_bf16`` wraps the
    forward in a plain ``torch.autocast(bfloat16)``, the least a user of it would do for bf16."""

    def __init__(
        self,
        dataset: OriginalDataset,
        model: ReferenceAtariDT,
        batch_size: int,
        *,
        autocast_bf16: bool = False,
        seed: int = 0,
    ) -> None:
        self.model = model.train()
        self.dataset = dataset
        self.optimizer = torch.optim.AdamW(decayed_parameters(model), lr=6e-4, betas=(0.9, 0.95))
        # num_workers=0: the benchmark gives both sides the same cores; worker processes would
        # use cores the thread count does not show.
        self.loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(seed),
        )
        self.batches: Iterator = iter(self.loader)
        self.autocast_bf16 = autocast_bf16
        self.tokens = 0
        self.warmup_tokens, self.final_tokens = 512 * 20, 2 * len(dataset) * dataset.T * 3

    def step(self) -> int:
        """One optimiser step; returns the frame stacks it trained on."""
        try:
            states, actions, rtgs, timesteps = next(self.batches)
        except StopIteration:
            self.batches = iter(self.loader)
            states, actions, rtgs, timesteps = next(self.batches)
        with torch.autocast("cpu", torch.bfloat16, enabled=self.autocast_bf16):
            logits = self.model(states, actions, rtgs, timesteps)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), actions.reshape(-1))
        self.model.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.tokens += int((actions >= 0).sum())
        if self.tokens < self.warmup_tokens:
            multiplier = self.tokens / self.warmup_tokens
        else:
            progress = (self.tokens - self.warmup_tokens) / max(
                1, self.final_tokens - self.warmup_tokens
            )
            multiplier = max(0.1, 0.5 * (1.0 + math.cos(math.pi * progress)))
        for group in self.optimizer.param_groups:
            group["lr"] = 6e-4 * multiplier
        return states.shape[0] * states.shape[1]


class OriginalEvaluation:
    """The original's evaluation loop on one env (``make_env``'s, the same preprocessing as
    ours), played ``steps`` agent steps at a time; an episode runs on across calls until it
    ends or reaches ``max_episode_steps``."""

    def __init__(
        self,
        model: ReferenceAtariDT,
        game: str,
        target_return: float,
        *,
        max_timestep: int,
        max_episode_steps: int,
        seed: int = 0,
    ) -> None:
        from atari_dt.envs.make import make_env

        self.model = model.eval()
        self.T = (model.pos_emb.shape[1] - 1) // 3
        self.env = make_env(game, max_episode_steps=max_episode_steps)
        self.target_return, self.max_timestep = target_return, max_timestep
        self.seed = seed
        self._reset()

    def _reset(self) -> None:
        frame, _ = self.env.reset(seed=self.seed)
        self.seed += 1
        self.frames = [np.zeros((84, 84), np.uint8)] * 3 + [frame]
        self.all_states = self._state()[None]  # float [n, 4, 84, 84], grown every step
        self.rtgs, self.actions, self.j = [self.target_return], [], 0

    def _state(self) -> torch.Tensor:
        """The env's current stack as the original's Env returns it: float32 / 255."""
        return torch.tensor(np.stack(self.frames[-4:]), dtype=torch.float32).div_(255)

    @torch.no_grad()
    def _sample(self) -> int:
        T = self.T
        # As the original: the episode's whole action and RTG lists become tensors every step,
        # and the model's input is cropped to the last T steps after that.
        actions = torch.tensor(self.actions, dtype=torch.long).reshape(1, -1, 1)[:, -T:]
        rtgs = torch.tensor(self.rtgs, dtype=torch.long)[None, :, None][:, -T:]
        states = self.all_states[None][:, -T:].flatten(2)  # [1, t, 4*84*84]
        # No action yet at an episode's first step: the sequence is (R, s).
        timestep = min(self.j, self.max_timestep) * torch.ones((1, 1, 1), dtype=torch.int64)
        logits = self.model(states, actions, rtgs, timestep, training_shape=False)
        probs = torch.softmax(logits[:, -1, :], dim=-1)
        return int(torch.multinomial(probs, num_samples=1))

    def play(self, steps: int) -> int:
        """Play ``steps`` agent steps; returns them."""
        for _ in range(steps):
            action = self._sample()
            self.actions.append(action)
            frame, reward, terminated, truncated, _ = self.env.step(action)
            self.j += 1
            if terminated or truncated:
                self._reset()
                continue
            self.frames.append(frame)
            del self.frames[:-4]
            self.all_states = torch.cat([self.all_states, self._state()[None]], dim=0)
            self.rtgs.append(self.rtgs[-1] - float(reward))  # raw rewards, as its Env gives
        return steps

    def close(self) -> None:
        self.env.close()
