"""A training run from a config: find the data, size the model from it, check the run
directory, save the resolved config, train. Shared by ``atari-dt train`` and
``torchrun -m atari_dt.training``."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import Any

import yaml

from atari_dt.config import ConfigError, config_from_dict, config_to_dict
from atari_dt.io import atomic_write_bytes
from atari_dt.model.config import ModelConfig
from atari_dt.training.config import ExperimentConfig

RUN_CONFIG = "config.yaml"


def resolve_config(
    config: ExperimentConfig, windows: Any, n_actions: int | None
) -> ExperimentConfig:
    """The config with what the data decides filled in: ``model.n_actions`` (``auto``: the
    store's ``n_actions``; a number is checked against it), ``model.context_len`` from
    ``data.context_len``, ``model.rtg_scale`` from ``train.rtg_scale`` (``auto``: the training
    episodes' max return), and a checked ``max_timestep``.

    Raises:
        ConfigError: the store's action count differs from ``model.n_actions``, ``auto`` with a
            store that records no count, or its longest episode does not fit
            ``model.max_timestep`` (the message says what to set).
    """
    model = dataclasses.replace(config.model, n_actions=_n_actions(config.model, n_actions))
    if config.train.return_loss_weight > 0 and not model.return_head:
        raise ConfigError(
            "train.return_loss_weight > 0 needs a return head: set --set model.return_head=true"
        )
    longest = int(windows.lengths.max())
    if longest > model.max_timestep:
        raise ConfigError(
            f"the longest training episode has {longest} steps but model.max_timestep="
            f"{model.max_timestep}; set --set model.max_timestep={longest}"
        )
    scale = config.train.rtg_scale
    if scale == "auto":
        scale = max(1.0, float(abs(windows.returns).max()))
    model = dataclasses.replace(model, context_len=config.data.context_len, rtg_scale=float(scale))
    return dataclasses.replace(config, model=model)


def _n_actions(model: ModelConfig, in_store: int | None) -> int:
    """``model.n_actions`` resolved against the store's action count (None: not recorded)."""
    if model.n_actions == "auto":
        if in_store is None:
            raise ConfigError(
                "model.n_actions is 'auto' but the episode store records no action count "
                "(its game is unknown to ALE); set --set model.n_actions=N"
            )
        return in_store
    if in_store is not None and in_store != model.n_actions:
        raise ConfigError(
            f"the episode store has {in_store} actions but model.n_actions={model.n_actions}; "
            f"leave model.n_actions at auto (the store's count) or set "
            f"--set model.n_actions={in_store}"
        )
    return model.n_actions


def claim_run_dir(run_dir: Path, *, resume: bool, force: bool) -> None:
    """Make ``run_dir`` ready (rank 0 only): new, emptied (``force``), or kept (``resume``).

    Raises:
        FileExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``force`` is set.
        FileNotFoundError: ``resume`` of a directory that holds no run.
    """
    if resume:
        if not (run_dir / RUN_CONFIG).is_file():
            raise FileNotFoundError(f"--resume: {run_dir} holds no run to resume")
        return
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume or --force")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


def save_or_check_config(run_dir: Path, config: ExperimentConfig, *, resume: bool) -> None:
    """Save the resolved config of a new run; on resume, refuse a different one (naming the
    keys that differ), since a step is only reproducible under the same config.

    Raises:
        ConfigError: resuming with a config other than the run's.
    """
    saved = run_dir / RUN_CONFIG
    if not resume:
        atomic_write_bytes(saved, yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())
        return
    differences = _differences(config_to_dict(load_run_config(run_dir)), config_to_dict(config))
    if differences:
        raise ConfigError(
            f"--resume: the config differs from {saved} at {', '.join(differences[:5])}; "
            "resume with the run's own config"
        )


def load_run_config(run_dir: Path) -> ExperimentConfig:
    """The resolved config a run was trained with.

    Raises:
        FileNotFoundError: ``run_dir`` is not a training run.
    """
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a training run (no {RUN_CONFIG})")
    values = yaml.safe_load(path.read_text())
    if isinstance(values, dict):
        # Runs saved before collection got its own config file carry its defaults as a
        # `collect` section; training never read it.
        values.pop("collect", None)
    try:
        return config_from_dict(ExperimentConfig, values)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _differences(a: Any, b: Any, where: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{where}{k}.")]
    return [] if a == b else [f"{where.rstrip('.')} ({a!r} vs {b!r})"]


def load_run_model(run_dir: Path, *, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """The newest checkpoint's model of a run (in ``eval()``) and its metadata (``step`` and
    ``data``: the training data's description, with its game and return ranges).

    Raises:
        FileNotFoundError: ``run_dir`` is not a run or has no checkpoint yet.
    """
    from atari_dt.model.checkpoint import read_metadata
    from atari_dt.model.hooked_dt import HookedDecisionTransformer
    from atari_dt.training.state import list_checkpoints

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        raise FileNotFoundError(f"{run_dir} has no checkpoint (train it first: atari-dt train)")
    step, directory = checkpoints[-1]
    model = HookedDecisionTransformer.from_pretrained(directory, device=device)
    return model, read_metadata(directory) or {"step": step}
