"""Targets read inside the transformer: the activation at a hook (a head's output, the
residual stream, an MLP's neurons) at one token, projected on a direction. Every attribution
(pixels, tokens, RTG values, encoder channels) explains a ``HookTarget`` as it explains a
logit: ``atari_dt.attribution.core.measure`` reads it by running the model with one hook that
captures the activation.

Two constructors give the common ones: ``head_logit_target`` (a head's direct path to a logit
or logit difference, the quantity direct logit attribution splits) and ``residual_target``
(the residual stream on a direction, e.g. an RTG direction or a probe's weight).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from jaxtyping import Float

from atari_dt.errors import UserError

TokenKind = Literal["rtg", "state", "action"]
_TOKENS = ("rtg", "state", "action")
_PER_HEAD = re.compile(r"^blocks\.\d+\.attn\.hook_[qkvz]$")  # [B, P, H, d_head]
_PER_STEP = ("hook_rtg_embed", "hook_state_embed", "hook_action_embed", "hook_time_embed")
_ACCEPTED = (
    "accepted: hook_embed, hook_pos_embed, ln_final.* and every blocks.{l}.* hook except "
    "attn.hook_attn_scores and attn.hook_pattern (activations [B, P, ...], one row per token)"
)


@dataclass(frozen=True, eq=False)
class HookTarget:
    """The scalar read at a hook: the activation of ``hook`` (a transformer hook whose
    activation is ``[B, P, ...]``, one row per token) at window step ``step``'s ``token``
    (``rtg``, ``state`` or ``action``; negative steps count from the end), projected on
    ``direction``, plus ``bias``.

    ``direction`` has the shape of the activation at one token: ``[d_model]`` for the residual
    stream, attention and MLP outputs and the LayerNorms' outputs, ``[d_mlp]`` for
    ``mlp.hook_pre|post``, ``[1]`` for a LayerNorm's ``hook_scale`` and ``[n_heads, d_head]``
    for ``attn.hook_q|k|v|z`` (the heads' parts summed). With ``head`` set (``hook`` must be
    ``blocks.{l}.attn.hook_z``), the head's output in the residual stream,
    ``z[:, pos, head] @ W_O[l][head]`` ``[d_model]``, is projected, so ``direction`` is
    ``[d_model]``. A non-tensor direction becomes float32; the direction is a constant
    (stored detached). ``label`` names the target in reports.

    Raises:
        UserError: an unknown token kind, a direction that is not a float vector or matrix,
            or ``head`` with a hook other than ``attn.hook_z``.
    """

    hook: str
    direction: torch.Tensor
    step: int = -1
    token: TokenKind = "state"
    head: int | None = None
    bias: float = 0.0
    label: str = ""

    def __post_init__(self) -> None:
        if self.token not in _TOKENS:
            raise UserError(f"token must be one of {', '.join(_TOKENS)}, got {self.token!r}")
        direction = self.direction
        if not isinstance(direction, torch.Tensor):
            direction = torch.as_tensor(direction, dtype=torch.float32)
        if not direction.is_floating_point() or direction.ndim not in (1, 2):
            raise UserError(
                f"direction must be a float vector (or [n_heads, d_head] for attn.hook_q|k|v|z),"
                f" got {direction.dtype} of shape {list(direction.shape)}"
            )
        object.__setattr__(self, "direction", direction.detach())
        if self.head is not None and not self.hook.endswith(".attn.hook_z"):
            raise UserError(
                f"head={self.head} reads a head's output: it needs hook blocks.{{l}}.attn.hook_z,"
                f" got {self.hook!r}"
            )

    @property
    def layer(self) -> int | None:
        """The block ``l`` of a ``blocks.{l}.*`` hook (None for the embeddings, ``ln_final``)."""
        found = re.match(r"blocks\.(\d+)\.", self.hook)
        return None if found is None else int(found.group(1))

    def read_shape(self, cfg: Any) -> tuple[int, ...]:
        """The shape ``direction`` must have for a model of config ``cfg`` (see the class)."""
        if self.head is not None:
            return (cfg.d_model,)
        if _PER_HEAD.match(self.hook):
            return (cfg.n_heads, cfg.d_head)
        if self.hook.endswith(("mlp.hook_pre", "mlp.hook_post")):
            return (cfg.d_mlp,)
        return (1,) if self.hook.endswith("hook_scale") else (cfg.d_model,)

    def check(self, model: Any) -> None:
        """Refuse a target ``model`` cannot give (the window step is checked by the caller).

        Raises:
            UserError: the hook is missing or not read per token (names what is accepted),
                ``head`` out of range, ``direction`` of the wrong shape, or an ``rtg`` token
                of a behaviour-cloning model.
        """
        cfg = model.cfg
        if self.hook not in model.hook_dict:
            layers = f"blocks 0..{cfg.n_layers - 1}"
            raise UserError(f"the model has no hook {self.hook!r} ({layers}); {_ACCEPTED}")
        _check_read_per_token(self.hook)
        if self.head is not None:
            _check_index("head", self.head, cfg.n_heads, "heads")
        if self.token == "rtg" and cfg.behaviour_cloning:
            raise UserError("token 'rtg': a behaviour-cloning model has no RTG tokens")
        expected, got = self.read_shape(cfg), tuple(self.direction.shape)
        if got != expected:
            where = self.hook if self.head is None else f"{self.hook} head {self.head}"
            raise UserError(f"direction for {where} must be {list(expected)}, got {list(got)}")

    def read(self, model: Any, activation: torch.Tensor) -> Float[torch.Tensor, " n"]:
        """The target ``[n]`` from the hook's ``activation`` ``[n, P, ...]``; gradients flow
        through it (it is neither detached nor changed)."""
        window_len = activation.shape[1] // model.cfg.tokens_per_step
        at = activation[:, model.cfg.token_index(self.step, window_len, self.token)]
        if self.head is not None:  # [n, d_head] @ [d_head, d_model]: the head's output
            at = at[:, self.head] @ model.blocks[self.layer].attn.W_O[self.head]
        return (at * self.direction.to(at)).flatten(1).sum(-1) + self.bias

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """A HookTarget is read at its hook, not from logits.

        Raises:
            UserError: always (says how to evaluate it).
        """
        raise UserError(
            f"a HookTarget reads hook {self.hook!r}, not the logits: evaluate it with "
            "atari_dt.attribution.core.measure(model, target, run); this caller takes only a "
            "Target or a callable on logits"
        )

    def describe(self) -> dict[str, Any]:
        """JSON-ready: the hook, step, token, head, bias, label and the direction's norm."""
        return {
            "hook": self.hook,
            "step": self.step,
            "token": self.token,
            "head": self.head,
            "bias": self.bias,
            "label": self.label,
            "direction_norm": float(self.direction.norm()),
        }


