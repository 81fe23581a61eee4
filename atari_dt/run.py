"""A trained run opened for analysis: ``load_run(dir)`` gives its model, config, episode store
and context windows, from any working directory.

Training records the store's absolute path and fingerprint in ``store.json`` beside the run's
config. Opening a run finds the store there, or at ``data=`` when it moved, and refuses a store
whose content changed (its fingerprint differs), naming both and how to point at the right one.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from atari_dt.errors import UserError
from atari_dt.io import atomic_write_bytes

if TYPE_CHECKING:
    from atari_dt.datasets.contexts import Contexts
    from atari_dt.datasets.store import EpisodeStore
    from atari_dt.model.hooked_dt import HookedDecisionTransformer
    from atari_dt.training.config import ExperimentConfig

STORE_RECORD = "store.json"


@dataclass(frozen=True)
class Run:
    """A training run: ``model`` (the newest checkpoint, in ``eval()``), its resolved
    ``config``, the open episode ``store`` it was trained on and the checkpoint's
    ``metadata`` (step, the training data's description). Close it (or use ``with``) to
    close the store."""

    directory: Path
    config: ExperimentConfig
    model: HookedDecisionTransformer
    store: EpisodeStore
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def game(self) -> str:
        return self.store.game

    @property
    def train_episodes(self) -> np.ndarray:
        """Store indices ``[E']`` of the episodes the run trained on (its data selection)."""
        from atari_dt.datasets.windows import select_episodes

        data = self.config.data
        return select_episodes(
            self.store.returns,
            self.store.complete,
            include_incomplete=data.include_incomplete,
            max_return_quantile=data.max_return_quantile,
        )

    @property
    def train_returns(self) -> np.ndarray:
        """Returns ``[E']`` of the training episodes, in the run's reward units."""
        return self.store.returns[self.train_episodes]

    def contexts(self, episode: Any, step: Any) -> Contexts:
        """The window(s) ending at ``step`` of ``episode`` (store numbering; ints or arrays of
        one length), cut as the run's training cut them, on the model's device.

        Raises:
            IndexError: no such episode or step (the message gives the valid range).
        """
        data = self.config.data
        contexts = self.store.contexts(
            episode, step, context_len=data.context_len, stack_size=data.stack_size
        )
        return contexts.to(self.model.device)

    def sample_contexts(self, n: int, *, seed: int = 0) -> Contexts:
        """``n`` windows drawn from the training episodes as training draws them (with
        replacement, sorted by store row), on the model's device."""
        data = self.config.data
        contexts = self.store.sample_contexts(
            n,
            context_len=data.context_len,
            stack_size=data.stack_size,
            seed=seed,
            sampling=data.sampling,
            episodes=self.train_episodes,
        )
        return contexts.to(self.model.device)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_run(
    run_dir: str | Path, *, data: str | Path | None = None, device: str | None = None
) -> Run:
    """Open a training run from any directory.

    Args:
        run_dir: the directory ``atari-dt train`` wrote (``config.yaml``, ``checkpoints/``).
        data: the episode store, when it is no longer where the run recorded it (moved).
        device: where the model goes (default: ``cuda`` when available, else ``cpu``).

    Raises:
        FileNotFoundError: not a run, or no checkpoint yet.
        UserError: the store is missing, or differs from the one the run trained on.
    """
    import torch

    from atari_dt.datasets.store import EpisodeStore
    from atari_dt.training.run import load_run_config, load_run_model

    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    record = _read_record(run_dir)  # read once: where the store is, and what it must hold
    path = find_store(run_dir, config.data.path, data, record=record)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, metadata = load_run_model(run_dir, device=device)
    store = EpisodeStore.open(path, reward_units=config.data.reward_units)
    try:
        _check_fingerprint(run_dir, record, store, explicit=data is not None)
    except BaseException:
        store.close()
        raise
    return Run(run_dir, config, model, store, metadata)


def record_store(run_dir: Path, store_path: str | Path, *, resume: bool = False) -> None:
    """Write ``store.json`` into a run: the store's absolute path, its path relative to the run
    (found again when both move together) and its fingerprint.

    Raises:
        UserError: ``resume`` with a store whose content differs from the recorded one (a
            resumed run would train on other data than it began with).
    """
    import os

    from atari_dt.datasets.store import EpisodeStore

    with EpisodeStore.open(store_path) as store:
        fingerprint = store.fingerprint()
    previous = _read_record(run_dir) if resume else None
    if previous is not None and previous.get("fingerprint", fingerprint) != fingerprint:
        raise UserError(
            f"--resume: the episode store {store_path} is not the one {run_dir} began training "
            f"on ({previous['path']}); resume with that data"
        )
    absolute = Path(store_path).resolve()
    record = {
        "path": str(absolute),
        "relative_to_run": os.path.relpath(absolute, Path(run_dir).resolve()),
        "fingerprint": fingerprint,
    }
    atomic_write_bytes(Path(run_dir) / STORE_RECORD, json.dumps(record, indent=2).encode())


def find_store(
    run_dir: Path,
    configured: str | None,
    data: str | Path | None = None,
    *,
    record: dict[str, Any] | None,
) -> Path:
    """The episode store of a run: ``data`` when given, else the path in the run's store
    ``record`` (``store.json``; beside the run when both moved), else (runs made before
    ``store.json``) the configured path, tried as given and beside the run.

    Raises:
        UserError: no such file (the message names where it looked and how to point at it).
    """
    if data is not None:
        if not Path(data).is_file():
            raise UserError(f"episode store not found: {data}")
        return Path(data)
    hint = f"pass its new place: load_run({str(run_dir)!r}, data=PATH) or --data PATH"
    if record is not None:
        path = Path(record["path"])
        beside = record.get("relative_to_run")
        if not path.is_file() and beside and (run_dir / beside).is_file():
            path = run_dir / beside  # the run moved with its data (the fingerprint confirms)
        if not path.is_file():
            raise UserError(
                f"the episode store {run_dir} was trained on, {path}, is gone "
                f"(moved or deleted); {hint}"
            )
        return path
    if configured is None:
        raise UserError(f"{run_dir} records no episode store; {hint}")
    tried = [Path(configured), run_dir / configured, run_dir.parent / configured]
    for path in tried:
        if path.is_file():
            return path
    raise UserError(
        f"the episode store of {run_dir}, {configured}, is not at "
        f"{', '.join(map(str, dict.fromkeys(tried)))}; {hint}"
    )


def _read_record(run_dir: Path) -> dict[str, Any] | None:
    path = Path(run_dir) / STORE_RECORD
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict) or not isinstance(record.get("path"), str):
            raise ValueError("no path")
        if not isinstance(record.get("fingerprint", {}), dict):
            raise ValueError("the fingerprint is not a mapping")
    except ValueError as err:
        raise UserError(
            f"{path} is not a store record ({err}); delete it and pass --data"
        ) from None
    return record


def _check_fingerprint(
    run_dir: Path, record: dict[str, Any] | None, store: EpisodeStore, *, explicit: bool
) -> None:
    if record is None or "fingerprint" not in record:
        return
    expected, actual = record["fingerprint"], store.fingerprint()
    if expected == actual:
        return
    differs = [k for k in sorted(set(expected) | set(actual)) if expected.get(k) != actual.get(k)]
    message = (
        f"the episode store {store.path} is not the one {run_dir} was trained on "
        f"({record['path']}): {', '.join(differs)} differ"
    )
    if explicit:  # the user chose this store on purpose: say so, do not refuse
        warnings.warn(message, stacklevel=3)
        return
    raise UserError(
        f"{message}; it changed since training. Point at the training data with "
        f"load_run({str(run_dir)!r}, data=PATH) or --data PATH"
    )
