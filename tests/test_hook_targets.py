"""Hook targets: a scalar read at a transformer hook, explained by pixels, tokens, RTG values
and encoder channels as a logit is. On a 2-layer model trained on the real Seaquest store:
completeness, fast == full, the value read from a cache by hand, the tie to direct logit
attribution, and every error."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import yaml
from commands import atari_dt
from seeds import seed
from test_attribution import assert_same_attributions
from test_model import TINY, make_model

from atari_dt.analysis.dla import direct_logit_attribution
from atari_dt.attribution.baselines import make_baseline
from atari_dt.attribution.channels import attribute_channels
from atari_dt.attribution.core import (
    DELTA_TOLERANCE,
    FullForward,
    Target,
    describe_metric,
    measure,
)
from atari_dt.attribution.hook_targets import HookTarget, head_logit_target, residual_target
from atari_dt.attribution.pixels import attribute_pixels
from atari_dt.attribution.tokens import attribute_tokens
from atari_dt.errors import UserError
from atari_dt.run import load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A DT of 2 layers x 2 heads (d 32, T 4) trained for 150 steps on real expert-to-random
    Seaquest play (as test_attribution's, with a second layer), and a window of it."""
    tmp = tmp_path_factory.mktemp("hook_targets")
    store, config = tmp / "seaquest.h5", tmp / "train.yaml"
    collect = ROOT / "configs/collect/seaquest.yaml"
    assert (
        atari_dt(
            f"collect --config {collect} --steps 3000 --max-episode-steps 500 --workers 1 "
            f"--seed {seed(0)} --out {store}"
        )
        == 0
    )
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(store), "reward_units": "raw", "context_len": 4},
                "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_timestep": 512},
                "train": {
                    "max_steps": 150,
                    "batch_size": 16,
                    "lr": 1e-3,  # as test_attribution's: 2e-3 saturated the encoder's tanh
                    "warmup_steps": 10,
                    "checkpoint_every": 150,
                    "log_every": 50,
                    "seed": seed(0),
                },
            }
        )
    )
    assert atari_dt(f"train {config} --out {tmp / 'run'} --no-progress") == 0
    with load_run(tmp / "run") as opened:
        yield opened.model, opened.contexts(episode=0, step=120)


def cached(model, window, frames: torch.Tensor | None = None):
    """``run_with_cache`` of the window (with other float ``frames``, when given)."""
    frames = window.frames if frames is None else frames
    with torch.no_grad():
        return model.run_with_cache(frames, *window.inputs()[1:])[1]


def widest_head(model, window, baseline: str = "black") -> HookTarget:
    """The ``head_logit_target`` that replacing the last stack by ``baseline`` moves most:
    over the heads, the action whose direct-path logit rises most against the one that falls
    most. So its change is as large as any head's direct path makes, whatever training learnt."""
    frames = window.frames.float()
    replaced = frames.clone()
    replaced[:, -1] = make_baseline(baseline, frames[:, -1])
    pos = model.cfg.token_index(-1, window.length)
    own, other = cached(model, window), cached(model, window, replaced)
    best, choice = -1.0, None
    for layer in range(model.cfg.n_layers):
        name = f"blocks.{layer}.attn.hook_z"
        z = own[name][0, pos] - other[name][0, pos]  # [H, d_head]
        moved = torch.einsum("he,hed->hd", z, model.blocks[layer].attn.W_O) * model.ln_final.w
        by_action = (moved - moved.mean(-1, keepdim=True)) @ model.W_U  # [H, A]
        for head, row in enumerate(by_action.detach()):
            if float(row.max() - row.min()) > best:
                best = float(row.max() - row.min())
                choice = (layer, head, int(row.argmax()), int(row.argmin()))
    return head_logit_target(model, *choice)


