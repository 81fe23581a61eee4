"""Where a DQN-replay checkpoint's files are, and how its buffer slots map to transition order.

A ``replay_logs`` directory holds, per checkpoint ``N``, the files
``$store$_observation_ckpt.N.gz``,
``$store$_action_ckpt.N.gz``, ``$store$_reward_ckpt.N.gz``, ``$store$_terminal_ckpt.N.gz``,
``add_count_ckpt.N.gz`` and ``invalid_range_ckpt.N.gz`` (FACTS.md §1). Which buffer slots hold new
transitions, and in which order, depends on how the file was written:

* ``logged``: batch_rl's logged buffer dumps the whole buffer after the add that makes
  ``add_count % C == C - 1``. Dump ``k`` has ``add_count == (k + 1) * C - 1``; its slots
  ``0..C-2`` hold transitions ``k*C .. k*C + C-2`` and slot ``C-1`` holds transition ``k*C - 1``
  (added just before slot 0; garbage in dump 0).
* ``logged_final``: the last dump of a run, written with ``add_count`` set to the cursor; only slot
  ``C-1`` (for ``k > 0``) and slots ``0..cursor-1`` are new, the rest are stale.
* ``circular``: a plain dopamine checkpoint; once wrapped (``add_count > C``) the oldest slot is
  ``add_count % C``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from atari_dt.datasets.npy_gzip import NpyGzipReader, ReplayFileError, load_npy_gz
from atari_dt.errors import UserError

STORE_ARRAYS = ("observation", "action", "reward", "terminal")
REQUIRED_ARRAYS = (*STORE_ARRAYS, "add_count")
LayoutName = Literal["auto", "logged", "circular"]
# Any file of a checkpoint set names it, so a set missing its observation file is still found
# (and reported) rather than silently skipped.
_SUFFIX = re.compile(
    r"^(?:\$store\$_(?:observation|action|reward|terminal)|add_count|invalid_range)_ckpt\.(\d+)\.gz$"
)


def replay_file(directory: Path, name: str, checkpoint: int) -> Path:
    """Path of array ``name`` (``observation``, ``add_count``, ...) of checkpoint ``checkpoint``."""
    prefix = "$store$_" if name in STORE_ARRAYS else ""
    return Path(directory) / f"{prefix}{name}_ckpt.{checkpoint}.gz"


def parse_checkpoint_selection(text: str) -> list[int]:
    """Parse ``"0-4"``, ``"7"`` or ``"0-2,5,9-10"`` into a sorted list of checkpoint numbers.

    Raises:
        UserError: on anything else (names the bad part).
    """
    selected: set[int] = set()
    for part in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if match is None:
            raise UserError(
                f"bad checkpoint selection {text!r} (part {part!r}); "
                "expected e.g. '0-4' or '0,3,5-7'"
            )
        first = int(match.group(1))
        last = int(match.group(2)) if match.group(2) is not None else first
        if last < first:
            raise UserError(f"bad checkpoint range {part!r}: {last} < {first}")
        selected.update(range(first, last + 1))
    return sorted(selected)


def discover_checkpoints(directory: Path) -> list[int]:
    """Checkpoint numbers with any DQN-replay file in ``directory``, sorted.

    Raises:
        ReplayFileError: the directory does not exist or holds no DQN-replay file.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ReplayFileError(f"replay_logs directory not found: {directory}")
    found = sorted(
        {int(m.group(1)) for p in directory.iterdir() if (m := _SUFFIX.match(p.name)) is not None}
    )
    if not found:
        raise ReplayFileError(
            f"{directory}: no '$store$_observation_ckpt.N.gz' files "
            "(is this a replay_logs directory?)"
        )
    return found


@dataclass(frozen=True)
class CheckpointLayout:
    """Which slots of one checkpoint's buffer hold transitions, in the order they were added.

    Attributes:
        directory, checkpoint: where the files are and their number ``N``.
        capacity: ``C``, rows of every store array.
        add_count: as saved in ``add_count_ckpt.N.gz``.
        kind: ``logged``, ``logged_final`` or ``circular`` (module docstring).
        start_slot, n_slots: the slots in order of addition are
            ``(start_slot + arange(n_slots)) % capacity`` (see :attr:`slots`; kept as two numbers
            so a run of 50 checkpoints does not hold 50 slot arrays).
        first_transition: global index (over the whole run) of ``slots[0]``; 0 means the stream
            starts at the very first transition, i.e. at the start of an episode.
        frame_shape: shape of one observation, e.g. ``(84, 84)``.
    """

    directory: Path
    checkpoint: int
    capacity: int
    add_count: int
    kind: Literal["logged", "logged_final", "circular"]
    start_slot: int
    n_slots: int
    first_transition: int
    frame_shape: tuple[int, ...]

    def path(self, name: str) -> Path:
        return replay_file(self.directory, name, self.checkpoint)

    @property
    def slots(self) -> np.ndarray:
        """int64 ``[n_slots]``: buffer slots in order of addition."""
        return (self.start_slot + np.arange(self.n_slots, dtype=np.int64)) % self.capacity

    @property
    def next_transition(self) -> int:
        """Global index of the transition right after this checkpoint's last one."""
        return self.first_transition + self.n_slots


