"""Collect offline Atari data with known behaviour policies, in parallel and deterministically.

Episode ``i`` is played by a fresh reset with a seed derived from ``(config.seed, i)``, so the
data is a pure function of the config: workers only change how fast it comes. Episodes are
written in index order; the episode that crosses the step budget is finished. An interrupt
(Ctrl-C or SIGTERM) keeps every completed episode and finalises the output, which ``resume``
then continues exactly where it stopped.
"""

from __future__ import annotations

import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from atari_dt.envs.config import CollectConfig, PolicyComponent
from atari_dt.envs.episode import RecordedEpisode
from atari_dt.envs.play import play_episode
from atari_dt.envs.policies import EpsilonPolicy, MixturePolicy, Policy, RandomPolicy, RepeatPolicy
from atari_dt.errors import UserError
from atari_dt.io import deferred_interrupts


def episode_seed(seed: int, index: int) -> int:
    """The reset/policy seed of episode ``index`` (independent streams per episode)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def build_policy(components: list[PolicyComponent], game: str) -> MixturePolicy:
    """The mixture of ``components`` for ``game``.

    Raises:
        ValueError: an ``expert`` component for a game without a scripted expert.
    """
    built: list[Policy] = []
    for component in components:
        policy: Policy = RandomPolicy() if component.policy == "random" else _expert(game)
        if component.repeat > 0:
            policy = RepeatPolicy(policy, component.repeat)
        if component.epsilon > 0:
            policy = EpsilonPolicy(policy, component.epsilon)
        built.append(policy)
    return MixturePolicy(built, [c.weight for c in components])


def _expert(game: str) -> Policy:
    from atari_dt.envs.experts import EXPERTS
    from atari_dt.envs.games import canonical_game

    name = canonical_game(game)
    if name not in EXPERTS:
        raise UserError(f"no scripted expert for {name}; experts exist for {sorted(EXPERTS)}")
    return EXPERTS[name]()


def env_overrides(config: CollectConfig) -> dict[str, Any]:
    """The preset values the collect config changes."""
    if config.max_episode_steps is None:
        return {}
    return {"max_episode_steps": config.max_episode_steps}


@dataclass(frozen=True)
class PlayedEpisode:
    """One collected episode and how it was played."""

    index: int
    episode: RecordedEpisode
    behaviour: dict[str, Any]


class _Player:
    """Plays episodes by index with one env and one policy (one per worker process)."""

    def __init__(self, config: CollectConfig) -> None:
        from atari_dt.envs.make import make_env

        self.env = make_env(config.game, config.preset, **env_overrides(config))
        self.policy = build_policy(config.policy, config.game)
        self.seed = config.seed

    def play(self, index: int) -> PlayedEpisode:
        seed = episode_seed(self.seed, index)
        episode = play_episode(self.env, self.policy, seed=seed)
        behaviour = {"episode": index, "seed": seed, **self.policy.episode_spec()}
        return PlayedEpisode(index, episode, behaviour)


_WORKER_PLAYER: _Player | None = None


def _init_worker(config: CollectConfig) -> None:
    global _WORKER_PLAYER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Pool.terminate() ends workers quietly
    _WORKER_PLAYER = _Player(config)


def _play_in_worker(index: int) -> PlayedEpisode:
    assert _WORKER_PLAYER is not None  # set by _init_worker
    return _WORKER_PLAYER.play(index)


def iter_episodes(
    config: CollectConfig,
    first_index: int,
    want_more: Callable[[int], bool] = lambda in_flight: True,
) -> Iterator[PlayedEpisode]:
    """Episodes ``first_index, first_index + 1, ...`` in order until the caller stops iterating.

    With several workers, up to two episodes per worker are queued, so a worker that finishes
    early never waits for a slower episode ahead of it to be written; ``want_more(in_flight)``
    says whether to queue another while ``in_flight`` are queued (near the budget, extra
    episodes would be thrown away). Which episodes are *written* never depends on it."""
    workers = config.workers or os.cpu_count() or 1
    if workers == 1:
        player = _Player(config)
        index = first_index
        while True:
            yield player.play(index)
            index += 1
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # An executor, not a Pool: a worker that dies raises BrokenProcessPool instead of hanging.
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("fork"),
        initializer=_init_worker,
        initargs=(config,),
    )
    pending: deque = deque()
    next_index = first_index
    try:
        while True:
            while len(pending) < 2 * workers and (not pending or want_more(len(pending))):
                pending.append(pool.submit(_play_in_worker, next_index))
                next_index += 1
            yield pending.popleft().result()
    finally:
        with deferred_interrupts():  # a second Ctrl-C must not cut the teardown short
            _stop_workers(pool)


def _stop_workers(pool: Any) -> None:
    """Cancel queued episodes and end the workers now (not after their current episode)."""
    processes = list(getattr(pool, "_processes", {}).values())  # no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()
    for process in processes:
        process.join(timeout=5)


@dataclass(frozen=True)
class CollectProgress:
    """What the output holds (including episodes of an earlier run that was resumed)."""

    episodes: int
    steps: int
    returns: list[float]  # raw return of every episode, in order
    interrupted: bool = False

    @classmethod
    def of(cls, sink: Any, interrupted: bool = False) -> CollectProgress:
        return cls(sink.episodes, sink.steps, list(sink.returns), interrupted)


def run_collection(
    config: CollectConfig,
    sink: Any,
    *,
    on_episode: Callable[[PlayedEpisode, CollectProgress], None] | None = None,
) -> CollectProgress:
    """Play episodes into ``sink`` until it holds ``config.steps`` agent steps.

    The sink (:mod:`atari_dt.envs.sinks`) adds whole episodes and counts what it holds, so a
    resumed run starts at episode index ``sink.episodes``. Ctrl-C / SIGTERM (as
    KeyboardInterrupt) stops after the last completed episode; closing the sink is the caller's.
    """
    from concurrent.futures.process import BrokenProcessPool

    interrupted = False
    if sink.steps < config.steps:

        def want_more(in_flight: int) -> bool:  # expected steps of running episodes suffice?
            mean_length = sink.steps / sink.episodes if sink.episodes else 0.0
            return sink.steps + in_flight * mean_length < config.steps

        episodes = iter_episodes(config, first_index=sink.episodes, want_more=want_more)
        try:
            for played in episodes:
                sink.add(played)
                if on_episode is not None:
                    on_episode(played, CollectProgress.of(sink))
                if sink.steps >= config.steps:
                    break
        except KeyboardInterrupt:
            interrupted = True
        except BrokenProcessPool as err:  # a worker was killed (e.g. out of memory)
            raise WorkerDied(
                f"a worker process died ({err}); {sink.episodes} episodes kept"
            ) from err
        finally:
            episodes.close()
    return CollectProgress.of(sink, interrupted)


class WorkerDied(RuntimeError):
    """A collection worker process died; the completed episodes can still be kept."""


def collection_record(config: CollectConfig, progress: CollectProgress) -> dict[str, Any]:
    """What the output records about its collection (read back to resume)."""
    return {
        "config": asdict(config),
        "episodes": progress.episodes,
        "steps": progress.steps,
        "target_steps": config.steps,
        "finished": progress.steps >= config.steps,
    }
