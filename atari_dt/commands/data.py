"""``atari-dt data ...``: convert, info, verify, show."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from atari_dt.errors import UserError

if TYPE_CHECKING:
    from atari_dt.datasets import PaperSubsetOptions


def convert(args: argparse.Namespace) -> int:
    from atari_dt.datasets import convert_replay_logs, parse_checkpoint_selection
    from atari_dt.datasets.convert import infer_game

    subset = _subset_options(args)
    checkpoints = parse_checkpoint_selection(args.checkpoints) if args.checkpoints else None
    _check_destination(Path(args.destination), args.force)
    game, n_actions = _game_and_actions(args.game or infer_game(Path(args.source)))
    options = {  # everything but the subset
        "game": game,
        "n_actions": n_actions,
        "checkpoints": checkpoints,
        "layout": args.layout,
        "compression": None if args.compression == "none" else args.compression,
        "overwrite": args.force,
        "progress": not args.no_progress,
    }
    destination = convert_replay_logs(args.source, args.destination, subset=subset, **options)
    record = _report_written(destination).get("subset")
    if record is not None:
        print(describe_subset(record))
        if not record["budget_reached"]:
            print(f"warning: {_shortfall(record)}", file=sys.stderr)
    return 0


def convert_minari(args: argparse.Namespace) -> int:
    from atari_dt.datasets.minari_reader import convert_minari_dataset

    _check_destination(Path(args.destination), args.force)
    destination = convert_minari_dataset(
        args.dataset,
        args.destination,
        game=args.game,
        compression=None if args.compression == "none" else args.compression,
        overwrite=args.force,
        progress=not args.no_progress,
    )
    _report_written(destination)
    return 0


def _check_destination(destination: Path, force: bool) -> None:
    """Refuse an existing destination without ``--force``, and with it anything that is not
    an episode store."""
    if destination.exists() and not force:
        raise FileExistsError(f"{destination} exists; pass --force to replace it")
    if force:
        check_replaceable_store(destination)


def _report_written(destination: Path) -> dict:
    """Print what a conversion wrote; return the store's ``source`` record."""
    from atari_dt.datasets.store import EpisodeStore

    with EpisodeStore.open(destination) as store:
        print(
            f"wrote {destination}: {len(store)} episodes ({int(store.complete.sum())} complete), "
            f"{store.n_transitions} transitions"
        )
        return store.metadata.get("source", {})


def _subset_options(args: argparse.Namespace) -> PaperSubsetOptions | None:
    """The paper-subset settings from the flags; None without ``--sample-transitions``.

    Raises:
        UserError: a value out of range, or ``--trajectories-per-checkpoint`` or ``--seed``
            without ``--sample-transitions`` (they mean nothing for a full conversion).
    """
    from atari_dt.datasets import PaperSubsetOptions

    flags = {
        "--trajectories-per-checkpoint": args.trajectories_per_checkpoint,
        "--seed": args.seed,
    }
    if args.sample_transitions is None:
        given = [flag for flag, value in flags.items() if value is not None]
        if given:
            raise UserError(
                f"{' and '.join(given)}: only with --sample-transitions N (they set the paper's "
                "subset; without it the whole selection is converted)"
            )
        return None
    settings = {"trajectories_per_checkpoint": args.trajectories_per_checkpoint, "seed": args.seed}
    return PaperSubsetOptions(
        args.sample_transitions, **{k: v for k, v in settings.items() if v is not None}
    )


def describe_subset(record: dict) -> str:
    """One line on a store's paper-subset selection (its ``source["subset"]``)."""
    return (
        f"subset {record['recipe']}: {record['transitions']:,} of {record['sample_transitions']:,}"
        f" transitions asked, {len(record['episodes'])} episodes in {record['picks']} draws of "
        f"{record['trajectories_per_checkpoint']} from {len(record['checkpoints_used'])} "
        f"checkpoints (first {record['window']:,} slots of each), seed {record['seed']}"
    )


def _shortfall(record: dict) -> str:
    return (
        f"every checkpoint ran out of whole draws before the budget: took "
        f"{record['transitions']:,} of the {record['sample_transitions']:,} transitions asked "
        f"({record['available_transitions']:,} lie in complete episodes inside the windows; a "
        f"checkpoint with fewer than {record['trajectories_per_checkpoint']} episodes left is "
        "not drawn again)"
    )


def check_replaceable_store(path: Path) -> None:
    """Refuse ``--force`` onto a file that is not an atari-dt episode store (a directory is
    refused by the store writer itself); a missing ``path`` is fine.

    Raises:
        UserError: ``path`` is a file without the store's ``format`` attribute (names what it
            is instead); nothing is deleted.
    """
    if not path.is_file():
        return
    import h5py

    from atari_dt.datasets.store import STORE_FORMAT
    from atari_dt.io import refuse_to_replace

    expected = f"an atari-dt episode store (HDF5, format {STORE_FORMAT!r})"
    if not h5py.is_hdf5(path):
        raise refuse_to_replace(path, expected, f"not an HDF5 file, {path.stat().st_size} bytes")
    try:
        with h5py.File(path, "r") as handle:
            found = handle.attrs.get("format")
    except OSError as err:  # HDF5 signature but unreadable: not provably ours
        raise refuse_to_replace(path, expected, f"an unreadable HDF5 file: {err}") from None
    if isinstance(found, bytes):
        found = found.decode(errors="replace")
    if found != STORE_FORMAT:
        raise refuse_to_replace(path, expected, f"an HDF5 file with format attribute {found!r}")


