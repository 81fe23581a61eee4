"""Importing the original Atari DT's weights: logits of an independent reference model (see
``reference_dt.py``) and of our converted model agree on real frames."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import seeds
import torch
from reference_dt import ReferenceAtariDT, randomise

from atari_dt.cli import main
from atari_dt.model import CheckpointError, HookedDecisionTransformer
from atari_dt.model.original import convert_original_state_dict, import_original

T, N_ACTIONS, MAX_TIMESTEP = 8, 18, 400


def make_reference(model_type: str = "reward_conditioned", seed: int = 0) -> ReferenceAtariDT:
    reference = ReferenceAtariDT(
        N_ACTIONS, T, MAX_TIMESTEP, n_layer=2, n_head=4, n_embd=32, model_type=model_type
    )
    randomise(reference, torch.Generator().manual_seed(seeds.seed(seed)))
    return reference.eval()


def original_inputs(windows: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The real windows in the original's layout: float states in [0, 1] ``(B, T, 4*84*84)``,
    ``(B, T, 1)`` actions and RTGs, and ``(B, 1, 1)`` start timesteps."""
    frames = torch.from_numpy(windows["frames"])
    return {
        "states": frames.float().div(255).flatten(2),
        "actions": torch.from_numpy(windows["actions"])[..., None],
        "rtgs": torch.from_numpy(windows["rtg"])[..., None],
        "timesteps": torch.from_numpy(windows["timesteps"][:, :1, None]),
    }


def our_inputs(windows: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(windows[k]) for k in ("frames", "actions", "rtg", "timesteps"))


def converted(reference: ReferenceAtariDT) -> HookedDecisionTransformer:
    naive = reference.model_type == "naive"
    ours, report = convert_original_state_dict(
        reference.state_dict(), n_heads=4, behaviour_cloning=naive
    )
    model = HookedDecisionTransformer(report.config).eval()
    model.load_state_dict(ours, strict=True)
    return model


@pytest.mark.parametrize("model_type", ["reward_conditioned", "naive"])
def test_logits_match_the_reference_on_real_frames(seaquest_windows, model_type) -> None:
    reference = make_reference(model_type)
    model = converted(reference)
    original = original_inputs(seaquest_windows)
    frames, actions, rtg, timesteps = our_inputs(seaquest_windows)
    with torch.no_grad():
        expected = reference(**original)
        ours = model(frames, actions, rtg, timesteps)
        # The evaluation shape: 3T-1 tokens, the T-1 previous actions.
        eval_original = {**original, "actions": original["actions"][:, :-1]}
        expected_eval = reference(**eval_original, training_shape=False)
        unknown_last_action = actions.clone()
        unknown_last_action[:, -1] = 0  # not chosen yet at decision time
        ours_eval = model(frames, unknown_last_action, rtg, timesteps)
    assert expected.shape == ours.shape == (6, T, N_ACTIONS) == expected_eval.shape
    assert expected.std() > 0.1  # the logits vary: a wrong mapping could not hide
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(ours_eval, expected_eval, rtol=0, atol=1e-5)


def test_a_wrong_head_count_is_caught(seaquest_windows) -> None:
    """The head count is not in the state dict: importing with the wrong one gives other
    logits, which is why the importer reports it as assumed."""
    reference = make_reference()
    ours, report = convert_original_state_dict(reference.state_dict(), n_heads=2)
    model = HookedDecisionTransformer(report.config).eval()
    model.load_state_dict(ours)
    with torch.no_grad():
        expected = reference(**original_inputs(seaquest_windows))
        wrong = model(*our_inputs(seaquest_windows))
    assert (wrong - expected).abs().max() > 1e-3
    assert report.assumed["n_heads"] == 2


def test_report_says_what_was_inferred() -> None:
    _, report = convert_original_state_dict(make_reference().state_dict(), n_heads=4)
    values = {name: entry["value"] for name, entry in report.inferred.items()}
    assert values == {
        "d_model": 32,
        "context_len": T,
        "max_timestep": MAX_TIMESTEP + 1,
        "n_layers": 2,
        "n_actions": N_ACTIONS,
    }
    assert report.assumed["behaviour_cloning"] is False
    assert report.config.positional == "original"
    assert sorted(report.ignored) == ["blocks.0.attn.mask", "blocks.1.attn.mask", "tok_emb.weight"]


def save_data_parallel(reference: ReferenceAtariDT, path: Path) -> Path:
    torch.save({f"module.{k}": v for k, v in reference.state_dict().items()}, path)
    return path


