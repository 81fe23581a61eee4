"""``atari-dt train`` (and ``torchrun -m atari_dt.training``)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from atari_dt.errors import UserError


def train(args: argparse.Namespace) -> int:
    import torch

    from atari_dt.compute import keep_freed_memory, warn_if_emulated
    from atari_dt.config import load_config
    from atari_dt.run import record_store
    from atari_dt.training import distributed
    from atari_dt.training.config import ExperimentConfig
    from atari_dt.training.run import (
        check_run_dir,
        check_step_memory,
        claim_run_dir,
        save_or_check_config,
    )
    from atari_dt.training.trainer import train as run_training

    config = load_config(ExperimentConfig, args.config, args.set)
    if args.max_steps is not None:
        config = dataclasses.replace(
            config, train=dataclasses.replace(config.train, max_steps=args.max_steps)
        )
    run_dir = Path(args.out or Path("runs") / Path(args.config).stem)
    dist = distributed.setup(config.train.device)
    try:
        # Every input is checked before --force empties the run directory: the config (loaded
        # above), the data, and that the run directory is a run and does not hold the data.
        source = _training_data(args.data or config.data.path)
        # An absurd batch is refused before any data is read; rank 0 decides for every rank.
        dist.on_main(lambda: check_step_memory(config))
        claim = dict(resume=args.resume, force=args.force, data=source)
        dist.on_main(lambda: check_run_dir(run_dir, **claim))
        if source.is_file():  # the store and what it decides about the config, checked first
            windows, config = _prepare(config, source, dist)
            dist.on_main(lambda: claim_run_dir(run_dir, **claim))
        else:  # replay logs are converted into the run directory, so it is claimed first,
            dist.on_main(lambda: _check_replay_logs(source))  # once they are known to be logs
            dist.on_main(lambda: claim_run_dir(run_dir, **claim))
            windows, config = _prepare(config, _converted_store(source, run_dir, dist), dist)
        store_path = Path(config.data.path)
        dist.on_main(lambda: save_or_check_config(run_dir, config, resume=args.resume))
        dist.on_main(
            lambda: record_store(run_dir, store_path, resume=args.resume)
        )  # load_run finds it from anywhere
        if dist.is_main:
            _describe(config, windows, run_dir, dist)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        warn_if_emulated(config.train.precision, dist.device)
        if dist.device.type == "cpu":
            keep_freed_memory()  # a step's big tensors reuse memory instead of page-faulting
        evaluate = _periodic_evaluation(config, windows) if config.train.eval_every else None
        result = run_training(
            config,
            run_dir,
            windows,
            dist,
            resume=args.resume,
            progress=not args.no_progress,
            evaluate=evaluate,
        )
    finally:
        distributed.teardown(dist)
    if dist.is_main:
        loss = result.last_metrics.get("train/loss", float("nan"))
        state = "interrupted at" if result.interrupted else "trained to"
        print(f"{state} step {result.step} (loss {loss:.4f}); checkpoint {result.checkpoint}")
        if result.interrupted:
            # The run's own resolved config: it carries --data, --set and --max-steps as given.
            print(f"resume with: atari-dt train {run_dir / 'config.yaml'} --out {run_dir} --resume")
    return 130 if result.interrupted else 0


def _periodic_evaluation(config, windows):
    """``evaluate(model, step)`` for the trainer: the eval section's sweep, means logged as
    ``eval/return@<target>`` (in the eval's reward units)."""
    from atari_dt.compute import torch_threads
    from atari_dt.rollout.evaluate import run_episodes

    cfg = config.eval
    units = config.data.reward_units if cfg.reward_units == "auto" else cfg.reward_units

    def evaluate(model, step: int) -> dict[str, float]:
        was_training = model.training
        with torch_threads(cfg.threads):
            results = run_episodes(
                model,
                windows.game,
                cfg.targets,
                cfg.episodes,
                reward_units=units,
                seed=cfg.seed + step,
                progress=False,
                **cfg.rollout_settings(),
            )
        model.train(was_training)
        values: dict[str, float] = {}
        for target in cfg.targets:
            achieved = [r.achieved(units) for r in results if r.target == target]
            values[f"eval/return@{target:g}"] = sum(achieved) / len(achieved)
        return values

    return evaluate


def _training_data(path: str | None) -> Path:
    """The training data (an episode store, or a replay_logs directory to convert).

    Raises:
        UserError: no path given, or nothing there.
    """
    if path is None:
        raise UserError("no training data: set data.path in the config or pass --data PATH")
    source = Path(path)
    if not source.exists():
        raise UserError(f"training data {source} does not exist (--data or data.path)")
    return source


def _check_replay_logs(source: Path) -> None:
    """Refuse a replay_logs directory that cannot be converted (no or inconsistent checkpoint
    files, an unknown game) before anything is deleted: reads the headers, not the data."""
    from atari_dt.commands.data import _game_and_actions
    from atari_dt.datasets import ReplayLogs
    from atari_dt.datasets.convert import infer_game

    _game_and_actions(infer_game(source))
    ReplayLogs(source)


def _converted_store(source: Path, run_dir: Path, dist) -> Path:
    """The episode store made from the replay_logs directory ``source`` in the run directory
    (by rank 0, once)."""
    store = run_dir / "episodes.h5"

    def convert() -> None:
        from atari_dt.commands.data import _game_and_actions
        from atari_dt.datasets import convert_replay_logs
        from atari_dt.datasets.convert import infer_game

        if store.exists():
            return
        game, n_actions = _game_and_actions(infer_game(source))
        print(f"converting replay logs {source} -> {store}")
        convert_replay_logs(source, store, game=game, n_actions=n_actions)

    dist.on_main(convert)
    return store


def _prepare(config, store_path: Path, dist):
    """The context windows of the store at ``store_path`` and the config resolved against it
    (``data.path`` set, ``model.n_actions`` etc. from the data; raises as ``resolve_config``)."""
    from atari_dt.training.run import resolve_config

    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, path=str(store_path))
    )
    windows, n_actions = _windows(config, dist)
    return windows, resolve_config(config, windows, n_actions)


def _windows(config, dist):
    from atari_dt.datasets import ContextWindows
    from atari_dt.datasets.store import EpisodeStore

    store = EpisodeStore.open(config.data.path, reward_units=config.data.reward_units)
    return ContextWindows(store, config.data, progress=dist.is_main), store.n_actions


def _describe(config, windows, run_dir: Path, dist) -> None:
    info = windows.describe()
    model = config.model
    print(
        f"run {run_dir}: {info['episodes']} episodes, {info['transitions']} transitions "
        f"(returns {info['train_return_range']}, {info['reward_units']} rewards); model "
        f"{model.n_layers} layers x {model.n_heads} heads x {model.d_model}, "
        f"T {model.context_len}, rtg_scale {model.rtg_scale:g}; {config.train.max_steps} steps "
        f"of batch {config.train.batch_size} on {dist.world} x {dist.device}"
    )
