"""Read a ``replay_logs`` directory as a stream of transitions cut into episodes.

No TensorFlow or dopamine: small arrays (actions, rewards, terminals) are loaded per checkpoint,
observations are streamed in chunks (memory bounded by the chunk, not the 7 GB file). Dopamine
writes ``stack_size - 1`` all-zero padding transitions before every episode; they are checked and
dropped. Episodes running across checkpoint files are joined; an episode cut at either end of the
stream (or at a gap in the selected checkpoints) is kept and marked incomplete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atari_dt.datasets.npy_gzip import NpyGzipReader, ReplayFileError, load_npy_gz
from atari_dt.datasets.replay_files import (
    CheckpointLayout,
    LayoutName,
    discover_checkpoints,
    read_layout,
    replay_file,
)

_FULL_ACTION_SET = 18  # ALE's full action set: no game's minimal set is larger


@dataclass(frozen=True)
class EpisodeSpan:
    """One episode's place in the output (store positions, padding removed)."""

    offset: int
    length: int
    complete: bool


@dataclass
class _OpenEpisode:
    offset: int
    length: int
    complete_start: bool


@dataclass
class SegmenterState:
    """What carries over from one block of transitions to the next in one stream."""

    n_kept: int = 0  # store positions handed out so far
    pad_remaining: int = 0  # padding transitions still due at the start of the next block
    open_episode: _OpenEpisode | None = None


@dataclass(frozen=True)
class ReplayBlock:
    """One checkpoint's transitions in order of addition, with padding marked.

    Attributes:
        layout: the checkpoint's slot order.
        actions, rewards, terminals: ``[n]`` in order of addition (padding included).
        keep: bool ``[n]``, False for padding transitions.
        positions: int64 ``[n]``, store position of each kept transition, -1 for padding
            (-2: a transition not to be stored, which :meth:`iter_frames` neither checks nor
            yields).
        episodes: episodes that ended in this block (or at the stream's end after it).
    """

    layout: CheckpointLayout
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    keep: np.ndarray
    positions: np.ndarray
    episodes: list[EpisodeSpan] = field(default_factory=list)

    def iter_frames(self, chunk_rows: int = 4096) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """Stream the observation file chunk by chunk: yield ``(rows read, positions [m],
        frames uint8 [m, H, W])`` for the kept transitions of each chunk, in file order.

        Raises:
            ReplayFileError: a padding frame is not all zero, or the file is corrupt/truncated.
        """
        slot_position = np.full(self.layout.capacity, -2, dtype=np.int64)  # -2: stale slot
        slot_position[self.layout.slots] = self.positions
        path = self.layout.path("observation")
        with NpyGzipReader(path) as reader:
            for first_row, frames in reader.iter_chunks(chunk_rows):
                chunk_positions = slot_position[first_row : first_row + len(frames)]
                padding = np.flatnonzero(chunk_positions == -1)  # ~3 per episode: check only those
                nonzero = padding[frames[padding].any(axis=(1, 2))]
                if len(nonzero):
                    bad = first_row + int(nonzero[0])
                    raise ReplayFileError(
                        f"{path}: slot {bad} should be an all-zero padding frame (it follows a "
                        "terminal) but is not; the file is corrupt or not DQN-replay data"
                    )
                kept = chunk_positions >= 0
                yield len(frames), chunk_positions[kept], frames[kept]


def segment_block(
    actions: np.ndarray,
    rewards: np.ndarray,
    terminals: np.ndarray,
    state: SegmenterState,
    *,
    stack_size: int = 4,
    where: str = "",
) -> tuple[np.ndarray, np.ndarray, list[EpisodeSpan]]:
    """Mark padding and cut one block of transitions (in order of addition) into episodes.

    Args:
        actions, rewards, terminals: ``[n]`` arrays of the block.
        state: carried over from the previous block of the same stream; updated in place.
        stack_size: frames per state; dopamine pads ``stack_size - 1`` transitions per episode.
        where: names the block in error messages.

    Returns:
        ``(keep bool [n], positions int64 [n] (-1 for padding), finished episodes)``.

    Raises:
        ReplayFileError: a padding transition is not (action 0, reward 0, terminal 0).
    """
    n = len(terminals)
    padding = np.zeros(n, dtype=bool)
    padding[: state.pad_remaining] = True
    carry = max(0, state.pad_remaining - n)
    for t in np.flatnonzero(terminals):
        padding[t + 1 : t + stack_size] = True
        carry = max(0, t + stack_size - n)
    bad = padding & ((actions != 0) | (rewards != 0) | (terminals != 0))
    if bad.any():
        raise ReplayFileError(
            f"{where}: transition {int(np.flatnonzero(bad)[0])} (in order of addition) should be "
            f"one of the {stack_size - 1} zero padding transitions after a terminal, but is not"
        )
    keep = ~padding
    positions = np.where(keep, state.n_kept + np.cumsum(keep) - 1, -1).astype(np.int64)
    episodes = _close_episodes(keep, terminals, positions, state)
    state.n_kept += int(keep.sum())
    state.pad_remaining = carry
    return keep, positions, episodes


