"""Build-at-first-use loader of nscodec's C++ CPU kernels (one place decides whether they run).

Each kernel source (``nscodec/grid/csrc/grid_encode.cpp`` and ``vm_encode.cpp``, ``nscodec/coding/csrc/factorized_rate.cpp``,
``nscodec/csrc/sparse_adam.cpp``) is compiled
once per machine with ``torch.utils.cpp_extension.load`` (g++ and ninja; the grid source takes about half a minute)
into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``); later processes
load the cached library. Every kernel has a plain-torch twin that runs where the kernel cannot.

Each build folder is named after the kernel plus a key of its source's absolute path, its compiler flags and the
torch version (:func:`build_name`). Two checkouts (or virtual environments) on one machine therefore never share a
folder: with one shared folder, ninja rebuilt the kernel each time the other checkout had used it last (half a minute
per process start), and a library built against another torch could have been loaded.

A build holds the lock file ``<cache>/<name>/lock`` (torch's ``FileBaton``), and torch waits for as long as it exists. A
build killed midway leaves it behind, and every later load would wait forever: :func:`clear_stale_lock` removes a
lock once nothing in the build folder has changed for :data:`STALE_LOCK_SECONDS` (with one warning).

``NSCODEC_KERNELS`` picks: ``auto`` (default: the kernel when it builds, else the twin with one warning saying
why), ``cpp`` (the kernel, or an :class:`~nscodec.coding.errors.NscError` naming why it did not build), ``torch``
(always the twin).
"""

from __future__ import annotations

import functools
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Optional, Tuple

from nscodec.coding.errors import NscError

__all__ = ["STALE_LOCK_SECONDS", "build_name", "clear_stale_lock", "kernel_choice", "load_kernel", "preload_kernels"]

#: seconds without a change in a build folder after which its lock counts as left by a killed build (a build here
#: writes a file at least every minute or so: build.ninja, the object file, the library)
STALE_LOCK_SECONDS = 300.0


def kernel_choice() -> str:
    """``NSCODEC_KERNELS`` as ``auto`` / ``cpp`` / ``torch``. Raises NscError for any other value."""
    choice = os.environ.get("NSCODEC_KERNELS", "auto").strip().lower() or "auto"
    if choice not in ("auto", "cpp", "torch"):
        raise NscError(f"NSCODEC_KERNELS={choice!r}: expected auto, cpp or torch")
    return choice


def simd_flags() -> list:
    """Compiler flags for ATen's ``Vectorized<float>``: AVX2 + FMA where torch itself runs its AVX2 (or AVX-512)
    kernels on this CPU, nothing (the scalar fallback) elsewhere."""
    import torch

    cap = torch.backends.cpu.get_cpu_capability()
    if cap in ("AVX2", "AVX512"):
        return ["-mavx2", "-mfma", "-DCPU_CAPABILITY_AVX2", "-DCPU_CAPABILITY=AVX2"]
    return []


def _ninja_on_path() -> None:
    """torch runs ``ninja`` from ``PATH``; a virtual environment's own ninja (nerfstudio depends on the package) is
    in ``sys.executable``'s folder, which is not on ``PATH`` unless the environment is activated."""
    import shutil
    import sys

    if shutil.which("ninja") is None:
        env_bin = str(Path(sys.executable).parent)
        if shutil.which("ninja", path=env_bin):
            os.environ["PATH"] = env_bin + os.pathsep + os.environ.get("PATH", "")


def clear_stale_lock(build_dir: Path, stale_after: float = STALE_LOCK_SECONDS, poll: float = 1.0) -> bool:
    """Wait while another process builds in ``build_dir``; remove its ``lock`` once the newest file there is
    ``stale_after`` seconds old (a build that was killed), with one RuntimeWarning naming the folder.

    Returns:
        True when a stale lock was removed; False when there was none or its build finished meanwhile.
    """
    lock = Path(build_dir) / "lock"
    while True:
        try:
            newest = max(f.stat().st_mtime for f in Path(build_dir).iterdir())
        except (FileNotFoundError, ValueError):  # the folder or a file vanished meanwhile: look again next round
            newest = time.time()
        if not lock.exists():
            return False
        age = time.time() - newest
        if age >= stale_after:
            try:
                lock.unlink()
            except FileNotFoundError:
                return False
            warnings.warn(f"nscodec: removed the lock {lock}, left by a kernel build that stopped {age:.0f} s ago "
                          "(a killed process); building again", RuntimeWarning, stacklevel=3)
            return True
        time.sleep(min(poll, stale_after - age))