def moved_residual(model, window, layer: int = 0) -> HookTarget:
    """``residual_target`` on the unit direction the black last stack moves ``layer``'s
    ``resid_post`` at the last state token: its change is that move's norm, not tiny."""
    frames = window.frames.float()
    black = frames.clone()
    black[:, -1] = 0
    name, pos = f"blocks.{layer}.hook_resid_post", model.cfg.token_index(-1, window.length)
    moved = cached(model, window)[name][0, pos] - cached(model, window, black)[name][0, pos]
    return residual_target(layer, moved / moved.norm(), bias=0.5, label="moved")


def assert_complete(result, n_attributed: float) -> None:
    """IG's completeness: the attributions sum to the change plus Captum's delta (to 1e-4
    relative: float32 sums over 4 x 84 x 84 pixels), and the delta is within the tolerance
    below which ``integrated_gradients`` does not warn."""
    change = result.target_value - result.baseline_value
    assert n_attributed == pytest.approx(change + result.convergence_delta, rel=1e-4, abs=1e-5)
    assert abs(result.convergence_delta) < DELTA_TOLERANCE * abs(change)


@pytest.mark.parametrize("kind", ["head", "residual"])
def test_pixel_attribution_of_a_hook_target_is_complete(trained, kind) -> None:
    model, window = trained
    target = widest_head(model, window) if kind == "head" else moved_residual(model, window)
    result = attribute_pixels(model, window, target, n_steps=64)
    change = result.target_value - result.baseline_value
    # The widest head's change was 0.005-0.03 on seeds 0-3, the residual's (its move's norm)
    # 0.3-0.8: far above float32's rounding of such values (~1e-9), so the relative bound on
    # the delta below means something.
    assert abs(change) > 1e-3
    assert_complete(result, result.attribution_sum)
    assert result.target is target and result.steps == [window.length - 1]


@pytest.mark.parametrize("kind", ["head", "residual"])
def test_token_attribution_of_a_hook_target_is_complete(trained, kind) -> None:
    model, window = trained
    target = widest_head(model, window) if kind == "head" else moved_residual(model, window)
    # 256 points, as test_attribution's token test: from all-zero embeddings the path crosses
    # the first LayerNorm's sharp region near 0.
    tokens = attribute_tokens(model, window, target, n_steps=256)
    assert abs(tokens.target_value - tokens.baseline_value) > 1e-3
    assert_complete(tokens, float(tokens.by_token.sum()))
    with torch.no_grad():  # the RTG values' IG runs from RTG 0: complete for that change too
        frames = window.frames.float()
        at_zero = FullForward(model, window.with_rtg(0.0), target)(frames)
        change = float(FullForward(model, window, target)(frames) - at_zero)
    assert float(tokens.rtg_inputs.sum()) == pytest.approx(
        change + tokens.rtg_delta, rel=1e-4, abs=1e-5
    )
    assert abs(tokens.rtg_delta) < DELTA_TOLERANCE * max(abs(change), 1e-3)


def test_fast_path_equals_the_full_model(trained) -> None:
    model, window = trained
    target = widest_head(model, window)
    fast = attribute_pixels(model, window, target, steps=[1, 3], n_steps=32)
    full = attribute_pixels(model, window, target, steps=[1, 3], n_steps=32, fast=False)
    assert_same_attributions(fast, full)
    assert fast.target_value == pytest.approx(full.target_value, rel=1e-5, abs=1e-7)
    # Read at step 1's action token, nothing of step 3 reaches it (causal): zero there.
    early = dataclasses.replace(moved_residual(model, window), step=1, token="action")
    fast = attribute_pixels(model, window, early, steps=[1, 3], n_steps=32)
    full = attribute_pixels(model, window, early, steps=[1, 3], n_steps=32, fast=False)
    assert fast.attributions[1].abs().max() == 0 and fast.attributions[0].abs().max() > 0
    assert_same_attributions(fast, full)


