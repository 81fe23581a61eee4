"""The C attention kernel (``atari_dt.model.native_attention``): it computes the explicit
path's attention and gradients, applies exactly the dropout mask it reports, draws masks of
the right rate that follow ``torch.manual_seed`` and not the thread count, and refuses inputs
it would read out of bounds."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from test_model import TINY, inputs, make_model

from atari_dt.compute import torch_threads
from atari_dt.model import native_attention
from atari_dt.model.components import QUERY_BLOCKS, Attention

pytestmark = pytest.mark.skipif(
    native_attention.library() is None, reason="no C compiler: the kernel is not built"
)


class ReplayDropout(torch.nn.Module):
    """Applies a given keep mask (``[B, H, Q, P]`` 0/1) as dropout: the explicit path with
    the kernel's own draws."""

    def __init__(self, keep: torch.Tensor, p: float) -> None:
        super().__init__()
        self.keep, self.p = keep, p

    def forward(self, pattern: torch.Tensor) -> torch.Tensor:
        return pattern * self.keep[..., : pattern.shape[-1]] / (1 - self.p)


def _layer(n_heads: int, d_head: int) -> Attention:
    cfg = dataclasses.replace(TINY, d_model=n_heads * d_head, n_heads=n_heads, context_len=30)
    return make_model(cfg).blocks[0].attn.train()


def _drawn_seed(torch_seed: int) -> int:
    """The dropout seed ``causal_attention`` draws right after ``torch.manual_seed``."""
    torch.manual_seed(torch_seed)
    return int(torch.randint(0, 2**62, (1,)))


CASES = [(90, 8, 16), (7, 3, 8), (24, 2, 24), (2, 4, 16)]  # tokens, heads, d_head


