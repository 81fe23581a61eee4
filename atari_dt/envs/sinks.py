"""Where collected episodes go: an episode store or DQN-replay logs, fresh or resumed.

A sink knows how many episodes and steps it already holds (so a resumed collection continues
at the right episode index), adds one whole episode at a time (never half of one, even when
interrupted) and is closed with the collection's record.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from atari_dt.envs.collect import PlayedEpisode, collection_record, env_overrides
from atari_dt.envs.config import CollectConfig
from atari_dt.errors import UserError
from atari_dt.io import (
    atomic_write_json,
    deferred_interrupts,
    describe_entries,
    recover_directory,
    refuse_to_replace,
    replace_directory,
    temporary_sibling,
)

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

    Every run (fresh or resumed) writes into a temporary directory ``.<name>.<pid>.tmp``
    that :meth:`close` swaps onto ``path`` crash-safely (:func:`atari_dt.io.replace_directory`).
    ``collection.json`` is the last file written into it, so a temporary that holds one is a
    finished copy: the next sink for ``path`` puts it in place if its writer was killed before
    the swap ended (:attr:`recovered` and stderr say what was done).

    Raises:
        NotADirectoryError: ``path`` is a file.
        FileExistsError: ``path`` exists and neither ``resume`` nor ``overwrite``.
        UserError: ``overwrite`` of a directory that is not logs written by this class, or
            resuming with different settings.
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

        self.path, self.policy_spec = path, policy_spec
        self.preprocessing = resolve_settings(config.preset, env_overrides(config))
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(f"{path} is a file; dqn-replay output is a directory")
        # Before anything reads ``path``: a killed run's finished copy is the newest data.
        self.recovered = recover_directory(path, is_complete=_is_finished_copy)
        for line in self.recovered:  # said even if what follows refuses to go on
            print(f"atari-dt: {line}", file=sys.stderr)
        self.directory = temporary_sibling(path)
        if resume and path.exists():
            record = json.loads((path / self.RECORD).read_text())
            check_resumable(record.get("config", {}), config, path)
            self.behaviours = record.get("behaviours", [])
            self.episodes, self.steps = record["episodes"], record["steps"]
            self.returns = [b["return"] for b in self.behaviours]
            # Work on a hard-linked copy: files are only ever replaced (atomic writes), never
            # modified, so the finished logs at ``path`` stay intact until close() swaps them.
            # The record is left out: its presence marks a copy that close() finished.
            ignore = shutil.ignore_patterns(self.RECORD)
            shutil.copytree(path, self.directory, copy_function=os.link, ignore=ignore)
            self.writer = ReplayLogWriter.resume(self.directory)
            return
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} exists; pass --force to replace it or --resume")
        if path.exists():
            _check_replaceable_logs(path, self.RECORD)
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
                # Last into the copy: from here on it is finished (see _is_finished_copy).
                atomic_write_json(self.directory / self.RECORD, full)
                replace_directory(self.directory, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


# Files ReplayLogWriter writes (datasets/replay_files.py), and atomic-write temporaries of them.
_LOG_FILE = re.compile(
    r"^(?:\$store\$_(?:observation|action|reward|terminal)|add_count|invalid_range)_ckpt\.\d+\.gz$"
)
_TEMPORARY = re.compile(r"^\..+\.\d+\.tmp$")


def _is_finished_copy(directory: Path) -> bool:
    """Whether a temporary of :class:`ReplaySink` was finished by :meth:`ReplaySink.close`:
    its record, written last and atomically, is there and says how far it got."""
    try:
        record = json.loads((directory / ReplaySink.RECORD).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(record, dict) and "steps" in record and "finished" in record


def _check_replaceable_logs(path: Path, record: str) -> None:
    """Raise UserError unless ``path`` is empty or holds only logs this project wrote
    (``collection.json``, checkpoint files and their temporaries): ``overwrite`` deletes it."""
    names = sorted(os.listdir(path))
    if not names:
        return
    if record not in names:
        found = f"no {record}; it holds {describe_entries(path)}"
        raise refuse_to_replace(path, "a dqn-replay directory written by atari-dt collect", found)
    others = [n for n in names if n != record and not (_LOG_FILE.match(n) or _TEMPORARY.match(n))]
    if others:
        found = f"it also holds {', '.join(others[:5])}" + (" ..." if len(others) > 5 else "")
        raise refuse_to_replace(path, "a dqn-replay directory written by atari-dt collect", found)


def _object_names(game: str) -> tuple[str, ...]:
    try:
        from atari_dt.envs.objects import OBJECT_GAMES, object_names
    except ImportError:
        return ()
    return tuple(object_names(game)) if game in OBJECT_GAMES else ()


def _object_positions(game: str, ram: np.ndarray) -> dict[str, np.ndarray]:
    from atari_dt.envs.objects import object_positions

    return object_positions(game, ram)
