"""Gzip'd ``.npy`` files: round trips, chunked streaming, and refusal of bad files."""

from __future__ import annotations

import gzip
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from numpy.lib import format as npy_format

from atari_dt.datasets.npy_gzip import (
    NpyGzipReader,
    ReplayFileError,
    load_npy_gz,
    save_npy_gz,
)


def _frames(n: int, seed: int = 0) -> np.ndarray:
    """Compressible uint8 frames with some noise (like Atari screens): ``[n, 84, 84]``."""
    rng = np.random.default_rng(seed)
    base = (np.arange(84 * 84, dtype=np.int64).reshape(84, 84) // 97 % 7 * 30).astype(np.uint8)
    frames = np.repeat(base[None], n, axis=0)
    noise = rng.random(frames.shape) < 0.05
    frames[noise] = rng.integers(0, 256, int(noise.sum()), dtype=np.uint8)
    return frames


def _write_gz(path: Path, payload: bytes) -> Path:
    """Write ``payload`` gzip-compressed to ``path``."""
    with gzip.open(path, "wb") as out:
        out.write(payload)
    return path


def _npy_bytes(array: np.ndarray, **save_options: object) -> bytes:
    """``np.save`` of ``array`` into memory."""
    buffer = io.BytesIO()
    np.save(buffer, array, **save_options)  # type: ignore[arg-type]
    return buffer.getvalue()


def _no_temporaries(folder: Path) -> bool:
    """True when ``folder`` holds no ``.NAME.<pid>.tmp`` leftover of an atomic write."""
    return not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


ROUND_TRIP_ARRAYS = {
    "frames_uint8": _frames(9),
    "actions_int32": np.arange(-5, 40, dtype=np.int32),
    "rewards_float32": np.linspace(-1, 1, 33, dtype=np.float32),
    "terminal_uint8": (np.arange(50) % 7 == 0).astype(np.uint8),
    "add_count_0d": np.array(1_000_000 - 1, dtype=np.int64),
    "bool": np.array([True, False, True]),
    "big_endian": np.arange(10, dtype=">i4"),
    "empty_frames": np.zeros((0, 84, 84), dtype=np.uint8),
    "float64_2d": np.random.default_rng(1).normal(size=(5, 7)),
}


@pytest.mark.parametrize("name", sorted(ROUND_TRIP_ARRAYS))
def test_save_load_round_trip(tmp_path: Path, name: str) -> None:
    """save_npy_gz then load_npy_gz gives back the same values, dtype and shape."""
    array = ROUND_TRIP_ARRAYS[name]
    path = tmp_path / f"{name}.gz"
    save_npy_gz(path, array)
    loaded = load_npy_gz(path)
    assert loaded.dtype == array.dtype
    assert loaded.shape == array.shape
    np.testing.assert_array_equal(loaded, array)
    loaded.flat[:1] = 0  # a writable copy, not a view of a read-only buffer
    with NpyGzipReader(path) as reader:
        assert reader.shape == array.shape
        assert reader.dtype == array.dtype


def test_saved_file_is_plain_gzip_npy(tmp_path: Path) -> None:
    """The file is what dopamine writes: np.load(gzip.GzipFile(...)) reads it without atari_dt."""
    array = _frames(4)
    path = tmp_path / "$store$_observation_ckpt.0.gz"
    save_npy_gz(path, array, compresslevel=1)
    with path.open("rb") as raw:
        plain = np.load(gzip.GzipFile(fileobj=raw), allow_pickle=False)
    np.testing.assert_array_equal(plain, array)
    assert _no_temporaries(tmp_path)


def test_reads_files_written_by_np_save_in_gzip(tmp_path: Path) -> None:
    """A file made the dopamine way (np.save into a gzip stream) loads with load_npy_gz."""
    array = np.arange(1000, dtype=np.int32) % 18
    path = _write_gz(tmp_path / "a.gz", _npy_bytes(array, allow_pickle=False))
    np.testing.assert_array_equal(load_npy_gz(path), array)


def test_reads_npy_format_version_2(tmp_path: Path) -> None:
    """A version 2.0 .npy header (4-byte header length) is parsed too."""
    array = np.arange(60, dtype=np.uint8).reshape(5, 3, 4)
    buffer = io.BytesIO()
    npy_format.write_array(buffer, array, version=(2, 0))
    path = _write_gz(tmp_path / "v2.gz", buffer.getvalue())
    with NpyGzipReader(path) as reader:
        chunks = [rows for _, rows in reader.iter_chunks(2)]
    np.testing.assert_array_equal(np.concatenate(chunks), array)


def test_round_trip_of_transposed_view(tmp_path: Path) -> None:
    """save_npy_gz accepts any array; what it writes for a transposed view loads back equal."""
    array = np.arange(24, dtype=np.uint8).reshape(4, 6).T
    save_npy_gz(tmp_path / "t.gz", array)
    np.testing.assert_array_equal(load_npy_gz(tmp_path / "t.gz"), array)


@pytest.mark.parametrize(
    ("n_rows", "chunk_rows"), [(23, 5), (23, 7), (23, 23), (23, 100), (10, 1), (0, 4)]
)
def test_iter_chunks_gives_exactly_the_array(tmp_path: Path, n_rows: int, chunk_rows: int) -> None:
    """iter_chunks yields consecutive (first_row, rows) blocks of at most chunk_rows that
    concatenate to exactly the stored array, whether or not chunk_rows divides its length."""
    array = _frames(n_rows, seed=n_rows)
    save_npy_gz(tmp_path / "obs.gz", array)
    starts, chunks = [], []
    with NpyGzipReader(tmp_path / "obs.gz") as reader:
        for first_row, rows in reader.iter_chunks(chunk_rows):
            starts.append(first_row)
            chunks.append(rows)
    assert starts == list(range(0, n_rows, chunk_rows))
    assert all(0 < len(c) <= chunk_rows for c in chunks)
    assert sum(len(c) for c in chunks) == n_rows
    if chunks:
        np.testing.assert_array_equal(np.concatenate(chunks), array)


def test_row_bytes_and_read_rows(tmp_path: Path) -> None:
    """row_bytes is one frame's size; read_rows returns fewer rows at the end of the array."""
    array = _frames(5)
    save_npy_gz(tmp_path / "obs.gz", array)
    with NpyGzipReader(tmp_path / "obs.gz") as reader:
        assert reader.row_bytes == 84 * 84
        np.testing.assert_array_equal(reader.read_rows(3), array[:3])
        np.testing.assert_array_equal(reader.read_rows(10), array[3:])
        assert reader.read_rows(4).shape == (0, 84, 84)


def test_read_rows_of_0d_array_is_refused(tmp_path: Path) -> None:
    """A 0-d array (add_count) has no rows: read_rows names the file and says use read_all."""
    save_npy_gz(tmp_path / "add_count_ckpt.0.gz", np.array(7))
    with (
        NpyGzipReader(tmp_path / "add_count_ckpt.0.gz") as reader,
        pytest.raises(ReplayFileError, match=r"add_count_ckpt\.0\.gz: a 0-d array has no rows"),
    ):
        reader.read_rows(1)


def _truncate(path: Path, keep: float | int) -> None:
    """Keep a fraction (float) or all but ``-keep`` bytes (negative int) of ``path``."""
    data = path.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else len(data) + keep
    path.write_bytes(data[:cut])


@pytest.mark.parametrize("keep", [0.5, 0.9, -8, -4, -1], ids=lambda k: f"keep{k}")
@pytest.mark.parametrize("content", ["frames", "random"])
def test_truncated_file_is_refused(tmp_path: Path, keep: float | int, content: str) -> None:
    """A gzip file cut short (mid-data, or just its CRC/length trailer) raises ReplayFileError
    naming the file, both when loaded whole and when streamed in chunks."""
    rng = np.random.default_rng(3)
    array = _frames(20) if content == "frames" else rng.integers(0, 256, (20, 84, 84), np.uint8)
    path = tmp_path / "$store$_observation_ckpt.3.gz"
    save_npy_gz(path, array)
    _truncate(path, keep)
    pattern = re.escape(str(path)) + r".*(truncated|corrupt)"
    with pytest.raises(ReplayFileError, match=pattern):
        load_npy_gz(path)
    with pytest.raises(ReplayFileError, match=pattern), NpyGzipReader(path) as reader:
        for _ in reader.iter_chunks(3):
            pass


@pytest.mark.parametrize("where", [0.3, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("content", ["frames", "random"])
def test_corrupted_byte_is_refused(tmp_path: Path, where: float, content: str) -> None:
    """One flipped byte inside the compressed stream is detected (zlib error or CRC mismatch)."""
    rng = np.random.default_rng(4)
    array = _frames(20) if content == "frames" else rng.integers(0, 256, (20, 84, 84), np.uint8)
    path = tmp_path / "obs.gz"
    save_npy_gz(path, array)
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ReplayFileError, match=re.escape(str(path))), NpyGzipReader(path) as reader:
        for _ in reader.iter_chunks(6):
            pass
    with pytest.raises(ReplayFileError, match=re.escape(str(path))):
        load_npy_gz(path)


@pytest.mark.parametrize(
    "payload",
    [
        _npy_bytes(np.arange(5)),  # an uncompressed .npy named .gz
        b"hello, this is not numpy",
        b"",
    ],
    ids=["plain_npy", "text", "empty"],
)
def test_non_gzip_file_is_refused(tmp_path: Path, payload: bytes) -> None:
    """A file that is not gzip at all raises ReplayFileError 'not a gzip'd .npy array'."""
    path = tmp_path / "$store$_action_ckpt.0.gz"
    path.write_bytes(payload)
    with pytest.raises(ReplayFileError, match=re.escape(f"{path}: not a gzip'd .npy array")):
        load_npy_gz(path)


def test_gzip_of_non_npy_is_refused(tmp_path: Path) -> None:
    """A valid gzip stream whose content is not a .npy array raises ReplayFileError."""
    path = _write_gz(tmp_path / "x.gz", b"just some text, long enough to pass a header read" * 4)
    with pytest.raises(ReplayFileError, match=re.escape("not a gzip'd .npy array")):
        load_npy_gz(path)


def test_trailing_bytes_after_array_are_refused(tmp_path: Path) -> None:
    """Extra bytes after the array inside the gzip stream are reported, not silently ignored."""
    path = _write_gz(tmp_path / "x.gz", _npy_bytes(np.arange(6, dtype=np.int32)) + b"junk")
    with pytest.raises(ReplayFileError, match="unexpected bytes after the array"):
        load_npy_gz(path)


class _Tripwire:
    """Unpickling it creates a directory: proves whether a reader unpickled the data."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.marker),)


def test_object_array_is_refused_without_unpickling(tmp_path: Path) -> None:
    """An object array saved with allow_pickle=True is refused, and its pickle never runs."""
    marker = tmp_path / "unpickled"
    array = np.array([_Tripwire(marker), 1], dtype=object)
    path = _write_gz(tmp_path / "obj.gz", _npy_bytes(array, allow_pickle=True))
    with pytest.raises(ReplayFileError, match=r"object arrays \(pickles\) are refused"):
        load_npy_gz(path)
    with pytest.raises(ReplayFileError, match="refused"):
        NpyGzipReader(path)
    assert not marker.exists()


def test_fortran_ordered_file_is_refused(tmp_path: Path) -> None:
    """A 2-D Fortran-ordered array is not DQN-replay data and is refused."""
    array = np.asfortranarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    path = _write_gz(tmp_path / "f.gz", _npy_bytes(array))
    with pytest.raises(ReplayFileError, match="Fortran-ordered"):
        load_npy_gz(path)


def test_missing_file(tmp_path: Path) -> None:
    """A missing file raises ReplayFileError 'missing' naming it."""
    path = tmp_path / "$store$_reward_ckpt.4.gz"
    with pytest.raises(ReplayFileError, match=re.escape(f"missing replay file: {path}")):
        load_npy_gz(path)
    with pytest.raises(ReplayFileError, match="missing"):
        NpyGzipReader(tmp_path)  # a directory is not a file either


def test_failed_save_leaves_old_file_and_no_temporary(tmp_path: Path) -> None:
    """save_npy_gz is atomic: a failing save (object array) keeps the old file byte for byte."""
    path = tmp_path / "a.gz"
    save_npy_gz(path, np.arange(4))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="allow_pickle"):
        save_npy_gz(path, np.array([{"a": 1}], dtype=object))
    assert path.read_bytes() == before
    assert _no_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gz"]
