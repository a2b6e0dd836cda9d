"""VQ-AD on lego 200² (CPU): learned VQ vs post-hoc k-means VQ vs hash (random) indices, and streaming LODs.

Each variant is one ``ns-train vqad`` run (peak RSS of that process via ``os.wait4``), exported to ``.nsc`` and
evaluated on every ``--every``-th test view after decoding (bytes = real file size):

* ``vq``    learned indices (the method) at ``--bits``; PSNR and cumulative bytes of every LOD prefix; also the
            size with raw bit-packed indices (the paper's storage);
* ``float`` the uncompressed grid of the same configuration (float16 in the file), then post-hoc k-means of its
            features per level into 2^b codewords (kmVQ, paper Table 2) for b in ``--kmeans-bits``;
* ``hash``  fixed spatial-hash indices with a codebook of 2^hash_bits rows per level, hash_bits chosen so the file
            is about as large as the learned-VQ file (paper Table 3), unless ``--hash-bits`` is given.

    flock /tmp/nscodec-cpu.lock python bench/vqad_bench.py            # full run (~30 min, one thread)

Rows go to bench/results/vqad_lego.json and the ``vqad_lego`` section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, ns_train_flags, record, update_doc_section  # noqa: E402

BIN = Path(sys.executable).parent


def train(args, work: Path, tag: str, extra: list) -> dict:
    """``ns-train vqad`` in a child process; returns config path, wall seconds, peak RSS (MiB)."""
    config = work / tag / "vqad" / "run" / "config.yml"
    done = work / tag / "train.json"
    if done.exists() and not args.retrain:
        return json.loads(done.read_text())
    cmd = [
        str(BIN / "ns-train"), "vqad", *ns_train_flags(args.data, work, args.scale), "--experiment-name", tag,
        "--max-num-iterations", str(args.steps), "--pipeline.datamanager.train-num-rays-per-batch", str(args.rays),
        *extra,
    ]
    # peak RSS via /usr/bin/time (a fresh small parent): os.wait4 on our own child would also count the pages of
    # this (large) bench process that the child shared between fork and exec
    rss_file = work / tag / "maxrss_kb.txt"
    rss_file.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], cwd=ROOT, check=True)
    seconds = time.perf_counter() - t0
    peak_kb = int(rss_file.read_text().strip().splitlines()[-1])
    info = {"config": str(config), "train_seconds": seconds, "peak_rss_mib": peak_kb / 1024, "train_command": " ".join(cmd[1:])}
    done.write_text(json.dumps(info, indent=2))
    return info


def evaluate_file(args, path: Path, lod=None) -> dict:
    from nscodec.evaluate import evaluate_model
    from nscodec.io import load_model

    model, nsc = load_model(path, lod=lod)
    ev = evaluate_model(model, Path(args.data), "test", args.scale, every=args.every, progress=False)
    return {"psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": nsc.available_bytes, "test_views": ev["num_views"],
            "resolution": f"{ev['width']}x{ev['height']}", "render_seconds": ev["render_seconds"], "lod": model.lod}


def load_trained(config: str):
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(Path(config), test_mode="inference")
    return pipeline.model.eval()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--rays", type=int, default=2048)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--kmeans-bits", default="2,4,6")
    ap.add_argument("--hash-bits", default="", help="comma-separated; default: match the learned-VQ file size")
    ap.add_argument("--variants", default="vq,float,hash")
    ap.add_argument("--every", type=int, default=20, help="evaluate every N-th test view (20 → 10 of 200 views)")
    ap.add_argument("--retrain", action="store_true")
    ap.add_argument("--name", default="vqad_lego")
    ap.add_argument("--doc-only", action="store_true", help="re-record JSON + docs from the rows of a partial run")
    args = ap.parse_args()
    command = "flock /tmp/nscodec-cpu.lock python bench/vqad_bench.py " + " ".join(sys.argv[1:])
    work = ROOT / "bench" / "runs" / args.name
    work.mkdir(parents=True, exist_ok=True)
    import torch

    torch.set_num_threads(1)
    from nscodec.io import export_model

    scene = Path(args.data).name
    rows, lod_rows = [], []
    partial = work / "rows.json"
    if args.doc_only:
        all_rows = json.loads(partial.read_text())
        cmd0 = json.loads((work / "command.txt").read_text()) if (work / "command.txt").exists() else command
        record(args.name, all_rows, cmd0)
        write_doc(args, all_rows, cmd0)
        return
    (work / "command.txt").write_text(json.dumps(command))
    variants = args.variants.split(",")
    vq_bytes = None
    if partial.exists():  # keep the rows of variants not re-run now (float also owns the k-means rows)
        owner = {"vq": "vq", "float": "float", "kmeans": "float", "hash": "hash"}
        for r in json.loads(partial.read_text()):
            if owner[r["grid_mode"]] not in variants:
                (lod_rows if "LOD" in r["series"] else rows).append(r)
                if r["grid_mode"] == "vq" and "ANS" in r["series"]:
                    vq_bytes = r["bytes"]

    def base_row(info, **kw):
        return {"method": "vqad", "scene": scene, "steps": args.steps, "rays_per_batch": args.rays,
                "train_seconds": round(info["train_seconds"], 1), "peak_rss_mib": round(info["peak_rss_mib"]),
                "rays_per_second": round(args.steps * args.rays / info["train_seconds"]), **kw}

    if "vq" in variants:
        tag = f"vq_b{args.bits}"
        info = train(args, work, tag, ["--pipeline.model.grid-mode", "vq", "--pipeline.model.bits", str(args.bits)])
        model = load_trained(info["config"])
        path = work / f"{tag}.nsc"
        vq_bytes = export_model(model, path, overwrite=True)
        sizes = model.size_report()
        model.config.index_coding = "raw"
        raw_path = work / f"{tag}_raw.nsc"
        raw_bytes = export_model(model, raw_path, overwrite=True)
        model.config.index_coding = "entropy"
        full = evaluate_file(args, path)
        rows.append(base_row(info, series=f"vqad learned VQ (b={args.bits}, ANS indices)", grid_mode="vq", bits=args.bits, **full,
                             bytes_raw_indices=raw_bytes, size_report=sizes))
        rows.append(base_row(info, series="vqad learned VQ (raw b-bit indices, paper storage)", grid_mode="vq", bits=args.bits,
                             **{**evaluate_file(args, raw_path), "bytes": raw_bytes}))
        from nscodec.coding.container import read_nsc
        from nscodec.lod import lod_table

        for r in lod_table(read_nsc(path)):
            ev = evaluate_file(args, path, lod=r["lod"])
            lod_rows.append(base_row(info, series=f"vqad LOD prefixes (b={args.bits})", grid_mode="vq", bits=args.bits, **ev))
            print(json.dumps(lod_rows[-1]))
        partial.write_text(json.dumps(rows + lod_rows, indent=2))

    if "float" in variants:
        from nscodec.vqad.model import posthoc_kmeans_model

        info = train(args, work, "float", ["--pipeline.model.grid-mode", "float"])
        fmodel = load_trained(info["config"])
        path = work / "float.nsc"
        export_model(fmodel, path, overwrite=True)
        rows.append(base_row(info, series="vqad float grid (uncompressed, fp16)", grid_mode="float", **evaluate_file(args, path)))
        for b in [int(x) for x in args.kmeans_bits.split(",") if x]:
            t0 = time.perf_counter()
            km = posthoc_kmeans_model(fmodel, b)
            km_s = time.perf_counter() - t0
            p = work / f"kmeans_b{b}.nsc"
            export_model(km, p, overwrite=True)
            km.config.index_coding = "raw"
            raw_bytes = export_model(km, work / f"kmeans_b{b}_raw.nsc", overwrite=True)
            rows.append(base_row(info, series="vqad post-hoc k-means VQ (ANS indices)", grid_mode="kmeans", bits=b,
                                 kmeans_seconds=round(km_s, 1), bytes_raw_indices=raw_bytes, **evaluate_file(args, p)))
            print(json.dumps(rows[-1]))
        partial.write_text(json.dumps(rows + lod_rows, indent=2))

    if "hash" in variants:
        if args.hash_bits:
            hbs = [int(x) for x in args.hash_bits.split(",")]
        else:
            target = vq_bytes or 300_000
            # codebook bytes per level ≈ 2^hb * k * 2 (float16); four levels, the coarse ones may be smaller
            hbs = [max(4, round(math.log2(target / 4 / (16 * 2))))]
        for hb in hbs:
            tag = f"hash_hb{hb}"
            info = train(args, work, tag, ["--pipeline.model.grid-mode", "hash", "--pipeline.model.hash-bits", str(hb)])
            model = load_trained(info["config"])
            p = work / f"{tag}.nsc"
            export_model(model, p, overwrite=True)
            rows.append(base_row(info, series="vqad hash (random) indices", grid_mode="hash", hash_bits=hb, **evaluate_file(args, p)))
            print(json.dumps(rows[-1]))
        partial.write_text(json.dumps(rows + lod_rows, indent=2))

    all_rows = rows + lod_rows
    record(args.name, all_rows, command)
    write_doc(args, all_rows, command)


def write_doc(args, rows, command) -> None:
    lines = [
        f"## vqad on {rows[0]['scene']} {rows[0]['resolution']} (CPU)", "",
        f"Command: `{command}` ({args.steps} steps × {args.rays} rays each run; test PSNR on every {args.every}-th test "
        f"view = {rows[0]['test_views']} views; bytes = real `.nsc` size after decoding; peak RSS of the `ns-train` process).", "",
        "| series | bits | PSNR (dB) | SSIM | .nsc bytes | raw-index bytes | train s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "LOD" in r["series"]:
            continue
        bits = r.get("bits", f"hash {r.get('hash_bits')}" if r["grid_mode"] == "hash" else "fp16")
        lines.append(f"| {r['series']} | {bits} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['bytes']:,} | "
                     f"{r.get('bytes_raw_indices', '')!s} | {r['train_seconds']:.0f} | {r['peak_rss_mib']} |")
    lod = [r for r in rows if "LOD" in r["series"]]
    if lod:
        lines += ["", "Streaming levels of detail of the learned-VQ file (a prefix of the file decodes each LOD):", "",
                  "| LOD | PSNR (dB) | SSIM | cumulative bytes |", "|---:|---:|---:|---:|"]
        for r in lod:
            lines.append(f"| {r['lod']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['bytes']:,} |")
    lines += ["", *summary(rows), "",
              "Notes: one run per variant, seeds not varied; 10 of 200 test views (rendering a 200² view takes 3–9 s on one "
              "core); train seconds include nerfstudio setup and were measured while other jobs ran outside the CPU lock "
              "(load ≈ 2.5 on 2 cores), so they are upper bounds. "
              f"{args.steps} steps × {args.rays:,} rays is {args.steps * args.rays / (100 * 200 ** 2):.2f} epoch of lego 200² "
              "(steps × rays / (100 views × 200²)), far from the paper's 600 epochs; whether the learned-vs-k-means gap widens with longer training was not measured. Dense per-level grids (16³…128³ cells) restricted to "
              "occupied space in the file stand in for NGLOD's octree; levels are summed; grid/MLP deviations in "
              "`nscodec/vqad/model.py`."]
    update_doc_section(args.name, "\n".join(lines))


def summary(rows) -> list:
    """Measured comparisons in words (paper Tables 2 and 3), computed from the rows."""
    out = []
    vq = next((r for r in rows if r["grid_mode"] == "vq" and "ANS" in r["series"]), None)
    raw = next((r for r in rows if r["grid_mode"] == "vq" and "raw" in r["series"]), None)
    fl = next((r for r in rows if r["grid_mode"] == "float"), None)
    if vq:
        km = next((r for r in rows if r["grid_mode"] == "kmeans" and r["bits"] == vq["bits"]), None)
        if km:
            out.append(f"- Learned VQ vs post-hoc k-means VQ at b={vq['bits']}: {vq['psnr']:.2f} vs {km['psnr']:.2f} dB "
                       f"(**{vq['psnr'] - km['psnr']:+.2f} dB**; paper Table 2: +3 to +5 dB), files {vq['bytes']:,} vs {km['bytes']:,} bytes "
                       "(the k-means model comes from the float run, whose occupancy keeps fewer vertices).")
        if raw:
            out.append(f"- Index storage: ANS with a per-level histogram {vq['bytes']:,} bytes vs raw b-bit packing (paper) "
                       f"{raw['bytes']:,} bytes ({100 * (1 - vq['bytes'] / raw['bytes']):.1f}% smaller; the learned indices are nearly "
                       "uniform, as the paper's supplement 8.2 also reports).")
        for h in [r for r in rows if r["grid_mode"] == "hash"]:
            out.append(f"- Random (hash) indices, 2^{h['hash_bits']} codewords per level: {h['psnr']:.2f} dB at {h['bytes']:,} bytes vs "
                       f"learned b={vq['bits']}: {vq['psnr']:.2f} dB at {vq['bytes']:,} bytes (**{vq['psnr'] - h['psnr']:+.2f} dB** for learned; paper Table 3).")
        if fl:
            out.append(f"- Uncompressed float grid of the same configuration: {fl['psnr']:.2f} dB at {fl['bytes']:,} bytes (fp16); learned VQ is "
                       f"{fl['bytes'] / vq['bytes']:.0f}x smaller at {vq['psnr'] - fl['psnr']:+.2f} dB.")
        out.append(f"- Peak RSS of training (m × 2^b logits + SparseAdam moments): b={vq['bits']} {vq['peak_rss_mib']:,} MiB"
                   + (f", float grid {fl['peak_rss_mib']:,} MiB" if fl else "") + " on the 24 GB machine.")
    return out


if __name__ == "__main__":
    main()
