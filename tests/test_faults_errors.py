"""What atari-dt promises when the machine or the input is hostile (issue 13, items 5, 6, 11
and 12): a full disk or a read-only directory, a damaged store, NaN where numbers belong, a
damaged run, an index that is not there. Each case is one clear line and exit status 2, with
nothing left half-written; no traceback, no hang, no crash.

The disk faults use a real read-only bind mount and a real 1 MiB tmpfs where this machine
allows mounting (root in a container that may mount), else a simulated ``OSError``."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
import torch
from seeds import seed

from atari_dt.cli import main


def fails_in_one_line(capsys, *fragments: str) -> str:
    """The command printed one ``atari-dt: error:`` line holding ``fragments``."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("atari-dt: error:"), err
    assert "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in err[-1], (fragment, err[-1])
    return err[-1]


def mount(args: list[str]) -> bool:
    """Run ``mount`` (True when this machine allowed it)."""
    if shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def read_only_dir(tmp_path: Path):
    """A real read-only directory (a read-only bind mount), or None where mounting is not
    allowed (then the simulated tests below still hold the promise)."""
    source, target = tmp_path / "source", tmp_path / "read_only"
    source.mkdir()
    target.mkdir()
    if not (mount(["--bind", str(source), str(target)])
            and mount(["-o", "remount,ro,bind", str(target)])):  # fmt: skip
        subprocess.run(["umount", str(target)], capture_output=True)
        yield None
        return
    yield target
    subprocess.run(["umount", str(target)], capture_output=True)


@pytest.fixture
def full_disk(tmp_path: Path):
    """A real 1 MiB tmpfs (a disk that fills at once), or None where mounting is not allowed."""
    target = tmp_path / "tiny_disk"
    target.mkdir()
    if not mount(["-t", "tmpfs", "-o", "size=1m", "tmpfs", str(target)]):
        yield None
        return
    yield target
    subprocess.run(["umount", str(target)], capture_output=True)


# ---- item 5: read-only directories and full disks -----------------------------------------


def test_every_writer_names_a_read_only_directory(
    read_only_dir, tiny_run, seaquest_store_path, capsys
) -> None:
    if read_only_dir is None:
        pytest.skip("this machine does not allow a read-only bind mount (simulated below)")
    store, out = str(seaquest_store_path), read_only_dir / "out"
    from test_import_original import make_reference

    original_checkpoint = read_only_dir.parent / "original.pt"
    torch.save(make_reference().state_dict(), original_checkpoint)
    commands = [
        ["data", "info", store, "--plot", str(read_only_dir / "returns.png")],
        ["data", "show", store, "--set", "data.context_len=4", "--out", str(out) + ".png"],
        ["scan", str(tiny_run), "--rtg", "0:4:3", "--contexts", "4", "--out", str(out)],
        ["attribute", str(tiny_run), "--episode", "1", "--step", "9", "--n-steps", "4",
         "--out", str(out)],
        ["analyze", str(tiny_run), "--episode", "1", "--step", "9", "--contexts", "8",
         "--out", str(out)],
        ["eval", str(tiny_run), "--targets", "0", "--episodes", "1", "--envs", "1",
         "--max-episode-steps", "5", "--out", str(out)],
        ["collect", "--game", "Seaquest", "--policy", "random", "--steps", "50", "--workers",
         "1", "--out", str(read_only_dir / "c.h5")],
        ["collect", "--game", "Seaquest", "--policy", "random", "--steps", "50", "--workers",
         "1", "--format", "dqn-replay", "--out", str(read_only_dir / "logs")],
        ["train", "configs/train/demo_seaquest.yaml", "--data", store, "--max-steps", "1",
         "--out", str(out), "--no-progress"],
        ["model", "import-original", str(original_checkpoint), str(out), "--n-heads", "4"],
    ]  # fmt: skip
    for command in commands:
        assert main(command) == 2, command
        line = fails_in_one_line(capsys, "Read-only file system")
        assert str(read_only_dir) in line, (command, line)
    assert list(read_only_dir.iterdir()) == []


def test_a_write_refused_by_the_machine_is_one_line(tiny_run, tmp_path, capsys, monkeypatch):
    """Simulated (any machine): the OS refuses the write; the path and reason are printed, the
    temporary name is reported as the file it was to become."""
    import atari_dt.io

    def refuse(path, payload):
        raise OSError(errno.ENOSPC, "No space left on device", str(path.parent / ".x.json.9.tmp"))

    monkeypatch.setattr(atari_dt.io, "atomic_write_bytes", refuse)
    out = tmp_path / "scan"
    assert main(["scan", str(tiny_run), "--rtg", "0:4:3", "--contexts", "4", "--out",
                 str(out)]) == 2  # fmt: skip
    fails_in_one_line(capsys, f"cannot write {out}/x.json: No space left on device")


