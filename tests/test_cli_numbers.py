"""The CLI computes nothing itself: the numbers in ``scan.json``, ``attribution.json`` and
``analysis.json`` are the public API's results on the same run, within float rounding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from commands import atari_dt

import atari_dt as adt


def close(cli: object, library: object) -> None:
    """Every number of a JSON value equals the library's (lists as arrays), to 1e-6."""
    expected = np.asarray(library, dtype=np.float64)
    np.testing.assert_allclose(np.asarray(cli, dtype=np.float64), expected, rtol=1e-6, atol=1e-7)


def test_scan_json_is_the_scan_report(tiny_run: Path, tmp_path: Path) -> None:
    command = f"scan {tiny_run} --rtg 0:6:4 --contexts 12 "
    command += f"--seed 3 --mode decremented --out {tmp_path}"
    assert atari_dt(command) == 0
    cli = json.loads((tmp_path / "scan.json").read_text())
    with adt.load_run(tiny_run) as run:
        report = adt.scan_report(
            run.model,
            run.sample_contexts(12, seed=3),
            [0, 2, 4, 6],
            mode="decremented",
            data_returns=run.train_returns,
        )
    scan = report.scan
    close(cli["action_probs"], scan.action_probs)
    close(cli["entropy"], scan.entropy)
    close(cli["kl_to_reference"], scan.kl_to_reference)
    close(cli["divergence_to_reference"], scan.js_to_reference)
    close(cli["saturated_fraction"], report.saturation.saturated_fraction)
    close(cli["attention_to_rtg"]["values"], report.attention_to_rtg.reshape(4, -1))
    close(cli["dla_along_scan"]["values"], report.dla.values)
    assert cli["dla_along_scan"]["action"] == scan.reference_action
    assert cli["reference_rtg"] == scan.reference_rtg and cli["contexts"] == 12


def test_attribution_json_is_explain_decision(tiny_run: Path, tmp_path: Path) -> None:
    command = f"attribute {tiny_run} --episode 1 --step 40 --baseline blur "
    command += f"--kind logit_diff --other-action 2 --n-steps 16 --out {tmp_path}"
    assert atari_dt(command) == 0
    cli = json.loads((tmp_path / "attribution.json").read_text())
    with adt.load_run(tiny_run) as run:
        explained = adt.explain_decision(
            run.model,
            run.contexts(1, 40),
            kind="logit_diff",
            other_action=2,
            baseline="blur",
            n_steps=16,
        )
    assert cli["target"] == explained.target.describe()
    close(cli["probabilities"], explained.probabilities)
    close(
        [cli["target_value"], cli["baseline_value"], cli["attribution_sum"]],
        [
            explained.pixels.target_value,
            explained.pixels.baseline_value,
            explained.pixels.attribution_sum,
        ],
    )
    close(cli["tokens"]["state"], explained.tokens.state)
    close(cli["tokens"]["rtg"], explained.tokens.rtg)


def test_analysis_json_is_analyze_decision(tiny_run: Path, tmp_path: Path) -> None:
    command = f"analyze {tiny_run} --episode 1 --step 50 "
    command += f"--contexts 16 --seed 2 --out {tmp_path}"
    assert atari_dt(command) == 0
    cli = json.loads((tmp_path / "analysis.json").read_text())
    with adt.load_run(tiny_run) as run:
        result = adt.analyze_decision(
            run.model,
            run.contexts(1, 50),
            run.sample_contexts(16, seed=2),
            data_returns=run.train_returns,
        )
    assert cli["action"] == result.action
    close([cli["dla"][label] for label in result.dla.labels], result.dla.values[:, 0])
    close(cli["logit_lens"]["probs"], result.logit_lens.probs[:, 0])
    close(cli["mean_ablation_kl"]["heads"], result.ablation.heads)
    close(cli["probes"]["rtg"]["scores"], result.probes["rtg"].scores)
    if isinstance(cli["patching"], str):  # this decision did not move: said, not plotted
        assert cli["patching"] == result.patching.skipped
    else:
        close(cli["patching"]["residual"], result.patching.residual.restored)


def test_analyze_decision_patches_against_an_out_of_distribution_rtg(tiny_run: Path) -> None:
    """The default corruption asks for 3x the data's largest return, contrasted with the least
    likely action; ``corrupted`` and ``contrast_target`` say exactly that."""
    from atari_dt.analysis.decision import contrast_target, corrupted, out_of_distribution_rtg

    assert out_of_distribution_rtg(np.array([-2.0, 5.0])) == 15.0
    assert out_of_distribution_rtg(np.array([0.2])) == 3.0 and out_of_distribution_rtg(None) == 3.0
    logits = torch.tensor([0.0, 2.0, -1.0, 1.0])
    target = contrast_target(logits)
    assert (target.action, target.other_action, target.kind) == (1, 2, "logit_diff")
    with pytest.raises(adt.UserError, match=r"other action 4 is not an action of the model"):
        contrast_target(logits, 4)
    with adt.load_run(tiny_run) as run:
        context = run.contexts(1, 50)
        high, what = corrupted(context, "rtg", rtg=9.0)
        blurred, _ = corrupted(context, "frame")
    assert what == "RTG 9" and torch.equal(high.rtg, torch.full_like(context.rtg, 9.0))
    with adt.load_run(tiny_run) as run:  # a contrast with itself moves nothing: said, not plotted
        preferred = int(run.model(context)[0, -1].argmax())
        same = adt.analyze_decision(
            run.model, context, run.sample_contexts(8), other_action=preferred
        )
    assert same.patching.residual is None and "nothing to restore" in same.patching.skipped
    assert torch.equal(blurred.frames[:, :-1], context.frames[:, :-1])  # only the current stack
    assert not torch.equal(blurred.frames[:, -1], context.frames[:, -1])
