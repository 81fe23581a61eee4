"""The episode store: one HDF5 file per dataset, each frame stored once.

Layout (format ``atari-dt/episode-store``, version 1; readable with plain h5py)::

    /frames              uint8   [N, H, W]   one frame per transition, chunked, optionally gzip'd
    /actions             int32   [N]
    /rewards             float32 [N]         clipped to [-1, 1] (the DQN-replay convention)
    /terminals           uint8   [N]         1 on the last transition of an episode that ended
    /rtg                 float32 [N]         return-to-go of /rewards within each episode
    /raw_rewards         float32 [N]         optional: game score change, when known
    /raw_rtg             float32 [N]         optional: return-to-go of /raw_rewards
    /ram                 uint8   [N, 128]    optional: Atari RAM at each transition
    /objects/<name>      float32 [N, 2]      optional: (x, y) of a game object in frame pixels
    /episodes/offset     int64   [E]         first transition of each episode
    /episodes/length     int64   [E]
    /episodes/return     float32 [E]         sum of /rewards
    /episodes/raw_return float32 [E]         optional: sum of /raw_rewards
    /episodes/complete   bool    [E]         False if cut at either end (not trained on by default)
    /episodes/behaviour  string  [E]         optional: JSON, how each episode was played

Root attributes: ``format``, ``format_version``, ``finalized`` (True once fully written),
``game``, ``n_actions``, and JSON strings ``source``, ``preprocessing``, ``behaviour_policy``
and (for collected data) ``collection`` (seed, target and collected steps, episodes).
Transition ``i`` is (frame_i, action_i, reward_i, terminal_i): the agent saw frame ``i`` (the
newest of its 4-frame stack), took action ``i`` and received reward ``i``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from atari_dt.errors import OutOfRangeError, UserError

if TYPE_CHECKING:
    from atari_dt.datasets.contexts import Contexts

STORE_FORMAT = "atari-dt/episode-store"
STORE_FORMAT_VERSION = 1
RewardUnits = Literal["clipped", "raw"]


class StoreFormatError(UserError):
    """An episode store is missing, unreadable, unfinished or of another format or version."""


@dataclass(frozen=True)
class Episode:
    """One episode read from a store (arrays are copies, safe to modify).

    Attributes:
        index: the episode's number in the store.
        frames: uint8 ``[L, H, W]``.
        actions: int64 ``[L]``.
        rewards: float32 ``[L]`` in the store's chosen reward units.
        rtg: float32 ``[L]``, return-to-go in the same units (``rtg[0] == ret``).
        timesteps: int64 ``[L]``, ``0 .. L-1``.
        complete: False if the episode was cut at either end.
        ret: the episode's return (same units).
        reward_units: ``clipped`` or ``raw``.
        ram: uint8 ``[L, 128]`` or None.
        behaviour: how the episode was played (e.g. mixture component, epsilon), when recorded.
    """

    index: int
    frames: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    rtg: np.ndarray
    timesteps: np.ndarray
    complete: bool
    ret: float
    reward_units: RewardUnits
    ram: np.ndarray | None = None
    behaviour: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.actions)


class EpisodeStore:
    """Read-only access to an episode store. Use :meth:`open`; closes with ``with`` or
    :meth:`close`. Episode tables (offsets, lengths, returns, completeness) are loaded at open.

    Attributes:
        path, game, n_actions, metadata (dict of the JSON attributes), reward_units.
        offsets, lengths: int64 ``[E]``; returns: float64 ``[E]``; complete: bool ``[E]``.
    """

    def __init__(self, path: Path, handle: Any, reward_units: RewardUnits) -> None:
        self.path = path
        self._h5 = handle
        self.reward_units = reward_units
        attrs = handle.attrs
        self.game: str = str(attrs.get("game", ""))
        self.n_actions: int | None = int(attrs["n_actions"]) if "n_actions" in attrs else None
        self.metadata: dict[str, Any] = {
            key: json.loads(attrs[key])
            for key in ("source", "preprocessing", "behaviour_policy", "collection")
            if key in attrs
        }
        episodes = handle["episodes"]
        self.offsets = episodes["offset"][:].astype(np.int64)
        self.lengths = episodes["length"][:].astype(np.int64)
        self.complete = episodes["complete"][:].astype(bool)
        return_key = "return" if reward_units == "clipped" else "raw_return"
        self.returns = episodes[return_key][:].astype(np.float64)
        self.behaviours: list[dict[str, Any] | None] = (
            [json.loads(text) if text else None for text in episodes["behaviour"].asstr()[:]]
            if "behaviour" in episodes
            else [None] * len(self.offsets)
        )

    @classmethod
    def open(cls, path: str | Path, *, reward_units: RewardUnits = "clipped") -> EpisodeStore:
        """Open a store, checking its format, version and that it was fully written.

        Args:
            path: the ``.h5`` file.
            reward_units: ``clipped`` (as in DQN-replay) or ``raw`` (only where recorded).

        Raises:
            StoreFormatError: missing, not HDF5, unfinished, another format/version, or raw
                rewards asked of a store without them.
        """
        import h5py

        path = Path(path)
        if not path.is_file():
            raise StoreFormatError(f"episode store not found: {path}")
        if reward_units not in ("clipped", "raw"):
            raise UserError(f"reward_units must be 'clipped' or 'raw', got {reward_units!r}")
        try:
            handle = h5py.File(path, "r")
        except OSError as err:
            raise StoreFormatError(f"{path}: not a readable HDF5 file ({err})") from err
        try:
            _check_format(path, handle, reward_units)
            return cls(path, handle, reward_units)
        except BaseException:
            handle.close()
            raise

    def __len__(self) -> int:
        return len(self.offsets)

    @property
    def n_transitions(self) -> int:
        return int(self._h5["actions"].shape[0])

    @property
    def frame_shape(self) -> tuple[int, int]:
        return tuple(self._h5["frames"].shape[1:])  # type: ignore[return-value]

    @property
    def has_ram(self) -> bool:
        return "ram" in self._h5

    @property
    def has_raw_rewards(self) -> bool:
        return "raw_rewards" in self._h5

    @property
    def h5(self) -> Any:
        """The underlying read-only ``h5py.File`` (layout in this module's docstring)."""
        return self._h5

    @property
    def frames(self) -> Any:
        """The h5py dataset of all frames (slice it; do not read it whole for big stores)."""
        return self._h5["frames"]

    def column(self, name: str) -> np.ndarray:
        """A whole per-transition array: ``actions``, ``terminals``, ``rewards``/``rtg`` (in the
        chosen reward units), ``ram``. Small except ``ram`` (128 B per transition)."""
        if name in ("rewards", "rtg") and self.reward_units == "raw":
            name = f"raw_{name}"
        if name not in self._h5:
            raise KeyError(f"{self.path} has no per-transition array {name!r}")
        return self._h5[name][:]

    def episode(self, index: int) -> Episode:
        """Read episode ``index`` (negative counts from the end).

        Raises:
            IndexError: no such episode (names the store and its size).
        """
        if not -len(self) <= index < len(self):
            raise OutOfRangeError(
                f"episode {index} out of range: {self.path} has {len(self)} episodes"
            )
        index %= len(self)
        start = int(self.offsets[index])
        span = slice(start, start + int(self.lengths[index]))
        rewards_key, rtg_key = (
            ("rewards", "rtg")
            if self.reward_units == "clipped"
            else (
                "raw_rewards",
                "raw_rtg",
            )
        )
        return Episode(
            index=index,
            frames=self._h5["frames"][span],
            actions=self._h5["actions"][span].astype(np.int64),
            rewards=self._h5[rewards_key][span].astype(np.float32),
            rtg=self._h5[rtg_key][span].astype(np.float32),
            timesteps=np.arange(span.stop - span.start, dtype=np.int64),
            complete=bool(self.complete[index]),
            ret=float(self.returns[index]),
            reward_units=self.reward_units,
            ram=self._h5["ram"][span] if self.has_ram else None,
            behaviour=self.behaviours[index],
        )

    def contexts(
        self, episodes: Any, steps: Any, *, context_len: int, stack_size: int = 4
    ) -> Contexts:
        """The context windows ending at ``steps[i]`` of ``episodes[i]`` (ints or int arrays of
        one length), cut as training cuts them and read window by window (never a whole
        column); see ``atari_dt.datasets.contexts.read_contexts``.

        Raises:
            IndexError: no such episode or step (the message gives the valid range).
        """
        from atari_dt.datasets.contexts import read_contexts

        return read_contexts(
            self,
            np.atleast_1d(episodes),
            np.atleast_1d(steps),
            context_len=context_len,
            stack_size=stack_size,
        )

    def sample_contexts(
        self,
        n: int,
        *,
        context_len: int,
        seed: int = 0,
        stack_size: int = 4,
        sampling: str = "transitions",
        episodes: np.ndarray | None = None,
    ) -> Contexts:
        """``n`` windows drawn (with replacement) as training draws them, from ``episodes``
        (default: the complete ones; all when none is complete), sorted by store row.

        Raises:
            UserError: ``n`` < 1, or no episode to draw from.
        """
        from atari_dt.datasets.sampling import locate, sample_window_indices

        if n < 1:
            raise UserError(f"sample_contexts needs n >= 1 contexts, got {n}")
        if episodes is None:
            episodes = (
                np.flatnonzero(self.complete) if self.complete.any() else np.arange(len(self))
            )
        episodes = np.asarray(episodes, dtype=np.int64)
        if len(episodes) == 0:
            raise UserError(f"{self.path}: no episode to sample contexts from")
        lengths = self.lengths[episodes]
        flat = np.sort(sample_window_indices(lengths, np.random.default_rng(seed), n, sampling))
        which, step = locate(flat, lengths)
        return self.contexts(episodes[which], step, context_len=context_len, stack_size=stack_size)

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this store's content, cheaply: game, action count, sizes and a
        SHA-256 of the episode tables (offsets, lengths, clipped returns, completeness), every
        action and 16 frames spread over the store. A run records it, so a store that changed
        since training is noticed (reading 50M actions takes ~1 s)."""
        import hashlib

        episodes = self._h5["episodes"]
        digest = hashlib.sha256()
        for table in _EPISODE_TABLES:
            digest.update(np.ascontiguousarray(episodes[table][:]).tobytes())
        # the actions (4 B per transition, read in chunks) and 16 frames spread over the store
        actions = self._h5["actions"]
        for start in range(0, actions.shape[0], 1 << 22):
            digest.update(np.ascontiguousarray(actions[start : start + (1 << 22)]).tobytes())
        n = self.n_transitions
        picks = np.unique(np.linspace(0, max(n - 1, 0), min(16, n)).astype(np.int64))
        digest.update(np.ascontiguousarray(self.frames[picks]).tobytes())
        return {
            "game": self.game,
            "n_actions": self.n_actions,
            "episodes": len(self),
            "transitions": self.n_transitions,
            "sha256": digest.hexdigest(),
        }

    def mean_frame(self, samples: int = 4096) -> np.ndarray:
        """The mean of up to ``samples`` frames spread evenly over the store, float32
        ``[H, W]`` (the ``mean`` attribution baseline), read in one call."""
        picks = np.unique(
            np.linspace(0, self.n_transitions - 1, min(samples, self.n_transitions)).astype(
                np.int64
            )
        )
        return self.frames[picks].astype(np.float32).mean(0)

    def return_range(self, *, complete_only: bool = True) -> tuple[float, float]:
        """``(min, max)`` episode return in the chosen units (complete episodes by default)."""
        returns = self.returns[self.complete] if complete_only else self.returns
        if len(returns) == 0:
            raise UserError(f"{self.path} has no {'complete ' if complete_only else ''}episodes")
        return float(returns.min()), float(returns.max())

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> EpisodeStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"EpisodeStore({str(self.path)!r}, game={self.game!r}, episodes={len(self)}, "
            f"transitions={self.n_transitions}, reward_units={self.reward_units!r})"
        )


_REQUIRED = ("frames", "actions", "rewards", "terminals", "rtg", "episodes")
_EPISODE_TABLES = ("offset", "length", "return", "complete")


def _check_format(path: Path, handle: Any, reward_units: RewardUnits) -> None:
    attrs = handle.attrs
    fmt = attrs.get("format")
    if fmt != STORE_FORMAT:
        raise StoreFormatError(f"{path}: not an atari-dt episode store (format attribute {fmt!r})")
    version = int(attrs.get("format_version", -1))
    if version != STORE_FORMAT_VERSION:
        raise StoreFormatError(
            f"{path}: episode store format version {version}; this atari-dt reads version "
            f"{STORE_FORMAT_VERSION} (convert it again with `atari-dt data convert`)"
        )
    if not bool(attrs.get("finalized", False)):
        raise StoreFormatError(f"{path}: the store was never finalized (an interrupted write)")
    missing = [name for name in _REQUIRED if name not in handle]
    missing += [f"episodes/{name}" for name in _EPISODE_TABLES if f"episodes/{name}" not in handle]
    if missing:
        raise StoreFormatError(f"{path}: missing datasets {missing}")
    if reward_units == "raw" and "raw_rewards" not in handle:
        raise StoreFormatError(
            f"{path}: reward_units='raw' asked, but the store records only clipped rewards "
            "(DQN-replay logs do not keep raw game rewards)"
        )
