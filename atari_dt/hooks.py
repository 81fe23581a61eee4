"""Whether a module carries a hook: the test every fast path makes before it skips a module
or changes a tensor in place behind it."""

from __future__ import annotations

from torch import nn
from torch.nn.modules import module as torch_module


def is_hooked(module: nn.Module) -> bool:
    """Whether any forward or backward hook (TransformerLens's or torch's) is on ``module``."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or module._backward_hooks
        or module._backward_pre_hooks
    )


def any_hooked(model: nn.Module) -> bool:
    """Whether any module of ``model`` carries a hook, or torch has a global module hook."""
    global_hooks = (
        torch_module._global_forward_hooks,
        torch_module._global_forward_pre_hooks,
        torch_module._global_backward_hooks,
        torch_module._global_backward_pre_hooks,
    )
    return any(global_hooks) or any(is_hooked(m) for m in model.modules())