def _close_episodes(
    keep: np.ndarray, terminals: np.ndarray, positions: np.ndarray, state: SegmenterState
) -> list[EpisodeSpan]:
    """Walk the runs of kept transitions; each ends at a terminal or at the block's end."""
    finished = []
    edges = np.diff(np.concatenate([[False], keep, [False]]).astype(np.int8))
    for start, stop in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
        if state.open_episode is not None and start == 0:
            state.open_episode.length += int(stop - start)
        else:
            state.open_episode = _OpenEpisode(int(positions[start]), int(stop - start), True)
        if terminals[stop - 1]:
            episode = state.open_episode
            finished.append(EpisodeSpan(episode.offset, episode.length, episode.complete_start))
            state.open_episode = None
    return finished


def leading_padding_count(lay: CheckpointLayout, stack_size: int) -> int | None:
    """How many of a checkpoint's first transitions (in order of addition, at most
    ``stack_size - 1``) look like dopamine padding: action 0, reward 0, not terminal and an
    all-zero frame. None when the first one does not (the stream starts mid-episode)."""
    lead = lay.slots[: stack_size - 1]
    if len(lead) == 0:
        return None
    small = [load_npy_gz(lay.path(name))[lead] for name in ("action", "reward", "terminal")]
    zero_steps = ~np.logical_or.reduce([values != 0 for values in small])
    frames = np.zeros((len(lead), *lay.frame_shape), dtype=np.uint8)
    with NpyGzipReader(lay.path("observation")) as reader:
        for first_row, chunk in reader.iter_chunks(4096):
            inside = (lead >= first_row) & (lead < first_row + len(chunk))
            frames[inside] = chunk[lead[inside] - first_row]
            if first_row + len(chunk) > lead.max():
                break
    is_padding = zero_steps & ~frames.reshape(len(lead), -1).any(axis=1)
    count = len(lead) if is_padding.all() else int(np.argmin(is_padding))
    return count or None


def finish_stream(state: SegmenterState) -> list[EpisodeSpan]:
    """Close the stream: an episode still open was cut at the end, so it is incomplete."""
    episode, state.open_episode = state.open_episode, None
    state.pad_remaining = 0
    if episode is None or episode.length == 0:
        return []
    return [EpisodeSpan(episode.offset, episode.length, False)]


def start_stream(
    state: SegmenterState, first_transition: int, lead_padding: int | None, stack_size: int
) -> None:
    """Begin a stream at global transition ``first_transition``.

    Args:
        state: a fresh state (its ``n_kept`` carries the store position over).
        first_transition: global index of the stream's first transition.
        lead_padding: when an episode boundary is known to lie at the stream's start, how many
            padding transitions come first (0 .. stack_size-1); None when the stream starts
            inside an episode, which is then cut at its start (incomplete).
        stack_size: frames per state.
    """
    if first_transition < stack_size - 1:  # inside the run's very first padding
        state.pad_remaining = stack_size - 1 - first_transition
    elif lead_padding is not None:
        state.pad_remaining = lead_padding
    else:
        state.open_episode = _OpenEpisode(state.n_kept, 0, False)


def padding_after(terminals_before: np.ndarray, stack_size: int) -> int | None:
    """Padding transitions at a stream's start, from the ``stack_size`` terminal flags just
    before it (oldest first): a terminal ``j`` steps back leaves ``stack_size - j`` padding
    transitions to come. None if none of them is terminal (the stream starts mid-episode)."""
    flags = np.asarray(terminals_before[-stack_size:]).astype(bool)
    if not flags.any():
        return None
    steps_back = len(flags) - int(np.flatnonzero(flags)[-1])
    return stack_size - steps_back


