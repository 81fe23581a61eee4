"""Gzip'd ``.npy`` files as dopamine writes them: streamed in chunks, never whole in memory.

A DQN-replay observation file is one ``np.save`` array of 1M x 84 x 84 bytes (7 GB) inside a gzip
stream. ``np.load`` would hold all of it; :class:`NpyGzipReader` parses the ``.npy`` header from
the stream and yields row chunks, so memory is bounded by the chunk size.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from atari_dt.errors import UserError
from atari_dt.io import atomic_path


class ReplayFileError(UserError):
    """A DQN-replay file is missing, truncated, corrupt, or holds an unexpected array."""


# Errors the gzip/zlib layers raise on truncated or corrupt input.
_STREAM_ERRORS = (EOFError, OSError, zlib.error, gzip.BadGzipFile)


class NpyGzipReader:
    """Read one gzip'd ``.npy`` array, header first, then rows in chunks.

    Args:
        path: the ``.gz`` file.

    Attributes:
        shape, dtype: of the stored array (checked against the header, not trusted blindly).

    Raises:
        ReplayFileError: the file is missing, not gzip, truncated, fails its CRC, or has a header
            numpy cannot parse (names the file).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise ReplayFileError(f"missing replay file: {self.path}")
        self._file = gzip.open(self.path, "rb")  # noqa: SIM115 (kept open; closed by close())
        try:
            version = npy_format.read_magic(self._file)
            read_header = (
                npy_format.read_array_header_1_0
                if version == (1, 0)
                else npy_format.read_array_header_2_0
            )
            shape, fortran_order, dtype = read_header(self._file)
        except (*_STREAM_ERRORS, ValueError) as err:
            self._file.close()
            raise ReplayFileError(f"{self.path}: not a gzip'd .npy array ({err})") from err
        if fortran_order and len(shape) > 1:
            self._file.close()
            raise ReplayFileError(f"{self.path}: Fortran-ordered arrays are not DQN-replay data")
        if dtype.hasobject:
            self._file.close()
            raise ReplayFileError(f"{self.path}: object arrays (pickles) are refused")
        self.shape: tuple[int, ...] = tuple(shape)
        self.dtype: np.dtype = dtype
        self._rows_read = 0

    @property
    def row_bytes(self) -> int:
        """Bytes of one row (one transition)."""
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def read_rows(self, n_rows: int) -> np.ndarray:
        """The next ``n_rows`` rows (fewer at the end), shape ``(n, *shape[1:])``."""
        if not self.shape:
            raise ReplayFileError(f"{self.path}: a 0-d array has no rows; use read_all()")
        n_rows = min(n_rows, self.shape[0] - self._rows_read)
        payload = self._read_exactly(n_rows * self.row_bytes)
        self._rows_read += n_rows
        return np.frombuffer(payload, dtype=self.dtype).reshape((n_rows, *self.shape[1:]))

    def _read_exactly(self, n_bytes: int) -> bytes:
        try:
            payload = self._file.read(n_bytes)
        except _STREAM_ERRORS as err:
            raise ReplayFileError(f"{self.path}: corrupt or truncated gzip stream ({err})") from err
        if len(payload) != n_bytes:
            raise ReplayFileError(
                f"{self.path}: truncated: expected {n_bytes} more bytes of array "
                f"{self.shape} {self.dtype}, got {len(payload)}"
            )
        return payload

    def iter_chunks(self, chunk_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(first_row, rows)`` until the array is exhausted, then check the stream ends
        cleanly (reading past the end makes gzip verify its CRC and length)."""
        while self._rows_read < self.shape[0]:
            start = self._rows_read
            yield start, self.read_rows(chunk_rows)
        self._check_end()

    def read_all(self) -> np.ndarray:
        """The whole array (for the small per-transition arrays, not observations)."""
        n_items = int(np.prod(self.shape, dtype=np.int64))
        payload = self._read_exactly(n_items * self.dtype.itemsize)
        self._check_end()
        return np.frombuffer(payload, dtype=self.dtype).reshape(self.shape).copy()

    def _check_end(self) -> None:
        try:
            trailing = self._file.read(1)
        except _STREAM_ERRORS as err:
            raise ReplayFileError(f"{self.path}: corrupt or truncated gzip stream ({err})") from err
        if trailing:
            raise ReplayFileError(f"{self.path}: unexpected bytes after the array {self.shape}")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> NpyGzipReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_npy_gz(path: str | Path) -> np.ndarray:
    """Load a whole gzip'd ``.npy`` array (small arrays only: actions, rewards, add_count, ...)."""
    with NpyGzipReader(path) as reader:
        return reader.read_all()


def save_npy_gz(path: str | Path, array: np.ndarray, compresslevel: int = 4) -> None:
    """Write ``array`` as ``np.save`` inside gzip, the way dopamine does, atomically."""
    with atomic_path(path) as tmp, gzip.open(tmp, "wb", compresslevel=compresslevel) as out:
        # C order always: np.save would mark a transposed array Fortran-ordered, which we refuse.
        np.save(out, np.require(np.asarray(array), requirements="C"), allow_pickle=False)
