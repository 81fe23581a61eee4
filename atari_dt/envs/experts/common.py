"""What every scripted expert shares: looking actions up by name."""

from __future__ import annotations


def action_index(meanings: tuple[str, ...], name: str) -> int:
    """Index of the action called ``name`` in the game's action set.

    Raises:
        ValueError: the action set has no such action (the message lists the valid names).
    """
    try:
        return meanings.index(name)
    except ValueError:
        raise ValueError(f"no action {name!r} in this game's action set {meanings}") from None