def test_a_bug_raising_oserror_keeps_its_traceback(monkeypatch) -> None:
    """Only what the machine refuses (EACCES, EROFS, ENOSPC, ...) is a one-line error; any
    other OSError is a bug and propagates."""
    from atari_dt.commands import data

    def broken(args):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setitem(data.HANDLERS, "info", broken)
    with pytest.raises(OSError, match="Bad file descriptor"):
        main(["data", "info", "whatever.h5"])


def test_a_full_disk_is_one_line_and_no_crash(full_disk, seaquest_store_path) -> None:
    """HDF5 writes on a full disk: exit 2 with the path, nothing left, no segmentation fault
    (the store writer checks free space before each write: HDF5 would report a full disk late,
    fail to close the file and crash at exit)."""
    if full_disk is None:
        pytest.skip("this machine does not allow a tmpfs mount")
    out = full_disk / "c.h5"
    command = [sys.executable, "-m", "atari_dt.cli", "collect", "--game", "Seaquest", "--policy",
               "random", "--steps", "3000", "--workers", "1", "--out", str(out)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (f"atari-dt: error: cannot write {out}: No space left on device; free some "
                    "space or write elsewhere (--out)")  # fmt: skip
    assert list(full_disk.iterdir()) == []


# ---- item 6: damaged stores, NaN, damaged runs --------------------------------------------


def damage_a_frame_chunk(path: Path) -> None:
    """Overwrite the middle of one compressed chunk of /frames (gzip then fails to decode)."""
    with h5py.File(path, "r") as f:
        info = f["frames"].id.get_chunk_info(1)
    with open(path, "r+b") as raw:
        raw.seek(info.byte_offset + info.size // 2)
        raw.write(b"\xff" * 64)


def test_training_on_a_damaged_store_names_the_damage(seaquest_store_path, tmp_path, capsys):
    store = tmp_path / "damaged.h5"
    shutil.copy(seaquest_store_path, store)
    damage_a_frame_chunk(store)
    assert main(["train", "configs/train/demo_seaquest.yaml", "--data", str(store), "--out",
                 str(tmp_path / "run"), "--max-steps", "1", "--no-progress"]) == 2  # fmt: skip
    fails_in_one_line(capsys, str(store), "cannot read /frames[", "atari-dt data verify")


def test_eval_refuses_non_finite_targets(tiny_run, capsys) -> None:
    assert main(["eval", str(tiny_run), "--targets", "0,nan", "--episodes", "1"]) == 2
    fails_in_one_line(capsys, "eval targets must be finite returns, got [0.0, nan]")


def nan_run(tiny_run: Path, where: Path) -> Path:
    """A copy of the tiny run whose newest checkpoint has one NaN weight (a diverged run)."""
    from atari_dt.model import HookedDecisionTransformer
    from atari_dt.training.state import list_checkpoints

    run = where / "nan_run"
    shutil.copytree(tiny_run, run)
    _, checkpoint = list_checkpoints(run)[-1]
    model = HookedDecisionTransformer.from_pretrained(checkpoint)
    with torch.no_grad():
        model.W_U[0, 0] = float("nan")
    from atari_dt.model.checkpoint import write_checksums

    fresh = model.save_pretrained(where / "nan_model")
    shutil.copy(fresh / "model.safetensors", checkpoint / "model.safetensors")
    write_checksums(checkpoint)  # the run wrote these NaN weights itself
    return run


def test_a_diverged_model_is_refused_by_name(tiny_run, tmp_path, capsys) -> None:
    run = nan_run(tiny_run, tmp_path)
    for command in (
        ["eval", str(run), "--targets", "0", "--episodes", "1"],
        ["attribute", str(run), "--episode", "1", "--step", "9", "--out", str(tmp_path / "a")],
        ["scan", str(run), "--rtg", "0:4:3", "--contexts", "4"],
    ):
        assert main(command) == 2, command
        fails_in_one_line(capsys, "parameter W_U has 1 non-finite values", "diverged")
    assert not (tmp_path / "a").exists()


def test_a_damaged_run_config_is_named(tiny_run, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "config.yaml").write_text("data: {path: [unclosed\n")
    assert main(["scan", str(run), "--rtg", "0:4:3", "--contexts", "4"]) == 2
    fails_in_one_line(capsys, f"{run}/config.yaml: not valid YAML", "restore it, or retrain")


# ---- item 11: nothing assumed silently ----------------------------------------------------


def test_negative_indices_are_refused(tiny_run, seaquest_store_path, tmp_path, capsys) -> None:
    """-1 is not "the last": a store's episodes and a model's actions are numbered from 0."""
    assert main(["data", "show", str(seaquest_store_path), "--episode", "-1", "--out",
                 str(tmp_path / "w.png")]) == 2  # fmt: skip
    fails_in_one_line(capsys, "--episode -1: episodes are numbered from 0")
    assert main(["analyze", str(tiny_run), "--episode", "1", "--step", "9", "--contexts", "8",
                 "--other-action", "-1", "--out", str(tmp_path / "an")]) == 2  # fmt: skip
    fails_in_one_line(capsys, "other action -1 is not an action of the model (0..17)")
    assert main(["attribute", str(tiny_run), "--episode", "-1", "--step", "9", "--out",
                 str(tmp_path / "at")]) == 2  # fmt: skip
    fails_in_one_line(capsys, "episode -1 is not in")


def test_an_empty_collect_config_is_refused(tmp_path, capsys) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert main(["collect", "--config", str(empty), "--out", str(tmp_path / "c.h5")]) == 2
    fails_in_one_line(capsys, f"{empty} is empty")
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda sd: sd.__setitem__("head.weight", sd["head.weight"].long()),
         "'head.weight' is torch.int64, expected floating-point"),
        (lambda sd: sd["ret_emb.0.weight"].view(-1).__setitem__(0, float("nan")),
         "'ret_emb.0.weight' has 1 non-finite values"),
    ],
)  # fmt: skip
def test_import_refuses_weights_that_are_not_weights(tmp_path, capsys, edit, message) -> None:
    from test_import_original import make_reference

    state_dict = make_reference().state_dict()
    edit(state_dict)
    path = tmp_path / "original.pt"
    torch.save(state_dict, path)
    assert main(["model", "import-original", str(path), str(tmp_path / "out"), "--n-heads",
                 "4"]) == 2  # fmt: skip
    fails_in_one_line(capsys, message)
    assert not (tmp_path / "out").exists()


