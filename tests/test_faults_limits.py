"""What is promised about hangs, leaks and the cost of a request (issue 13, items 3 and 4):

* ``collect`` with many workers exits; closing the collector while workers are in the middle
  of sending episodes neither hangs nor leaves a worker; no worker outlives a SIGKILLed parent
  (by the kernel's signal, and by the workers' own check where there is no such signal);
  more workers than ``4 x cores`` (or than steps left) are reduced with a note.
* An argument whose cost cannot fit is refused before the work starts, in one line (exit 2)
  with the estimate, the limit and what to lower; counts below their minimum are refused with
  the minimum. The estimates themselves are checked on known sizes.

Processes are real (subprocesses, signals, ``psutil``); every wait has a timeout, so a
regression fails instead of hanging the suite.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import yaml

from atari_dt.cli import main
from atari_dt.datasets import EpisodeStore
from atari_dt.envs.config import WORKERS_PER_CORE, worker_count
from atari_dt.errors import UserError
from atari_dt.limits import (
    FLOAT,
    analysis_bytes,
    cache_bytes,
    check_at_least,
    check_memory,
    format_bytes,
    frame_bytes,
    train_step_bytes,
)
from atari_dt.model.config import ModelConfig
from atari_dt.training.config import ExperimentConfig

GiB = 2**30


def collect_command(out: Path, *extra: str) -> list[str]:
    """``atari-dt collect`` of short random episodes (60 steps) into ``out``."""
    return [
        sys.executable,
        "-m",
        "atari_dt",
        "collect",
        "--policy",
        "random",
        "--set",
        "collect.max_episode_steps=60",
        "--out",
        str(out),
        *extra,
    ]


def alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    """The processes still running (a zombie waiting for its parent's ``wait`` is not)."""
    running = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                running.append(process)
        except psutil.NoSuchProcess:
            pass
    return running


def wait_until_gone(processes: list[psutil.Process], seconds: float) -> list[psutil.Process]:
    """Poll until none of ``processes`` runs or ``seconds`` passed; what is still running."""
    deadline = time.monotonic() + seconds
    while alive(processes) and time.monotonic() < deadline:
        time.sleep(0.1)
    return alive(processes)


def read_until(process: subprocess.Popen, text: str, seconds: float) -> str:
    """The process's stderr until ``text`` appears (or ``seconds`` pass)."""
    seen, deadline = "", time.monotonic() + seconds
    while text not in seen and time.monotonic() < deadline:
        char = process.stderr.read(1)
        if not char:
            break
        seen += char
    return seen


# -- collect: hangs and leaks -------------------------------------------------------------


def test_collect_with_many_workers_exits(tmp_path: Path) -> None:
    """--workers 64 for 300 steps (the case that printed "wrote" and never exited): it exits 0
    within the timeout with a complete store, and says how many workers it really started."""
    out = tmp_path / "many.h5"
    done = subprocess.run(
        collect_command(out, "--steps", "300", "--workers", "64"),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert f"wrote {out}" in done.stdout
    expected, _ = worker_count(64, 300)
    assert f"64 workers reduced to {expected}" in done.stderr
    with EpisodeStore.open(out) as store:
        assert store.n_transitions >= 300 and store.metadata["collection"]["finished"]


# Takes three episodes from 12 workers (the cap does not apply to iter_episodes) and closes
# the iterator while most workers are blocked sending an episode larger than a pipe's buffer.
_CLOSE_MID_SEND = """
import psutil
from atari_dt.envs.collect import iter_episodes
from atari_dt.envs.config import CollectConfig, PolicyComponent

config = CollectConfig(workers=12, max_episode_steps=60, policy=[PolicyComponent("random")])
episodes = iter_episodes(config, 0)
indices = [next(episodes).index for _ in range(3)]
workers = psutil.Process().children()
episodes.close()
print(indices, len(workers), [w.pid for w in workers if w.is_running()
                               and w.status() != psutil.STATUS_ZOMBIE])
"""


def test_closing_the_collector_while_workers_send_neither_hangs_nor_leaks() -> None:
    """Closing ``iter_episodes`` of 12 workers mid-send returns at once: episodes 0, 1, 2 in
    order, 12 workers started, none left running (the parent never reads a half-sent
    message, and every worker is ended)."""
    done = subprocess.run(
        [sys.executable, "-c", _CLOSE_MID_SEND], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr[-1500:]
    assert done.stdout.split("\n")[0] == "[0, 1, 2] 12 []"


def test_sigkill_of_the_collect_parent_leaves_no_worker(tmp_path: Path) -> None:
    """SIGKILL of a 2-worker ``collect`` (nothing in the parent runs): its workers are gone
    within a few seconds (the kernel's PR_SET_PDEATHSIG)."""
    command = collect_command(tmp_path / "k.h5", "--steps", "100000", "--workers", "2")
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        seen = read_until(process, "episodes=1", 90)
        assert "episodes=1" in seen, seen[-800:]
        workers = psutil.Process(process.pid).children(recursive=True)
        assert len(workers) == 2
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        assert not wait_until_gone(workers, 5)
    finally:
        if process.poll() is None:
            process.kill()


# The parent of 2 workers SIGKILLs itself with the kernel's parent-death signal disabled
# (prctl option 0 does nothing): the workers must notice by themselves.
_ORPHANS = """
import os, signal, sys
import atari_dt.envs.collect as collect
from atari_dt.envs.config import CollectConfig, PolicyComponent

collect._PR_SET_PDEATHSIG = 0
config = CollectConfig(workers=2, max_episode_steps=60, policy=[PolicyComponent("random")])
episodes = collect.iter_episodes(config, 0)
next(episodes)
import psutil
print(" ".join(str(w.pid) for w in psutil.Process().children()), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_orphaned_workers_exit_without_the_kernels_signal() -> None:
    """Where the kernel sends no parent-death signal, workers whose parent was SIGKILLed exit
    by themselves within a few seconds: their pipes report the parent gone (EOF, broken pipe:
    no other process holds their ends) and, between episodes, so does ``getppid``."""
    done = subprocess.run(
        [sys.executable, "-c", _ORPHANS], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-1500:]
    pids = [int(pid) for pid in done.stdout.split()]
    assert len(pids) == 2
    workers = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):  # already gone
            workers.append(psutil.Process(pid))
    assert not wait_until_gone(workers, 10)


def test_a_killed_worker_ends_collect_with_the_episodes_kept(tmp_path: Path) -> None:
    """SIGKILL of one of 2 workers (as the OOM killer does): ``collect`` neither hangs nor
    leaves the other worker; it exits 1 naming the dead worker, with a valid store of the
    completed episodes to ``--resume``."""
    out = tmp_path / "w.h5"
    command = collect_command(out, "--steps", "100000", "--workers", "2")
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        seen = read_until(process, "episodes=2", 90)
        assert "episodes=2" in seen, seen[-800:]
        workers = psutil.Process(process.pid).children(recursive=True)
        os.kill(workers[0].pid, signal.SIGKILL)
        stdout, rest = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, rest[-800:]
    assert f"wrote {out}" in stdout
    assert f"worker {workers[0].pid} died (exit code -9)" in rest and "--resume" in rest
    assert not wait_until_gone(workers, 5)
    with EpisodeStore.open(out) as store:
        assert len(store) >= 2 and f"{len(store)} episodes kept" in rest


def test_an_error_in_a_worker_reaches_the_parent_as_itself() -> None:
    """A worker whose env cannot be made (an unknown game) reports why: the parent raises that
    ``UserError`` (one line in the CLI) at once, not a hang or a bare "worker died"."""
    from atari_dt.envs.collect import iter_episodes
    from atari_dt.envs.config import CollectConfig, PolicyComponent

    config = CollectConfig(game="NotAGame", workers=2, policy=[PolicyComponent("random")])
    episodes = iter_episodes(config, 0)
    with pytest.raises(UserError, match="unknown Atari game 'NotAGame'"):
        next(episodes)
    episodes.close()


def test_workers_capped_at_four_per_core_and_at_the_steps_left() -> None:
    """``worker_count``: a request within the cap is kept (0: one per core); beyond
    ``WORKERS_PER_CORE`` x cores, or one per step left, it is reduced, with the reason."""
    assert WORKERS_PER_CORE == 4
    assert worker_count(8, 1000, cores=2) == (8, "")
    assert worker_count(0, 1000, cores=2) == (2, "")
    workers, note = worker_count(64, 1000, cores=2)
    assert workers == 8 and note == (
        "collect: 64 workers reduced to 8 (at most 4 per usable core, 2 cores)"
    )
    workers, note = worker_count(6, 3, cores=2)
    assert workers == 3 and "one per step left to collect, 3" in note
    assert worker_count(4, 0, cores=2)[0] == 1  # nothing left: never zero workers


# -- absurd arguments are refused ----------------------------------------------------------


@pytest.fixture
def some_memory(monkeypatch: pytest.MonkeyPatch) -> int:
    """At most 16 GiB count as available, so a request estimated above it is refused on any
    machine (without the cap, a machine with more RAM would start the absurd run)."""
    import atari_dt.limits

    available = min(atari_dt.limits.available_memory(), 16 * GiB)
    monkeypatch.setattr(atari_dt.limits, "available_memory", lambda: available)
    return available


def refused(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    """Run ``atari-dt argv`` in-process; assert exit 2 and one error line (the last line of
    stderr: progress bars may come before it); that line."""
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    last = err.splitlines()[-1]
    assert last.startswith("atari-dt: error: ") and err.count("atari-dt: error:") == 1, err
    return last


def test_scan_grid_of_a_hundred_million_points_refused(tiny_run: Path, tmp_path, capsys) -> None:
    """--rtg 0:400:100000000 is refused before the run is opened (10,000 grid points at most);
    nothing is written."""
    out = tmp_path / "scan"
    err = refused(capsys, ["scan", str(tiny_run), "--rtg", "0:400:100000000", "--out", str(out)])
    assert "count must be in 2..10000, got 100000000" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["scan", "analyze"])
def test_hundred_thousand_contexts_refused_with_the_estimate(
    command: str, tiny_run: Path, tmp_path: Path, capsys, some_memory: int
) -> None:
    """--contexts 100000 (scan, analyze) needs tens of GiB even for the tiny run: refused with
    the estimate, what is available and what to lower, before any context is sampled."""
    out = tmp_path / command
    extra = ["--rtg", "0:10:5"] if command == "scan" else ["--episode", "0", "--step", "5"]
    err = refused(
        capsys, [command, str(tiny_run), *extra, "--contexts", "100000", "--out", str(out)]
    )
    assert "100000 contexts" in err and "GiB of memory but only" in err
    assert format_bytes(some_memory) in err and "lower --contexts" in err
    assert not out.exists()


@pytest.mark.parametrize("command", ["scan", "analyze"])
@pytest.mark.parametrize("contexts", ["0", "-1"])
def test_contexts_below_one_refused(
    command: str, contexts: str, tiny_run: Path, tmp_path: Path, capsys
) -> None:
    """--contexts 0 / -1: refused with the minimum, and no output directory is made."""
    out = tmp_path / command
    extra = ["--rtg", "0:10:5"] if command == "scan" else ["--episode", "0", "--step", "5"]
    err = refused(
        capsys, [command, str(tiny_run), *extra, "--contexts", contexts, "--out", str(out)]
    )
    assert "--contexts must be >= 1 (context windows" in err and f"got {contexts}" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--gif", "-3", "--gif must be >= 0 (steps of the GIF; 0 writes none), got -3"),
        ("--n-steps", "0", "--n-steps must be >= 1 (integration points of IG), got 0"),
    ],
)
def test_attribute_counts_below_their_minimum_refused(
    flag: str, value: str, message: str, tiny_run: Path, tmp_path: Path, capsys
) -> None:
    """attribute --gif -3 and --n-steps 0: one line naming the minimum (not Captum's
    AssertionError), nothing written."""
    out = tmp_path / "attr"
    argv = ["attribute", str(tiny_run), "--episode", "0", "--step", "5", flag, value]
    err = refused(capsys, [*argv, "--out", str(out)])
    assert message in err
    assert not out.exists()


def test_train_batch_of_a_hundred_million_refused_with_the_estimate(
    seaquest_store_path: Path, tmp_path: Path, capsys, some_memory: int
) -> None:
    """--set train.batch_size=100000000 is refused with the step's estimate (~120 TiB)
    before any batch is drawn: no checkpoint and no saved config."""
    config = tmp_path / "train.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(seaquest_store_path), "context_len": 4},
                "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_timestep": 512},
                "train": {"max_steps": 3, "device": "cpu"},
            }
        )
    )
    out = tmp_path / "run"
    argv = ["train", str(config), "--out", str(out), "--no-progress"]
    err = refused(capsys, [*argv, "--set", "train.batch_size=100000000"])
    assert "a training step of batch 100000000 x T 4 (2 layers x d_model 32" in err
    assert "TiB of memory but only" in err and "lower train.batch_size" in err
    assert not (out / "config.yaml").exists() and not (out / "checkpoints").exists()


# -- the estimates --------------------------------------------------------------------------


def test_check_memory_refuses_above_the_available_bytes_only() -> None:
    """``check_memory`` passes at exactly the available bytes and refuses one byte more,
    naming what, the estimate, the limit and the hint."""
    check_memory("x", 2 * GiB, available=2 * GiB)
    with pytest.raises(UserError) as raised:
        check_memory("a thing", 2 * GiB + 1, available=2 * GiB, hint="lower --n")
    assert str(raised.value) == (
        "a thing needs about 2.0 GiB of memory but only 2.0 GiB is available; lower --n"
    )


def test_check_at_least() -> None:
    """A count at its minimum (or not given) passes; below it, the message names it."""
    check_at_least("--n", 1)
    check_at_least("--n", None)
    check_at_least("--gif", 0, 0)
    with pytest.raises(UserError, match=r"^--n must be >= 1 \(things\), got 0$"):
        check_at_least("--n", 0, meaning="things")


def test_format_bytes() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * GiB) == "3.0 GiB"
    assert format_bytes(2**50 * 5000) == "5000.0 PiB"


def test_frame_and_cache_bytes_on_known_sizes() -> None:
    """Frames: one byte per pixel of ``[N, T, S, H, W]``; the cache of one pass: ``17 d + 2 x
    heads x tokens`` floats per token and layer."""
    assert frame_bytes(2, 3, 4, 84) == 2 * 3 * 4 * 84 * 84
    assert cache_bytes(10, 6, 90, 128, 8) == 10 * 6 * 90 * (17 * 128 + 2 * 8 * 90) * FLOAT


def test_analysis_bytes_on_known_sizes() -> None:
    """The paper's model (6 x 128, T 30, nature) over 256 contexts at 31 RTGs: held frames,
    embeddings and per-grid results, plus the larger of encoding and one cached pass."""
    cfg = ModelConfig(n_actions=18)
    held = 256 * 30 * 4 * 84 * 84 + 256 * 30 * 128 * 4 + 31 * 256 * (128 + 18) * 4
    encode = 256 * 30 * (4 + 2) * 84 * 84 * 4
    one_pass = cache_bytes(256, 6, 90, 128, 8)
    assert analysis_bytes(cfg, 256, 31) == held + max(encode, one_pass)
    assert 1 * GiB < analysis_bytes(cfg, 256, 31) < 4 * GiB  # measured peak: ~2-3 GiB
    assert analysis_bytes(cfg, 100_000, 31) > 100 * GiB


def test_train_step_bytes_on_known_sizes() -> None:
    """One step of the paper's recipe (batch 128, T 30, 6 x 128, nature): frames, the
    encoder's float input and layers, 22 d + 3 x heads x tokens floats per token and layer,
    and the embeddings. Measured peak of batch 64: 1.3 GiB (estimate 1.2 GiB)."""
    cfg = ModelConfig(n_actions=18)
    states = 128 * 30
    expected = (
        states * 4 * 84 * 84
        + states * (4 + 6) * 84 * 84 * 4
        + 128 * 6 * 90 * (22 * 128 + 3 * 8 * 90) * 4
        + 128 * 90 * 128 * 4 * 4
    )
    assert train_step_bytes(cfg, 128) == expected
    assert 1.5 * GiB < expected < 4 * GiB
    assert train_step_bytes(ModelConfig(n_actions=18, encoder="impala"), 128) > 3 * expected


def test_check_step_memory_uses_data_context_len() -> None:
    """The training check reads T from ``data.context_len`` (as training resolves it), so it
    can run before the data is opened; it passes a paper-sized step with 8 GiB and refuses it
    with 1 GiB."""
    from atari_dt.training.run import check_step_memory

    config = ExperimentConfig()
    config.train.device = "cpu"
    check_step_memory(config, available=8 * GiB)
    with pytest.raises(UserError, match=r"batch 128 x T 30 \(6 layers x d_model 128"):
        check_step_memory(config, available=1 * GiB)
