"""``atari-dt compare`` on two tiny real runs of different games (Seaquest studied already,
Breakout studied by ``--study-missing``): the table's numbers against the summaries they come
from, computed here by hand; the page self-contained and rendered by a real headless
Chromium; runs it cannot read refused with the file named and nothing written."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from commands import atari_dt
from pages import CHROMIUM, assert_self_contained, render_in_chromium
from scipy import stats
from seeds import seed
from study_runs import STUDY

from atari_dt.errors import UserError
from atari_dt.study.compare import compare_runs, follows_sentence, follows_target
from atari_dt.study.compare_report import render_page, write_figures
from atari_dt.study.scores import BASELINES


@pytest.fixture(scope="module")
def compared(study_dir: Path, breakout_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "out"
    command = (
        f"compare {study_dir} {breakout_run} --study-missing {STUDY} --seed {seed(0)} "
        f"--out {out} --no-progress"
    )
    assert atari_dt(command) == 0
    return out


def _summary(directory: Path) -> dict:
    return json.loads((directory / "summary.json").read_text())


def test_compare_writes_the_table_from_each_study(
    compared: Path, study_dir: Path, breakout_run: Path
) -> None:
    summaries = [_summary(study_dir), _summary(breakout_run / "study")]  # studied by compare
    assert [s["provenance"]["game"] for s in summaries] == ["Seaquest", "Breakout"]
    rows = json.loads((compared / "table.json").read_text())["runs"]
    csv_lines = (compared / "table.csv").read_text().strip().splitlines()
    assert len(rows) == 2 and len(csv_lines) == 3  # header + one line per run
    assert [r["run"] for r in rows] == ["Seaquest", "Breakout"]
    for row, summary in zip(rows, summaries, strict=True):
        base = BASELINES[summary["provenance"]["game"]]
        points = summary["sweep"]["targets"]
        span = base.human - base.random
        by_hand = [  # mean of 100 * (raw - random) / (human - random) per target
            np.mean([100 * (r - base.random) / span for r in p["raw_returns"]]) for p in points
        ]
        assert row["best_normalised"] == pytest.approx(max(by_hand), rel=1e-9)
        targets = [p["target"] for p in points for _ in p["returns"]]
        returns = [r for p in points for r in p["returns"]]
        if len(set(returns)) > 1:
            rho = stats.spearmanr(targets, returns).statistic
            assert row["follows_target_rho"] == pytest.approx(rho, rel=1e-9)
            assert 0.0 <= row["follows_target_p"] <= 1.0
        headline = summary["headline"]
        assert row["gain_vs_data_max"] == headline["extrapolation_gain_vs_data_max"]["value"]
        assert row["carrier_hook"] == headline["rtg_carriers"]["carrier_hook"]
        assert row["data_max"] == summary["landmarks"]["data_max"]
        assert row["held_out_quantile"] == 0.8
        shares = summary["shares"]
        assert set(shares["tokens"]) == {"rtg", "state", "action"}
        at_top = [shares["tokens"][k][-1] for k in ("rtg", "state", "action")]
        assert sum(at_top) == pytest.approx(1.0, abs=1e-6)  # shares of one attribution
        assert row["rtg_token_share_top"] == shares["tokens"]["rtg"][-1]


def test_the_page_is_self_contained_and_shows_every_run(compared: Path) -> None:
    page = (compared / "compare.html").read_text()
    assert_self_contained(page)
    for heading in ("Per run", "1. The table", "2. Achieved score", "3. Extrapolation", "4. Where"):
        assert heading in page
    for figure in ("sweeps", "gains", "shares"):
        assert (compared / f"{figure}.png").stat().st_size > 1000
        assert f'alt="{figure}" src="data:image/png;base64,' in page
    assert page.count("<tr>") == 3  # header + two runs


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(compared: Path, tmp_path: Path) -> None:
    dom = render_in_chromium(compared / "compare.html", tmp_path / "compare.png")
    assert "Seaquest" in dom and "Breakout" in dom and "1. The table" in dom


def test_a_run_without_a_study_is_refused_with_the_command_to_run(
    tiny_run: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    assert atari_dt(f"compare {tiny_run} --out {out}") == 2
    err = capsys.readouterr().err
    assert f"atari-dt study {tiny_run}" in err and "--study-missing" in err
    assert not out.exists()


def test_unreadable_studies_are_refused_naming_the_file(
    study_dir: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("written before")
    truncated = tmp_path / "truncated"
    shutil.copytree(study_dir, truncated, ignore=shutil.ignore_patterns("cache"))
    text = (truncated / "summary.json").read_text()
    (truncated / "summary.json").write_text(text[: len(text) // 2])
    assert atari_dt(f"compare {truncated} --out {out}") == 2
    assert f"{truncated / 'summary.json'}: not a readable study summary" in capsys.readouterr().err
    (truncated / "summary.json").write_text('{"verdict": []}')
    assert atari_dt(f"compare {truncated} --out {out}") == 2
    assert "missing headline, landmarks, sweep, provenance" in capsys.readouterr().err
    assert atari_dt(f"compare {tmp_path / 'nowhere'} --out {out}") == 2
    assert "no such run directory" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]  # nothing written or lost


def test_the_rank_test_of_following_the_target() -> None:
    rising = [{"target": t, "returns": [t + 0.5 * i for i in range(3)]} for t in range(5)]
    rho, p = follows_target(rising)
    assert rho > 0.9 and p < 0.05  # returns strictly ordered by target: rho near 1
    assert follows_sentence((rho, p), 5).startswith("Its return rises with the target")
    falling = [{"target": t, "returns": [-t, -t - 0.5]} for t in range(5)]
    rho, p = follows_target(falling)
    assert rho < 0 and p > 0.5
    assert "no detectable rise" in follows_sentence((rho, p), 5)
    flat = [{"target": t, "returns": [3.0, 3.0]} for t in range(5)]
    assert all(math.isnan(v) for v in follows_target(flat))
    assert "the same at every target" in follows_sentence(follows_target(flat), 5)
    one = [{"target": 3.0, "returns": [1.0, 2.0, 4.0]}]
    assert "Only one target" in follows_sentence(follows_target(one), 1)


# ---------------------------------------------------------------- hand-made summaries


def fake_study(
    directory: Path,
    game: str,
    returns: dict[float, list[float]],
    *,
    data_min: float,
    data_max: float,
    gain: tuple[float, float, float] | None = None,
    shares: bool = True,
) -> Path:
    """A summary.json shaped as ``atari-dt study`` writes it, with chosen numbers (raw
    units, so ``raw_returns`` equal ``returns``)."""
    points = [
        {"target": t, "returns": r, "raw_returns": r, "mean": float(np.mean(r)), "ci95": None}
        for t, r in returns.items()
    ]
    headline: dict = {
        "saturation": {"value": None},
        "episodes_at_step_cap": {"value": {f"{t:g}": 0.0 for t in returns}},
    }
    if gain is not None:
        headline["extrapolation_gain_vs_data_max"] = {
            "value": gain[0],
            "interval": [gain[1], gain[2]],
        }
    summary = {
        "verdict": ["a verdict"],
        "headline": headline,
        "landmarks": {"data_min": data_min, "data_max": data_max, "train_max": data_max},
        "sweep": {"reward_units": "raw", "targets": points},
        "provenance": {"game": game, "run": str(directory), "max_return_quantile": None},
    }
    if shares:
        summary["shares"] = {
            "rtg": [data_max, 2 * data_max],
            "reference_rtg": data_max,
            "tokens": {"rtg": [0.2, 0.1], "state": [0.7, 0.8], "action": [0.1, 0.1]},
            "objects": {},
        }
    directory.mkdir(parents=True)
    (directory / "summary.json").write_text(json.dumps(summary))
    return directory


def test_negative_returns_keep_their_order_and_the_gain_its_sign(tmp_path: Path) -> None:
    # Pong-like: every data return negative. Data units put -21 at 0 and -5 at 1, so a target
    # beyond the data is > 1 and a positive gain stays positive (divided by the span, 16).
    pong = fake_study(
        tmp_path / "pong",
        "Pong",
        {-21.0: [-21.0, -20.0], -5.0: [-9.0, -7.0], 11.0: [-6.0, -4.0]},
        data_min=-21.0,
        data_max=-5.0,
        gain=(3.0, 1.0, 5.0),
    )
    run = compare_runs([pong]).runs[0]
    np.testing.assert_allclose(run.in_data_units(run.targets), [0.0, 1.0, 2.0])
    row = compare_runs([pong]).table()[0]
    assert row["gain_vs_data_max_in_data_units"] == pytest.approx(3.0 / 16.0)
    # the Pong baseline by hand: at the data's best target, mean of -9 and -7 -> -8
    assert row["normalised_at_data_max"] == pytest.approx(100 * (-8 + 20.7) / 35.3)
    figures = write_figures(compare_runs([pong]), tmp_path / "figures")  # no crash, no flip
    assert all(p.stat().st_size > 1000 for p in figures.values())


def test_games_without_baseline_or_span_or_shares_still_compare(tmp_path: Path) -> None:
    tetris = fake_study(
        tmp_path / "tetris", "Tetris", {0.0: [0.0, 1.0], 5.0: [2.0, 3.0]}, data_min=0, data_max=5
    )
    flat = fake_study(  # every data episode has one return: no span
        tmp_path / "flat", "Breakout", {4.0: [3.0, 4.0]}, data_min=4.0, data_max=4.0, shares=False
    )
    comparison = compare_runs([tetris, flat])
    rows = comparison.table()
    assert rows[0]["normalised_at_data_max"] is None and rows[0]["best_normalised"] is None
    assert rows[1]["gain_vs_data_max_in_data_units"] is None
    assert "rtg_token_share_ref" not in rows[1]  # a summary without shares
    assert np.isnan(comparison.runs[1].in_data_units(4.0))
    figures = write_figures(comparison, tmp_path / "figures")
    page = render_page(comparison, figures, command="test")
    assert "Only one target was played" in page and "Tetris" in page


def test_runs_of_one_game_are_told_apart(tmp_path: Path) -> None:
    paths = [
        fake_study(tmp_path / name / "study", "Breakout", {0.0: [1.0, 2.0]}, data_min=0, data_max=9)
        for name in ("seed0", "seed1")
    ]
    assert [r.label for r in compare_runs(paths).runs] == ["Breakout (seed0)", "Breakout (seed1)"]


def test_malformed_summaries_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = fake_study(tmp_path / "s", "Breakout", {0.0: [1.0]}, data_min=0, data_max=9)
    summary = json.loads((path / "summary.json").read_text())
    del summary["provenance"]["game"]
    (path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match=r"summary.json: not a readable study summary \(KeyError"):
        compare_runs([path])
    summary["sweep"] = "x"
    (path / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(UserError, match="its sweep has no targets"):
        compare_runs([path])
    with pytest.raises(UserError, match="at least one run"):
        compare_runs([])
