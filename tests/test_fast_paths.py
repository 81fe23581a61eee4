"""The speed paths of the model: numpy-drawn dropout masks, the explicit attention with an
additive mask, bf16 pixels under autocast and the agent's last-state-token logits. Each must
compute what the plain path computes (to float rounding) or draw the same distribution."""

from __future__ import annotations

import dataclasses
import math
import warnings

import pytest
import torch
from test_model import TINY, inputs, make_model

from atari_dt.compute import torch_threads
from atari_dt.encoders.common import to_unit_range
from atari_dt.hooks import any_hooked
from atari_dt.model.components import QUERY_BLOCKS, Attention, Dropout
from atari_dt.model.last_step import last_state_logits


@pytest.fixture(params=["native", "numpy"])
def mask_source(request, monkeypatch) -> str:
    """Each Dropout test runs on both mask sources: the C kernel (where it is built) and the
    numpy fallback."""
    from atari_dt.model import native_dropout

    if request.param == "numpy":
        monkeypatch.setattr(native_dropout, "library", lambda: None)
    elif native_dropout.library() is None:
        pytest.skip("no C compiler: the kernel is not built")
    return request.param


def test_dropout_keeps_each_unit_with_probability_one_minus_p(mask_source) -> None:
    p, n = 0.1, 10**6
    layer = Dropout(p).train()
    torch.manual_seed(0)
    out = layer(torch.ones(n))
    kept = out != 0
    # The kept count is Binomial(n, 1 - p): 6 standard deviations (0.0018 here) are exceeded
    # with probability ~2e-9 by a correct sampler.
    sd = math.sqrt(p * (1 - p) / n)
    assert abs(float(kept.float().mean()) - (1 - p)) < 6 * sd
    torch.testing.assert_close(out[kept], torch.full_like(out[kept], 1 / (1 - p)))
    # Neighbouring elements are independent: both of a pair are kept with (1 - p)^2 (the
    # count of kept pairs is Binomial(n / 2, (1 - p)^2); 6 sd again).
    both = (kept[0::2] & kept[1::2]).float()
    q = (1 - p) ** 2
    assert abs(float(both.mean()) - q) < 6 * math.sqrt(q * (1 - q) / both.numel())


def test_dropout_masks_follow_torch_manual_seed(mask_source) -> None:
    layer = Dropout(0.5).train()
    x = torch.randn(4, 1000)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    again = layer(x)
    other = layer(x)  # the generator has moved on: a new mask
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_dropout_keeps_nan_where_it_drops(mask_source) -> None:
    """A dropped NaN stays NaN, as in torch (``x * 0``): dropout must not hide a divergence."""
    x = torch.full((4000,), math.nan)
    assert torch.isnan(Dropout(0.5).train()(x)).all()


def test_dropout_backward_uses_the_forward_mask(mask_source) -> None:
    layer = Dropout(0.3).train()
    x = (torch.rand(2000) + 0.5).requires_grad_()  # no zero inputs: a zero output means dropped
    out = layer(x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, (out != 0).float() / 0.7)


@pytest.mark.parametrize(("p", "training"), [(0.0, True), (1.0, True), (0.4, False)])
def test_dropout_edge_cases_are_torch_dropout(p: float, training: bool) -> None:
    x = torch.randn(50)
    out = Dropout(p).train(training)(x)
    expected = torch.zeros_like(x) if p == 1.0 and training else x
    assert torch.equal(out, expected)


def test_unit_range_under_autocast_is_bf16_rounded_once() -> None:
    """uint8 pixels go straight to bf16 under autocast; every 0-255 value is exact in bf16, so
    the result is the correctly rounded ``v / 255`` (the float64 quotient rounded to bf16)."""
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 4, 8, 8)
    with torch.autocast("cpu", torch.bfloat16):
        scaled = to_unit_range(pixels)
    assert scaled.dtype == torch.bfloat16
    assert scaled.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(scaled, (pixels.double() / 255).to(torch.bfloat16))
    assert to_unit_range(pixels).dtype == torch.float32  # no autocast: the weights' dtype


