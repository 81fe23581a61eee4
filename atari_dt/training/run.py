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
from atari_dt.errors import UserError
from atari_dt.io import atomic_write_bytes, describe_entries, is_stale_temporary, refuse_to_replace
from atari_dt.model.config import ModelConfig
from atari_dt.training.config import ExperimentConfig

RUN_CONFIG = "config.yaml"


def resolve_config(
    config: ExperimentConfig, windows: Any, n_actions: int | None
) -> ExperimentConfig:
    """The config with what the data decides filled in: ``model.n_actions`` (``auto``: the
    store's ``n_actions``; a number is checked against it), ``model.context_len`` from
    ``data.context_len``, ``model.rtg_scale`` from ``train.rtg_scale`` (``auto``: the training
    episodes' max return), and a checked ``max_timestep``. (Whether a step fits in memory is
    ``check_step_memory``'s, which needs no data: ``atari-dt train`` asks it first.)

    Raises:
        ConfigError: the store's action count differs from ``model.n_actions``, ``auto`` with a
            store that records no count, or its longest episode does not fit
            ``model.max_timestep`` (the message says what to set).
    """
    model = dataclasses.replace(config.model, n_actions=_n_actions(config.model, n_actions))
    default_len = ModelConfig.__dataclass_fields__["context_len"].default
    if model.context_len not in (default_len, config.data.context_len):
        raise ConfigError(  # an explicit model.context_len that the data's T would override
            f"model.context_len={model.context_len} disagrees with data.context_len="
            f"{config.data.context_len}: the model is sized for the windows it trains on, so T "
            "comes from data.context_len; set that one (and drop model.context_len)"
        )
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


def check_step_memory(config: ExperimentConfig, available: int | None = None) -> None:
    """Refuse a config whose training step cannot fit: the activation memory of one step
    (``atari_dt.limits.train_step_bytes``: batch, T, frames, encoder, d_model, layers) against
    the ``available`` bytes (None: free on ``train.device``). The model's sizes are read from
    ``model`` with T from ``data.context_len``, so this also works before ``resolve_config``
    (nothing of the data is needed). A global batch over several CUDA devices is split between
    them; ranks sharing the host's RAM hold the host's share together.

    Raises:
        UserError: the estimate, what is available, and what to lower.
    """
    import os

    from atari_dt.limits import batch_on_this_host, check_memory, device_memory, train_step_bytes

    model = dataclasses.replace(config.model, context_len=config.data.context_len)
    batch, device = config.train.batch_size, config.train.device
    free = device_memory(device) if available is None else available
    on_cuda = device.startswith("cuda") or (device == "auto" and _cuda_available())
    if on_cuda:
        batch = -(-batch // int(os.environ.get("WORLD_SIZE", "1")))
    else:
        batch = batch_on_this_host(batch)
    check_memory(
        f"a training step of batch {batch} x T {model.context_len} ({model.n_layers} layers x "
        f"d_model {model.d_model}, {model.encoder} encoder)",
        train_step_bytes(model, batch),
        free,
        hint="lower train.batch_size (or data.context_len, model sizes)",
    )


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _n_actions(model: ModelConfig, in_store: int | None) -> int:
    """``model.n_actions`` resolved against the store's action count (None: not recorded)."""
    if in_store is not None and in_store < 1:
        raise ConfigError(
            f"the episode store records n_actions={in_store}, which no game has: its "
            "attributes are damaged; rewrite it (atari-dt data convert / collect)"
        )
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


# What makes a directory a run (either is enough): `--force` deletes nothing else.
RUN_MARKERS = (RUN_CONFIG, "checkpoints")


def check_run_dir(run_dir: Path, *, resume: bool, force: bool, data: Path | None = None) -> bool:
    """Check that ``run_dir`` may be used as asked, deleting nothing; returns whether
    :func:`claim_run_dir` will delete what is in it (``force`` over an existing run).

    Args:
        run_dir: the run directory (``--out``).
        resume, force: ``--resume`` / ``--force``.
        data: the training data; ``force`` is refused if it lies inside ``run_dir``.

    Raises:
        FileNotFoundError: ``resume`` of a directory that holds no run.
        NotADirectoryError: ``run_dir`` is a file.
        FileExistsError: ``run_dir`` holds a run and neither ``resume`` nor ``force`` is set.
        UserError: ``run_dir`` holds something that is not a run, or (``force``) the data.
    """
    if resume:
        if not (run_dir / RUN_CONFIG).is_file():
            raise FileNotFoundError(f"--resume: {run_dir} holds no run to resume")
        return False
    if run_dir.exists() and not run_dir.is_dir():
        raise NotADirectoryError(f"--out {run_dir} is a file; a run is a directory")
    # Debris of a killed write (a conversion into the run, say) is as good as nothing.
    entries = (
        [p for p in run_dir.iterdir() if not is_stale_temporary(p)] if run_dir.is_dir() else []
    )
    if not entries:
        return False
    if not any((run_dir / marker).exists() for marker in RUN_MARKERS):
        found = f"no {' or '.join(RUN_MARKERS)}; it holds {describe_entries(run_dir)}"
        raise refuse_to_replace(run_dir, "a training run", found)
    if not force:
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume or --force")
    if data is not None and _inside(data, run_dir):
        raise UserError(
            f"--force would delete {run_dir}, which holds the training data {data}; "
            "nothing was deleted. Write the run elsewhere (--out) or move the data out first"
        )
    return True


def _inside(path: Path, directory: Path) -> bool:
    path, directory = path.resolve(), directory.resolve()
    return path == directory or directory in path.parents


def claim_run_dir(run_dir: Path, *, resume: bool, force: bool, data: Path | None = None) -> None:
    """Make ``run_dir`` ready (rank 0 only): new, emptied (``force``), or kept (``resume``),
    after the checks of :func:`check_run_dir` (raised as there, before anything is deleted)."""
    if check_run_dir(run_dir, resume=resume, force=force, data=data):
        shutil.rmtree(run_dir)
    if not resume:
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
    try:
        values = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(
            f"{path}: not valid YAML ({' '.join(str(err).split())}); the run's config was "
            "edited or damaged: restore it, or retrain"
        ) from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected the run's config sections, got {values!r:.60}")
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
    check_finite_weights(model, directory)
    return model, read_metadata(directory) or {"step": step}


def check_finite_weights(model: Any, where: Path) -> None:
    """Refuse a model with NaN or infinite weights (a diverged run): every result of it would
    be NaN, and sampling from it fails deep inside torch.

    Raises:
        UserError: naming the first non-finite parameter and the checkpoint.
    """
    import torch

    from atari_dt.errors import UserError

    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            bad = int((~torch.isfinite(param)).sum())
            raise UserError(
                f"{where}: parameter {name} has {bad} non-finite values (NaN or inf): the run "
                "diverged before this checkpoint; use an earlier one or retrain"
            )