def test_cli_import_with_module_prefix(tmp_path, seaquest_windows, capsys) -> None:
    reference = make_reference()
    ckpt = save_data_parallel(reference, tmp_path / "dt.pt")
    out = tmp_path / "imported"
    assert main(["model", "import-original", str(ckpt), str(out), "--n-heads", "4"]) == 0
    printed = capsys.readouterr().out
    assert "context_len" in printed and "n_heads" in printed and "assumed" in printed
    model = HookedDecisionTransformer.from_pretrained(out)
    metadata = json.loads((out / "metadata.json").read_text())
    assert metadata["imported_from"] == str(ckpt)
    with torch.no_grad():
        expected = reference(**original_inputs(seaquest_windows))
        torch.testing.assert_close(
            model(*our_inputs(seaquest_windows)), expected, rtol=0, atol=1e-5
        )


def test_nested_state_dict_is_accepted(tmp_path) -> None:
    path = tmp_path / "dt.pt"
    torch.save({"state_dict": make_reference().state_dict(), "epoch": 3}, path)
    report = import_original(path, tmp_path / "out", n_heads=4)
    assert report.config.n_layers == 2


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda sd: sd.pop("head.weight"), "key 'head.weight' is missing"),
        (
            lambda sd: sd.update({"blocks.0.attn.gate.weight": torch.zeros(2)}),
            "unexpected key 'blocks.0.attn.gate.weight'",
        ),
        (
            lambda sd: sd.update({"value_head.weight": torch.zeros(2)}),
            "unexpected key 'value_head.weight'",
        ),
        (
            lambda sd: sd.update({"pos_emb": torch.zeros(1, 20, 32)}),
            r"pos_emb has shape \[1, 20, 32\]",
        ),
        (lambda sd: sd.pop("blocks.1.ln2.bias"), r"'blocks.1.ln2.b' \[32\] is missing"),
        (lambda sd: sd.pop("ret_emb.0.weight"), "import it with behaviour_cloning=True"),
        (
            lambda sd: sd.update({"blocks.0.attn.query.weight": torch.zeros(16, 32)}),
            r"'blocks.0.attn.query.weight' has shape \[16, 32\], which does not fit",
        ),
        (
            lambda sd: sd.update({"global_pos_emb": torch.zeros(401, 32)}),
            r"global_pos_emb has shape \[401, 32\], expected \(1, max_timestep\+1, 32\)",
        ),
    ],
)
def test_bad_state_dicts_error_clearly(tmp_path, edit, match) -> None:
    state_dict = dict(make_reference().state_dict())
    edit(state_dict)
    path = tmp_path / "dt.pt"
    torch.save(state_dict, path)
    with pytest.raises(CheckpointError, match=match):
        import_original(path, tmp_path / "out", n_heads=4)
    assert not (tmp_path / "out").exists()


def test_head_count_must_divide_the_width(tmp_path) -> None:
    path = tmp_path / "dt.pt"
    torch.save(make_reference().state_dict(), path)
    with pytest.raises(CheckpointError, match=r"n_heads \(5\) must divide d_model \(32\)"):
        import_original(path, tmp_path / "out", n_heads=5)


def test_unreadable_checkpoints(tmp_path, capsys) -> None:
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        import_original(corrupt, tmp_path / "out")
    assert (
        main(["model", "import-original", str(tmp_path / "missing.pt"), str(tmp_path / "o")]) == 2
    )
    assert "missing.pt" in capsys.readouterr().err


def test_naive_checkpoints_need_the_flag(tmp_path, seaquest_windows) -> None:
    """The original's BC model carries an (unused) ret_emb, so only the flag can tell."""
    reference = make_reference("naive")
    path = tmp_path / "bc.pt"
    torch.save(reference.state_dict(), path)
    as_bc, as_dt = tmp_path / "bc", tmp_path / "dt"
    assert (
        main(
            [
                "model",
                "import-original",
                str(path),
                str(as_bc),
                "--n-heads",
                "4",
                "--behaviour-cloning",
            ]
        )
        == 0
    )
    import_original(path, as_dt, n_heads=4)
    with torch.no_grad():
        expected = reference(**original_inputs(seaquest_windows))
        bc = HookedDecisionTransformer.from_pretrained(as_bc)(*our_inputs(seaquest_windows))
        dt = HookedDecisionTransformer.from_pretrained(as_dt)(*our_inputs(seaquest_windows))
    torch.testing.assert_close(bc, expected, rtol=0, atol=1e-5)
    assert (dt - expected).abs().max() > 1e-3
