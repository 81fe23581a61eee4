"""Attribution on a small model trained on real Seaquest play: completeness, fast == full,
sanity checks that pass on the trained model and fail on an edge detector, object masks."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from seeds import seed

from atari_dt.attribution.baselines import gaussian_blur, make_baseline
from atari_dt.attribution.channels import attribute_channels
from atari_dt.attribution.core import DELTA_TOLERANCE, Target
from atari_dt.attribution.objects import box_mask, object_masses
from atari_dt.attribution.pixels import METHODS, attribute_pixels
from atari_dt.attribution.sanity import deletion_curve, randomisation_test
from atari_dt.attribution.tokens import attribute_tokens
from atari_dt.cli import main
from atari_dt.datasets.contexts import Contexts
from atari_dt.envs.objects import object_boxes
from atari_dt.run import load_run

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small DT trained on real expert-to-random Seaquest play (with RAM), the opened run,
    a context where the submarine is on screen, and the run directory."""
    tmp = tmp_path_factory.mktemp("attribution")
    store = tmp / "seaquest.h5"
    assert (
        main(
            [
                "collect",
                "--config",
                str(ROOT / "configs/collect/seaquest.yaml"),
                "--steps",
                "3000",
                "--max-episode-steps",
                "500",
                "--workers",
                "1",
                "--seed",
                str(seed(0)),
                "--out",
                str(store),
            ]
        )
        == 0
    )
    config = tmp / "train.yaml"
    # lr 1e-3: at 2e-3 one seed drove the encoder's tanh into saturation (every state embedding
    # +-1, so no pixel moved any logit); the tests below then fail on a zero change, not pass.
    config.write_text(
        yaml.safe_dump(
            {
                "data": {"path": str(store), "reward_units": "raw", "context_len": 4},
                "model": {"d_model": 32, "n_layers": 1, "n_heads": 2, "max_timestep": 512},
                "train": {
                    "max_steps": 150,
                    "batch_size": 16,
                    "lr": 1e-3,
                    "warmup_steps": 10,
                    "checkpoint_every": 150,
                    "log_every": 50,
                    "seed": seed(0),
                },
            }
        )
    )
    run = tmp / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 0
    with load_run(run) as opened:
        yield opened.model, opened, opened.contexts(episode=0, step=120), run


def chosen(model, window) -> Target:
    with torch.no_grad():
        return Target(action=int(model(window)[0, -1].argmax()))


def widest(model, window, baseline: str) -> Target:
    """The logit difference that replacing the last stack by ``baseline`` moves most: between
    the action whose logit falls most and the one that rises most. No logit difference changes
    more, so the change is as large as this model makes any, whatever its training learnt."""
    frames = window.frames.float()
    replaced = frames.clone()
    replaced[:, -1] = make_baseline(baseline, frames[:, -1])
    with torch.no_grad():
        rest = window.inputs()[1:]
        change = model(frames, *rest)[0, -1] - model(replaced, *rest)[0, -1]
    return Target(int(change.argmax()), kind="logit_diff", other_action=int(change.argmin()))


def assert_same_attributions(fast, full) -> None:
    """The fast path computes the function the full model does in another order: its gradients
    agree to float32 rounding (~1e-7 relative per op), far inside 1e-5 of the largest pixel's."""
    scale = float(full.attributions.abs().max())
    torch.testing.assert_close(fast.attributions, full.attributions, rtol=1e-4, atol=1e-5 * scale)


def test_integrated_gradients_are_complete_and_fast_equals_full(trained) -> None:
    model, _, window, _ = trained
    target = widest(model, window, "blur")
    fast = attribute_pixels(model, window, target, baseline="blur", n_steps=64)
    full = attribute_pixels(model, window, target, baseline="blur", n_steps=64, fast=False)
    assert fast.attributions.shape == (1, 4, 84, 84) and fast.steps == [3]
    change = fast.target_value - fast.baseline_value
    # argmax - argmin of the logits' changes: >= 0 by construction, and > 0 unless the blur
    # shifts every logit alike (softmax would not see it); float32 rounds a logit to ~1e-6.
    assert change > 1e-4
    assert fast.attribution_sum == pytest.approx(change + fast.convergence_delta, abs=1e-4)
    assert abs(fast.convergence_delta) < 0.05 * change
    assert_same_attributions(fast, full)
    assert fast.target_value == pytest.approx(full.target_value, rel=1e-5, abs=1e-6)