def test_in_place_relu_leaves_a_hooked_conv_output_alone(seaquest_windows) -> None:
    """The encoder's ReLUs act in place only while no module hook can hold the conv output:
    a forward hook on ``conv0`` (as Captum's layer methods attach) still sees the raw conv
    output, negative entries included, and the encoder's output does not change."""
    model = make_model().train()
    frames = inputs(seaquest_windows)[0][:2].flatten(0, 1)  # [16, 4, 84, 84]
    encoder = model.encoder
    torch.manual_seed(0)
    plain = encoder(frames)
    seen = []
    handle = encoder.conv0.register_forward_hook(lambda m, i, out: seen.append(out))
    try:
        torch.manual_seed(0)
        hooked = encoder(frames)
    finally:
        handle.remove()
    assert (seen[0] < 0).any()  # not rectified in place behind the hook's back
    assert torch.equal(hooked, plain)
    (plain.sum()).backward()  # the in-place path's backward runs
    assert encoder.conv0.weight.grad.abs().sum() > 0


def _padded(seaquest_windows) -> tuple[torch.Tensor, ...]:
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    mask = torch.ones(actions.shape, dtype=torch.bool)
    mask[0, :3] = False  # one left-padded window
    mask[2, :7] = False  # one window of a single step
    return frames, actions, rtg, timesteps, mask


def test_explicit_attention_equals_the_fused_kernel_with_padding(seaquest_windows) -> None:
    """Hooking the pattern forces the explicit path (additive -inf mask); the fused kernel runs
    otherwise. Same maths, so they agree to float32 rounding of O(1) logits."""
    model = make_model()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    with torch.no_grad():
        fused = model(frames, actions, rtg, timesteps, mask=mask)
        hooks = [(f"blocks.{i}.attn.hook_pattern", lambda x, hook: x) for i in range(2)]
        explicit = model.run_with_hooks(frames, actions, rtg, timesteps, mask, fwd_hooks=hooks)
    torch.testing.assert_close(explicit, fused, rtol=0, atol=1e-5)


def test_bf16_attention_pattern_is_a_float32_softmax(seaquest_windows) -> None:
    """Under bf16 autocast the explicit path takes the softmax of the bf16 scores in float32,
    so the cached pattern is float32 and its rows sum to 1 to float32 rounding; the logits
    stay within bf16 error of float32's."""
    model = make_model()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    with torch.no_grad():
        reference = model(frames, actions, rtg, timesteps, mask=mask)
        with torch.autocast("cpu", torch.bfloat16):
            logits, cache = model.run_with_cache(frames, actions, rtg, timesteps, mask)
    pattern = cache["blocks.0.attn.hook_pattern"]
    assert pattern.dtype == torch.float32
    sums = pattern.sum(-1)
    torch.testing.assert_close(sums, torch.ones_like(sums), rtol=0, atol=1e-5)
    # bf16 keeps 8 significant bits (relative error 2^-9 per rounding); logits of O(1) after
    # a few such roundings stay well inside 0.1 of float32's.
    torch.testing.assert_close(logits.float(), reference, rtol=0, atol=0.1)


@pytest.mark.parametrize("attention", ["kernel", "blocked"])
def test_half_precision_attention_trains_with_and_without_autocast(
    seaquest_windows, attention, monkeypatch
) -> None:
    """Training under bf16 autocast (the C kernel in float32, or without it the blocked path
    with a float32 softmax and dropout on a float32 pattern) gives finite float32 gradients;
    a model cast to bf16 without autocast keeps a bf16 softmax, so ``pattern @ v`` sees one
    dtype and its gradients are bf16 and finite."""
    from atari_dt.model import native_attention

    if attention == "blocked":
        monkeypatch.setattr(native_attention, "library", lambda: None)
    elif native_attention.library() is None:
        pytest.skip("no C compiler: the kernel is not built")
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    model = make_model().train()
    with torch.autocast("cpu", torch.bfloat16):
        logits = model(frames, actions, rtg, timesteps, mask=mask)
    logits.float().logsumexp(-1).mean().backward()
    for name, param in model.named_parameters():
        if param.grad is not None:
            assert param.grad.dtype == torch.float32 and torch.isfinite(param.grad).all(), name
    cast = make_model().train().to(torch.bfloat16)
    logits = cast(frames, actions, rtg, timesteps, mask=mask)
    assert logits.dtype == torch.bfloat16
    logits.float().logsumexp(-1).mean().backward()
    grad = cast.blocks[0].attn.W_Q.grad
    assert grad.dtype == torch.bfloat16 and torch.isfinite(grad).all()