@pytest.mark.parametrize(("n_tokens", "n_heads", "d_head"), CASES)
@pytest.mark.parametrize("p", [0.0, 0.3])
def test_kernel_equals_the_explicit_path(n_tokens: int, n_heads: int, d_head: int, p) -> None:
    """z and the gradients of q, k, v equal the explicit path's (one block, the kernel's
    dropout mask replayed on it), with and without padding keys, at every query and at some
    query positions (as ``final_resid_at``'s last layer runs them). Both are float32 sums of
    at most 90 O(1) terms, so they agree to ~1e-6; 1e-5 leaves room, and a wrong key, mask
    or scale moves them by O(0.1)."""
    attn = _layer(n_heads, d_head)
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, n_tokens, n_heads, d_head, requires_grad=True) for _ in range(3))
    x = torch.zeros(3, n_tokens, n_heads * d_head)
    key_mask = torch.ones(3, n_tokens, dtype=torch.bool)
    key_mask[1, : n_tokens // 2] = False  # a left-padded window
    weights = torch.randn(3, n_tokens, n_heads, d_head)
    all_positions = list(range(n_tokens))
    for mask in (None, key_mask):
        allowed = attn._allowed(x, mask)
        for positions in (all_positions, all_positions[1::3] or [0], [0, n_tokens - 1]):
            seed = 12345
            keep = native_attention.dropout_keep(positions, n_tokens, p, seed, 3 * n_heads)
            attn.pattern_dropout = ReplayDropout(keep.view(3, n_heads, len(positions), -1), p)
            explicit = attn._explicit(q[:, positions], k, v, allowed[:, :, positions], 1, positions)
            floats = native_attention.key_mask_floats(mask, n_tokens)
            kernel = native_attention.CausalAttention.apply(
                q[:, positions], k, v, floats, positions, p, seed
            )
            torch.testing.assert_close(kernel, explicit, rtol=0, atol=1e-5)
            w = weights[:, positions]
            got = torch.autograd.grad((kernel * w).sum(), (q, k, v))
            want = torch.autograd.grad((explicit * w).sum(), (q, k, v))
            for name, g, e in zip("qkv", got, want, strict=True):
                torch.testing.assert_close(g, e, rtol=0, atol=1e-5, msg=f"d{name}")


def test_kernel_hides_later_keys_and_padding() -> None:
    """A huge value at key j never reaches a query before j, nor a query of a window where j
    is padding, even under dropout (values are 1 elsewhere, so an output is the kept pattern
    mass times 1 / (1 - p) = 2: at most 2 unless key j leaked in)."""
    torch.manual_seed(2)
    q, k = torch.randn(2, 90, 8, 16), torch.randn(2, 90, 8, 16)
    key_mask = torch.ones(2, 90, dtype=torch.bool)
    key_mask[1, :40] = False
    for j in (0, 15, 16, 39, 47, 89):
        v = torch.ones(2, 90, 8, 16)
        v[:, j] = 1e6
        z = native_attention.causal_attention(q, k, v, None, list(range(90)), 0.5)
        assert (z[:, :j] <= 2 + 1e-4).all()
        # Key j is seen from query j on: dropped for all 16 (window, head) pairs of even
        # query j alone only with probability 2^-16 per seed.
        assert z[:, j:].max() > 1e3
        z = native_attention.causal_attention(q, k, v, key_mask, list(range(90)), 0.5)
        if j < 40:  # padding in window 1: only query j itself sees it
            assert (torch.cat([z[1, :j], z[1, j + 1 :]]) <= 2 + 1e-4).all()


def test_dropout_keeps_each_weight_with_probability_one_minus_p() -> None:
    """The kept fraction of the 256 x 4,095 causal pattern entries (Binomial, n ~ 1.05e6) is
    within 6 standard deviations of 1 - p (exceeded with probability ~2e-9); keys after a
    query are never kept; and another seed draws another mask."""
    p, positions = 0.1, list(range(90))
    keep = native_attention.dropout_keep(positions, 90, p, seed=7, n_pairs=256)
    causal = torch.ones(90, 90, dtype=torch.bool).tril()
    n = 256 * int(causal.sum())
    assert abs(float(keep[:, causal].mean()) - (1 - p)) < 6 * math.sqrt(p * (1 - p) / n)
    assert not keep[:, ~causal].any()
    assert not torch.equal(keep, native_attention.dropout_keep(positions, 90, p, 8, 256))
    # The same element at a query position reads the same draw whether or not other queries
    # are run (final_resid_at's last layer runs some only).
    some = native_attention.dropout_keep([3, 50, 89], 90, p, seed=7, n_pairs=256)
    assert torch.equal(some, keep[:, [3, 50, 89]])


def test_output_mean_under_dropout_is_unbiased() -> None:
    """With values 1 each output is sum_j pattern_j keep_j / (1 - p): mean 1, variance <= 1
    at p = 0.5, so over 16 x 8 x 90 = 11,520 outputs the mean is within 6 / sqrt(11,520) of 1
    except with probability ~2e-9; the first query sees one key, kept (2) or not (0)."""
    torch.manual_seed(3)
    q, k = torch.randn(16, 90, 8, 16), torch.randn(16, 90, 8, 16)
    v = torch.ones(16, 90, 8, 16)
    z = native_attention.causal_attention(q, k, v, None, list(range(90)), 0.5)[..., 0]  # [B, P, H]
    assert abs(float(z.mean()) - 1.0) < 6 / math.sqrt(z.numel())
    assert set(z[:, 0].unique().tolist()) <= {0.0, 2.0}


def test_masks_follow_torch_manual_seed_not_the_thread_count() -> None:
    """The same torch seed gives the same output at 1 and 2 threads (each (window, head)
    pair is computed by the same code whichever thread runs it, so bit for bit); the
    generator moving on gives another mask."""
    torch.manual_seed(4)
    q, k, v = (torch.randn(4, 60, 8, 16) for _ in range(3))
    outputs = []
    for threads in (1, 2):
        with torch_threads(threads):
            torch.manual_seed(5)
            outputs.append(native_attention.causal_attention(q, k, v, None, list(range(60)), 0.2))
    assert torch.equal(outputs[0], outputs[1])
    other = native_attention.causal_attention(q, k, v, None, list(range(60)), 0.2)
    assert not torch.equal(outputs[0], other)
    # The seed is torch's next 62-bit draw, so a test can replay a mask (dropout_keep).
    seed = _drawn_seed(5)
    mask = native_attention.key_mask_floats(None, 60)
    direct = native_attention.CausalAttention.apply(q, k, v, mask, list(range(60)), 0.2, seed)
    assert torch.equal(direct, outputs[0])


def test_bf16_autocast_computes_in_float32() -> None:
    """Under bf16 autocast the kernel takes bf16 q, k, v and returns float32 z: that of the
    explicit float32 path on the same (bf16-rounded) inputs, to float32 rounding."""
    attn = _layer(8, 16).eval()
    torch.manual_seed(6)
    q, k, v = (torch.randn(2, 30, 8, 16).bfloat16() for _ in range(3))
    allowed = attn._allowed(torch.zeros(2, 30, 128), None)
    with torch.autocast("cpu", torch.bfloat16):
        z = native_attention.causal_attention(q, k, v, None, list(range(30)), 0.0)
    assert z.dtype == torch.float32
    expected = attn._explicit(q.float(), k.float(), v.float(), allowed, 1)
    torch.testing.assert_close(z, expected, rtol=0, atol=1e-5)


@pytest.fixture
def routes(monkeypatch) -> list[tuple[str, float | int]]:
    """The path each attention layer takes, in call order: ``("kernel", p_drop)`` or
    ``("explicit", query_blocks)``."""
    taken = []
    kernel, explicit = native_attention.causal_attention, Attention._explicit

    def spy_kernel(q, k, v, key_mask, positions, p_drop):
        taken.append(("kernel", p_drop))
        return kernel(q, k, v, key_mask, positions, p_drop)

    def spy_explicit(self, q, k, v, allowed, query_blocks=1, positions=None):
        taken.append(("explicit", query_blocks))
        return explicit(self, q, k, v, allowed, query_blocks, positions)

    monkeypatch.setattr(native_attention, "causal_attention", spy_kernel)
    monkeypatch.setattr(Attention, "_explicit", spy_explicit)
    return taken


def test_training_takes_the_kernel_and_falls_back_without_it(
    seaquest_windows, routes, monkeypatch
) -> None:
    """CPU training with dropout and nothing hooked runs every layer through the kernel;
    a layer whose pattern is hooked through the explicit path, in one block; without a
    library (no compiler, ATARI_DT_NATIVE=0) every layer through the explicit query blocks."""
    model = make_model().train()
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    model(frames, actions, rtg, timesteps).sum().backward()
    assert routes == [("kernel", TINY.dropout)] * TINY.n_layers
    routes.clear()
    hooks = [("blocks.0.attn.hook_pattern", lambda x, hook: x)]
    model.run_with_hooks(frames, actions, rtg, timesteps, fwd_hooks=hooks)
    assert routes == [("explicit", 1)] + [("kernel", TINY.dropout)] * (TINY.n_layers - 1)
    routes.clear()
    monkeypatch.setattr(native_attention, "library", lambda: None)
    model(frames, actions, rtg, timesteps).sum().backward()
    assert routes == [("explicit", QUERY_BLOCKS)] * TINY.n_layers


def test_model_gradients_equal_the_explicit_path_without_dropout(seaquest_windows, monkeypatch):
    """A whole model's training-mode gradients through the kernel equal those through the
    explicit path, to float32 rounding (dropout 0, so both compute the same function; the
    fused kernel that dropout 0 would take is switched off)."""
    cfg = dataclasses.replace(TINY, dropout=0.0)
    monkeypatch.setattr(Attention, "_fused_is_slow", lambda self, x: True)
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    grads = []
    for use_kernel in (True, False):
        if not use_kernel:
            monkeypatch.setattr(native_attention, "library", lambda: None)
        model = make_model(cfg).train()
        model(frames, actions, rtg, timesteps).logsumexp(-1).sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-5, msg=name)


