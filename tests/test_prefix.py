"""The suffix run with a cached prefix equals the full forward pass."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_model import TINY, inputs, make_model

from atari_dt.model.prefix import build_prefix_cache, forward_suffix


@pytest.mark.parametrize("positional", ["timestep", "original"])
@pytest.mark.parametrize("behaviour_cloning", [False, True])
@pytest.mark.parametrize(
    ("first_changed", "target_step", "padding"), [(7, 7, 0), (2, 5, 0), (0, 7, 3), (4, 6, 2)]
)
def test_suffix_equals_full_forward(
    seaquest_windows, positional, behaviour_cloning, first_changed, target_step, padding
) -> None:
    cfg = dataclasses.replace(TINY, positional=positional, behaviour_cloning=behaviour_cloning)
    model = make_model(cfg)
    frames, actions, rtg, timesteps = (t[:1] for t in inputs(seaquest_windows))
    mask = torch.arange(8)[None] >= padding
    k, offset = cfg.tokens_per_step, cfg.state_token_offset
    start, end = k * first_changed + offset, k * target_step + offset + 1
    with torch.no_grad():
        states = model.embed_states(frames)
        cache = build_prefix_cache(
            model, states, actions, rtg, timesteps, mask, start=start, end=end
        )
        # Three variants that differ from the window only at and after `first_changed`.
        variants = states.repeat(3, 1, 1)
        variants[1:, first_changed:] += torch.randn_like(variants[1:, first_changed:])
        rest = [t.expand(3, -1) for t in (actions, rtg, timesteps, mask)]
        suffix = forward_suffix(model, cache, variants, *rest)
        full = model.transformer(variants, *rest)[:, start:end]
    assert suffix.shape == (3, end - start, cfg.d_model)
    torch.testing.assert_close(suffix, full, rtol=0, atol=2e-5)


def test_needs_eval_mode(seaquest_windows) -> None:
    model = make_model().train()
    frames, actions, rtg, timesteps = (t[:1] for t in inputs(seaquest_windows))
    with pytest.raises(ValueError, match="needs the model in eval"):
        build_prefix_cache(
            model, model.embed_states(frames), actions, rtg, timesteps, None, start=1, end=5
        )