def test_behaviour_cloning_import_says_what_it_dropped(tmp_path, capsys) -> None:
    from test_import_original import make_reference

    path = tmp_path / "original.pt"
    torch.save(make_reference(seed=seed(1)).state_dict(), path)  # it has an RTG embedding
    assert main(["model", "import-original", str(path), str(tmp_path / "bc"), "--n-heads", "4",
                 "--behaviour-cloning"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "dropped the checkpoint's RTG embedding (ret_emb.0.bias, ret_emb.0.weight)" in err
    assert "import it again without --behaviour-cloning" in err


# ---- item 12: errors that say what is wrong -----------------------------------------------


def test_a_non_finite_reference_rtg_is_refused_before_anything_is_written(
    tiny_run, tmp_path, capsys
) -> None:
    out = tmp_path / "scan"
    assert main(["scan", str(tiny_run), "--rtg", "0:4:3", "--contexts", "4", "--reference",
                 "nan", "--out", str(out)]) == 2  # fmt: skip
    fails_in_one_line(capsys, "the reference RTG must be a finite return, got nan")
    assert not out.exists() or list(out.iterdir()) == []


def test_an_unknown_action_is_named(tiny_run, tmp_path, capsys) -> None:
    assert main(["analyze", str(tiny_run), "--episode", "1", "--step", "9", "--contexts", "8",
                 "--other-action", "40", "--out", str(tmp_path / "an")]) == 2  # fmt: skip
    fails_in_one_line(capsys, "other action 40 is not an action of the model (0..17)")
    assert main(["attribute", str(tiny_run), "--episode", "1", "--step", "9", "--action", "40",
                 "--out", str(tmp_path / "at")]) == 2  # fmt: skip
    fails_in_one_line(capsys, "action 40 is not an action of the model (0..17)")


def test_the_resume_hint_after_sigterm_is_a_command_that_works(seaquest_store_path, tmp_path):
    """Interrupted, ``train`` prints how to resume: the run's own config (which holds --data,
    --set and --max-steps as given), so the printed command resumes and finishes the run."""
    import shlex
    import signal
    import time

    import yaml

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"context_len": 4},
        "model": {"d_model": 16, "n_layers": 1, "n_heads": 2, "max_timestep": 512},
        "train": {"batch_size": 2, "log_every": 1, "checkpoint_every": 50, "seed": seed(0)},
    }))  # fmt: skip
    run = tmp_path / "run"
    command = [sys.executable, "-m", "atari_dt.cli", "train", str(config), "--data",
               str(seaquest_store_path), "--max-steps", "100000", "--out", str(run),
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (run / "metrics.jsonl").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # a few steps in
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    hint = next(line for line in out.splitlines() if line.startswith("resume with: "))
    resume = shlex.split(hint.removeprefix("resume with: "))
    assert resume[:3] == ["atari-dt", "train", str(run / "config.yaml")]
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["train"]["max_steps"] == 100000  # --max-steps travels in the run's config
    assert saved["data"]["path"] == str(seaquest_store_path)  # and so does --data
    first = len((run / "metrics.jsonl").read_text().splitlines())
    again = [sys.executable, "-m", "atari_dt.cli", *resume[1:], "--no-progress"]
    resumed = subprocess.Popen(again, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and resumed.poll() is None:
        if len((run / "metrics.jsonl").read_text().splitlines()) > first + 3:
            break  # the resumed run is training
        time.sleep(0.2)
    resumed.send_signal(signal.SIGTERM)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 130, err[-2000:]  # resumed and interrupted again, not refused
    assert "interrupted at step" in out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda h5: h5["episodes/offset"].__setitem__(1, h5["episodes/offset"][1] + 7),
         "do not tile the transitions: episode 1 has offset"),
        (lambda h5: h5.attrs.__setitem__("collection", "{not json"),
         "the collection attribute is not valid JSON"),
        (lambda h5: h5.attrs.__setitem__("n_actions", -1),
         "records n_actions=-1, which no game has"),
    ],
)  # fmt: skip
def test_a_damaged_store_table_is_named_before_training(
    seaquest_store_path, tmp_path, capsys, damage, message
) -> None:
    store = tmp_path / "damaged.h5"
    shutil.copy(seaquest_store_path, store)
    with h5py.File(store, "r+") as h5:
        damage(h5)
    assert main(["train", "configs/train/demo_seaquest.yaml", "--data", str(store), "--out",
                 str(tmp_path / "run"), "--max-steps", "1", "--no-progress"]) == 2  # fmt: skip
    fails_in_one_line(capsys, message)
    assert not (tmp_path / "run").exists()