def _check_read_per_token(hook: str) -> None:
    """Refuse hooks whose activation has no ``[B, P, ...]`` row per token.

    Raises:
        UserError: naming the hook, its shape and what is accepted.
    """
    why = None
    if hook.startswith("encoder."):
        why = "the encoder's activations are per frame stack ([B*T, C, h, w]), not per token"
    elif hook in _PER_STEP:
        why = "it is [B, T, d_model], one row per step (hook_embed has every token's embedding)"
    elif hook.endswith(("hook_attn_scores", "hook_pattern")):
        why = "it is [B, H, P, P], per query and key (hook_z holds each head's output)"
    if why is not None:
        raise UserError(f"hook {hook!r} cannot be a hook target: {why}; {_ACCEPTED}")


def head_logit_target(
    model: Any,
    layer: int,
    head: int,
    action: int,
    other_action: int | None = None,
    *,
    step: int = -1,
) -> HookTarget:
    """Head ``(layer, head)``'s direct path to the logit of ``action`` (minus that of
    ``other_action``, when given) at window step ``step``'s state token: its output
    ``z @ W_O[head]`` projected on ``ln_final.w * (W_U[:, action] - W_U[:, other_action])``,
    centred (the final LayerNorm subtracts each residual's mean, so a direction's mean never
    reaches the logits). Label: ``"L1H0 -> logit 3-0"``.

    The final LayerNorm's scale is not applied: it depends on the whole residual stream, not on
    the head. The value is the head's direct logit contribution times that positive scale, so
    divided by ``cache["ln_final.hook_scale"]`` at the token it is the head's entry in
    ``direct_logit_attribution``.

    Raises:
        UserError: a layer, head or action the model does not have, or ``other_action`` equal
            to ``action`` (a zero direction).
    """
    cfg = model.cfg
    _check_index("layer", layer, cfg.n_layers, "layers")
    _check_index("head", head, cfg.n_heads, "heads")
    for name, value in (("action", action), ("other_action", other_action)):
        if value is not None:
            _check_index(name, value, cfg.n_actions, "actions")
    if other_action == action:
        raise UserError(f"other_action must differ from action ({action}): the difference is 0")
    unembed = model.W_U[:, action]  # [d_model]
    if other_action is not None:
        unembed = unembed - model.W_U[:, other_action]
    direction = model.ln_final.w * unembed
    contrast = "" if other_action is None else f"-{other_action}"
    return HookTarget(
        f"blocks.{layer}.attn.hook_z",
        (direction - direction.mean()).detach().clone(),
        step=step,
        head=head,
        label=f"L{layer}H{head} -> logit {action}{contrast}",
    )


def residual_target(
    layer: int,
    direction: torch.Tensor,
    *,
    step: int = -1,
    token: TokenKind = "state",
    where: Literal["resid_pre", "resid_mid", "resid_post"] = "resid_post",
    bias: float = 0.0,
    label: str = "",
) -> HookTarget:
    """The residual stream ``blocks.{layer}.hook_{where}`` at window step ``step``'s ``token``
    projected on ``direction`` ``[d_model]`` (e.g. an RTG direction, or a linear probe's weight
    with its intercept as ``bias``). Label by default ``"{layer}_{where}"``. The layer and the
    direction's width are checked against the model when an attribution runs.

    Raises:
        UserError: ``where`` not one of resid_pre, resid_mid, resid_post; a negative layer.
    """
    wheres = ("resid_pre", "resid_mid", "resid_post")
    if where not in wheres:
        raise UserError(f"where must be one of {', '.join(wheres)}, got {where!r}")
    if layer < 0:
        raise UserError(f"layer must be >= 0, got {layer}")
    return HookTarget(
        f"blocks.{layer}.hook_{where}",
        direction,
        step=step,
        token=token,
        bias=bias,
        label=label or f"{layer}_{where}",
    )


def _check_index(name: str, value: int, n: int, what: str) -> None:
    if not 0 <= value < n:
        raise UserError(f"{name} {value} is out of range: the model has {n} {what} (0..{n - 1})")
