"""The Decision Transformer as a TransformerLens ``HookedRootModule``: every activation from
pixel to action logit passes a named ``HookPoint`` and lands in one ``ActivationCache``.

Tokens per step are ``(R_t, s_t, a_t)`` (``(s_t, a_t)`` for behaviour cloning); action logits
are read at the state tokens. The residual stream starts as ``hook_embed + hook_pos_embed``:
``hook_embed`` holds each token's own embedding (RTG, state or action) and ``hook_pos_embed``
everything positional, so ``ActivationCache.decompose_resid`` splits them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import nn
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookPoint

from atari_dt.datasets.contexts import Contexts
from atari_dt.encoders import make_encoder
from atari_dt.hooks import any_hooked
from atari_dt.model.checkpoint import load_weights, read_config, save_pretrained
from atari_dt.model.components import Dropout, LayerNorm, TransformerBlock
from atari_dt.model.config import ModelConfig
from atari_dt.model.inputs import check_frames, check_sequence

INIT_STD = 0.02  # GPT-2 / the original DT: N(0, 0.02) for linear and embedding weights


class HookedDecisionTransformer(HookedRootModule):
    """A Decision Transformer for Atari with a hooked CNN state encoder.

    Call it as ``model(frames, actions, rtg, timesteps, mask=None) -> logits [B, T, n_actions]``
    with ``frames`` uint8 ``[B, T, 4, 84, 84]``, ``actions``/``timesteps`` int ``[B, T]``,
    ``rtg`` float ``[B, T]`` (unscaled; divided by ``cfg.rtg_scale`` inside) and ``mask`` bool
    ``[B, T]`` (False on left padding). The logit at step t depends on ``R_1..R_t``,
    ``s_1..s_t`` and ``a_1..a_{t-1}`` only, so the last action may be anything at decision time.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        cfg.check_resolved()  # n_actions "auto" is filled in from the data before a model exists
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.encoder = make_encoder(cfg.encoder, d, cfg.stack_size, cfg.frame_size)
        if not cfg.behaviour_cloning:
            self.rtg_embed = nn.Linear(1, d)
        self.action_embed = nn.Embedding(cfg.n_actions, d)
        if cfg.positional == "timestep":
            self.time_embed = nn.Embedding(cfg.max_timestep, d)
        else:
            self.pos_embed = nn.Parameter(torch.zeros(cfg.n_ctx, d))
            self.global_pos_embed = nn.Parameter(torch.zeros(cfg.max_timestep, d))
        self.embed_dropout = Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.ln_final = LayerNorm(d, cfg.layer_norm_eps)
        self.W_U = nn.Parameter(torch.empty(d, cfg.n_actions))
        self.b_U = nn.Parameter(torch.zeros(cfg.n_actions))
        if cfg.return_head:
            self.return_head = nn.Linear(d, 1)
        self.hook_rtg_embed = HookPoint()  # [B, T, d_model]
        self.hook_state_embed = HookPoint()  # [B, T, d_model]
        self.hook_action_embed = HookPoint()  # [B, T, d_model]
        self.hook_time_embed = HookPoint()  # [B, T, d_model]
        self.hook_embed = HookPoint()  # [B, P, d_model], token embeddings interleaved
        self.hook_pos_embed = HookPoint()  # [B, P, d_model]
        self._init_weights()
        self.setup()

    def _init_weights(self) -> None:
        for name, param in self.named_parameters():
            if name.startswith(("encoder.", "rtg_embed.", "action_embed.")):
                continue  # torch's default init: the original creates these after its init
            if name.endswith(("W_Q", "W_K", "W_V", "W_O", "W_in", "W_out", "W_U", ".weight")):
                if param.ndim >= 2:
                    nn.init.normal_(param, std=INIT_STD)
            elif name.endswith(("bias", "b_Q", "b_K", "b_V", "b_O", "b_in", "b_out", "b_U")):
                nn.init.zeros_(param)
        if self.cfg.positional == "timestep":
            nn.init.normal_(self.time_embed.weight, std=INIT_STD)

    # -- the forward pass, in the order it runs --------------------------------------------

    def forward(
        self,
        frames: torch.Tensor | Contexts,
        actions: torch.Tensor | None = None,
        rtg: torch.Tensor | None = None,
        timesteps: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> Float[torch.Tensor, "B T n_actions"]:
        """Action logits ``[B, T, n_actions]`` at the state tokens (see the class docstring).
        ``model(contexts)`` takes a ``Contexts`` (its state embeddings when it has them, so
        the CNN does not run again); the tensor form is TransformerLens's."""
        if isinstance(frames, Contexts):
            contexts = frames
            if contexts.encoded_for(self):
                return self.forward_from_state_embeddings(
                    contexts.state_embeddings,
                    contexts.actions,
                    contexts.rtg,
                    contexts.timesteps,
                    contexts.mask,
                )
            frames, actions, rtg, timesteps, mask = contexts.inputs()
        if actions is None or timesteps is None:
            raise TypeError(
                "model(frames, actions, rtg, timesteps, mask) needs actions and "
                "timesteps (or pass one Contexts)"
            )
        states = self.embed_states(frames)
        return self.forward_from_state_embeddings(states, actions, rtg, timesteps, mask)

    def embed_states(self, frames: torch.Tensor) -> torch.Tensor:
        """The encoder on every frame stack: ``[B, T, C, H, W]`` -> ``[B, T, d_model]``.
        Rollouts and attribution keep these and encode each new frame once."""
        check_frames(self.cfg, frames)
        B, T = frames.shape[:2]
        return self.encoder(frames.flatten(0, 1)).view(B, T, self.cfg.d_model)

    def forward_from_state_embeddings(
        self,
        state_embeddings: torch.Tensor,
        actions: torch.Tensor,
        rtg: torch.Tensor | None,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Action logits ``[B, T, n_actions]`` from state embeddings ``[B, T, d_model]`` (the
        output of ``embed_states``); the rest as ``forward``."""
        return self.action_logits(self.transformer(state_embeddings, actions, rtg, timesteps, mask))

    def transformer(
        self,
        state_embeddings: torch.Tensor,
        actions: torch.Tensor,
        rtg: torch.Tensor | None,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final normalised residual stream ``[B, P, d_model]`` (after ``ln_final``), at
        every token; ``action_logits`` and ``return_predictions`` read it."""
        resid, key_mask = self._sequence_input(state_embeddings, actions, rtg, timesteps, mask)
        return self._blocks(resid, key_mask)

    def final_resid_at(
        self,
        positions: Sequence[int],
        state_embeddings: torch.Tensor,
        actions: torch.Tensor,
        rtg: torch.Tensor | None,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> Float[torch.Tensor, "B n_positions d_model"]:
        """``transformer(...)[:, positions]``: the final normalised residual ``[B,
        len(positions), d_model]`` at the token positions ``positions`` (ascending, e.g. from
        ``cfg.token_index``) only.

        With no hook attached to the model it skips the work none of them reads: every token
        after the last (causal attention hides it from them) and, in the last layer, the
        queries' share of the work at every other token (attention, output projection, MLP;
        the keys and values of every token are still computed). That is exact up to float
        rounding; in training mode dropout draws other masks of the same distribution. A
        paper-size training step reads the 30 state tokens of 90: about half of the last
        layer's matmul FLOPs are skipped. With a hook attached (a cache, a patch, an
        ablation) the full forward runs, so every hook sees and edits whole tensors.

        Raises:
            ValueError: positions empty, not ascending and distinct, or outside the window.
        """
        positions = [int(p) for p in positions]
        if not positions or positions != sorted(set(positions)) or positions[0] < 0:
            raise ValueError(f"positions must be ascending, distinct and >= 0, got {positions}")
        resid, key_mask = self._sequence_input(state_embeddings, actions, rtg, timesteps, mask)
        if positions[-1] >= resid.shape[1]:
            raise ValueError(
                f"positions must be below the window's {resid.shape[1]} tokens, got {positions[-1]}"
            )
        if any_hooked(self):
            return self._blocks(resid, key_mask)[:, positions]
        end = positions[-1] + 1
        key_mask = None if key_mask is None else key_mask[:, :end]
        return self._blocks(resid[:, :end], key_mask, positions)

    def _blocks(
        self,
        resid: torch.Tensor,
        key_mask: torch.Tensor | None,
        queries: Sequence[int] | None = None,
    ) -> torch.Tensor:
        """Every block, then ``ln_final``: ``[B, P, d_model]``, or at the positions ``queries``
        only (the last block runs those queries alone: ``TransformerBlock.forward``)."""
        for block in self.blocks[:-1]:
            resid = block(resid, key_mask)
        return self.ln_final(self.blocks[-1](resid, key_mask, queries))

    def _sequence_input(
        self,
        state_embeddings: torch.Tensor,
        actions: torch.Tensor,
        rtg: torch.Tensor | None,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The checked inputs as the first block's residual ``[B, P, d_model]`` and the token
        key mask ``[B, P]`` (None without padding: the plain causal kernel)."""
        check_sequence(self.cfg, state_embeddings, actions, rtg, timesteps, mask)
        dtype = self.W_U.dtype  # inputs of another float dtype follow the model's
        state_embeddings = state_embeddings.to(dtype)
        rtg = None if rtg is None else rtg.to(dtype)
        tokens = self.hook_embed(self._token_embeddings(state_embeddings, actions, rtg))
        positions = self.hook_pos_embed(self._position_embeddings(timesteps, mask))
        key_mask = None
        if mask is not None and not bool(mask.all()):
            key_mask = mask.repeat_interleave(self.cfg.tokens_per_step, dim=1)  # [B, P]
        return self.embed_dropout(tokens + positions), key_mask

    def _token_embeddings(
        self, state_embeddings: torch.Tensor, actions: torch.Tensor, rtg: torch.Tensor | None
    ) -> torch.Tensor:
        """Each token's own embedding, interleaved per step: ``[B, T * tokens_per_step, d]``."""
        parts = []
        if not self.cfg.behaviour_cloning:
            rtg_embed = self.rtg_embed((rtg / self.cfg.rtg_scale).unsqueeze(-1))
            if self.cfg.rtg_embedding == "tanh":
                rtg_embed = torch.tanh(rtg_embed)
            parts.append(self.hook_rtg_embed(rtg_embed))
        parts.append(self.hook_state_embed(state_embeddings))
        parts.append(self.hook_action_embed(torch.tanh(self.action_embed(actions.long()))))
        stacked = torch.stack(parts, dim=2)  # [B, T, tokens_per_step, d]
        return stacked.flatten(1, 2)

    def _position_embeddings(
        self, timesteps: torch.Tensor, mask: torch.Tensor | None
    ) -> torch.Tensor:
        """Everything positional, per token: ``[B, T * tokens_per_step, d]``."""
        timesteps = timesteps.long()
        if self.cfg.positional == "timestep":
            time = self.hook_time_embed(self.time_embed(timesteps))
            return time.repeat_interleave(self.cfg.tokens_per_step, dim=1)
        # original: the embedding of the window's first real timestep, on every token, plus
        # a learned embedding of each token's index in the window.
        first_real = torch.zeros_like(timesteps[:, :1]) if mask is None else _first_true(mask)
        start = timesteps.gather(1, first_real)[:, 0]  # [B]
        B, T = timesteps.shape
        time = self.hook_time_embed(self.global_pos_embed[start][:, None].expand(B, T, -1))
        k = self.cfg.tokens_per_step
        token = torch.arange(T * k, device=timesteps.device) - first_real * k  # [B, P]
        # Padding tokens take position 0; real ones count from the first real token, as in the
        # original's unpadded windows.
        return time.repeat_interleave(k, dim=1) + self.pos_embed[token.clamp(min=0)]

    def action_logits(self, final_resid: torch.Tensor) -> torch.Tensor:
        """``[B, P, d_model]`` (from ``transformer``) -> logits ``[B, T, n_actions]``."""
        k = self.cfg.tokens_per_step
        return self.action_logits_at(final_resid[:, self.cfg.state_token_offset :: k])

    def action_logits_at(self, state_resid: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., n_actions]`` of final residuals already taken at state tokens."""
        return F.linear(state_resid, self.W_U.T, self.b_U)

    def return_predictions(self, final_resid: torch.Tensor) -> torch.Tensor:
        """Predicted next-step RTG (divided by ``rtg_scale``) at each action token, ``[B, T]``.

        Raises:
            ValueError: the model has no return head (``cfg.return_head`` is False).
        """
        k = self.cfg.tokens_per_step
        return self.return_predictions_at(final_resid[:, k - 1 :: k])

    def return_predictions_at(self, action_resid: torch.Tensor) -> torch.Tensor:
        """Predictions ``[...]`` from final residuals ``[..., d_model]`` already taken at action
        tokens (see ``return_predictions``)."""
        if not self.cfg.return_head:
            raise ValueError("this model has no return head (set model.return_head: true)")
        return self.return_head(action_resid).squeeze(-1)

    # -- caches and checkpoints ----------------------------------------------------------------

    def run_with_cache(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, ActivationCache]:
        """``forward`` with every hook cached: ``(logits, ActivationCache)``. Takes a
        ``Contexts`` or the tensor arguments, and TransformerLens's keyword arguments
        (``names_filter``, ``remove_batch_dim``, ...). Contexts that carry state embeddings
        start from them: the encoder's hooks are then not in the cache."""
        if args and isinstance(args[0], Contexts) and args[0].encoded_for(self):
            contexts = args[0]
            if len(args) > 1 or kwargs.keys() - {"names_filter"}:
                raise TypeError(
                    "run_with_cache(contexts) with state embeddings takes only names_filter"
                )
            return self.run_with_cache_from_states(
                contexts.state_embeddings,
                contexts.actions,
                contexts.rtg,
                contexts.timesteps,
                contexts.mask,
                names_filter=kwargs.get("names_filter"),
            )
        logits, cache = super().run_with_cache(*args, **kwargs)
        has_batch_dim = not kwargs.get("remove_batch_dim", False)
        return logits, ActivationCache(cache, self, has_batch_dim=has_batch_dim)

    def run_with_cache_from_states(
        self,
        state_embeddings: torch.Tensor,
        actions: torch.Tensor,
        rtg: torch.Tensor | None,
        timesteps: torch.Tensor,
        mask: torch.Tensor | None = None,
        *,
        names_filter: Any = None,
    ) -> tuple[torch.Tensor, ActivationCache]:
        """``run_with_cache`` from state embeddings (``embed_states``' output): analyses that
        run the same frames many times encode them once. The encoder's hooks are not cached."""
        cache, fwd, _ = self.get_caching_hooks(names_filter)
        with self.hooks(fwd_hooks=fwd):
            logits = self.forward_from_state_embeddings(
                state_embeddings, actions, rtg, timesteps, mask
            )
        return logits, ActivationCache(cache, self)

    @property
    def device(self) -> torch.device:
        return self.W_U.device

    def save_pretrained(
        self,
        directory: str | Path,
        *,
        metadata: dict[str, Any] | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write ``model.safetensors`` and ``config.json`` (and ``metadata.json`` when given)
        to ``directory`` atomically; see ``atari_dt.model.checkpoint.save_pretrained``."""
        return save_pretrained(self, directory, metadata=metadata, overwrite=overwrite)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, *, device: str | torch.device | None = None
    ) -> HookedDecisionTransformer:
        """Load a model written by ``save_pretrained``, in eval mode on ``device`` (CPU by
        default): built from ``config.json``, every tensor of ``model.safetensors`` checked
        against it.

        Raises:
            FileNotFoundError: missing directory or file.
            CheckpointError: corrupt files, or a tensor missing, unexpected, or of the wrong
                shape or dtype for the config (the first mismatch is named).
            ConfigError: unknown keys or wrong types in ``config.json``.
        """
        model = cls(read_config(directory))
        load_weights(model, directory)
        return model.to(device or "cpu").eval()


def _first_true(mask: torch.Tensor) -> torch.Tensor:
    """Index ``[B, 1]`` of the first True in each row of a bool ``[B, T]`` mask."""
    return mask.long().argmax(dim=1, keepdim=True)
