"""What every attribution method shares: the scalar explained (a ``Target``, a ``HookTarget``
read at a hook, or any callable on the logits) and ``measure``, which evaluates any of them; the
forward functions Captum differentiates; and the one integrated-gradients mechanism that pixels,
tokens, RTG values and encoder channels all go through.

A *fast* forward encodes the context's frames once, without gradients, and runs the CNN only
on the frame stacks being attributed (and the transformer only from the first attributed state
token on); the *full* forward runs the whole model on every frame, as plain Captum over the
model would. Both compute the same function of the attributed frames.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, Literal, Union

import torch
from jaxtyping import Float

from atari_dt.attribution.hook_targets import HookTarget
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError

if TYPE_CHECKING:
    from atari_dt.model.prefix import PrefixCache

TargetKind = Literal["logit", "log_prob", "logit_diff"]


@dataclass(frozen=True)
class Target:
    """The scalar explained: at window step ``step`` (negative counts from the end), the
    ``logit`` or ``log_prob`` of ``action``, or ``logit_diff`` = logit(action) -
    logit(``other_action``)."""

    action: int
    step: int = -1
    kind: TargetKind = "logit"
    other_action: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("logit", "log_prob", "logit_diff"):
            raise UserError(f"kind must be logit, log_prob or logit_diff, got {self.kind!r}")
        if (self.kind == "logit_diff") != (self.other_action is not None):
            raise UserError("other_action is needed by (and only by) kind='logit_diff'")

    def __call__(self, logits: Float[torch.Tensor, "n T A"]) -> Float[torch.Tensor, " n"]:
        """``logits`` ``[n, T, n_actions]`` -> the target ``[n]``."""
        at_step = logits[:, self.step]
        if self.kind == "log_prob":
            return torch.log_softmax(at_step, dim=-1)[:, self.action]
        if self.kind == "logit_diff":
            return at_step[:, self.action] - at_step[:, self.other_action]
        return at_step[:, self.action]

    def describe(self) -> dict[str, Any]:
        return asdict(self)


Metric = Union[Target, HookTarget, Callable[[torch.Tensor], torch.Tensor]]  # noqa: UP007
"""What an attribution explains: a ``Target``, a ``HookTarget`` (a scalar read at a hook), or
any ``logits [n, T, A] -> [n]``. ``measure`` evaluates each."""


def describe_metric(metric: Metric) -> dict[str, Any]:
    """A JSON-ready description of a metric (a callable is named by its qualified name)."""
    if isinstance(metric, (Target, HookTarget)):
        return metric.describe()
    return {"callable": getattr(metric, "__qualname__", type(metric).__name__)}


def metric_step(metric: Metric) -> int:
    """The window step a metric is read at (-1, the newest, for a callable on the logits)."""
    return metric.step if isinstance(metric, (Target, HookTarget)) else -1


class _Reached(Exception):
    """Raised by ``measure``'s capturing hook: the rest of the forward is not needed."""


def measure(
    model: Any, metric: Metric, run: Callable[[], torch.Tensor]
) -> Float[torch.Tensor, " n"]:
    """The metric ``[n]`` of one forward pass ``run()`` (which returns logits ``[n, T, A]``).
    A ``Target`` or callable reads the logits; a ``HookTarget`` reads its hook's activation,
    captured while ``run()`` goes (not detached, not changed, so gradients flow to the inputs),
    and the forward stops there: later layers cannot change it. Every attribution evaluates its
    metric here.

    Raises:
        RuntimeError: ``run()`` never passed the hook (a forward that fires no hooks).
    """
    if not isinstance(metric, HookTarget):
        return metric(run())
    seen: list[torch.Tensor] = []

    def capture(activation: torch.Tensor, hook: Any) -> None:
        seen.append(activation)
        raise _Reached

    with model.hooks(fwd_hooks=[(metric.hook, capture)]), contextlib.suppress(_Reached):
        run()
    if not seen:
        raise RuntimeError(f"the forward pass never reached hook {metric.hook!r}")
    return metric.read(model, seen[0])


