"""Vector envs kept between rollouts: building 8 ALE envs takes ~0.9 s (ROM and emulator set-up,
one env after another), as long as ~150 agent steps of a paper-size model at 8 envs on 2 cores, and
``run_episodes`` runs once per evaluation during training, per sweep and per study cell.

A borrowed env is reset with a seed before its first step, and ALE reseeds every emulator on
``reset(seed=...)``: a reused env plays exactly the episodes a fresh one plays (tested). Idle
envs take no CPU (their threads wait on a condition), a few MB each; at most
``MAX_IDLE_ENVS`` are kept, and all are closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from atari_dt.envs.make import make_vector_env

MAX_IDLE_ENVS = 4
"""Idle vector envs kept (one per distinct set of arguments); the oldest is closed first."""

_idle: dict[tuple, Any] = {}  # (pid, arguments) -> an env nobody uses; insertion order = age


@contextlib.contextmanager
def borrowed_vector_env(
    game: str, num_envs: int, preset: str = "dqn_replay", **overrides: Any
) -> Iterator[Any]:
    """``make_vector_env(game, num_envs, preset, **overrides)`` (the ``ale`` backend), reused
    from an earlier borrow with the same arguments when one is idle, and kept for the next
    one afterwards. The caller must ``reset(seed=...)`` it before stepping. An env whose
    borrower raised is closed, not kept: its state is unknown."""
    # The pid: a forked child inherits the dict but not the envs' threads, so never their envs.
    key = (os.getpid(), game, num_envs, preset, tuple(sorted(overrides.items())))
    env = _idle.pop(key, None)
    if env is None:
        env = make_vector_env(game, num_envs, preset, **overrides)
    try:
        yield env
    except BaseException:
        env.close()
        raise
    if key in _idle:  # another borrower of the same arguments gave one back meanwhile
        env.close()
        return
    while len(_idle) >= MAX_IDLE_ENVS:
        oldest = next(iter(_idle))
        _forget(oldest, _idle.pop(oldest))
    _idle[key] = env


def close_idle_envs() -> None:
    """Close every idle vector env of this process (at exit; also for tests that count env
    builds); a forked parent's are forgotten, not closed (their threads are not here)."""
    while _idle:
        _forget(*_idle.popitem())


def _forget(key: tuple, env: Any) -> None:
    if key[0] == os.getpid():
        env.close()


atexit.register(close_idle_envs)
