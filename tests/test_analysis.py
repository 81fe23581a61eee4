"""Transformer analysis: every identity the analysis relies on, on real Seaquest windows."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from commands import atari_dt
from seeds import seed
from test_model import TINY, make_model

from atari_dt.analysis.ablation import ablation_effects, component_means, mean_ablated
from atari_dt.analysis.attention import attention_to_rtg, mean_patterns, token_labels
from atari_dt.analysis.dla import direct_logit_attribution, logit_lens
from atari_dt.analysis.patching import patch_heads, patch_residual, run_patched
from atari_dt.analysis.probes import _split, probe
from atari_dt.analysis.saturation import SATURATED, saturation
from atari_dt.analysis.scan import parse_grid, rtg_scan, scanned_rtg
from atari_dt.attribution.core import Target
from atari_dt.cli import main
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


@pytest.fixture(scope="module")
def model():
    return make_model()


@pytest.fixture(scope="module")
def batch(padded_contexts) -> Contexts:
    return padded_contexts


def as_inputs(batch: Contexts) -> tuple[torch.Tensor, ...]:
    return batch.inputs()


def test_scan_at_the_contexts_own_rtg_reproduces_the_forward_pass(model, batch) -> None:
    """Decremented mode at each window's own first RTG gives back its RTG, hence its logits."""
    with torch.no_grad():
        expected = model(*as_inputs(batch))[:, -1]
    first = batch.rtg.gather(1, batch.mask.long().argmax(1, keepdim=True))[:, 0]
    for row in range(len(first)):
        one = batch[row]
        own = float(first[row])
        torch.testing.assert_close(
            scanned_rtg(one, own, "decremented")[one.mask], one.rtg[one.mask]
        )
        scan = rtg_scan(model, one, np.array([own]), mode="decremented", reference_rtg=own)
        torch.testing.assert_close(scan.logits[0, 0], expected[row], rtol=0, atol=1e-5)
        assert scan.kl_to_reference[0] == pytest.approx(0.0, abs=1e-6)


def test_scan_outputs(model, batch) -> None:
    returns = np.array([0.0, 5.0, 10.0, 20.0])
    scan = rtg_scan(model, batch, np.linspace(-5, 60, 14), data_returns=returns)
    assert scan.logits.shape == (14, 6, 18) and scan.action_probs.shape == (14, 18)
    np.testing.assert_allclose(scan.action_probs.sum(1), 1.0, atol=1e-5)
    assert np.all(scan.entropy > 0) and np.all(scan.js_to_reference >= -1e-7)
    assert np.all(scan.js_to_reference <= math.log(2) + 1e-6)
    assert scan.reference_rtg == 7.5 and scan.data_return_range == (0.0, 20.0)
    assert scan.data_return_percentiles[50] == 7.5
    assert list(parse_grid("0:30:4")) == [0, 10, 20, 30] and list(parse_grid("1,2")) == [1, 2]
    with pytest.raises(ValueError, match="expected start:stop:count"):
        parse_grid("0:x")
    for bad in ("5", "3000:0:31", "0,nan"):
        with pytest.raises(UserError, match=r"needs 2\.\.10000 finite increasing values"):
            parse_grid(bad)
    for absurd in ("0:3000:0", "0:1:100000000"):  # no 10^8-point grid is ever allocated
        with pytest.raises(UserError, match=r"count must be in 2\.\.10000"):
            parse_grid(absurd)
    with pytest.raises(UserError, match=r"needs 1\.\.10000 finite increasing"):
        rtg_scan(model, batch, [5.0, 1.0])


def test_saturation_matches_the_analytic_answer(model, batch) -> None:
    """Hand-set RTG embedding: unit i has weight (i + 1) / 8 and no bias, so it saturates
    (|tanh| > 0.99) exactly when (i + 1) R / 8 > atanh(0.99)."""
    d = model.cfg.d_model
    hand = make_model(dataclasses.replace(TINY, rtg_scale=1.0))
    with torch.no_grad():
        hand.rtg_embed.weight.copy_((torch.arange(d, dtype=torch.float32) + 1)[:, None] / 8)
        hand.rtg_embed.bias.zero_()
    grid = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 40.0])
    result = saturation(hand, rtg_scan(hand, batch, grid))
    expected = [np.mean((np.arange(d) + 1) * r / 8 > math.atanh(SATURATED)) for r in grid]
    np.testing.assert_allclose(result.saturated_fraction, expected)
    assert result.saturated_fraction[-1] == 1.0


