"""Handlers of the ``atari-dt`` sub-commands: they parse nothing and compute nothing themselves,
only call the library and present its results. User errors (``atari_dt.errors.UserError``)
become one clear line and exit 2; anything else keeps its traceback."""

from __future__ import annotations

import argparse
import errno
import sys

# What the machine (not atari-dt) refuses: a read-only place, no permission, a full disk.
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def describe_os_error(err: OSError) -> str:
    """One line for an ``OSError`` the machine raised: which path, and why (with a hint).
    HDF5's messages are many lines with the path and errno inside; a temporary sibling
    (``.name.PID.tmp``, see ``atari_dt.io``) is named by the file it was to become."""
    import os
    import re

    text = str(err)
    path = err.filename or next(iter(re.findall(r"(?:\bfile|\b)name = '([^']+)'", text)), "a file")
    why = os.strerror(err.errno) if err.errno else (err.strerror or text.splitlines()[0])
    # every temporary component (a staged directory too) named by what it was to become
    parts = [re.sub(r"^\.(.+)\.\d+\.tmp$", r"\1", part) for part in str(path).split(os.sep)]
    path = os.sep.join(parts)
    hint = {
        errno.ENOSPC: "free some space or write elsewhere (--out)",
        errno.EDQUOT: "free some space or write elsewhere (--out)",
        errno.EROFS: "write elsewhere (--out)",
        errno.EACCES: "check its permissions or write elsewhere (--out)",
        errno.EPERM: "check its permissions or write elsewhere (--out)",
    }.get(err.errno, "")
    verb = "write" if err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS) else "use"
    return f"cannot {verb} {path}: {why}" + (f"; {hint}" if hint else "")


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
        if args.stage == "study":
            from atari_dt.commands import study

            return study.study(args)
        if args.stage == "compare":
            from atari_dt.commands import compare

            return compare.compare(args)
        if args.stage == "app":
            from atari_dt.commands import app

            return app.app(args)
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
    except OSError as err:
        if err.errno not in _ENVIRONMENT_ERRNOS:
            raise  # not the machine refusing a write: a bug, with its traceback
        print(f"atari-dt: error: {describe_os_error(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("atari-dt: interrupted; nothing half-written was kept", file=sys.stderr)
        return 130
