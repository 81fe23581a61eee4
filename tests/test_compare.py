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

from atari_dt.study.compare import follows_sentence, follows_target
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
    assert follows_sentence((rho, p)).startswith("Its return rises with the target")
    falling = [{"target": t, "returns": [-t, -t - 0.5]} for t in range(5)]
    rho, p = follows_target(falling)
    assert rho < 0 and p > 0.5
    assert "no detectable rise" in follows_sentence((rho, p))
    flat = [{"target": t, "returns": [3.0, 3.0]} for t in range(5)]
    assert all(math.isnan(v) for v in follows_target(flat))
    assert "does not vary" in follows_sentence(follows_target(flat))
