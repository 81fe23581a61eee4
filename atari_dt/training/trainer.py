"""The training loop: the original DT recipe (cross-entropy on actions at the state tokens,
AdamW, warm-up + cosine, grad-clip), in one process or under torchrun DDP.

A step is a pure function of ``(weights, optimiser state, seed, step)``: its global batch of
window indices and its dropout masks are drawn from generators seeded by ``(seed, step)`` (the
batch) and ``(seed, step, rank)`` (dropout), so a resumed run repeats an uninterrupted one bit
for bit, and N ranks split exactly the batch one process would draw.

A non-finite loss, gradient, input RTG or weight stops the run before the step is applied or
saved (every rank together, decided on all-reduced values), naming the step and the likely
cause; the checkpoints written before it are kept, and no checkpoint is ever written from a
non-finite state.
"""

from __future__ import annotations

import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError
from atari_dt.model.checkpoint import CheckpointError
from atari_dt.training.config import ExperimentConfig
from atari_dt.training.distributed import Distributed
from atari_dt.training.metrics import MetricsLog
from atari_dt.training.optim import lr_at, make_optimizer
from atari_dt.training.state import (
    list_checkpoints,
    load_training_state,
    remove_stale_checkpoints,
    save_training_state,
)


class NonFiniteError(UserError):
    """Training met a NaN or inf (in the loss, the gradients, the batch's RTGs or the weights)
    and stopped without applying or saving it; the message names the step and the likely
    cause (non-finite data, or a learning rate too high)."""


@dataclass
class TrainResult:
    """What a call to ``train`` did."""

    run_dir: Path
    start_step: int
    step: int
    """Optimiser steps done when it returned (== max_steps unless interrupted)."""
    checkpoint: Path | None
    interrupted: bool
    last_metrics: dict[str, float]


class _TrainingForward(nn.Module):
    """Logits and (optional) return predictions in one forward, so DDP sees a single call.
    Returns are predicted only when their loss is used (DDP needs every parameter it wraps to
    get a gradient). The transformer runs to the tokens the loss reads only
    (``final_resid_at``): the state tokens, and the action tokens but the last for returns."""

    def __init__(self, model: nn.Module, predict_returns: bool) -> None:
        super().__init__()
        self.model = model
        self.predict_returns = predict_returns

    def forward(self, batch: Contexts) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        model = self.model
        states = model.embed_states(batch.frames)
        inputs = (states, batch.actions, batch.rtg, batch.timesteps, batch.mask)
        cfg, T = model.cfg, batch.actions.shape[1]
        spread = state_spread(states.detach(), batch.mask)
        state_tokens = [cfg.token_index(t, T) for t in range(T)]
        if not self.predict_returns:
            final = model.final_resid_at(state_tokens, *inputs)
            return model.action_logits_at(final), None, spread
        # Returns are read at each action token but the last (its target is outside the
        # window). The positions s_0 a_0 s_1 a_1 ... s_{T-1} put states at even indices.
        action_tokens = [cfg.token_index(t, T, "action") for t in range(T - 1)]
        final = model.final_resid_at(sorted([*state_tokens, *action_tokens]), *inputs)
        logits = model.action_logits_at(final[:, 0::2])
        return logits, model.return_predictions_at(final[:, 1::2]), spread


BLIND_SPREAD = 1e-6
"""A state-embedding spread below this means the encoder's output no longer depends on the
frames (a dead ReLU layer gives exactly one output for every frame): the model is blind."""


