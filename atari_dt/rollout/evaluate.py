"""Evaluation rollouts: play episodes at several target returns with N environments stepped
together, and summarise what each target achieved."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atari_dt.errors import UserError
from atari_dt.rollout.agent import DTAgent, FrameStacker


@dataclass
class EpisodeResult:
    """One evaluation episode. Returns are sums over the episode, in both reward units."""

    target: float
    episode: int
    return_raw: float
    return_clipped: float
    length: int
    truncated: bool
    action_counts: list[int]
    frames: np.ndarray | None = None  # uint8 [L, H, W] when recorded
    actions: np.ndarray | None = None  # int64 [L] when recorded
    targets_left: np.ndarray | None = None  # float [L], the return still asked for, when recorded
    ram: np.ndarray | None = None  # uint8 [L, 128], the RAM at each decision, when recorded

    def achieved(self, reward_units: str) -> float:
        return self.return_raw if reward_units == "raw" else self.return_clipped


@dataclass
class _Job:
    target: float
    episode: int
    record: bool
    raw: float = 0.0
    clipped: float = 0.0
    length: int = 0
    truncated: bool = False
    frames: list[np.ndarray] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    targets_left: list[float] = field(default_factory=list)
    ram: list[np.ndarray] = field(default_factory=list)


def run_episodes(
    model: torch.nn.Module,
    game: str,
    targets: list[float],
    episodes: int,
    *,
    reward_units: str,
    n_envs: int = 8,
    sample: bool = True,
    temperature: float = 1.0,
    max_episode_steps: int = 10_000,
    preset: str = "dqn_replay",
    seed: int = 0,
    record: set[tuple[int, int]] = frozenset(),  # type: ignore[assignment]
    record_ram: bool = False,
    precision: str = "float32",
    progress: bool = True,
) -> list[EpisodeResult]:
    """Play ``episodes`` episodes at each target return (in ``reward_units``, by which the
    target is decremented). ``record`` holds ``(target index, episode)`` pairs whose frames,
    actions and remaining targets are kept (for videos); ``record_ram`` keeps every episode's
    actions and the RAM at each decision (envs then run in subprocesses, which can read it).
    ``precision``: ``bfloat16`` runs the model under autocast (``DTAgent``).
    Results are ordered by target, then episode; for a given ``seed`` and ``n_envs`` they are
    reproducible."""
    from tqdm.auto import tqdm

    jobs = deque(
        _Job(t, e, (i, e) in record) for i, t in enumerate(targets) for e in range(episodes)
    )
    n_envs = min(n_envs, len(jobs))
    cfg = model.cfg
    done: list[_Job] = []
    if seed < 0:  # ALE reseeds on reset(seed) only for seeds >= 0; a kept env would not be
        raise ValueError(f"seed must be >= 0, got {seed}")
    with _vector_env(game, n_envs, preset, record_ram, max_episode_steps) as env:
        if int(env.single_action_space.n) != cfg.n_actions:
            raise UserError(
                f"{game} has {int(env.single_action_space.n)} actions but the model chooses among "
                f"{cfg.n_actions}; evaluate it on the game it was trained on"
            )
        agent = DTAgent(
            model, n_envs, sample=sample, temperature=temperature, seed=seed, precision=precision
        )
        stacker = FrameStacker(n_envs, cfg.stack_size, (cfg.frame_size, cfg.frame_size))
        running: dict[int, _Job] = {}
        bar = tqdm(total=len(jobs), desc=f"eval {game}", unit="episode", disable=not progress)
        try:
            frames, info = env.reset(seed=seed)
            ram = info.get("ram")  # [n_envs, 128]: each env's RAM at its current frame
            for i in range(n_envs):
                _start(i, jobs, running, agent, stacker, frames[i])
            resetting: list[int] = []  # envs whose episode ended at the last step
            while running or (resetting and jobs):
                active = np.array(sorted(running), dtype=np.int64)
                actions = np.zeros(n_envs, dtype=np.int64)
                if len(active):
                    steps = np.array([running[i].length for i in active])
                    decision = agent.act(active, stacker.stacks[active], steps)
                    actions[active] = decision.actions
                    for i, action in zip(active.tolist(), decision.actions.tolist(), strict=True):
                        _note_action(
                            running[i], stacker.stacks[i, -1], action, agent.target_left(i)
                        )
                        if ram is not None:
                            running[i].ram.append(ram[i].copy())
                frames, rewards, terminated, truncated, info = env.step(actions)
                ram = info.get("ram")
                # Next-step autoreset: an env that ended at the last step ignored its action and
                # returned its reset frame now; its next episode starts from it.
                for i in resetting:
                    _start(i, jobs, running, agent, stacker, frames[i])
                resetting = []
                units = rewards if reward_units == "raw" else info["clipped_reward"]
                agent.observe(active, np.asarray(units, dtype=np.float64)[active])
                for i in active.tolist():
                    job = running[i]
                    job.raw += float(rewards[i])
                    job.clipped += float(info["clipped_reward"][i])
                    job.length += 1
                    if terminated[i] or truncated[i]:
                        job.truncated = bool(truncated[i] and not terminated[i])
                        done.append(running.pop(i))
                        resetting.append(i)
                        bar.update(1)
                    else:
                        stacker.push(i, frames[i])
        finally:
            bar.close()
    results = (_result(job, cfg.n_actions, record_ram) for job in done)
    return sorted(results, key=_order(targets))


@contextlib.contextmanager
def _vector_env(
    game: str, n_envs: int, preset: str, record_ram: bool, max_episode_steps: int
) -> Iterator[Any]:
    """The rollout's envs: ale-py's vector env, kept for the next rollout (``borrowed_vector_env``:
    its build is ~0.9 s at 8 envs), or subprocess envs that can read the RAM, closed after."""
    from atari_dt.envs.make import make_vector_env
    from atari_dt.envs.pool import borrowed_vector_env

    if not record_ram:
        with borrowed_vector_env(game, n_envs, preset, max_episode_steps=max_episode_steps) as env:
            yield env
        return
    env = make_vector_env(
        game, n_envs, preset, backend="subprocess", ram=True, max_episode_steps=max_episode_steps
    )
    try:
        yield env
    finally:
        env.close()


def _start(
    env: int, jobs: deque, running: dict, agent: DTAgent, stacker: FrameStacker, frame: np.ndarray
) -> None:
    if not jobs:
        return
    job = jobs.popleft()
    running[env] = job
    agent.start(env, job.target)
    stacker.reset(env, frame)


def _note_action(job: _Job, frame: np.ndarray, action: int, target_left: float) -> None:
    job.actions.append(action)
    if job.record:
        job.frames.append(frame.copy())
        job.targets_left.append(target_left)


def _result(job: _Job, n_actions: int, with_ram: bool) -> EpisodeResult:
    counts = np.bincount(np.asarray(job.actions, dtype=np.int64), minlength=n_actions)
    recorded = job.record and job.frames
    actions = np.asarray(job.actions, dtype=np.int64) if recorded or with_ram else None
    return EpisodeResult(
        target=job.target,
        episode=job.episode,
        return_raw=job.raw,
        return_clipped=job.clipped,
        length=job.length,
        truncated=job.truncated,
        action_counts=counts.tolist(),
        frames=np.stack(job.frames) if recorded else None,
        actions=actions,
        targets_left=np.asarray(job.targets_left) if recorded else None,
        ram=np.stack(job.ram).astype(np.uint8) if with_ram and job.ram else None,
    )


def _order(targets: list[float]) -> Any:
    position = {t: i for i, t in enumerate(targets)}
    return lambda r: (position[r.target], r.episode)
