"""Checkpoints: exact round trips, atomic writes, and clear errors for every bad directory."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_model import TINY, inputs, make_model

from atari_dt.cli import main
from atari_dt.config import ConfigError
from atari_dt.model import CheckpointError, HookedDecisionTransformer
from atari_dt.model import checkpoint as checkpoint_module


@pytest.fixture
def saved(tmp_path):
    model = make_model(dataclasses.replace(TINY, return_head=True, positional="original"))
    return model, model.save_pretrained(tmp_path / "ckpt", metadata={"step": 12})


def test_round_trip_is_exact(saved, seaquest_windows) -> None:
    model, directory = saved
    loaded = HookedDecisionTransformer.from_pretrained(directory)
    assert loaded.cfg == model.cfg and not loaded.training
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    with torch.no_grad():
        assert torch.equal(model(*inputs(seaquest_windows)), loaded(*inputs(seaquest_windows)))
    assert sorted(p.name for p in directory.iterdir()) == [
        "checksums.json",
        "config.json",
        "metadata.json",
        "model.safetensors",
    ]
    assert checkpoint_module.read_metadata(directory) == {"step": 12}


def test_no_pickle_in_the_weights(saved) -> None:
    _, directory = saved
    raw = (directory / "model.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert header["__metadata__"] == {"format": "atari-dt/model"}


def test_existing_checkpoints_are_kept_unless_overwrite(saved) -> None:
    model, directory = saved
    with pytest.raises(FileExistsError, match="already holds a checkpoint; pass overwrite=True"):
        model.save_pretrained(directory)
    model.save_pretrained(directory, overwrite=True)
    assert checkpoint_module.read_metadata(directory) is None  # replaced as a whole


def test_foreign_files_are_never_deleted(tmp_path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("{}\n")
    with pytest.raises(FileExistsError, match=r"not part of a model checkpoint \(metrics.jsonl\)"):
        make_model().save_pretrained(run_dir, overwrite=True)
    assert (run_dir / "metrics.jsonl").exists()


def test_a_failed_save_leaves_the_old_checkpoint(saved, monkeypatch) -> None:
    model, directory = saved
    before = (directory / "model.safetensors").read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(directory, overwrite=True)
    assert (directory / "model.safetensors").read_bytes() == before
    assert [p.name for p in directory.parent.iterdir()] == ["ckpt"]  # no temporaries left


def edit_config(directory, **changes) -> None:
    path = directory / "config.json"
    header = json.loads(path.read_text())
    header["config"].update(changes)
    path.write_text(json.dumps(header))


def test_a_checkpoint_from_another_config_names_the_tensor(saved) -> None:
    _, directory = saved
    edit_config(directory, n_actions=6)
    with pytest.raises(
        CheckpointError, match=r"tensor 'W_U' has shape \[32, 18\], the config needs \[32, 6\]"
    ):
        HookedDecisionTransformer.from_pretrained(directory)


def test_a_checkpoint_holds_the_number_of_actions(saved) -> None:
    """A checkpoint's n_actions is the resolved number; 'auto' (written by hand) is refused."""
    _, directory = saved
    assert json.loads((directory / "config.json").read_text())["config"]["n_actions"] == 18
    edit_config(directory, n_actions="auto")
    with pytest.raises(CheckpointError, match=r"config.json: n_actions is 'auto'; a checkpoint"):
        HookedDecisionTransformer.from_pretrained(directory)


def test_missing_and_unexpected_tensors(saved) -> None:
    _, directory = saved
    edit_config(directory, n_layers=3)
    with pytest.raises(CheckpointError, match=r"tensor 'blocks.2.ln1.w' \[32\] is missing"):
        HookedDecisionTransformer.from_pretrained(directory)
    edit_config(directory, n_layers=2, return_head=False)
    with pytest.raises(CheckpointError, match=r"unexpected tensor 'return_head\.bias'"):
        HookedDecisionTransformer.from_pretrained(directory)


def test_unknown_config_key(saved) -> None:
    _, directory = saved
    edit_config(directory, n_layer=2)
    with pytest.raises(
        ConfigError,
        match=r"config.json: unknown config key 'model.n_layer' \(did you mean 'n_layers'\?\)",
    ):
        HookedDecisionTransformer.from_pretrained(directory)


def truncate(path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize(
    ("damage", "error", "match"),
    [
        (
            lambda d: truncate(d / "model.safetensors", 5000),
            CheckpointError,
            "model.safetensors: not a readable safetensors file",
        ),
        (
            lambda d: (d / "model.safetensors").unlink(),
            FileNotFoundError,
            "model.safetensors is missing",
        ),
        (lambda d: (d / "config.json").unlink(), FileNotFoundError, "config.json is missing"),
        (lambda d: (d / "config.json").write_text("{not json"), CheckpointError, "not valid JSON"),
        (
            lambda d: (d / "config.json").write_text('{"format": "other"}'),
            CheckpointError,
            "not an atari-dt model config",
        ),
        (
            lambda d: (d / "config.json").write_text('{"format": "atari-dt/model", "version": 9}'),
            CheckpointError,
            "version 9, expected 1",
        ),
        (
            lambda d: (d / "config.json").write_text('{"format": "atari-dt/model", "version": 1}'),
            CheckpointError,
            "no 'config' mapping",
        ),
    ],
)
def test_damaged_checkpoints_error_clearly(saved, damage, error, match) -> None:
    _, directory = saved
    damage(directory)
    with pytest.raises(error, match=match):
        HookedDecisionTransformer.from_pretrained(directory)


def test_missing_directory(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint directory at"):
        HookedDecisionTransformer.from_pretrained(tmp_path / "nowhere")


def test_cli_model_info(saved, capsys) -> None:
    _, directory = saved
    assert main(["model", "info", str(directory), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model = HookedDecisionTransformer.from_pretrained(directory)
    assert summary["parameters"]["total"] == sum(p.numel() for p in model.parameters())
    assert summary["hooks"]["attn.hook_pattern"] == 2
    assert summary["metadata"] == {"step": 12}
    assert main(["model", "info", str(directory)]) == 0
    assert "HookedDecisionTransformer" in capsys.readouterr().out
    edit_config(directory, d_model=64, n_heads=4)
    assert main(["model", "info", str(directory)]) == 2
    assert "tensor 'pos_embed' has shape [24, 32], the config needs [24, 64]" in (
        capsys.readouterr().err
    )


def test_corrupt_metadata(saved) -> None:
    _, directory = saved
    (directory / "metadata.json").write_text("{oops")
    with pytest.raises(CheckpointError, match=r"metadata.json: not valid JSON"):
        checkpoint_module.read_metadata(directory)
