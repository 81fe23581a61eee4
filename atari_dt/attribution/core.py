"""What every attribution method shares: the context window explained, the scalar target read
from the model's logits, and the forward functions Captum differentiates.

A *fast* forward encodes the window's frames once, without gradients, and runs the CNN only on
the frame stacks being attributed; the *full* forward runs the whole model on every frame, as
plain Captum over the model would. Both compute the same function of the attributed frames.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
import torch

TargetKind = Literal["logit", "log_prob", "logit_diff"]


@dataclass(frozen=True)
class Target:
    """The scalar explained: at window step ``step`` (negative counts from the end), the
    ``logit`` or ``log_prob`` of ``action``, or ``logit_diff`` = logit(action) -
    logit(``other_action``)."""

    action: int
    step: int = -1
    kind: TargetKind = "logit"
    other_action: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("logit", "log_prob", "logit_diff"):
            raise ValueError(f"kind must be logit, log_prob or logit_diff, got {self.kind!r}")
        if (self.kind == "logit_diff") != (self.other_action is not None):
            raise ValueError("other_action is needed by (and only by) kind='logit_diff'")

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """``logits`` ``[n, T, n_actions]`` -> the target ``[n]``."""
        at_step = logits[:, self.step]
        if self.kind == "log_prob":
            return torch.log_softmax(at_step, dim=-1)[:, self.action]
        if self.kind == "logit_diff":
            return at_step[:, self.action] - at_step[:, self.other_action]
        return at_step[:, self.action]

    def describe(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ContextWindow:
    """One context window as the model takes it (batch of one): ``frames`` uint8
    ``[1, T, S, H, W]``, ``actions``/``timesteps`` int64 ``[1, T]``, ``rtg`` float ``[1, T]``,
    ``mask`` bool ``[1, T]``. ``ram`` uint8 ``[T, 128]`` when the store has it (object labels)."""

    frames: torch.Tensor
    actions: torch.Tensor
    rtg: torch.Tensor
    timesteps: torch.Tensor
    mask: torch.Tensor
    ram: np.ndarray | None = None
    game: str = ""

    @classmethod
    def from_history(
        cls, stacks: np.ndarray, actions: np.ndarray, rtg: np.ndarray, timesteps: np.ndarray,
        *, context_len: int, game: str = "", ram: np.ndarray | None = None,
    ) -> ContextWindow:  # fmt: skip
        """The window of the last ``context_len`` steps of a live rollout's history:
        ``stacks`` uint8 ``[L, S, H, W]`` (each step's frame stack), ``actions``, ``rtg``
        (the return still asked for at each step) and ``timesteps`` ``[L]``. The current
        step's action may be anything (its logits never see it)."""
        steps = slice(max(0, len(stacks) - context_len), len(stacks))
        n = steps.stop - steps.start
        return cls(
            frames=torch.as_tensor(np.asarray(stacks[steps]), dtype=torch.uint8)[None],
            actions=torch.as_tensor(np.asarray(actions[steps]), dtype=torch.long)[None],
            rtg=torch.as_tensor(np.asarray(rtg[steps]), dtype=torch.float32)[None],
            timesteps=torch.as_tensor(np.asarray(timesteps[steps]), dtype=torch.long)[None],
            mask=torch.ones(1, n, dtype=torch.bool),
            ram=None if ram is None else np.asarray(ram[steps]),
            game=game,
        )

    @property
    def length(self) -> int:
        return int(self.frames.shape[1])

    def step_index(self, step: int) -> int:
        """A window step (negative from the end) as an index in ``[0, T)``."""
        if not -self.length <= step < self.length:
            raise ValueError(f"step {step} is outside the window of {self.length} steps")
        return step % self.length

    def rest(self, n: int = 1) -> tuple[torch.Tensor, ...]:
        """``(actions, rtg, timesteps, mask)`` repeated for a batch of ``n``."""
        return tuple(t.expand(n, -1) for t in (self.actions, self.rtg, self.timesteps, self.mask))


DELTA_TOLERANCE = 0.05  # |convergence delta| / max(|f(x) - f(baseline)|, 1e-3) beyond this warns


def warn_if_unconverged(delta: float, change: float, n_steps: int) -> None:
    """Warn, with the fix, when integrated gradients' delta is large for its change."""
    relative = abs(delta) / max(abs(change), 1e-3)
    if relative > DELTA_TOLERANCE:
        warnings.warn(
            f"integrated gradients did not converge: |delta| = {abs(delta):.3g} is "
            f"{relative:.0%} of f(x) - f(baseline) = {change:.3g}; raise n_steps (now {n_steps}, "
            f"e.g. {n_steps * 4}) until it falls below {DELTA_TOLERANCE:.0%}",
            stacklevel=3,
        )


def check_target(model: Any, window: ContextWindow, target: Target) -> None:
    """The target's actions exist and its step is in the window.

    Raises:
        ValueError: naming the bad action or step.
    """
    window.step_index(target.step)
    n = model.cfg.n_actions
    for name in ("action", "other_action"):
        value = getattr(target, name)
        if value is not None and not 0 <= value < n:
            raise ValueError(f"target {name} {value} is not an action of the model (0..{n - 1})")


def eval_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode: dropout would make attributions random (Captum's IG assumes a
    deterministic function). A model in train mode is switched, with a warning."""
    if model.training:
        warnings.warn(
            "the model was in train mode; attribution switched it to eval() (dropout off)",
            stacklevel=3,
        )
        model.eval()
    return model


class FastForward:
    """``f(frames_at_steps)`` for Captum: ``frames_at_steps`` float ``[n, k, S, H, W]`` (the
    stacks of window steps ``steps``) -> target ``[n]``. Every other step's state embedding is
    computed once, and so are the keys and values of every token before the first attributed
    state token; each call runs the CNN on the k stacks and the transformer only on the tokens
    from the first attributed state token to the target's."""

    def __init__(
        self, model: Any, window: ContextWindow, target: Target, steps: list[int],
        state_embeddings: torch.Tensor | None = None,
    ) -> None:  # fmt: skip
        """``state_embeddings``: ``model.embed_states(window.frames)`` when the caller has them
        (the CNN then never sees the window twice)."""
        from atari_dt.model.prefix import build_prefix_cache

        check_target(model, window, target)
        steps = [window.step_index(s) for s in steps]
        self.model, self.window = model, window
        self.steps = torch.tensor(steps, device=window.frames.device)
        cfg = model.cfg
        k, offset = cfg.tokens_per_step, cfg.state_token_offset
        end = k * window.step_index(target.step) + offset + 1  # through the target's state token
        start = min(k * min(steps) + offset, end - 1)
        # The target's logits are the last suffix token's: read them as a one-step window.
        self.target = replace(target, step=-1)
        with torch.no_grad():
            if state_embeddings is None:
                state_embeddings = model.embed_states(window.frames)
            self.states = state_embeddings  # [1, T, d]
            self.prefix = build_prefix_cache(model, self.states, *window.rest(), start=start,
                                             end=end)  # fmt: skip

    def __call__(self, frames_at_steps: torch.Tensor) -> torch.Tensor:
        from atari_dt.model.prefix import forward_suffix

        n = frames_at_steps.shape[0]
        new = self.model.embed_states(frames_at_steps)  # [n, k, d]: the CNN on k stacks only
        states = self.states.expand(n, -1, -1).index_copy(1, self.steps, new)
        final = forward_suffix(self.model, self.prefix, states, *self.window.rest(n))
        return self.target(self.model.action_logits_at(final[:, -1:]))


class FullForward:
    """``f(frames)`` for Captum: the whole model on float frames ``[n, T, S, H, W]``."""

    def __init__(self, model: Any, window: ContextWindow, target: Target):
        check_target(model, window, target)
        self.model, self.window, self.target = model, window, target

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        return self.target(self.model(frames, *self.window.rest(frames.shape[0])))


def target_value(model: Any, window: ContextWindow, target: Target) -> float:
    """The target at the window itself."""
    with torch.no_grad():
        return float(FullForward(model, window, target)(window.frames.float())[0])
