"""A Decision Transformer agent for N environments at once that encodes every frame once.

The original evaluation re-runs the CNN over all T frame stacks of the window at every step;
this agent keeps each environment's window of state embeddings and encodes only the new stack,
then runs the transformer on the whole batch of windows in one call.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from atari_dt.compute import autocast, check_precision
from atari_dt.model.last_step import last_state_logits


class FrameStacker:
    """The last ``stack_size`` frames of each env, zeros before the episode's first frame (as
    the episode store's windows are built)."""

    def __init__(self, n_envs: int, stack_size: int, frame_shape: tuple[int, int]) -> None:
        self.stacks = np.zeros((n_envs, stack_size, *frame_shape), dtype=np.uint8)

    def reset(self, env: int, frame: np.ndarray) -> None:
        self.stacks[env] = 0
        self.stacks[env, -1] = frame

    def push(self, env: int, frame: np.ndarray) -> None:
        self.stacks[env, :-1] = self.stacks[env, 1:]
        self.stacks[env, -1] = frame


@dataclass
class Decision:
    """What the agent chose for the envs it was asked about."""

    actions: np.ndarray  # int64 [n]
    probs: torch.Tensor  # float [n, n_actions], the policy it sampled from (temperature applied)


class DTAgent:
    """Keeps, per env, a right-aligned window of the last T steps: state embeddings
    ``[N, T, d]``, actions, returns-to-go and timesteps ``[N, T]``, and how many are real.

    Args:
        model: a ``HookedDecisionTransformer`` (put in ``eval()`` here).
        n_envs: environments served.
        sample: sample from the softmax (True, as the original) or take the argmax.
        temperature: softmax temperature when sampling.
        seed: seeds the sampling generator.
        precision: ``bfloat16`` runs the model under autocast (the window's buffers, the
            softmax and the sampling stay float32); ``float32`` runs it as it is.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        n_envs: int,
        *,
        sample: bool = True,
        temperature: float = 1.0,
        seed: int = 0,
        precision: str = "float32",
    ) -> None:
        self.model = model.eval()
        self.precision = check_precision(precision)
        cfg = model.cfg
        self.T, self.max_timestep = cfg.context_len, cfg.max_timestep
        device = next(model.parameters()).device
        self.states = torch.zeros(n_envs, self.T, cfg.d_model, device=device)
        self.actions = torch.zeros(n_envs, self.T, dtype=torch.long, device=device)
        self.rtg = torch.zeros(n_envs, self.T, device=device)
        self.timesteps = torch.zeros(n_envs, self.T, dtype=torch.long, device=device)
        self.length = torch.zeros(n_envs, dtype=torch.long, device=device)
        self.sample, self.temperature = sample, temperature
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self._target: dict[int, float] = {}  # env -> return still to get

    def start(self, env: int, target_return: float) -> None:
        """Begin a new episode in ``env`` asking for ``target_return``."""
        self.length[env] = 0
        self.rtg[env] = 0.0
        self._target[env] = float(target_return)

    @torch.no_grad()
    def act(self, envs: np.ndarray, stacks: np.ndarray, timesteps: np.ndarray) -> Decision:
        """Choose actions for ``envs`` (int ``[n]``) given their current frame stacks (uint8
        ``[n, S, H, W]``) and step numbers within the episode (``[n]``)."""
        index = torch.as_tensor(envs, device=self.states.device)
        frames = torch.as_tensor(stacks, device=self.states.device)[:, None]  # [n, 1, S, H, W]
        with autocast(index.device, self.precision):
            new_states = self.model.embed_states(frames)[:, 0]  # the CNN on the new stacks only
        self._shift(index)
        self.states[index, -1] = new_states.to(self.states.dtype)
        self.rtg[index, -1] = torch.tensor(
            [self._target[int(e)] for e in envs], device=index.device
        )
        steps = torch.as_tensor(timesteps, device=index.device).clamp(max=self.max_timestep - 1)
        self.timesteps[index, -1] = steps
        self.actions[index, -1] = 0  # not chosen yet; the logits of this step never see it
        self.length[index] = (self.length[index] + 1).clamp(max=self.T)
        mask = torch.arange(self.T, device=index.device) >= (self.T - self.length[index, None])
        with autocast(index.device, self.precision):
            logits = last_state_logits(
                self.model,
                self.states[index],
                self.actions[index],
                self.rtg[index],
                self.timesteps[index],
                mask,
            ).float()
        probs = torch.softmax(logits / self.temperature, dim=-1)
        if self.sample:
            chosen = torch.multinomial(probs, 1, generator=self.generator)[:, 0]
        else:
            chosen = logits.argmax(dim=-1)
        self.actions[index, -1] = chosen
        return Decision(chosen.cpu().numpy(), probs)

    def observe(self, envs: np.ndarray, rewards: np.ndarray) -> None:
        """Decrement the target of ``envs`` by the rewards just received (in the units the
        caller chose: raw or clipped)."""
        for env, reward in zip(envs.tolist(), rewards.tolist(), strict=True):
            self._target[env] -= reward

    def target_left(self, env: int) -> float:
        """The return ``env`` is still asked to get."""
        return self._target[env]

    def _shift(self, index: torch.Tensor) -> None:
        """Move the windows of ``index`` one step left to make room for the new step."""
        for buffer in (self.states, self.actions, self.rtg, self.timesteps):
            buffer[index] = buffer[index].roll(-1, dims=1)
