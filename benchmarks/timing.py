"""Timing every benchmark shares: contenders alternated round by round, medians with their
spread, and this machine's float32 matmul peak measured in the same run.

Machine noise (another process, a frequency change) then hits every contender alike, and a
ratio is only ever taken between figures measured side by side.
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import torch


@dataclass(frozen=True)
class Rate:
    """Work per second over the rounds: ``median`` and the slowest/fastest round."""

    median: float
    low: float
    high: float
    rounds: int

    def __str__(self) -> str:
        return f"{self.median:8.1f} [{self.low:.1f}, {self.high:.1f}]"


def alternate(
    contenders: dict[str, Callable[[], float]], rounds: int, *, warmup: int = 1
) -> dict[str, Rate]:
    """Each contender's rate over ``rounds`` alternated rounds.

    A contender is a callable that does one round of work and returns how much it did (frames,
    steps); its rate is that over the round's wall time. Every contender runs ``warmup``
    untimed rounds first (allocator, oneDNN kernel choice). The order within a round flips each
    round, so neither side always runs right after the other.
    """
    if rounds < 1:
        raise ValueError("rounds must be >= 1")
    for work in contenders.values():
        for _ in range(warmup):
            work()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            done = contenders[name]()
            rates[name].append(done / (time.perf_counter() - start))
    return {
        name: Rate(statistics.median(values), min(values), max(values), len(values))
        for name, values in rates.items()
    }


def counting_page_faults(work: Callable[[], float], faults: list[int]) -> Callable[[], float]:
    """``work``, appending the minor page faults of this process during each call to
    ``faults``: the pages a glibc default allocator maps afresh for each large buffer (and the
    kernel zeroes) show up here, and can cost a training step more than its arithmetic."""

    def run() -> float:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        done = work()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
        return done

    return run


def ratio_line(label: str, ours: Rate, reference: Rate, target: str) -> str:
    """``label: ours vs reference = ratio (target ...)``, the one line a figure prints."""
    return (
        f"{label}: {ours} vs {reference} = {ours.median / reference.median:.2f}x "
        f"(median [min, max] of {ours.rounds} rounds; target {target})"
    )


def matmul_peak(n: int = 2048, reps: int = 10, rounds: int = 5) -> float:
    """This machine's float32 matmul FLOP/s at the current thread count: the best of
    ``rounds`` rounds of ``reps`` products of two ``n x n`` matrices (a well-shaped GEMM, as
    near the hardware's limit as torch gets on this CPU)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = 0.0
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def count_flops(work: Callable[[], object]) -> float:
    """FLOPs of the matmuls and convolutions ``work`` runs, by torch's FLOP formulas (the
    arithmetic a kernel must do whatever its speed; elementwise work is not counted).

    Not torch's ``FlopCounterMode``: it tracks modules with a global module hook, and any hook
    sends our model down its full, hook-visible path, so it would count work our training
    step does not do. This dispatch mode sees every op and hooks nothing."""
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils.flop_counter import flop_registry

    class Counter(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            formula = flop_registry.get(func._overloadpacket)
            if formula is None:
                # An op without a formula may be made of ops with one (``aten.linear`` under
                # inference mode): count its decomposition, as FlopCounterMode does.
                with self:
                    out = func.decompose(*args, **kwargs)
                return func(*args, **kwargs) if out is NotImplemented else out
            out = func(*args, **kwargs)
            self.total += formula(*args, **kwargs, out_val=out)
            return out

    with Counter() as counter:
        work()
    return float(counter.total)


def explicit_attention(n_layers: int) -> list[tuple[str, Callable]]:
    """Pass-through ``hook_pattern`` hooks on every layer, for ``model.hooks(fwd_hooks=...)``:
    they force the explicit attention path in one block, so ``count_flops`` sees every
    attention FLOP of the full causal scores (it cannot see inside torch's fused CPU kernel,
    and the blocked path skips a third of them)."""
    return [(f"blocks.{i}.attn.hook_pattern", lambda x, hook: x) for i in range(n_layers)]


def cpu_capability() -> str:
    """The kernel set torch picked on this CPU (``DEFAULT``, ``AVX2``, ``AVX512``; set by
    ``ATEN_CPU_CAPABILITY``), printed beside every figure: it changes what a FLOP costs."""
    return torch.backends.cpu.get_cpu_capability()


def _serve(factory: Callable[[], Callable[[], float]], threads: int, conn: Connection) -> None:
    """A contender process: build the contender, then run one round per request. Every reply
    is ``(True, value)`` or, when the factory or a round raised, ``(False, traceback)``."""
    try:
        torch.set_num_threads(threads)
        work = factory()
        conn.send((True, "ready"))
        while conn.recv():
            conn.send((True, work()))
    except Exception:  # whatever failed goes to the parent, which raises it; then exit
        conn.send((False, traceback.format_exc()))


def _reply(name: str, pipe: Connection, process: multiprocessing.process.BaseProcess) -> Any:
    """The contender's next reply; RuntimeError naming it when it raised or died instead."""
    ready = wait([pipe, process.sentinel])
    if pipe in ready:
        with suppress(EOFError):
            ok, value = pipe.recv()
            if ok:
                return value
            raise RuntimeError(f"contender {name!r} failed in its process:\n{value}")
    process.join(timeout=5)
    raise RuntimeError(f"contender {name!r}: its process died (exit code {process.exitcode})")


@contextmanager
def in_processes(
    factories: dict[str, Callable[[], Callable[[], float]]], threads: int
) -> Iterator[dict[str, Callable[[], float]]]:
    """Contenders each built and run in a process of its own, for ``alternate``.

    A factory (picklable: a module-level function or a ``functools.partial`` of one) runs in
    a fresh ``spawn`` process at ``threads`` torch threads and returns the round callable. Each
    contender then runs under the process-wide settings it makes for itself (the allocator
    setting ``atari-dt train`` applies, say) and no other, as it would run alone; what
    ``alternate`` times is the round plus a pipe round trip (well under a millisecond). A
    contender that raises or dies raises RuntimeError here, with its traceback or exit code.
    """
    context = multiprocessing.get_context("spawn")
    contenders: dict[str, tuple[Connection, multiprocessing.process.BaseProcess]] = {}
    try:
        for name, factory in factories.items():
            parent, child = context.Pipe()
            process = context.Process(target=_serve, args=(factory, threads, child), daemon=True)
            process.start()
            child.close()  # the child's end lives in the child only: its death ends the pipe
            contenders[name] = parent, process
        for name, (pipe, process) in contenders.items():
            _reply(name, pipe, process)  # "ready"

        def proxy(name: str) -> Callable[[], float]:
            pipe, process = contenders[name]

            def round_trip() -> float:
                pipe.send(True)
                return _reply(name, pipe, process)

            return round_trip

        yield {name: proxy(name) for name in contenders}
    finally:
        for pipe, process in contenders.values():
            with suppress(OSError):
                pipe.send(False)
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
                process.join()
            pipe.close()
            process.close()
