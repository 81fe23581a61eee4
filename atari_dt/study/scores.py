"""Human-normalised Atari scores: ``100 * (score - random) / (human - random)``.

The random and human scores are the reference table commonly used with the Atari-57 suite
(DQN Zoo's ``atari_data.py``, the DQN-replay paper of Agarwal et al. 2020 and most offline-RL
work): random play as measured by Mnih et al. 2015 (Nature DQN), human testers' scores as
tabulated there and revised in later work (van Hasselt et al. 2016; Badia et al. 2020 for the
eight games Nature DQN did not play: Berzerk, Defender, Phoenix, Pitfall, Skiing, Solaris,
Surround, YarsRevenge). Both are *raw* game scores (undiscounted, unclipped), so a normalised
score is always computed from raw returns, whatever units a run trains in; ALE games outside
the 57 have no standard baseline and :func:`baseline` returns None for them.

Note the DT paper (Chen et al. 2021, Table 1) normalises by a "gamer" score that differs a little
for some games (FACTS.md §2); numbers here are comparable with DQN-replay and most offline-RL
papers, not digit for digit with that table.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from atari_dt.errors import UserError


class Baseline(NamedTuple):
    """Mean episode score of uniformly random play and of a human tester (raw game points)."""

    random: float
    human: float

    def normalise(self, raw_scores: np.ndarray | float) -> np.ndarray:
        """``100 * (raw - random) / (human - random)`` elementwise: 0 random play, 100 human."""
        return (
            100.0
            * (np.asarray(raw_scores, dtype=np.float64) - self.random)
            / (self.human - self.random)
        )


# fmt: off
BASELINES: dict[str, Baseline] = {
    "Alien": Baseline(227.8, 7127.7),
    "Amidar": Baseline(5.8, 1719.5),
    "Assault": Baseline(222.4, 742.0),
    "Asterix": Baseline(210.0, 8503.3),
    "Asteroids": Baseline(719.1, 47388.7),
    "Atlantis": Baseline(12850.0, 29028.1),
    "BankHeist": Baseline(14.2, 753.1),
    "BattleZone": Baseline(2360.0, 37187.5),
    "BeamRider": Baseline(363.9, 16926.5),
    "Berzerk": Baseline(123.7, 2630.4),
    "Bowling": Baseline(23.1, 160.7),
    "Boxing": Baseline(0.1, 12.1),
    "Breakout": Baseline(1.7, 30.5),
    "Centipede": Baseline(2090.9, 12017.0),
    "ChopperCommand": Baseline(811.0, 7387.8),
    "CrazyClimber": Baseline(10780.5, 35829.4),
    "Defender": Baseline(2874.5, 18688.9),
    "DemonAttack": Baseline(152.1, 1971.0),
    "DoubleDunk": Baseline(-18.6, -16.4),
    "Enduro": Baseline(0.0, 860.5),
    "FishingDerby": Baseline(-91.7, -38.7),
    "Freeway": Baseline(0.0, 29.6),
    "Frostbite": Baseline(65.2, 4334.7),
    "Gopher": Baseline(257.6, 2412.5),
    "Gravitar": Baseline(173.0, 3351.4),
    "Hero": Baseline(1027.0, 30826.4),
    "IceHockey": Baseline(-11.2, 0.9),
    "Jamesbond": Baseline(29.0, 302.8),
    "Kangaroo": Baseline(52.0, 3035.0),
    "Krull": Baseline(1598.0, 2665.5),
    "KungFuMaster": Baseline(258.5, 22736.3),
    "MontezumaRevenge": Baseline(0.0, 4753.3),
    "MsPacman": Baseline(307.3, 6951.6),
    "NameThisGame": Baseline(2292.3, 8049.0),
    "Phoenix": Baseline(761.4, 7242.6),
    "Pitfall": Baseline(-229.4, 6463.7),
    "Pong": Baseline(-20.7, 14.6),
    "PrivateEye": Baseline(24.9, 69571.3),
    "Qbert": Baseline(163.9, 13455.0),
    "Riverraid": Baseline(1338.5, 17118.0),
    "RoadRunner": Baseline(11.5, 7845.0),
    "Robotank": Baseline(2.2, 11.9),
    "Seaquest": Baseline(68.4, 42054.7),
    "Skiing": Baseline(-17098.1, -4336.9),
    "Solaris": Baseline(1236.3, 12326.7),
    "SpaceInvaders": Baseline(148.0, 1668.7),
    "StarGunner": Baseline(664.0, 10250.0),
    "Surround": Baseline(-10.0, 6.5),
    "Tennis": Baseline(-23.8, -8.3),
    "TimePilot": Baseline(3568.0, 5229.2),
    "Tutankham": Baseline(11.4, 167.6),
    "UpNDown": Baseline(533.4, 11693.2),
    "Venture": Baseline(0.0, 1187.5),
    "VideoPinball": Baseline(16256.9, 17667.9),
    "WizardOfWor": Baseline(563.5, 4756.5),
    "YarsRevenge": Baseline(3092.9, 54576.9),
    "Zaxxon": Baseline(32.5, 9173.3),
}
# fmt: on


def baseline(game: str) -> Baseline | None:
    """The random and human scores of ``game`` (any spelling ALE knows), None outside the 57.

    Raises:
        UserError: ALE knows no such game.
    """
    from atari_dt.envs.games import canonical_game

    return BASELINES.get(canonical_game(game))


def human_normalised(game: str, raw_score: float) -> float:
    """``raw_score`` (raw game points, unclipped) as a percentage of the way from random (0) to
    human play (100).

    Raises:
        UserError: the game has no standard baseline (lists how many games have one).
    """
    base = baseline(game)
    if base is None:
        raise UserError(
            f"no standard random/human scores for {game}; the {len(BASELINES)} games with one "
            "are listed in atari_dt.study.scores.BASELINES"
        )
    return float(base.normalise(raw_score))
