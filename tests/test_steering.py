"""The RTG direction, steering and the study's RTG patching on models where the answer is known
by construction; and the verdict's sentences read off intervals as they should."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from test_model import make_model

from atari_dt.analysis.scan import scanned_rtg
from atari_dt.analysis.steering import (
    KINDS,
    residual_hooks,
    rtg_direction,
    steering,
    steering_effect,
)
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError
from atari_dt.study.mechanism import rtg_patching
from atari_dt.study.summary import (
    carriers_entry,
    extrapolation_sentence,
    mechanism_sentences,
    steering_entry,
)

LOW, HIGH = 0.0, 3.0  # the tiny model's rtg_scale is 1: both well inside tanh's range


@pytest.fixture(scope="module")
def contexts(padded_contexts) -> Contexts:
    return padded_contexts


def at(contexts: Contexts, value: float) -> Contexts:
    return contexts.with_rtg(scanned_rtg(contexts, value, "constant"))


def test_steering_by_zero_is_the_identity(contexts) -> None:
    model = make_model()
    plain = model(contexts)
    for hook in residual_hooks(model.cfg.n_layers):
        with steering(model, hook, torch.zeros(len(KINDS), model.cfg.d_model), scale=1.0):
            assert torch.equal(model(contexts), plain)  # x + 0 is x, bit for bit


def test_the_direction_at_the_embedding_is_exactly_raising_the_rtg(contexts) -> None:
    # Before layer 0 a constant RTG changes only the RTG tokens, by the same vector at every
    # step: the mean difference is that vector, and adding it is raising the RTG.
    model = make_model()
    direction = rtg_direction(model, contexts, LOW, HIGH)
    assert direction.hooks == residual_hooks(model.cfg.n_layers)
    embedding = torch.tanh(model.rtg_embed(torch.tensor([[HIGH], [LOW]]) / model.cfg.rtg_scale))
    assert torch.allclose(direction.directions[0, 0], embedding[0] - embedding[1], atol=1e-6)
    assert torch.equal(direction.directions[0, 1:], torch.zeros(2, model.cfg.d_model))
    with steering(model, direction.hooks[0], direction.directions[0]):
        steered = model(at(contexts, LOW))
    assert torch.allclose(steered, model(at(contexts, HIGH)), atol=1e-5)
    effect = steering_effect(model, contexts, direction)
    assert effect.rtg_effect > 1e-3  # the RTG moves this model's policy at all
    assert effect.recovered[0] == pytest.approx(1.0, abs=1e-3)  # all of the RTG's effect
    nothing = steering_effect(model, contexts, direction, scale=0.0)
    assert nothing.recovered == pytest.approx(0.0, abs=1e-12)  # no steering, nothing moves


def test_rtg_direction_refuses_what_it_cannot_measure(contexts) -> None:
    with pytest.raises(UserError, match="must exceed the low one"):
        rtg_direction(make_model(), contexts, HIGH, LOW)
    direction = rtg_direction(make_model(), contexts, LOW, HIGH)
    with pytest.raises(UserError, match=r"no RTG direction at 'blocks\.7\.hook_resid_pre'"):
        direction.index("blocks.7.hook_resid_pre")


def one_head_model() -> torch.nn.Module:
    """Every head's output projection zeroed but L0H1's: MLPs act per position, so L0H1 is
    the only path by which the RTG tokens can reach the decision's state token."""
    model = make_model()
    with torch.no_grad():
        for layer, block in enumerate(model.blocks):
            for head in range(model.cfg.n_heads):
                if (layer, head) != (0, 1):
                    block.attn.W_O[head] = 0.0
        # L0H1 written 30x larger: the RTG then moves the policy clearly (total variation
        # ~0.007, measured; at 1x it is ~0.0003, below what patching counts as moved).
        model.blocks[0].attn.W_O[1] *= 30.0
    return model


def test_patching_names_the_one_head_that_carries_the_rtg(contexts) -> None:
    model = one_head_model()
    patching = rtg_patching(model, contexts, LOW, HIGH)
    assert patching.contexts == len(contexts) and patching.skipped == 0
    assert patching.heads[0, 1] == pytest.approx(1.0, abs=1e-4)  # restores all of it
    others = patching.heads.copy()
    others[0, 1] = 0.0
    assert abs(others).max() < 1e-4  # a head with no output restores nothing
    assert patching.top_heads(1)[0][0] == "L0H1"
    # The state token has the RTG once L0H1 has written to it: before layer 1.
    assert patching.carrier_hook(model.cfg) == "blocks.1.hook_resid_pre"
    direction = rtg_direction(model, contexts, LOW, HIGH)
    study = SimpleNamespace(
        patching=patching,
        carrier_hook="blocks.1.hook_resid_pre",
        direction=direction,
        steering=steering_effect(model, contexts, direction),
    )
    headline = {"rtg_carriers": carriers_entry(study), "steering": steering_entry(study)}
    lines = mechanism_sentences(headline)
    assert lines[0].startswith("Patching names L0H1, which carries most of the RTG's effect")
    assert "the RTG has reached the decision token at blocks.1.hook_resid_pre" in lines[0]


