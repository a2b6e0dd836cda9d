"""Occupancy-grid coding side by side: bit-packed + DEFLATE (``zlib``, what nscodec-tensorf / vqad / shacira
files use) against the 9-neighbour context model (``ctx3d``, :mod:`nscodec.coding.binary_context`, what ectensorf
files use), on the grids inside real ``.nsc`` files. Both codings are run on the same grid in one process; every
``ctx3d`` payload is decoded and checked bit-exact.

    python bench/occupancy_coding.py bench/runs/ectensorf_rd/ec_1e-3.nsc bench/runs/ectensorf_rd/posthoc_fp3232.nsc

Results: ``bench/results/occupancy_coding.json`` and a table in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np

from common import ROOT, record, update_doc_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+", type=Path, help=".nsc files with an 'occupancy' section")
    args = ap.parse_args()
    command = "python bench/occupancy_coding.py " + " ".join(str(f) for f in args.files)

    from nscodec.coding.binary_context import decode_binary_grid, encode_binary_grid
    from nscodec.coding.container import read_nsc
    from nscodec.coding.sections import decode_occupancy

    rows = []
    for path in args.files:
        sec = read_nsc(path).sections["occupancy"]
        grid = decode_occupancy(sec, int(sec.meta["resolution"]))
        g = grid.shape[0]
        t0 = time.perf_counter()
        deflate = zlib.compress(np.packbits(grid.reshape(-1)).tobytes(), 9)  # zlib_section default level
        t1 = time.perf_counter()
        ctx = encode_binary_grid(grid)
        t2 = time.perf_counter()
        back = decode_binary_grid(ctx)
        t3 = time.perf_counter()
        zlib.decompress(deflate)
        t4 = time.perf_counter()
        if not np.array_equal(back, grid):
            raise SystemExit(f"{path}: ctx3d round trip is not exact")
        rows.append({"file": str(path), "resolution": g, "occupied_fraction": float(grid.mean()), "zlib_bytes": len(deflate),
                     "ctx3d_bytes": len(ctx), "ratio": len(ctx) / len(deflate), "zlib_encode_s": t1 - t0,
                     "ctx3d_encode_s": t2 - t1, "ctx3d_decode_s": t3 - t2, "zlib_decode_s": t4 - t3})
        print(rows[-1], flush=True)
    record("occupancy_coding", rows, command)
    lines = ["## Occupancy grid: DEFLATE vs context-model coding", "", f"Command: `{command}`", "",
             "| file | grid | occupied | zlib bytes | ctx3d bytes | ctx3d / zlib | ctx3d encode / decode (s) |",
             "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| `{Path(r['file']).name}` | {r['resolution']}³ | {100 * r['occupied_fraction']:.1f}% | {r['zlib_bytes']:,} | "
                     f"{r['ctx3d_bytes']:,} | {r['ratio']:.2f} | {r['ctx3d_encode_s']:.2f} / {r['ctx3d_decode_s']:.2f} |")
    update_doc_section("occupancy_coding", "\n".join(lines))


if __name__ == "__main__":
    main()
