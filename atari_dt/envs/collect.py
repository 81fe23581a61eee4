"""Collect offline Atari data with known behaviour policies, in parallel and deterministically.

Episode ``i`` is played by a fresh reset with a seed derived from ``(config.seed, i)``, so the
data is a pure function of the config: workers only change how fast it comes. Episodes are
written in index order; the episode that crosses the step budget is finished. An interrupt
(Ctrl-C or SIGTERM) keeps every completed episode and finalises the output, which ``resume``
then continues exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from atari_dt.envs.config import CollectConfig, PolicyComponent, usable_cores, worker_count
from atari_dt.envs.episode import RecordedEpisode
from atari_dt.envs.play import play_episode
from atari_dt.envs.policies import EpsilonPolicy, MixturePolicy, Policy, RandomPolicy, RepeatPolicy
from atari_dt.io import deferred_interrupts


def episode_seed(seed: int, index: int) -> int:
    """The reset/policy seed of episode ``index`` (independent streams per episode)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def build_policy(components: list[PolicyComponent], game: str) -> MixturePolicy:
    """The mixture of ``components`` for ``game``.

    Raises:
        UserError: an ``expert`` component for a game without a scripted expert.
    """
    from atari_dt.envs.experts import make_expert

    built: list[Policy] = []
    for component in components:
        policy: Policy = RandomPolicy() if component.policy == "random" else make_expert(game)
        if component.repeat > 0:
            policy = RepeatPolicy(policy, component.repeat)
        if component.epsilon > 0:
            policy = EpsilonPolicy(policy, component.epsilon)
        built.append(policy)
    return MixturePolicy(built, [c.weight for c in components])


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


class _Worker:
    """One worker process and the parent's ends of its two pipes: indices in, episodes out.

    Each worker has pipes of its own (no queue shared between workers, no feeder or reader
    thread): a worker that dies, even in the middle of sending an episode, closes the only
    write end of its result pipe, so the parent's ``recv`` ends in ``EOFError`` instead of
    waiting for the rest of a message that never comes (the hang of a ``ProcessPoolExecutor``
    whose worker was terminated mid-send). And a worker is only ever terminated after the
    parent closed its ends: nobody is left to read a half-sent message."""

    def __init__(self, context: Any, config: CollectConfig, others: list[_Worker]) -> None:
        task_reader, self.tasks = context.Pipe(duplex=False)
        self.results, result_writer = context.Pipe(duplex=False)
        # The parent's ends, copied into the child by fork: the worker closes them, or its own
        # copy would keep its pipes open (no EOF, no broken pipe) once the parent is gone.
        inherited = [c for w in [*others, self] for c in (w.tasks, w.results)]
        self.process = context.Process(
            target=_worker_main,
            args=(config, task_reader, result_writer, os.getpid(), inherited),
            name="atari-dt collect worker",
            daemon=True,  # multiprocessing ends it at a normal interpreter exit, too
        )
        self.process.start()
        # The worker holds these now; the parent's copies would keep the pipes open after
        # the worker's death (no EOF) and must not reach workers forked later.
        task_reader.close()
        result_writer.close()
        self.assigned: deque[int] = deque()  # indices sent, in the order they come back

    def assign(self, index: int) -> None:
        try:
            self.tasks.send(index)  # a few bytes: never blocks with <= 2 queued
        except OSError as err:  # BrokenPipeError: the worker is gone
            if self.results.poll():  # it said why before it went (e.g. its env failed)
                self.receive()  # raises that error (or that it died)
            raise self._died() from err
        self.assigned.append(index)

    def receive(self) -> PlayedEpisode:
        try:
            status, payload, remote = self.results.recv()
        except (EOFError, OSError) as err:
            raise self._died() from err
        if status == "error":  # re-raised as itself: a UserError stays one line
            error = payload if payload is not None else RuntimeError("a worker failed")
            raise error from RuntimeError(f"in the worker:\n{remote}")
        self.assigned.popleft()
        return payload

    def _died(self) -> WorkerDied:
        self.process.join(timeout=1)  # its pipe closed as it died: the exit code follows
        return WorkerDied(f"worker {self.process.pid} died (exit code {self.process.exitcode})")


def _worker_main(
    config: CollectConfig, tasks: Any, results: Any, parent: int, inherited: list[Any]
) -> None:
    """A worker: play the indices ``tasks`` brings, send each episode on ``results``; stop on
    ``None``, on a closed pipe, or when the parent is gone."""
    for connection in inherited:  # the parent's ends of every pipe so far, copied by fork
        connection.close()
    _exit_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides how to stop
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # the parent's terminate() ends it quietly
    try:
        player = _Player(config)
    except Exception as err:
        _send_quietly(results, _failure(err))
        return
    while True:
        try:
            # Poll rather than block, so an orphan notices within a second even where the
            # kernel does not signal it (PR_SET_PDEATHSIG is Linux's only).
            if os.getppid() != parent:
                return
            if not tasks.poll(1.0):
                continue
            index = tasks.recv()
        except (EOFError, OSError):  # the parent closed its end
            return
        if index is None:
            return
        try:
            message: tuple = ("ok", player.play(index), None)
        except Exception as err:
            message = _failure(err)
        if not _send_quietly(results, message) or message[0] == "error":
            return