def test_every_window_step_at_once(trained) -> None:
    model, _, window, _ = trained
    target = chosen(model, window)
    result = attribute_pixels(model, window, target, steps=[0, 1, 2, 3], n_steps=32)
    assert result.attributions.shape == (4, 4, 84, 84) and result.steps == [0, 1, 2, 3]
    change = result.target_value - result.baseline_value
    assert result.attribution_sum == pytest.approx(change + result.convergence_delta, abs=1e-4)


@pytest.mark.parametrize("method", METHODS)
def test_every_method(trained, method) -> None:
    model, _, window, _ = trained
    result = attribute_pixels(
        model,
        window,
        chosen(model, window),
        method=method,
        baseline="blur",
        n_steps=16,
        n_samples=4,
    )
    assert result.attributions.shape == (1, 4, 84, 84)
    assert torch.isfinite(result.attributions).all() and result.attributions.abs().sum() > 0
    assert result.map().shape == (84, 84)


def test_unconverged_integration_warns_how_to_fix(trained) -> None:
    """One integration point is exact only where the target is linear along the path: warned
    for exactly the targets whose delta is beyond the tolerance, which (a CNN being far from
    linear between a frame and noise) some of the 18 actions' logits are."""
    model, _, window, _ = trained
    encoded = window.encoded(model)  # the stacks go through the CNN once, not once per action
    warned = []
    for action in range(model.cfg.n_actions):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = attribute_pixels(model, encoded, Target(action), n_steps=1, baseline="noise")
        change = result.target_value - result.baseline_value
        relative = abs(result.convergence_delta) / max(abs(change), 1e-3)
        messages = [str(w.message) for w in caught if "did not converge" in str(w.message)]
        assert bool(messages) == (relative > DELTA_TOLERANCE), (action, relative, messages)
        warned += messages
    assert warned and all(re.search(r"raise n_steps \(now 1, e.g. 4\)", m) for m in warned)


def test_train_mode_is_switched_to_eval(trained) -> None:
    model, _, window, _ = trained
    model.train()
    with pytest.warns(UserWarning, match="switched it to eval"):
        attribute_pixels(model, window, chosen(model, window), n_steps=64)
    assert not model.training


def test_token_attribution_is_complete(trained) -> None:
    model, _, window, _ = trained
    # 256 points: from all-zero embeddings the path crosses the first LayerNorm's sharp region
    # near 0 (LN ignores scale but for its eps and the positions); 64 left |delta| at up to 21%
    # of the change on some seeds, 256 below 1e-5 of it on each of 3 seeds.
    tokens = attribute_tokens(model, window, chosen(model, window), n_steps=256)
    change = tokens.target_value - tokens.baseline_value
    assert tokens.by_token.shape == (3, 4)
    assert float(tokens.by_token.sum()) == pytest.approx(
        change + tokens.convergence_delta, abs=1e-4
    )
    assert abs(tokens.convergence_delta) < 0.05 * max(abs(change), 1e-3)
    assert tokens.rtg_inputs.shape == (4,) and abs(tokens.rtg_delta) < 1e-2


def test_encoder_channels(trained) -> None:
    model, _, window, _ = trained
    target = chosen(model, window)
    channels = attribute_channels(model, window, target, layer=1, n_steps=64)
    assert channels.by_location.shape == (64, 9, 9) and channels.by_channel.shape == (64,)
    pixels = attribute_pixels(model, window, target, n_steps=64)
    # Same path (input to black baseline): the layer attributions are complete too.
    change = pixels.target_value - pixels.baseline_value
    assert float(channels.by_location.sum()) == pytest.approx(
        change + channels.convergence_delta, abs=1e-3
    )
    assert abs(channels.convergence_delta) < 0.05 * max(abs(change), 1e-3)  # converged
    top = channels.top_channels(3)  # the largest |channel| sums, in order
    assert [abs(float(channels.by_channel[c])) for c in top] == sorted(
        (abs(float(v)) for v in channels.by_channel), reverse=True
    )[:3]
    with pytest.raises(ValueError, match="no hook_conv7"):
        attribute_channels(model, window, target, layer=7)


def test_randomisation_check_passes_on_the_model_and_fails_on_an_edge_detector(trained) -> None:
    model, _, window, _ = trained
    target = chosen(model, window)
    result = randomisation_test(
        model, lambda m: attribute_pixels(m, window, target, baseline="blur", n_steps=32).map()
    )
    assert result.passed, result
    frame = window.frames[0, -1, -1].float()
    edges = randomisation_test(model, lambda m: (frame - gaussian_blur(frame)).abs())
    assert edges.correlation == pytest.approx(1.0) and not edges.passed


