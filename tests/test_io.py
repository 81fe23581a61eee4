"""Atomic writes: nothing half-written ever appears under the final name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atari_dt.io import (
    atomic_directory,
    atomic_path,
    atomic_write_json,
    remove_stale_temporaries,
    temporary_sibling,
)


def test_atomic_path_renames_only_on_success(tmp_path: Path) -> None:
    """A failing block leaves the old file byte for byte and no temporary; a good one replaces."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["out.bin"]
    atomic_write_json(target, {"a": 1})
    assert target.read_text() == '{\n  "a": 1\n}\n'


def test_atomic_directory_keeps_old_directory_on_failure(tmp_path: Path) -> None:
    """An interrupted directory write keeps the previous directory and removes its temporary."""
    target = tmp_path / "replay_logs"
    target.mkdir()
    (target / "old.gz").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_directory(target) as tmp:
        (tmp / "new.gz").write_bytes(b"new")
        raise KeyboardInterrupt
    assert sorted(os.listdir(tmp_path)) == ["replay_logs"]
    assert sorted(os.listdir(target)) == ["old.gz"]
    with atomic_directory(target) as tmp:
        (tmp / "new.gz").write_bytes(b"new")
    assert sorted(os.listdir(target)) == ["new.gz"]


def test_stale_temporaries_of_dead_processes_are_removed(tmp_path: Path) -> None:
    """Temporaries of a dead writer (SIGKILLed) are removed; a live writer's are kept."""
    target = tmp_path / "store.h5"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    dead_tmp = tmp_path / f".store.h5.{int(dead.stdout)}.tmp"
    dead_tmp.write_bytes(b"partial")
    dead_dir = tmp_path / f".store.h5.{int(dead.stdout) + 0}.tmp.d"  # not a temporary name
    dead_dir.mkdir()
    live_tmp = temporary_sibling(target)  # this process's own
    live_tmp.write_bytes(b"in progress")
    removed = remove_stale_temporaries(target)
    assert removed == [dead_tmp]
    assert live_tmp.exists() and dead_dir.exists() and not dead_tmp.exists()