def test_saturation_rtg_is_where_the_policy_stops_moving(model, batch) -> None:
    """A scan whose policy moves until RTG 30 and is constant after: it settles at 30."""
    from atari_dt.analysis.scan import RtgScan

    grid = np.arange(0.0, 100.0, 10.0)
    logits = torch.zeros(10, 3, 4)
    logits[:, :, 0] = torch.from_numpy(np.minimum(grid, 30.0) / 10).float()[:, None]
    scan = RtgScan(
        rtg=grid,
        mode="constant",
        logits=logits,
        action_probs=np.zeros((10, 4)),
        entropy=np.zeros(10),
        kl_to_reference=np.zeros(10),
        js_to_reference=np.zeros(10),
        reference_rtg=0.0,
        state_resid=torch.zeros(10, 3, 32),
        data_return_range=(0.0, 20.0),
        data_return_percentiles=None,
    )
    result = saturation(model, scan, tolerance=1e-6)
    assert result.saturation_rtg == 30.0 and result.relative_to_data_max == 1.5
    assert np.all(result.policy_change[3:] == 0) and np.all(result.policy_change[:3] > 0)


def test_direct_logit_attribution_sums_to_the_logit(model, batch) -> None:
    with torch.no_grad():
        logits, cache = model.run_with_cache(*as_inputs(batch))
    dla = direct_logit_attribution(model, cache, Target(action=4))
    labels = dla.labels
    assert labels[:3] == ["embed", "pos_embed", "L0H0"] and labels[-1] == "bias"
    assert dla.values.shape == (len(labels), 6)
    torch.testing.assert_close(dla.values.sum(0), logits[:, -1, 4], rtol=0, atol=1e-4)
    # The named views are the same numbers: heads [L, H, B] in label order, one row by label.
    assert dla.heads.shape == (2, 4, 6) and torch.equal(dla.heads[1, 2], dla["L1H2"])
    assert torch.equal(direct_logit_attribution(model, cache, 4).values, dla.values)
    diff = direct_logit_attribution(
        model, cache, Target(action=4, kind="logit_diff", other_action=7, step=2)
    )
    expected = logits[:, 2, 4] - logits[:, 2, 7]
    torch.testing.assert_close(diff.values.sum(0), expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="not log_prob"):
        direct_logit_attribution(model, cache, Target(action=4, kind="log_prob"))


def test_logit_lens_ends_at_the_output(model, batch) -> None:
    with torch.no_grad():
        logits, cache = model.run_with_cache(*as_inputs(batch))
    lens = logit_lens(model, cache)
    assert lens.probs.shape == (3, 6, 18) and lens.labels[-1] == "final_post"
    expected = torch.softmax(logits[:, -1], -1)
    torch.testing.assert_close(lens.probs[-1], expected, rtol=0, atol=1e-5)


def corrupted_pair(batch: Contexts) -> tuple[Contexts, Contexts]:
    clean = batch[1]
    return clean, clean.with_rtg(clean.rtg + 50.0)  # out-of-distribution RTG


def test_patching_identities(model, batch) -> None:
    clean, corrupted = corrupted_pair(batch)
    with torch.no_grad():
        clean_logits, clean_cache = model.run_with_cache(clean)
        corrupted_logits, corrupted_cache = model.run_with_cache(corrupted)
    for layer in range(model.cfg.n_layers):
        name = [f"blocks.{layer}.hook_resid_pre"]
        # A run patched with its own clean activations is restored exactly...
        same = run_patched(model, clean, clean_cache.cache_dict, name)
        torch.testing.assert_close(same, clean_logits, rtol=0, atol=1e-5)
        # ...and the clean run with a whole layer from the corrupted run is the corrupted run.
        swapped = run_patched(model, clean, corrupted_cache.cache_dict, name)
        torch.testing.assert_close(swapped, corrupted_logits, rtol=0, atol=1e-5)


