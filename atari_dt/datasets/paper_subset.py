"""Which episodes the Decision Transformer paper's "1% of DQN-replay" subset takes (pure logic).

The original (kzl/decision-transformer ``atari/create_dataset.py``, run with ``num_buffers=50,
num_steps=500000, trajectories_per_buffer=10``) draws a checkpoint uniformly at random, reads
transitions sequentially from where that checkpoint was left at its previous draw, and stops
after a number of episode ends; it repeats until the budget of transitions is reached. Here a
draw (a *pick*) takes the next ``per_pick`` complete episodes of the checkpoint, and the budget
counts the transitions of the episodes taken. Reading the files is
``convert_replay_logs(..., subset=PaperSubsetOptions(...))``'s; the recipe and where it departs
from the original are in docs/dqn_replay_format.md.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from atari_dt.errors import UserError

RECIPE = "decision-transformer-1pct"  # the name recorded in a store's source info
WINDOW = 100_000  # transitions of each checkpoint the original loads (replay_capacity=100000)


@dataclass(frozen=True)
class PaperSubsetOptions:
    """The recipe's settings (``atari-dt data convert --sample-transitions N ...``).

    Raises:
        UserError: a value out of range (checked on construction, before any file is read).
    """

    sample_transitions: int
    """Transitions to take (> 0; the paper: 500,000); the last draw is taken whole, so a
    little more. Any number above what the checkpoints offer means "all of it"."""
    trajectories_per_checkpoint: int = 10
    """Episodes one draw takes from its checkpoint (> 0; the paper: 10)."""
    seed: int = 0
    """Of the ``numpy.random.Generator`` making the draws (>= 0)."""
    window: int = WINDOW
    """File slots ``0 .. window-1`` of each checkpoint are used (the original's
    ``replay_capacity=100000``); an episode must start and end inside them."""

    def __post_init__(self) -> None:
        _validate(self.sample_transitions, self.trajectories_per_checkpoint, self.seed)
        if self.window <= 0:
            raise UserError(f"window must be a positive number of slots, got {self.window}")


@dataclass(frozen=True)
class TakenEpisode:
    """One episode of the subset.

    Attributes:
        checkpoint: the checkpoint number it comes from.
        episode: its index among that checkpoint's complete episodes (in order of addition).
        pick: the draw that took it (0-based, in the order of the draws).
    """

    checkpoint: int
    episode: int
    pick: int


@dataclass(frozen=True)
class PaperSubset:
    """The result of :func:`select_paper_subset`.

    Attributes:
        episodes: the episodes taken, in the order the draws took them.
        n_transitions: transitions of those episodes (the quantity the budget bounds).
        n_picks: draws made (each took ``per_pick`` episodes).
        available: transitions of all complete episodes offered, taken or not.
        budget_reached: False when every checkpoint ran out first.
    """

    episodes: tuple[TakenEpisode, ...]
    n_transitions: int
    n_picks: int
    available: int
    budget_reached: bool


@dataclass(frozen=True)
class WindowEpisodes:
    """The episodes a pick of one checkpoint may take: its complete episodes inside its window
    (file slots ``0 .. window-1``), in order of addition.

    Attributes:
        skip: transitions (in order of addition) before file slot 0: 1 when slot ``C-1`` comes
            first (a logged dump ``k > 0``), else 0.
        max_transitions: what to read in order of addition: ``skip + window`` at most.
        starts: int64 ``[E]``, each episode's first transition (in order of addition).
        lengths: int64 ``[E]``, its transitions (padding excluded).
    """

    skip: int
    max_transitions: int
    starts: np.ndarray
    lengths: np.ndarray

    def slots(self, episode: int) -> tuple[int, int]:
        """File slots ``[first, end)`` of an episode."""
        first = int(self.starts[episode]) - self.skip
        return first, first + int(self.lengths[episode])

    def rows_to_read(self, n_episodes: int) -> int:
        """Observation rows decompressed to take the first ``n_episodes`` episodes."""
        return self.slots(n_episodes - 1)[1] if n_episodes else 0


def select_paper_subset(
    episode_lengths: Mapping[int, Sequence[int]], *, budget: int, per_pick: int, seed: int
) -> PaperSubset:
    """Draw checkpoints until ``budget`` transitions are taken, ``per_pick`` episodes a draw.

    Each draw picks uniformly among the checkpoints that still hold ``per_pick`` untaken
    episodes (the original draws among all and throws a draw of a spent checkpoint away: the
    same distribution) and takes that checkpoint's next ``per_pick`` episodes. Draws stop once
    ``budget`` is reached: the last draw is taken whole, so the total lies in
    ``[budget, budget + transitions of the last draw)``. A checkpoint with fewer than
    ``per_pick`` episodes left is spent (the original throws away a read that runs past the end
    of its window); when all are spent before the budget, the total is below it.

    Args:
        episode_lengths: checkpoint number -> transitions of each of its complete episodes, in
            order of addition (the episodes a pick may take).
        budget: transitions to reach (> 0); any number above ``available`` means "all".
        per_pick: episodes a draw takes (> 0).
        seed: of the ``numpy.random.Generator`` making the draws (>= 0).

    Returns:
        the episodes taken and the totals; the same arguments give the same result.

    Raises:
        UserError: ``budget``, ``per_pick`` or ``seed`` out of range.
    """
    _validate(budget, per_pick, seed)
    lengths = {int(c): np.asarray(n, dtype=np.int64) for c, n in episode_lengths.items()}
    rng = np.random.default_rng(seed)
    taken_so_far = dict.fromkeys(lengths, 0)  # checkpoint -> episodes taken
    open_ = [c for c in sorted(lengths) if len(lengths[c]) >= per_pick]
    episodes: list[TakenEpisode] = []
    total = pick = 0
    while total < budget and open_:
        checkpoint = open_[int(rng.integers(len(open_)))]
        first = taken_so_far[checkpoint]
        episodes += [TakenEpisode(checkpoint, e, pick) for e in range(first, first + per_pick)]
        total += int(lengths[checkpoint][first : first + per_pick].sum())
        taken_so_far[checkpoint] = first + per_pick
        if len(lengths[checkpoint]) - taken_so_far[checkpoint] < per_pick:
            open_.remove(checkpoint)
        pick += 1
    available = int(sum(int(n.sum()) for n in lengths.values()))
    return PaperSubset(tuple(episodes), total, pick, available, total >= budget)


def _validate(budget: int, per_pick: int, seed: int) -> None:
    if budget <= 0:
        raise UserError(
            f"--sample-transitions must be a positive number of transitions, got {budget} "
            "(the paper used 500000)"
        )
    if per_pick <= 0:
        raise UserError(
            f"--trajectories-per-checkpoint must be a positive number of episodes, got "
            f"{per_pick} (the paper used 10)"
        )
    if seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {seed}")