@pytest.mark.parametrize("mode", ["deletion", "insertion"])
def test_deletion_and_insertion_beat_random_order(trained, mode) -> None:
    model, _, window, _ = trained
    target = widest(model, window, "black")  # the curves' baseline: they span its change
    result = attribute_pixels(model, window, target, n_steps=64)
    curve = deletion_curve(model, window, target, result.attributions, result.steps, mode=mode)
    assert curve.by_attribution.shape == curve.random_order.shape == (21,)
    assert curve.by_attribution[0] == pytest.approx(
        result.target_value if mode == "deletion" else result.baseline_value, abs=1e-4
    )
    assert curve.passed, (curve.auc_attribution, curve.auc_random)


def test_object_boxes_line_up_with_objects(trained) -> None:
    """On the real frame, the submarine's box is brighter than the water around it, and a map
    that is 1 inside the box puts all mass there."""
    _, _, window, _ = trained
    boxes = {name: b[-1] for name, b in object_boxes(window.game, window.ram[0]).items()}
    player = box_mask(boxes["player"], 84, 84)
    frame = window.frames[0, -1, -1].float()
    grown = torch.nn.functional.max_pool2d(player[None, None].float(), 9, 1, 4)[0, 0] > 0
    ring = grown & ~player
    assert player.sum() > 4 and frame[player].mean() > frame[ring].mean() + 15
    masses = object_masses(player.float(), boxes)
    assert masses.objects["player"].share == pytest.approx(1.0)
    assert masses.background.mass == 0.0 and masses.ranked()[0][0] == "player"
    assert masses.as_dict()["player"]["share"] == masses.objects["player"].share


def test_targets() -> None:
    logits = torch.tensor([[[1.0, 3.0, 0.0]]])
    assert float(Target(action=1)(logits)[0]) == 3.0
    assert float(Target(action=1, kind="logit_diff", other_action=0)(logits)[0]) == 2.0
    expected = float(torch.log_softmax(logits[0, 0], -1)[1])
    assert float(Target(action=1, kind="log_prob")(logits)[0]) == pytest.approx(expected)
    with pytest.raises(ValueError, match="other_action is needed"):
        Target(action=1, kind="logit_diff")
    with pytest.raises(ValueError, match="unknown baseline 'grey'"):
        make_baseline("grey", torch.zeros(2, 2))
    with pytest.raises(ValueError, match="needs mean_frame"):
        make_baseline("mean", torch.zeros(2, 2))


