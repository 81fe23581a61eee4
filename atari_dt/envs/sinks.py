"""Where collected episodes go: an episode store or DQN-replay logs, fresh or resumed.

A sink knows how many episodes and steps it already holds (so a resumed collection continues
at the right episode index), adds one whole episode at a time (never half of one, even when
interrupted) and is closed with the collection's record.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.envs.collect import PlayedEpisode, collection_record, env_overrides
from atari_dt.envs.config import CollectConfig
from atari_dt.errors import UserError
from atari_dt.io import atomic_write_json, deferred_interrupts, replace_directory

# Settings that must match for --resume to continue the same data (capacity: dqn-replay only).
_RESUME_KEYS = ("game", "preset", "max_episode_steps", "seed", "format", "policy")


def check_resumable(recorded: dict[str, Any], config: CollectConfig, where: Path) -> None:
    """Raise UserError naming every setting that differs from the run being resumed."""
    current = collection_record(config, _Empty())["config"]
    keys = (*_RESUME_KEYS, "capacity") if config.format == "dqn-replay" else _RESUME_KEYS
    different = [key for key in keys if recorded.get(key) != current.get(key)]
    if different:
        details = ", ".join(f"{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in different)
        raise UserError(f"cannot resume {where}: settings differ from the original run ({details})")


class _Empty:
    episodes = steps = 0


class StoreSink:
    """Writes an episode store with raw rewards, RAM, object positions and per-episode behaviour.

    Raises:
        FileExistsError: ``path`` exists and neither ``resume`` nor ``overwrite``.
        ValueError: resuming with different settings.
    """

    def __init__(
        self,
        path: Path,
        config: CollectConfig,
        policy_spec: dict[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        from atari_dt.datasets.store import EpisodeStore
        from atari_dt.datasets.store_writer import EpisodeStoreWriter
        from atari_dt.envs.games import canonical_game, minimal_action_count
        from atari_dt.envs.make import resolve_settings

        self.game = canonical_game(config.game)
        self.object_names = _object_names(self.game)
        if resume and path.exists():
            with EpisodeStore.open(path, reward_units="raw") as store:
                check_resumable(
                    store.metadata.get("collection", {}).get("config", {}), config, path
                )
                self.episodes, self.steps = len(store), store.n_transitions
                self.returns = store.returns.tolist()
            self.writer = EpisodeStoreWriter.resume(path)
            return
        self.writer = EpisodeStoreWriter(
            path,
            game=self.game,
            n_actions=minimal_action_count(self.game),
            source={"kind": "atari-dt collect"},
            preprocessing=resolve_settings(config.preset, env_overrides(config)),
            behaviour_policy=policy_spec,
            raw_rewards=True,
            ram=True,
            objects=self.object_names,
            overwrite=overwrite,
        )
        self.episodes, self.steps, self.returns = 0, 0, []

    def add(self, played: PlayedEpisode) -> None:
        episode = played.episode
        objects = _object_positions(self.game, episode.ram) if self.object_names else None
        with deferred_interrupts():
            self.writer.add_episode(
                episode.frames,
                episode.actions,
                episode.rewards,
                complete=True,
                terminated=episode.terminated,
                raw_rewards=episode.rewards,
                ram=episode.ram,
                objects=objects,
                behaviour=played.behaviour,
            )
            self.episodes += 1  # counted inside: the episode and its count, or neither
            self.steps += len(episode.actions)
            self.returns.append(float(episode.rewards.sum()))

    def close(self, record: dict[str, Any]) -> Path:
        with deferred_interrupts():
            self.writer.set_metadata("collection", record)
            return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class ReplaySink:
    """Writes DQN-replay logs (clipped rewards only, as the published ones) plus
    ``collection.json`` with the run's record and each episode's behaviour.

    A fresh run writes into a temporary directory renamed onto ``path`` at :meth:`close`.
    """

    RECORD = "collection.json"

    def __init__(
        self,
        path: Path,
        config: CollectConfig,
        policy_spec: dict[str, Any],
        *,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        from atari_dt.datasets.replay_writer import ReplayLogWriter
        from atari_dt.envs.make import resolve_settings
        from atari_dt.io import remove_stale_temporaries, temporary_sibling

        self.path, self.policy_spec = path, policy_spec
        self.preprocessing = resolve_settings(config.preset, env_overrides(config))
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} is a file; dqn-replay output is a directory")
        remove_stale_temporaries(path)
        self.directory = temporary_sibling(path)
        if resume and path.exists():
            record = json.loads((path / self.RECORD).read_text())
            check_resumable(record.get("config", {}), config, path)
            self.behaviours = record.get("behaviours", [])
            self.episodes, self.steps = record["episodes"], record["steps"]
            self.returns = [b["return"] for b in self.behaviours]
            # Work on a hard-linked copy: files are only ever replaced (atomic writes), never
            # modified, so the finished logs at ``path`` stay intact until close() swaps them.
            shutil.copytree(path, self.directory, copy_function=os.link)
            self.writer = ReplayLogWriter.resume(self.directory)
            return
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --force to replace it or --resume")
        self.writer = ReplayLogWriter(self.directory, config.capacity)
        self.behaviours, self.episodes, self.steps, self.returns = [], 0, 0, []

    def add(self, played: PlayedEpisode) -> None:
        episode = played.episode
        ret = float(episode.rewards.sum())
        with deferred_interrupts():  # the episode and its count, or neither
            self.writer.add_episode(episode.frames, episode.actions, episode.rewards)
            self.behaviours.append(
                {**played.behaviour, "length": len(episode.actions), "return": ret}
            )
            self.episodes += 1
            self.steps += len(episode.actions)
            self.returns.append(ret)

    def close(self, record: dict[str, Any]) -> Path:
        try:
            with deferred_interrupts():
                self.writer.close()
                full = {
                    **record,
                    "preprocessing": self.preprocessing,
                    "behaviour_policy": self.policy_spec,
                    "behaviours": self.behaviours,
                }
                atomic_write_json(self.directory / self.RECORD, full)
                replace_directory(self.directory, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _object_names(game: str) -> tuple[str, ...]:
    try:
        from atari_dt.envs.objects import OBJECT_GAMES, object_names
    except ImportError:
        return ()
    return tuple(object_names(game)) if game in OBJECT_GAMES else ()


def _object_positions(game: str, ram: np.ndarray) -> dict[str, np.ndarray]:
    from atari_dt.envs.objects import object_positions

    return object_positions(game, ram)
