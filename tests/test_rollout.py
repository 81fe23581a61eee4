"""Rollouts: the cached agent equals the full model on the full window, sweeps summarise
correctly, and ``atari-dt eval`` writes its table, plot, JSON and videos."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from seeds import seed
from test_model import TINY, make_model

from atari_dt.cli import main
from atari_dt.envs.make import make_env
from atari_dt.rollout.agent import DTAgent, FrameStacker
from atari_dt.rollout.evaluate import EpisodeResult, run_episodes
from atari_dt.rollout.sweep import summarise


def full_window_probs(model, frames, actions, rtg, timesteps, T) -> torch.Tensor:
    """The original evaluation: re-encode the whole (unpadded) window at every step."""
    start = max(0, len(frames) - T)
    window = [
        torch.as_tensor(np.asarray(x[start:]))[None] for x in (frames, actions, rtg, timesteps)
    ]
    window[1] = window[1].clone()
    window[1][0, -1] = 0  # the current action is not known yet
    with torch.no_grad():
        return torch.softmax(model(*window)[0, -1], dim=-1)


@pytest.mark.parametrize("positional", ["timestep", "original"])
def test_cached_agent_equals_the_full_model(positional) -> None:
    """Same episode, argmax: at every step the agent's action distribution equals the full
    model's on the full window of frame stacks (shorter than T early in the episode)."""
    model = make_model(TINY.__class__(**{**TINY.__dict__, "positional": positional}))
    env = make_env("Seaquest", repeat_action_probability=0.0, max_episode_steps=40)
    frame, _ = env.reset(seed=seed(3))
    agent = DTAgent(model, 1, sample=False)
    stacker = FrameStacker(1, 4, (84, 84))
    agent.start(0, target_return=20.0)
    stacker.reset(0, frame)
    stacks, actions, rtgs, steps, target = [], [], [], [], 20.0
    for t in range(40):
        stacks.append(stacker.stacks[0].copy())
        rtgs.append(target)
        steps.append(t)
        decision = agent.act(np.array([0]), stacker.stacks[[0]], np.array([t]))
        actions.append(int(decision.actions[0]))
        history = (np.stack(stacks), np.array(actions), np.array(rtgs, np.float32), np.array(steps))
        expected = full_window_probs(model, *history, TINY.context_len)
        torch.testing.assert_close(decision.probs[0], expected, rtol=0, atol=1e-5)
        assert decision.actions[0] == int(expected.argmax())
        frame, _, terminated, truncated, info = env.step(decision.actions[0])
        agent.observe(np.array([0]), np.array([info["clipped_reward"]]))
        target -= info["clipped_reward"]
        if terminated or truncated:
            break
        stacker.push(0, frame)
    assert t >= 30  # the window filled and slid


def test_bf16_agent_is_float32_to_bf16_rounding() -> None:
    """Same states and history: the bf16 agent's action distribution is the float32 one's to
    bf16 rounding (2^-9 relative per operation; a two-layer model's few dozen roundings of O(1)
    logits stay far below 0.05 in probability), and its buffers stay float32."""
    model = make_model()
    env = make_env("Seaquest", repeat_action_probability=0.0, max_episode_steps=20)
    frame, _ = env.reset(seed=seed(4))
    agents = [DTAgent(model, 1, sample=False, precision=p) for p in ("float32", "bfloat16")]
    stacker = FrameStacker(1, 4, (84, 84))
    stacker.reset(0, frame)
    for agent in agents:
        agent.start(0, target_return=20.0)
    for t in range(12):
        plain, bf16 = (a.act(np.array([0]), stacker.stacks[[0]], np.array([t])) for a in agents)
        assert bf16.probs.dtype == torch.float32 and agents[1].states.dtype == torch.float32
        torch.testing.assert_close(bf16.probs, plain.probs, rtol=0, atol=0.05)
        agents[1].actions[0, -1] = int(plain.actions[0])  # one history for both
        frame, _, terminated, truncated, _ = env.step(plain.actions[0])
        if terminated or truncated:
            break
        stacker.push(0, frame)
    with pytest.raises(ValueError, match="precision"):
        DTAgent(model, 1, precision="float16")


