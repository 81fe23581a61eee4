"""Scripted "expert" policies that read the Atari RAM: cheap, strong behaviour data for
Pong, Breakout, Seaquest and Qbert.

Every expert implements :class:`atari_dt.envs.policies.Policy` and uses only ``step.ram`` and
``step.action_meanings`` (actions are looked up by name, never by index). The rules are
deterministic functions of what they have seen this episode; the randomness of an episode comes
from the emulator's sticky actions, and wrapping an expert in
:class:`~atari_dt.envs.policies.EpsilonPolicy` adds more. The generator given to ``reset`` is
accepted for the protocol and is the only one an expert would ever use.

RAM addresses come from AtariARI (``atariari/benchmark/ram_annotations.py``); where this file
relies on a meaning AtariARI does not give (lane order, presence flags, coordinate offsets, the
paddle dynamics, Qbert's tile and enemy bytes), it was measured here against the screen and says
so. ``docs/policies.md`` describes the rules and their measured returns.
"""

from __future__ import annotations

from typing import Any

from atari_dt.envs.experts.common import action_index
from atari_dt.envs.experts.paddle import BreakoutExpert, PaddleModel, PongExpert
from atari_dt.envs.experts.qbert import QbertExpert
from atari_dt.envs.experts.seaquest import SeaquestExpert
from atari_dt.envs.policies import Policy
from atari_dt.errors import UserError

__all__ = [
    "EXPERTS",
    "BreakoutExpert",
    "PaddleModel",
    "PongExpert",
    "QbertExpert",
    "SeaquestExpert",
    "action_index",
    "make_expert",
]

EXPERTS: dict[str, type] = {
    "Pong": PongExpert,
    "Breakout": BreakoutExpert,
    "Seaquest": SeaquestExpert,
    "Qbert": QbertExpert,
}


def make_expert(game: str, **params: Any) -> Policy:
    """The expert for ``game`` (any spelling ale-py knows), built with ``params``.

    Raises:
        UserError: unknown game, or a game without an expert (lists those with one).
    """
    from atari_dt.envs.games import canonical_game

    name = canonical_game(game)
    if name not in EXPERTS:
        raise UserError(f"no scripted expert for {name}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[name](**params)