def _attention(dropout: float) -> Attention:
    """A paper-size attention layer (8 heads of 16, 90 tokens), random weights."""
    cfg = dataclasses.replace(TINY, d_model=128, n_heads=8, context_len=30, dropout=dropout)
    torch.manual_seed(0)
    return make_model(cfg).blocks[0].attn.train()


@pytest.mark.parametrize("n_tokens", [2, 7, 24, 90])  # blocks of 0-1, 2-3, 8 and 30 queries
def test_blocked_attention_equals_the_explicit_path(n_tokens: int) -> None:
    """Without dropout the causal query blocks compute the explicit path's attention, forward
    and backward, with and without padding keys, to float32 rounding of O(1) values."""
    attn = _attention(dropout=0.0)
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, n_tokens, 8, 16, requires_grad=True) for _ in range(3))
    x = torch.zeros(3, n_tokens, 128)
    key_mask = torch.ones(3, n_tokens, dtype=torch.bool)
    key_mask[1, : n_tokens // 2] = False  # a left-padded window
    weights = torch.randn(3, n_tokens, 8, 16)
    for mask in (None, key_mask):
        allowed = attn._allowed(x, mask)
        results = []
        for blocks in (1, QUERY_BLOCKS):
            z = attn._explicit(q, k, v, allowed, blocks)
            grads = torch.autograd.grad((z * weights).sum(), (q, k, v))
            results.append((z, *grads))
        for explicit, blocked in zip(*results, strict=True):
            torch.testing.assert_close(blocked, explicit, rtol=0, atol=1e-5)
        # Queries at some positions only (as the last layer of ``final_resid_at`` runs them):
        # each block then needs the keys up to its last query's position.
        for positions in (list(range(1, n_tokens, 3)), [n_tokens - 1], [0, n_tokens - 1]):
            some = attn._explicit(q[:, positions], k, v, allowed[:, :, positions], 3, positions)
            torch.testing.assert_close(some, results[0][0][:, positions], rtol=0, atol=1e-5)
            grads = torch.autograd.grad((some * weights[:, positions]).sum(), (q, k, v))
            expected = torch.autograd.grad(
                (attn._explicit(q, k, v, allowed) * weights)[:, positions].sum(), (q, k, v)
            )
            for got, want in zip(grads, expected, strict=True):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_blocked_attention_hides_later_keys_under_dropout() -> None:
    """Under dropout each query still sees no key after it: a huge value at key j (a block's
    first or last key among them) leaves every earlier query's output alone. Values are 1
    elsewhere, so an output is a sum of kept pattern weights scaled by 1 / (1 - p) = 2: at
    most 2 unless key j leaked in."""
    attn = _attention(dropout=0.5)
    torch.manual_seed(2)
    q, k = torch.randn(2, 90, 8, 16), torch.randn(2, 90, 8, 16)
    allowed = attn._allowed(torch.zeros(2, 90, 128), None)
    for j in (1, 29, 30, 59, 60, 89):
        v = torch.ones(2, 90, 8, 16)
        v[:, j] = 1e6
        z = attn._explicit(q, k, v, allowed, QUERY_BLOCKS)
        assert z[:, :j].max() <= 2 + 1e-4
        # Key j is seen from query j on: it is dropped for all 16 (window, head) pairs of
        # even the last query only with probability 2^-16 (and the seed is fixed).
        assert z[:, j:].max() > 1e3


def test_blocked_attention_dropout_keeps_the_expected_output() -> None:
    """With values 1 every output is sum_k pattern_k * mask_k / (1 - p): its mean is 1 and its
    variance at most 1 (sum_k pattern_k^2 <= 1, mask_k / (1 - p) has variance 1 at p = 0.5).
    Over 16 x 8 x 90 = 11,520 independent outputs the mean is within 6 standard deviations,
    6 / sqrt(11,520) = 0.056, of 1 except with probability ~2e-9."""
    attn = _attention(dropout=0.5)
    torch.manual_seed(3)
    q, k = torch.randn(16, 90, 8, 16), torch.randn(16, 90, 8, 16)
    allowed = attn._allowed(torch.zeros(16, 90, 128), None)
    z = attn._explicit(q, k, torch.ones(16, 90, 8, 16), allowed, QUERY_BLOCKS)[..., 0]  # [B, P, H]
    assert abs(float(z.mean()) - 1.0) < 6 / math.sqrt(z.numel())
    assert set(z[:, 0].unique().tolist()) <= {0.0, 2.0}  # the first query: one key, kept or not


def test_explicit_scores_keep_minus_infinity_at_masked_keys(seaquest_windows) -> None:
    model = make_model()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    with torch.no_grad():
        _, cache = model.run_with_cache(frames, actions, rtg, timesteps, mask)
    scores = cache["blocks.0.attn.hook_attn_scores"]  # [B, H, P, P]
    P = scores.shape[-1]
    future = ~torch.ones(P, P, dtype=torch.bool).tril()
    assert torch.isneginf(scores[:, :, future]).all()
    assert torch.isfinite(scores[:, :, ~future][1]).all()  # an unpadded window: all finite
    padding_keys = ~mask[0].repeat_interleave(3)  # window 0's first 3 steps, 9 tokens
    real_queries = ~padding_keys
    hidden = scores[0][:, real_queries][:, :, padding_keys]  # real queries, padding keys
    assert torch.isneginf(hidden).all()


def test_explicit_attention_gradients_equal_the_fused_kernel(seaquest_windows) -> None:
    """Training with dropout off takes the fused kernel; a pattern hook forces the explicit
    path. Their parameter gradients agree to float32 rounding (the same function)."""
    model = make_model(dataclasses.replace(TINY, dropout=0.0)).train()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    hooks = [(f"blocks.{i}.attn.hook_pattern", lambda x, hook: x) for i in range(2)]
    grads = []
    for fwd_hooks in ([], hooks):
        model.zero_grad()
        with model.hooks(fwd_hooks=fwd_hooks):
            model(frames, actions, rtg, timesteps, mask).logsumexp(-1).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6)