def test_episodes_at_several_targets() -> None:
    model = make_model()
    settings = {"reward_units": "clipped", "n_envs": 4, "max_episode_steps": 60, "seed": seed(1)}
    results = run_episodes(
        model, "Seaquest", [0.0, 5.0], 3, **settings, record={(1, 2)}, progress=False
    )
    assert [(r.target, r.episode) for r in results] == [
        (0, 0),
        (0, 1),
        (0, 2),
        (5, 0),
        (5, 1),
        (5, 2),
    ]
    for r in results:
        assert r.length == 60 and r.truncated  # random-ish play survives 60 steps
        assert sum(r.action_counts) == r.length
        assert r.return_clipped <= r.return_raw  # Seaquest rewards are >= 0
    recorded = [r for r in results if r.frames is not None]
    assert [(r.target, r.episode) for r in recorded] == [(5.0, 2)]
    left = recorded[0].targets_left
    assert recorded[0].frames.shape == (60, 84, 84) and left[0] == 5.0
    assert np.all(np.diff(left) <= 0)  # decremented by the rewards received
    # Before the last action, all but the last step's reward (0 or 1 clipped) were taken off.
    assert 0 <= left[-1] - (5.0 - recorded[0].return_clipped) <= 1
    again = run_episodes(model, "Seaquest", [0.0, 5.0], 3, **settings, progress=False)
    assert [r.action_counts for r in again] == [r.action_counts for r in results]


def fake_result(target: float, episode: int, ret: float) -> EpisodeResult:
    return EpisodeResult(target, episode, ret * 20, ret, 100 + episode, False, [1, 2, 97])


def test_sweep_summary() -> None:
    results = [
        fake_result(t, e, r)
        for t, rs in ((0.0, [1, 2, 3]), (10.0, [5, 9]))
        for e, r in enumerate(rs)
    ]
    sweep = summarise(
        results,
        game="Seaquest",
        reward_units="clipped",
        data_return_range=(0.0, 8.0),
        sample=True,
        temperature=1.0,
    )
    first, second = sweep.targets
    assert (first.target, first.returns, first.mean, first.min, first.max) == (
        0.0,
        [1, 2, 3],
        2.0,
        1,
        3,
    )
    assert first.std == pytest.approx(1.0)
    t975 = 4.302653  # Student-t 97.5% quantile, 2 degrees of freedom
    assert first.ci95 == pytest.approx((2 - t975 / 3**0.5, 2 + t975 / 3**0.5))
    assert second.ci95 == pytest.approx((7 - 2 * 12.706205, 7 + 2 * 12.706205))  # t(1 dof)
    assert second.raw_returns == [100.0, 180.0] and second.action_counts == [2, 4, 194]
    rows = sweep.to_csv().splitlines()
    assert rows[0].startswith("target,episodes,mean") and len(rows) == 3
    payload = json.loads(json.dumps(sweep.to_json(), allow_nan=False))
    assert payload["targets"][1]["returns"] == [5.0, 9.0]
    one = summarise(
        [fake_result(0.0, 0, 3.0)],
        game="Seaquest",
        reward_units="clipped",
        data_return_range=None,
        sample=False,
        temperature=1.0,
    )
    assert json.loads(json.dumps(one.to_json(), allow_nan=False))["targets"][0]["ci95"] == [
        None,
        None,
    ]


def test_eval_cli(tiny_run, tmp_path, capsys, monkeypatch) -> None:
    import atari_dt.rollout.evaluate as evaluate

    threads = torch.get_num_threads()
    seen = []

    def counting_run_episodes(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return run_episodes(*args, **kwargs)

    monkeypatch.setattr(evaluate, "run_episodes", counting_run_episodes)
    out = tmp_path / "eval"
    args = [
        "eval",
        str(tiny_run),
        "--targets",
        "0,3",
        "--episodes",
        "2",
        "--video",
        "1",
        "--out",
        str(out),
        "--json",
        "--threads",
        str(threads + 1),
        "--precision",
        "float32",
    ]
    assert main(args) == 0
    assert seen == [threads + 1]  # the setting held while playing
    assert torch.get_num_threads() == threads  # and only then
    printed = json.loads(capsys.readouterr().out)
    assert [t["target"] for t in printed["targets"]] == [0.0, 3.0]
    assert all(len(t["returns"]) == 2 for t in printed["targets"])
    assert printed["reward_units"] == "clipped" and printed["game"] == "Seaquest"
    assert printed["data_return_range"] is not None
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "episode_target0_0.gif",
        "episode_target3_0.gif",
        "sweep.csv",
        "sweep.json",
        "sweep.png",
    ]
    assert (out / "sweep.png").read_bytes()[:4] == b"\x89PNG"
    from PIL import Image

    with Image.open(out / "episode_target0_0.gif") as gif:
        assert gif.n_frames == 30


def test_eval_errors(tiny_run, tmp_path, capsys) -> None:
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "is not a training run" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--episodes", "0"]) == 2
    assert "episodes, envs and max_episode_steps must be >= 1" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    assert main(["eval", str(tmp_path / "run")]) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--set", "eval.bogus=1"]) == 2
    assert "unknown config key 'eval.bogus'" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--threads", "-1"]) == 2
    assert "threads must be >= 0" in capsys.readouterr().err
    assert main(["eval", str(tiny_run), "--set", "eval.precision=float16"]) == 2
    assert "float16" in capsys.readouterr().err