def _game_and_actions(name: str | None) -> tuple[str | None, int | None]:
    """Canonical game name and its minimal action-set size.

    Raises:
        UserError: a name ALE does not know (with close matches).
    """
    if name is None:
        return None, None
    from atari_dt.envs.games import canonical_game, minimal_action_count

    game = canonical_game(name)
    return game, minimal_action_count(game)


def info(args: argparse.Namespace) -> int:
    from atari_dt.datasets.store import EpisodeStore
    from atari_dt.datasets.summary import return_histogram, store_summary

    with EpisodeStore.open(args.path, reward_units=args.reward_units) as store:
        summary = store_summary(store)
    complete_returns = np.array([e["return"] for e in summary["episodes"] if e["complete"]])
    counts, edges = return_histogram(complete_returns)
    if args.json:
        print(json.dumps(summary))
    else:
        print(_format_summary(summary, counts, edges))
    if args.plot:
        from atari_dt.datasets.plots import plot_returns

        print(f"plot: {plot_returns(summary, counts, edges, Path(args.plot))}")
    return 0


def _format_summary(summary: dict, counts: np.ndarray, edges: np.ndarray) -> str:
    lines = [
        f"{summary['path']}",
        f"  game          {summary['game']}  (actions: {summary['n_actions'] or 'unknown'})",
        f"  transitions   {summary['transitions']:,}",
        f"  episodes      {summary['n_complete']} complete, {summary['n_incomplete']} cut "
        "(cut episodes are not trained on by default)",
    ]
    for name, key in (("length", "length_stats"), ("return", "return_stats")):
        stats = summary[key]
        if stats:
            lines.append(
                f"  {name:<13} mean {stats['mean']:.1f} ± {stats['std']:.1f}, "
                f"min {stats['min']:g}, median {stats['p50']:g}, max {stats['max']:g}"
            )
    lines.append(
        f"  optional      raw rewards: {summary['has_raw_rewards']}, RAM: {summary['has_ram']}"
    )
    subset = summary["source"].get("subset") if isinstance(summary["source"], dict) else None
    if subset:
        lines.append(f"  {describe_subset(subset)}")
    if len(counts):
        lines.append(f"  returns of complete episodes ({summary['reward_units']} rewards):")
        width = max(int(counts.max()), 1)
        for count, low, high in zip(counts, edges[:-1], edges[1:], strict=True):
            bar = "█" * round(30 * count / width)
            lines.append(f"    [{low:8.1f}, {high:8.1f})  {bar} {count}")
    return "\n".join(lines)


def verify(args: argparse.Namespace) -> int:
    from atari_dt.datasets.verify import verify_store

    report = verify_store(args.path, check_frames=not args.quick, progress=True)
    if report.ok:
        print(
            f"OK {report.path}: {report.episodes} episodes, {report.transitions} transitions, "
            f"{report.frames_checked} frames read back"
        )
    else:
        print(f"FAILED {report.path}:")
        for problem in report.problems:
            print(f"  - {problem}")
    for note in report.notes:  # what was not checked, and why
        print(f"note: {note}")
    return 0 if report.ok else 1


def show(args: argparse.Namespace) -> int:
    from atari_dt.config import load_config
    from atari_dt.datasets.plots import plot_window
    from atari_dt.datasets.store import EpisodeStore
    from atari_dt.datasets.windows import ContextWindows
    from atari_dt.training.config import ExperimentConfig

    # One window is drawn: read it from the store rather than loading every frame.
    config = load_config(ExperimentConfig, args.config, args.set).data
    config = dataclasses.replace(config, frames_in_memory="never")
    if args.episode < 0:  # a store's episodes are numbered from 0; -1 is not "the last"
        raise UserError(f"--episode {args.episode}: episodes are numbered from 0")
    with EpisodeStore.open(args.path, reward_units=config.reward_units) as store:
        episode = store.episode(args.episode)  # validates the episode number
        windows = ContextWindows(store, config)
    where = np.flatnonzero(windows.episodes == episode.index)
    if len(where) == 0:
        raise UserError(
            f"episode {episode.index} is not among the selected training episodes "
            "(cut episodes are left out unless data.include_incomplete=true)"
        )
    first = int(np.sum(windows.lengths[: where[0]]))
    step = len(episode) // 2 if args.step is None else args.step
    if not 0 <= step < len(episode):
        raise UserError(
            f"--step {step} out of range: episode {episode.index} has {len(episode)} steps"
        )
    window = windows[first + step]
    title = (
        f"{store.game or Path(args.path).stem}: episode {episode.index}, step {step}, "
        f"context {config.context_len}, return {episode.ret:g} ({config.reward_units} rewards)"
    )
    print(f"plot: {plot_window(window, title, Path(args.out))}")
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "convert": convert,
    "convert-minari": convert_minari,
    "info": info,
    "verify": verify,
    "show": show,
}
