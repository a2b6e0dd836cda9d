"""VM feature sampling, forward + backward: nerfstudio's grid_sample autograd vs our index_add_ backward
(:mod:`nscodec.tensorf.vm_sample`), side by side in one process, interleaved repetitions, median times.

    python bench/vm_kernel.py                 # C = 16 (density) and 48 (appearance), 160² planes, 150k points
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import record, update_doc_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=150_000)
    ap.add_argument("--resolution", type=int, default=160)
    ap.add_argument("--components", default="16,48")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from nscodec.tensorf.vm_sample import _VMFeatures, vm_features_reference

    command = "python bench/vm_kernel.py " + " ".join(sys.argv[1:])
    rows = []
    for c in (int(v) for v in args.components.split(",")):
        g = torch.Generator().manual_seed(c)
        plane = torch.randn(3, c, args.resolution, args.resolution, generator=g, requires_grad=True)
        line = torch.randn(3, c, args.resolution, 1, generator=g, requires_grad=True)
        x = torch.rand(args.points, 3, generator=g) * 2 - 1
        w = torch.randn(args.points, 3 * c, generator=g)
        times = {"grid_sample autograd": [], "index_add_ backward": []}
        fns = {"grid_sample autograd": vm_features_reference, "index_add_ backward": _VMFeatures.apply}
        for rep in range(args.reps + 1):
            for name, fn in fns.items():
                t0 = time.perf_counter()
                torch.autograd.grad((fn(plane, line, x) * w).sum(), (plane, line))
                if rep:  # first repetition = warm-up
                    times[name].append(time.perf_counter() - t0)
        ref, ours = (statistics.median(times[k]) for k in fns)
        rows.append({"components": c, "resolution": args.resolution, "points": args.points, "threads": args.threads,
                     "reference_seconds": round(ref, 4), "ours_seconds": round(ours, 4), "speedup": round(ref / ours, 2)})
        print(rows[-1], flush=True)
    record("vm_kernel", rows, command)
    lines = ["## VM feature sampling kernel (forward + backward, CPU)", "", f"Command: `{command}` (median of {args.reps} "
             "interleaved repetitions after a warm-up; planes and lines of one VM stack, random points in the box).", "",
             "| components C | plane res | points | threads | grid_sample autograd (s) | ours (s) | speedup |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['components']} | {r['resolution']} | {r['points']:,} | {r['threads']} | {r['reference_seconds']:.3f} | "
              f"{r['ours_seconds']:.3f} | {r['speedup']:.2f}× |" for r in rows]
    update_doc_section("vm_kernel", "\n".join(lines))


if __name__ == "__main__":
    main()
