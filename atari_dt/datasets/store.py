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
    /checksums/<path>    uint8   [K, 32]     SHA-256 of each block of rows of dataset <path>

Root attributes: ``format``, ``format_version``, ``finalized`` (True once fully written),
``game``, ``n_actions``, ``frame_shape`` (``[H, W]`` the store was written with), and JSON
strings ``source``, ``preprocessing``, ``behaviour_policy`` and (for collected data)
``collection`` (seed, target and collected steps, episodes).

Checksums (stores written before they existed have none, and still open and verify): every numeric
dataset ``<path>`` has ``/checksums/<path>``, the SHA-256 digests of its rows taken in blocks of
``block_rows`` rows (an attribute of the checksum dataset; blocks of about 4 MiB), each over the
block's bytes as stored, in row order (:func:`block_digests`). Blocks let the writer hash rows as
they are written and let ``data verify`` name the rows that changed. They are compared only by
``data verify`` (reading everything), never at open.
Transition ``i`` is (frame_i, action_i, reward_i, terminal_i): the agent saw frame ``i`` (the
newest of its 4-frame stack), took action ``i`` and received reward ``i``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from atari_dt.errors import OutOfRangeError, StoreFormatError, UserError

if TYPE_CHECKING:
    from atari_dt.datasets.contexts import Contexts

STORE_FORMAT = "atari-dt/episode-store"
STORE_FORMAT_VERSION = 1
RewardUnits = Literal["clipped", "raw"]


class StoreLayoutError(StoreFormatError):
    """A store's datasets have the wrong dtype or row shape; ``problems`` lists each."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


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
            key: _json_attribute(path, key, attrs[key])
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
            [
                _json_attribute(path, f"/episodes/behaviour[{i}]", text) if text else None
                for i, text in enumerate(episodes["behaviour"].asstr()[:])
            ]
            if "behaviour" in episodes
            else [None] * len(self.offsets)
        )

    def _check_tables(self) -> None:
        """The episode table tiles the transitions and every per-transition dataset has a row
        per transition (cheap: the tables and shapes only). Else reading a window would fail
        deep inside numpy with an index that names no file.

        Raises:
            StoreFormatError: naming the table or dataset and what it should hold.
        """
        n = self.n_transitions
        tables = (self.offsets, self.lengths, self.complete, self.returns, self.behaviours)
        if len({len(t) for t in tables}) != 1:
            raise StoreFormatError(
                f"{self.path}: the /episodes tables have different lengths "
                f"({', '.join(str(len(t)) for t in tables)}); the file is damaged"
            )
        starts = (np.cumsum(self.lengths) - self.lengths).astype(np.int64)
        if (self.lengths < 1).any() or not np.array_equal(self.offsets, starts):
            bad = int(np.flatnonzero((self.lengths < 1) | (self.offsets != starts))[0])
            raise StoreFormatError(
                f"{self.path}: /episodes/offset and /length do not tile the transitions: episode "
                f"{bad} has offset {int(self.offsets[bad])}, length {int(self.lengths[bad])} "
                f"(expected offset {int(starts[bad])}); the file is damaged"
            )
        if int(self.lengths.sum()) != n:
            raise StoreFormatError(
                f"{self.path}: the episodes cover {int(self.lengths.sum())} transitions but "
                f"/actions holds {n}; the file is damaged"
            )
        for name in ("frames", "rewards", "terminals", "rtg", "raw_rewards", "raw_rtg", "ram"):
            if name in self._h5 and self._h5[name].shape[0] != n:
                raise StoreFormatError(
                    f"{self.path}: /{name} has {self._h5[name].shape[0]} rows for {n} "
                    "transitions; the file is damaged"
                )

    @classmethod
    def open(
        cls, path: str | Path, *, reward_units: RewardUnits = "clipped", check_tables: bool = True
    ) -> EpisodeStore:
        """Open a store, checking its format, version and that it was fully written.

        Args:
            path: the ``.h5`` file.
            reward_units: ``clipped`` (as in DQN-replay) or ``raw`` (only where recorded).
            check_tables: check that the episode table tiles the transitions (``data verify``
                turns it off to report every problem itself).

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
            store = cls(path, handle, reward_units)
            if check_tables:  # `data verify` opens without, to list every problem itself
                store._check_tables()
            return store
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