def _exit_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when its parent dies (Linux), and exit now if the
    parent died before this could be asked. Without the kernel's signal a worker still
    notices by itself: its pipes break (EOF, broken pipe) and, between episodes, its loop
    checks ``getppid`` every second.

    The kernel's signal follows the parent *thread* that forked: ``iter_episodes`` must be
    consumed by the thread that started it (as the CLI does)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl (e.g. a static musl build)
            pass
    if os.getppid() != parent:
        os._exit(0)


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _failure(err: Exception) -> tuple:
    """An exception as a message: itself when it pickles, else only its traceback's text."""
    import pickle
    import traceback

    remote = "".join(traceback.format_exception(err))
    try:
        pickle.dumps(err)
    except Exception:
        return ("error", None, remote)
    return ("error", err, remote)


def _send_quietly(results: Any, message: tuple) -> bool:
    """Send ``message``; False when the parent stopped listening (closed its end, or died)."""
    try:
        results.send(message)
    except OSError:  # BrokenPipeError: the parent closed its end; the episode is not wanted
        return False
    return True


def iter_episodes(
    config: CollectConfig,
    first_index: int,
    want_more: Callable[[int], bool] = lambda in_flight: True,
) -> Iterator[PlayedEpisode]:
    """Episodes ``first_index, first_index + 1, ...`` in order until the caller stops iterating.

    With several workers (``config.workers`` of them, as given: ``run_collection`` caps it),
    up to two episodes per worker are queued, so a worker that finishes early never waits for
    a slower episode ahead of it to be written; ``want_more(in_flight)`` says whether to queue
    another while ``in_flight`` are queued (near the budget, extra episodes would be thrown
    away). Which episodes are *written* never depends on it. Closing the iterator ends the
    workers; so does the death of this process (see ``_exit_with_parent``).

    Raises:
        WorkerDied: a worker process died (e.g. killed by the OOM killer).
    """
    workers = config.workers or usable_cores()
    if workers == 1:
        player = _Player(config)
        index = first_index
        while True:
            yield player.play(index)
            index += 1
    import multiprocessing
    from multiprocessing.connection import wait

    context = multiprocessing.get_context("fork")  # workers start at once, nothing pickled
    pool: list[_Worker] = []
    try:
        for _ in range(workers):
            pool.append(_Worker(context, config, pool))
        pending: deque[int] = deque()  # queued and not yet yielded, in index order
        done: dict[int, PlayedEpisode] = {}  # came back ahead of an earlier index
        next_index = first_index
        while True:
            while len(pending) < 2 * workers and (not pending or want_more(len(pending))):
                min(pool, key=lambda w: len(w.assigned)).assign(next_index)  # one has < 2
                pending.append(next_index)
                next_index += 1
            while pending[0] not in done:
                by_connection = {w.results: w for w in pool if w.assigned}
                for connection in wait(list(by_connection)):
                    played = by_connection[connection].receive()
                    done[played.index] = played
            yield done.pop(pending.popleft())
    finally:
        with deferred_interrupts():  # a second Ctrl-C must not cut the teardown short
            _stop_workers(pool)


def _stop_workers(pool: list[_Worker]) -> None:
    """End the workers now, not after their current episode (which would be thrown away).

    Idle workers get ``None`` and exit by themselves. The parent then closes its ends of every
    pipe: from here on nobody reads a result, so a busy worker can be terminated even in the
    middle of sending one (it could also only fail with a broken pipe: it is told either way).
    A worker that ignores SIGTERM for 5 s is killed."""
    for worker in pool:
        if not worker.assigned:
            with contextlib.suppress(OSError):  # already gone
                worker.tasks.send(None)
        worker.tasks.close()
        worker.results.close()
    for worker in pool:
        if worker.assigned and worker.process.is_alive():
            worker.process.terminate()
    for worker in pool:
        worker.process.join(timeout=5)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join(timeout=5)


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
    More workers than ``worker_count`` allows are reduced, with a warning that says why.

    Raises:
        WorkerDied: a worker process died; the sink keeps the episodes written before.
    """
    interrupted = False
    if sink.steps < config.steps:
        workers, note = worker_count(config.workers, config.steps - sink.steps)
        if note:
            warnings.warn(note, stacklevel=2)
        played_by = replace(config, workers=workers)  # the output is the same

        def want_more(in_flight: int) -> bool:  # expected steps of running episodes suffice?
            mean_length = sink.steps / sink.episodes if sink.episodes else 0.0
            return sink.steps + in_flight * mean_length < config.steps

        episodes = iter_episodes(played_by, first_index=sink.episodes, want_more=want_more)
        try:
            for played in episodes:
                sink.add(played)
                if on_episode is not None:
                    on_episode(played, CollectProgress.of(sink))
                if sink.steps >= config.steps:
                    break
        except KeyboardInterrupt:
            interrupted = True
        except WorkerDied as err:  # a worker was killed (e.g. out of memory)
            raise WorkerDied(f"{err}; {sink.episodes} episodes kept") from err
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