def state_spread(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """How much the state embeddings ``[B, T, d]`` of the real steps differ between frames:
    their standard deviation over the batch's steps, averaged over the ``d`` units (0 when
    the encoder gives every frame the same embedding)."""
    real = states[mask].float()  # [n, d]
    if real.shape[0] < 2:
        return torch.zeros((), device=states.device)
    return real.std(dim=0).mean()


def step_seed(seed: int, step: int, *extra: int) -> int:
    """An independent 63-bit seed for ``(seed, step, *extra)``."""
    return int(np.random.SeedSequence([seed, step, *extra]).generate_state(2, np.uint64)[0] >> 1)


def batch_indices(
    windows: Any, seed: int, step: int, batch_size: int, dist: Distributed
) -> np.ndarray:
    """This rank's share of step ``step``'s global batch (the same global batch on any world)."""
    global_batch = windows.sample_indices(np.random.default_rng(step_seed(seed, step)), batch_size)
    return global_batch[dist.rank :: dist.world]


def compute_loss(
    logits: torch.Tensor,
    returns: torch.Tensor | None,
    batch: Contexts,
    *,
    total_valid: torch.Tensor,
    world: int,
    return_weight: float,
    rtg_scale: float,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Cross-entropy on the real steps' actions, normalised by the real steps of the *global*
    batch (times ``world``, as DDP averages gradients over ranks), plus the weighted MSE of
    next-step RTG predictions ``returns`` ``[B, T - 1]`` (at each action token but the last,
    whose target is outside the window). Returns the loss to backpropagate and per-rank sums
    to log."""
    mask, actions = batch.mask, batch.actions
    ce = F.cross_entropy(logits[mask], actions[mask], reduction="sum")
    correct = (logits[mask].argmax(-1) == actions[mask]).sum()
    loss = ce * world / total_valid
    sums = {"ce": ce.detach(), "correct": correct.float()}
    if returns is not None and return_weight > 0:
        both = mask[:, :-1] & mask[:, 1:]  # next step exists and is real
        target = batch.rtg[:, 1:] / rtg_scale
        if returns.shape != target.shape:
            raise ValueError(
                f"returns must be [B, T - 1] {tuple(target.shape)} (each action token but the "
                f"last), got {tuple(returns.shape)}"
            )
        mse = ((returns - target) ** 2)[both].sum()
        loss = loss + return_weight * mse * world / total_valid
        sums["return_mse"] = mse.detach()
    return loss, sums


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag checked between steps (never mid-update)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        self.requested = True

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(
    config: ExperimentConfig,
    run_dir: Path,
    windows: Any,
    dist: Distributed,
    *,
    resume: bool = False,
    progress: bool = True,
    evaluate: Any = None,
) -> TrainResult:
    """Train ``config.model`` on ``windows`` (a ``ContextWindows``) into ``run_dir``.

    ``config`` must be resolved (see ``atari_dt.training.run.prepare``). With ``resume`` the
    newest checkpoint of ``run_dir`` is loaded first. ``evaluate(model, step) -> dict`` (rank 0)
    runs every ``train.eval_every`` steps; its values are logged as metrics.
    """
    from atari_dt.model import HookedDecisionTransformer

    cfg = config.train
    torch.manual_seed(cfg.seed)  # the initial weights
    model = HookedDecisionTransformer(config.model).to(dist.device).train()
    optimizer = make_optimizer(model, cfg)
    start_step = 0
    if dist.is_main:
        remove_stale_checkpoints(run_dir)
    if resume and (checkpoints := list_checkpoints(run_dir)):
        start_step = _resume_from(checkpoints, model, optimizer)
    forward = _TrainingForward(model, predict_returns=cfg.return_loss_weight > 0)
    if dist.active:
        # An untrained return head gets no gradient: DDP must be told to expect that.
        unused = config.model.return_head and cfg.return_loss_weight == 0
        forward = nn.parallel.DistributedDataParallel(forward, find_unused_parameters=unused)
    metrics = MetricsLog(run_dir, start_step=start_step, enabled=dist.is_main)
    try:
        with _StopRequest() as stop:
            return _loop(
                config,
                run_dir,
                windows,
                dist,
                model,
                forward,
                optimizer,
                metrics,
                start_step,
                stop,
                progress,
                evaluate,
            )
    finally:
        metrics.close()


def _resume_from(
    checkpoints: list[tuple[int, Path]], model: nn.Module, optimizer: torch.optim.Optimizer
) -> int:
    """Load the newest checkpoint; returns its step.

    Raises:
        CheckpointError: it is corrupt or altered (the message says how to fall back to the one
            before it, if there is one).
    """
    newest = checkpoints[-1][1]
    try:
        return load_training_state(newest, model, optimizer)["step"]
    except CheckpointError as err:
        older = f"; remove {newest} to resume from {checkpoints[-2][1].name}"
        raise CheckpointError(f"--resume: {err}{older if len(checkpoints) > 1 else ''}") from None


def _loop(
    config: ExperimentConfig,
    run_dir: Path,
    windows: Any,
    dist: Distributed,
    model: nn.Module,
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    metrics: MetricsLog,
    start_step: int,
    stop: _StopRequest,
    progress: bool,
    evaluate: Any,
) -> TrainResult:
    from tqdm.auto import tqdm

    cfg = config.train
    bar = tqdm(
        total=cfg.max_steps,
        initial=start_step,
        disable=not (progress and dist.is_main),
        unit="step",
        dynamic_ncols=True,
    )
    window = _LogWindow()
    checkpoint, last, step = None, {}, start_step
    blind_warned = False
    trainer_state = {"world": dist.world, "metadata": {"data": windows.describe()}}
    while step < cfg.max_steps:
        sums, stop_all = _train_step(config, run_dir, windows, dist, forward, optimizer, step, stop)
        step += 1
        window.add(sums, frames=cfg.batch_size * config.data.context_len)
        if step % cfg.log_every == 0 or step == cfg.max_steps or stop_all:
            last = window.flush(lr=lr_at(step - 1, cfg))
            metrics.log(step, last)
            if last["train/state_spread"] < BLIND_SPREAD and not blind_warned and dist.is_main:
                blind_warned = True
                warnings.warn(
                    f"step {step}: the state encoder gives every frame the same embedding "
                    f"(train/state_spread {last['train/state_spread']:.1e}): a dead ReLU layer; "
                    "the model no longer sees the pixels and cannot recover. Lower train.lr "
                    "(Pong: 2e-4, see configs/train/demo_pong.yaml)",
                    stacklevel=1,
                )
            bar.set_postfix(
                loss=f"{last['train/loss']:.3f}", fps=f"{last['perf/frames_per_s']:.0f}"
            )
        if evaluate is not None and cfg.eval_every and step % cfg.eval_every == 0 and dist.is_main:
            metrics.log(step, evaluate(model, step))
        bar.update(1)
        if step % cfg.checkpoint_every == 0 or step == cfg.max_steps or stop_all:
            # A finite loss can still leave non-finite weights (a huge update): never save them.
            # Before the ranks' checksums, which NaN would make differ.
            if _non_finite_count(model, optimizer, dist) > 0:
                _stop(config, run_dir, step, "the weights or optimiser moments are NaN/inf")
            check_ranks_agree(model, dist)
            if dist.is_main:
                checkpoint = save_training_state(
                    run_dir, step, model, optimizer, trainer_state, keep=cfg.keep_checkpoints
                )
            dist.barrier()
        if stop_all:
            break
    bar.close()
    return TrainResult(run_dir, start_step, step, checkpoint, step < cfg.max_steps, last)


def check_ranks_agree(model: nn.Module, dist: Distributed) -> None:
    """Under DDP, every rank must hold the same weights; compare a checksum of all of them.

    Raises:
        RuntimeError: the ranks' weights differ (a non-deterministic or unsynchronised step).
    """
    if not dist.active:
        return
    with torch.no_grad():
        checksum = torch.stack([p.double().abs().sum() for p in model.parameters()]).sum()
    checksum = checksum.reshape(1).to(dist.device)
    values = [torch.zeros_like(checksum) for _ in range(dist.world)]
    torch.distributed.all_gather(values, checksum)
    if len({float(v) for v in values}) > 1:
        raise RuntimeError(
            f"DDP ranks hold different weights (checksums {[float(v) for v in values]})"
        )


def _non_finite_count(model: nn.Module, optimizer: torch.optim.Optimizer, dist: Distributed) -> int:
    """Non-finite values in the weights and the optimiser state, summed over the ranks (so every
    rank decides alike). One pass over the parameters, only at checkpoints."""
    tensors = list(model.parameters()) + [
        value
        for entries in optimizer.state.values()
        for value in entries.values()
        if torch.is_tensor(value) and value.is_floating_point()
    ]
    with torch.no_grad():
        count = sum(int((~torch.isfinite(t)).sum()) for t in tensors)
    return int(dist.sum(torch.tensor([float(count)]))[0])


def _stop(
    config: ExperimentConfig, run_dir: Path, step: int, problem: str, *, data: bool = False
) -> NoReturn:
    """Raise the ``NonFiniteError`` for optimiser step ``step`` (1-based, as checkpoints and
    metrics count), with the likely cause and the checkpoint a user is left with."""
    cfg = config.train
    if data:
        cause = (
            f"the training data holds NaN/inf rewards or returns-to-go: check the episode store "
            f"with `atari-dt data verify {config.data.path}` and convert it again from good data"
        )
    else:
        bf16 = ", or use train.precision=float32" if cfg.precision == "bfloat16" else ""
        cause = (
            f"the learning rate is likely too high (train.lr={cfg.lr:g}, "
            f"{lr_at(step - 1, cfg):.3g} at this step): lower it (or raise "
            f"train.warmup_steps, keep train.grad_clip > 0{bf16}) and start again with --force"
        )
    saved = list_checkpoints(run_dir)
    kept = f"the last good checkpoint, {saved[-1][1]}, is kept" if saved else "no checkpoint yet"
    raise NonFiniteError(
        f"training stopped at step {step}: {problem}; {cause}. Nothing of this step was saved; "
        f"{kept}"
    )


def _train_step(
    config: ExperimentConfig,
    run_dir: Path,
    windows: Any,
    dist: Distributed,
    forward: nn.Module,
    optimizer: torch.optim.Optimizer,
    step: int,
    stop: _StopRequest,
) -> tuple[dict[str, torch.Tensor], bool]:
    """One optimiser step; returns the global sums to log and whether any rank asked to stop."""
    cfg = config.train
    indices = batch_indices(windows, cfg.seed, step, cfg.batch_size, dist)
    # On CPU the frames come in the layout the encoder's convolutions run in (no copy there).
    batch = windows.get_batch(indices, channels_last=dist.device.type == "cpu").to(dist.device)
    # One all-reduce carries the global count of real steps, any rank's stop request, and the
    # batch's non-finite RTGs (padding is 0): NaN data stops every rank before it is used.
    bad_rtg = (~torch.isfinite(batch.rtg)).sum()
    counts = torch.tensor([float(batch.mask.sum()), float(stop.requested), float(bad_rtg)])
    shared = dist.sum(counts).cpu()
    if shared[2] > 0:
        problem = f"{int(shared[2])} of the batch's returns-to-go are NaN/inf"
        _stop(config, run_dir, step + 1, problem, data=True)
    torch.manual_seed(step_seed(cfg.seed, step, dist.rank, 1))  # this step's dropout
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    with torch.autocast(dist.device.type, torch.bfloat16, enabled=cfg.precision == "bfloat16"):
        logits, returns, spread = forward(batch)
    logits = logits.float()
    returns = None if returns is None else returns.float()
    loss, sums = compute_loss(
        logits,
        returns,
        batch,
        total_valid=shared[0].to(dist.device),
        world=dist.world,
        return_weight=cfg.return_loss_weight,
        rtg_scale=config.model.rtg_scale,
    )
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    clip = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
    grad_norm = nn.utils.clip_grad_norm_(forward.parameters(), clip)
    # One all-reduce of the sums to log and of any rank's non-finite gradient norm, before the
    # update: a NaN loss or gradient stops every rank alike with the weights still good.
    local = [v.float() for v in sums.values()]
    bad_grad = (~torch.isfinite(grad_norm.detach())).float().to(local[0].device)
    packed = dist.sum(torch.stack([*local, bad_grad])).cpu()
    if not torch.isfinite(packed[:-1]).all():
        value = next(float(v) for v in packed[:-1] if not torch.isfinite(v))
        _stop(config, run_dir, step + 1, f"the loss is {value}")
    if packed[-1] > 0:
        _stop(config, run_dir, step + 1, "the loss is finite but its gradient is NaN/inf")
    optimizer.step()
    sums = dict(zip(sums, packed[:-1], strict=True))
    sums["valid"], sums["grad_norm"] = shared[0], grad_norm.detach().cpu()
    sums["state_spread"] = spread.cpu()  # this rank's batch: a diagnostic, not all-reduced
    return sums, bool(shared[1] > 0)


class _LogWindow:
    """Accumulates per-step sums between two log lines."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.totals: dict[str, float] = {}
        self.steps, self.frames, self.started = 0, 0, time.perf_counter()

    def add(self, sums: dict[str, torch.Tensor], *, frames: int) -> None:
        for key, value in sums.items():
            self.totals[key] = self.totals.get(key, 0.0) + float(value)
        self.steps += 1
        self.frames += frames

    def flush(self, *, lr: float) -> dict[str, float]:
        valid = max(self.totals["valid"], 1.0)
        values = {
            "train/loss": self.totals["ce"] / valid,
            "train/action_accuracy": self.totals["correct"] / valid,
            "train/grad_norm": self.totals["grad_norm"] / self.steps,
            "train/state_spread": self.totals["state_spread"] / self.steps,
            "train/lr": lr,
            "perf/frames_per_s": self.frames / (time.perf_counter() - self.started),
        }
        if "return_mse" in self.totals:
            values["train/return_mse"] = self.totals["return_mse"] / valid
        self._reset()
        return values
