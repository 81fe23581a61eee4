"""Divergences between action distributions, for every analysis that compares two policies.

Computed in float64: between nearly equal policies (a head's mean ablation, a scan point near
its reference) a divergence is a sum of terms ~1e-4 that cancel to ~1e-7, below float32's
rounding of the terms, which then gives noise and even negative values.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def log_policy(logits: torch.Tensor) -> torch.Tensor:
    """Float64 log-probabilities ``[..., n_actions]`` of action ``logits`` ``[..., n_actions]``."""
    return torch.log_softmax(logits.double(), dim=-1)


def kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) in nats ``[...]`` of log-probabilities ``[..., A]`` (``log_q`` broadcasts)."""
    log_q = log_q.expand_as(log_p)
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(-1)


def js(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence in nats ``[...]`` (``log_q`` broadcasts)."""
    log_q = log_q.expand_as(log_p)
    log_m = torch.logaddexp(log_p, log_q) - torch.log(torch.tensor(2.0, dtype=log_p.dtype))
    return 0.5 * (kl(log_p, log_m) + kl(log_q, log_m))
