"""Which behaviour does the DT imitate at each target? Where the data came from known
behaviour policies, a scripted expert is *shadowed*: fed the RAM of every step of an episode
(the data's, or the DT's own rollout's) and asked which action it would take; agreement is the
fraction of steps where the episode's action equals the shadow's. The same measure on the
data's episodes, per recorded behaviour, is the scale the DT's agreement is read against.

A shadow expert keeps its own memory (e.g. the pushes it would have made), so where the
episode's actions differ from its own its later choices can drift; the data's agreement is
measured the same way, so the two stay comparable. Experts read only the RAM and the action
names (``atari_dt.envs.experts``); the frame they are handed is blank.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from atari_dt.datasets.contexts import behaviour_label
from atari_dt.envs.policies import Policy, StepInput
from atari_dt.intervals import mean_interval


def expert_spec(spec: dict[str, Any] | None) -> dict[str, Any] | None:
    """The scripted expert inside a behaviour spec (itself, or the base of an epsilon or
    repeat wrapper), or None."""
    while isinstance(spec, dict):
        if str(spec.get("name", "")).startswith("expert"):
            return spec
        spec = spec.get("base")
    return None


def make_shadow(game: str, spec: dict[str, Any]) -> Policy:
    """The expert described by ``spec`` (its recorded parameters that its constructor takes;
    a spec also carries bookkeeping such as the episode number), for ``game``."""
    import inspect

    from atari_dt.envs.experts import EXPERTS, make_expert
    from atari_dt.envs.games import canonical_game

    accepted = inspect.signature(EXPERTS[canonical_game(game)]).parameters
    return make_expert(game, **{k: v for k, v in spec.items() if k in accepted})


def shadow_agreement(
    expert: Policy, ram: np.ndarray, actions: np.ndarray, meanings: tuple[str, ...]
) -> float:
    """Fraction of an episode's steps (RAM ``[L, 128]``, actions ``[L]``) at which ``expert``,
    fed that RAM from the episode's start, picks the episode's action."""
    expert.reset(np.random.default_rng(0))
    blank = np.zeros((84, 84), dtype=np.uint8)
    agree = 0
    for t, (state, action) in enumerate(zip(ram, actions, strict=True)):
        agree += int(expert.act(StepInput(blank, state, 0.0, t, meanings)) == int(action))
    return agree / max(len(actions), 1)


@dataclass(frozen=True)
class Agreement:
    """Agreement with the expert over a set of episodes: ``mean`` of the per-episode
    fractions, its 95% t ``interval`` (episodes as units) and the ``episodes`` counted."""

    mean: float
    interval: tuple[float, float]
    episodes: int
    values: tuple[float, ...] = ()
    """Each episode's agreement."""


def pooled(values: list[float]) -> Agreement:
    """The ``Agreement`` of per-episode agreements ``values`` (NaN mean for none)."""
    mean = float(np.mean(values)) if values else float("nan")
    return Agreement(mean, mean_interval(values), len(values), tuple(values))


@dataclass(frozen=True)
class Imitation:
    """The expert ``expert`` (its spec name) against the data and the DT: ``data`` behaviour
    label -> the agreement of that behaviour's episodes in the store; ``rollouts`` ``[G]``
    the DT's agreement at each of ``targets``; ``imitated`` ``[G]`` the data behaviour whose
    agreement is nearest the DT's at each target."""

    expert: str
    data: dict[str, Agreement]
    targets: list[float]
    rollouts: list[Agreement]
    imitated: list[str | None]


def data_agreement(
    store: Any, episodes: np.ndarray, *, max_per_behaviour: int = 20
) -> tuple[dict[str, Any] | None, dict[str, Agreement]]:
    """The expert recorded in the store's behaviours and, per behaviour label, its agreement
    with up to ``max_per_behaviour`` of that behaviour's ``episodes`` (store indices, the
    lowest first). ``(None, {})`` when the store records no expert or no RAM."""
    specs = [store.behaviours[int(e)] for e in episodes]
    found = next((s for s in map(expert_spec, specs) if s is not None), None)
    if found is None or not store.has_ram:
        return None, {}
    meanings = action_meanings(store.game)
    by_label: dict[str, list[float]] = {}
    for e, spec in zip(episodes, specs, strict=True):
        label = behaviour_label(spec) or "unknown"
        if len(by_label.setdefault(label, [])) >= max_per_behaviour:
            continue
        start = int(store.offsets[int(e)])
        span = slice(start, start + int(store.lengths[int(e)]))  # RAM and actions, no frames
        ram, actions = store.h5["ram"][span], store.h5["actions"][span]
        shadow = make_shadow(store.game, found)
        by_label[label].append(shadow_agreement(shadow, ram, actions, meanings))
    return found, {label: pooled(values) for label, values in sorted(by_label.items())}


def rollout_agreement(
    game: str, expert: dict[str, Any], episodes: list[Any], meanings: tuple[str, ...]
) -> Agreement:
    """The DT's agreement with the shadow expert over rollouts that recorded RAM and actions."""
    values = [
        shadow_agreement(make_shadow(game, expert), e.ram, e.actions, meanings) for e in episodes
    ]
    return pooled(values)


def nearest_behaviour(data: dict[str, Agreement], agreement: float) -> str | None:
    """The data behaviour whose mean agreement is nearest ``agreement`` (None for NaN)."""
    if not np.isfinite(agreement):
        return None
    return min(data, key=lambda label: abs(data[label].mean - agreement))


def action_meanings(game: str) -> tuple[str, ...]:
    """The names of ``game``'s minimal action set (as the experts look actions up)."""
    from atari_dt.envs.make import make_env

    env = make_env(game)
    try:
        return tuple(env.unwrapped.get_action_meanings())
    finally:
        env.close()
