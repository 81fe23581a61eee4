"""Minari Atari datasets -> episode store, on tiny real datasets built here from ALE Breakout
(random seeded actions; nothing is downloaded). Expected values come from the recording itself:
the actions, rewards and flags stepped, and the project's DQN-replay frame (ALE's grayscale
screen, ``cv2.resize`` to 84x84 ``INTER_AREA``) taken from the emulator at every step."""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

minari = pytest.importorskip("minari")

import ale_py  # noqa: E402
import cv2  # noqa: E402
import gymnasium as gym  # noqa: E402
import h5py  # noqa: E402
from commands import atari_dt  # noqa: E402
from minari.data_collector import EpisodeBuffer  # noqa: E402

from atari_dt.datasets.minari_reader import (  # noqa: E402
    convert_minari_dataset,
    dqn_frames,
    import_minari,
)
from atari_dt.datasets.store import EpisodeStore  # noqa: E402
from atari_dt.errors import UserError  # noqa: E402

# minari's advice to dataset authors (set a description, an eval env, ...) is not for these tests
pytestmark = pytest.mark.filterwarnings("ignore:.* is set to None:UserWarning")
gym.register_envs(ale_py)
BREAKOUT = "ALE/Breakout-v5"
CAP = 150  # the env's step cap: seeds 2 and 3 end the game before it, seed 0 reaches it


@dataclass
class Recorded:
    """One episode as stepped, and the project's frame of every screen."""

    buffer: EpisodeBuffer
    frames: np.ndarray  # uint8 (L + 1, 84, 84)
    ended: str  # terminated | truncated | cut


def _dqn_frame(env: gym.Env) -> np.ndarray:
    screen = env.unwrapped.ale.getScreenGrayscale()  # (210, 160), what make_env's frames use
    return cv2.resize(screen, (84, 84), interpolation=cv2.INTER_AREA)


def _play(env: gym.Env, seed: int, steps: int | None = None, choices=None) -> Recorded:
    """Random actions (from ``choices``, default the whole action space) until the episode
    ends, or for ``steps`` steps (then cut: neither flag)."""
    rng = np.random.default_rng(seed)
    choices = np.arange(env.action_space.n) if choices is None else np.asarray(choices)
    obs, _ = env.reset(seed=seed)
    screens, frames, actions, rewards, terms, truncs = [obs], [_dqn_frame(env)], [], [], [], []
    while steps is None or len(actions) < steps:
        action = int(rng.choice(choices))
        obs, reward, terminated, truncated, _ = env.step(action)
        screens.append(obs)
        frames.append(_dqn_frame(env))
        actions.append(action)
        rewards.append(float(reward))
        terms.append(terminated)
        truncs.append(truncated)
        if terminated or truncated:
            break
    ended = "terminated" if terms[-1] else "truncated" if truncs[-1] else "cut"
    buffer = EpisodeBuffer(
        observations=np.stack(screens),
        actions=np.array(actions),
        rewards=rewards,
        terminations=terms,
        truncations=truncs,
    )
    return Recorded(buffer, np.stack(frames), ended)


def _create(dataset_id: str, env: gym.Env, episodes: list[Recorded], *, jpeg: bool = False):
    buffers = [e.buffer for e in episodes]
    return minari.create_dataset_from_buffers(
        dataset_id, buffers, env=env, eval_env=env, algorithm_name="random", jpeg_encoding=jpeg
    )


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory: pytest.TempPathFactory):
    """A local Minari root (``MINARI_DATASETS_PATH``) for the whole module."""
    root = tmp_path_factory.mktemp("minari")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(root))
        yield root


@pytest.fixture(scope="module")
def breakout(minari_root: Path) -> list[Recorded]:
    """``test/breakout/random-v0``: a game over, a step-cap truncation, a cut episode; sticky
    actions off and the minimal action set, as the published expert datasets."""
    env = gym.make(BREAKOUT, repeat_action_probability=0.0, max_episode_steps=CAP)
    episodes = [_play(env, 2), _play(env, 0), _play(env, 1, steps=40)]
    _create("test/breakout/random-v0", env, episodes)
    env.close()
    return episodes


