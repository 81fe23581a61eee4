"""Atari game names: ``Seaquest``, ``seaquest`` and ``ALE/Seaquest-v5`` all mean one game."""

from __future__ import annotations

import functools
import re

from atari_dt.errors import UserError


@functools.cache
def _ale_games() -> dict[str, str]:
    """Lower-case key -> canonical name, for every game ale-py registers."""
    import ale_py
    import gymnasium as gym

    ale_py.ALEInterface.setLoggerMode(ale_py.LoggerMode.Error)  # no start-up banner on stderr
    gym.register_envs(ale_py)
    names = {}
    for env_name in gym.registry:
        match = re.fullmatch(r"ALE/(\w+)-v5", env_name)
        if match:
            names[match.group(1).lower()] = match.group(1)
    return names


def canonical_game(name: str) -> str:
    """The ALE name of a game (``Seaquest``) from any common spelling.

    Raises:
        UserError: ale-py knows no such game (lists close matches).
    """
    match = re.fullmatch(r"(?:ALE/)?([A-Za-z0-9_ -]+?)(?:-v\d+)?", name.strip())
    key = re.sub(r"[_ -]", "", match.group(1)).lower() if match else name.lower()
    games = _ale_games()
    if key not in games:
        import difflib

        close = difflib.get_close_matches(key, list(games), n=3)
        hint = f"; did you mean {', '.join(games[c] for c in close)}?" if close else ""
        raise UserError(f"unknown Atari game {name!r}{hint}")
    return games[key]


def env_id(name: str) -> str:
    """The gymnasium id, e.g. ``ALE/Seaquest-v5``."""
    return f"ALE/{canonical_game(name)}-v5"


@functools.cache
def minimal_action_count(name: str) -> int:
    """Size of the game's minimal action set (what DQN-replay agents used), e.g. 18 for Seaquest."""
    import gymnasium as gym

    env = gym.make(env_id(name), full_action_space=False)
    try:
        return int(env.action_space.n)
    finally:
        env.close()