def test_kernel_refuses_inputs_it_would_read_out_of_bounds() -> None:
    """The C code trusts its shapes: the wrapper names what is wrong instead."""
    q, k = torch.randn(2, 5, 4, 16), torch.randn(2, 9, 4, 16)
    mask = native_attention.key_mask_floats(None, 9)
    apply = native_attention.CausalAttention.apply
    with pytest.raises(ValueError, match="ascending"):
        apply(q, k, k, mask, [0, 2, 2, 3, 4], 0.0, 0)
    with pytest.raises(ValueError, match=r"lie in \[0, 9\)"):
        apply(q, k, k, mask, [0, 2, 4, 6, 9], 0.0, 0)
    with pytest.raises(ValueError, match="key_mask must be contiguous"):
        apply(q, k, k, torch.ones(2, 9), [0, 1, 2, 3, 4], 0.0, 0)
    with pytest.raises(ValueError, match="k and v must be"):
        apply(q, k, k[:, :, :3], mask, [0, 1, 2, 3, 4], 0.0, 0)
    with pytest.raises(ValueError, match="float32 CPU"):
        apply(q.double(), k, k, mask, [0, 1, 2, 3, 4], 0.0, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        apply(q, k, k, mask, [0, 1, 2, 3, 4], 1.0, 0)


def test_a_forked_child_runs_the_kernel_on_two_threads() -> None:
    """A child forked after the parent ran the kernel on two threads (env workers, data
    loaders fork) gets a fresh thread pool instead of its parent's dead one, and computes
    what the parent computes."""
    import multiprocessing

    torch.manual_seed(8)
    q, k, v = (torch.randn(2, 20, 4, 16) for _ in range(3))
    with torch_threads(2):
        expected = native_attention.causal_attention(q, k, v, None, list(range(20)), 0.0)
        context = multiprocessing.get_context("fork")
        with context.Pool(1) as pool:
            got = pool.apply_async(_attention_on_two_threads, (q, k, v)).get(timeout=60)
    assert torch.equal(got, expected)


def _attention_on_two_threads(q, k, v):
    with torch_threads(2):
        return native_attention.causal_attention(q, k, v, None, list(range(20)), 0.0)


def test_kernel_follows_the_dropout_module_and_leaves_a_hooked_z_alone(
    seaquest_windows, routes, monkeypatch
) -> None:
    """In a model in train mode whose Dropout modules are in eval mode, the kernel (forced on
    for every layer) applies no dropout: it reads the dropout module's own flag, and the
    logits are the eval model's to float32 rounding. A hook on ``hook_z`` (which may edit z in
    place) sends its layer to the explicit path; the other layers keep the kernel."""
    from atari_dt.model.components import Dropout

    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    model = make_model()
    with torch.no_grad():
        expected = model(frames, actions, rtg, timesteps)
        model.train()
        for module in model.modules():
            if isinstance(module, Dropout):
                module.eval()
        with monkeypatch.context() as forced:
            forced.setattr(Attention, "_fused_is_slow", lambda self, x: True)
            logits = model(frames, actions, rtg, timesteps)
    assert routes == [("kernel", 0.0)] * TINY.n_layers
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)
    routes.clear()
    model = make_model().train()
    hooks = [("blocks.0.attn.hook_z", lambda z, hook: z.mul_(1.0))]  # an in-place edit
    logits = model.run_with_hooks(frames, actions, rtg, timesteps, fwd_hooks=hooks)
    logits.sum().backward()
    assert routes == [("explicit", QUERY_BLOCKS)] + [("kernel", TINY.dropout)] * (TINY.n_layers - 1)
