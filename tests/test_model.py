"""HookedDecisionTransformer: hooks, causality, TransformerLens cache identities, inputs."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import seeds
import torch

from atari_dt.model import HookedDecisionTransformer, ModelConfig

TINY = ModelConfig(n_actions=18, d_model=32, n_layers=2, n_heads=4, context_len=8, max_timestep=400)


def make_model(cfg: ModelConfig = TINY, seed: int = 0) -> HookedDecisionTransformer:
    torch.manual_seed(seeds.seed(seed))
    model = HookedDecisionTransformer(cfg).eval()
    with torch.no_grad():  # non-zero biases and LayerNorm affines, so no identity hides a bug
        for name, param in model.named_parameters():
            if name.endswith(("b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U", ".b", ".w")):
                param.add_(0.1 * torch.randn_like(param))
    return model


def inputs(windows: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    """``(frames, actions, rtg, timesteps)`` tensors of the real windows."""
    return tuple(torch.from_numpy(windows[k]) for k in ("frames", "actions", "rtg", "timesteps"))


@pytest.fixture(scope="module")
def model() -> HookedDecisionTransformer:
    return make_model()


@pytest.fixture(scope="module")
def run(model, seaquest_windows):
    """Logits and the full cache of the tiny model on the real windows."""
    with torch.no_grad():
        return model.run_with_cache(*inputs(seaquest_windows))


def expected_hook_shapes(cfg: ModelConfig, B: int, T: int) -> dict[str, tuple[int, ...]]:
    P, d, H, e = T * cfg.tokens_per_step, cfg.d_model, cfg.n_heads, cfg.d_head
    shapes = {
        "encoder.hook_conv0": (B * T, 32, 20, 20),
        "encoder.hook_conv1": (B * T, 64, 9, 9),
        "encoder.hook_conv2": (B * T, 64, 7, 7),
        "encoder.hook_out": (B * T, d),
        "hook_rtg_embed": (B, T, d),
        "hook_state_embed": (B, T, d),
        "hook_action_embed": (B, T, d),
        "hook_time_embed": (B, T, d),
        "hook_embed": (B, P, d),
        "hook_pos_embed": (B, P, d),
        "ln_final.hook_scale": (B, P, 1),
        "ln_final.hook_normalized": (B, P, d),
    }
    for layer in range(cfg.n_layers):
        block = f"blocks.{layer}."
        for name in (
            "hook_resid_pre",
            "hook_attn_out",
            "hook_resid_mid",
            "hook_mlp_out",
            "hook_resid_post",
            "ln1.hook_normalized",
            "ln2.hook_normalized",
        ):
            shapes[block + name] = (B, P, d)
        shapes[block + "ln1.hook_scale"] = shapes[block + "ln2.hook_scale"] = (B, P, 1)
        for name in ("q", "k", "v", "z"):
            shapes[f"{block}attn.hook_{name}"] = (B, P, H, e)
        shapes[block + "attn.hook_attn_scores"] = shapes[block + "attn.hook_pattern"] = (B, H, P, P)
        shapes[block + "mlp.hook_pre"] = shapes[block + "mlp.hook_post"] = (B, P, cfg.d_mlp)
    return shapes


def test_every_hook_fires_with_its_documented_shape(model, run, seaquest_windows) -> None:
    logits, cache = run
    B, T = seaquest_windows["actions"].shape
    expected = expected_hook_shapes(model.cfg, B, T)
    assert set(model.hook_dict) == set(expected)
    assert {name: tuple(t.shape) for name, t in cache.items()} == expected
    assert logits.shape == (B, T, model.cfg.n_actions)


def test_hooks_add_no_numerical_change(model, seaquest_windows) -> None:
    args = inputs(seaquest_windows)
    # Hooks at a LayerNorm scale or the attention scores/pattern switch those modules from
    # torch's fused kernels to the explicit form; every other hook leaves the bits alone.
    switching = ("hook_scale", "hook_attn_scores", "hook_pattern")
    not_scale = lambda name: not name.endswith(switching)  # noqa: E731
    with torch.no_grad():
        plain = model(*args)
        with model.hooks(fwd_hooks=[(not_scale, lambda t, hook: t.clone())]):
            hooked = model(*args)
        cached, _ = model.run_with_cache(*args)
    assert torch.equal(plain, hooked)
    torch.testing.assert_close(plain, cached, rtol=0, atol=1e-5)


def test_layer_norm_scale_is_on_the_path(model, seaquest_windows) -> None:
    """Doubling the cached final LayerNorm scale halves the normalised (pre-affine) output."""
    args = inputs(seaquest_windows)
    ln = model.ln_final
    with torch.no_grad():
        _, cache = model.run_with_cache(*args, names_filter="ln_final.hook_normalized")
        with model.hooks(fwd_hooks=[("ln_final.hook_scale", lambda t, hook: 2 * t)]):
            _, doubled = model.run_with_cache(*args, names_filter="ln_final.hook_normalized")
    plain = (cache["ln_final.hook_normalized"] - ln.b) / ln.w
    halved = (doubled["ln_final.hook_normalized"] - ln.b) / ln.w
    torch.testing.assert_close(halved, plain / 2, rtol=1e-4, atol=1e-5)


def test_a_hook_edit_changes_the_output(model, seaquest_windows) -> None:
    """Hooks are on the path: zeroing the state embeddings changes the logits."""
    args = inputs(seaquest_windows)
    with torch.no_grad():
        plain = model(*args)
        with model.hooks(fwd_hooks=[("hook_state_embed", lambda t, hook: torch.zeros_like(t))]):
            edited = model(*args)
    assert not torch.allclose(plain, edited)


@pytest.fixture(scope="module")
def original_model() -> HookedDecisionTransformer:
    model = make_model(dataclasses.replace(TINY, positional="original"))
    with torch.no_grad():  # the original zero-initialises positions: make them matter
        model.pos_embed.normal_()
        model.global_pos_embed.normal_()
    return model


CAUSALITY_CASES = [
    (positional, what, step)
    for positional in ("timestep", "original")
    for what in ("frames", "actions", "rtg", "timesteps")
    for step in (0, 3, 7)
    # the original scheme reads only the window's first timestep
    if not (positional == "original" and what == "timesteps" and step > 0)
]


@pytest.mark.parametrize(("positional", "what", "step"), CAUSALITY_CASES)
def test_changing_step_t_changes_no_earlier_logit(
    model, original_model, seaquest_windows, positional, what, step
) -> None:
    model = original_model if positional == "original" else model
    args = list(inputs(seaquest_windows))
    index = ["frames", "actions", "rtg", "timesteps"].index(what)
    changed = args[index].clone()
    if what == "frames":
        changed[:, step] = 255 - changed[:, step]
    elif what == "rtg":
        changed[:, step] += 7.0
    else:
        changed[:, step] = (changed[:, step] + 5) % (18 if what == "actions" else 400)
    with torch.no_grad():
        before = model(*args)
        args[index] = changed
        after = model(*args)
    assert torch.equal(before[:, :step], after[:, :step])
    # The action of step t is read after s_t: it first affects the logit of step t + 1.
    first_affected = step + 1 if what == "actions" else step
    if first_affected < before.shape[1]:
        assert not torch.allclose(before[:, first_affected], after[:, first_affected])


def test_split_encoder_equals_full_forward(model, seaquest_windows) -> None:
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    with torch.no_grad():
        full = model(frames, actions, rtg, timesteps)
        states = model.embed_states(frames)
        split = model.forward_from_state_embeddings(states, actions, rtg, timesteps)
    assert states.shape == (*actions.shape, model.cfg.d_model)
    assert torch.equal(full, split)


def test_float_frames_on_the_pixel_scale_equal_uint8(model, seaquest_windows) -> None:
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    with torch.no_grad():
        as_uint8 = model(frames, actions, rtg, timesteps)
        as_float = model(frames.float(), actions, rtg, timesteps)
    torch.testing.assert_close(as_uint8, as_float, rtol=0, atol=1e-6)


def test_residual_decomposition_sums_to_the_final_residual(model, run) -> None:
    _, cache = run
    final = cache["blocks.1.hook_resid_post"]
    components, labels = cache.decompose_resid(return_labels=True)
    assert labels == ["embed", "pos_embed", "0_attn_out", "0_mlp_out", "1_attn_out", "1_mlp_out"]
    torch.testing.assert_close(components.sum(0), final, rtol=0, atol=1e-5)
    accumulated, acc_labels = cache.accumulated_resid(return_labels=True)
    assert acc_labels == ["0_pre", "1_pre", "final_post"]
    assert torch.equal(accumulated[-1], final)
    torch.testing.assert_close(accumulated[0], cache["hook_embed"] + cache["hook_pos_embed"])
    # The logit lens of the final layer is the model's own final LayerNorm output.
    lens = cache.accumulated_resid(apply_ln=True)
    torch.testing.assert_close(lens[-1], cache["ln_final.hook_normalized"], rtol=0, atol=1e-5)


def test_head_results_sum_to_attention_output(model, run) -> None:
    _, cache = run
    heads, labels = cache.stack_head_results(layer=-1, return_labels=True)
    assert labels == [f"L{layer}H{h}" for layer in range(2) for h in range(4)]
    for layer in range(2):
        block = heads[4 * layer : 4 * (layer + 1)].sum(0) + model.blocks[layer].attn.b_O
        torch.testing.assert_close(block, cache[f"blocks.{layer}.hook_attn_out"], rtol=0, atol=1e-5)


def test_cache_without_batch_dim(model, seaquest_windows) -> None:
    one = [t[:1] for t in inputs(seaquest_windows)]
    with torch.no_grad():
        logits, cache = model.run_with_cache(*one, remove_batch_dim=True)
    assert logits.shape == (1, 8, 18)
    assert cache["hook_embed"].shape == (24, 32) and not cache.has_batch_dim
    components = cache.decompose_resid(layer=1)
    torch.testing.assert_close(components.sum(0), cache["blocks.1.hook_resid_pre"])


def test_names_filter(model, seaquest_windows) -> None:
    with torch.no_grad():
        _, cache = model.run_with_cache(
            *inputs(seaquest_windows), names_filter=lambda name: name.endswith("hook_pattern")
        )
    assert sorted(cache.keys()) == ["blocks.0.attn.hook_pattern", "blocks.1.attn.hook_pattern"]
    pattern = cache["blocks.0.attn.hook_pattern"]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(pattern.shape[:-1]))
    assert pattern.triu(diagonal=1).abs().max() == 0  # causal


def direct_logit_components(model, cache) -> tuple[torch.Tensor, list[str]]:
    """Every additive piece of the final residual: embeddings, each head, each layer's b_O,
    each MLP; ``[n_components, B, P, d_model]``."""
    parts, labels = [cache["hook_embed"], cache["hook_pos_embed"]], ["embed", "pos_embed"]
    heads, head_labels = cache.stack_head_results(layer=-1, return_labels=True)
    parts.extend(heads)
    labels += head_labels
    for layer in range(model.cfg.n_layers):
        parts.append(model.blocks[layer].attn.b_O.expand_as(cache["hook_embed"]))
        parts.append(cache[f"blocks.{layer}.hook_mlp_out"])
        labels += [f"{layer}_b_O", f"{layer}_mlp_out"]
    return torch.stack(parts), labels


def test_per_head_direct_logit_attribution_sums_to_the_logit(model, run) -> None:
    logits, cache = run
    components, _ = direct_logit_components(model, cache)
    scaled = cache.apply_ln_to_stack(components, layer=-1)  # centred, / cached ln_final scale
    state = slice(model.cfg.state_token_offset, None, model.cfg.tokens_per_step)
    per_component = (scaled[:, :, state] * model.ln_final.w) @ model.W_U  # [n, B, T, A]
    bias = model.ln_final.b @ model.W_U + model.b_U
    torch.testing.assert_close(per_component.sum(0) + bias, logits, rtol=0, atol=1e-4)
    assert per_component.abs().amax(dim=(1, 2, 3)).min() > 0  # every component contributes


def test_left_padding_is_invisible(seaquest_windows) -> None:
    """With the timestep scheme, a window padded on the left gives the same logits at its
    real steps as the short window alone (padding tokens are hidden from attention)."""
    model = make_model()
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    real = 5
    short = [t[:, -real:] for t in (frames, actions, rtg, timesteps)]
    mask = torch.arange(8).expand(6, 8) >= 8 - real
    with torch.no_grad():
        expected = model(*short)
        padded = model(frames, actions, rtg, timesteps, mask=mask)
        pad = ~mask
        junk = model(
            torch.where(pad[..., None, None, None], 255 - frames, frames),
            torch.where(pad, (actions + 1) % 18, actions),
            torch.where(pad, rtg + 3, rtg),
            torch.where(pad, 399, timesteps),
            mask=mask,
        )
    torch.testing.assert_close(padded[:, -real:], expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(junk[:, -real:], expected, rtol=0, atol=1e-5)


def test_left_padding_with_original_positions(original_model, seaquest_windows) -> None:
    """Positional ``original``: real tokens of a padded window keep the positions they have in
    the unpadded short window (as the original feeds early-episode windows)."""
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    real = 3
    short = [t[:, -real:] for t in (frames, actions, rtg, timesteps)]
    mask = _steps_from(8 - real)
    with torch.no_grad():
        expected = original_model(*short)
        padded = original_model(frames, actions, rtg, timesteps, mask=mask)
    torch.testing.assert_close(padded[:, -real:], expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_other_float_dtypes_follow_the_model(model, seaquest_windows, dtype) -> None:
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    with torch.no_grad():
        expected = model(frames, actions, rtg, timesteps)
        other = model(frames.to(dtype), actions, rtg.to(dtype), timesteps)
        double = make_model().double()(frames, actions, rtg, timesteps)
    torch.testing.assert_close(other, expected, rtol=0, atol=1e-5)
    assert double.dtype == torch.float64
    torch.testing.assert_close(double.float(), expected, rtol=0, atol=1e-4)


def test_misspelt_options_are_refused() -> None:
    with pytest.raises(ValueError, match=r"positional must be one of \['timestep', 'original'\]"):
        dataclasses.replace(TINY, positional="timesteps")
    with pytest.raises(ValueError, match="rtg_embedding must be one of"):
        dataclasses.replace(TINY, rtg_embedding="Tanh")


def test_rtg_scale_divides_the_rtg(seaquest_windows) -> None:
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    unit, scaled = make_model(), make_model(dataclasses.replace(TINY, rtg_scale=20.0))
    with torch.no_grad():
        torch.testing.assert_close(
            unit(frames, actions, rtg / 20.0, timesteps), scaled(frames, actions, rtg, timesteps)
        )


@pytest.mark.parametrize("rtg_embedding", ["tanh", "linear"])
def test_rtg_embedding(seaquest_windows, rtg_embedding) -> None:
    model = make_model(dataclasses.replace(TINY, rtg_embedding=rtg_embedding))
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    huge = torch.full_like(rtg, 1e4)
    with torch.no_grad():
        _, cache = model.run_with_cache(frames, actions, huge, timesteps)
    embed = cache["hook_rtg_embed"]
    raw = model.rtg_embed(huge[..., None])
    expected = torch.tanh(raw) if rtg_embedding == "tanh" else raw
    torch.testing.assert_close(embed, expected)
    assert (embed.abs().max() <= 1.0) == (rtg_embedding == "tanh")


def test_behaviour_cloning_has_no_rtg_tokens(seaquest_windows) -> None:
    cfg = dataclasses.replace(TINY, behaviour_cloning=True)
    model = make_model(cfg)
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    with torch.no_grad():
        logits, cache = model.run_with_cache(frames, actions, None, timesteps)
        with_rtg = model(frames, actions, rtg, timesteps)
    assert "hook_rtg_embed" not in cache and not hasattr(model, "rtg_embed")
    assert cache["hook_embed"].shape[1] == 2 * 8 == cfg.n_ctx
    torch.testing.assert_close(logits, with_rtg, rtol=0, atol=1e-6)  # rtg is ignored


def test_return_head(seaquest_windows) -> None:
    model = make_model(dataclasses.replace(TINY, return_head=True))
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    with torch.no_grad():
        final = model.transformer(model.embed_states(frames), actions, rtg, timesteps)
        predictions = model.return_predictions(final)
    assert predictions.shape == actions.shape and torch.isfinite(predictions).all()
    with pytest.raises(ValueError, match="no return head"):
        make_model().return_predictions(final)


def test_impala_encoder_in_the_model(seaquest_windows) -> None:
    model = make_model(dataclasses.replace(TINY, encoder="impala"))
    with torch.no_grad():
        logits, cache = model.run_with_cache(*inputs(seaquest_windows))
    assert logits.shape == (6, 8, 18)
    assert cache["encoder.hook_conv2"].shape == (48, 32, 11, 11)


def _steps_from(first: int) -> torch.Tensor:
    return torch.arange(8).expand(6, 8) >= first


# argument, how to spoil it, the error, and what its message must say
BAD_INPUTS = {
    "frame channels": (
        "frames",
        lambda t: t[:, :, :3],
        ValueError,
        r"frames must have shape \[B, T, 4, 84, 84\]",
    ),
    "frame dtype": ("frames", lambda t: t.int(), TypeError, "frames must be uint8"),
    "frames as numpy": ("frames", lambda t: t.numpy(), TypeError, "must be a torch.Tensor"),
    "action steps": (
        "actions",
        lambda t: t[:, :5],
        ValueError,
        r"actions must have shape \[B, T\] = \[6, 8\]",
    ),
    "action dtype": ("actions", lambda t: t.float(), TypeError, "must be an integer tensor"),
    "action range": (
        "actions",
        lambda t: t + 18,
        ValueError,
        r"actions must be in \[0, n_actions=18\)",
    ),
    "timestep range": (
        "timesteps",
        lambda t: t + 400,
        ValueError,
        r"timesteps must be in \[0, max_timestep=400\)",
    ),
    "negative timestep": ("timesteps", lambda t: t - 1000, ValueError, "timesteps must be in"),
    "rtg dtype": ("rtg", lambda t: t.long(), TypeError, "rtg must be a float tensor"),
    "rtg missing": ("rtg", lambda t: None, TypeError, "rtg must be a torch.Tensor"),
    "mask dtype": ("mask", lambda t: torch.ones(6, 8), TypeError, "mask must be a bool tensor"),
    "mask right padding": (
        "mask",
        lambda t: ~_steps_from(4),
        ValueError,
        "last step of every window must be real",
    ),
    "mask hole": (
        "mask",
        lambda t: torch.arange(8).expand(6, 8) != 5,
        ValueError,
        "left padding only",
    ),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_inputs_error_clearly(model, seaquest_windows, case) -> None:
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    args = {"frames": frames, "actions": actions, "rtg": rtg, "timesteps": timesteps}
    args["mask"] = _steps_from(0)
    name, spoil, error, match = BAD_INPUTS[case]
    args[name] = spoil(args[name])
    with pytest.raises(error, match=match):
        model(**args)


def test_window_longer_than_the_context_errors(model) -> None:
    frames = torch.zeros(1, 9, 4, 84, 84, dtype=torch.uint8)
    with pytest.raises(ValueError, match="9 steps; the model takes 1 to context_len=8"):
        model.embed_states(frames)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"n_heads": 5}, r"n_heads \(5\) must divide d_model \(32\); e.g. n_heads=4"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"rtg_scale": 0.0}, "rtg_scale must be > 0"),
        ({"n_layers": 0}, "n_layers must be >= 1"),
        ({"return_head": True, "behaviour_cloning": True}, "return_head needs RTG tokens"),
    ],
)
def test_bad_config_errors_clearly(changes, match) -> None:
    with pytest.raises(ValueError, match=match):
        dataclasses.replace(TINY, **changes)


def test_cfg_serves_transformer_lens(model) -> None:
    cfg = model.cfg
    assert (cfg.d_model, cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.n_ctx) == (32, 2, 4, 8, 24)
    assert (cfg.d_mlp, cfg.normalization_type, cfg.attn_only) == (128, "LN", False)
    attn = model.blocks[0].attn
    assert attn.W_Q.shape == (4, 32, 8) and attn.W_O.shape == (4, 8, 32)
    assert model.W_U.shape == (32, 18)
