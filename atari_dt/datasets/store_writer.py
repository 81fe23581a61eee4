"""Write an episode store (layout in :mod:`atari_dt.datasets.store`) atomically.

The file is built under a temporary name and renamed onto its final path only by
:meth:`EpisodeStoreWriter.close`, after returns-to-go are computed and the ``finalized``
attribute is set: an interrupted write leaves no file that looks complete. Every dataset's
checksums (``/checksums``, see :mod:`atari_dt.datasets.store`) are computed as rows are written,
so ``data verify`` can tell later whether a single bit changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt import __version__
from atari_dt.datasets.rtg import returns_to_go
from atari_dt.datasets.store import (
    CHECKSUMS,
    STORE_FORMAT,
    STORE_FORMAT_VERSION,
    block_digests,
    checksum_block_rows,
    checksummed_datasets,
)
from atari_dt.io import remove_stale_temporaries, temporary_sibling


def h5py_string() -> Any:
    """HDF5 variable-length UTF-8 string type."""
    import h5py

    return h5py.string_dtype()


# Episodes are finalised in groups of about this many transitions (bounded memory).
_FINALIZE_GROUP = 1 << 20


class _BlockHasher:
    """The SHA-256 of each block of ``block_rows`` rows of one dataset, fed with rows as they
    are written. A block whose rows arrive in order from its start is hashed on the fly; any
    other (written out of order, e.g. a DQN-replay dump's first slot comes last in its file, or
    only partly before a resume) is read back once by :meth:`finish`. So the digests are always
    those of the rows as stored, and the fast path only saves reading them again."""

    def __init__(self, block_rows: int, digests: dict[int, bytes] | None = None) -> None:
        self.block_rows = block_rows
        self.digests = dict(digests or {})  # finished blocks
        self._open: dict[int, tuple[Any, int]] = {}  # block -> (sha256 so far, rows hashed)
        self._stale: set[int] = set()  # blocks to read back

    def update(self, start: int, rows: np.ndarray) -> None:
        """Rows ``start .. start + len(rows) - 1`` were written with exactly these values."""
        done = 0
        while done < len(rows):
            block, offset = divmod(start + done, self.block_rows)
            take = min(self.block_rows - offset, len(rows) - done)
            self.digests.pop(block, None)  # rewritten rows invalidate a finished digest
            hasher, hashed = self._open.pop(block, (None, 0))
            if block in self._stale or offset != hashed:
                self._stale.add(block)
            else:
                hasher = hasher or hashlib.sha256()
                hasher.update(np.ascontiguousarray(rows[done : done + take]))
                hashed += take
                if hashed == self.block_rows:
                    self.digests[block] = hasher.digest()
                else:
                    self._open[block] = (hasher, hashed)
            done += take

    def finish(self, dataset: Any) -> list[bytes]:
        """Every block's digest, reading back the blocks not hashed in order."""
        n = dataset.shape[0]
        n_blocks = -(-n // self.block_rows)
        last = n_blocks - 1
        if last in self._open and last not in self._stale:
            hasher, hashed = self._open[last]
            if hashed == n - last * self.block_rows:  # a short final block, hashed whole
                self.digests[last] = hasher.digest()
        missing = [block for block in range(n_blocks) if block not in self.digests]
        self.digests.update(block_digests(dataset, self.block_rows, missing))
        return [self.digests[block] for block in range(n_blocks)]


_SPACE_MARGIN = 4 << 20  # bytes kept free for the episode tables, RTG and HDF5's metadata


class EpisodeStoreWriter:
    """Append transitions and episodes, then :meth:`close` to finalise (or :meth:`abort`).

    Args:
        path: final ``.h5`` path (written only on success).
        game: canonical game name, e.g. ``Seaquest``.
        frame_shape: shape of one frame.
        n_actions: size of the action set, when known.
        source, preprocessing, behaviour_policy: JSON-able metadata saved as attributes.
        raw_rewards, ram, objects: which optional per-transition arrays the store holds
            (``objects`` names the game objects with an ``(x, y)`` position).
        compression: ``gzip``, ``lzf`` or None for the frames; ``compression_level`` for gzip.
        chunk_frames: frames per HDF5 chunk.
        overwrite: replace an existing file at ``path`` on success (else refuse up front).

    Use as a context manager: an exception inside the block aborts the write.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        game: str,
        frame_shape: tuple[int, int] = (84, 84),
        n_actions: int | None = None,
        source: dict[str, Any] | None = None,
        preprocessing: dict[str, Any] | None = None,
        behaviour_policy: dict[str, Any] | None = None,
        raw_rewards: bool = False,
        ram: bool = False,
        objects: tuple[str, ...] = (),
        compression: str | None = "gzip",
        compression_level: int = 1,
        chunk_frames: int = 64,
        overwrite: bool = False,
    ) -> None:
        import h5py

        self.path = Path(path)
        if self.path.is_dir():
            raise IsADirectoryError(f"{self.path} is a directory; an episode store is one file")
        if self.path.exists() and not overwrite:
            raise FileExistsError(
                f"{self.path} exists; pass overwrite=True (--force) to replace it"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        self.frame_shape = tuple(frame_shape)
        self.n_actions = n_actions
        self._spans: list[tuple[int, int, bool]] = []
        self._behaviours: list[str] = []  # JSON per episode, "" when not recorded
        self.n_transitions = 0
        self._tmp = temporary_sibling(self.path)
        self._h5 = h5py.File(self._tmp, "w")
        try:
            self._write_attrs(game, n_actions, source, preprocessing, behaviour_policy)
            options = {"compression": compression}
            if compression == "gzip":
                options["compression_opts"] = compression_level
            self._create_datasets(raw_rewards, ram, objects, options, chunk_frames)
            self._hashers = {
                name: _BlockHasher(self._block_rows(name))
                for name in checksummed_datasets(self._h5)
            }
        except BaseException:  # e.g. an unknown compression: leave no temporary file
            self.abort()
            raise

    @classmethod
    def resume(cls, path: str | Path) -> EpisodeStoreWriter:
        """Continue a finalized store: its content is copied to the temporary file, episode
        tables and returns-to-go are dropped (recomputed by :meth:`close`), and new episodes
        are appended after the old ones. ``path`` is untouched until :meth:`close`.

        Raises:
            StoreFormatError: ``path`` is not a readable finalized store.
        """
        import shutil

        import h5py

        from atari_dt.datasets.store import EpisodeStore

        with EpisodeStore.open(path) as store:  # validates format, version, finalized
            spans = list(zip(store.offsets, store.lengths, store.complete, strict=True))
            behaviours = [json.dumps(b) if b is not None else "" for b in store.behaviours]
            frame_shape = store.frame_shape
        writer = cls.__new__(cls)
        writer.path = Path(path)
        writer.frame_shape = tuple(frame_shape)
        writer._tmp = temporary_sibling(writer.path)
        remove_stale_temporaries(writer.path)
        shutil.copyfile(writer.path, writer._tmp)
        writer._h5 = h5py.File(writer._tmp, "a")
        for name in ("episodes", "rtg", "raw_rtg"):
            if name in writer._h5:
                del writer._h5[name]
        writer._h5.attrs["finalized"] = False
        writer._h5.attrs["frame_shape"] = np.array(writer.frame_shape, dtype=np.int64)
        writer.n_actions = (
            int(writer._h5.attrs["n_actions"]) if "n_actions" in writer._h5.attrs else None
        )
        writer._hashers = writer._resumed_hashers()
        writer._spans = [(int(o), int(n), bool(c)) for o, n, c in spans]
        writer._behaviours = behaviours
        writer.n_transitions = int(writer._h5["actions"].shape[0])
        return writer

    def _block_rows(self, name: str) -> int:
        dataset = self._h5[name]
        return checksum_block_rows(dataset.shape[1:], dataset.dtype)

    def _resumed_hashers(self) -> dict[str, _BlockHasher]:
        """Hashers that keep the copied store's digests of whole blocks (so a resume reads back
        at most each dataset's last, partial block), then drop ``/checksums`` (rewritten at
        :meth:`close`). A store written before checksums existed is read back whole, once."""
        recorded = self._h5.get(CHECKSUMS, {})
        hashers = {}
        for name in checksummed_datasets(self._h5):
            block_rows, digests = self._block_rows(name), {}
            if name in recorded:
                block_rows = int(recorded[name].attrs.get("block_rows", block_rows))
                whole = self._h5[name].shape[0] // block_rows
                table = recorded[name][:whole]
                digests = {block: bytes(row) for block, row in enumerate(table)}
            hashers[name] = _BlockHasher(block_rows, digests)
        if CHECKSUMS in self._h5:
            del self._h5[CHECKSUMS]
        return hashers

    def _create_datasets(
        self,
        raw_rewards: bool,
        ram: bool,
        objects: tuple[str, ...],
        options: dict[str, Any],
        chunk_frames: int,
    ) -> None:
        frame_shape = self.frame_shape
        self._h5.create_dataset(
            "frames",
            shape=(0, *frame_shape),
            maxshape=(None, *frame_shape),
            dtype=np.uint8,
            chunks=(chunk_frames, *frame_shape),
            **options,
        )
        columns = {"actions": np.int32, "rewards": np.float32, "terminals": np.uint8}
        if raw_rewards:
            columns["raw_rewards"] = np.float32
        for name, dtype in columns.items():
            self._h5.create_dataset(
                name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(1 << 14,)
            )
        if ram:
            self._h5.create_dataset(
                "ram",
                shape=(0, 128),
                maxshape=(None, 128),
                dtype=np.uint8,
                chunks=(1024, 128),
                **options,
            )
        for name in objects:
            self._h5.create_dataset(
                f"objects/{name}",
                shape=(0, 2),
                maxshape=(None, 2),
                dtype=np.float32,
                chunks=(4096, 2),
            )

    def _write_attrs(self, game: str, n_actions: int | None, *metadata: dict | None) -> None:
        attrs = self._h5.attrs
        attrs["format"] = STORE_FORMAT
        attrs["format_version"] = STORE_FORMAT_VERSION
        attrs["finalized"] = False
        attrs["game"] = game
        attrs["created_by"] = f"atari-dt {__version__}"
        attrs["frame_shape"] = np.array(self.frame_shape, dtype=np.int64)
        if n_actions is not None:
            attrs["n_actions"] = int(n_actions)
        for key, value in zip(
            ("source", "preprocessing", "behaviour_policy"), metadata, strict=True
        ):
            attrs[key] = json.dumps(value or {})

    def append_transitions(
        self,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminals: np.ndarray,
        *,
        raw_rewards: np.ndarray | None = None,
        ram: np.ndarray | None = None,
        objects: dict[str, np.ndarray] | None = None,
    ) -> int:
        """Append per-transition arrays (frames come separately, :meth:`write_frames`).

        Returns:
            the store position of the first appended transition.

        Raises:
            ValueError: lengths differ, or an optional array is given/missing against the
                store's declared layout.
        """
        start, count = self.n_transitions, len(actions)
        given = {"actions": actions, "rewards": rewards, "terminals": terminals}
        if "raw_rewards" in self._h5 or raw_rewards is not None:
            given["raw_rewards"] = raw_rewards
        if "ram" in self._h5 or ram is not None:
            given["ram"] = ram
        for name in self._h5.get("objects", {}):
            given[f"objects/{name}"] = (objects or {}).get(name)
        for name, values in given.items():
            if name not in self._h5:
                raise ValueError(f"{self.path}: the store was created without {name!r}")
            if values is None or len(values) != count:
                got = "nothing" if values is None else f"length {len(values)}"
                raise ValueError(f"{name}: expected {count} values (one per action), got {got}")
        self._check_values(given)
        self._check_space(sum(np.asarray(v).nbytes for v in given.values()))
        self.n_transitions += count
        self._h5["frames"].resize(self.n_transitions, axis=0)
        for name, values in given.items():
            dataset = self._h5[name]
            # converted here, so the bytes hashed are the bytes stored
            stored = np.asarray(values).astype(dataset.dtype, copy=False)
            dataset.resize(self.n_transitions, axis=0)
            dataset[start : start + count] = stored
            self._hashers[name].update(start, stored)
        return start

    def _check_values(self, given: dict[str, Any]) -> None:
        """Refuse what no store may hold (before anything is appended): actions outside
        ``[0, n_actions)`` or non-integral, non-finite rewards."""
        actions = np.asarray(given["actions"])
        if actions.dtype.kind == "f" and not (np.round(actions) == actions).all():
            raise ValueError(f"{self.path}: actions must be integers, got {actions.dtype} values")
        upper = self.n_actions
        bad = (actions < 0) | (actions >= upper) if upper is not None else actions < 0
        if bad.any():
            raise ValueError(
                f"{self.path}: actions {np.unique(actions[bad])[:5].tolist()} are outside the "
                f"game's action set [0, {upper if upper is not None else 'n_actions'})"
            )
        for name in ("rewards", "raw_rewards"):
            if name in given and not np.isfinite(np.asarray(given[name], np.float64)).all():
                raise ValueError(f"{self.path}: {name} must be finite (got NaN or inf)")

    def write_frames(self, position: int, frames: np.ndarray) -> None:
        """Write ``frames`` (uint8 ``[m, H, W]``) at store positions ``position .. position+m-1``
        (already appended with :meth:`append_transitions`)."""
        self._check_frames(frames)
        if position < 0 or position + len(frames) > self.n_transitions:
            raise ValueError(
                f"frames {position}..{position + len(frames) - 1} lie outside the "
                f"{self.n_transitions} appended transitions"
            )
        self._check_space(frames.nbytes)
        self._h5["frames"][position : position + len(frames)] = frames
        self._hashers["frames"].update(position, frames)

    def _check_space(self, nbytes: int) -> None:
        """Refuse a write the disk has no room for, before HDF5 tries it. HDF5 reports a full
        disk late (from its chunk cache, at a later read or at close), cannot then close the
        file, and its teardown at exit crashes; so the uncompressed size (an upper bound on
        the compressed one) plus room for the episode tables must be free.

        Raises:
            OSError: ``ENOSPC`` naming the store (the CLI prints it in one line).
        """
        import errno
        import shutil

        free = shutil.disk_usage(self._tmp.parent).free
        if free < nbytes + _SPACE_MARGIN:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))

    def _check_frames(self, frames: np.ndarray) -> None:
        if frames.dtype != np.uint8 or tuple(frames.shape[1:]) != self.frame_shape:
            raise ValueError(
                f"frames must be uint8 [m, {self.frame_shape[0]}, {self.frame_shape[1]}], "
                f"got {frames.dtype} {list(frames.shape)}"
            )

    def add_span(
        self, offset: int, length: int, complete: bool, behaviour: dict[str, Any] | None = None
    ) -> None:
        """Declare an episode over already appended transitions; ``behaviour`` (JSON-able)
        records how it was played, e.g. which mixture component and epsilon."""
        self._spans.append((int(offset), int(length), bool(complete)))
        self._behaviours.append(json.dumps(behaviour) if behaviour is not None else "")

    @property
    def n_episodes(self) -> int:
        """Episodes declared so far."""
        return len(self._spans)

    def set_metadata(self, key: str, value: dict[str, Any]) -> None:
        """Save a JSON-able root attribute (read back in ``EpisodeStore.metadata``)."""
        self._h5.attrs[key] = json.dumps(value)

    def add_episode(
        self,
        frames: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        *,
        complete: bool = True,
        terminated: bool | None = None,
        raw_rewards: np.ndarray | None = None,
        ram: np.ndarray | None = None,
        objects: dict[str, np.ndarray] | None = None,
        behaviour: dict[str, Any] | None = None,
    ) -> None:
        """Append one whole episode. ``terminated`` (default: ``complete``) sets the terminal
        flag on its last transition; ``rewards`` are stored clipped to [-1, 1]."""
        if len(frames) == 0:
            raise ValueError("an episode needs at least one transition")
        if len(frames) != len(actions):
            raise ValueError(f"{len(frames)} frames but {len(actions)} actions")
        self._check_frames(np.asarray(frames))  # before appending anything: all or nothing
        terminals = np.zeros(len(actions), dtype=np.uint8)
        terminals[-1] = complete if terminated is None else terminated
        start = self.append_transitions(
            actions,
            np.clip(rewards, -1.0, 1.0),
            terminals,
            raw_rewards=raw_rewards,
            ram=ram,
            objects=objects,
        )
        self.write_frames(start, np.asarray(frames))
        self.add_span(start, len(actions), complete, behaviour)

    def close(self) -> Path:
        """Compute returns-to-go and episode tables, mark finalised, rename onto ``path``.

        Raises:
            ValueError: the declared episodes do not tile the appended transitions in order.
        """
        try:
            # the tables and returns-to-go it writes (8 B per transition for each RTG column)
            self._check_space(16 * self.n_transitions + 64 * self.n_episodes)
            self._finalize()
            self._h5.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def _finalize(self) -> None:
        spans = np.array(self._spans, dtype=np.int64).reshape(-1, 3)
        offsets, lengths = spans[:, 0], spans[:, 1]
        expected = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(spans) else offsets
        if (
            (lengths <= 0).any()
            or not np.array_equal(offsets, expected)
            or (int(lengths.sum()) != self.n_transitions)
        ):
            raise ValueError(
                f"{self.path}: episodes must tile the {self.n_transitions} transitions in order "
                f"(got {len(spans)} episodes covering {int(lengths.sum())})"
            )
        group = self._h5.create_group("episodes")
        group["offset"] = offsets
        group["length"] = lengths
        group["complete"] = spans[:, 2].astype(bool)
        if any(self._behaviours):
            group.create_dataset("behaviour", data=self._behaviours, dtype=h5py_string())
        for reward_key, rtg_key, return_key in (
            ("rewards", "rtg", "return"),
            ("raw_rewards", "raw_rtg", "raw_return"),
        ):
            if reward_key in self._h5:
                group[return_key] = self._write_rtg(reward_key, rtg_key, lengths)
        self._write_checksums()
        self._h5.attrs["finalized"] = True

    def _write_checksums(self) -> None:
        """``/checksums/<name>`` of every numeric dataset (the small episode tables hashed
        here, the rest by their hashers as they were written)."""
        for name in checksummed_datasets(self._h5):
            hasher = self._hashers.get(name) or _BlockHasher(self._block_rows(name))
            digests = hasher.finish(self._h5[name])
            table = np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), 32)
            checksum = self._h5.create_dataset(f"{CHECKSUMS}/{name}", data=table)
            checksum.attrs["block_rows"] = hasher.block_rows
            checksum.attrs["algorithm"] = "sha256"

    def _write_rtg(self, reward_key: str, rtg_key: str, lengths: np.ndarray) -> np.ndarray:
        """Write returns-to-go in groups of whole episodes; return float32 ``[E]`` returns."""
        rtg = self._h5.create_dataset(
            rtg_key,
            shape=(self.n_transitions,),
            dtype=np.float32,
            chunks=(min(1 << 14, self.n_transitions),) if self.n_transitions else None,
        )
        hasher = self._hashers[rtg_key] = _BlockHasher(self._block_rows(rtg_key))
        ends = np.cumsum(lengths)
        returns = np.zeros(len(lengths), dtype=np.float32)
        first_episode, start = 0, 0
        while first_episode < len(lengths):
            last = int(np.searchsorted(ends, start + _FINALIZE_GROUP, side="right"))
            last = max(last, first_episode + 1)
            stop = int(ends[last - 1])
            rewards = self._h5[reward_key][start:stop]
            group_rtg = returns_to_go(rewards, lengths[first_episode:last]).astype(np.float32)
            rtg[start:stop] = group_rtg
            hasher.update(start, group_rtg)
            returns[first_episode:last] = group_rtg[
                ends[first_episode:last] - lengths[first_episode:last] - start
            ]
            first_episode, start = last, stop
        return returns

    def abort(self) -> None:
        """Drop the temporary file; nothing appears at ``path``."""
        with contextlib.suppress(Exception):
            self._h5.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> EpisodeStoreWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
