"""Nothing is lost (issue 13, items 1 and 2): every input is checked before ``--force``
deletes anything, ``--force`` only replaces what this project wrote (a run, dqn-replay logs,
an episode store), and a SIGKILL at any step of the directory swap that ends a dqn-replay
``collect`` leaves a complete copy that the next run puts back.

Each test's name is the promise; the data is real (ALE frames collected by the project, a
trained run), the kills are real SIGKILLs at the swap's steps (``atari_dt.io.CRASH_AT_ENV``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from seeds import seed

from atari_dt.cli import main
from atari_dt.datasets.npy_gzip import load_npy_gz
from atari_dt.io import CRASH_AT_ENV

# Short episodes and a small buffer: 300 steps cross checkpoint files, in about a second.
COLLECT = [
    "collect",
    "--policy",
    "random",
    "--workers",
    "1",
    "--seed",
    "3",
    "--max-episode-steps",
    "60",
    "--capacity",
    "200",
]


def collect_args(out: Path, steps: int, *extra: str, fmt: str = "dqn-replay") -> list[str]:
    return [*COLLECT, "--format", fmt, "--steps", str(steps), "--out", str(out), *extra]


def snapshot(path: Path) -> dict[str, bytes | None]:
    """Every file under ``path`` (relative name -> bytes; directories -> None)."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {
        str(p.relative_to(path)): None if p.is_dir() else p.read_bytes()
        for p in sorted(path.rglob("*"))
    }


def replay_contents(directory: Path) -> dict[str, object]:
    """What a replay directory holds: each log file's array and the collection record (the
    gzip headers carry a time, so the files themselves differ between equal runs)."""
    contents: dict[str, object] = {
        p.name: load_npy_gz(p) for p in sorted(directory.glob("*_ckpt.*.gz"))
    }
    contents["collection.json"] = json.loads((directory / "collection.json").read_text())
    return contents


def assert_same_replay(left: dict[str, object], right: dict[str, object]) -> None:
    assert sorted(left) == sorted(right)
    for name, value in left.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(value, right[name], err_msg=name)
        else:
            assert value == right[name], name


def user_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The one ``atari-dt: error:`` line the last command printed."""
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("atari-dt: error: ")]
    assert len(errors) == 1 and "Traceback" not in "\n".join(lines), lines
    return errors[0]


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def logs_300(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 300-step dqn-replay collection (copy it before writing)."""
    out = tmp_path_factory.mktemp("logs") / "replay_logs"
    assert main(collect_args(out, 300)) == 0
    return out