class ReplayLogs:
    """A ``replay_logs`` directory (one run of one game) read in order of addition.

    Args:
        directory: the ``replay_logs`` folder.
        checkpoints: checkpoint numbers to read (default: all, which must be contiguous).
        layout: ``auto`` (decide per file from ``add_count``), ``logged`` or ``circular``
            (see :mod:`atari_dt.datasets.replay_files`).
        stack_size: frames per state (4 in DQN-replay).

    Raises:
        ReplayFileError: missing or inconsistent files, gaps in the default selection, or several
            plain circular checkpoints (they overlap: select one).
    """

    def __init__(
        self,
        directory: str | Path,
        checkpoints: Sequence[int] | None = None,
        *,
        layout: LayoutName = "auto",
        stack_size: int = 4,
    ) -> None:
        self.directory = Path(directory)
        available = discover_checkpoints(self.directory)
        self.checkpoints = self._select(available, checkpoints)
        self.stack_size = stack_size
        last = self.checkpoints[-1]
        self.layouts = [
            read_layout(
                self.directory, c, is_last=(c == available[-1] and c == last), layout=layout
            )
            for c in self.checkpoints
        ]
        for lay in self.layouts[1:]:
            if lay.frame_shape != self.layouts[0].frame_shape:
                raise ReplayFileError(
                    f"{lay.path('observation')}: frames of shape {list(lay.frame_shape)}, but "
                    f"checkpoint {self.layouts[0].checkpoint} has "
                    f"{list(self.layouts[0].frame_shape)}"
                )
        circular = [lay.checkpoint for lay in self.layouts if lay.kind == "circular"]
        if circular and len(self.layouts) > 1:
            raise ReplayFileError(
                f"{self.directory}: checkpoints {circular} are plain dopamine snapshots of one "
                "circular buffer and overlap each other; select one, e.g. --checkpoints "
                f"{circular[-1]}"
            )

    def _select(self, available: list[int], requested: Sequence[int] | None) -> list[int]:
        if requested is None:
            expected = list(range(available[0], available[-1] + 1))
            if available != expected:
                missing = sorted(set(expected) - set(available))
                raise ReplayFileError(
                    f"{self.directory}: checkpoints {missing} are missing between {available[0]} "
                    f"and {available[-1]}; select a contiguous range with --checkpoints"
                )
            return available
        missing = sorted(set(requested) - set(available))
        if missing:
            raise ReplayFileError(
                f"{self.directory}: no checkpoint(s) {missing}; available: {_ranges(available)}"
            )
        return sorted(set(requested))

    @property
    def capacity(self) -> int:
        return self.layouts[0].capacity

    @property
    def frame_shape(self) -> tuple[int, ...]:
        return self.layouts[0].frame_shape

    @property
    def n_rows(self) -> int:
        """Observation rows the selected checkpoints' files hold (what a full read decompresses)."""
        return sum(lay.capacity for lay in self.layouts)

    def iter_blocks(self) -> Iterator[ReplayBlock]:
        """Yield one :class:`ReplayBlock` per checkpoint, in order. A gap in the selection ends
        one stream and starts another; an episode open at a stream's end is reported
        (incomplete) in the stream's last block."""
        state = SegmenterState()
        for i, lay in enumerate(self.layouts):
            if i == 0 or self.layouts[i - 1].next_transition != lay.first_transition:
                state = SegmenterState(n_kept=state.n_kept)
                self._start_stream(state, lay, look_at_frames=True)
            block = self._read_block(lay, state)
            is_last = i + 1 == len(self.layouts)
            if is_last or self.layouts[i + 1].first_transition != lay.next_transition:
                block.episodes.extend(finish_stream(state))
            yield block

    def read_alone(
        self, index: int, *, max_transitions: int | None = None, look_at_frames: bool = True
    ) -> ReplayBlock:
        """Checkpoint ``self.layouts[index]`` read as a stream of its own (store positions from
        0; episodes running into the previous or next checkpoint are cut, so incomplete).

        Args:
            index: which of the selected checkpoints (``0 .. len(self.layouts) - 1``).
            max_transitions: read only the first this many transitions in order of addition;
                an episode still open there is cut (incomplete).
            look_at_frames: when the previous dump's files are not on disk, whether to decide
                if the first episode starts right at the checkpoint from its leading frames
                (for a dump ``k > 0`` that decompresses the whole file: its first slot in order
                of addition is the file's last); False marks that episode cut instead.
        """
        lay = self.layouts[index]
        if max_transitions is not None:
            lay = dataclasses.replace(lay, n_slots=min(lay.n_slots, max_transitions))
        state = SegmenterState()
        self._start_stream(state, lay, look_at_frames=look_at_frames)
        block = self._read_block(lay, state)
        block.episodes.extend(finish_stream(state))
        return block

    def _start_stream(
        self, state: SegmenterState, lay: CheckpointLayout, *, look_at_frames: bool
    ) -> None:
        lead = None if lay.first_transition == 0 else self._lead_padding(lay, look_at_frames)
        start_stream(state, lay.first_transition, lead, self.stack_size)

    def check_values(self, n_actions: int, game: str) -> None:
        """Refuse logs that no agent of ``game`` could have written, before anything is
        converted: actions that are not integers in the game's action set ``[0, n_actions)``
        (e.g. logs of another game under this game's name) and rewards that are NaN or
        infinite. Reads only the small per-checkpoint files.

        Raises:
            ReplayFileError: names the file, its checkpoint, the bad values and their slots.
        """
        for lay in self.layouts:
            actions = load_npy_gz(lay.path("action"))[lay.slots]
            if actions.dtype.kind not in "biu":
                bad = ~(np.round(actions) == actions)  # NaN is not integral either
                if bad.any():
                    raise ReplayFileError(
                        f"{lay.path('action')}: checkpoint {lay.checkpoint} holds non-integer "
                        f"actions {_examples(actions, bad, lay)}"
                    )
            bad = (actions < 0) | (actions >= n_actions)
            if bad.any():
                foreign = (actions[bad] >= 0) & (actions[bad] < _FULL_ACTION_SET)
                why = (
                    "are these logs of another game? (the game comes from --game or the "
                    "<Game>/<run>/replay_logs path)"
                    if foreign.all()
                    else f"no Atari game has such actions (ALE's full set has "
                    f"{_FULL_ACTION_SET}): the file is damaged or not DQN-replay data"
                )
                raise ReplayFileError(
                    f"{lay.path('action')}: checkpoint {lay.checkpoint} holds actions outside "
                    f"{game}'s action set [0, {n_actions}): {_examples(actions, bad, lay)}; {why}"
                )
            rewards = load_npy_gz(lay.path("reward"))[lay.slots]
            bad = ~np.isfinite(rewards.astype(np.float64))
            if bad.any():
                raise ReplayFileError(
                    f"{lay.path('reward')}: checkpoint {lay.checkpoint} holds rewards that are "
                    f"not finite: {_examples(rewards, bad, lay)}"
                )

    def _lead_padding(self, lay: CheckpointLayout, look_at_frames: bool = True) -> int | None:
        """Padding at the start of a stream that begins at ``lay`` (see :func:`start_stream`):
        from the previous logged dump's terminal flags when that file is on disk (cheap), else
        from the leading transitions themselves (zero frames: one extra pass over the file), or
        None (starts mid-episode) when ``look_at_frames`` is False."""
        S, C = self.stack_size, lay.capacity
        if lay.kind != "circular" and lay.checkpoint > 0:
            previous = lay.checkpoint - 1
            try:
                add_count = int(load_npy_gz(replay_file(self.directory, "add_count", previous)))
                if add_count == lay.checkpoint * C - 1:  # a full logged dump: slot C-2 is g-1
                    terminals = load_npy_gz(replay_file(self.directory, "terminal", previous))
                    return padding_after(terminals[C - 1 - S : C - 1], S)
            except ReplayFileError:
                pass
        return leading_padding_count(lay, S) if look_at_frames else None

    def _read_block(self, lay: CheckpointLayout, state: SegmenterState) -> ReplayBlock:
        actions = load_npy_gz(lay.path("action"))[lay.slots].astype(np.int64)
        rewards = load_npy_gz(lay.path("reward"))[lay.slots].astype(np.float32)
        terminals = load_npy_gz(lay.path("terminal"))[lay.slots].astype(np.uint8)
        where = f"{lay.directory} checkpoint {lay.checkpoint}"
        keep, positions, episodes = segment_block(
            actions, rewards, terminals, state, stack_size=self.stack_size, where=where
        )
        return ReplayBlock(lay, actions, rewards, terminals, keep, positions, episodes)


def _examples(values: np.ndarray, bad: np.ndarray, lay: CheckpointLayout) -> str:
    """``'99, -3 (at slots 17, 40, ...; 5 in all)'``: the distinct bad values (up to 5) and
    where the first of them are in the file."""
    where = np.flatnonzero(bad)
    distinct = ", ".join(f"{v:g}" for v in np.unique(values[where].astype(np.float64))[:5])
    slots = ", ".join(str(int(slot)) for slot in lay.slots[where[:3]])
    more = ", ..." if len(where) > 3 else ""
    return f"{distinct} (at slots {slots}{more}; {len(where)} in all)"


def _ranges(numbers: list[int]) -> str:
    """``[0,1,2,5]`` -> ``'0-2,5'``."""
    parts: list[str] = []
    start = numbers[0]
    for i, number in enumerate(numbers):
        if i + 1 == len(numbers) or numbers[i + 1] != number + 1:
            parts.append(f"{start}-{number}" if number != start else f"{start}")
            start = numbers[i + 1] if i + 1 < len(numbers) else number
    return ",".join(parts)
