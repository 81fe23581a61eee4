"""Vector envs kept between rollouts: building 8 ALE envs takes ~0.9 s (ROM and emulator set-up,
one env after another), as long as ~150 agent steps of a paper-size model at 8 envs on 2 cores,
and ``run_episodes`` runs once per evaluation during training, per sweep and per ablation.

A borrowed env is reset with a seed (>= 0) before its first step, and ALE reloads the ROM and
reseeds every emulator on ``reset(seed=...)``: a reused env plays exactly the episodes a fresh
one plays (tested). Idle envs take no CPU (their threads block), a few MB each; at most
``MAX_IDLE_ENVS`` are kept, and all are closed at interpreter exit. A forked child starts with
none: its parent's envs' threads are not in it, so it never touches (or frees) them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import threading
from collections.abc import Iterator
from typing import Any

from atari_dt.envs.make import make_vector_env

MAX_IDLE_ENVS = 4
"""Idle vector envs kept (one per distinct set of arguments); the oldest is closed first."""

_idle: dict[tuple, Any] = {}  # arguments -> an env nobody uses; insertion order = age
_lock = threading.Lock()
_inherited: list[Any] = []  # a forked child's copies of its parent's envs: never used or freed


@contextlib.contextmanager
def borrowed_vector_env(
    game: str, num_envs: int, preset: str = "dqn_replay", **overrides: Any
) -> Iterator[Any]:
    """``make_vector_env(game, num_envs, preset, **overrides)`` (the ``ale`` backend), reused
    from an earlier borrow with the same arguments when one is idle, and kept for the next
    one afterwards. The caller must ``reset(seed=...)`` it (seed >= 0) before stepping. An env
    whose borrower raised is closed, not kept: its state is unknown."""
    key = (game, num_envs, preset, tuple(sorted(overrides.items())))
    with _lock:
        env = _idle.pop(key, None)
    if env is None:
        env = make_vector_env(game, num_envs, preset, **overrides)
    try:
        yield env
    except BaseException:
        env.close()
        raise
    with _lock:
        if key in _idle:  # another borrower of the same arguments gave one back meanwhile
            evicted = [env]
        else:
            evicted = []
            while len(_idle) >= MAX_IDLE_ENVS:
                evicted.append(_idle.pop(next(iter(_idle))))
            _idle[key] = env
    for old in evicted:
        old.close()


def close_idle_envs() -> None:
    """Close every idle vector env (at exit; also for tests that count env builds)."""
    with _lock:
        envs = list(_idle.values())
        _idle.clear()
    for env in envs:
        env.close()


def _forget_in_child() -> None:
    _inherited.extend(_idle.values())
    _idle.clear()


atexit.register(close_idle_envs)
os.register_at_fork(after_in_child=_forget_in_child)
