"""Atomic file writes: a killed process never leaves a half-written file that looks whole."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def temporary_sibling(path: Path) -> Path:
    """The temporary name ``path`` is written under before the final rename (same directory,
    so the rename is atomic on POSIX)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by processes that no longer run (killed with
    SIGKILL mid-write, say); returns what was removed. A live writer's temporary is kept."""
    removed = []
    for candidate in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        pid_text = candidate.name[len(Path(path).name) + 2 : -len(".tmp")]
        if not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        if candidate.is_dir():
            shutil.rmtree(candidate, ignore_errors=True)
        else:
            candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    On any exception (including KeyboardInterrupt) the temporary file is removed and ``path`` is
    left untouched, so an existing good file is never replaced by a partial one.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(final)
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory beside ``path``; on success it replaces ``path`` (an old
    directory there is removed only then), on any exception it is deleted and ``path`` kept."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    tmp = temporary_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(new: Path, final: Path) -> None:
    """Put the finished directory ``new`` at ``final``, removing an old one there first (a
    directory cannot be renamed over a non-empty one)."""
    if final.is_dir():
        shutil.rmtree(final)
    os.replace(new, final)


def atomic_write_bytes(path: str | os.PathLike[str], payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(payload)


def atomic_write_json(path: str | os.PathLike[str], value: Any) -> None:
    """Write ``value`` as indented JSON to ``path`` atomically."""
    atomic_write_bytes(path, (json.dumps(value, indent=2) + "\n").encode())


@contextlib.contextmanager
def deferred_interrupts() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, then raise KeyboardInterrupt: a write that must
    not be cut in half (one episode into a store) finishes first. Main thread only."""
    import signal

    received: list[int] = []

    def remember(signum: int, frame: object) -> None:
        received.append(signum)

    previous = {sig: signal.signal(sig, remember) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if received:
        raise KeyboardInterrupt(f"signal {received[0]}")
