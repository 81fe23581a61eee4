"""The one error type for what a user got wrong (an argument, a file, a config value).

The CLI prints a ``UserError`` in one line and exits with status 2; any other exception is a
bug in atari-dt and keeps its traceback. Raise it (or a subclass: ``ConfigError``,
``StoreFormatError``, ``ReplayFileError``, ``CheckpointError``) only where the message tells
the user what to change.
"""

from __future__ import annotations


class UserError(ValueError):
    """What the user got wrong: a bad argument value, file or config, with what was expected.

    The CLI prints it in one line (``atari-dt: error: ...``) and exits 2. It subclasses
    ``ValueError`` so code that catches bad values keeps working.
    """


class OutOfRangeError(UserError, IndexError):
    """An episode, step or index that is not there; the message gives the valid range. Also an
    ``IndexError``, so code that catches missing indices keeps working."""


class StoreFormatError(UserError):
    """An episode store is missing, unreadable, damaged, unfinished or of another format or
    version (``atari_dt.datasets.store`` re-exports it)."""
