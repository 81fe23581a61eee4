"""The seeds of a test run: ``ATARI_DT_TEST_SEED=k`` (default 0) shifts the seeds the tests use
to train a model, initialise one, play an environment or draw random data. (Tests of
determinism itself, e.g. "the same seed gives the same episode", keep their literal seeds.)

A test must hold for any seed: ``make test-portable`` runs the suite under several seeds (and
CPU kernel sets), which catches a test that only passes for what one seed happened to give.
"""

from __future__ import annotations

import os

# A prime stride keeps the shifted seeds of one run apart from another run's base seeds.
_STRIDE = 1009


def _offset() -> int:
    text = os.environ.get("ATARI_DT_TEST_SEED", "0")
    if not text.isdigit():
        raise ValueError(f"ATARI_DT_TEST_SEED must be an integer >= 0, got {text!r}")
    return int(text)


OFFSET = _offset()


def seed(base: int = 0) -> int:
    """The run's seed for a test's base seed ``base`` (``base`` itself when the offset is 0)."""
    return base + _STRIDE * OFFSET