@pytest.fixture(scope="module")
def resumed_600(logs_300: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The contents of an uninterrupted ``--resume`` from 300 to 600 steps."""
    out = tmp_path_factory.mktemp("ref") / "replay_logs"
    shutil.copytree(logs_300, out)
    assert main(collect_args(out, 600, "--resume")) == 0
    return replay_contents(out)


@pytest.fixture
def train_config(tmp_path: Path, seaquest_store_path: Path) -> Path:
    """A tiny training config on the real Seaquest store (3 steps)."""
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(seaquest_store_path), "context_len": 4},
                "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_timestep": 512},
                "train": {"max_steps": 3, "batch_size": 4, "checkpoint_every": 3, "seed": seed(0)},
            }
        )
    )
    return config


@pytest.fixture
def old_run(tmp_path: Path, tiny_run: Path) -> Path:
    """A copy of a trained run, to be (not) replaced."""
    run = tmp_path / "runs" / "old"
    shutil.copytree(tiny_run, run)
    return run


# ------------------------------------------------------------- train --force: inputs first


def test_train_force_with_missing_data_deletes_nothing(
    train_config: Path, old_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--data typo.h5 --out runs/old --force``: the missing data is reported, exit 2, and
    the old run is there byte for byte."""
    before = snapshot(old_run)
    argv = ["train", str(train_config), "--data", "typo.h5", "--out", str(old_run), "--force"]
    assert main(argv) == 2
    assert "training data typo.h5 does not exist" in user_error(capsys)
    assert snapshot(old_run) == before


def test_train_force_with_data_inside_out_deletes_nothing(
    train_config: Path, old_run: Path, seaquest_store_path: Path, capsys
) -> None:
    """``--data d/s.h5 --out d --force`` would delete its own training data: refused naming
    both, before anything is deleted."""
    data = old_run / "s.h5"
    shutil.copyfile(seaquest_store_path, data)
    before = snapshot(old_run)
    argv = ["train", str(train_config), "--data", str(data), "--out", str(old_run), "--force"]
    assert main(argv) == 2
    error = user_error(capsys)
    assert f"--force would delete {old_run}, which holds the training data {data}" in error
    assert snapshot(old_run) == before


def test_train_force_over_a_non_run_directory_deletes_nothing(
    train_config: Path, tmp_path: Path, seaquest_store_path: Path, capsys
) -> None:
    """``--force`` onto a directory without ``config.yaml`` or ``checkpoints/`` (here: the
    user's data folder) is refused, naming what is there; with or without the data in it."""
    folder = tmp_path / "d"
    (folder / "thesis").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    shutil.copyfile(seaquest_store_path, folder / "s.h5")
    before = snapshot(folder)
    for data in (folder / "s.h5", seaquest_store_path):
        argv = ["train", str(train_config), "--data", str(data), "--out", str(folder), "--force"]
        assert main(argv) == 2
        error = user_error(capsys)
        assert f"refusing to replace {folder}: it is not a training run" in error
        assert "no config.yaml or checkpoints; it holds notes.txt, s.h5, thesis/" in error
        assert snapshot(folder) == before
    # Without --force the same folder is not called "a run" either.
    assert main(["train", str(train_config), "--out", str(folder)]) == 2
    assert "it is not a training run" in user_error(capsys)


def test_train_force_with_a_config_the_data_rejects_deletes_nothing(
    train_config: Path, old_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the store decides about the config (its action count here) is checked before the
    old run is emptied."""
    before = snapshot(old_run)
    argv = ["train", str(train_config), "--out", str(old_run), "--force"]
    assert main([*argv, "--set", "model.n_actions=6"]) == 2
    assert "the episode store has 18 actions but model.n_actions=6" in user_error(capsys)
    assert snapshot(old_run) == before


def test_train_force_still_replaces_a_run(train_config: Path, old_run: Path) -> None:
    """With good inputs, ``--force`` over a run replaces it (the old files are gone)."""
    (old_run / "old-marker.txt").write_text("from the old run")
    assert (
        main(["train", str(train_config), "--out", str(old_run), "--force", "--no-progress"]) == 0
    )
    assert not (old_run / "old-marker.txt").exists() and (old_run / "config.yaml").is_file()


# ------------------------------------------------------- collect / convert --force: only ours


def test_collect_force_over_a_non_replay_directory_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``collect --format dqn-replay --out d --force`` onto a directory that is not logs this
    project wrote: refused before collecting, naming what is there; no temporary is left."""
    folder = tmp_path / "d"
    (folder / "thesis").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    before = snapshot(folder)
    assert main(collect_args(folder, 100, "--force")) == 2
    error = user_error(capsys)
    assert f"refusing to replace {folder}: it is not a dqn-replay directory written by" in error
    assert "no collection.json; it holds notes.txt, thesis/" in error
    assert snapshot(folder) == before and sorted(os.listdir(tmp_path)) == ["d"]


def test_collect_force_over_logs_with_foreign_files_deletes_nothing(
    tmp_path: Path, logs_300: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logs with something of the user's beside them (a ``collection.json`` is not enough):
    refused, naming the foreign file."""
    logs = tmp_path / "replay_logs"
    shutil.copytree(logs_300, logs)
    (logs / "analysis.ipynb").write_text("{}")
    before = snapshot(logs)
    assert main(collect_args(logs, 100, "--force")) == 2
    assert "it also holds analysis.ipynb" in user_error(capsys)
    assert snapshot(logs) == before


def test_collect_force_still_replaces_its_own_logs(tmp_path: Path, logs_300: Path) -> None:
    """``--force`` over logs that ``collect`` wrote replaces them."""
    logs = tmp_path / "replay_logs"
    shutil.copytree(logs_300, logs)
    assert main(collect_args(logs, 120, "--force")) == 0
    assert json.loads((logs / "collection.json").read_text())["steps"] >= 120
    assert sorted(os.listdir(tmp_path)) == ["replay_logs"]


def test_collect_h5_force_over_a_non_store_file_deletes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``collect --format h5 --force`` onto a text file, or an HDF5 file that is not an
    episode store: refused, saying what it is."""
    text = tmp_path / "results.h5"
    text.write_text("not a store")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as handle:
        handle["weights"] = np.arange(3)
    for path, found in ((text, "not an HDF5 file, 11 bytes"), (other, "format attribute None")):
        before = snapshot(path)
        assert main(collect_args(path, 100, "--force", fmt="h5")) == 2
        error = user_error(capsys)
        assert f"refusing to replace {path}: it is not an atari-dt episode store" in error
        assert found in error and snapshot(path) == before


def test_convert_force_over_a_non_store_file_deletes_nothing(
    tmp_path: Path, logs_300: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``data convert --force`` onto a file that is not an episode store: refused, the file
    kept; onto a store it replaces it."""
    destination = tmp_path / "paper.h5"
    destination.write_text("my paper's numbers")
    argv = ["data", "convert", str(logs_300), str(destination), "--game", "Seaquest"]
    assert main([*argv, "--force", "--no-progress"]) == 2
    error = user_error(capsys)
    assert f"refusing to replace {destination}: it is not an atari-dt episode store" in error
    assert destination.read_text() == "my paper's numbers"
    store = tmp_path / "store.h5"
    argv = ["data", "convert", str(logs_300), str(store), "--game", "Seaquest", "--no-progress"]
    assert main(argv) == 0 and main([*argv, "--force"]) == 0


# ------------------------------------------------- the swap that ends a dqn-replay collection


def killed_resume(logs: Path, crash_at: str) -> None:
    """Run ``collect --resume`` (300 -> 600 steps) in a subprocess that SIGKILLs itself at
    the step ``crash_at`` of the directory swap."""
    argv = [sys.executable, "-m", "atari_dt", *collect_args(logs, 600, "--resume")]
    env = {**os.environ, CRASH_AT_ENV: crash_at}
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr[-800:]


def leftovers(logs: Path) -> list[str]:
    """What the kill left beside ``logs``, with the PID replaced by ``PID``."""
    names = (p.name for p in logs.parent.iterdir() if p.name != logs.name)
    return sorted(
        ".".join("PID" if part.isdigit() else part for part in n.split(".")) for n in names
    )


# What each crash point leaves (see atari_dt.io.replace_directory): is the output there, and
# which copies lie beside it.
CRASH_POINTS = {
    "before-aside": (True, [".replay_logs.PID.tmp"]),  # old output, finished new copy
    "after-aside": (False, [".replay_logs.PID.old", ".replay_logs.PID.tmp"]),  # both aside
    "after-swap": (True, [".replay_logs.PID.old"]),  # new output, old copy not yet deleted
}


@pytest.mark.parametrize("crash_at", list(CRASH_POINTS))
def test_sigkill_at_any_step_of_the_swap_loses_nothing(
    crash_at: str, tmp_path: Path, logs_300: Path, resumed_600: dict[str, object]
) -> None:
    """A SIGKILL at each step of the swap leaves a complete copy reachable; the next
    ``--resume`` puts the newest one in place and ends with exactly the data of an
    uninterrupted run, with nothing left beside it."""
    logs = tmp_path / "replay_logs"
    shutil.copytree(logs_300, logs)
    killed_resume(logs, crash_at)
    output_there, beside = CRASH_POINTS[crash_at]
    assert logs.is_dir() == output_there and leftovers(logs) == beside
    assert main(collect_args(logs, 600, "--resume")) == 0
    assert_same_replay(replay_contents(logs), resumed_600)
    assert sorted(os.listdir(tmp_path)) == ["replay_logs"]


def test_sigkill_while_deleting_the_old_copy_loses_nothing(
    tmp_path: Path, logs_300: Path, resumed_600: dict[str, object]
) -> None:
    """Killed part-way through deleting the old copy (after the new one is in place): the
    half-deleted old copy is removed by the next run, the new data is kept."""
    logs = tmp_path / "replay_logs"
    shutil.copytree(logs_300, logs)
    killed_resume(logs, "after-swap")
    (aside,) = tmp_path.glob(".replay_logs.*.old")
    for path in sorted(aside.iterdir())[::2]:  # what rmtree had done when the kill came
        path.unlink()
    assert main(collect_args(logs, 600, "--resume")) == 0
    assert_same_replay(replay_contents(logs), resumed_600)
    assert sorted(os.listdir(tmp_path)) == ["replay_logs"]


def test_plain_run_after_a_killed_swap_recovers_instead_of_starting_over(
    tmp_path: Path, logs_300: Path, resumed_600: dict[str, object], capsys
) -> None:
    """Killed when the output was renamed aside and the new copy not yet in: a plain run
    (no --resume) first puts the finished copy back, then refuses to overwrite it."""
    logs = tmp_path / "replay_logs"
    shutil.copytree(logs_300, logs)
    killed_resume(logs, "after-aside")
    assert not logs.exists()
    assert main(collect_args(logs, 100)) == 2
    captured = capsys.readouterr().err
    assert "recovered" in captured and "exists; pass --force to replace it or --resume" in captured
    assert_same_replay(replay_contents(logs), resumed_600)
    assert sorted(os.listdir(tmp_path)) == ["replay_logs"]


def test_unfinished_copy_of_a_killed_run_is_not_taken_for_the_output(
    tmp_path: Path, logs_300: Path, resumed_600: dict[str, object]
) -> None:
    """A dead run's working copy without its record (killed while collecting: hard links of
    the old logs plus new dumps) is debris: the next --resume continues from the output and
    ends with the uninterrupted data."""
    logs = tmp_path / "replay_logs"
    shutil.copytree(logs_300, logs)
    pid_of = [sys.executable, "-c", "import os; print(os.getpid())"]
    dead = subprocess.run(pid_of, capture_output=True, text=True, check=True)  # a dead PID
    debris = tmp_path / f".replay_logs.{int(dead.stdout)}.tmp"
    shutil.copytree(logs, debris, ignore=shutil.ignore_patterns("collection.json"))
    (debris / "$store$_action_ckpt.9.gz").write_bytes(b"half a dump")
    assert main(collect_args(logs, 600, "--resume")) == 0
    assert_same_replay(replay_contents(logs), resumed_600)
    assert sorted(os.listdir(tmp_path)) == ["replay_logs"]


def test_train_force_from_logs_that_are_not_logs_deletes_nothing(
    train_config: Path, old_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replay logs are converted into the run directory, so it is emptied first: only once
    the logs are known to be logs (here: a replay_logs directory without checkpoint files)."""
    logs = tmp_path / "Seaquest" / "1" / "replay_logs"
    logs.mkdir(parents=True)
    before = snapshot(old_run)
    argv = ["train", str(train_config), "--data", str(logs), "--out", str(old_run), "--force"]
    assert main(argv) == 2
    assert "no '$store$_observation_ckpt.N.gz' files" in user_error(capsys)
    assert snapshot(old_run) == before


def test_leftovers_carrying_our_own_pid_are_recovered(tmp_path: Path) -> None:
    """In a container a killed run's PID is often the next run's: its finished copy beside the
    output (named with that PID, made before this process started) is still recovered, not
    taken for a live writer's; a temporary this process made is left alone."""
    from atari_dt.io import aside_sibling, recover_directory, temporary_sibling

    final = tmp_path / "logs"
    finished = temporary_sibling(final)  # ".logs.<our pid>.tmp", as the killed run left it
    finished.mkdir()
    (finished / "collection.json").write_text("{}")
    old = aside_sibling(final)
    old.mkdir()
    (old / "stale").write_text("x")
    import psutil

    before_we_started = psutil.Process().create_time() - 60  # made by the killed run
    for leftover in (finished, old):
        os.utime(leftover, (before_we_started, before_we_started))
    live = temporary_sibling(tmp_path / "other")  # ours, made after we started: kept
    live.write_text("in progress")
    recover_directory(final, is_complete=lambda path: (path / "collection.json").is_file())
    assert (final / "collection.json").is_file()
    assert not finished.exists() and not old.exists()
    recover_directory(tmp_path / "other")
    assert live.exists()


def test_outputs_into_the_working_directory(tiny_run: Path, tmp_path: Path, monkeypatch) -> None:
    """``--out .`` stages beside the resolved directory (``.`` has no name of its own)."""
    monkeypatch.chdir(tmp_path)
    assert main(["scan", str(tiny_run), "--rtg", "0:4:3", "--contexts", "4", "--out", "."]) == 0
    assert (tmp_path / "scan.json").is_file() and (tmp_path / "scan.png").is_file()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
