"""What training promises when something goes wrong (issue 13, items 9 and 10).

- A NaN or inf in training (NaN rewards/RTGs in the data, a learning rate that blows up) stops
  the run at the step it appears, names the step and the likely cause, in one line with exit 2;
  no checkpoint is ever written from a non-finite state and the last good one is kept. Under
  DDP every rank stops at the same step.
- Every checkpoint directory carries ``checksums.json`` (the SHA-256 of each of its files);
  ``--resume`` and ``HookedDecisionTransformer.from_pretrained`` refuse a file that changed,
  naming it, and ``--resume`` refuses a ``trainer_state.json`` whose step is not its
  directory's. Checkpoints written before checksums existed still load (with a warning).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml
from seeds import seed
from test_training import torchrun

from atari_dt.cli import main
from atari_dt.model import CheckpointError, HookedDecisionTransformer
from atari_dt.model.checkpoint import read_weights
from atari_dt.training.state import list_checkpoints


def tiny_store(path: Path, *, nan_reward_in: tuple[int, ...] = ()) -> Path:
    """4 short episodes of random frames, actions 0..3 (Breakout's count); the episodes in
    ``nan_reward_in`` get a NaN last reward, so all their returns-to-go are NaN."""
    from atari_dt.datasets import EpisodeStoreWriter

    rng = np.random.default_rng(seed(0))
    lengths = (30, 40, 50, 60)
    rewards = [rng.choice([0.0, 1.0], n).astype(np.float32) for n in lengths]
    for episode in nan_reward_in:
        rewards[episode][-1] = np.nan
    try:
        with EpisodeStoreWriter(path, game="Breakout", n_actions=4) as writer:
            for n, episode_rewards in zip(lengths, rewards, strict=True):
                frames = rng.integers(0, 256, (n, 84, 84), dtype=np.uint8)
                writer.add_episode(frames, rng.integers(0, 4, n), episode_rewards)
    except ValueError:
        # A writer that refuses NaN rewards protects the data itself; the trainer must still
        # stop on NaN returns-to-go, so put them in the finished store directly.
        if not nan_reward_in:
            raise
        path.unlink(missing_ok=True)
        tiny_store(path)
        starts = np.concatenate([[0], np.cumsum(lengths)])
        with h5py.File(path, "r+") as h5:
            for episode in nan_reward_in:
                h5["rtg"][starts[episode] : starts[episode + 1]] = np.nan
    return path


def tiny_config(directory: Path, store: Path, **train: object) -> Path:
    """A tiny DT (2 layers, d 32, T 4) trained for a few steps, a checkpoint every 2."""
    values = {
        "data": {"path": str(store), "context_len": 4},
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_timestep": 64},
        "train": {
            "max_steps": 4,
            "batch_size": 4,
            "warmup_steps": 1,
            "log_every": 1,
            "checkpoint_every": 2,
            "keep_checkpoints": 10,
            "seed": seed(0),
            **train,
        },
    }
    path = directory / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def train(config: Path, run: Path, *extra: str) -> int:
    return main(["train", str(config), "--out", str(run), "--no-progress", *extra])


def assert_finite(directory: Path) -> None:
    for name in ("model.safetensors", "optimizer.safetensors"):
        for key, tensor in read_weights(directory / name).items():
            assert torch.isfinite(tensor).all(), f"{directory / name}: {key} is not finite"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("atari-dt: error:")]
    assert len(lines) == 1, err
    return lines[0]


# --- item 9: a non-finite loss stops training -------------------------------------------------


def test_nan_rewards_stop_training_at_the_step_naming_the_data(tmp_path, capsys) -> None:
    """NaN rewards in every episode: the first batch has NaN returns-to-go, so training stops
    at step 1 naming the data (and how to check it), exits 2, and writes no checkpoint."""
    store = tiny_store(tmp_path / "nan.h5", nan_reward_in=(0, 1, 2, 3))
    run = tmp_path / "run"
    assert train(tiny_config(tmp_path, store), run) == 2
    error = one_line_error(capsys)
    assert re.search(
        r"training stopped at step 1: \d+ of the batch's returns-to-go are NaN/inf; "
        r"the training data holds NaN/inf rewards or returns-to-go: check the episode store "
        r"with `atari-dt data verify .*nan\.h5`",
        error,
    ), error
    assert "no checkpoint yet" in error
    assert list_checkpoints(run) == [] and not list((run / "checkpoints").glob("*"))


def test_nan_midway_keeps_the_last_good_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    """A NaN that first reaches step 5 (here: the 5th batch drawn): the checkpoints of steps 2
    and 4 stay, finite and loadable, the message names step 5 and the kept checkpoint, and
    nothing of step 5 is saved or logged."""
    from atari_dt.datasets import ContextWindows

    drawn = []
    get_batch = ContextWindows.get_batch

    def poisoned(self, indices, **kwargs):
        batch = get_batch(self, indices, **kwargs)
        drawn.append(len(indices))
        if len(drawn) >= 5:
            batch.rtg[0, -1] = float("nan")
        return batch

    monkeypatch.setattr(ContextWindows, "get_batch", poisoned)
    run = tmp_path / "run"
    assert train(tiny_config(tmp_path, tiny_store(tmp_path / "s.h5"), max_steps=8), run) == 2
    error = one_line_error(capsys)
    newest = run / "checkpoints" / "step_00000004"
    assert "training stopped at step 5: 1 of the batch's returns-to-go" in error
    assert f"the last good checkpoint, {newest}, is kept" in error
    assert [step for step, _ in list_checkpoints(run)] == [2, 4]
    assert_finite(newest)
    HookedDecisionTransformer.from_pretrained(newest)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in logged] == [1, 2, 3, 4]


def test_a_huge_learning_rate_stops_naming_the_lr(tmp_path, capsys, monkeypatch) -> None:
    """lr 1e30: the first update is finite but the next loss is not; the run stops there,
    naming train.lr as the likely cause, and every checkpoint it left is finite. (The config
    refuses an lr above MAX_LR as a typo; lifted here to reach the guard behind it.)"""
    import atari_dt.training.config

    monkeypatch.setattr(atari_dt.training.config, "MAX_LR", float("inf"))
    store = tiny_store(tmp_path / "s.h5")
    run = tmp_path / "run"
    assert train(tiny_config(tmp_path, store, lr=1e30, checkpoint_every=1), run) == 2
    error = one_line_error(capsys)
    found = re.search(
        r"training stopped at step (\d+): the loss is (nan|inf); the learning rate is likely "
        r"too high \(train\.lr=1e\+30, .*\): lower it",
        error,
    )
    assert found, error
    saved = [step for step, _ in list_checkpoints(run)]
    assert saved == list(range(1, int(found.group(1))))
    for _, directory in list_checkpoints(run):
        assert_finite(directory)


def test_non_finite_weights_are_never_saved(tmp_path, capsys, monkeypatch) -> None:
    """An update that leaves a NaN weight though its loss was finite, on a checkpoint step: the
    checkpoint is not written, the one before it is kept."""
    steps = []
    adamw_step = torch.optim.AdamW.step

    def poisoning_step(self, *args, **kwargs):
        result = adamw_step(self, *args, **kwargs)
        steps.append(1)
        if len(steps) == 4:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
        return result

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoning_step)
    run = tmp_path / "run"
    assert train(tiny_config(tmp_path, tiny_store(tmp_path / "s.h5"), max_steps=6), run) == 2
    error = one_line_error(capsys)
    assert "training stopped at step 4: the weights or optimiser moments are NaN/inf" in error
    assert "train.lr=" in error and "step_00000002, is kept" in error
    assert [step for step, _ in list_checkpoints(run)] == [2]
    assert not list((run / "checkpoints").glob(".step_*"))  # no half-written one either


def test_nan_data_stops_every_ddp_rank_together(tmp_path) -> None:
    """Two gloo ranks, NaN returns-to-go in half the episodes (so often in one rank's share of
    a batch only): both ranks stop at the same step with the same message, promptly, with no
    traceback from atari-dt (torchrun prints its own), and no checkpoint after it exists."""
    store = tiny_store(tmp_path / "nan.h5", nan_reward_in=(1, 3))
    run = tmp_path / "run"
    result = torchrun(tiny_config(tmp_path, store, max_steps=20), run, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode != 0 and not re.search(r'File ".*/atari_dt/', output), output[-3000:]
    stops = re.findall(r"training stopped at step (\d+): \d+ of the batch's returns-to-go", output)
    assert len(stops) == 2 and stops[0] == stops[1], output[-3000:]
    assert all(step < int(stops[0]) for step, _ in list_checkpoints(run))


# --- item 10: checkpoints carry checksums checked on load -------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 4-step run (checkpoints at steps 2 and 4); tests change a copy."""
    tmp = tmp_path_factory.mktemp("trained")
    run = tmp / "run"
    assert train(tiny_config(tmp, tiny_store(tmp / "s.h5")), run) == 0
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    # config.yaml's data path is absolute: the store stays where the fixture wrote it.
    return copy


def flip_byte(path: Path) -> None:
    """Flip one bit of a byte in the tensor data (the end of the file), which leaves the file a
    readable safetensors file of the same shapes: only a checksum notices."""
    raw = bytearray(path.read_bytes())
    raw[-7] ^= 0x01
    path.write_bytes(bytes(raw))


def test_checkpoints_record_the_sha256_of_every_file(run) -> None:
    import hashlib

    _, directory = list_checkpoints(run)[-1]
    record = json.loads((directory / "checksums.json").read_text())
    files = {p.name for p in directory.iterdir()} - {"checksums.json"}
    assert files == {
        "config.json",
        "metadata.json",
        "model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    }
    assert record["sha256"] == {
        name: hashlib.sha256((directory / name).read_bytes()).hexdigest() for name in files
    }


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors"])
def test_a_flipped_byte_is_refused_on_resume(run, name, capsys) -> None:
    """``--resume`` of a run whose newest checkpoint has one flipped byte: refused, naming the
    file, and pointing at the checkpoint before it."""
    _, newest = list_checkpoints(run)[-1]
    flip_byte(newest / name)
    assert train(run / "config.yaml", run, "--resume") == 2
    error = one_line_error(capsys)
    assert f"--resume: {newest / name}: its SHA-256 differs from the one in checksums.json" in (
        error
    )
    assert f"remove {newest} to resume from step_00000002" in error


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer.safetensors", "config.json"])
def test_a_flipped_byte_is_refused_by_from_pretrained(run, name) -> None:
    """The model loader checks the whole directory: the optimiser file too (a checkpoint with
    one corrupt file is suspect as a whole), and the model it was given is left unfilled."""
    _, newest = list_checkpoints(run)[-1]
    path = newest / name
    if name == "config.json":  # still valid JSON of the same model: only a checksum notices
        path.write_text(path.read_text().replace('"max_timestep": 64', '"max_timestep": 64 '))
    else:
        flip_byte(path)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: its SHA-256 differs"):
        HookedDecisionTransformer.from_pretrained(newest)


def test_a_file_added_after_the_checkpoint_is_refused(trained, tmp_path) -> None:
    """A ``metadata.json`` the checksums do not list is as unverified as a changed one."""
    directory = HookedDecisionTransformer.from_pretrained(
        list_checkpoints(trained)[-1][1]
    ).save_pretrained(tmp_path / "model")
    assert not (directory / "metadata.json").exists()
    (directory / "metadata.json").write_text('{"step": 99}\n')
    with pytest.raises(CheckpointError, match=r"metadata.json: not in checksums.json"):
        HookedDecisionTransformer.from_pretrained(directory)


@pytest.mark.parametrize("how", ["edited", "renamed"])
def test_a_trainer_state_with_a_wrong_step_is_refused(run, how, capsys) -> None:
    """The step is the whole RNG and sampler state: a ``trainer_state.json`` whose step is not
    its directory's (edited, or the directory renamed) would silently resume another run."""
    _, newest = list_checkpoints(run)[-1]
    if how == "edited":
        state = json.loads((newest / "trainer_state.json").read_text())
        (newest / "trainer_state.json").write_text(json.dumps({**state, "step": 3}))
        wrong, directory = 3, newest
    else:
        directory = newest.with_name("step_00000006")
        newest.rename(directory)
        wrong = 4
    assert train(run / "config.yaml", run, "--resume") == 2
    error = one_line_error(capsys)
    assert (
        f"{directory / 'trainer_state.json'}: step {wrong}, but its directory {directory.name} "
        "is step"
    ) in error, error


def test_a_checkpoint_without_checksums_still_loads(run, capsys) -> None:
    """A checkpoint written before checksums existed: loads with a warning, and a run resumes
    from one (and its new checkpoints have checksums)."""
    for _, directory in list_checkpoints(run):
        (directory / "checksums.json").unlink()
    older, newest = (directory for _, directory in list_checkpoints(run))
    with pytest.warns(UserWarning, match=r"has no checksums.json .* loaded without verifying"):
        model = HookedDecisionTransformer.from_pretrained(newest)
    assert model.cfg.n_layers == 2
    shutil.rmtree(newest)  # resume from step 2, which retrains step 4
    with pytest.warns(UserWarning, match=r"step_00000002 has no checksums.json"):
        assert train(run / "config.yaml", run, "--resume") == 0
    capsys.readouterr()
    assert [step for step, _ in list_checkpoints(run)] == [2, 4]
    assert (newest / "checksums.json").is_file() and not (older / "checksums.json").exists()
    HookedDecisionTransformer.from_pretrained(newest)
