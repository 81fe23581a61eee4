"""ALE environments: game names, the DQN-replay preset and the random-policy recorder."""

from __future__ import annotations

import re

import numpy as np
import pytest

from atari_dt.envs.dqn_replay import (
    DQN_REPLAY_PRESET,
    make_dqn_replay_env,
    record_random_episodes,
)
from atari_dt.envs.episode import RecordedEpisode
from atari_dt.envs.games import canonical_game, env_id, minimal_action_count
from atari_dt.envs.make import make_env, make_vector_env
from atari_dt.errors import UserError


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
    """An unknown game raises UserError quoting the name and suggesting a close one."""
    pattern = rf"unknown Atari game '{re.escape(name)}'; did you mean .*{suggestion}"
    with pytest.raises(UserError, match=pattern):
        canonical_game(name)


def test_unknown_game_without_close_match() -> None:
    """A name like no game raises UserError without a suggestion."""
    with pytest.raises(UserError, match=r"^unknown Atari game 'zzzzzzzzzzzz'$"):
        canonical_game("zzzzzzzzzzzz")


@pytest.mark.parametrize(("game", "n"), [("Seaquest", 18), ("Pong", 6), ("breakout", 4)])
def test_minimal_action_count(game: str, n: int) -> None:
    """The minimal action set sizes DQN-replay agents used."""
    assert minimal_action_count(game) == n


def test_unknown_env_option() -> None:
    """Unknown preset keys are refused, listing the valid ones."""
    with pytest.raises(ValueError, match=r"unknown env settings \[.frameskip.\]; valid: "):
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


# ---- presets, vector envs and the reference pipeline ------------------------------------------


def test_presets_are_recorded_and_clipped_reward_given() -> None:
    """The resolved settings sit on the env; info carries the clipped reward beside the raw one."""
    env = make_env("seaquest", "dt_original_eval", max_episode_steps=50)
    assert env.settings["preset"] == "dt_original_eval" and env.settings["game"] == "Seaquest"
    assert env.settings["repeat_action_probability"] == 0.0 and env.settings["noop_max"] == 30
    env.reset(seed=0)
    for _ in range(50):
        _, reward, terminated, truncated, info = env.step(1)  # FIRE: Seaquest scores 20s
        assert info["clipped_reward"] == float(np.clip(reward, -1, 1))
        if terminated or truncated:
            break
    assert truncated  # the overridden cap
    env.close()
    with pytest.raises(ValueError, match=r"unknown env preset 'nope'; valid: "):
        make_env("Seaquest", "nope")


def _reference_frames(game: str, actions: np.ndarray, seed: int) -> list[np.ndarray]:
    """FACTS §1 done by hand on raw ALE: 4 emulator frames per action, max of the last two
    grayscale screens, cv2.resize to 84x84 with INTER_AREA (no sticky actions)."""
    import ale_py
    import cv2
    import gymnasium as gym

    gym.register_envs(ale_py)
    env = gym.make(env_id(game), frameskip=1, repeat_action_probability=0.0)
    env.reset(seed=seed)
    ale = env.unwrapped.ale
    frames = []
    for action in actions:
        screens = []
        for _ in range(4):
            env.step(int(action))
            screens.append(ale.getScreenGrayscale())
        pooled = np.maximum(screens[-2], screens[-1])
        frames.append(cv2.resize(pooled, (84, 84), interpolation=cv2.INTER_AREA))
    env.close()
    return frames


def test_frames_match_a_hand_made_reference_pipeline() -> None:
    """make_env's frames equal the DQN-replay preprocessing done by hand on the raw emulator."""
    actions = np.random.default_rng(0).integers(0, 18, size=120)
    env = make_env("Seaquest", repeat_action_probability=0.0)
    env.reset(seed=3)
    ours = [env.step(int(a))[0] for a in actions]
    env.close()
    for step, (mine, reference) in enumerate(
        zip(ours, _reference_frames("Seaquest", actions, 3), strict=True)
    ):
        np.testing.assert_array_equal(mine, reference, err_msg=f"step {step}")


@pytest.mark.parametrize("backend", ["ale", "subprocess"])
def test_vector_env_matches_single_envs(backend: str) -> None:
    """With sticky actions off, the same seeds and actions, a vector env gives each single env's
    frames, rewards and terminations exactly."""
    n, steps = 2, 150
    actions = np.random.default_rng(1).integers(0, 18, size=(steps, n))
    vector = make_vector_env("Seaquest", n, backend=backend, repeat_action_probability=0.0)
    frames, _ = vector.reset(seed=5)
    singles = [make_env("Seaquest", repeat_action_probability=0.0) for _ in range(n)]
    for i, env in enumerate(singles):
        np.testing.assert_array_equal(env.reset(seed=5 + i)[0], frames[i])
    for t in range(steps):
        frames, rewards, terminated, _, info = vector.step(actions[t])
        for i, env in enumerate(singles):
            frame, reward, term, _, _ = env.step(int(actions[t, i]))
            np.testing.assert_array_equal(frame, frames[i], err_msg=f"env {i} step {t}")
            assert reward == rewards[i] and term == terminated[i]
        np.testing.assert_array_equal(info["clipped_reward"], np.clip(rewards, -1, 1))
    vector.close()


def test_step_cap_reaches_the_emulator() -> None:
    """Raising max_episode_steps raises the emulator's own frame cap too (ALE v5 would stop at
    108,000 frames = 27,000 steps whatever TimeLimit says)."""
    env = make_env("Seaquest", max_episode_steps=40_000)
    assert env.unwrapped.ale.getInt("max_num_frames_per_episode") == 160_000
    env.close()
