"""Checks of the model's inputs, so a wrong shape, dtype or value fails with a message that
names the argument, what it got and what it needs (instead of an index error deep inside)."""

from __future__ import annotations

import torch

from atari_dt.model.config import ModelConfig


def check_frames(cfg: ModelConfig, frames: torch.Tensor) -> None:
    """``frames``: uint8 (or float, 0-255 scale) ``[B, T, stack_size, frame_size, frame_size]``."""
    _check_tensor("frames", frames)
    S, F = cfg.stack_size, cfg.frame_size
    if frames.ndim != 5 or tuple(frames.shape[2:]) != (S, F, F):
        raise ValueError(f"frames must have shape [B, T, {S}, {F}, {F}], got {list(frames.shape)}")
    if frames.dtype != torch.uint8 and not frames.dtype.is_floating_point:
        raise TypeError(f"frames must be uint8 (or float on the 0-255 scale), got {frames.dtype}")
    _check_context("frames", cfg, frames.shape[1])


def check_sequence(
    cfg: ModelConfig,
    state_embeddings: torch.Tensor,
    actions: torch.Tensor,
    rtg: torch.Tensor | None,
    timesteps: torch.Tensor,
    mask: torch.Tensor | None,
) -> None:
    """The transformer's inputs: ``state_embeddings`` float ``[B, T, d_model]``, ``actions`` and
    ``timesteps`` integer ``[B, T]``, ``rtg`` float ``[B, T]`` (None allowed for behaviour
    cloning), ``mask`` bool ``[B, T]`` with real steps right-aligned."""
    _check_tensor("state_embeddings", state_embeddings)
    if state_embeddings.ndim != 3 or state_embeddings.shape[2] != cfg.d_model:
        raise ValueError(
            f"state_embeddings must have shape [B, T, {cfg.d_model}], "
            f"got {list(state_embeddings.shape)}"
        )
    if not state_embeddings.dtype.is_floating_point:
        raise TypeError(f"state_embeddings must be a float tensor, got {state_embeddings.dtype}")
    B, T = state_embeddings.shape[:2]
    _check_context("state_embeddings", cfg, T)
    _check_integer_steps("actions", actions, B, T, upper=cfg.n_actions, what="n_actions")
    _check_integer_steps("timesteps", timesteps, B, T, upper=cfg.max_timestep, what="max_timestep")
    if rtg is not None or not cfg.behaviour_cloning:
        _check_steps("rtg", rtg, B, T)
        if not rtg.dtype.is_floating_point:  # type: ignore[union-attr]
            raise TypeError(f"rtg must be a float tensor, got {rtg.dtype}")  # type: ignore[union-attr]
    if mask is not None:
        _check_mask(mask, B, T)


def _check_tensor(name: str, value: object) -> None:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")


def _check_context(name: str, cfg: ModelConfig, steps: int) -> None:
    if not 1 <= steps <= cfg.context_len:
        raise ValueError(
            f"{name} has {steps} steps; the model takes 1 to context_len={cfg.context_len}"
        )


def _check_steps(name: str, value: torch.Tensor | None, B: int, T: int) -> None:
    _check_tensor(name, value)
    if tuple(value.shape) != (B, T):  # type: ignore[union-attr]
        raise ValueError(
            f"{name} must have shape [B, T] = [{B}, {T}] like the frames, got {list(value.shape)}"  # type: ignore[union-attr]
        )


def _check_integer_steps(
    name: str, value: torch.Tensor, B: int, T: int, *, upper: int, what: str
) -> None:
    _check_steps(name, value, B, T)
    if value.dtype.is_floating_point or value.dtype == torch.bool or value.is_complex():
        raise TypeError(f"{name} must be an integer tensor, got {value.dtype}")
    if value.numel() and (int(value.min()) < 0 or int(value.max()) >= upper):
        raise ValueError(
            f"{name} must be in [0, {what}={upper}), got values in "
            f"[{int(value.min())}, {int(value.max())}]"
        )


def _check_mask(mask: torch.Tensor, B: int, T: int) -> None:
    _check_steps("mask", mask, B, T)
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor (True = real step), got {mask.dtype}")
    if not bool(mask[:, -1].all()):
        raise ValueError(
            "mask: the last step of every window must be real (windows are right-aligned)"
        )
    if bool((mask[:, 1:] < mask[:, :-1]).any()):
        raise ValueError("mask: padding must come before the real steps (left padding only)")
