"""Model checkpoints: a directory with ``model.safetensors`` (tensors, no pickle) and
``config.json`` (the ``ModelConfig``), plus an optional ``metadata.json`` (e.g. training step,
data), and ``checksums.json`` (the SHA-256 of every other file, written last). Written
atomically; on load every tensor is checked against the config and every file against its
checksum, so a flipped byte is refused instead of loaded."""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from atari_dt.config import ConfigError, config_from_dict, config_to_dict
from atari_dt.errors import UserError
from atari_dt.io import atomic_directory, atomic_write_json
from atari_dt.model.config import ModelConfig

FORMAT = "atari-dt/model"
VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
METADATA = "metadata.json"
CHECKSUMS = "checksums.json"
CHECKSUMS_FORMAT = "atari-dt/checksums"
FILES = (WEIGHTS, CONFIG, METADATA, CHECKSUMS)


class CheckpointError(UserError):
    """A checkpoint directory is missing, corrupt, or does not match its config."""


def save_pretrained(
    model: torch.nn.Module,
    directory: str | Path,
    *,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the model to ``directory`` (made whole in a temporary sibling, then renamed).

    Raises:
        FileExistsError: ``directory`` exists and ``overwrite`` is False, or it holds files
            other than a checkpoint's (they are never deleted).
    """
    directory = Path(directory)
    _check_writable(directory, overwrite)
    with atomic_directory(directory) as tmp:
        write_model_files(model, tmp, metadata=metadata)
        write_checksums(tmp)
    return directory


def write_model_files(
    model: torch.nn.Module, directory: Path, *, metadata: dict[str, Any] | None = None
) -> None:
    """``model.safetensors``, ``config.json`` (and ``metadata.json``) into an existing
    directory that the caller makes atomic (training checkpoints add their own files) and
    finishes with ``write_checksums``."""
    from safetensors.torch import save_file

    model = getattr(model, "module", model)  # a DDP wrapper saves the model inside
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    header = {"format": FORMAT, "version": VERSION, "config": config_to_dict(model.cfg)}
    save_file(tensors, str(directory / WEIGHTS), metadata={"format": FORMAT})
    (directory / CONFIG).write_text(json.dumps(header, indent=2) + "\n")
    if metadata is not None:
        (directory / METADATA).write_text(json.dumps(metadata, indent=2) + "\n")


def _check_writable(directory: Path, overwrite: bool) -> None:
    if not directory.exists():
        return
    if not directory.is_dir():
        raise FileExistsError(f"{directory} exists and is not a directory")
    foreign = sorted(p.name for p in directory.iterdir() if p.name not in FILES)
    if foreign:
        raise FileExistsError(
            f"{directory} holds files that are not part of a model checkpoint "
            f"({', '.join(foreign[:5])}); save into a new or dedicated directory"
        )
    if any(directory.iterdir()) and not overwrite:
        raise FileExistsError(f"{directory} already holds a checkpoint; pass overwrite=True")


def read_config(directory: str | Path) -> ModelConfig:
    """The ``ModelConfig`` of a checkpoint directory.

    Raises:
        FileNotFoundError: no such directory or no ``config.json`` in it.
        CheckpointError: the file is not JSON or not an atari-dt model config, or its
            ``n_actions`` is not a number.
        ConfigError: unknown keys or wrong types in the config.
    """
    path = Path(directory) / CONFIG
    if not Path(directory).is_dir():
        raise FileNotFoundError(f"no checkpoint directory at {directory}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: {directory} is not a model checkpoint")
    try:
        header = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an atari-dt model config (format {FORMAT!r} expected)")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path}: version {header.get('version')!r}, expected {VERSION}")
    if not isinstance(header.get("config"), dict):
        raise CheckpointError(f"{path}: no 'config' mapping (the model's settings)")
    try:
        config = config_from_dict(ModelConfig, header["config"], where="model")
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
    if config.n_actions == "auto":  # written by hand: save_pretrained writes the number
        raise CheckpointError(f"{path}: n_actions is 'auto'; a checkpoint holds the number")
    return config


def read_metadata(directory: str | Path) -> dict[str, Any] | None:
    """The checkpoint's ``metadata.json``, or None when it has none."""
    path = Path(directory) / METADATA
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err


def load_weights(model: torch.nn.Module, directory: str | Path) -> None:
    """Fill a model built from the checkpoint's config with its ``model.safetensors``.

    The caller builds the model (``HookedDecisionTransformer.from_pretrained`` does), so this
    module never imports the model module back.

    Raises:
        FileNotFoundError: no ``model.safetensors`` in ``directory``.
        CheckpointError: corrupt weights, or a tensor missing, unexpected, or of the wrong
            shape or dtype for the model (the first mismatch is named).
    """
    path = Path(directory) / WEIGHTS
    tensors = read_weights(path)
    check_state_dict(tensors, model.state_dict(), source=str(path))
    # Checked after the structure, whose errors say more ("tensor 'W_U' has shape ..."); before
    # the model is filled, so a refused checkpoint leaves it as it was.
    verify_checksums(directory, required=(WEIGHTS, CONFIG, METADATA))
    model.load_state_dict(tensors, strict=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksums(directory: Path) -> None:
    """Record the SHA-256 of every file of ``directory`` in its ``checksums.json``.

    Call it last, inside the ``atomic_directory`` block that writes the checkpoint: the
    directory appears whole with its checksums or not at all.
    """
    directory = Path(directory)
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != CHECKSUMS)
    record = {
        "format": CHECKSUMS_FORMAT,
        "version": 1,
        "sha256": {p.name: _sha256(p) for p in files},
    }
    atomic_write_json(directory / CHECKSUMS, record)


def verify_checksums(directory: str | Path, *, required: Iterable[str]) -> bool:
    """Check every file ``checksums.json`` lists against its SHA-256; returns False (with a
    warning) for a checkpoint written before checkpoints carried checksums.

    ``required``: the files the caller reads; each one present must be listed (one added after
    the checkpoint was written is as unverified as a changed one).

    Raises:
        CheckpointError: a listed file changed or is missing, a required file is not listed,
            or ``checksums.json`` itself is unreadable; naming the file.
    """
    directory = Path(directory)
    path = directory / CHECKSUMS
    if not path.is_file():
        warnings.warn(
            f"{directory} has no {CHECKSUMS} (written before checkpoints carried checksums): "
            "loaded without verifying its files; save it again to add them",
            stacklevel=3,
        )
        return False
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    sums = record.get("sha256") if isinstance(record, dict) else None
    if (
        not isinstance(sums, dict)
        or record.get("format") != CHECKSUMS_FORMAT
        or any(Path(name).name != name for name in sums)  # names in this directory only
    ):
        raise CheckpointError(f"{path}: not an atari-dt checksum file ({CHECKSUMS_FORMAT!r})")
    for name in required:
        if name not in sums and (directory / name).exists():
            raise CheckpointError(
                f"{directory / name}: not in {CHECKSUMS}, so added after the checkpoint was "
                "written; remove it or use another checkpoint"
            )
    for name, expected in sorted(sums.items()):
        file = directory / name
        if not file.is_file():
            raise CheckpointError(f"{file} is missing (listed in {path})")
        if _sha256(file) != expected:
            raise CheckpointError(
                f"{file}: its SHA-256 differs from the one in {CHECKSUMS}: one of them "
                "changed after the checkpoint was written (a corrupt copy or disk); use another "
                "checkpoint or a good copy of this one"
            )
    return True


def read_weights(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (no pickle: nothing in it can run code)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err


def check_state_dict(
    tensors: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], *, source: str
) -> None:
    """Every expected tensor present with the expected shape and dtype, nothing extra.

    Raises:
        CheckpointError: naming the first missing, unexpected or mismatched tensor.
    """
    for name, want in expected.items():
        if name not in tensors:
            raise CheckpointError(f"{source}: tensor {name!r} {list(want.shape)} is missing")
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(
                f"{source}: tensor {name!r} has shape {list(got.shape)}, the config needs "
                f"{list(want.shape)}"
            )
        if got.dtype != want.dtype:
            raise CheckpointError(
                f"{source}: tensor {name!r} is {got.dtype}, expected {want.dtype}"
            )
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise CheckpointError(
            f"{source}: unexpected tensor {extra[0]!r} ({len(extra)} not in the config's model)"
        )