def test_encoder_channels_of_a_hook_target(trained) -> None:
    """Layer IG at a conv layer on the same path as the pixels' IG: complete for the same
    change."""
    model, window = trained
    target = widest_head(model, window)
    channels = attribute_channels(model, window, target, layer=1, n_steps=64)
    pixels = attribute_pixels(model, window, target, n_steps=64)
    change = pixels.target_value - pixels.baseline_value
    assert float(channels.by_location.sum()) == pytest.approx(
        change + channels.convergence_delta, rel=1e-4, abs=1e-5
    )
    assert abs(channels.convergence_delta) < DELTA_TOLERANCE * abs(change)


@pytest.mark.parametrize(
    ("hook", "token", "head"),
    [
        ("blocks.1.attn.hook_z", "state", 1),
        ("blocks.0.attn.hook_z", "rtg", None),  # direction [n_heads, d_head]
        ("blocks.0.hook_resid_mid", "action", None),
        ("blocks.1.mlp.hook_post", "state", None),
        ("ln_final.hook_normalized", "rtg", None),
    ],
)
def test_value_is_the_cached_activation_projected(trained, hook, token, head) -> None:
    model, window = trained
    probe = HookTarget(hook, torch.zeros(1), head=head)
    shape = probe.read_shape(model.cfg)
    direction = torch.randn(shape, generator=torch.Generator().manual_seed(seed(3)))
    target = HookTarget(hook, direction, step=2, token=token, head=head, bias=0.25)
    with torch.no_grad():
        value = FullForward(model, window, target)(window.frames.float())
    at = cached(model, window)[hook][0, model.cfg.token_index(2, window.length, token)]
    if head is not None:
        at = at[head] @ model.blocks[1].attn.W_O[head].detach()
    expected = float((at * direction).sum()) + 0.25
    assert value.shape == (1,) and float(value[0]) == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("other_action", [None, 0])
def test_head_logit_target_over_the_final_scale_is_direct_logit_attribution(
    trained, other_action
) -> None:
    """By construction: the head's direct path, divided by the final LayerNorm's cached scale
    at the token, is DLA's entry for that head, for every head."""
    model, window = trained
    cache = cached(model, window)
    pos = model.cfg.token_index(-1, window.length)
    scale = float(cache["ln_final.hook_scale"][0, pos, 0])
    kind = "logit" if other_action is None else "logit_diff"
    dla = direct_logit_attribution(model, cache, Target(5, kind=kind, other_action=other_action))
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            target = head_logit_target(model, layer, head, 5, other_action)
            with torch.no_grad():
                value = float(FullForward(model, window, target)(window.frames.float())[0])
            expected = float(dla[f"L{layer}H{head}"][0])
            assert value / scale == pytest.approx(expected, rel=1e-4, abs=1e-7), target.label


@pytest.mark.filterwarnings("ignore:integrated gradients did not converge")  # 2 points: speed
def test_description_and_labels(trained) -> None:
    model, window = trained
    head = head_logit_target(model, 1, 0, 3, 0, step=-2)
    assert head.label == "L1H0 -> logit 3-0" and head.hook == "blocks.1.attn.hook_z"
    assert head_logit_target(model, 0, 1, 2).label == "L0H1 -> logit 2"
    described = json.loads(json.dumps(describe_metric(head)))
    assert described == {
        "hook": "blocks.1.attn.hook_z",
        "step": -2,
        "token": "state",
        "head": 0,
        "bias": 0.0,
        "label": "L1H0 -> logit 3-0",
        "direction_norm": pytest.approx(float(head.direction.norm())),
    }
    residual = residual_target(1, [1.0] * 32, token="rtg", where="resid_pre")
    assert residual.hook == "blocks.1.hook_resid_pre" and residual.label == "1_resid_pre"
    assert residual.direction.dtype == torch.float32 and not residual.direction.requires_grad
    assert head.direction.requires_grad is False
    # The default step of a pixel attribution is the target's.
    assert attribute_pixels(model, window, head, n_steps=2).steps == [window.length - 2]


