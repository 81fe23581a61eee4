"""The project's small C kernels (this folder's ``*.c``), compiled on first use and loaded
with ctypes: no torch headers, no build step at install, one shared library.

``library()`` compiles the sources with the system's C compiler (``$CC``, a program name,
default ``cc``; else ``gcc``) and ``FLAGS`` into ``$ATARI_DT_CACHE/native/`` (default
``~/.cache/atari_dt/native/``), keyed by a hash of the sources, the flags, the compiler and its
version, and the CPU (``-march=native`` builds for this CPU), through a temp file and a
rename: concurrent processes (tests, torchrun ranks) never load a half-written library, and
a corrupt file where the build should be is rebuilt.
Without a compiler, when the build fails, or with ``ATARI_DT_NATIVE=0``, it returns None
(with one warning saying why, except for ``ATARI_DT_NATIVE=0``) and every caller keeps its
torch path, which computes the same function.

Users: ``atari_dt.model.native_attention`` (attention under dropout) and
``atari_dt.model.components.Dropout`` (dropout masks).
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

FOLDER = Path(__file__).parent
SOURCES = ("attention.c", "dropout.c")
HEADERS = ("vectors.h",)
# Not -ffast-math: gcc links crtfastmath.o with it, which sets flush-to-zero for the whole
# process. These flags allow the same reassociation (vectorised sums) without that.
FLAGS = (
    "-O3", "-march=native", "-fno-math-errno", "-fno-trapping-math", "-ffinite-math-only",
    "-fno-signed-zeros", "-fassociative-math", "-fPIC", "-shared",
)  # fmt: skip


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU's model and feature flags (a home directory
    shared between machines must not hand one CPU's build to another)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        import platform

        return platform.machine() + platform.processor()
    wanted = ("model name", "flags", "Features", "CPU part")
    return "\n".join(sorted({line for line in lines if line.startswith(wanted)}))


def find_compiler() -> str | None:
    """The C compiler to build with: ``$CC`` (default ``cc``), else ``gcc``; None if neither."""
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _compiler_version(compiler: str) -> str:
    result = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60)
    return result.stdout


def library_path(compiler: str) -> Path:
    """Where the library built by ``compiler`` (this version of it) from these sources for
    this CPU is cached."""
    texts = [(FOLDER / name).read_text() for name in (*SOURCES, *HEADERS)]
    parts = [*texts, " ".join(FLAGS), compiler, _compiler_version(compiler), _cpu_signature()]
    key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
    cache = os.environ.get("ATARI_DT_CACHE") or Path.home() / ".cache" / "atari_dt"
    return Path(cache) / "native" / f"kernels-{key}.so"


def _build(compiler: str, target: Path) -> None:
    """Compile the sources into ``target`` atomically (a temp file in the same folder, then a
    rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=target.stem, suffix=".part")
    os.close(handle)
    try:
        sources = [str(FOLDER / name) for name in SOURCES]
        command = [compiler, *FLAGS, *sources, "-o", partial, "-lm"]
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=300)
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def _load(compiler: str, target: Path) -> ctypes.CDLL:
    if not target.exists():
        _build(compiler, target)
    try:
        return ctypes.CDLL(str(target))
    except OSError:  # a truncated or foreign file where the build should be: build afresh
        target.unlink(missing_ok=True)
        _build(compiler, target)
        return ctypes.CDLL(str(target))


@functools.cache
def library() -> ctypes.CDLL | None:
    """The compiled kernels, or None (see the module docstring). Callers set the argument
    types of the functions they use."""
    if os.environ.get("ATARI_DT_NATIVE", "1") == "0":
        return None
    compiler = find_compiler()
    if compiler is None:
        warnings.warn(
            "no C compiler (cc or gcc) found: attention and dropout on CPU use their slower "
            "torch paths (install gcc, or set ATARI_DT_NATIVE=0 to silence this)",
            stacklevel=2,
        )
        return None
    target = None
    try:  # any failure (no home directory, a read-only cache, a compiler error) falls back
        target = library_path(compiler)
        return _load(compiler, target)
    except Exception as error:
        if isinstance(error, subprocess.CalledProcessError):
            detail = (error.stderr or "").strip()[-500:] or f"exit status {error.returncode}"
        else:
            detail = f"{type(error).__name__}: {error}"
        where = f" into {target.parent}" if target is not None else ""
        warnings.warn(
            f"could not build or load the C kernels ({', '.join(SOURCES)}) with {compiler}"
            f"{where}: {detail}. Attention and dropout on CPU use their slower torch paths "
            "(ATARI_DT_NATIVE=0 silences this)",
            stacklevel=2,
        )
        return None


def bind(signatures: dict[str, tuple[list, object]]) -> ctypes.CDLL | None:
    """``library()`` with each named function's ``(argtypes, restype)`` set (setting them
    again is harmless: every caller declares the functions it uses), or None."""
    lib = library()
    if lib is not None:
        for name, (argtypes, restype) in signatures.items():
            function = getattr(lib, name)
            function.argtypes, function.restype = argtypes, restype
    return lib


def keep_threshold(p: float) -> int:
    """The dropout rule every mask here follows (the C kernels' hashes, numpy's fallback
    bits): an element is kept when its 32-bit draw is >= this, i.e. with probability
    ``1 - p`` to within 2^-32."""
    return min(round(p * 2**32), 2**32 - 1)
