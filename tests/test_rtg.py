"""Returns-to-go: the vectorised computation against a plain loop, and its edge properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atari_dt.datasets.rtg import returns_to_go


def reference_rtg(rewards: list[float], lengths: list[int]) -> np.ndarray:
    """Return-to-go by a plain loop over each episode, backwards, in float64."""
    out = np.zeros(len(rewards), dtype=np.float64)
    start = 0
    for length in lengths:
        running = 0.0
        for i in range(start + length - 1, start - 1, -1):
            running += rewards[i]
            out[i] = running
        start += length
    return out


@st.composite
def episodes(draw: st.DrawFn, rewards: st.SearchStrategy[float]) -> tuple[list[float], list[int]]:
    """Back-to-back episodes: (rewards [N], lengths [E]) with every length >= 1."""
    lengths = draw(st.lists(st.integers(1, 30), min_size=1, max_size=8))
    values = draw(st.lists(rewards, min_size=sum(lengths), max_size=sum(lengths)))
    return values, lengths


INT_REWARDS = st.integers(-1000, 1000).map(float)
FLOAT_REWARDS = st.floats(-100.0, 100.0, allow_nan=False, allow_infinity=False)
ANY_REWARDS = st.one_of(INT_REWARDS, FLOAT_REWARDS)


def starts_and_ends(lengths: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """First and last transition of every episode."""
    ends = np.cumsum(lengths)
    return ends - np.asarray(lengths), ends - 1


@settings(max_examples=100, deadline=None)
@given(episodes(INT_REWARDS))
def test_integer_rewards_match_loop_exactly(data: tuple[list[float], list[int]]) -> None:
    """Integer rewards: the vectorised RTG equals the loop's exactly, as float32 [N]."""
    rewards, lengths = data
    rtg = returns_to_go(np.array(rewards), np.array(lengths))
    assert rtg.dtype == np.float32 and rtg.shape == (len(rewards),)
    np.testing.assert_array_equal(rtg, reference_rtg(rewards, lengths).astype(np.float32))


@settings(max_examples=100, deadline=None)
@given(episodes(FLOAT_REWARDS))
def test_float_rewards_match_loop(data: tuple[list[float], list[int]]) -> None:
    """Float rewards: the vectorised RTG equals the loop's up to float32 rounding."""
    rewards, lengths = data
    rtg = returns_to_go(np.array(rewards, dtype=np.float32), np.array(lengths))
    expected = reference_rtg(list(np.array(rewards, dtype=np.float32)), lengths)
    np.testing.assert_allclose(rtg, expected, rtol=1e-5, atol=1e-4)


@settings(max_examples=100, deadline=None)
@given(episodes(ANY_REWARDS))
def test_rtg_at_episode_start_is_return_and_at_end_is_last_reward(
    data: tuple[list[float], list[int]],
) -> None:
    """rtg at an episode's first step is its return; at its last step, its last reward."""
    rewards, lengths = data
    rewards_arr = np.array(rewards)
    rtg = returns_to_go(rewards_arr, np.array(lengths))
    starts, ends = starts_and_ends(lengths)
    returns = [rewards_arr[s : e + 1].sum() for s, e in zip(starts, ends, strict=True)]
    np.testing.assert_allclose(rtg[starts], returns, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(rtg[ends], rewards_arr[ends], rtol=1e-6, atol=1e-4)


@settings(max_examples=50, deadline=None)
@given(episodes(INT_REWARDS))
def test_each_episode_is_independent_of_the_others(data: tuple[list[float], list[int]]) -> None:
    """An episode's RTG is the same whether computed alone or among other episodes."""
    rewards, lengths = data
    together = returns_to_go(np.array(rewards), np.array(lengths))
    starts, ends = starts_and_ends(lengths)
    for s, e in zip(starts, ends, strict=True):
        alone = returns_to_go(np.array(rewards[s : e + 1]), np.array([e - s + 1]))
        np.testing.assert_array_equal(together[s : e + 1], alone)


def test_single_step_episodes_rtg_is_the_reward() -> None:
    """With every episode one step long, rtg equals the rewards."""
    rewards = np.array([3.0, -1.0, 0.0, 7.5])
    np.testing.assert_array_equal(returns_to_go(rewards, np.ones(4, dtype=int)), rewards)


def test_empty_input_gives_empty_rtg() -> None:
    """No rewards and no episodes give an empty float32 array."""
    rtg = returns_to_go(np.zeros(0), np.zeros(0, dtype=int))
    assert rtg.shape == (0,) and rtg.dtype == np.float32


@pytest.mark.parametrize(
    ("n_rewards", "lengths"),
    [(5, [2, 2]), (5, [3, 3]), (0, [1]), (3, [])],
    ids=["too-short", "too-long", "no-rewards", "no-episodes"],
)
def test_lengths_not_summing_to_n_raise(n_rewards: int, lengths: list[int]) -> None:
    """Lengths that do not sum to the number of rewards raise ValueError naming both sums."""
    pattern = rf"sum to the {n_rewards} rewards, got sum {sum(lengths)}"
    with pytest.raises(ValueError, match=pattern):
        returns_to_go(np.zeros(n_rewards), np.array(lengths, dtype=np.int64))


def test_negative_length_raises() -> None:
    """A negative episode length raises ValueError even when the total matches."""
    with pytest.raises(ValueError, match="must be >= 0"):
        returns_to_go(np.zeros(3), np.array([4, -1]))
