"""CNN state encoders: frames ``[N, C, 84, 84]`` (0-255) -> state embeddings ``[N, d_model]``.

Each is hooked (``hook_conv{i}``, ``hook_out``) and named in ``ENCODERS`` so a config picks one.
"""

from __future__ import annotations

from torch import nn

from atari_dt.encoders.impala import ImpalaCNN
from atari_dt.encoders.nature import NatureCNN

ENCODERS: dict[str, type[nn.Module]] = {"nature": NatureCNN, "impala": ImpalaCNN}


def make_encoder(name: str, d_model: int, stack_size: int = 4, frame_size: int = 84) -> nn.Module:
    """The encoder registered as ``name``, producing ``d_model`` features per frame stack.

    Raises:
        ValueError: unknown ``name`` (the message lists the registered ones).
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; registered: {', '.join(ENCODERS)}")
    return ENCODERS[name](d_model, stack_size=stack_size, frame_size=frame_size)


__all__ = ["ENCODERS", "ImpalaCNN", "NatureCNN", "make_encoder"]