DELTA_TOLERANCE = 0.05  # |convergence delta| / max(|f(x) - f(baseline)|, 1e-3) beyond this warns


def warn_if_unconverged(delta: float, change: float, n_steps: int) -> None:
    """Warn, with the fix, when integrated gradients' delta is large for its change."""
    relative = abs(delta) / max(abs(change), 1e-3)
    if relative > DELTA_TOLERANCE:
        warnings.warn(
            f"integrated gradients did not converge: |delta| = {abs(delta):.3g} is "
            f"{relative:.0%} of f(x) - f(baseline) = {change:.3g}; raise n_steps (now {n_steps}, "
            f"e.g. {n_steps * 4}) until it falls below {DELTA_TOLERANCE:.0%}",
            stacklevel=4,
        )


def check_target(model: Any, contexts: Contexts, metric: Metric) -> None:
    """One context, and a target whose actions (or hook, head and direction) exist and whose
    step is in the window.

    Raises:
        ValueError: a batch of more than one, the bad action, or a hook target ``model``
            cannot give (``HookTarget.check``); IndexError: the bad step.
    """
    if len(contexts) != 1:
        raise ValueError(
            f"attribution explains one context at a time, got a batch of {len(contexts)}; "
            "index it (contexts[i])"
        )
    if isinstance(metric, HookTarget):
        contexts.step_index(metric.step)
        metric.check(model)
        return
    if not isinstance(metric, Target):
        return
    contexts.step_index(metric.step)
    n = model.cfg.n_actions
    for name in ("action", "other_action"):
        value = getattr(metric, name)
        if value is not None and not 0 <= value < n:
            raise UserError(f"target {name} {value} is not an action of the model (0..{n - 1})")


