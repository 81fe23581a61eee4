"""The study's on-disk cache: each finished part is pickled under a key of everything it
depends on (the model's weights, the data's fingerprint, the part's own settings), so a re-run
with the same inputs reuses it, an interrupted study resumes from its finished parts, and a
changed input recomputes only what depends on it. ``computed`` and ``reused`` say which
parts ran; ``force`` recomputes all."""

from __future__ import annotations

import hashlib
import json
import pickle
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from atari_dt.io import atomic_write_bytes

T = TypeVar("T")
FORMAT = 2  # bump when a cached result type, or what a part computes, changes


def model_digest(model: Any) -> str:
    """SHA-256 of every parameter and buffer of ``model`` (names, shapes, dtypes, bytes)."""
    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(value.shape)}:{value.dtype}".encode())
        digest.update(value.view(-1).view(dtype=torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class StudyCache:
    """Parts of a study, pickled in ``directory`` under ``{name}-{key}.pkl`` (a name's
    ``@...`` suffix, e.g. the target of ``rollouts@800.0``, is for display and in the key).
    Parts of older inputs stay until ``force`` clears them."""

    def __init__(self, directory: Path, identity: dict[str, Any], *, force: bool = False) -> None:
        self.directory, self.identity, self.force = Path(directory), identity, force
        self.computed: list[str] = []
        self.reused: list[str] = []
        if force:  # every part is recomputed: older inputs' parts go too
            for old in self.directory.glob("*.pkl"):
                old.unlink()

    def key(self, name: str, params: dict[str, Any]) -> str:
        """The part's file key: SHA-256 of the identity, the name and the parameters."""
        payload = {"format": FORMAT, "identity": self.identity, "name": name, "params": params}
        text = json.dumps(payload, sort_keys=True, default=repr)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def get(self, name: str, params: dict[str, Any], compute: Callable[[], T]) -> T:
        """The cached part ``name`` for ``params``, or ``compute()`` saved for next time. A
        cache file that cannot be read is recomputed (with a warning), never trusted."""
        path = self.directory / f"{name.split('@')[0]}-{self.key(name, params)}.pkl"
        if path.exists() and not self.force:
            try:
                value = pickle.loads(path.read_bytes())
            except Exception as err:
                warnings.warn(
                    f"study cache {path} is unreadable ({err}); recomputing", stacklevel=2
                )
            else:
                self.reused.append(name)
                return value
        value = compute()
        self.directory.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
        self.computed.append(name)
        return value