CONFIGS = {
    "rtg": TINY,
    "original positions": dataclasses.replace(TINY, positional="original"),
    "behaviour cloning": dataclasses.replace(TINY, behaviour_cloning=True),
    "one layer": dataclasses.replace(TINY, n_layers=1),
    "return head": dataclasses.replace(TINY, return_head=True),
}


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=list(CONFIGS))
def test_last_state_logits_equal_the_full_forward(seaquest_windows, cfg) -> None:
    """The shortcut drops only work its output cannot depend on (causal attention hides the
    last action token from the last state token; the last layer's other queries feed nothing),
    so it equals the full forward's last state logits to float32 rounding."""
    model = make_model(cfg)
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    rtg = None if cfg.behaviour_cloning else rtg
    with torch.no_grad():
        embeddings = model.embed_states(frames)
        full = model.forward_from_state_embeddings(embeddings, actions, rtg, timesteps, mask)
        for window_mask in (mask, None):
            last = last_state_logits(model, embeddings, actions, rtg, timesteps, window_mask)
            expected = (
                full
                if window_mask is not None
                else model.forward_from_state_embeddings(embeddings, actions, rtg, timesteps)
            )
            torch.testing.assert_close(last, expected[:, -1], rtol=0, atol=1e-5)


def test_last_state_logits_run_the_hooks_when_any_are_attached(seaquest_windows) -> None:
    """An ablation or a steering vector acts through hooks; with one attached the shortcut
    gives way to the full forward, so the hook changes the logits as it does there."""
    model = make_model()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    with torch.no_grad():
        embeddings = model.embed_states(frames)
        plain = last_state_logits(model, embeddings, actions, rtg, timesteps, mask)
        model.blocks[1].hook_mlp_out.add_hook(lambda x, hook: torch.zeros_like(x))
        try:
            assert any_hooked(model)
            ablated = last_state_logits(model, embeddings, actions, rtg, timesteps, mask)
            full = model.forward_from_state_embeddings(embeddings, actions, rtg, timesteps, mask)
        finally:
            model.reset_hooks()
    assert not any_hooked(model)
    # The full forward (so the hook acts); its logits taken of one row instead of every step's:
    # the same sums, to float32 rounding.
    torch.testing.assert_close(ablated, full[:, -1], rtol=0, atol=1e-6)
    assert (ablated - plain).abs().max() > 1e-3  # the ablation did act
    # A plain torch hook on a module the shortcut skips (the last block) counts as well.
    handle = model.blocks[-1].register_forward_hook(lambda m, i, out: torch.zeros_like(out))
    try:
        zeroed = last_state_logits(model, embeddings, actions, rtg, timesteps, mask)
    finally:
        handle.remove()
    expected = model.action_logits_at(model.ln_final(torch.zeros_like(embeddings[:, -1])))
    torch.testing.assert_close(zeroed, expected, rtol=0, atol=1e-6)