def read_layout(
    directory: Path, checkpoint: int, *, is_last: bool, layout: LayoutName = "auto"
) -> CheckpointLayout:
    """Read a checkpoint's headers and ``add_count`` and decide its slot order.

    Raises:
        ReplayFileError: a required file is missing, or the arrays disagree in length, dtype or
            shape, or ``add_count`` fits no layout (names the file and what was expected).
    """
    for name in REQUIRED_ARRAYS:
        if not replay_file(directory, name, checkpoint).is_file():
            raise ReplayFileError(
                f"checkpoint {checkpoint} in {directory} is incomplete: missing "
                f"{replay_file(directory, name, checkpoint).name}"
            )
    capacity, frame_shape = _check_store_headers(directory, checkpoint)
    add_count = _read_add_count(directory, checkpoint)
    plain_unwrapped = (
        layout == "auto"
        and checkpoint > 0
        and add_count < capacity
        and is_last
        and _looks_plain_unwrapped(directory, checkpoint, capacity, add_count)
    )
    if plain_unwrapped:
        layout = "circular"  # a plain buffer that never wrapped, not a final logged dump
    kind, slots, first = _slot_order(checkpoint, capacity, add_count, is_last, layout, directory)
    start_slot = int(slots[0]) if len(slots) else 0
    return CheckpointLayout(
        Path(directory),
        checkpoint,
        capacity,
        add_count,
        kind,
        start_slot,
        len(slots),
        first,
        frame_shape,
    )


def _read_add_count(directory: Path, checkpoint: int) -> int:
    path = replay_file(directory, "add_count", checkpoint)
    value = load_npy_gz(path)
    if value.shape != () or value.dtype.kind not in "iu" or int(value) < 0:
        raise ReplayFileError(
            f"{path}: expected one non-negative integer (a 0-d int array), "
            f"got {value.dtype} {list(value.shape)}"
        )
    return int(value)


def _check_store_headers(directory: Path, checkpoint: int) -> tuple[int, tuple[int, ...]]:
    """Check the four store arrays have one length and sane dtypes; return (C, frame shape)."""
    headers = {}
    for name in STORE_ARRAYS:
        with NpyGzipReader(replay_file(directory, name, checkpoint)) as reader:
            headers[name] = (reader.shape, reader.dtype)
    obs_shape, obs_dtype = headers["observation"]
    if obs_dtype != np.uint8 or len(obs_shape) != 3:
        raise ReplayFileError(
            f"{replay_file(directory, 'observation', checkpoint)}: "
            "expected uint8 [C, H, W] frames, "
            f"got {obs_dtype} {list(obs_shape)}"
        )
    capacity = obs_shape[0]
    for name in ("action", "reward", "terminal"):
        shape, dtype = headers[name]
        if shape != (capacity,):
            raise ReplayFileError(
                f"{replay_file(directory, name, checkpoint)}: expected shape [{capacity}] "
                f"(the observation file's length), got {list(shape)}"
            )
        if dtype.kind not in ("f" if name == "reward" else "iub"):
            raise ReplayFileError(
                f"{replay_file(directory, name, checkpoint)}: unexpected dtype {dtype} for {name}"
            )
    return capacity, tuple(obs_shape[1:])


# Slots past add_count that must all be empty before a file is read as a never-wrapped plain
# dopamine buffer rather than a final logged dump (whose tail holds stale transitions).
_MIN_EMPTY_TAIL = 64


def _looks_plain_unwrapped(directory: Path, checkpoint: int, capacity: int, add_count: int) -> bool:
    """Is checkpoint ``N > 0`` with ``add_count < C`` a plain dopamine buffer that never wrapped
    (dopamine numbers checkpoints by iteration) rather than a run's final logged dump?

    Plain if no full logged dump ``N-1`` lies beside it, and slots ``add_count..C-1`` were never
    written (action, reward and terminal all zero), and either that empty tail is long
    (``_MIN_EMPTY_TAIL``) or slots ``0..2`` are the zero padding a buffer starts with. A final
    logged dump's tail holds stale transitions of the previous round instead.
    """
    previous = replay_file(directory, "add_count", checkpoint - 1)
    if (
        previous.is_file()
        and _read_add_count(directory, checkpoint - 1) == checkpoint * capacity - 1
    ):
        return False
    arrays = [
        load_npy_gz(replay_file(directory, n, checkpoint)) for n in ("action", "reward", "terminal")
    ]
    if any(values[add_count:].any() for values in arrays):
        return False
    starts_with_padding = not any(values[: min(3, add_count)].any() for values in arrays)
    return capacity - add_count >= _MIN_EMPTY_TAIL or starts_with_padding


def _slot_order(
    checkpoint: int, capacity: int, add_count: int, is_last: bool, layout: str, directory: Path
) -> tuple[str, np.ndarray, int]:
    """(kind, slots in order of addition, global index of the first) for one checkpoint."""
    C = capacity
    prefix = [C - 1] if checkpoint > 0 else []  # slot C-1 was added just before slot 0
    first = checkpoint * C - 1 if checkpoint > 0 else 0
    if layout in ("auto", "logged") and add_count == (checkpoint + 1) * C - 1:
        return "logged", np.array(prefix + list(range(C - 1)), dtype=np.int64), first
    if layout in ("auto", "logged") and add_count < C and (is_last or layout == "logged"):
        if checkpoint > 0 and add_count == C - 1:
            # Written right after dump N-1 with no add in between: nothing new in it.
            return "logged_final", np.zeros(0, dtype=np.int64), first
        return "logged_final", np.array(prefix + list(range(add_count)), dtype=np.int64), first
    if layout == "logged":
        raise ReplayFileError(
            f"{replay_file(directory, 'add_count', checkpoint)}: add_count {add_count} fits no "
            f"logged dump: expected {(checkpoint + 1) * C - 1} (a full dump, C={C}) or < {C} "
            "(the final dump, last checkpoint only)"
        )
    if add_count <= C:
        return "circular", np.arange(add_count, dtype=np.int64), 0
    oldest = add_count % C
    slots = np.concatenate([np.arange(oldest, C), np.arange(oldest)]).astype(np.int64)
    return "circular", slots, add_count - C