def test_measure_fails_when_the_forward_fires_no_hooks(trained) -> None:
    model, _ = trained
    target = residual_target(0, torch.ones(32))
    with pytest.raises(RuntimeError, match=r"never reached hook 'blocks\.0\.hook_resid_post'"):
        measure(model, target, lambda: torch.zeros(1, 4, 18))
    with pytest.raises(UserError, match=r"reads hook 'blocks\.0\.hook_resid_post', not the logits"):
        target(torch.zeros(1, 4, 18))


def test_bad_hook_targets_error_clearly(trained) -> None:
    model, window = trained
    d = torch.ones(32)
    refused = {
        "blocks.7.hook_resid_post": r"no hook 'blocks.7.hook_resid_post' \(blocks 0..1\); accepted",
        "encoder.hook_conv1": r"'encoder.hook_conv1' cannot be a hook target: the encoder's",
        "hook_state_embed": r"'hook_state_embed' cannot be a hook target: .* one row per step",
        "blocks.0.attn.hook_pattern": r"cannot be a hook target: it is \[B, H, P, P\]",
    }
    for hook, message in refused.items():
        with pytest.raises(UserError, match=message):
            attribute_pixels(model, window, HookTarget(hook, d))
    wrong = {
        HookTarget("blocks.0.hook_resid_post", torch.ones(16)): (
            r"direction for blocks.0.hook_resid_post must be \[32\], got \[16\]"
        ),
        HookTarget("blocks.0.attn.hook_z", d): r"hook_z must be \[2, 16\], got \[32\]",
        HookTarget("blocks.0.attn.hook_z", d, head=2): r"head 2 is out of range: .* 2 heads",
        HookTarget("blocks.1.mlp.hook_pre", d): r"must be \[128\], got \[32\]",
    }
    for target, message in wrong.items():
        with pytest.raises(UserError, match=message):
            attribute_tokens(model, window, target)
    with pytest.raises(UserError, match="step 9 is outside the window of 4 steps"):
        attribute_channels(model, window, residual_target(0, d, step=9))
    bc = make_model(dataclasses.replace(TINY, behaviour_cloning=True))
    with pytest.raises(UserError, match="token 'rtg': a behaviour-cloning model has no RTG"):
        attribute_pixels(bc, window, residual_target(0, d, token="rtg"), fast=False)


def test_bad_constructions_error_clearly(trained) -> None:
    model, _ = trained
    d = torch.ones(32)
    for kwargs, message in (
        ({"token": "reward"}, "token must be one of rtg, state, action, got 'reward'"),
        ({"head": 0}, r"head=0 reads a head's output: it needs hook blocks.\{l\}.attn.hook_z"),
        ({"direction": torch.ones(32, dtype=torch.int64)}, "direction must be a float vector"),
        ({"direction": torch.ones(2, 2, 2)}, r"got torch.float32 of shape \[2, 2, 2\]"),
    ):
        with pytest.raises(UserError, match=message):
            HookTarget(**{"hook": "blocks.0.hook_resid_post", "direction": d, **kwargs})
    for args, message in (
        ((2, 0, 1), r"layer 2 is out of range: the model has 2 layers \(0..1\)"),
        ((0, 3, 1), r"head 3 is out of range: the model has 2 heads"),
        ((0, 0, 18), r"action 18 is out of range: the model has 18 actions \(0..17\)"),
        ((0, 0, 1, -1), r"other_action -1 is out of range"),
        ((0, 0, 1, 1), r"other_action must differ from action \(1\)"),
    ):
        with pytest.raises(UserError, match=message):
            head_logit_target(model, *args)
    with pytest.raises(UserError, match="where must be one of resid_pre, resid_mid, resid_post"):
        residual_target(0, d, where="post")
    with pytest.raises(UserError, match="layer must be >= 0, got -1"):
        residual_target(-1, d)