def test_last_state_logits_in_training_mode_are_the_full_forward(seaquest_windows) -> None:
    cfg = dataclasses.replace(TINY, dropout=0.3)
    model = make_model(cfg).train()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    with torch.no_grad():
        embeddings = model.embed_states(frames)
        torch.manual_seed(1)
        last = last_state_logits(model, embeddings, actions, rtg, timesteps, mask)
        torch.manual_seed(1)  # the same dropout masks
        full = model.forward_from_state_embeddings(embeddings, actions, rtg, timesteps, mask)
    assert torch.equal(last, full[:, -1])


def _read_positions(model, n_steps: int) -> dict[str, list[int]]:
    """Token positions a caller may read: what the trainer reads, and edge cases."""
    states = [model.cfg.token_index(t, n_steps) for t in range(n_steps)]
    actions = [model.cfg.token_index(t, n_steps, "action") for t in range(n_steps)]
    return {
        "states": states,
        "states and actions but the last": sorted(states + actions[:-1]),
        "the first token": [0],
        "one mid-window state": [states[n_steps // 2]],
        "every token": list(range(n_steps * model.cfg.tokens_per_step)),
    }


@pytest.mark.parametrize("cfg", CONFIGS.values(), ids=list(CONFIGS))
def test_final_resid_at_equals_the_full_transformer_at_those_tokens(seaquest_windows, cfg) -> None:
    """It drops the tokens after the last one read (causal attention hides them) and, in the
    last layer, the queries not read: work none of the read outputs depends on, so they equal
    the full transformer's to float32 rounding, with and without padding."""
    model = make_model(cfg)
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    rtg = None if cfg.behaviour_cloning else rtg
    assert not any_hooked(model)  # else the full forward would run and this test nothing
    with torch.no_grad():
        embeddings = model.embed_states(frames)
        for window_mask in (mask, None):
            full = model.transformer(embeddings, actions, rtg, timesteps, window_mask)
            for name, positions in _read_positions(model, actions.shape[1]).items():
                read = model.final_resid_at(
                    positions, embeddings, actions, rtg, timesteps, window_mask
                )
                assert read.shape == (len(actions), len(positions), cfg.d_model), name
                torch.testing.assert_close(read, full[:, positions], rtol=0, atol=1e-5)


def test_final_resid_at_gives_way_to_the_full_forward_for_hooks(seaquest_windows) -> None:
    """With a hook attached every hook sees whole ``[B, P, d]`` tensors (the short path would
    hand the last block's hooks 1 token in 3) and its edit acts."""
    model = make_model()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    positions = [TINY.token_index(t, actions.shape[1]) for t in range(actions.shape[1])]
    seen = []

    def halve(x, hook):
        seen.append(x.shape)
        return x / 2

    with torch.no_grad():
        embeddings = model.embed_states(frames)
        plain = model.final_resid_at(positions, embeddings, actions, rtg, timesteps, mask)
        with model.hooks(fwd_hooks=[("blocks.1.hook_resid_post", halve)]):
            hooked = model.final_resid_at(positions, embeddings, actions, rtg, timesteps, mask)
            full = model.transformer(embeddings, actions, rtg, timesteps, mask)
    P = actions.shape[1] * TINY.tokens_per_step
    assert seen == [(len(actions), P, TINY.d_model)] * 2
    torch.testing.assert_close(hooked, full[:, positions], rtol=0, atol=0)
    assert (hooked - plain).abs().max() > 1e-3  # the edit did act


@pytest.mark.parametrize("positions", [[], [3, 1], [2, 2], [-1, 2], [0, 10**6]])
def test_final_resid_at_names_bad_positions(seaquest_windows, positions) -> None:
    model = make_model()
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    embeddings = model.embed_states(frames)
    with pytest.raises(ValueError, match="positions"):
        model.final_resid_at(positions, embeddings, actions, rtg, timesteps)


@pytest.mark.parametrize("attention", ["fused", "blocked", "kernel"])
@pytest.mark.parametrize("predict_returns", [False, True])
def test_training_forward_has_the_full_forwards_loss_and_gradients(
    seaquest_windows, predict_returns, attention, monkeypatch
) -> None:
    """The trainer reads the state tokens (and the action tokens but the last, for returns)
    through ``final_resid_at``: with dropout off its loss and every gradient are those of the
    full forward to float32 rounding, and its last block does run on those queries only.
    ``kernel`` takes the path CPU training with dropout takes (the C kernel, at the read
    positions in the last layer), ``blocked`` the one it takes without a C compiler (explicit
    attention in query blocks); dropout off gives it the fused path."""
    from atari_dt.model import native_attention

    if attention in ("blocked", "kernel"):
        monkeypatch.setattr(Attention, "_fused_is_slow", lambda self, x: True)
    if attention == "blocked":
        monkeypatch.setattr(native_attention, "library", lambda: None)
    elif attention == "kernel" and native_attention.library() is None:
        pytest.skip("no C compiler: the kernel is not built")
    from atari_dt.datasets.contexts import Contexts
    from atari_dt.model.components import TransformerBlock
    from atari_dt.training.trainer import _TrainingForward, compute_loss

    cfg = dataclasses.replace(TINY, dropout=0.0, return_head=True)
    model = make_model(cfg).train()
    frames, actions, rtg, timesteps, mask = _padded(seaquest_windows)
    batch = Contexts(frames, actions, rtg, timesteps, mask)
    loss_args = {"total_valid": mask.sum(), "world": 1, "return_weight": 0.5, "rtg_scale": 1.0}

    def full_forward(batch):
        final = model.transformer(
            model.embed_states(batch.frames), batch.actions, batch.rtg, batch.timesteps, mask
        )
        returns = model.return_predictions(final)[:, :-1] if predict_returns else None
        return model.action_logits(final), returns

    queries_run = []
    block_forward = TransformerBlock.forward

    def spy(self, resid, key_mask=None, queries=None):
        queries_run.append(None if queries is None else len(queries))
        return block_forward(self, resid, key_mask, queries)

    monkeypatch.setattr(TransformerBlock, "forward", spy)
    losses, grads = [], []
    for forward in (_TrainingForward(model, predict_returns), full_forward):
        model.zero_grad()
        logits, returns = forward(batch)[:2]
        loss = compute_loss(logits, returns, batch, **loss_args)[0]
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    T = actions.shape[1]
    assert queries_run == [None, 2 * T - 1 if predict_returns else T, None, None]
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-5, atol=0)
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6)