def test_short_actions_are_named_not_an_index_error(seaquest_store_path, tmp_path) -> None:
    """A store whose /actions lost rows opens with the table named (analysis and training)."""
    from atari_dt.datasets import EpisodeStore, StoreFormatError

    store = tmp_path / "short.h5"
    shutil.copy(seaquest_store_path, store)
    with h5py.File(store, "r+") as h5:
        actions = h5["actions"][:-5]
        del h5["actions"]
        h5["actions"] = actions
    with pytest.raises(StoreFormatError, match=r"the episodes cover \d+ transitions but /actions"):
        EpisodeStore.open(store)


def test_contradicting_context_lengths_are_refused(seaquest_store_path, tmp_path, capsys):
    """``model.context_len`` set explicitly against ``data.context_len`` (T comes from the
    data's windows): refused, not silently overridden."""
    assert main(["train", "configs/train/demo_seaquest.yaml", "--data", str(seaquest_store_path),
                 "--set", "model.context_len=20", "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--no-progress"]) == 2  # fmt: skip
    fails_in_one_line(capsys, "model.context_len=20 disagrees with data.context_len=10")


@pytest.mark.parametrize("lr", ["1.0e+39", ".nan", "100"])
def test_an_absurd_learning_rate_is_refused(seaquest_store_path, tmp_path, capsys, lr) -> None:
    assert main(["train", "configs/train/demo_seaquest.yaml", "--data", str(seaquest_store_path),
                 "--set", f"train.lr={lr}", "--out", str(tmp_path / "run"),
                 "--max-steps", "1", "--no-progress"]) == 2  # fmt: skip
    fails_in_one_line(capsys, "is absurd: at most 10")


def test_warnings_print_as_one_line(tmp_path) -> None:
    """The CLI's warnings say what was assumed in one line (no source location)."""
    out = str(tmp_path / "c.h5")
    command = [sys.executable, "-m", "atari_dt.cli", "collect", "--game", "Seaquest", "--policy",
               "random", "--steps", "60", "--workers", "64", "--out", out]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    warned = [line for line in result.stderr.splitlines() if "workers reduced" in line]
    assert warned and warned[0].startswith("atari-dt: warning: collect: 64 workers reduced")


def test_a_full_disk_during_convert_is_one_line_and_no_crash(full_disk, tmp_path) -> None:
    if full_disk is None:
        pytest.skip("this machine does not allow a tmpfs mount")
    logs = tmp_path / "Seaquest" / "1" / "replay_logs"
    assert main(["collect", "--game", "Seaquest", "--policy", "random", "--steps", "3000",
                 "--format", "dqn-replay", "--capacity", "1500", "--seed", str(seed(0)),
                 "--workers", "1", "--out", str(logs)]) == 0  # fmt: skip
    out = full_disk / "s.h5"
    command = [sys.executable, "-m", "atari_dt.cli", "data", "convert", str(logs), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith(f"atari-dt: error: cannot write {out}: No space left on device")
    )
    assert list(full_disk.iterdir()) == []
