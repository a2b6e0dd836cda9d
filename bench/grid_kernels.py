"""Microbenchmark of the ways to build the grid core on CPU, side by side in one process: the plain-torch twin
(eager), the same twin under ``torch.compile`` (inductor's C++/OpenMP backend), and nscodec's C++ kernels.

Cases (shapes of the CPU presets on lego 200²): SHACIRA's hash encoding (8 levels 16→256, T = 2^15, F = 2) forward +
backward on 200k points; one VQ-AD level (128³ cells, 16 features, 16-row codebook) straight-through lookup forward +
backward on 100k points; the factorized-prior rate of SHACIRA's latents (2 × 211k) forward + backward (exact, and
through 4,096 tabulated knots as shacira trains); the lazy-Adam step of 200k rows of a 129³ × 16 logits table;
TensoRF's VM encoding (ectensorf on fox: planes 160², 48 appearance components) forward + backward on 50k samples
along rays, against nerfstudio's ``TensorVMEncoding`` (grid_sample); the L∞ scene contraction of 300k points against
nerfstudio's ``SceneContraction``. Median of ``--repeats`` timed calls after ``--warmup``. The hash and VQ-AD cases also
time the grid kernel built without the AVX2/FMA flags (:func:`nscodec._backend.simd_flags`), as it was before stop 30.

    python bench/grid_kernels.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from common import record, update_doc_section  # noqa: E402


def timed(fn, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000.0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = "python bench/grid_kernels.py " + " ".join(sys.argv[1:])

    from nscodec._backend import preload_kernels
    from nscodec.coding.entropy_models import FactorizedPrior
    from nscodec.coding.quantization import quantize
    from nscodec.grid import _torch_impl, _wrapper
    from nscodec.optim import FusedSparseAdam
    from nscodec.shacira.field import ShaciraHashEncoding
    from nscodec.vqad.grid import MultiLevelVQGrid

    preload_kernels()
    rows = []
    g = torch.Generator().manual_seed(0)

    # --- SHACIRA hash encoding
    enc = ShaciraHashEncoding(num_levels=8, min_res=16, max_res=256, log2_hashmap_size=15, compress=False)
    levels = enc.grid_levels()
    x = torch.rand(200_000, 3, generator=g)
    table = torch.randn(enc.num_rows, 2, generator=g, requires_grad=True)
    grad = torch.randn(200_000, 8, 2, generator=g)

    def hash_step(fn):
        return lambda: torch.autograd.grad(fn(x, table), table, grad)

    from nscodec import _backend

    no_simd, why = _backend.build_kernel("grid_encode", simd=False)  # the same source, no SIMD flags
    if no_simd is None:
        raise SystemExit(f"grid_kernels: the grid kernel did not build ({why})")

    def without_simd(fn):
        def run():
            saved = _wrapper.cpu_kernel
            _wrapper.cpu_kernel = lambda: no_simd
            try:
                return fn()
            finally:
                _wrapper.cpu_kernel = saved
        return run

    cases = {"hash encoding fwd+bwd (200k points, 8 levels)": {
        "torch twin": hash_step(lambda a, t: _torch_impl.hash_encode(a, t, levels, 8)),
        "C++ kernel": hash_step(lambda a, t: _wrapper.hash_encode(a, t, levels)),
        "C++ kernel, no SIMD flags": without_simd(hash_step(lambda a, t: _wrapper.hash_encode(a, t, levels))),
    }}
    if not args.no_compile:
        compiled = torch.compile(lambda a, t: _torch_impl.hash_encode(a, t, levels, 8), dynamic=False)
        cases["hash encoding fwd+bwd (200k points, 8 levels)"]["torch.compile(twin)"] = hash_step(compiled)

    # --- VQ-AD level (straight-through lookup)
    vq = MultiLevelVQGrid([128], feature_dim=16, mode="vq", bits=4)
    xv = torch.rand(100_000, 3, generator=g)

    def vq_step(impl):
        def run():
            import os

            os.environ["NSCODEC_KERNELS"] = impl
            try:
                out = vq(xv, 0)
                out.pow(2).sum().backward()
                vq.zero_grad(set_to_none=True)
            finally:
                os.environ.pop("NSCODEC_KERNELS", None)
        return run

    cases["VQ-AD level 128³ ST lookup fwd+bwd (100k points)"] = {"torch twin": vq_step("torch"), "C++ kernel": vq_step("cpp"),
                                                               "C++ kernel, no SIMD flags": without_simd(vq_step("cpp"))}

    # --- factorized prior rate
    prior = FactorizedPrior(2)
    y = (torch.randn(2, 211_000, generator=g) * 3).requires_grad_()

    def rate_step(fused: bool, knots: int = 0):
        def run():
            y_hat = quantize(y, "noise")
            bits = prior.rate(y_hat, knots=knots) if fused else FactorizedPrior.rate_bits(prior.likelihood(y_hat))
            bits.backward()
        return run

    cases["factorized-prior rate fwd+bwd (2 × 211k latents)"] = {
        "torch twin": rate_step(False), "C++ kernel": rate_step(True),
        "C++ kernel, tabulated (4,096 knots; shacira's training rate)": rate_step(True, 4096)}
    if not args.no_compile:
        def rate_fn(v):
            return FactorizedPrior.rate_bits(prior.likelihood(v))
        crate = torch.compile(rate_fn, dynamic=False)
        cases["factorized-prior rate fwd+bwd (2 × 211k latents)"]["torch.compile(twin)"] = lambda: crate(quantize(y, "noise")).backward()

    # --- lazy Adam
    m, k = 129 ** 3, 16
    pa, pb = (torch.nn.Parameter(torch.randn(m, k, generator=g)) for _ in range(2))
    opts = {"torch twin": (torch.optim.SparseAdam([pa], lr=0.1), pa), "C++ kernel": (FusedSparseAdam([pb], lr=0.1), pb)}
    rows_u = torch.randperm(m, generator=g)[:200_000].sort().values
    vals = torch.randn(rows_u.numel(), k, generator=g)

    def adam_step(name):
        opt, p = opts[name]

        def run():
            p.grad = torch.sparse_coo_tensor(rows_u[None], vals, (m, k), is_coalesced=True)
            opt.step()
        return run

    cases["lazy Adam step (200k of 2.1M rows × 16)"] = {n: adam_step(n) for n in opts}

    # --- TensoRF VM encoding (the twin: nerfstudio's TensorVMEncoding.forward, two grid_sample calls)
    from nerfstudio.field_components.encodings import TensorVMEncoding
    from nerfstudio.field_components.spatial_distortions import SceneContraction

    from nscodec.render.contraction import contract_linf

    vm = TensorVMEncoding(resolution=160, num_components=48)
    origins = torch.rand(2_000, 3, generator=g) * 2 - 1
    dirs = torch.nn.functional.normalize(torch.randn(2_000, 3, generator=g), dim=-1)
    xs = (origins[:, None] + dirs[:, None] * torch.linspace(0, 0.6, 25)[None, :, None]).reshape(-1, 3).clamp(-1, 1)
    gvm = torch.randn(xs.shape[0], 144, generator=g)
    factors = [vm.plane_coef, vm.line_coef]
    cases["VM encoding fwd+bwd (50k samples on rays, 160², 48 components)"] = {
        "torch twin": lambda: torch.autograd.grad(vm(xs), factors, gvm),
        "C++ kernel": lambda: torch.autograd.grad(_wrapper.vm_encode(xs, vm.plane_coef, vm.line_coef), factors, gvm),
    }
    pts = torch.randn(300_000, 3, generator=g) * 3
    ns_contract = SceneContraction(order=float("inf"))
    cases["L∞ scene contraction (300k points)"] = {"torch twin": lambda: ns_contract(pts),
                                                   "amax form (contract_linf)": lambda: contract_linf(pts)}

    for case, impls in cases.items():
        base = None
        for name, fn in impls.items():
            t0 = time.perf_counter()
            ms = timed(fn, args.warmup, args.repeats)
            first = time.perf_counter() - t0
            base = ms if name == "torch twin" else base
            row = {"case": case, "implementation": name, "median_ms": round(ms, 2),
                   "speedup_vs_twin": round(base / ms, 2) if base else None, "warmup_and_timing_s": round(first, 1)}
            rows.append(row)
            print(f"{case:55s} {name:22s} {ms:9.2f} ms  {row['speedup_vs_twin']}×", flush=True)
        record("grid_kernels", rows, command, {"threads": args.threads})
    lines = [f"Command: `{command}` ({args.threads} threads; median of {args.repeats} calls after {args.warmup} warm-up "
             "calls; the torch.compile column's first call compiles, excluded from the median).", "",
             "| case | implementation | median ms | speed-up vs torch twin |", "|---|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['implementation']} | {r['median_ms']} | {r['speedup_vs_twin']}× |")
    update_doc_section("grid_kernels", "## Grid core: how it is built (CPU microbenchmark)\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