def test_patching_maps(model, batch) -> None:
    clean, corrupted = corrupted_pair(batch)
    with torch.no_grad():
        action = int(model(clean)[0, -1].argmax())
        other = int(model(clean)[0, -1].argmin())
    metric = Target(action=action, kind="logit_diff", other_action=other)
    residual = patch_residual(model, clean, corrupted, metric)
    assert residual.restored.shape == (2, 24)
    # Only RTG tokens differ: at layer 0 patching a state or action token restores nothing.
    assert (
        residual.restored[0, 1::3].abs().max() < 1e-4
        and residual.restored[0, 2::3].abs().max() < 1e-4
    )
    assert residual.restored[0].sum() != 0
    heads = patch_heads(model, clean, corrupted, metric)
    patterns = patch_heads(model, clean, corrupted, metric, what="pattern")
    noising = patch_heads(model, clean, corrupted, metric, direction="noising")
    noised = patch_residual(model, clean, corrupted, metric, direction="noising")
    # Noising a token that is the same in both runs leaves the clean run as it is: 1.
    torch.testing.assert_close(noised.restored[0, 1::3], torch.ones(8), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="patching takes one context"):
        patch_residual(model, batch, batch, metric)
    assert heads.restored.shape == patterns.restored.shape == noising.restored.shape == (2, 4)
    assert torch.isfinite(heads.restored).all() and len(heads.labels) == 8
    with pytest.raises(ValueError, match="same metric"):
        patch_residual(model, clean, clean, metric)

    # The metric is the caller's: a callable equal to the Target gives the same map.
    def as_callable(logits):
        return logits[:, -1, action] - logits[:, -1, other]

    same = patch_residual(model, clean, corrupted, as_callable)
    torch.testing.assert_close(same.restored, residual.restored, rtol=0, atol=1e-6)


def test_attention(model, batch) -> None:
    patterns = mean_patterns(model, batch)
    mean, labels = patterns.patterns, patterns.labels
    assert mean.shape == (2, 4, 24, 24) and labels[:4] == ["R_1", "s_1", "a_1", "R_2"]
    torch.testing.assert_close(mean.sum(-1), torch.ones(2, 4, 24), rtol=0, atol=1e-5)
    assert mean.triu(diagonal=1).abs().max() == 0
    to_rtg = attention_to_rtg(model, batch, np.array([0.0, 10.0, 100.0]))
    assert to_rtg.shape == (3, 2, 4) and torch.all((to_rtg >= 0) & (to_rtg <= 1 + 1e-6))
    assert token_labels(dataclasses.replace(TINY, behaviour_cloning=True), 2) == [
        "s_1",
        "a_1",
        "s_2",
        "a_2",
    ]


def test_probes_recover_a_planted_signal_and_score_chance_on_shuffled_labels() -> None:
    generator = np.random.default_rng(seed(0))
    layers = generator.normal(size=(3, 400, 16))
    direction = generator.normal(size=16)
    target = layers[1] @ direction + 0.05 * generator.normal(size=400)
    result = probe(layers, target, ["0", "1", "2"])
    assert result.scores[1] > 0.95 and result.scores[0] < 0.2 and result.scores[2] < 0.2
    shuffled = probe(layers, generator.permutation(target), ["0", "1", "2"])
    assert np.all(shuffled.scores < 0.1)
    classes = (layers[2] @ direction > 0).astype(int)
    classified = probe(layers, classes, ["0", "1", "2"], kind="classification")
    assert classified.scores[2] > 0.9 and classified.chance < 0.7
    chance = probe(layers, generator.permutation(classes), ["0", "1", "2"], kind="classification")
    assert np.all(np.abs(chance.scores - 0.5) < 0.15)


