"""The RTG-extrapolation study on a tiny real run: a store collected here with the Seaquest
expert-to-random mixture (RAM, behaviours), a tiny DT trained on it with its top returns held
out, and ``atari-dt study`` over it. Numbers are checked against the library functions they
come from, the report against a parser (and a real headless browser where one is installed),
and the cache by counting what was computed."""

from __future__ import annotations

import html
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from commands import atari_dt
from pages import CHROMIUM, assert_self_contained, render_in_chromium
from seeds import seed
from study_runs import STUDY

import atari_dt as adt


def summary_of(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())


HEADLINES = {
    "extrapolation_gain_vs_data_max",
    "saturation",
    "policy_divergence_at_top",
    "rtg_carriers",
    "steering",
    "steered_rollouts",
    "imitation_above_data",
    "map_rank_correlation_at_top",
    "map_top_overlap_at_top",
    "rtg_token_share_change",
    "episodes_at_step_cap",
}


def test_the_study_writes_every_section(study_dir: Path) -> None:
    summary = summary_of(study_dir)
    assert set(summary["headline"]) >= HEADLINES
    for entry in summary["headline"].values():
        assert entry["how"] and "value" in entry and "interval" in entry
    assert summary["seed"] == seed(0) and summary["command"].startswith("atari-dt study")
    marks = summary["landmarks"]
    # A held-out top (data.max_return_quantile 0.8) gives a second gain; tied top returns
    # (some seeds' data) leave none held out.
    assert marks["held_out"] == (marks["train_max"] < marks["data_max"])
    assert ("extrapolation_gain_vs_train_max" in summary["headline"]) == marks["held_out"]
    assert len(summary["verdict"]) >= 5
    report = (study_dir / "report.html").read_text()
    for heading in (
        "Verdict",
        "1. Behaviour",
        "2. Inside the transformer",
        "3. Pixels",
        "4. Summary",
        "5. Run and data provenance",
    ):
        assert heading in report
    for figure in (
        "behaviour",
        "divergence",
        "imitation",
        "scan",
        "attention_to_rtg",
        "dla_along_scan",
        "patching",
        "steering",
        "pixel_maps",
        "pixel_shares",
    ):
        assert (study_dir / f"{figure}.png").stat().st_size > 1000
        assert f'alt="{figure}" src="data:image/png;base64,' in report
    for line in summary["verdict"]:  # the verdict is on the page, in order, above the plots
        assert html.escape(line) in report


def test_the_report_references_nothing_over_the_network(study_dir: Path) -> None:
    assert_self_contained((study_dir / "report.html").read_text())


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_the_report_renders_in_headless_chromium(study_dir: Path, tmp_path: Path) -> None:
    dom = render_in_chromium(study_dir / "report.html", tmp_path / "report.png")
    assert "Verdict" in dom and "1. Behaviour" in dom


def test_summary_numbers_equal_the_library_functions(mixture_run: Path, study_dir: Path) -> None:
    from atari_dt.analysis.saturation import saturation
    from atari_dt.analysis.scan import rtg_scan
    from atari_dt.analysis.steering import rtg_direction, steering_effect
    from atari_dt.rollout.sweep import summarise
    from atari_dt.study.behaviour import extrapolation_gain, play_target, policy_divergence
    from atari_dt.study.grid import scan_grid
    from atari_dt.study.imitation import data_agreement
    from atari_dt.study.mechanism import rtg_patching
    from atari_dt.study.study import _split_held_out

    summary, s = summary_of(study_dir), seed(0)
    head, marks = summary["headline"], summary["landmarks"]
    grid = np.array(summary["targets"])
    with adt.load_run(mixture_run) as run:
        model, units = run.model, run.config.data.reward_units
        played = [
            r
            for t in grid
            for r in play_target(
                model, run.game, t, 2, reward_units=units, max_episode_steps=40, seed=s
            )
        ]
        sweep = summarise(
            played,
            game=run.game,
            reward_units=units,
            data_return_range=None,
            sample=True,
            temperature=1.0,
        )
        for key, ref in (("data_max", marks["data_max"]), ("train_max", marks["train_max"])):
            if f"extrapolation_gain_vs_{key}" not in head:  # nothing held out
                continue
            gain = extrapolation_gain(sweep, ref, "")
            entry = head[f"extrapolation_gain_vs_{key}"]
            assert entry["value"] == pytest.approx(gain.gain, abs=1e-9)
            assert entry["interval"] == pytest.approx(list(gain.interval), abs=1e-9)
        contexts = run.sample_contexts(8, seed=s)
        scan = rtg_scan(
            model,
            contexts,
            scan_grid(grid),
            reference_rtg=marks["train_max"],
            data_returns=run.train_returns,
        )
        assert head["saturation"]["value"] == pytest.approx(saturation(model, scan).saturation_rtg)
        divergence = policy_divergence(scan, marks["train_max"], seed=s)
        assert head["policy_divergence_at_top"]["value"] == pytest.approx(
            divergence.mean[-1], rel=1e-6
        )
        low, high = marks["train_median"], float(grid[-1])
        patching = rtg_patching(model, run.sample_contexts(3, seed=s), low, high, seed=s)
        assert [h["head"] for h in head["rtg_carriers"]["value"]] == [
            h for h, _, _ in patching.top_heads(3)
        ]
        measured, held_out = _split_held_out(run.sample_contexts(16, seed=s))
        direction = rtg_direction(model, measured, low, high)
        effect = steering_effect(model, held_out, direction, seed=s)
        row = effect.hooks.index(head["steering"]["hook"])
        assert head["steering"]["value"] == pytest.approx(effect.recovered[row], abs=1e-6)
        _, data = data_agreement(run.store, np.arange(len(run.store)))
        assert head["imitation_above_data"]["data"] == pytest.approx(
            {k: a.mean for k, a in data.items()}
        )


