"""How a command computes: torch's thread count and the model's precision (float32, or bf16
under autocast), and whether this machine runs bf16 natively."""

from __future__ import annotations

import ctypes
import platform
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch


def has_native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has bf16 arithmetic units: a CUDA GPU that supports bf16, or a CPU
    with AVX512-BF16 or AMX. Elsewhere torch emulates bf16 matmuls (15x slower than float32
    on the 2-core AVX2 machine this project is measured on)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def warn_if_emulated(precision: str, device: torch.device | str) -> None:
    """A warning when ``precision`` is bfloat16 on a device that would emulate it."""
    if precision == "bfloat16" and not has_native_bf16(device):
        warnings.warn(
            f"precision bfloat16 on {torch.device(device)} without bf16 units: torch emulates "
            "it, several times slower than float32 here; use precision float32",
            stacklevel=2,
        )


def check_precision(precision: str) -> str:
    """``precision`` if it is ``float32`` or ``bfloat16``; ValueError otherwise."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"precision must be 'float32' or 'bfloat16', got {precision!r}")
    return precision


def autocast(device: torch.device | str, precision: str) -> torch.autocast:
    """``torch.autocast`` to bf16 when ``precision`` is ``bfloat16``, a no-op otherwise."""
    check_precision(precision)
    device_type = torch.device(device).type
    return torch.autocast(device_type, torch.bfloat16, enabled=precision == "bfloat16")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block (0 or None: unchanged),
    restored after."""
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameter numbers (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc's malloc serve every allocation from its heap and keep what is freed, so a
    training step's large tensors (a batch's float frames, 108 MB at batch 32 x T 30; each
    conv activation) reuse memory instead of being mapped fresh, page by page, every step.
    On CPU that first touch cost more than the work itself: converting a batch's frames to
    float took 85 ms with it and 9 ms without. Process-wide; the process's peak memory is
    unchanged, but memory freed is kept for reuse rather than returned to the system.
    Returns whether it took effect (glibc only; a no-op elsewhere)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    no_mmap = libc.mallopt(_M_MMAP_MAX, 0)
    no_trim = libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)
    return bool(no_mmap and no_trim)