def test_probes_hold_out_whole_groups() -> None:
    """A label that identifies the episode is learnable from held-out windows of seen
    episodes, but not from unseen episodes: grouping removes that leak."""
    generator = np.random.default_rng(seed(1))
    episodes = np.repeat(np.arange(80), 4)
    features = generator.normal(size=(80, 6))[episodes] + 0.05 * generator.normal(size=(320, 6))
    labels = generator.integers(0, 2, size=80)[episodes]
    grouped = probe(
        features[None], labels, ["0"], kind="classification", alpha=1e-3, groups=episodes
    )
    nearest = probe(np.eye(80)[episodes][None], labels, ["0"], kind="classification", alpha=1e-3)
    grouped_nearest = probe(
        np.eye(80)[episodes][None],
        labels,
        ["0"],
        kind="classification",
        alpha=1e-3,
        groups=episodes,
    )
    # With an episode-identity feature, seen episodes leak their labels: a held-out window is
    # missed only when its whole episode is held out (then the probe has only its intercept).
    _, test = _split(len(episodes), 0.3, 0, None)  # the probe's own split (held_out, seed)
    unseen = ~np.isin(episodes[test], np.delete(episodes, test))
    assert nearest.scores[0] >= 1 - unseen.mean() - 1e-9
    # Grouped, every held-out episode is unseen: the intercept alone predicts the training
    # majority, right on at most the test majority's share (`chance`).
    assert grouped_nearest.scores[0] <= grouped_nearest.chance + 1e-9
    # Random features of 24 unseen episodes: as chance, ~Binomial(24, 1/2) / 24 in blocks of
    # 4 windows, beyond 0.85 with probability ~1e-4.
    assert grouped.scores[0] < 0.85


def test_ablation_effect_on_returns(batch) -> None:
    """The ablation holds during rollouts. The last MLP's "mean" is made a vector so large
    that the final LayerNorm sees only its direction, chosen so that it unembeds to an action
    the plain (argmax) rollouts never take: every ablated step must take that action."""
    from atari_dt.analysis.ablation import rollout_effect
    from atari_dt.rollout.evaluate import run_episodes

    model = make_model()
    settings = {
        "reward_units": "clipped",
        "n_envs": 2,
        "max_episode_steps": 25,
        "progress": False,
        "sample": False,
        "seed": seed(4),
    }
    plain = run_episodes(model, "Seaquest", [0.0], 2, **settings)
    untaken = np.flatnonzero(np.sum([r.action_counts for r in plain], axis=0) == 0)
    assert len(untaken) > 0  # 50 argmax steps of a random model use few of the 18 actions
    last, scale = model.cfg.n_layers - 1, 1e6
    with torch.no_grad():  # for each untaken action, a direction that unembeds to it
        directions = (model.W_U[:, untaken].T - model.W_U.mean(1)) / model.ln_final.w  # [U, d]
        logits = model.action_logits_at(model.ln_final(scale * directions))  # [U, A]
        top = logits.topk(2, dim=-1)
        hits = top.indices[:, 0] == torch.as_tensor(untaken)
        margins = torch.where(hits, top.values[:, 0] - top.values[:, 1], torch.tensor(-1.0))
        resid = f"blocks.{last}.hook_resid_post"
        _, cache = model.run_with_cache(*as_inputs(batch), names_filter=lambda n: n == resid)
    best = int(margins.argmax())
    action, direction = int(untaken[best]), directions[best]
    # The rest r of the residual moves LN's normalised input by at most 2 |r| / std(scale v),
    # hence any logit difference by at most twice that times the largest |W_U[:, a] * w|.
    # The rollouts' residuals come from the same model on real frames: 10x the batch's bounds
    # them (scale 1e6 leaves a margin of orders of magnitude).
    rest = 10 * float(cache[resid].norm(dim=-1).max())
    gain = float((model.W_U * model.ln_final.w[:, None]).detach().norm(dim=0).max())
    assert margins[best] > 2 * gain * 2 * rest / float((scale * direction).std(correction=0))
    means = component_means(model, batch)
    means[f"blocks.{last}.hook_mlp_out"] = means[f"blocks.{last}.hook_mlp_out"] + scale * direction
    effect = rollout_effect(model, means, "Seaquest", [0.0], 2, mlps=[last], **settings)
    assert [r.action_counts for r in effect.plain] == [r.action_counts for r in plain]
    for result in effect.ablated:
        assert result.action_counts[action] == result.length == sum(result.action_counts)