def _build_dir(name: str) -> Optional[Path]:
    """torch's build folder of extension ``name`` (None when this torch lays it out differently)."""
    try:
        from torch.utils import cpp_extension

        return Path(cpp_extension._get_build_directory(name, verbose=False))
    except Exception:  # a private torch helper: without it, torch's own wait applies
        return None


#: what a build error says when it is the compiler's or linker's OpenMP support that failed (then: build without it)
_OPENMP_ERROR = re.compile(r"openmp|omp\.h|gomp", re.IGNORECASE)


def build_name(name: str, source: str, flags: list) -> str:
    """The extension (and build-folder) name of kernel ``name``: ``<name>_<key>``, ``key`` the first 10 hex digits of
    the SHA-256 of the source's resolved path, ``flags`` and ``torch.__version__``."""
    import hashlib

    import torch

    text = "|".join([str(Path(source).resolve()), " ".join(flags), torch.__version__])
    return f"{name}_{hashlib.sha256(text.encode()).hexdigest()[:10]}"


@functools.lru_cache(maxsize=None)
def _build(name: str, source: str, simd: bool) -> Tuple[Optional[Any], str]:
    try:
        from torch.utils import cpp_extension

        _ninja_on_path()

        verbose = os.environ.get("NSCODEC_KERNELS_VERBOSE", "") not in ("", "0")
        # -ffp-contract=off: no fused multiply-adds, so the kernels round as their torch twins do.
        # -fopenmp: ATen's at::parallel_for is inline OpenMP; compiled without it every kernel runs on one thread.
        # The library then needs libgomp.so.1, which resolves to the one torch has already loaded (same soname).
        flags = ["-O3", "-ffp-contract=off", "-fno-math-errno"] + (simd_flags() if simd else [])
        name = build_name(name, source, flags)
        build_dir = _build_dir(name)
        if build_dir is not None:
            clear_stale_lock(build_dir)
        try:
            mod = cpp_extension.load(name=name, sources=[source], extra_cflags=flags + ["-fopenmp"],
                                     extra_ldflags=["-fopenmp"], verbose=verbose)
        except Exception as e:
            if not _OPENMP_ERROR.search(str(e)):  # a genuine compile error: building again would only fail again
                raise
            # a compiler without OpenMP: the same kernels on one thread
            mod = cpp_extension.load(name=name, sources=[source], extra_cflags=flags, verbose=verbose)
        return mod, ""
    except Exception as e:  # no compiler, no ninja, an unwritable cache, ...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"{type(e).__name__}: {first[:300]}"


@functools.lru_cache(maxsize=None)
def _warn_once(name: str, why: str) -> None:
    warnings.warn(f"nscodec: the C++ kernel {name} is unavailable ({why}); using its slower torch twin. Install g++ "
                  "and ninja to build it, or set NSCODEC_KERNELS=torch to silence this.", RuntimeWarning, stacklevel=4)


def load_kernel(name: str, source: Path, simd: bool = False) -> Optional[Any]:
    """The compiled module ``name`` built from ``source`` (``simd``: with :func:`simd_flags`), or None (``NSCODEC_KERNELS=torch``, or ``auto`` and the
    build failed: one warning).

    Raises:
        NscError: ``NSCODEC_KERNELS=cpp`` and the build failed, or an invalid ``NSCODEC_KERNELS``.
    """
    choice = kernel_choice()
    if choice == "torch":
        return None
    mod, why = _build(name, str(source), simd)
    if mod is None:
        if choice == "cpp":
            raise NscError(f"NSCODEC_KERNELS=cpp but the C++ kernel {name} did not build ({why}); install g++ and "
                           "ninja, or set NSCODEC_KERNELS=torch")
        _warn_once(name, why)
    return mod


def preload_kernels() -> None:
    """Build or load every kernel now (the first use on a fresh machine compiles them), e.g. before timing."""
    from nscodec.coding.entropy_models import _rate_kernel
    from nscodec.grid._wrapper import cpu_kernel, vm_kernel
    from nscodec.optim import _sparse_adam_kernel

    cpu_kernel()
    vm_kernel()
    _rate_kernel()
    _sparse_adam_kernel()
