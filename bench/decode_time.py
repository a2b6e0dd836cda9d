"""Decode time of ``.nsc`` files: reading the file and rebuilding the model (``nscodec.io.load_model``) plus running its
decoder networks (``decoded_tensors``: ectensorf's plane decoders, SHACIRA's latent decoder, CodecNeRF's decoder
half), module imports excluded (one warm-up decode first), median of ``--repeats``.

    python bench/decode_time.py bench/runs/lego_points/ectensorf/scene.nsc bench/runs/shacira_refactor/ste.nsc ...

Writes ``bench/results/decode_time.json`` (one row per file: codec, bytes, median/min/max seconds, and the share of
each decode stage: header + model build, section decoding, decoder networks).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from bench.common import ROOT, record  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("files", nargs="+")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="decode_time")
    args = ap.parse_args()
    import torch

    from nscodec.io import build_model, load_model, read_model_file

    rows = []
    for f in args.files:
        path = Path(f).resolve()
        load_model(path)[0].decoded_tensors()  # warm-up: imports, first-use initialisation
        total, build, networks = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            nsc = read_model_file(path)
            with torch.random.fork_rng(devices=[]):
                build_model(nsc)
            t1 = time.perf_counter()
            model, _ = load_model(path)
            t2 = time.perf_counter()
            model.decoded_tensors()
            t3 = time.perf_counter()
            build.append(t1 - t0)
            total.append((t2 - t1) + (t3 - t2))
            networks.append(t3 - t2)
        med = statistics.median(total)
        row = {"file": str(path.relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path), "codec": nsc.method,
               "bytes": path.stat().st_size, "decode_seconds": round(med, 3), "min_seconds": round(min(total), 3),
               "max_seconds": round(max(total), 3), "header_and_build_seconds": round(statistics.median(build), 3),
               "decoder_network_seconds": round(statistics.median(networks), 3), "threads": torch.get_num_threads(),
               "target_met": med <= 1.0}
        rows.append(row)
        print(row, flush=True)
    record(args.name, rows, "python bench/decode_time.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
