"""Run the test suite as other machines would: under every CPU kernel set torch has here, with
one and two OpenMP threads, and under other test seeds (``ATARI_DT_TEST_SEED``, tests/seeds.py).

A kernel set fixes both of torch's CPU back ends: ATen's own kernels (``ATEN_CPU_CAPABILITY``)
and oneDNN's, which run the convolutions and ignore that variable (``ONEDNN_MAX_CPU_ISA``).

A test that passes under one setting and fails under another tests a floating-point or
sampling accident, not a property. ``make test-portable`` runs this; it is not part of
``make test`` (about 6-8 suite runs, 30-40 minutes on 2 cores).

    python tests/portable.py [--full] [--seeds 0,1,2] [-- PYTEST_ARGS ...]
    make test-portable PORTABLE_ARGS="--full"

The default matrix: each kernel set x {1, 2} threads at seed 0, plus the other seeds at this
CPU's own kernels and 2 threads; ``--full`` runs the whole product. Exits 1 when any run failed,
after a table of the tests that failed and under which settings.
"""

from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# oneDNN's instruction-set cap for each of ATen's kernel sets.
ONEDNN_ISA = {"default": "SSE41", "avx2": "AVX2", "avx512": "AVX512_CORE"}


@dataclass(frozen=True)
class Setting:
    """One run of the suite: the kernel set (``ATEN_CPU_CAPABILITY`` and its
    ``ONEDNN_MAX_CPU_ISA``), ``OMP_NUM_THREADS`` and the test seed."""

    kernels: str
    threads: int
    seed: int

    def __str__(self) -> str:
        return f"kernels={self.kernels} threads={self.threads} seed={self.seed}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "ATEN_CPU_CAPABILITY": self.kernels,
            "ONEDNN_MAX_CPU_ISA": ONEDNN_ISA[self.kernels],
            "OMP_NUM_THREADS": str(self.threads),
            "ATARI_DT_TEST_SEED": str(self.seed),
        }


def kernel_sets() -> list[str]:
    """The kernel sets this CPU can run, lowest first (torch reports its best one)."""
    best = (
        subprocess.run(
            [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
            env={
                k: v
                for k, v in os.environ.items()
                if k not in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")
            },
            capture_output=True,
            text=True,
            check=True,
        )
        .stdout.strip()
        .lower()
    )
    order = ["default", "avx2", "avx512"]
    return order[: order.index(best) + 1] if best in order else ["default"]


def matrix(kernels: list[str], seeds: list[int], full: bool) -> list[Setting]:
    if full:
        return [Setting(k, t, s) for s, k, t in itertools.product(seeds, kernels, (1, 2))]
    first = [Setting(k, t, seeds[0]) for k, t in itertools.product(kernels, (1, 2))]
    return first + [Setting(kernels[-1], 2, s) for s in seeds[1:]]


def run_suite(setting: Setting, report: Path, pytest_args: list[str]) -> tuple[int, set[str]]:
    """Run pytest under ``setting``; its exit code and the ids of the tests that failed."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={report}",
        *pytest_args,
    ]
    code = subprocess.run(command, cwd=ROOT, env=setting.env()).returncode
    failed: set[str] = set()
    if report.exists():
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.add(f"{case.get('classname')}::{case.get('name')}")
    return code, failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--full", action="store_true", help="every kernels x threads x seed")
    parser.add_argument("--seeds", default="0,1,2", help="test seeds (default 0,1,2)")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        parser.error(f"--seeds takes integers separated by commas, got {args.seeds!r}")
    settings = matrix(kernel_sets(), seeds, args.full)
    failures: dict[Setting, set[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, setting in enumerate(settings, 1):
            print(f"\n=== [{i}/{len(settings)}] {setting}", flush=True)
            start = time.monotonic()
            code, failed = run_suite(setting, Path(tmp) / f"{i}.xml", args.pytest_args)
            print(f"=== {setting}: exit {code} in {time.monotonic() - start:.0f} s", flush=True)
            if code != 0:
                failures[setting] = failed or {"(pytest exited with no test failure recorded)"}
    print(f"\n{len(settings) - len(failures)} of {len(settings)} settings passed")
    for test in sorted(set().union(*failures.values()) if failures else ()):
        where = [s for s, tests in failures.items() if test in tests]
        kind = "FAILED everywhere" if len(where) == len(settings) else "FLIPPED"
        print(f"{kind} {test}: failed under {'; '.join(str(s) for s in where)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
