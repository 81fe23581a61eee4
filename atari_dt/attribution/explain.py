"""One decision explained: the target chosen from the model's own logits, integrated gradients
(or another method) over its pixels and tokens, and the attribution mass on each game object
of the newest frame. ``atari-dt attribute`` renders these results and nothing more."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from atari_dt.attribution.baselines import BaselineName
from atari_dt.attribution.core import Target, TargetKind, eval_model
from atari_dt.attribution.objects import ObjectMasses, object_masses
from atari_dt.attribution.pixels import Method, PixelAttribution, attribute_pixels
from atari_dt.attribution.tokens import TokenAttribution, attribute_tokens
from atari_dt.datasets.contexts import Contexts
from atari_dt.errors import UserError


def decision_target(
    logits: Float[torch.Tensor, " A"],
    *,
    action: int | None = None,
    kind: TargetKind = "logit",
    other_action: int | None = None,
) -> Target:
    """The target explaining a decision whose logits are ``logits`` ``[n_actions]``: the
    ``kind`` of ``action`` (default: the action the model prefers), at the last step.

    Raises:
        UserError: an action outside ``[0, n_actions)``, or ``other_action`` without
            ``kind='logit_diff'`` (or the reverse).
    """
    n = int(logits.shape[-1])
    if other_action is not None and kind != "logit_diff":
        raise UserError("other_action is only used with kind 'logit_diff'")
    action = int(logits.argmax()) if action is None else action
    for name, value in (("action", action), ("other_action", other_action)):
        if value is not None and not 0 <= value < n:
            raise UserError(f"{name} {value} is not an action of the model (0..{n - 1})")
    if kind == "logit_diff" and other_action is None:
        raise UserError("kind 'logit_diff' needs other_action (the action to contrast with)")
    return Target(action=action, kind=kind, other_action=other_action)


def newest_boxes(contexts: Contexts) -> dict[str, np.ndarray] | None:
    """Object boxes ``(left, top, right, bottom)`` in the newest frame of a single context,
    from its RAM; None when the context has no RAM or the game has no object labels."""
    from atari_dt.envs.objects import OBJECT_GAMES, object_boxes

    if contexts.ram is None or contexts.game not in OBJECT_GAMES:
        return None
    return {name: boxes[-1] for name, boxes in object_boxes(contexts.game, contexts.ram[0]).items()}


@dataclass(frozen=True)
class Explanation:
    """A decision explained: ``target``, the policy ``probabilities`` ``[n_actions]`` at the
    last step, ``pixels`` and ``tokens`` attributions, and, when the context has object labels,
    the newest frame's ``boxes`` and the attribution ``objects`` mass in each (see
    ``object_masses``; None otherwise, or when the newest step was not attributed)."""

    target: Target
    probabilities: Float[torch.Tensor, " A"]
    pixels: PixelAttribution
    tokens: TokenAttribution
    boxes: dict[str, np.ndarray] | None
    objects: ObjectMasses | None


def explain_decision(
    model: Any,
    contexts: Contexts,
    *,
    action: int | None = None,
    kind: TargetKind = "logit",
    other_action: int | None = None,
    method: Method = "ig",
    baseline: BaselineName = "black",
    all_steps: bool = False,
    n_steps: int = 50,
    mean_frame: torch.Tensor | None = None,
) -> Explanation:
    """Explain the decision at the last step of one context: the target (``decision_target``),
    pixel attributions of the newest frame stack (of every step with ``all_steps``), token
    attributions, and object masses of the newest frame. The context is encoded once.

    Raises:
        UserError: see ``decision_target``; ValueError: see ``attribute_pixels``.
    """
    model = eval_model(model)
    contexts = contexts.encoded(model)  # one encoding: the choice, pixels and tokens
    with torch.no_grad():
        logits = model(contexts)[0, -1]
    target = decision_target(logits, action=action, kind=kind, other_action=other_action)
    steps = list(range(contexts.length)) if all_steps else None
    pixels = attribute_pixels(
        model,
        contexts,
        target,
        method=method,
        baseline=baseline,
        steps=steps,
        n_steps=n_steps,
        mean_frame=mean_frame,
    )
    tokens = attribute_tokens(model, contexts, target, n_steps=n_steps)
    boxes = newest_boxes(contexts)
    newest = pixels.newest
    # The boxes describe the newest frame: weigh that frame's attribution against them.
    masses = object_masses(newest[-1], boxes) if boxes and newest is not None else None
    probabilities = torch.softmax(logits, -1).cpu()
    return Explanation(target, probabilities, pixels, tokens, boxes, masses)


@dataclass(frozen=True)
class AttributionMovie:
    """IG of the model's own choice at each of ``B`` consecutive windows: the newest
    ``frames`` uint8 ``[B, H, W]``, their pixel ``maps`` float ``[B, H, W]`` (summed over the
    stack), the chosen ``actions`` ``[B]`` and the ``rtg`` asked for ``[B]``."""

    frames: np.ndarray
    maps: np.ndarray
    actions: np.ndarray
    rtg: np.ndarray


def attribution_movie(
    model: Any,
    contexts: Contexts,
    *,
    baseline: BaselineName = "black",
    n_steps: int = 50,
    mean_frame: torch.Tensor | None = None,
    progress: bool = True,
) -> AttributionMovie:
    """``explain``-style IG of each window of ``contexts`` (e.g. consecutive steps of one
    episode: ``run.contexts([e] * k, range(s, s + k))``), each for its own preferred action."""
    from tqdm.auto import tqdm

    model = eval_model(model)
    contexts = contexts.encoded(model)
    frames, maps, actions = [], [], []
    for i in tqdm(range(len(contexts)), desc="attribution GIF", unit="step", disable=not progress):
        window = contexts[i]
        with torch.no_grad():
            action = int(model(window)[0, -1].argmax())
        result = attribute_pixels(
            model,
            window,
            Target(action=action),
            method="ig",
            baseline=baseline,
            n_steps=n_steps,
            mean_frame=mean_frame,
        )
        frames.append(window.frames[0, -1, -1].cpu().numpy())
        maps.append(result.map().cpu().numpy())
        actions.append(action)
    return AttributionMovie(
        np.stack(frames), np.stack(maps), np.array(actions), contexts.rtg[:, -1].cpu().numpy()
    )