def test_torch_threads_are_restored_even_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == before
    with torch_threads(0):  # 0: unchanged
        assert torch.get_num_threads() == before


def test_bf16_is_flagged_where_it_would_be_emulated(monkeypatch) -> None:
    import atari_dt.compute as compute

    monkeypatch.setattr(compute, "has_native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="emulates"):
        compute.warn_if_emulated("bfloat16", "cpu")
    monkeypatch.setattr(compute, "has_native_bf16", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        compute.warn_if_emulated("bfloat16", "cpu")
        compute.warn_if_emulated("float32", "cpu")
    with pytest.raises(ValueError, match="precision"):
        compute.check_precision("float16")


def test_flat_linear_on_channels_last_features_is_the_plain_flatten() -> None:
    """Flattening channels_last features in memory order with the weight's columns permuted
    to match computes ``linear(features.flatten(1))``, forward and backward (float32 sums of
    3136 O(1) terms: ~1e-5 apart at most), and keeps the gradient channels_last."""
    from atari_dt.encoders.common import flat_linear

    torch.manual_seed(7)
    linear = torch.nn.Linear(64 * 7 * 7, 32)
    features = torch.randn(40, 64, 7, 7).contiguous(memory_format=torch.channels_last)
    features.requires_grad_()
    weights = torch.randn(40, 32)
    fast = flat_linear(linear, features)
    plain = linear(features.flatten(1))
    torch.testing.assert_close(fast, plain, rtol=0, atol=1e-5)
    (fast_grad,) = torch.autograd.grad((fast * weights).sum(), features)
    (plain_grad,) = torch.autograd.grad((plain * weights).sum(), features)
    torch.testing.assert_close(fast_grad, plain_grad, rtol=0, atol=1e-5)
    assert fast_grad.is_contiguous(memory_format=torch.channels_last)
    w_fast = torch.autograd.grad((flat_linear(linear, features) * weights).sum(), linear.weight)
    w_plain = torch.autograd.grad((linear(features.flatten(1)) * weights).sum(), linear.weight)
    torch.testing.assert_close(w_fast[0], w_plain[0], rtol=0, atol=1e-5)
