"""Mean ablation of heads and MLPs: each component's output replaced by its mean over a
dataset of contexts (not over positions of one vector), and the effect on the policy."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from jaxtyping import Float
from transformer_lens import ActivationCache

from atari_dt.analysis.divergence import kl, log_policy
from atari_dt.datasets.contexts import Contexts


@torch.no_grad()
def component_means(
    model, contexts: Contexts, *, cache: ActivationCache | None = None
) -> dict[str, torch.Tensor]:
    """Mean over the contexts of every head's ``hook_z`` (``[P, H, e]``) and every
    ``hook_mlp_out`` (``[P, d]``), per position; padded steps excluded. ``cache``: a cache of
    these contexts holding them (else one run, the frames encoded once)."""
    names = lambda n: n.endswith(("attn.hook_z", "hook_mlp_out"))  # noqa: E731
    if cache is None:
        _, cache = model.run_with_cache(contexts.encoded(model), names_filter=names)
    cache = {name: value for name, value in cache.items() if names(name)}
    real = contexts.mask.repeat_interleave(model.cfg.tokens_per_step, dim=1).float()  # [N, P]
    means = {}
    for name, value in cache.items():
        weight = real.view(*real.shape, *([1] * (value.ndim - 2)))
        means[name] = (value * weight).sum(0) / weight.sum(0).clamp(min=1)
    return means


@contextmanager
def mean_ablated(
    model, means: dict[str, torch.Tensor], heads: list[tuple[int, int]] = (), mlps: list[int] = ()
) -> Iterator[None]:
    """Inside, the given heads ``(layer, head)`` and MLPs output their dataset means (any
    forward: evaluation rollouts too)."""
    hooks = []
    for layer, head in heads:
        name = f"blocks.{layer}.attn.hook_z"

        def replace_head(z, hook, head=head, mean=means[name]):
            z = z.clone()
            z[:, :, head] = mean[-z.shape[1] :, head]  # windows are right-aligned
            return z

        hooks.append((name, replace_head))
    for layer in mlps:
        name = f"blocks.{layer}.hook_mlp_out"
        hooks.append(
            (name, lambda out, hook, mean=means[name]: mean[-out.shape[1] :].expand_as(out))
        )
    with model.hooks(fwd_hooks=hooks):
        yield


@dataclass(frozen=True)
class AblationEffects:
    """Mean KL divergence (nats) of the last step's policy from the clean one over the
    contexts, when each head (``heads`` ``[n_layers, n_heads]``) or MLP (``mlps``
    ``[n_layers]``) outputs its dataset mean."""

    heads: Float[torch.Tensor, "L H"]
    mlps: Float[torch.Tensor, " L"]


@dataclass(frozen=True)
class RolloutEffect:
    """``EpisodeResult`` lists of the same episodes played ``plain`` and ``ablated``, ordered
    by target, then episode."""

    plain: list
    ablated: list


@torch.no_grad()
def ablation_effects(
    model, contexts: Contexts, means: dict[str, torch.Tensor] | None = None
) -> AblationEffects:
    """Mean-ablate each head and each MLP in turn (``means``: ``component_means``, default of
    these contexts) and measure the policy's KL from the clean one."""
    contexts = contexts.encoded(model)  # the CNN runs once, not once per ablation
    means = component_means(model, contexts) if means is None else means
    clean = log_policy(model(contexts)[:, -1])  # float64: small effects' KL is ~1e-7

    def kl_of_ablated() -> float:
        return float(kl(clean, log_policy(model(contexts)[:, -1])).mean())

    L, H = model.cfg.n_layers, model.cfg.n_heads
    heads, mlps = torch.zeros(L, H), torch.zeros(L)
    for layer in range(L):
        for head in range(H):
            with mean_ablated(model, means, heads=[(layer, head)]):
                heads[layer, head] = kl_of_ablated()
        with mean_ablated(model, means, mlps=[layer]):
            mlps[layer] = kl_of_ablated()
    return AblationEffects(heads, mlps)


def rollout_effect(
    model,
    means: dict[str, torch.Tensor],
    game: str,
    targets: list[float],
    episodes: int,
    *,
    heads: list[tuple[int, int]] = (),
    mlps: list[int] = (),
    **rollout: object,
) -> RolloutEffect:
    """Evaluation episodes with and without the mean ablation (same seeds): the effect of the
    ablated components on achieved returns. ``rollout`` goes to ``run_episodes`` (reward_units,
    n_envs, max_episode_steps, seed, ...)."""
    from atari_dt.rollout.evaluate import run_episodes

    plain = run_episodes(model, game, targets, episodes, **rollout)
    with mean_ablated(model, means, heads=heads, mlps=mlps):
        ablated = run_episodes(model, game, targets, episodes, **rollout)
    return RolloutEffect(plain, ablated)