def test_converts_what_was_recorded(breakout: list[Recorded], tmp_path: Path) -> None:
    """Episodes, actions, raw and clipped rewards, ends and frames equal the recording; the
    screen after the last action is dropped."""
    assert [e.ended for e in breakout] == ["terminated", "truncated", "cut"]
    out = convert_minari_dataset("test/breakout/random-v0", tmp_path / "b.h5", progress=False)
    with EpisodeStore.open(out, reward_units="raw") as store:
        assert (store.game, store.n_actions, len(store)) == ("Breakout", 4, 3)
        assert store.complete.tolist() == [True, True, False]
        for i, recorded in enumerate(breakout):
            episode, buffer = store.episode(i), recorded.buffer
            assert len(episode.actions) == len(buffer.rewards) == len(recorded.frames) - 1
            np.testing.assert_array_equal(episode.actions, buffer.actions)
            np.testing.assert_array_equal(episode.rewards, buffer.rewards)
            assert episode.frames.dtype == np.uint8 and episode.frames.shape[1:] == (84, 84)
            np.testing.assert_array_equal(episode.frames, recorded.frames[:-1])
        assert store.metadata["source"]["kind"] == "minari"
        assert store.behaviours[2] == {"minari_episode": 2, "end": "cut"}
        ends = np.cumsum(store.lengths) - 1
    with EpisodeStore.open(out) as store:  # clipped units
        clipped = np.clip(breakout[0].buffer.rewards, -1, 1)
        np.testing.assert_array_equal(store.episode(0).rewards, clipped)
    with h5py.File(out, "r") as handle:
        terminals = handle["terminals"][:]
    assert terminals[ends].tolist() == [1, 1, 0] and terminals.sum() == 2  # game over, cap
    assert len(breakout[1].buffer.rewards) == CAP


def test_records_where_it_came_from_and_how_it_differs(breakout, tmp_path: Path) -> None:
    """source names the dataset and its env; preprocessing states the differences that the
    dataset's env spec shows (sticky actions 0, step cap, ALE frame skip without max-pool)."""
    out = convert_minari_dataset("test/breakout/random-v0", tmp_path / "b.h5", progress=False)
    with EpisodeStore.open(out) as store:
        source, prep = store.metadata["source"], store.metadata["preprocessing"]
    assert source["dataset_id"] == "test/breakout/random-v0" and source["env_id"] == BREAKOUT
    assert (source["episodes"], source["steps"]) == (
        3,
        sum(len(e.buffer.rewards) for e in breakout),
    )
    assert prep["repeat_action_probability"] == 0.0 and prep["frame_skip"] == 4
    assert prep["max_pool_last_two_frames"] is False and prep["jpeg_compressed_screens"] is False
    assert prep["max_episode_steps"] == CAP and prep["action_set"] == "minimal"
    differs = "\n".join(prep["differs_from_dqn_replay"])
    assert "repeat_action_probability: 0.0 (DQN-replay: 0.25)" in differs
    assert f"max_episode_steps: {CAP} (DQN-replay: 27000)" in differs
    assert "no max-pool" in differs and "frame_skip" not in differs


def test_jpeg_dataset_uses_the_decoded_screens(minari_root: Path, breakout, tmp_path) -> None:
    """A JPEG-compressed dataset (minari's default since 0.5.3): frames are the preprocessing
    of the screens minari decodes, and the store says they were lossy."""
    env = gym.make(BREAKOUT, repeat_action_probability=0.0, max_episode_steps=CAP)
    dataset = _create("test/breakout/jpeg-v0", env, breakout[2:], jpeg=True)
    env.close()
    decoded = next(dataset.iterate_episodes()).observations
    assert not np.array_equal(decoded, breakout[2].buffer.observations)  # lossy
    out = convert_minari_dataset("test/breakout/jpeg-v0", tmp_path / "j.h5", progress=False)
    with EpisodeStore.open(out) as store:
        np.testing.assert_array_equal(store.episode(0).frames, dqn_frames(decoded[:-1]))
        prep = store.metadata["preprocessing"]
    assert prep["jpeg_compressed_screens"] is True
    assert any("JPEG" in line for line in prep["differs_from_dqn_replay"])


def test_pre_053_dataset_without_jpeg_flag(minari_root: Path, breakout, tmp_path) -> None:
    """A dataset written before minari 0.5.3 (raw screens, no ``jpeg_encoding`` in its
    metadata, as the published atari/*/expert-v0 ones of 0.5.2): minari 0.5.4 would decode its
    screens as JPEG and fail; the reader takes them raw from the file, given as a directory."""
    source = minari_root / "test" / "breakout" / "random-v0"
    old = minari_root / "test" / "breakout" / "old-v0"
    shutil.copytree(source, old)
    meta_path = old / "data" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    del meta["jpeg_encoding"]
    meta.update(dataset_id="test/breakout/old-v0", minari_version="0.5.2")
    meta_path.write_text(json.dumps(meta))
    out = convert_minari_dataset(old, tmp_path / "o.h5", progress=False)
    with EpisodeStore.open(out) as store:
        for i, recorded in enumerate(breakout):
            np.testing.assert_array_equal(store.episode(i).frames, recorded.frames[:-1])
        assert store.metadata["preprocessing"]["jpeg_compressed_screens"] is False