def test_a_model_for_another_game_is_refused() -> None:
    model = make_model(TINY.__class__(**{**TINY.__dict__, "n_actions": 6}))
    with pytest.raises(ValueError, match="Seaquest has 18 actions but the model chooses among 6"):
        run_episodes(model, "Seaquest", [0.0], 1, reward_units="clipped", progress=False)


def _builds(monkeypatch) -> list:
    """Count the vector envs built from now on (the pool starts empty)."""
    from atari_dt.envs import make, pool

    pool.close_idle_envs()
    built = []
    build = make.make_vector_env

    def counting(*args, **kwargs):
        built.append(args)
        return build(*args, **kwargs)

    monkeypatch.setattr(pool, "make_vector_env", counting)
    return built


def test_a_reused_vector_env_plays_the_episodes_a_fresh_one_plays(monkeypatch) -> None:
    """``run_episodes`` keeps its vector env for the next call with the same game and settings;
    reset with the seed, the reused env plays the very episodes a fresh one plays (sticky
    actions and sampling included), and another setting builds its own."""
    from atari_dt.envs import pool

    model = make_model()
    built = _builds(monkeypatch)

    def play(seed_: int, steps: int = 40) -> list:
        results = run_episodes(
            model, "Seaquest", [0.0, 5.0], 2, reward_units="clipped", n_envs=2,
            max_episode_steps=steps, seed=seed_, record={(0, 0), (1, 1)}, progress=False,
        )  # fmt: skip
        return [(r.return_raw, r.length, r.action_counts, r.actions, r.frames) for r in results]

    def same(a: list, b: list) -> bool:
        return all(
            x[:3] == y[:3]
            and all(
                (u is None) == (v is None) and np.array_equal(u, v)
                for u, v in zip(x[3:], y[3:], strict=True)
            )
            for x, y in zip(a, b, strict=True)
        )

    fresh = play(seed(3))
    other_seed = play(seed(4))  # the kept env, now playing another seed
    assert len(built) == 1
    again = play(seed(3))
    assert len(built) == 1  # reused twice
    assert same(again, fresh)
    assert not same(other_seed, fresh)
    play(seed(3), steps=30)  # another episode cap: another env
    assert len(built) == 2
    pool.close_idle_envs()
    assert same(play(seed(3)), fresh)  # built anew: the same episodes
    assert len(built) == 3


def test_a_kept_env_is_reseeded_by_reset(monkeypatch) -> None:
    """The env itself, apart from the agent's sampling: after an episode that ended and
    autoreset, the kept env reset with seed s replays what it played from s (sticky actions
    0.25 draw from the env's seed), and another seed plays otherwise."""
    from atari_dt.envs import pool

    built = _builds(monkeypatch)
    actions = np.random.default_rng(0).integers(0, 18, size=(150, 2))

    def play(env, env_seed: int) -> list:
        frames = [env.reset(seed=env_seed)[0]]
        for step_actions in actions:
            frame, reward, terminated, truncated, _ = env.step(step_actions)
            frames += [frame, reward, terminated | truncated]
        return frames

    with pool.borrowed_vector_env("Seaquest", 2, max_episode_steps=100) as env:
        first = play(env, 7)  # 150 steps of 100-step episodes: the first ends, then autoresets
        kept = env
    with pool.borrowed_vector_env("Seaquest", 2, max_episode_steps=100) as env:
        assert env is kept and len(built) == 1
        again, other = play(env, 7), play(env, 8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))
    pool.close_idle_envs()


def test_an_env_whose_rollout_failed_is_not_kept(monkeypatch) -> None:
    from atari_dt.envs import pool

    built = _builds(monkeypatch)
    closed = []
    with pytest.raises(KeyboardInterrupt), pool.borrowed_vector_env("Seaquest", 2) as env:
        monkeypatch.setattr(env, "close", lambda: closed.append(True))
        raise KeyboardInterrupt
    assert closed == [True]
    with pool.borrowed_vector_env("Seaquest", 2):
        pass
    assert len(built) == 2  # built again, not the failed one
    pool.close_idle_envs()
    envs = []
    for n_envs in range(1, pool.MAX_IDLE_ENVS + 2):  # more settings than the pool keeps
        with pool.borrowed_vector_env("Seaquest", n_envs) as env:
            envs.append(env)
    assert len(pool._idle) == pool.MAX_IDLE_ENVS
    assert envs[0]._env is None and envs[1]._env is not None  # the oldest was closed
    pool.close_idle_envs()
    assert not pool._idle
