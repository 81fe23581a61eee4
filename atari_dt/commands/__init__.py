"""Handlers of the ``atari-dt`` sub-commands: they parse nothing and compute nothing themselves,
only call the library and present its results. User errors (``atari_dt.errors.UserError``)
become one clear line and exit 2; anything else keeps its traceback."""

from __future__ import annotations

import argparse
import sys


def run_command(args: argparse.Namespace) -> int:
    """Run the sub-command ``args`` names. A ``UserError`` (a bad argument, file or config)
    or a missing/existing path is printed in one line with exit status 2; any other exception
    is a bug and propagates with its traceback."""
    from atari_dt.errors import UserError

    user_errors = (
        UserError,
        FileExistsError,
        FileNotFoundError,
        IsADirectoryError,
        NotADirectoryError,
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
        raise RuntimeError(f"no handler for command {args.stage!r}")  # parser and this disagree
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
