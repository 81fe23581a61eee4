"""``atari-dt collect``: play ALE with behaviour policies, write a store or DQN-replay logs."""

from __future__ import annotations

import argparse
import dataclasses
import sys
import warnings
from pathlib import Path

import numpy as np

from atari_dt.envs.config import CollectConfig, CollectFileConfig, PolicyComponent


def resolve_config(args: argparse.Namespace) -> CollectConfig:
    """The config's collect section with the command-line flags applied."""
    from atari_dt.config import load_config

    config = load_config(CollectFileConfig, args.config, args.set).collect
    flags = {
        key: getattr(args, key)
        for key in ("game", "steps", "format", "workers", "seed", "max_episode_steps", "capacity")
        if getattr(args, key) is not None
    }
    if args.policy == "random":
        flags["policy"] = [PolicyComponent("random")]
    elif args.policy == "expert":
        flags["policy"] = [PolicyComponent("expert")]
    return dataclasses.replace(config, **flags)


def collect(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from atari_dt.envs.collect import (
        CollectProgress,
        WorkerDied,
        build_policy,
        collection_record,
        run_collection,
    )
    from atari_dt.envs.config import worker_count
    from atari_dt.envs.sinks import ReplaySink, StoreSink

    config = resolve_config(args)
    out = Path(args.out)
    policy_spec = build_policy(config.policy, config.game).spec()  # fails early on bad policies
    if config.format == "h5" and args.force and not args.resume:
        from atari_dt.commands.data import check_replaceable_store

        check_replaceable_store(out)  # before collecting: --force only ever replaces a store
    sink_class = StoreSink if config.format == "h5" else ReplaySink
    sink = sink_class(out, config, policy_spec, resume=args.resume, overwrite=args.force)
    workers, note = worker_count(config.workers, max(config.steps - sink.steps, 1))
    if note:  # said before the progress bar starts, so it gets a line of its own
        warnings.warn(note, stacklevel=1)
        config = dataclasses.replace(config, workers=workers)
    bar = tqdm(
        total=config.steps,
        initial=min(sink.steps, config.steps),
        unit="step",
        desc=f"collect {config.game}",
        dynamic_ncols=True,
    )

    def show(played, progress) -> None:
        bar.update(min(len(played.episode.actions), config.steps - bar.n))
        recent = progress.returns[-20:]  # mean raw return of the last 20 episodes
        bar.set_postfix(episodes=progress.episodes, mean_return=f"{np.mean(recent):.1f}")

    failure: BaseException | None = None
    try:
        progress = run_collection(config, sink, on_episode=show)
    except (KeyboardInterrupt, WorkerDied) as err:  # keep every completed episode
        progress, failure = CollectProgress.of(sink, interrupted=True), err
    except BaseException:
        sink.abort()
        raise
    finally:
        bar.close()
    path = sink.close(collection_record(config, progress))
    print(f"wrote {path}: {progress.episodes} episodes, {progress.steps} steps")
    if isinstance(failure, WorkerDied):
        print(f"atari-dt: error: {failure}; continue with --resume", file=sys.stderr)
        return 1
    if progress.interrupted:
        print(f"interrupted before {config.steps} steps: continue with --resume")
        return 130
    return 0
