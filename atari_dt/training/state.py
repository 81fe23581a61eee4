"""Resumable training checkpoints, pickle-free: a directory per step holding the model (as
``save_pretrained`` writes it), the optimiser's tensors (``optimizer.safetensors``) and the rest
of the trainer's state (``trainer_state.json``), and ``checksums.json`` (the SHA-256 of each,
written last). Written whole in a temporary sibling, then renamed, so a killed run never leaves
a checkpoint that looks complete but is not; resuming verifies every file, so a corrupt one is
refused instead of trained on.

RNG and sampler state need no storing: every step seeds its batch sampler and dropout from
``(seed, step, rank)``, so the step number is the whole state.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from atari_dt.io import atomic_directory, remove_stale_temporaries
from atari_dt.model.checkpoint import (
    CONFIG,
    METADATA,
    WEIGHTS,
    CheckpointError,
    check_state_dict,
    read_weights,
    verify_checksums,
    write_checksums,
    write_model_files,
)

CHECKPOINTS = "checkpoints"
OPTIMIZER = "optimizer.safetensors"
TRAINER_STATE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d{8})$")


def checkpoint_dir(run_dir: Path, step: int) -> Path:
    return run_dir / CHECKPOINTS / f"step_{step:08d}"


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """``(step, directory)`` of every complete checkpoint of a run, oldest first."""
    root = run_dir / CHECKPOINTS
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / TRAINER_STATE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def remove_stale_checkpoints(run_dir: Path) -> list[Path]:
    """Delete half-written checkpoints left by a killed run (their writer no longer runs)."""
    root = run_dir / CHECKPOINTS
    removed: list[Path] = []
    for temporary in root.glob(".step_*.tmp") if root.is_dir() else []:
        name = temporary.name[1:].split(".", 1)[0]  # ".step_00000010.<pid>.tmp"
        removed += remove_stale_temporaries(root / name)
    return removed


def save_training_state(
    run_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    trainer_state: dict[str, Any],
    *,
    keep: int,
) -> Path:
    """Write checkpoint ``step`` (the model, the optimiser, ``trainer_state``) and delete all
    but the newest ``keep`` checkpoints."""
    from safetensors.torch import save_file

    directory = checkpoint_dir(run_dir, step)
    tensors, layout = _flatten_optimizer(optimizer)
    with atomic_directory(directory) as tmp:
        write_model_files(model, tmp, metadata={"step": step, **trainer_state.get("metadata", {})})
        save_file(tensors, str(tmp / OPTIMIZER))
        state = {"step": step, "optimizer": layout, **trainer_state}
        (tmp / TRAINER_STATE).write_text(json.dumps(state, indent=2) + "\n")
        write_checksums(tmp)  # last: it covers every file above
    for _, old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return directory


def load_training_state(
    directory: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict[str, Any]:
    """Fill ``model`` and ``optimizer`` from a checkpoint directory; returns its trainer state.
    Nothing is filled unless every check passes.

    Raises:
        CheckpointError: a tensor missing or of the wrong shape, an optimiser that does not
            match (other parameter groups), a file whose SHA-256 differs from the checkpoint's
            ``checksums.json``, or a ``trainer_state.json`` whose step is not the one its
            directory is named after; naming the file.
    """
    weights = read_weights(directory / WEIGHTS)
    check_state_dict(weights, model.state_dict(), source=str(directory / WEIGHTS))
    state = _read_trainer_state(directory)
    tensors = read_weights(directory / OPTIMIZER)
    optimizer_state = _unflatten_optimizer(tensors, state["optimizer"], optimizer, directory)
    verify_checksums(directory, required=(WEIGHTS, CONFIG, METADATA, OPTIMIZER, TRAINER_STATE))
    model.load_state_dict(weights)
    optimizer.load_state_dict(optimizer_state)
    return state


def _read_trainer_state(directory: Path) -> dict[str, Any]:
    """``trainer_state.json``, its step checked against the directory's name: the step is the
    whole RNG and sampler state, so a wrong one would silently resume a different run."""
    path = directory / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CheckpointError(f"{path}: no integer 'step' (not a training checkpoint's state)")
    if not isinstance(state.get("optimizer"), dict) or "param_groups" not in state["optimizer"]:
        raise CheckpointError(f"{path}: no 'optimizer' layout (not a training checkpoint's state)")
    match = _STEP_DIR.match(directory.name)
    if match and int(match.group(1)) != state["step"]:
        raise CheckpointError(
            f"{path}: step {state['step']}, but its directory {directory.name} is step "
            f"{int(match.group(1))}: the checkpoint was altered"
        )
    return state


def _flatten_optimizer(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """The optimiser state dict as named tensors plus a JSON layout (hyperparameters)."""
    state_dict = optimizer.state_dict()
    tensors = {
        f"state.{index}.{key}": value.detach().cpu().contiguous()
        for index, entries in state_dict["state"].items()
        for key, value in entries.items()
    }
    return tensors, {"param_groups": state_dict["param_groups"]}


def _unflatten_optimizer(
    tensors: dict[str, torch.Tensor], layout: dict, optimizer: torch.optim.Optimizer, where: Path
) -> dict:
    groups = layout["param_groups"]
    expected = [len(g["params"]) for g in optimizer.state_dict()["param_groups"]]
    if [len(g["params"]) for g in groups] != expected:
        raise CheckpointError(
            f"{where / OPTIMIZER}: parameter groups of sizes {[len(g['params']) for g in groups]}, "
            f"the model needs {expected}"
        )
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = tensor
    return {"state": state, "param_groups": groups}
