"""Human-normalised scores: the table covers real ALE games only, and the normalisation gives
the hand-computed values of 100 * (score - random) / (human - random)."""

from __future__ import annotations

import pytest

from atari_dt.envs.games import canonical_game
from atari_dt.errors import UserError
from atari_dt.study.scores import BASELINES, baseline, human_normalised


def test_every_baseline_is_an_ale_game_with_human_above_random() -> None:
    assert len(BASELINES) == 57  # the Atari-57 suite
    for game, base in BASELINES.items():
        assert canonical_game(game) == game
        assert base.human > base.random, game


@pytest.mark.parametrize(
    ("game", "score", "expected"),
    [
        # by hand: 100 * (score - random) / (human - random)
        ("Breakout", 1.7, 0.0),
        ("Breakout", 30.5, 100.0),
        ("Breakout", 90.0, 100 * 88.3 / 28.8),  # the DT paper's target: 306.6%
        ("Pong", 0.0, 100 * 20.7 / 35.3),  # a drawn game: 58.6%
        ("Pong", 20.0, 100 * 40.7 / 35.3),
        ("Qbert", 2500.0, 100 * 2336.1 / 13291.1),  # 17.6%
        ("Seaquest", 1450.0, 100 * 1381.6 / 41986.3),  # 3.29%
        ("Seaquest", 0.0, -100 * 68.4 / 41986.3),  # below random is negative
    ],
)
def test_normalised_scores_equal_the_hand_computed_ones(
    game: str, score: float, expected: float
) -> None:
    assert human_normalised(game, score) == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_any_spelling_of_a_game_finds_its_baseline() -> None:
    assert baseline("ALE/Seaquest-v5") == baseline("seaquest") == BASELINES["Seaquest"]


def test_a_game_without_a_standard_baseline_says_so() -> None:
    assert baseline("Tetris") is None
    with pytest.raises(UserError, match="no standard random/human scores for Tetris"):
        human_normalised("Tetris", 10.0)
    with pytest.raises(UserError, match=r"unknown Atari game 'Seaquset'.*did you mean Seaquest"):
        baseline("Seaquset")
