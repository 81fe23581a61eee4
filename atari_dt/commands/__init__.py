"""Handlers of the ``atari-dt`` sub-commands: they parse nothing and compute nothing themselves,
only call the library and present its results. User errors become one clear line and exit 2."""

from __future__ import annotations

import argparse
import sys


def run_command(args: argparse.Namespace) -> int:
    from atari_dt.config import ConfigError
    from atari_dt.datasets.npy_gzip import ReplayFileError
    from atari_dt.datasets.store import StoreFormatError

    user_errors = (
        ReplayFileError,
        StoreFormatError,
        ConfigError,
        ValueError,
        FileExistsError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
        IndexError,
    )
    try:
        if args.stage == "data":
            from atari_dt.commands import data

            return data.HANDLERS[args.command](args)
        if args.stage == "train":
            from atari_dt.commands import train

            return train.train(args)
        if args.stage == "eval":
            from atari_dt.commands import evaluate

            return evaluate.evaluate(args)
        if args.stage == "attribute":
            from atari_dt.commands import attribute

            return attribute.attribute(args)
        if args.stage == "scan":
            from atari_dt.commands import scan

            return scan.scan(args)
        if args.stage == "analyze":
            from atari_dt.commands import analyze

            return analyze.analyze(args)
        if args.stage == "model":
            from atari_dt.commands import model

            return model.HANDLERS[args.command](args)
        if args.stage == "collect":
            from atari_dt.commands import collect

            return collect.collect(args)
        raise ValueError(f"unknown command {args.stage!r}")
    except user_errors as err:
        print(f"atari-dt: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("atari-dt: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