def test_a_second_run_reuses_the_cache_and_a_lost_part_is_recomputed(
    mixture_run: Path, study_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "again"
    shutil.copytree(study_dir, out)
    command = f"study {mixture_run} {STUDY} --seed {seed(0)} --out {out} --no-progress"
    assert atari_dt(command) == 0
    first, again = summary_of(study_dir), summary_of(out)
    assert again["cache"]["computed"] == []
    assert sorted(again["cache"]["reused"]) == sorted(
        first["cache"]["computed"] + first["cache"]["reused"]
    )
    assert again["headline"] == first["headline"]
    # An interrupted study has some parts on disk: only the missing one is computed.
    (pixels,) = (out / "cache").glob("pixels-*.pkl")
    pixels.unlink()
    assert atari_dt(command) == 0
    assert summary_of(out)["cache"]["computed"] == ["pixels"]


def test_the_cache_recomputes_with_force_and_after_damage(tmp_path: Path) -> None:
    from atari_dt.study.cache import StudyCache

    calls = []

    def compute() -> int:
        calls.append(1)
        return len(calls)

    assert StudyCache(tmp_path, {"model": "a"}).get("part", {"n": 1}, compute) == 1
    assert StudyCache(tmp_path, {"model": "a"}).get("part", {"n": 1}, compute) == 1  # reused
    assert StudyCache(tmp_path, {"model": "b"}).get("part", {"n": 1}, compute) == 2  # new model
    assert StudyCache(tmp_path, {"model": "b"}, force=True).get("part", {"n": 1}, compute) == 3
    (damaged,) = tmp_path.glob("part-*.pkl")
    damaged.write_bytes(b"not a pickle")
    with pytest.warns(UserWarning, match="unreadable"):
        assert StudyCache(tmp_path, {"model": "b"}).get("part", {"n": 1}, compute) == 4
    assert len(calls) == 4 and len(list(tmp_path.glob("part-*.pkl"))) == 1


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ("--episodes 1", "episodes must be >= 2"),
        ("--targets 1,x", "expected comma-separated returns"),
        ("--targets 5", "2..64 finite returns"),
        ("--contexts 0", "contexts must be in 1..4096"),
        ("--n-steps 100000", "n_steps must be in 1..4096"),
        ("--threads -2", "study threads must be >= 0"),
    ],
)
def test_bad_study_settings_are_refused(
    mixture_run: Path, tmp_path: Path, capsys, flags: str, message: str
) -> None:
    assert atari_dt(f"study {mixture_run} {flags} --out {tmp_path / 'x'}") == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_targets_within_the_data_say_there_is_nothing_beyond(
    mixture_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "within"
    flags = "--targets 0,10 --episodes 2 --contexts 8 --patch-contexts 2 --pixel-contexts 1"
    assert atari_dt(f"study {mixture_run} {flags} --n-steps 8 --out {out} --no-progress") == 0
    summary = summary_of(out)
    assert summary["targets"][-1] == summary["landmarks"]["data_max"]  # the landmarks join in
    assert "extrapolation_gain_vs_data_max" not in summary["headline"]
    verdict = " ".join(summary["verdict"])
    assert "nothing to say about extrapolation" in verdict
    assert "No scan RTG lies beyond the data's best return" in verdict