def eval_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model in eval mode: dropout would make attributions random (Captum's IG assumes a
    deterministic function). A model in train mode is switched, with a warning."""
    if model.training:
        warnings.warn(
            "the model was in train mode; attribution switched it to eval() (dropout off)",
            stacklevel=3,
        )
        model.eval()
    return model


class FastForward:
    """``f(frames_at_steps)`` for Captum: ``frames_at_steps`` float ``[n, k, S, H, W]`` (the
    stacks of window steps ``steps``) -> metric ``[n]``. Every other step's state embedding is
    computed once (or taken from ``contexts.state_embeddings``); each call runs the CNN on the
    k stacks only. For a ``Target`` or callable, the keys and values of every token before the
    first attributed state token are computed once too, and each call runs the transformer
    only from there (to the target's state token, for a ``Target``; to the end, for any other
    metric). A ``HookTarget`` needs its hook to fire, so the transformer runs whole (hooked);
    ``measure`` stops it at the hook."""

    def __init__(self, model: Any, contexts: Contexts, metric: Metric, steps: list[int]) -> None:
        check_target(model, contexts, metric)
        contexts = contexts.encoded(model)
        steps = [contexts.step_index(s) for s in steps]
        self.model, self.contexts, self.first = model, contexts, min(steps)
        self.steps = torch.tensor(steps, device=contexts.device)
        self.metric: Metric = metric
        self.before: torch.Tensor | None = None  # [1, first, A]: logits before `first`
        self.prefix: PrefixCache | None = None
        if not isinstance(metric, HookTarget):
            self._build_prefix(metric)

    def _build_prefix(self, metric: Metric) -> None:
        """The prefix cache of a metric read from the logits (see the class docstring)."""
        from atari_dt.model.prefix import build_prefix_cache

        model, contexts = self.model, self.contexts
        cfg, T = model.cfg, contexts.length
        start = cfg.token_index(self.first, T)
        if isinstance(metric, Target):  # through the target's state token; read as one step
            end = cfg.token_index(metric.step, T) + 1
            self.metric = replace(metric, step=-1)
        else:  # every logit: the steps before the first attributed one are constants
            end = T * cfg.tokens_per_step
            with torch.no_grad():
                self.before = model(contexts)[:, : self.first]  # [1, first, A]
        start = min(start, end - 1)
        self.prefix = build_prefix_cache(
            model, contexts.state_embeddings, *contexts.inputs()[1:], start=start, end=end
        )

    def __call__(self, frames_at_steps: torch.Tensor) -> torch.Tensor:
        from atari_dt.model.prefix import forward_suffix

        n = frames_at_steps.shape[0]
        new = self.model.embed_states(frames_at_steps)  # [n, k, d]: the CNN on k stacks only
        rest = self.contexts.repeat(n)
        states = rest.state_embeddings.index_copy(1, self.steps, new)
        if self.prefix is None:  # a HookTarget: the hooked transformer
            run = partial(self.model.forward_from_state_embeddings, states, *rest.inputs()[1:])
            return measure(self.model, self.metric, run)
        final = forward_suffix(self.model, self.prefix, states, *rest.inputs()[1:])
        if self.before is None:
            return self.metric(self.model.action_logits_at(final[:, -1:]))
        # The suffix starts at step `first`'s state token: its state tokens are every k-th.
        at_states = final[:, :: self.model.cfg.tokens_per_step]  # steps first..T-1
        logits = self.model.action_logits_at(at_states)
        return self.metric(torch.cat([self.before.expand(n, -1, -1), logits], dim=1))


class FullForward:
    """``f(frames)`` for Captum: the whole model on float frames ``[n, T, S, H, W]``."""

    def __init__(self, model: Any, contexts: Contexts, metric: Metric):
        check_target(model, contexts, metric)
        self.model, self.contexts, self.metric = model, contexts, metric

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        rest = self.contexts.repeat(frames.shape[0])
        return measure(self.model, self.metric, partial(self.model, frames, *rest.inputs()[1:]))


# ---- the one integrated-gradients mechanism ---------------------------------------------------

Inputs = Union[torch.Tensor, tuple[torch.Tensor, ...]]  # noqa: UP007


@dataclass(frozen=True)
class IntegratedGradients:
    """Captum's integrated gradients of ``f`` from ``baselines`` to ``inputs``, with the two
    ends: ``attributions`` shaped like the inputs (a tuple for tuple inputs; the layer's
    activation for layer IG), ``f(inputs)`` and ``f(baselines)`` of the first (only) item and
    Captum's ``convergence_delta`` (attributions' sum minus the change)."""

    attributions: Inputs
    at_input: float
    at_baseline: float
    convergence_delta: float
    n_steps: int


def integrated_gradients(
    forward: Callable[..., torch.Tensor],
    inputs: Inputs,
    baselines: Inputs,
    *,
    n_steps: int = 50,
    internal_batch_size: int | None = None,
    layer: torch.nn.Module | None = None,
) -> IntegratedGradients:
    """Integrated gradients (``layer`` given: layer IG at that module's output) of a batch of
    one, with a warning when the convergence delta is large for the change (see
    ``warn_if_unconverged``). Pixels, tokens, RTG values and channels all call this.

    Raises:
        UserError: ``n_steps`` < 1.
    """
    from captum import attr

    if n_steps < 1:
        raise UserError(f"n_steps must be >= 1 integration points, got {n_steps}")
    as_tuple = isinstance(inputs, tuple)
    with torch.no_grad():
        at_input = float((forward(*inputs) if as_tuple else forward(inputs))[0])
        at_baseline = float((forward(*baselines) if as_tuple else forward(baselines))[0])
    method = (
        attr.IntegratedGradients(forward)
        if layer is None
        else (attr.LayerIntegratedGradients(forward, layer))
    )
    result, delta = method.attribute(
        inputs,
        baselines,
        n_steps=n_steps,
        return_convergence_delta=True,
        internal_batch_size=internal_batch_size,
    )
    delta_value = float(delta[0])
    warn_if_unconverged(delta_value, at_input - at_baseline, n_steps)
    detached = tuple(r.detach() for r in result) if isinstance(result, tuple) else result.detach()
    return IntegratedGradients(detached, at_input, at_baseline, delta_value, n_steps)