def gain(value: float, low: float, high: float, reached: list[float] | None = None) -> dict:
    return {
        "value": value,
        "interval": [low, high],
        "reference": 420.0,
        "achieved_above": None if reached is None else sum(reached) / 2,
        "achieved_above_interval": reached,
    }


@pytest.mark.parametrize(
    ("entry", "says"),
    [
        (gain(35.0, 5.0, 65.0, [430.0, 470.0]), "and beyond 420 itself; achieved 450 [430, 470]"),
        (gain(35.0, 5.0, 65.0, [380.0, 440.0]), "but not demonstrably beyond 420"),
        (gain(-40.0, -70.0, -10.0), "achieves less: -40 raw [-70, -10]"),
        (gain(10.0, -20.0, 40.0), "holds 0 — no evidence of extrapolation."),
        (None, "nothing to say about extrapolation"),
    ],
)
def test_the_extrapolation_verdict_follows_the_intervals(entry, says) -> None:
    assert says in extrapolation_sentence(entry, "raw")
    assert ("it extrapolates" in extrapolation_sentence(entry, "raw")) == (
        "beyond 420 itself" in says
    )


@pytest.mark.parametrize(
    ("reference", "verdict"),
    [(420.0, "no extrapolation past the data"), (150.0, "it extrapolates")],
)
def test_a_sweep_is_called_extrapolation_only_beyond_its_reference(reference, verdict) -> None:
    """Returns ~110 at the reference and ~200 above it: a gain either way, but past the
    reference return itself only when that is 150, not 420."""
    from types import SimpleNamespace

    from atari_dt.rollout.evaluate import EpisodeResult
    from atari_dt.rollout.sweep import summarise
    from atari_dt.study.behaviour import extrapolation_gain
    from atari_dt.study.summary import gain_entry

    returns = {
        reference: [100.0, 110.0, 120.0],
        800.0: [200.0, 210.0, 190.0],
        1600.0: [205.0, 195.0, 200.0],
    }
    episodes = [
        EpisodeResult(t, e, r, min(r, 1.0), 100, False, [1, 0])
        for t, rs in returns.items()
        for e, r in enumerate(rs)
    ]
    sweep = summarise(
        episodes,
        game="Seaquest",
        reward_units="raw",
        data_return_range=None,
        sample=True,
        temperature=1.0,
    )
    result = extrapolation_gain(sweep, reference, "the data's best return")
    assert result.above == [800.0, 1600.0] and result.gain == pytest.approx(90.0)
    assert result.interval[0] > 0
    entry = gain_entry(SimpleNamespace(gains={"data_max": result}, sweep=sweep), "data_max")
    assert entry["achieved_above"] == pytest.approx(200.0)
    # Seeds are the units: 3 paired differences (102.5, 92.5, 75), not 6 pooled episodes.
    assert result.episodes == 3 and list(result.achieved) == pytest.approx([202.5, 202.5, 195.0])
    assert verdict in extrapolation_sentence(entry, "raw")
    with pytest.raises(ValueError, match="not a target of the sweep"):
        extrapolation_gain(sweep, 500.0, "")


def test_an_rtg_that_moves_nothing_is_reported_as_no_effect(contexts) -> None:
    model = make_model()
    with torch.no_grad():  # the RTG embedding ignores the RTG: tanh(0 * rtg + b)
        model.rtg_embed.weight.zero_()
    patching = rtg_patching(model, contexts, LOW, HIGH)
    assert patching.contexts == 0 and patching.skipped == len(contexts)
    assert patching.carrier_hook(model.cfg) is None
    direction = rtg_direction(model, contexts, LOW, HIGH)
    assert torch.equal(direction.directions, torch.zeros_like(direction.directions))
    effect = steering_effect(model, contexts, direction)
    assert effect.rtg_effect == 0.0 and all(v != v for v in effect.recovered)  # NaN: nothing
    study = SimpleNamespace(
        patching=patching, carrier_hook=None, direction=direction, steering=effect
    )
    headline = {"rtg_carriers": carriers_entry(study), "steering": steering_entry(study)}
    (line,) = mechanism_sentences(headline)
    assert "moves no patched context's policy" in line and "no effect" in line