def test_cli_attribute(trained, tmp_path, capsys) -> None:
    _, _, _, run = trained
    out = tmp_path / "explained"
    assert (
        main(
            [
                "attribute",
                str(run),
                "--episode",
                "0",
                "--step",
                "120",
                "--baseline",
                "mean",
                "--steps",
                "all",
                "--n-steps",
                "16",
                "--gif",
                "3",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads((out / "attribution.json").read_text())
    for key in (
        "method",
        "baseline",
        "target",
        "target_value",
        "baseline_value",
        "attribution_sum",
        "convergence_delta",
        "objects",
        "tokens",
    ):
        assert key in report, key
    assert report["baseline"] == "mean" and report["attributed_window_steps"] == [0, 1, 2, 3]
    assert "player" in report["objects"] and np.isfinite(report["objects"]["player"]["mass"])
    assert sorted(p.name for p in out.iterdir()) == [
        "attribution.json",
        "episode.gif",
        "objects.png",
        "overlay.png",
        "window.png",
    ]
    from PIL import Image

    with Image.open(out / "episode.gif") as gif:
        assert gif.n_frames == 3
    assert main(["attribute", str(run), "--episode", "99", "--step", "0", "--out", str(out)]) == 2
    assert "episode 99 is not in" in capsys.readouterr().err


def test_earlier_target_and_later_frames(trained) -> None:
    """A target at step 1 cannot depend on the stack of step 3 (causal): zero attribution
    there, and the fast path still equals the full one."""
    model, _, window, _ = trained
    target = Target(action=2, step=1)
    fast = attribute_pixels(model, window, target, steps=[1, 3], n_steps=32)
    full = attribute_pixels(model, window, target, steps=[1, 3], n_steps=32, fast=False)
    assert fast.attributions[1].abs().max() == 0 and fast.attributions[0].abs().max() > 0
    torch.testing.assert_close(fast.attributions, full.attributions, rtol=1e-4, atol=1e-6)


def test_padded_window_fast_equals_full(trained) -> None:
    """Step 1 of an episode: two padding steps; the prefix reuse handles the padding."""
    model, opened, _, _ = trained
    window = opened.contexts(episode=0, step=1)
    assert window.mask.tolist() == [[False, False, True, True]]
    target = Target(action=3, kind="log_prob")
    fast = attribute_pixels(model, window, target, steps=[2, 3], n_steps=32)
    full = attribute_pixels(model, window, target, steps=[2, 3], n_steps=32, fast=False)
    assert_same_attributions(fast, full)


def test_rank_correlation_handles_ties_and_constant_maps() -> None:
    from atari_dt.attribution.sanity import rank_correlation

    generator = torch.Generator().manual_seed(seed(0))
    zeros = torch.rand(1000, generator=generator) < 0.7  # a shared 70% zero mask
    a = torch.where(zeros, 0.0, torch.randn(1000, generator=generator))
    b = torch.where(zeros, 0.0, torch.randn(1000, generator=generator))
    # Signed maps whose non-zero values are independent: the shared zeros sit at the middle
    # rank in both and add nothing; ties broken by position would rank them alike (~0.7).
    assert abs(rank_correlation(a, b)) < 0.15
    assert rank_correlation(a, a) == pytest.approx(1.0)
    assert np.isnan(rank_correlation(torch.zeros(5), torch.arange(5.0)))
    assert np.isnan(rank_correlation(torch.tensor([1.0, float("nan")]), torch.arange(2.0)))
    assert rank_correlation(a.view(10, 100), b) == rank_correlation(a, b)  # flattened
    with pytest.raises(ValueError, match=r"as many values, got 5 \(5,\) and 4 \(2, 2\)"):
        rank_correlation(torch.arange(5.0), torch.ones(2, 2))


def test_bad_targets_error_clearly(trained) -> None:
    model, _, window, _ = trained
    with pytest.raises(
        ValueError, match=r"target action 40 is not an action of the model \(0..17\)"
    ):
        attribute_pixels(model, window, Target(action=40))
    with pytest.raises(ValueError, match="step 9 is outside the window of 4 steps"):
        attribute_pixels(model, window, Target(action=1, step=9), fast=False)
    masses = object_masses(torch.ones(84, 84), {"all": np.array([-1, -1, 90, 90], np.float32)})
    assert masses.objects["all"].density_ratio is None  # no background mass: undefined, not inf


def test_occlusion_cross_checks_integrated_gradients(trained) -> None:
    """Blur occlusion and IG agree on where the decision comes from (magnitudes)."""
    from atari_dt.attribution.sanity import agreement

    model, _, window, _ = trained
    target = chosen(model, window)
    ig = attribute_pixels(model, window, target, baseline="blur", n_steps=64).map()
    occlusion = attribute_pixels(model, window, target, method="occlusion", baseline="blur").map()
    result = agreement(ig, occlusion)
    assert result.abs_rank_correlation > 0.2, result
    assert 0 <= result.top_overlap <= 1


def test_window_from_a_live_rollout(trained) -> None:
    """A window built from a rollout's history explains what the agent saw (its probabilities
    match the agent's)."""
    import numpy as np

    from atari_dt.envs.make import make_env
    from atari_dt.rollout.agent import DTAgent, FrameStacker

    model, _, _, _ = trained
    env = make_env("Seaquest", repeat_action_probability=0.0)
    frame, _ = env.reset(seed=seed(5))
    agent, stacker = DTAgent(model, 1, sample=False), FrameStacker(1, 4, (84, 84))
    agent.start(0, 100.0)
    stacker.reset(0, frame)
    stacks, actions, rtgs = [], [], []
    for t in range(6):
        stacks.append(stacker.stacks[0].copy())
        rtgs.append(agent.target_left(0))
        decision = agent.act(np.array([0]), stacker.stacks[[0]], np.array([t]))
        actions.append(int(decision.actions[0]))
        frame, reward, *_ = env.step(actions[-1])
        agent.observe(np.array([0]), np.array([reward]))
        stacker.push(0, frame)
    window = Contexts.from_history(
        np.stack(stacks),
        np.array(actions),
        np.array(rtgs),
        np.arange(6),
        context_len=4,
        game="Seaquest",
    )
    with torch.no_grad():
        probs = torch.softmax(model(window)[0, -1], -1)
    torch.testing.assert_close(probs, decision.probs[0], rtol=0, atol=1e-5)
    result = attribute_pixels(model, window, Target(action=actions[-1]), n_steps=16)
    assert result.attributions.shape == (1, 4, 84, 84)


def test_given_state_embeddings_are_not_recomputed(trained) -> None:
    """With the context's embeddings in it, the CNN sees only the attributed stacks."""
    model, _, window, _ = trained
    target = chosen(model, window)
    encoded_frames = []
    handle = model.encoder.register_forward_hook(
        lambda module, args, out: encoded_frames.append(args[0].shape[0])
    )
    try:
        plain = attribute_pixels(model, window, target, n_steps=16)
        without = sum(encoded_frames)
        encoded_frames.clear()
        encoded = window.encoded(model)
        encoded_frames.clear()
        reused = attribute_pixels(model, encoded, target, n_steps=16)
    finally:
        handle.remove()
    assert without - sum(encoded_frames) == window.length
    assert torch.equal(plain.attributions, reused.attributions)


@pytest.mark.filterwarnings("ignore:integrated gradients did not converge")  # 8 points: speed
@pytest.mark.parametrize("behaviour_cloning", [False, True])
def test_fast_path_of_any_metric_is_the_full_model(seaquest_windows, behaviour_cloning) -> None:
    """A callable metric sees every step's logits: on the fast path those of the steps before
    the first attributed one are constants and the rest come from the suffix, and together
    they must be the full model's (padded window; attributed steps not at the end)."""
    import dataclasses

    from test_model import TINY, inputs, make_model

    from atari_dt.attribution.core import FastForward, FullForward

    model = make_model(dataclasses.replace(TINY, behaviour_cloning=behaviour_cloning))
    frames, actions, rtg, timesteps = inputs(seaquest_windows)
    mask = torch.ones(actions.shape, dtype=torch.bool)
    mask[:, :2] = False  # left padding
    context = Contexts(frames, actions, rtg, timesteps, mask)[0]
    weights = torch.randn(8, 18, generator=torch.Generator().manual_seed(seed(7)))

    def metric(logits: torch.Tensor) -> torch.Tensor:  # every step and action counts
        return (logits * weights).sum((1, 2))

    for steps in ([7], [3], [2, 5]):
        fast = FastForward(model, context, metric, steps)
        full = FullForward(model, context, metric)
        stacks = context.frames.float()
        with torch.no_grad():
            expected = full(stacks)
            torch.testing.assert_close(fast(stacks[:, steps]), expected, rtol=1e-5, atol=1e-5)
        result = attribute_pixels(model, context, metric, steps=steps, n_steps=8)
        plain = attribute_pixels(model, context, metric, steps=steps, n_steps=8, fast=False)
        assert_same_attributions(result, plain)


@pytest.mark.filterwarnings("ignore:integrated gradients did not converge")  # 8 points: speed
def test_embeddings_of_another_model_are_not_used(trained) -> None:
    """Contexts encoded by the trained model, given to a fresh one (the randomisation check's
    case): the fresh model encodes the frames itself."""
    from atari_dt.model import HookedDecisionTransformer

    model, _, window, _ = trained
    encoded = window.encoded(model)
    torch.manual_seed(seed(8))
    fresh = HookedDecisionTransformer(model.cfg).eval()
    assert encoded.encoded_for(model) and not encoded.encoded_for(fresh)
    with torch.no_grad():
        torch.testing.assert_close(fresh(encoded), fresh(window), rtol=0, atol=1e-6)
    target = chosen(model, window)
    torch.testing.assert_close(
        attribute_pixels(fresh, encoded, target, n_steps=8).attributions,
        attribute_pixels(fresh, window, target, n_steps=8).attributions,
        rtol=1e-5,
        atol=1e-8,
    )


def test_the_decision_explained_is_the_models_choice(trained) -> None:
    """The library's choices, as the CLI uses them: the target defaults to the preferred
    action; the newest stack is where the object masses come from."""
    from atari_dt.attribution.explain import decision_target, explain_decision
    from atari_dt.errors import UserError

    logits = torch.tensor([0.5, 2.0, -1.0])
    assert decision_target(logits) == Target(action=1)
    contrast = decision_target(logits, action=0, kind="logit_diff", other_action=2)
    assert contrast == Target(action=0, kind="logit_diff", other_action=2)
    for kwargs, message in (({"action": 3}, r"action 3 is not an action of the model \(0..2\)"),
                            ({"other_action": 2}, "only used with kind 'logit_diff'"),
                            ({"kind": "logit_diff"}, "needs other_action")):  # fmt: skip
        with pytest.raises(UserError, match=message):
            decision_target(logits, **kwargs)
    model, _, window, _ = trained
    explained = explain_decision(model, window, all_steps=True, n_steps=16)
    assert explained.target == chosen(model, window)
    pixels = explained.pixels
    assert torch.equal(pixels.newest, pixels.attributions[-1])
    assert torch.equal(pixels.stack(1), pixels.attributions[1])
    one = attribute_pixels(model, window, explained.target, steps=[1], n_steps=8)
    assert one.newest is None
    with pytest.raises(KeyError, match=r"window step 3 was not attributed \(attributed: \[1\]\)"):
        one.stack(-1)
    assert "player" in explained.objects.objects
