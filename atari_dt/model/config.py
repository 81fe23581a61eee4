"""Settings of the Decision Transformer: sizes, embeddings, positions, heads.

No torch here, so the CLI and the config loader can read a model config cheaply. ``ModelConfig``
doubles as ``model.cfg`` for TransformerLens's ``ActivationCache`` helpers, which read
``d_model, n_layers, n_heads, d_head, n_ctx, d_mlp, normalization_type, attn_only``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from atari_dt.config import ConfigError


@dataclass
class ModelConfig:
    """A Decision Transformer with a CNN state encoder (Chen et al. 2021, Atari)."""

    n_actions: int | Literal["auto"] = "auto"
    """Actions the policy chooses from. ``auto``: the training store's count, i.e. its game's
    minimal action set (Seaquest 18, Pong 6, Breakout 4), filled in when training starts; a
    number must match the store. A built model and a saved checkpoint always hold the number."""

    encoder: Literal["nature", "impala"] = "nature"
    """State encoder: ``nature`` (the DQN CNN the DT paper uses) or ``impala`` (IMPALA ResNet)."""

    d_model: int = 128
    """Width of the residual stream (paper: 128)."""

    n_layers: int = 6
    """Transformer blocks (paper: 6)."""

    n_heads: int = 8
    """Attention heads per block (paper: 8); must divide ``d_model``."""

    context_len: int = 30
    """T, steps per context window (paper: 30; 50 for Pong)."""

    max_timestep: int = 4096
    """Rows of the timestep embedding: every timestep fed must be below this. Set it from the
    data's longest episode (the original used the data's max timestep + 1)."""

    stack_size: int = 4
    """Frames per state (input channels of the encoder)."""

    frame_size: int = 84
    """Height and width of a frame in pixels."""

    dropout: float = 0.1
    """Dropout on embeddings, attention pattern, attention and MLP outputs (paper: 0.1).
    Inactive in ``eval()``, which analysis and attribution always use."""

    rtg_embedding: Literal["tanh", "linear"] = "tanh"
    """``tanh``: Linear(1, d) then tanh, as the original (saturates for large RTGs);
    ``linear``: Linear(1, d) alone."""

    rtg_scale: float = 1.0
    """The RTG is divided by this before its embedding (the original: 1, raw clipped-reward
    sums). A scale near the data's max return keeps a tanh embedding out of saturation."""

    positional: Literal["timestep", "original"] = "timestep"
    """``timestep``: a learned embedding of each step's own timestep, added to its three tokens;
    ``original``: a learned per-token position plus one learned embedding of the window's first
    timestep added to every token (the original code's scheme; use it to import its weights)."""

    return_head: bool = False
    """Also predict the next step's (scaled) return-to-go from each action token."""

    behaviour_cloning: bool = False
    """No RTG tokens: the sequence is ``(s_1, a_1, s_2, ...)`` (the paper's BC baseline)."""

    layer_norm_eps: float = 1e-5
    """Epsilon of every LayerNorm (torch's default, as the original)."""

    # Read by TransformerLens's ActivationCache helpers; fixed by this architecture.
    normalization_type: ClassVar[str] = "LN"
    attn_only: ClassVar[bool] = False
    act_fn: ClassVar[str] = "gelu"

    def __post_init__(self) -> None:
        check_choices(self)
        n = self.n_actions
        if n != "auto" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"n_actions must be 'auto' or an integer >= 1, got {n!r}")
        for name in ("d_model", "n_layers", "n_heads", "context_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("max_timestep", "stack_size", "frame_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ConfigError(
                f"n_heads ({self.n_heads}) must divide d_model ({self.d_model}); "
                f"e.g. n_heads={_largest_divisor_at_most(self.d_model, self.n_heads)}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout}")
        if not self.rtg_scale > 0:
            raise ConfigError(f"rtg_scale must be > 0, got {self.rtg_scale}")
        if self.return_head and self.behaviour_cloning:
            raise ConfigError(
                "return_head needs RTG tokens; it cannot be used with behaviour_cloning"
            )

    def check_resolved(self) -> None:
        """Refuse a config whose data-dependent settings are still ``auto`` (a model cannot be
        built from it).

        Raises:
            ConfigError: ``n_actions`` is ``auto`` (says how to resolve it).
        """
        if self.n_actions == "auto":
            raise ConfigError(
                "model.n_actions is 'auto': resolve it from the episode store first "
                "(training does: atari_dt.training.run.resolve_config), or set it to the "
                "game's action count, e.g. ModelConfig(n_actions=18)"
            )

    @property
    def d_head(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    @property
    def d_mlp(self) -> int:
        """Hidden width of the MLPs (4 x d_model, as GPT and the original)."""
        return 4 * self.d_model

    @property
    def tokens_per_step(self) -> int:
        """3 (R, s, a), or 2 (s, a) for behaviour cloning."""
        return 2 if self.behaviour_cloning else 3

    @property
    def n_ctx(self) -> int:
        """Tokens in a full context window."""
        return self.tokens_per_step * self.context_len

    @property
    def state_token_offset(self) -> int:
        """Index of the state token within a step's tokens (logits are read there)."""
        return 0 if self.behaviour_cloning else 1

    def token_index(self, step: int, window_len: int, kind: str = "state") -> int:
        """The position ``[0, P)`` of window step ``step``'s ``kind`` token (``rtg``,
        ``state`` or ``action``) in a window of ``window_len`` steps; negative steps count
        from the end. Every analysis reads its token positions here.

        Raises:
            IndexError: the step is outside the window; ValueError: an unknown kind (or
                ``rtg`` of a behaviour-cloning model, which has no RTG tokens).
        """
        if not -window_len <= step < window_len:
            raise IndexError(f"step {step} is outside the window of {window_len} steps")
        kinds = ("state", "action") if self.behaviour_cloning else ("rtg", "state", "action")
        if kind not in kinds:
            raise ValueError(f"token kind must be one of {', '.join(kinds)}, got {kind!r}")
        return self.tokens_per_step * (step % window_len) + kinds.index(kind)


def check_choices(config: object) -> None:
    """Every ``Literal`` field of a dataclass holds one of its values (a misspelt option built
    in Python would otherwise fall through to some default branch).

    Raises:
        ConfigError: naming the field, the value and the valid ones.
    """
    import dataclasses
    import typing

    hints = typing.get_type_hints(type(config))
    for field in dataclasses.fields(config):  # type: ignore[arg-type]
        hint = hints[field.name]
        options = typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()
        value = getattr(config, field.name)
        if options and value not in options:
            raise ConfigError(f"{field.name} must be one of {list(options)}, got {value!r}")


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(k for k in range(1, min(n, limit) + 1) if n % k == 0)