def test_full_action_set_is_mapped_to_the_minimal_one(minari_root: Path, tmp_path) -> None:
    """Full-set actions NOOP, FIRE, RIGHT, LEFT (0, 1, 3, 4) become Breakout's minimal 0..3;
    a full-set action the minimal set lacks (UP, 2) is refused and nothing is written."""
    env = gym.make(BREAKOUT, repeat_action_probability=0.0, full_action_space=True)
    good = _play(env, 4, steps=30, choices=[0, 1, 3, 4])
    _create("test/breakout/full-v0", env, [good])
    _create("test/breakout/fullbad-v0", env, [good, _play(env, 5, steps=10, choices=[2])])
    env.close()
    out = convert_minari_dataset("test/breakout/full-v0", tmp_path / "f.h5", progress=False)
    with EpisodeStore.open(out) as store:
        assert store.n_actions == 4
        expected = np.array([0, 1, -1, 2, 3])[good.buffer.actions]
        np.testing.assert_array_equal(store.episode(0).actions, expected)
        assert "mapped" in store.metadata["preprocessing"]["action_set"]
    bad = tmp_path / "bad.h5"
    with pytest.raises(UserError, match=r"episode 1: full-set actions \[2\] are not in Breakout"):
        convert_minari_dataset("test/breakout/fullbad-v0", bad, progress=False)
    assert list(tmp_path.glob("*bad*")) == []  # no store, no temporary left


def test_data_collector_dataset(minari_root: Path, tmp_path: Path) -> None:
    """A dataset made as the published ones were (``minari.DataCollector`` around the env;
    it needs jax, ``minari[create]``): frames equal the project's preprocessing of the raw
    screens."""
    pytest.importorskip("jax")
    env = minari.DataCollector(
        gym.make(BREAKOUT, repeat_action_probability=0.0, max_episode_steps=50),
        jpeg_encoding=False,
    )
    rng, expected = np.random.default_rng(0), []
    for seed in (0, 1):
        env.reset(seed=seed)
        frames = [_dqn_frame(env)]
        while True:
            _, _, terminated, truncated, _ = env.step(int(rng.integers(4)))
            frames.append(_dqn_frame(env))
            if terminated or truncated:
                break
        expected.append(np.stack(frames[:-1]))
    env.create_dataset("test/breakout/collector-v0", eval_env=BREAKOUT, algorithm_name="random")
    env.close()
    out = convert_minari_dataset("test/breakout/collector-v0", tmp_path / "c.h5", progress=False)
    with EpisodeStore.open(out) as store:
        for i, frames in enumerate(expected):
            np.testing.assert_array_equal(store.episode(i).frames, frames)


def test_cli_convert_and_refusals(breakout, tmp_path: Path, capsys) -> None:
    """``data convert-minari`` writes the store; an existing destination, an unknown dataset
    and a contradicting --game exit 2 with one line naming the problem."""
    out = tmp_path / "cli.h5"
    assert atari_dt(f"data convert-minari test/breakout/random-v0 {out} --no-progress") == 0
    assert "3 episodes (2 complete)" in capsys.readouterr().out
    assert atari_dt(f"data convert-minari test/breakout/random-v0 {out} --no-progress") == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert atari_dt(f"data convert-minari atari/nope/expert-v0 {tmp_path / 'n.h5'}") == 2
    err = capsys.readouterr().err
    assert "no Minari dataset 'atari/nope/expert-v0'" in err and "test/breakout/random-v0" in err
    command = f"data convert-minari test/breakout/random-v0 {tmp_path / 'g.h5'} --game Pong"
    assert atari_dt(command) == 2
    assert "--game Pong, but Minari dataset" in capsys.readouterr().err


def test_non_atari_dataset_is_refused(minari_root: Path, tmp_path: Path) -> None:
    """A CartPole dataset (a 4-float observation) is no Atari RGB data."""
    env = gym.make("CartPole-v1")
    obs, _ = env.reset(seed=0)
    screens, steps = [obs], 5
    for _ in range(steps):
        screens.append(env.step(0)[0])
    buffer = EpisodeBuffer(
        observations=np.stack(screens),
        actions=np.zeros(steps, dtype=np.int64),
        rewards=[1.0] * steps,
        terminations=[False] * steps,
        truncations=[False] * (steps - 1) + [True],
    )
    minari.create_dataset_from_buffers(
        "test/cartpole/tiny-v0", [buffer], env=env, eval_env=env, algorithm_name="none"
    )
    env.close()
    with pytest.raises(UserError, match=r"test/cartpole/tiny-v0 is not Atari RGB data: .*"):
        convert_minari_dataset("test/cartpole/tiny-v0", tmp_path / "c.h5", progress=False)


def test_not_a_dataset_directory(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"is not a Minari dataset directory \(no data/metadata"):
        convert_minari_dataset(tmp_path, tmp_path / "x.h5", progress=False)


def test_missing_minari_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "minari", None)  # import minari -> ImportError
    with pytest.raises(
        UserError, match=r"needs the minari package: pip install 'atari-dt\[minari\]'"
    ):
        import_minari()
