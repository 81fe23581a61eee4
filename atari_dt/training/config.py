"""Settings of training (the original DT recipe as defaults) and of evaluation rollouts, and
the experiment config a training run reads and saves (data, model, train, eval)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from atari_dt.config import ConfigError
from atari_dt.datasets.config import DataConfig
from atari_dt.model.config import ModelConfig, check_choices

MAX_LR = 10.0  # no optimiser here trains above this; larger values are typos (1e39 crashed)


@dataclass
class TrainConfig:
    """Optimiser, schedule, budget and bookkeeping of ``atari-dt train``."""

    max_steps: int = 10_000
    """Optimiser steps to train for (``--max-steps`` overrides)."""

    batch_size: int = 128
    """Context windows per optimiser step, over all ranks (the paper: 128)."""

    lr: float = 6e-4
    """Peak learning rate (the paper: 6e-4)."""

    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas (the paper: 0.9, 0.95)."""

    weight_decay: float = 0.1
    """AdamW weight decay, on Linear and Conv weights only (as the original)."""

    warmup_steps: int = 200
    """Linear warm-up from 0 to ``lr``, then cosine decay to ``final_lr_fraction * lr``."""

    final_lr_fraction: float = 0.1
    """Where the cosine decay ends, as a fraction of ``lr`` (the original: 10%)."""

    grad_clip: float = 1.0
    """Clip the global gradient norm to this (the original: 1.0); 0 turns clipping off."""

    rtg_scale: float | Literal["auto"] = "auto"
    """Sets ``model.rtg_scale``: ``auto`` uses the training episodes' max return (keeps a tanh
    RTG embedding out of saturation; see FACTS.md §4), a number is used as given."""

    return_loss_weight: float = 0.0
    """Weight of the return-prediction loss (needs ``model.return_head``); 0 trains actions only."""

    seed: int = 0
    """Seeds the initial weights and every step's batch and dropout (with the rank and step)."""

    checkpoint_every: int = 1000
    """Save a resumable checkpoint every this many steps (and always at the end)."""

    keep_checkpoints: int = 3
    """How many of the newest checkpoints to keep."""

    log_every: int = 20
    """Write metrics (loss, accuracy, lr, grad norm, frames/s) every this many steps."""

    eval_every: int = 0
    """Run evaluation rollouts every this many steps (0: never during training)."""

    precision: Literal["float32", "bfloat16"] = "float32"
    """``bfloat16`` runs forward and backward under autocast (weights and optimiser stay
    float32): ~2x faster convolutions on CPUs with bf16 units, at bf16's precision."""

    device: str = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""

    threads: int = 0
    """torch intra-op threads (0: torch's default, one per core)."""

    def __post_init__(self) -> None:
        check_choices(self)
        positive = ("max_steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.warmup_steps < 0 or self.eval_every < 0 or self.threads < 0:
            raise ConfigError("lr must be > 0; warmup_steps, eval_every and threads >= 0")
        if not self.lr <= MAX_LR:  # also refuses NaN; float32 overflows near 3.4e38 anyway
            raise ConfigError(f"lr {self.lr:g} is absurd: at most {MAX_LR:g} (the paper: 6e-4)")
        for name in ("grad_clip", "weight_decay", "return_loss_weight"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError(f"final_lr_fraction must be in [0, 1], got {self.final_lr_fraction}")
        if self.rtg_scale != "auto" and not self.rtg_scale > 0:  # type: ignore[operator]
            raise ConfigError(f"rtg_scale must be 'auto' or > 0, got {self.rtg_scale}")


@dataclass
class EvalConfig:
    """Rollouts of a trained agent in ALE: which targets, how many episodes, how to act."""

    targets: list[float] = field(default_factory=lambda: [0.0, 10.0, 20.0, 40.0])
    """Target returns to ask for, in ``reward_units``."""

    episodes: int = 5
    """Episodes per target."""

    envs: int = 8
    """Environments stepped together (one batched forward pass per step)."""

    reward_units: Literal["auto", "clipped", "raw"] = "auto"
    """Rewards the target return is decremented by: ``auto`` = the training data's units."""

    sample: bool = True
    """Sample actions from the policy (as the original evaluation); False takes the argmax."""

    temperature: float = 1.0
    """Softmax temperature when sampling."""

    max_episode_steps: int = 10_000
    """Cap on agent steps per evaluation episode."""

    preset: Literal["dqn_replay", "dt_original_eval"] = "dqn_replay"
    """Env preset; ``dqn_replay`` matches the training data's preprocessing."""

    seed: int = 1000
    """Seeds environment resets and action sampling."""

    threads: int = 1
    """torch intra-op threads while playing (0: torch's default, one per core). Results agree
    across thread counts to float rounding, so a sampled rollout can rarely diverge. One measured
    fastest on 2 cores (``benchmarks/bench_rollout.py``): a rollout's matmuls are small and
    the vector env steps on threads of its own."""

    precision: Literal["float32", "bfloat16"] = "float32"
    """``bfloat16`` runs the model under autocast while playing (the RTG too is rounded to bf16,
    2^-9 relative: targets within ~0.4% of each other become one input). Faster only on CPUs
    with bf16 units (AVX512-BF16, AMX); elsewhere bf16 matmuls are emulated (15x slower on this
    project's AVX2 machine)."""

    def rollout_settings(self) -> dict[str, Any]:
        """The keyword arguments of ``run_episodes`` this section sets (all but the targets,
        episodes, reward units and seed, which callers resolve)."""
        return {
            "n_envs": self.envs,
            "sample": self.sample,
            "temperature": self.temperature,
            "max_episode_steps": self.max_episode_steps,
            "preset": self.preset,
            "precision": self.precision,
        }

    def __post_init__(self) -> None:
        check_choices(self)
        if self.threads < 0:
            raise ConfigError(f"threads must be >= 0, got {self.threads}")
        if not self.targets:
            raise ConfigError("targets must not be empty")
        if self.episodes < 1 or self.envs < 1 or self.max_episode_steps < 1:
            raise ConfigError("episodes, envs and max_episode_steps must be >= 1")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")


@dataclass
class ExperimentConfig:
    """Everything one training run needs (``configs/train/*.yaml``, a run's ``config.yaml``);
    each stage reads its own section. Collection has its own file (``envs.config``)."""

    data: DataConfig = field(default_factory=DataConfig)
    """Episode store and context windows."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """The Decision Transformer (encoder, sizes, embeddings, positions)."""

    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimiser, schedule, budget and checkpoints (``atari-dt train``)."""

    eval: EvalConfig = field(default_factory=EvalConfig)
    """Evaluation rollouts (``atari-dt eval``, and during training)."""
