"""An independent plain-PyTorch Decision Transformer for Atari, written from the description of
the original (Chen et al. 2021; kzl/decision-transformer ``atari/``; FACTS.md §2), with the
original's module layout so its ``state_dict`` has the original key names.

It shares no code with ``atari_dt.model``: the importer test converts its weights and compares
logits, and the hook-overhead benchmark runs it as the hook-free baseline.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class CausalSelfAttention(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.key = nn.Linear(n_embd, n_embd)
        self.query = nn.Linear(n_embd, n_embd)
        self.value = nn.Linear(n_embd, n_embd)
        self.attn_drop = nn.Dropout(dropout)
        self.resid_drop = nn.Dropout(dropout)
        self.proj = nn.Linear(n_embd, n_embd)
        mask = torch.tril(torch.ones(block_size + 1, block_size + 1))
        self.register_buffer("mask", mask.view(1, 1, block_size + 1, block_size + 1))
        self.n_head = n_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.size()
        k = self.key(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        q = self.query(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = self.value(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
        att = att.masked_fill(self.mask[:, :, :T, :T] == 0, float("-inf"))
        att = self.attn_drop(F.softmax(att, dim=-1))
        y = (att @ v).transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.proj(y))


class Block(nn.Module):
    def __init__(self, n_embd: int, n_head: int, block_size: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(n_embd)
        self.ln2 = nn.LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, block_size, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd),
            nn.GELU(),
            nn.Linear(4 * n_embd, n_embd),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ReferenceAtariDT(nn.Module):
    """``model_type`` ``reward_conditioned`` (tokens R, s, a) or ``naive`` (s, a)."""

    def __init__(
        self,
        vocab_size: int,
        context_length: int,
        max_timestep: int,
        n_layer: int = 6,
        n_head: int = 8,
        n_embd: int = 128,
        dropout: float = 0.1,
        model_type: str = "reward_conditioned",
    ) -> None:
        super().__init__()
        block_size = 3 * context_length
        self.n_embd, self.model_type = n_embd, model_type
        self.tok_emb = nn.Embedding(vocab_size, n_embd)
        self.pos_emb = nn.Parameter(torch.zeros(1, block_size + 1, n_embd))
        self.global_pos_emb = nn.Parameter(torch.zeros(1, max_timestep + 1, n_embd))
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(
            *[Block(n_embd, n_head, block_size, dropout) for _ in range(n_layer)]
        )
        self.ln_f = nn.LayerNorm(n_embd)
        self.head = nn.Linear(n_embd, vocab_size, bias=False)
        self.state_encoder = nn.Sequential(
            nn.Conv2d(4, 32, 8, stride=4, padding=0),
            nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=0),
            nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1, padding=0),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(3136, n_embd),
            nn.Tanh(),
        )
        # The original creates ret_emb for both model types (naive models never use it).
        self.ret_emb = nn.Sequential(nn.Linear(1, n_embd), nn.Tanh())
        self.action_embeddings = nn.Sequential(nn.Embedding(vocab_size, n_embd), nn.Tanh())

    def forward(
        self,
        states: torch.Tensor,
        actions: torch.Tensor,
        rtgs: torch.Tensor | None,
        timesteps: torch.Tensor,
        training_shape: bool = True,
    ) -> torch.Tensor:
        """``states`` float ``(B, T, 4*84*84)`` in [0, 1]; ``actions`` ``(B, T, 1)`` (or
        ``(B, T-1, 1)`` in the evaluation shape); ``rtgs`` ``(B, T, 1)``; ``timesteps``
        ``(B, 1, 1)`` = the window's first timestep. ``training_shape=False`` builds the
        evaluation sequence of 3T-1 (2T-1) tokens. Returns logits at the state tokens."""
        B, T = states.shape[:2]
        states_flat = states.reshape(-1, 4, 84, 84).float().contiguous()
        state_emb = self.state_encoder(states_flat).reshape(B, T, self.n_embd)
        per_step = 3 if self.model_type == "reward_conditioned" else 2
        n_tokens = per_step * T - (0 if training_shape else 1)
        tokens = torch.zeros(B, n_tokens, self.n_embd, dtype=torch.float32)
        action_emb = self.action_embeddings(actions.long().squeeze(-1))
        if self.model_type == "reward_conditioned":
            tokens[:, ::3, :] = self.ret_emb(rtgs.float())
            tokens[:, 1::3, :] = state_emb
            tokens[:, 2::3, :] = action_emb[:, -T + (0 if training_shape else 1) :, :]
        else:
            tokens[:, ::2, :] = state_emb
            tokens[:, 1::2, :] = action_emb[:, -T + (0 if training_shape else 1) :, :]
        all_global = torch.repeat_interleave(self.global_pos_emb, B, dim=0)
        positions = (
            torch.gather(all_global, 1, torch.repeat_interleave(timesteps, self.n_embd, dim=-1))
            + self.pos_emb[:, :n_tokens, :]
        )
        x = self.blocks(self.drop(tokens + positions))
        logits = self.head(self.ln_f(x))
        return logits[:, 1::3, :] if self.model_type == "reward_conditioned" else logits[:, ::2, :]


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Every parameter drawn afresh (positions included, which the original zero-initialises),
    so a wrong mapping of any tensor changes the logits."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            scale = 1.0 if "ln" in name and name.endswith("weight") else 0.0
            param.copy_(scale + 0.1 * torch.randn(param.shape, generator=generator))
