"""Atomic file writes: a killed process never leaves a half-written file that looks whole.

Directories are replaced in steps that each leave a complete copy reachable (see
:func:`replace_directory`); :func:`recover_directory` finishes or undoes a replacement that a
killed process left half done.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from atari_dt.errors import UserError

# Test hook (tests/test_faults_data_loss.py): SIGKILL this process at the named step of
# replace_directory, to check that every crash point leaves a complete copy reachable.
CRASH_AT_ENV = "ATARI_DT_CRASH_AT"


def temporary_sibling(path: Path) -> Path:
    """The temporary name ``path`` is written under before the final rename (same directory,
    so the rename is atomic on POSIX)."""
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def aside_sibling(path: Path) -> Path:
    """The name an old directory at ``path`` is moved to while :func:`replace_directory` puts
    the new one in (same directory; deleted once the new one is in place)."""
    return path.with_name(f".{path.name}.{os.getpid()}.old")


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete temporaries of ``path`` left by processes that no longer run (killed with
    SIGKILL mid-write, say); returns what was removed. A live writer's temporary is kept."""
    removed = []
    for candidate in _dead_leftovers(Path(path), ".tmp"):
        _remove(candidate)
        removed.append(candidate)
    return removed


def is_stale_temporary(path: Path) -> bool:
    """Whether ``path`` is named as a temporary (``.<name>.<pid>.tmp``) of a process that no
    longer runs: debris of a killed write, nothing anyone will finish."""
    match = re.fullmatch(r"\..+\.(\d+)\.tmp", path.name)
    return match is not None and not _writer_alive(int(match.group(1)), path)


def _dead_leftovers(path: Path, suffix: str) -> list[Path]:
    """``.<name>.<pid><suffix>`` siblings of ``path`` whose process no longer runs, oldest
    first (by modification time)."""
    found = []
    for candidate in path.parent.glob(f".{path.name}.*{suffix}"):
        pid_text = candidate.name[len(path.name) + 2 : -len(suffix)]
        if pid_text.isdigit() and not _writer_alive(int(pid_text), candidate):
            found.append(candidate)
    return sorted(found, key=lambda p: p.lstat().st_mtime_ns)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _writer_alive(pid: int, leftover: Path) -> bool:
    """Whether the writer of the ``.<name>.<pid>.*`` ``leftover`` may still be writing it. In
    a container a killed run's PID is often the next run's too, so a leftover with our own PID
    is ours only if it was made after this process started (else it is a killed run's)."""
    if pid != os.getpid():
        return _process_alive(pid)
    import psutil

    started = psutil.Process().create_time()  # seconds since the epoch, ~10 ms resolution
    return leftover.lstat().st_mtime >= started - 0.05


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
    recover_directory(final)  # an old copy a killed swap left aside; its temporaries
    tmp = temporary_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def replace_directory(new: Path, final: Path) -> None:
    """Put the finished directory ``new`` at ``final``, crash-safely: a directory cannot be
    renamed over a non-empty one, so the old one is renamed aside first, the new one renamed
    in, and only then is the old one deleted. A SIGKILL at any point leaves a complete copy
    reachable, which :func:`recover_directory` (run by the next writer) puts back at ``final``:

    * before the first rename: ``final`` is the old copy, ``new`` the new one;
    * after it: ``final`` is missing, the old copy is at ``.<name>.<pid>.old``, the new one at
      ``new``;
    * after the second rename: ``final`` is the new copy, the old one is still aside;
    * while deleting the old copy: ``final`` is the new copy, the aside is partly deleted.
    """
    aside = aside_sibling(final)
    _crash_point("before-aside")
    if final.is_dir():
        os.replace(final, aside)
        _crash_point("after-aside")
    os.replace(new, final)
    _crash_point("after-swap")
    shutil.rmtree(aside, ignore_errors=True)


def recover_directory(
    final: str | os.PathLike[str], *, is_complete: Callable[[Path], bool] | None = None
) -> list[str]:
    """Finish or undo what killed processes left of :func:`replace_directory` and
    :func:`atomic_directory` around ``final``; returns one line per action taken.

    A dead process's temporary that ``is_complete`` accepts is a finished copy that was about
    to replace ``final``: the newest such one is put at ``final`` (crash-safely). Then an old
    copy left aside is moved back if ``final`` is missing, or deleted if ``final`` is there
    (``final`` only ever appears by renaming a finished copy in, so it is the newer one).
    Every other temporary of a dead process is deleted. Leftovers of live processes are kept.
    """
    final = Path(final)
    actions: list[str] = []
    complete = [t for t in _dead_leftovers(final, ".tmp") if is_complete and is_complete(t)]
    if complete:
        replace_directory(complete[-1], final)
        actions.append(f"recovered {final} from the finished copy {complete[-1].name}")
    asides = _dead_leftovers(final, ".old")
    if asides and not final.exists():
        os.replace(asides.pop(), final)  # newest: the copy that was at ``final`` last
        actions.append(f"recovered {final} from the copy left aside by a killed swap")
    for aside in asides:
        _remove(aside)
    for leftover in asides + remove_stale_temporaries(final):
        actions.append(f"removed {leftover.name}, left by a killed process")
    return actions


def describe_entries(directory: Path, limit: int = 5) -> str:
    """The first ``limit`` names in ``directory`` (``/`` after directories), for messages."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in directory.iterdir())
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def refuse_to_replace(path: Path, expected: str, found: str) -> UserError:
    """The error for ``--force`` onto ``path`` when it is not ``expected`` (what it holds
    instead: ``found``): nothing there is deleted."""
    return UserError(
        f"refusing to replace {path}: it is not {expected} ({found}); nothing was deleted. "
        "Choose another output path, or remove it yourself if it is really to go"
    )


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_AT_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


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


@contextlib.contextmanager
def staged_outputs(directory: str | os.PathLike[str]) -> Iterator[Path]:
    """A fresh temporary directory beside ``directory`` for one command's outputs: when the
    block succeeds each file moves into ``directory`` (created if needed, same-named files
    replaced); when it fails nothing of it appears. So a command's outputs (plots and JSON)
    are written together or not at all — a failure half-way never leaves PNGs without the
    JSON that explains them. (A kill during the final moves, a few renames long, can leave
    some files new and some old; each file is whole.)"""
    final = Path(directory).resolve()  # `--out .` has no name to put a sibling beside
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final)
    stage = temporary_sibling(final)
    _remove(stage)
    stage.mkdir()
    try:
        yield stage
        final.mkdir(parents=True, exist_ok=True)
        for path in sorted(stage.iterdir()):
            os.replace(path, final / path.name)
    finally:
        _remove(stage)