def test_divergences() -> None:
    """KL and JS of real-size policies: the definitions, their bounds, and >= 0 where a
    float32 sum of the same terms is rounding noise."""
    from atari_dt.analysis.divergence import js, kl, log_policy

    generator = torch.Generator().manual_seed(seed(0))
    logits = torch.randn(5, 18, generator=generator)  # float32, as the model gives them
    near = logits + 1e-4 * torch.randn(5, 18, generator=generator)
    log_p, log_q = log_policy(logits), log_policy(near)
    assert log_p.dtype == torch.float64
    p, q = log_p.exp(), log_q.exp()
    torch.testing.assert_close(kl(log_p, log_q), (p * (p / q).log()).sum(-1))
    m = (p + q) / 2
    half = lambda a: (a * (a / m).log()).sum(-1)  # noqa: E731
    torch.testing.assert_close(js(log_p, log_q), 0.5 * (half(p) + half(q)))
    torch.testing.assert_close(js(log_p, log_q), js(log_q, log_p))  # symmetric
    assert (kl(log_p, log_q) > 0).all() and (js(log_p, log_q) <= math.log(2)).all()
    assert kl(log_p, log_p).abs().max() < 1e-15 and kl(log_p, log_q[0]).shape == (5,)


def test_mean_ablation(model, batch) -> None:
    one = batch[1]
    means = component_means(model, one)
    # The mean over a single context is that context's activation: ablating changes nothing.
    effects = ablation_effects(model, one, means)
    assert effects.heads.abs().max() < 1e-6 and effects.mlps.abs().max() < 1e-6
    means = component_means(model, batch)
    effects = ablation_effects(model, batch, means)
    assert torch.equal(ablation_effects(model, batch).heads, effects.heads)  # default: own means
    # Every head of this fresh model moves the logits by ~1e-4, so each KL is ~1e-7 nats:
    # > 0, as KL of two distinct distributions is, once computed in float64 (rounding ~1e-16).
    assert effects.heads.shape == (2, 4) and (effects.heads > 0).all()
    inputs_ = as_inputs(batch)
    with torch.no_grad():
        before = model(*inputs_)
        with mean_ablated(model, means, mlps=[1]):
            during = model(*inputs_)
        after = model(*inputs_)
    assert not torch.allclose(before, during) and torch.equal(before, after)


