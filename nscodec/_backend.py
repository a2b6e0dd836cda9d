"""The kernel backend: the one place that lists nscodec's compiled kernels, builds and loads them, and reports which
run (gsplat's ``_backend.py``). Every kernel has a plain-torch twin, the reference the tests compare it with.

* ``grid_encode`` (``nscodec/csrc/grid_encode.cpp``): hash and dense (VQ-AD) grid levels, for :mod:`nscodec.grid`;
  twin :mod:`nscodec.grid._torch_impl`;
* ``vm_encode`` (``vm_encode.cpp``): TensoRF's VM planes and lines, for :mod:`nscodec.grid`; twin in the same module;
* ``factorized_rate`` (``factorized_rate.cpp``): the factorized prior's rate and its gradient, for
  :mod:`nscodec.coding.entropy_models`; twin: the torch ops there;
* ``sparse_adam`` (``sparse_adam.cpp``): lazy Adam on the rows a step touched, for :mod:`nscodec.optim`; twin:
  ``torch.optim.SparseAdam``'s step.

(:data:`KERNELS` is the table in code.) A module asks for its kernel by name, :func:`kernel`; nothing here imports
them back. The CUDA paths are nerfacc's (:mod:`nscodec.render`); there is no CUDA source of nscodec's own.

Each kernel is compiled once per machine with ``torch.utils.cpp_extension.load`` (g++ and ninja; the grid source takes
about half a minute) into torch's extension cache (``$TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``);
later processes load the cached library.

Each build folder is named after the kernel plus a key of its source's absolute path, its compiler flags and the
torch version (:func:`build_name`). Two checkouts (or virtual environments) on one machine therefore never share a
folder: with one shared folder, ninja rebuilt the kernel each time the other checkout had used it last (half a minute
per process start), and a library built against another torch could have been loaded.

A build holds the lock file ``<cache>/<name>/lock`` (torch's ``FileBaton``), and torch waits for as long as it exists. A
build killed midway leaves it behind, and every later load would wait forever: :func:`clear_stale_lock` removes a
lock once nothing in the build folder has changed for :data:`STALE_LOCK_SECONDS` (with one warning).

``NSCODEC_KERNELS`` picks: ``auto`` (default: the kernel when it builds, else the twin with one warning saying
why), ``cpp`` (the kernel, or an :class:`~nscodec.errors.NscError` naming why it did not build), ``torch``
(always the twin). :func:`kernel_report` says which runs, and why.
"""

from __future__ import annotations

import functools
import os
import re
import time
import warnings
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from nscodec.errors import NscError

__all__ = ["KERNELS", "Kernel", "STALE_LOCK_SECONDS", "build_name", "build_kernel", "clear_stale_lock", "kernel",
           "kernel_choice", "kernel_report", "preload_kernels"]

#: folder of every kernel source
CSRC = Path(__file__).resolve().parent / "csrc"


@dataclass(frozen=True)
class Kernel:
    """One compiled kernel: its extension name, its source in :data:`CSRC`, and whether it is built with
    :func:`simd_flags` (AVX2/FMA where torch runs them; the values do not change, see ``-ffp-contract=off``)."""

    module: str
    source: str
    simd: bool

    @property
    def path(self) -> Path:
        return CSRC / self.source


#: every kernel of nscodec, by the name its users ask for (module docstring)
KERNELS: Dict[str, Kernel] = {
    "grid_encode": Kernel("nscodec_grid_encode", "grid_encode.cpp", simd=True),
    "vm_encode": Kernel("nscodec_vm_encode", "vm_encode.cpp", simd=True),
    "factorized_rate": Kernel("nscodec_factorized_rate", "factorized_rate.cpp", simd=True),
    "sparse_adam": Kernel("nscodec_sparse_adam", "sparse_adam.cpp", simd=False),
}

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


def build_kernel(name: str, simd: Optional[bool] = None) -> Tuple[Optional[Any], str]:
    """``(module, why)``: kernel ``name`` of :data:`KERNELS` built (or loaded from the cache), with or without the SIMD
    flags (``simd`` None: as the table says); ``module`` None and ``why`` the reason when it does not build. Ignores
    ``NSCODEC_KERNELS`` (benches use it to time a variant).

    Raises:
        NscError: an unknown kernel name.
    """
    if name not in KERNELS:
        raise NscError(f"unknown kernel {name!r} (nscodec has: {', '.join(KERNELS)})")
    k = KERNELS[name]
    return _build(k.module, str(k.path), k.simd if simd is None else bool(simd))


def kernel(name: str) -> Optional[Any]:
    """The compiled module of kernel ``name`` (:data:`KERNELS`), or None where its torch twin runs
    (``NSCODEC_KERNELS=torch``, or ``auto`` and the build failed: one warning).

    Raises:
        NscError: ``NSCODEC_KERNELS=cpp`` and the build failed, an invalid ``NSCODEC_KERNELS``, an unknown name.
    """
    choice = kernel_choice()
    if name not in KERNELS:
        raise NscError(f"unknown kernel {name!r} (nscodec has: {', '.join(KERNELS)})")
    if choice == "torch":
        return None
    mod, why = build_kernel(name)
    if mod is None:
        if choice == "cpp":
            raise NscError(f"NSCODEC_KERNELS=cpp but the C++ kernel {KERNELS[name].module} did not build ({why}); install "
                           "g++ and ninja, or set NSCODEC_KERNELS=torch")
        _warn_once(KERNELS[name].module, why)
    return mod


def kernel_report() -> Dict[str, str]:
    """``{kernel: "cpp" | "torch (why)"}``: what runs for each kernel of :data:`KERNELS` in this process."""
    choice = kernel_choice()
    out = {}
    for name in KERNELS:
        if choice == "torch":
            out[name] = "torch (NSCODEC_KERNELS=torch)"
            continue
        mod, why = build_kernel(name)
        out[name] = "cpp" if mod is not None else f"torch ({why})"
    return out


def preload_kernels() -> None:
    """Build or load every kernel of :data:`KERNELS` now (the first use on a fresh machine compiles them), e.g. before
    timing."""
    for name in KERNELS:
        kernel(name)
