"""Training: the loss falls on real data, resume is exact after SIGKILL or SIGTERM, DDP on two
CPU ranks matches one process, and bad runs fail clearly."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from seeds import seed

from atari_dt.cli import main
from atari_dt.datasets import ContextWindows, DataConfig
from atari_dt.model.checkpoint import read_weights
from atari_dt.training.config import ExperimentConfig, TrainConfig
from atari_dt.training.metrics import read_metrics
from atari_dt.training.optim import lr_at, param_groups
from atari_dt.training.state import list_checkpoints

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def repeat_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real Seaquest play whose actions are learnable: random actions each repeated with
    probability 0.8 (2,000 steps, 5 episodes)."""
    path = tmp_path_factory.mktemp("train") / "repeat.h5"
    policy = "collect.policy=[{policy: random, repeat: 0.8}]"
    assert (
        main(
            [
                "collect",
                "--game",
                "Seaquest",
                "--set",
                policy,
                "--steps",
                "2000",
                "--max-episode-steps",
                "400",
                "--seed",
                str(seed(0)),
                "--workers",
                "1",
                "--out",
                str(path),
            ]
        )
        == 0
    )
    return path


def write_config(tmp_path: Path, store: Path, **train: object) -> Path:
    values = {
        "data": {"path": str(store), "context_len": 4},
        "model": {
            "n_actions": 18,
            "d_model": 32,
            "n_layers": 2,
            "n_heads": 2,
            "max_timestep": 512,
            "dropout": 0.1,
        },
        "train": {
            "max_steps": 30,
            "batch_size": 16,
            "lr": 1e-3,
            "warmup_steps": 5,
            "log_every": 5,
            "checkpoint_every": 5,
            "keep_checkpoints": 10,
            "seed": seed(0),
            **train,
        },
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    _, directory = list_checkpoints(run_dir)[-1]
    tensors = read_weights(directory / "model.safetensors")
    tensors.update(
        {f"optim.{k}": v for k, v in read_weights(directory / "optimizer.safetensors").items()}
    )
    return tensors


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    different = [name for name in a if not torch.equal(a[name], b[name])]
    assert not different, f"differ: {different[:5]}"


def test_loss_falls_on_real_data(tmp_path, repeat_store) -> None:
    config = write_config(tmp_path, repeat_store, max_steps=120, log_every=20, lr=3e-3)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 0
    metrics = read_metrics(run)
    assert [m["step"] for m in metrics] == list(range(20, 121, 20))
    last = metrics[-1]
    # The actions are uniform over 18, so a policy that ignores the context scores at best
    # ln 18 = 2.89 nats and 1/18 accuracy in expectation; over the ~1,300 predictions of a
    # logging interval, noise moves those by ~0.01. Beating both by far means it learnt to use
    # the previous actions (measured: 2.41 nats and 0.36-0.47 accuracy over seeds).
    assert last["train/loss"] < math.log(18) - 0.2
    assert last["train/action_accuracy"] > 0.2
    assert {"train/lr", "train/grad_norm", "perf/frames_per_s"} <= set(last)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["model"]["context_len"] == 4 and saved["model"]["rtg_scale"] >= 1.0
    assert [step for step, _ in list_checkpoints(run)] == list(range(75, 121, 5))  # keep 10


def start_training(config: Path, run: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "atari_dt",
            "train",
            str(config),
            "--out",
            str(run),
            "--no-progress",
            *extra,
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wait_for_checkpoint(run: Path, step: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not any(s >= step for s, _ in list_checkpoints(run)):
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint within 2 minutes"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, repeat_store) -> tuple[Path, dict[str, torch.Tensor]]:
    """The reference: 40 steps in one go (a subprocess, one thread, as the interrupted runs)."""
    tmp = tmp_path_factory.mktemp("full")
    config = write_config(tmp, repeat_store, max_steps=40)
    run = tmp / "run"
    process = start_training(config, run)
    assert process.wait(timeout=300) == 0, process.stdout.read()
    return config, final_weights(run)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_resume_after_interruption_is_bitwise_exact(tmp_path, uninterrupted, how) -> None:
    config, expected = uninterrupted
    run = tmp_path / "run"
    process = start_training(config, run)
    wait_for_checkpoint(run, 10, process)
    process.send_signal(how)
    code = process.wait(timeout=120)
    output = process.stdout.read()
    steps = [s for s, _ in list_checkpoints(run)]
    assert max(steps) < 40, "the run finished before it was interrupted"
    if how == signal.SIGTERM:  # it saves the step it was in and says how to resume
        assert code == 130 and "--resume" in output, output
    else:
        assert code == -signal.SIGKILL
    resumed = start_training(config, run, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stdout.read()
    assert_bitwise_equal(final_weights(run), expected)
    logged = [m["step"] for m in read_metrics(run)]
    assert logged == sorted(set(logged)) and logged[-1] == 40  # each step logged once


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(config: Path, run: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """``atari-dt train`` on 2 gloo ranks (one thread each) under torchrun."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        "-m",
        "atari_dt.training",
        str(config),
        "--out",
        str(run),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def test_ddp_two_cpu_ranks_match_one_process(tmp_path, repeat_store) -> None:
    """Two gloo ranks, each half of every global batch, against one process on the whole
    batch: each of the 20 steps' gradients must be the same, up to the order of float sums.

    With a real learning rate the runs drift apart as a matter of course: Adam divides by
    sqrt(v), so last-bit differences in a near-zero gradient move a weight by up to lr a step.
    So lr is 1e-12: an AdamW step (bias-corrected, betas 0.9, 0.95) moves a weight by at most
    1.17 lr (Cauchy-Schwarz over the moments' sums), so both runs take every gradient at the
    same weights to within ~100 lr, and Adam's moments, fixed linear sums of the steps'
    gradients and of their squares, must agree as closely as one gradient does. Gradient
    clipping is off (it would rescale a wrongly scaled gradient back to norm 1) and so is
    dropout (its masks differ per rank).
    """
    lr, steps = 1e-12, 20
    config = write_config(tmp_path, repeat_store, max_steps=steps, lr=lr, grad_clip=0.0)
    config.write_text(config.read_text().replace("dropout: 0.1", "dropout: 0.0"))
    assert main(["train", str(config), "--out", str(tmp_path / "single"), "--no-progress"]) == 0
    single = final_weights(tmp_path / "single")
    run = tmp_path / "ddp"
    result = torchrun(config, run)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    state = json.loads((list_checkpoints(run)[-1][1] / "trainer_state.json").read_text())
    assert state["world"] == 2  # and every checkpoint checked that both ranks agree
    # A failure on rank 0 before training (the run exists) ends every rank, promptly.
    again = torchrun(config, run, timeout=180)
    assert again.returncode != 0 and "already holds a run" in again.stderr + again.stdout
    ddp = final_weights(run)
    assert ddp.keys() == single.keys()
    moments = [name for name in single if name.endswith((".exp_avg", ".exp_avg_sq"))]
    assert len(moments) == 2 * sum(not n.startswith("optim.") for n in single)
    for name, tensor in single.items():
        if name.endswith(".step"):
            assert torch.equal(ddp[name], tensor), name
        elif name in moments:
            # The halves' gradients summed by all-reduce instead of in one pass: float32 sums
            # of the same terms in another order, measured at most 3.4e-6 of the tensor's
            # largest element (conv weights, the longest sums); 1e-4 bounds that with room.
            # The floor: the key biases' gradient is 0 in exact arithmetic (softmax ignores a
            # shift of all scores), so theirs (~3e-12, squared ~1e-23) is rounding noise alone.
            scale = float(tensor.abs().max())
            floor = 1e-20 if name.endswith("_sq") else 1e-10
            torch.testing.assert_close(
                ddp[name], tensor, rtol=0, atol=1e-4 * scale + floor, msg=name
            )
        else:  # weights: this mostly checks the same initialisation (most steps are below half
            # an ulp and leave a weight unchanged). A step moves one by at most 1.17 lr (weight
            # decay 1 - 1e-13 rounds to 1), at most doubled by rounding to the nearest float.
            torch.testing.assert_close(
                ddp[name], tensor, rtol=0, atol=2 * steps * 2.4 * lr, msg=name
            )


def test_optimizer_groups_follow_the_original() -> None:
    from atari_dt.model import HookedDecisionTransformer, ModelConfig

    model = HookedDecisionTransformer(ModelConfig(n_actions=18, d_model=32, n_layers=1, n_heads=2))
    decayed, plain = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed_names = sorted(names[id(p)] for p in decayed["params"])
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert "blocks.0.attn.W_Q" in decayed_names and "encoder.conv0.weight" in decayed_names
    assert "rtg_embed.weight" in decayed_names and "W_U" in decayed_names
    plain_names = {names[id(p)] for p in plain["params"]}
    assert {"action_embed.weight", "time_embed.weight", "blocks.0.ln1.w", "b_U"} <= plain_names
    assert len(decayed["params"]) + len(plain["params"]) == len(list(model.parameters()))


def test_learning_rate_schedule() -> None:
    """Warm-up, then the original's cosine clamped at 10%: the floor from ~80% of the decay."""
    cfg = TrainConfig(max_steps=1100, warmup_steps=100, lr=1e-3, final_lr_fraction=0.1)
    lrs = np.array([lr_at(step, cfg) for step in range(1100)])
    assert lrs[0] == pytest.approx(1e-5) and lrs[99] == pytest.approx(1e-3)
    assert np.all(np.diff(lrs[:100]) > 0) and np.all(np.diff(lrs[100:]) <= 1e-12)
    assert lrs[600] == pytest.approx(5e-4)  # half-way through the decay: cos = 0
    floor = 100 + np.flatnonzero(np.isclose(lrs[100:], 1e-4, rtol=1e-9))
    assert floor[0] == pytest.approx(100 + 0.795 * 1000, abs=2) and np.all(lrs[floor[0] :] == 1e-4)


def test_global_batch_does_not_depend_on_the_world(repeat_store) -> None:
    from atari_dt.training.distributed import Distributed
    from atari_dt.training.trainer import batch_indices

    windows = ContextWindows(repeat_store, DataConfig(context_len=4))
    cpu = torch.device("cpu")
    alone = batch_indices(windows, 0, 7, 8, Distributed(0, 1, cpu))
    halves = [batch_indices(windows, 0, 7, 8, Distributed(r, 2, cpu)) for r in (0, 1)]
    assert sorted(alone) == sorted(np.concatenate(halves))
    assert not np.array_equal(alone, batch_indices(windows, 0, 8, 8, Distributed(0, 1, cpu)))


def test_bad_runs_fail_clearly(tmp_path, repeat_store, capsys) -> None:
    config = write_config(tmp_path, repeat_store, max_steps=5)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 0
    capsys.readouterr()
    cases = [
        ([], "already holds a run; pass --resume or --force"),
        (
            ["--resume", "--set", "train.lr=0.01"],
            r"--resume: the config differs from .* at train.lr",
        ),
        (["--data", str(tmp_path / "nope.h5"), "--force"], "nope.h5 does not exist"),
        (
            ["--force", "--set", "model.n_actions=6"],
            "the episode store has 18 actions but model.n_actions=6",
        ),
        (["--force", "--set", "model.max_timestep=100"], "set --set model.max_timestep=400"),
        (["--force", "--set", "train.batch_size=0"], "batch_size must be >= 1"),
        (["--force", "--set", "train.bogus=1"], "unknown config key 'train.bogus'"),
        (["--force", "--set", "train.return_loss_weight=1"], "needs a return head"),
        (["--force", "--set", "train.grad_clip=-1"], "grad_clip must be >= 0"),
    ]
    for extra, message in cases:
        assert main(["train", str(config), "--out", str(run), "--no-progress", *extra]) == 2
        err = capsys.readouterr().err
        assert __import__("re").search(message, err), (extra, err)
    assert main(["train", str(config), "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "holds no run to resume" in capsys.readouterr().err


def four_action_store(path: Path, *, n_actions: int | None = 4) -> Path:
    """A Breakout-like store: 3 short episodes of random frames, actions in 0..3, recording
    ``n_actions`` (None: a game ALE does not know, no count recorded)."""
    from atari_dt.datasets import EpisodeStoreWriter

    rng = np.random.default_rng(seed(0))
    with EpisodeStoreWriter(path, game="Breakout", n_actions=n_actions) as writer:
        for length in (30, 40, 50):
            frames = rng.integers(0, 256, (length, 84, 84), dtype=np.uint8)
            rewards = rng.choice([0.0, 1.0], length).astype(np.float32)
            writer.add_episode(frames, rng.integers(0, 4, length), rewards)
    return path


def small_config(tmp_path: Path, store: Path, **model: object) -> Path:
    """A 2-step run of a tiny DT that leaves ``model.n_actions`` at its default unless given."""
    values = {
        "data": {"path": str(store), "context_len": 4},
        "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_timestep": 64, **model},
        "train": {
            "max_steps": 2,
            "batch_size": 4,
            "warmup_steps": 1,
            "checkpoint_every": 2,
            "seed": seed(0),
        },
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


def test_n_actions_auto_takes_the_stores_count(tmp_path) -> None:
    """With the default ``model.n_actions: auto`` a 4-action (Breakout) store trains as is,
    and the run and its checkpoint record the resolved number, 4."""
    from atari_dt.model import HookedDecisionTransformer, ModelConfig

    assert ModelConfig().n_actions == "auto"
    store = four_action_store(tmp_path / "breakout.h5")
    run = tmp_path / "run"
    assert (
        main(["train", str(small_config(tmp_path, store)), "--out", str(run), "--no-progress"]) == 0
    )
    assert yaml.safe_load((run / "config.yaml").read_text())["model"]["n_actions"] == 4
    _, directory = list_checkpoints(run)[-1]
    assert json.loads((directory / "config.json").read_text())["config"]["n_actions"] == 4
    model = HookedDecisionTransformer.from_pretrained(directory)
    assert model.cfg.n_actions == 4 and model.W_U.shape[-1] == 4


def test_n_actions_that_differs_from_the_store_fails_clearly(tmp_path, capsys) -> None:
    """An explicit ``model.n_actions`` other than the store's is a user error naming both
    numbers; ``auto`` with a store that records no count asks for the number."""
    store = four_action_store(tmp_path / "breakout.h5")
    config = small_config(tmp_path, store, n_actions=18)
    assert main(["train", str(config), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "the episode store has 4 actions but model.n_actions=18" in err
    assert "--set model.n_actions=4" in err and "Traceback" not in err
    unknown = four_action_store(tmp_path / "unknown.h5", n_actions=None)
    config = small_config(tmp_path, unknown)
    assert main(["train", str(config), "--out", str(tmp_path / "u"), "--no-progress"]) == 2
    assert "records no action count" in capsys.readouterr().err


def test_resolved_config_round_trips(tmp_path, repeat_store) -> None:
    from atari_dt.training.run import load_run_config

    config = write_config(tmp_path, repeat_store, max_steps=2)
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 0
    loaded = load_run_config(run)
    assert isinstance(loaded, ExperimentConfig) and loaded.train.max_steps == 2
    with pytest.raises(FileNotFoundError, match="is not a training run"):
        load_run_config(tmp_path)


def test_bfloat16_precision_trains(tmp_path, repeat_store) -> None:
    """Autocast to bfloat16 trains (finite loss, float32 weights kept)."""
    config = write_config(tmp_path, repeat_store, max_steps=4, log_every=2, precision="bfloat16")
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 0
    assert all(np.isfinite(m["train/loss"]) for m in read_metrics(run))
    weights = final_weights(run)
    assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())


def test_return_head_trains_under_ddp_with_and_without_its_loss(tmp_path, repeat_store) -> None:
    """A return head whose loss weight is 0 gets no gradient; DDP must still run."""
    for weight in (0.0, 0.5):
        config = write_config(tmp_path, repeat_store, max_steps=3, return_loss_weight=weight)
        text = config.read_text().replace("n_heads: 2", "n_heads: 2\n  return_head: true")
        config.write_text(text)
        run = tmp_path / f"ddp{weight}"
        result = torchrun(config, run)
        assert result.returncode == 0, result.stderr[-3000:]
        metrics = read_metrics(run)
        assert ("train/return_mse" in metrics[-1]) == (weight > 0)


def test_training_from_replay_logs(tmp_path) -> None:
    """``--data`` may be a replay_logs directory: it is converted into the run first."""
    logs = tmp_path / "Seaquest" / "1" / "replay_logs"
    assert (
        main(
            [
                "collect",
                "--game",
                "Seaquest",
                "--policy",
                "random",
                "--steps",
                "700",
                "--format",
                "dqn-replay",
                "--capacity",
                "400",
                "--seed",
                "0",
                "--out",
                str(logs),
            ]
        )
        == 0
    )
    config = write_config(tmp_path, tmp_path / "unused.h5", max_steps=2)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                str(config),
                "--data",
                str(logs),
                "--out",
                str(run),
                "--no-progress",
                "--set",
                "model.max_timestep=4096",
            ]
        )
        == 0
    )
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["data"]["path"] == str(run / "episodes.h5") and (run / "episodes.h5").is_file()


def test_a_blind_encoder_is_reported(tmp_path, repeat_store, monkeypatch) -> None:
    """A first conv layer dead by construction (bias -1000: pixels in [0, 1] times default
    weights, |w| <= 1/16 over 256 inputs, add at most 16; Adam moves the bias ~lr a step)
    gives every frame one embedding: spread exactly 0, and training says so, once. A live
    encoder on the same real frames has a spread well above the threshold and no warning."""
    from atari_dt.model.hooked_dt import HookedDecisionTransformer
    from atari_dt.training.trainer import BLIND_SPREAD

    config = write_config(tmp_path, repeat_store, max_steps=6, log_every=2, lr=1e-4)
    live = tmp_path / "live"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(config), "--out", str(live), "--no-progress"]) == 0
    assert all(m["train/state_spread"] > 1e3 * BLIND_SPREAD for m in read_metrics(live))
    assert not [w for w in caught if "state encoder" in str(w.message)]
    init = HookedDecisionTransformer._init_weights

    def dead_first_layer(self) -> None:
        init(self)
        torch.nn.init.constant_(self.encoder.conv0.bias, -1000.0)

    monkeypatch.setattr(HookedDecisionTransformer, "_init_weights", dead_first_layer)
    blind = tmp_path / "blind"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["train", str(config), "--out", str(blind), "--no-progress"]) == 0
    assert all(m["train/state_spread"] == 0.0 for m in read_metrics(blind))
    said = [str(w.message) for w in caught if "state encoder" in str(w.message)]
    assert len(said) == 1 and "step 2:" in said[0] and "train.lr" in said[0]