def test_cli_scan(tiny_run, tmp_path, capsys) -> None:
    out = tmp_path / "scan"
    assert (
        main(["scan", str(tiny_run), "--rtg", "0:20:5", "--contexts", "16", "--out", str(out)]) == 0
    )
    report = json.loads((out / "scan.json").read_text())
    for key in (
        "rtg",
        "action_probs",
        "entropy",
        "divergence_to_reference",
        "reference_rtg",
        "data_return_range",
        "saturation_rtg",
    ):
        assert key in report, key
    assert report["rtg"] == [0, 5, 10, 15, 20] and np.shape(report["action_probs"]) == (5, 18)
    assert (out / "scan.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["scan", str(tiny_run), "--rtg", "zero"]) == 2
    assert "expected start:stop:count" in capsys.readouterr().err


def test_mean_ablation_reaches_rollouts(model, batch) -> None:
    """Ablation hooks stay on for any forward inside the context: the rollout agent's too."""
    from atari_dt.rollout.agent import DTAgent

    means = component_means(model, batch)
    stacks = batch.frames[1, -1:].numpy()  # one real frame stack

    def decide():
        agent = DTAgent(model, 1, sample=False)
        agent.start(0, 10.0)
        return agent.act(np.array([0]), stacks, np.array([5])).probs

    plain = decide()
    with mean_ablated(model, means, mlps=[0, 1]):
        ablated = decide()
    assert not torch.allclose(plain, ablated)
    torch.testing.assert_close(decide(), plain)  # hooks removed on exit


def test_cli_analyze(tiny_run, tmp_path) -> None:
    out = tmp_path / "analysis"
    command = f"analyze {tiny_run} --episode 1 --step 50 "
    command += f"--contexts 24 --corrupt frame --out {out}"
    assert atari_dt(command) == 0
    report = json.loads((out / "analysis.json").read_text())
    assert {"dla", "logit_lens", "patching", "probes", "mean_ablation_kl"} <= set(report)
    assert np.shape(report["mean_ablation_kl"]["heads"]) == (2, 2)
    assert {p.name for p in out.glob("*.png")} >= {
        "dla.png",
        "dla_heads.png",
        "logit_lens.png",
        "attention.png",
        "probes.png",
        "ablation_heads.png",
    }


def test_dla_along_the_scan_sums_to_the_scanned_logits(model, batch) -> None:
    from atari_dt.analysis.dla import dla_along_scan

    grid = np.array([0.0, 10.0, 80.0])
    along = dla_along_scan(model, batch, grid, 5)
    scan = rtg_scan(model, batch, grid)
    assert along.values.shape == (3, len(along.labels)) and along.target == Target(action=5)
    expected = scan.logits[:, :, 5].mean(1)
    torch.testing.assert_close(along.values.sum(1), expected, rtol=0, atol=1e-4)


def test_a_given_cache_is_used_as_is(model, batch) -> None:
    """``cache=``: one run's cache serves attention, probe features and ablation means; the
    results are those each function computes on its own (to the unfused kernels' ~1e-6)."""
    from atari_dt.analysis.dla import residual_by_layer

    with torch.no_grad():
        _, cache = model.run_with_cache(batch)
    patterns = mean_patterns(model, batch, cache=cache).patterns
    torch.testing.assert_close(patterns, mean_patterns(model, batch).patterns)
    shared = residual_by_layer(model, batch, cache=cache)
    torch.testing.assert_close(shared, residual_by_layer(model, batch), rtol=0, atol=1e-5)
    means = component_means(model, batch, cache=cache)
    alone = component_means(model, batch)
    assert means.keys() == alone.keys()
    for name in means:
        torch.testing.assert_close(means[name], alone[name], rtol=0, atol=1e-5)


def test_reference_action_is_the_policy_at_the_reference_rtg(model, batch) -> None:
    grid = np.array([0.0, 10.0, 40.0])
    scan = rtg_scan(model, batch, grid, reference_rtg=10.0)
    with torch.no_grad():  # independently: the mean policy when every step asks for 10
        policy = torch.softmax(model(batch.with_rtg(10.0))[:, -1], -1).mean(0)
    assert scan.reference_action == int(policy.argmax())


def test_decision_at_one_rtg_agrees_with_the_grid_analyses(model, batch) -> None:
    """One forward pass gives what the scan, the attention scan and DLA give at that grid point
    (the same model and windows: only summation order differs, hence the tolerance)."""
    from atari_dt.analysis.rtg_point import decision_at_rtg

    one = batch[1]
    for mode in ("constant", "decremented"):
        point = decision_at_rtg(model, one, 40.0, mode=mode)
        scan = rtg_scan(model, one, np.array([40.0]), mode=mode)
        torch.testing.assert_close(
            point.probabilities, torch.as_tensor(scan.action_probs[0]).float(), atol=1e-5, rtol=0
        )
        assert point.action == int(scan.action_probs[0].argmax())
        to_rtg = attention_to_rtg(model, one, np.array([40.0]), mode=mode)[0]
        torch.testing.assert_close(point.attention_to_rtg, to_rtg, atol=1e-6, rtol=0)
        logits = scan.logits[0, 0]
        torch.testing.assert_close(
            point.dla.values[:, 0].sum(), logits[point.action], atol=1e-4, rtol=0
        )
    own = decision_at_rtg(model, one, None, action=3)
    with torch.no_grad():
        expected = torch.softmax(model(one)[0, -1].double(), -1).float()
    torch.testing.assert_close(own.probabilities, expected, atol=1e-6, rtol=0)
    assert own.rtg is None and own.action == 3 and own.dla.target == Target(action=3)
    cloning = make_model(dataclasses.replace(TINY, behaviour_cloning=True))
    blind = decision_at_rtg(cloning, one, 40.0)  # no RTG tokens: the RTG changes nothing
    assert torch.equal(blind.attention_to_rtg, torch.zeros_like(blind.attention_to_rtg))
    torch.testing.assert_close(
        blind.probabilities, decision_at_rtg(cloning, one, None).probabilities, atol=0, rtol=0
    )
    with pytest.raises(UserError, match="one context"):
        decision_at_rtg(model, batch, 1.0)
    with pytest.raises(UserError, match="action must be in"):
        decision_at_rtg(model, one, 1.0, action=model.cfg.n_actions)
