"""ALE environments: game names, the DQN-replay preset and the random-policy recorder."""

from __future__ import annotations

import re

import numpy as np
import pytest

from atari_dt.envs.dqn_replay import (
    DQN_REPLAY_PRESET,
    RecordedEpisode,
    make_dqn_replay_env,
    record_random_episodes,
)
from atari_dt.envs.games import canonical_game, env_id, minimal_action_count


def record(
    seed: int, n_steps: int = 60, cap: int = 40, game: str = "Seaquest"
) -> list[RecordedEpisode]:
    """Random-policy episodes of ``game`` capped at ``cap`` agent steps each."""
    return list(record_random_episodes(game, n_steps, seed=seed, max_episode_steps=cap))


def assert_same_episodes(a: list[RecordedEpisode], b: list[RecordedEpisode]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        for field in ("frames", "actions", "rewards", "ram"):
            np.testing.assert_array_equal(getattr(x, field), getattr(y, field), err_msg=field)


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("seaquest", "Seaquest"),
        ("Seaquest", "Seaquest"),
        ("ALE/Seaquest-v5", "Seaquest"),
        ("Seaquest-v4", "Seaquest"),
        ("  SEAQUEST ", "Seaquest"),
        ("space_invaders", "SpaceInvaders"),
        ("Space Invaders", "SpaceInvaders"),
        ("space-invaders", "SpaceInvaders"),
        ("ALE/MontezumaRevenge-v5", "MontezumaRevenge"),
        ("pong", "Pong"),
    ],
)
def test_canonical_game(name: str, canonical: str) -> None:
    """Common spellings of a game map to its ALE name."""
    assert canonical_game(name) == canonical


def test_env_id() -> None:
    """env_id gives the gymnasium id of the v5 environment."""
    assert env_id("space_invaders") == "ALE/SpaceInvaders-v5"


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [("Seaquset", "Seaquest"), ("ALE/Seaquests-v5", "Seaquest"), ("spaceinvader", "SpaceInvaders")],
)
def test_unknown_game_suggests_close_names(name: str, suggestion: str) -> None:
    """An unknown game raises ValueError quoting the name and suggesting a close one."""
    pattern = rf"unknown Atari game '{re.escape(name)}'; did you mean .*{suggestion}"
    with pytest.raises(ValueError, match=pattern):
        canonical_game(name)


def test_unknown_game_without_close_match() -> None:
    """A name like no game raises ValueError without a suggestion."""
    with pytest.raises(ValueError, match=r"^unknown Atari game 'zzzzzzzzzzzz'$"):
        canonical_game("zzzzzzzzzzzz")


@pytest.mark.parametrize(("game", "n"), [("Seaquest", 18), ("Pong", 6), ("breakout", 4)])
def test_minimal_action_count(game: str, n: int) -> None:
    """The minimal action set sizes DQN-replay agents used."""
    assert minimal_action_count(game) == n


def test_unknown_env_option() -> None:
    """Unknown preset keys are refused, listing the valid ones."""
    with pytest.raises(ValueError, match=r"unknown env options \['frameskip'\]; valid: "):
        make_dqn_replay_env("Seaquest", frameskip=2)


def test_dqn_replay_preset_frames() -> None:
    """The preset records uint8 [L,84,84] frames, [L,128] RAM, capped episode lengths."""
    episodes = record(seed=0, n_steps=60, cap=40)
    assert sum(len(e.actions) for e in episodes) >= 60
    for e in episodes:
        n = len(e.actions)
        assert 1 <= n <= 40
        assert e.frames.dtype == np.uint8 and e.frames.shape == (n, 84, 84)
        assert e.ram.dtype == np.uint8 and e.ram.shape == (n, 128)
        assert e.rewards.dtype == np.float32 and e.rewards.shape == (n,)
        assert e.actions.min() >= 0 and e.actions.max() < 18
        assert e.frames.any() and e.terminated
        assert len({f.tobytes() for f in e.frames}) > 1, "frames should change over an episode"
    assert DQN_REPLAY_PRESET["screen_size"] == 84 and DQN_REPLAY_PRESET["frame_skip"] == 4


def test_recording_is_deterministic_for_a_seed() -> None:
    """The same seed gives the same frames, actions, rewards and RAM; another seed differs."""
    first, again = record(seed=5), record(seed=5)
    assert_same_episodes(first, again)
    other = record(seed=6)
    assert not np.array_equal(first[0].actions, other[0].actions)


def test_recording_plays_the_last_episode_to_its_end() -> None:
    """Recording stops after the episode that reaches n_steps, not in its middle."""
    episodes = record(seed=1, n_steps=45, cap=30)
    assert [len(e.actions) for e in episodes] == [30, 30]