def _json_attribute(path: Path, name: str, text: Any) -> Any:
    """A JSON attribute of the store, or a ``StoreFormatError`` naming it."""
    try:
        return json.loads(text)
    except (TypeError, ValueError) as err:
        raise StoreFormatError(f"{path}: the {name} attribute is not valid JSON ({err})") from None


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
    problems = layout_problems(handle)
    if problems:
        raise StoreLayoutError(
            f"{path}: not the episode-store layout: {'; '.join(problems)} (the file was changed "
            "after it was written; convert or collect the data again)",
            problems,
        )


# Expected kind of each dataset ("u1": exactly uint8) and its shape after the first axis.
_LAYOUT: dict[str, tuple[str, tuple[int, ...] | None]] = {
    "frames": ("u1", None),  # [N, H, W]: H, W checked against the frame_shape attribute
    "actions": ("iu", ()),
    "rewards": ("f", ()),
    "terminals": ("biu", ()),
    "rtg": ("f", ()),
    "raw_rewards": ("f", ()),
    "raw_rtg": ("f", ()),
    "ram": ("u1", (128,)),
    "episodes/offset": ("iu", ()),
    "episodes/length": ("iu", ()),
    "episodes/return": ("f", ()),
    "episodes/raw_return": ("f", ()),
    "episodes/complete": ("biu", ()),
}
_KIND_NAMES = {
    "u1": "uint8",
    "iu": "an integer type",
    "f": "a float type",
    "biu": "bool or integer",
}


def layout_problems(handle: Any) -> list[str]:
    """Datasets whose dtype or row shape is not the layout's (module docstring), e.g. float64
    actions, float32 frames or frames of another size than the store was written with. Reads
    metadata only (cheap at open); row counts and values are ``data verify``'s to check."""
    expected = dict(_LAYOUT)
    for name in handle.get("objects", {}):
        expected[f"objects/{name}"] = ("f", (2,))
    problems = []
    for name, (kind, row_shape) in expected.items():
        if name not in handle:
            continue
        dtype, shape = handle[name].dtype, handle[name].shape
        if not (dtype == np.uint8 if kind == "u1" else dtype.kind in kind):
            problems.append(f"/{name} is {dtype}, expected {_KIND_NAMES[kind]}")
        if name == "frames":
            recorded = handle.attrs.get("frame_shape")
            if len(shape) != 3:
                problems.append(f"/frames has shape {list(shape)}, expected [N, H, W]")
            elif recorded is not None and tuple(int(v) for v in recorded) != shape[1:]:
                problems.append(
                    f"/frames holds {shape[1]}x{shape[2]} frames, but the store was written with "
                    f"{int(recorded[0])}x{int(recorded[1])} (frame_shape attribute)"
                )
        elif row_shape is not None and len(shape) >= 1 and tuple(shape[1:]) != row_shape:
            expected_shape = ", ".join(["N", *map(str, row_shape)])
            problems.append(f"/{name} has shape {list(shape)}, expected [{expected_shape}]")
        elif len(shape) == 0:
            problems.append(f"/{name} is a scalar, expected one value per row")
    return problems


# ---- checksums (layout in the module docstring) ---------------------------------------------

CHECKSUMS = "checksums"  # the group holding one digest dataset per data dataset
CHECKSUM_BLOCK_BYTES = 1 << 22  # about 4 MiB of rows per digest


def checksum_block_rows(row_shape: tuple[int, ...], dtype: Any) -> int:
    """Rows per checksum block of a dataset whose rows have this shape and dtype."""
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return max(1, CHECKSUM_BLOCK_BYTES // max(row_bytes, 1))


def block_digest(rows: np.ndarray) -> bytes:
    """SHA-256 of rows' bytes as stored (C order)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(rows)).digest()  # (the buffer: no copy)


def block_digests(dataset: Any, block_rows: int, blocks: Any = None) -> Any:
    """Yield ``(block, digest)`` for each block (default: all) of an h5py dataset, reading one
    block at a time."""
    n = dataset.shape[0]
    for block in range(-(-n // block_rows)) if blocks is None else blocks:
        yield block, block_digest(dataset[block * block_rows : (block + 1) * block_rows])


def checksummed_datasets(handle: Any) -> list[str]:
    """Paths of the datasets that carry checksums: every numeric one outside ``/checksums``."""
    names: list[str] = []

    def visit(name: str, item: Any) -> None:
        numeric = hasattr(item, "dtype") and item.dtype.kind in "biuf"
        if numeric and name.split("/")[0] != CHECKSUMS:
            names.append(name)

    handle.visititems(visit)
    return names
