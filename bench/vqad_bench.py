"""VQ-AD on lego 200² (CPU): learned VQ vs post-hoc k-means VQ vs hash (random) indices, and streaming LODs.

A thin wrapper over ``nscodec rd`` (:mod:`nscodec.rd`) for the trained variants: each is one sweep point
(``ns-train vqad`` with the variant's settings → ``.nsc`` → decoded in a fresh process → metrics on every
``--every``-th test view; bytes = real file size; peak RSS = VmHWM of the training process), cached and resumable
under ``bench/runs/<name>``. What ``nscodec rd`` does not do stays here: the raw-index re-export, the LOD prefixes,
post-hoc k-means of the float model, and the hash-bits choice that depends on the learned-VQ file's size.

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
import sys
import time
from pathlib import Path

from common import ROOT, record, update_doc_section  # noqa: E402


def train(args, work: Path, tag: str, settings: dict) -> dict:
    """One ``nscodec rd`` point of ``vqad`` at ``settings`` (``{setting: value}``); returns its record plus ``config``
    (the training's ``config.yml``), ``train_seconds`` (the training loop) and ``peak_rss_mib``.

    Raises:
        SystemExit: the point failed (its error).
    """
    from nscodec.rd.runner import run_sweep
    from nscodec.rd.spec import build_sweep, scene_views

    total = scene_views(Path(args.data), "test") or 0
    views = str(len(range(0, total, args.every))) if total and args.every > 1 else "all"
    grid = {"vqad": {k: [str(v)] for k, v in settings.items()}}
    sweep = build_sweep(["vqad"], [Path(args.data)], grid, steps=args.steps, rays=args.rays, scale=args.scale,
                        test_views=views, baselines=False, workdir=work)
    (rec,) = run_sweep(sweep, work, f"rd_{tag}", "python bench/vqad_bench.py " + " ".join(sys.argv[1:]), progress=False)
    if rec["status"] != "ok":
        raise SystemExit(f"vqad_bench: {tag} failed: {rec['error']}")
    config = json.loads((work / "train" / rec["train_key"] / "train.json").read_text())["config"]
    return {**rec, "config": config, "peak_rss_mib": rec["peak_rss_mb"], "train_command": rec["command"]}


def rd_metrics(rec: dict) -> dict:
    """The metrics of an ``nscodec rd`` record in the form :func:`evaluate_file` returns them."""
    return {"psnr": rec["psnr"], "ssim": rec["ssim"], "bytes": rec["bytes"], "test_views": rec["test_views"],
            "resolution": rec["resolution"], "render_seconds": rec["render_seconds_per_view"] * rec["test_views"]}


def evaluate_file(args, path: Path, lod=None) -> dict:
    from nscodec.tools.evaluate import evaluate_model
    from nscodec.io import load_model

    model, nsc = load_model(path, lod=lod)
    ev = evaluate_model(model, Path(args.data), "test", args.scale, every=args.every, progress=False)
    return {"psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": nsc.available_bytes, "test_views": ev["num_views"],
            "resolution": f"{ev['width']}x{ev['height']}", "render_seconds": ev["render_seconds"], "lod": model.lod}


def same_decoded_model(a: Path, b: Path) -> bool:
    """True when the ``.nsc`` files ``a`` and ``b`` decode to models with equal tensors (state dicts, same keys)."""
    from nscodec.io import load_model

    sa, sb = (load_model(p)[0].state_dict() for p in (a, b))
    return sa.keys() == sb.keys() and all(torch_equal(sa[k], sb[k]) for k in sa)


def torch_equal(x, y) -> bool:
    import torch

    return isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape == y.shape and bool(torch.equal(x, y))


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
    ap.add_argument("--name", default="vqad_lego")
    ap.add_argument("--no-lods", dest="lods", action="store_false", help="skip the LOD-prefix rows of the learned-VQ file")
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
        saved = ROOT / "bench" / "results" / f"{args.name}.json"
        if partial.exists():
            all_rows = json.loads(partial.read_text())
            cmd0 = json.loads((work / "command.txt").read_text()) if (work / "command.txt").exists() else command
            record(args.name, all_rows, cmd0)
        elif saved.exists():  # no run directory here: the recorded rows (and their command); the JSON stays as it is
            all_rows, cmd0 = json.loads(saved.read_text())["rows"], json.loads(saved.read_text())["command"]
        else:
            raise SystemExit(f"--doc-only: neither {partial} nor {saved} exists")
        write_doc(args, all_rows, cmd0)
        return
    (work / "command.txt").write_text(json.dumps(command))
    variants = args.variants.split(",")
    vq_bytes = None
    if partial.exists():  # keep the rows of variants not re-run now (float also owns the k-means rows)
        owner = {"vq": "vq", "float": "float", "kmeans": "float", "hash": "hash"}
        for r in json.loads(partial.read_text()):
            other_bits = r["grid_mode"] == "vq" and r.get("bits") != args.bits  # a learned-VQ run at other bits
            if ("refresh" if r.get("refreshed") else owner[r["grid_mode"]]) not in variants or other_bits:
                (lod_rows if "LOD" in r["series"] else rows).append(r)
                if is_learned(r):
                    vq_bytes = r["bytes"]

    def base_row(info, **kw):
        return {"method": "vqad", "scene": scene, "steps": args.steps, "rays_per_batch": args.rays,
                "train_seconds": round(info["train_seconds"], 1), "peak_rss_mib": round(info["peak_rss_mib"]),
                "rays_per_second": round(args.steps * args.rays / info["train_seconds"]), "ns_train_command": info["train_command"],
                "epochs": info["epochs"], "git_commit": info["git_commit"], **kw}

    if "vq" in variants:
        tag = f"vq_b{args.bits}"
        info = train(args, work, tag, {"grid-mode": "vq", "bits": args.bits})
        model = load_trained(info["config"])
        path = Path(info["nsc"])
        vq_bytes = info["bytes"]
        sizes = model.size_report()
        model.config.index_coding = "raw"
        raw_path = work / f"{tag}_raw.nsc"
        raw_bytes = export_model(model, raw_path, overwrite=True)
        model.config.index_coding = "entropy"
        full = rd_metrics(info)
        rows.append(base_row(info, series=f"vqad learned VQ (b={args.bits}, ANS indices)", grid_mode="vq", bits=args.bits, **full,
                             bytes_raw_indices=raw_bytes, size_report=sizes))
        same = same_decoded_model(path, raw_path)  # index coding is lossless: the same model renders the same views
        raw_metrics = {**full, "rendered": False} if same else evaluate_file(args, raw_path)
        rows.append(base_row(info, series="vqad learned VQ (raw b-bit indices, paper storage)", grid_mode="vq", bits=args.bits,
                             **{**raw_metrics, "bytes": raw_bytes}, same_decoded_model=same))
        from nscodec.coding.container import read_nsc
        from nscodec.coding.lod import lod_table

        for r in (lod_table(read_nsc(path)) if args.lods else []):
            if r["lod"] == model.num_lods - 1:  # the finest LOD reads the whole file: the model of the first row
                ev = {**full, "lod": r["lod"], "rendered": False}
            else:
                ev = evaluate_file(args, path, lod=r["lod"])
            lod_rows.append(base_row(info, series=f"vqad LOD prefixes (b={args.bits})", grid_mode="vq", bits=args.bits, **ev))
            print(json.dumps(lod_rows[-1]))
        partial.write_text(json.dumps(rows + lod_rows, indent=2))

    if "refresh" in variants:  # the learned-VQ training above, its occupancy refreshed from the final model (stop 30 probe)
        tag = f"vq_b{args.bits}"
        info = train(args, work, tag, {"grid-mode": "vq", "bits": args.bits})  # the cached point: nothing retrains
        model = load_trained(info["config"])
        with torch.no_grad():
            model.update_occupancy()
        p = work / f"{tag}_refreshed.nsc"
        export_model(model, p, overwrite=True)
        rows.append(base_row(info, series=f"vqad learned VQ (b={args.bits}, ANS indices, occupancy refreshed after the last step)",
                             grid_mode="vq", bits=args.bits, refreshed=True, **evaluate_file(args, p)))
        print(json.dumps(rows[-1]))
        partial.write_text(json.dumps(rows + lod_rows, indent=2))

    if "float" in variants:
        from nscodec.vqad.model import posthoc_kmeans_model

        info = train(args, work, "float", {"grid-mode": "float"})
        fmodel = load_trained(info["config"])
        rows.append(base_row(info, series="vqad float grid (uncompressed, fp16)", grid_mode="float", **rd_metrics(info)))
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
            info = train(args, work, tag, {"grid-mode": "hash", "hash-bits": hb})
            rows.append(base_row(info, series="vqad hash (random) indices", grid_mode="hash", hash_bits=hb, **rd_metrics(info)))
            print(json.dumps(rows[-1]))
        partial.write_text(json.dumps(rows + lod_rows, indent=2))

    all_rows = rows + lod_rows
    record(args.name, all_rows, command)
    write_doc(args, all_rows, command)


def write_doc(args, rows, command) -> None:
    lines = [
        f"## vqad on {rows[0]['scene']} {rows[0]['resolution']} (CPU): {args.steps:,} steps × {args.rays:,} rays "
        f"({rows[0]['epochs']} epochs)", "",
        f"Command (the last invocation; each row's `ns-train` command is in the JSON): `{command}` ({args.steps} steps × {args.rays} rays each run; test PSNR on every {args.every}-th test "
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
                  "| b | LOD | PSNR (dB) | SSIM | cumulative bytes |", "|---:|---:|---:|---:|---:|"]
        for r in lod:
            lines.append(f"| {r['bits']} | {r['lod']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['bytes']:,} |")
    lines += ["", *summary(rows), "",
              "Rows may come from several invocations on one run directory (a variant re-run replaces only its own rows); "
              "each row's `git_commit` and `ns_train_command` are in the JSON. "
              f"Notes: one run per variant, seeds not varied; {rows[0]['test_views']} test views ({render_note(rows)}); " + ("train seconds are the training loop of each `nscodec rd` point (setup excluded). "
                           if any("ns_train_command" in r for r in rows) else
                           "train seconds include nerfstudio setup and were measured while other jobs ran outside the CPU lock "
                           "(load ≈ 2.5 on 2 cores), so they are upper bounds. ") +
              f"{args.steps} steps × {args.rays:,} rays is {args.steps * args.rays / (100 * 200 ** 2):.2f} epoch of lego 200² "
              "(steps × rays / (100 views × 200²)), far from the paper's 600 epochs. Dense per-level grids (16³…128³ cells) restricted to "
              "occupied space in the file stand in for NGLOD's octree; levels are summed; grid/MLP deviations in "
              "`nscodec/vqad/model.py`."]
    update_doc_section(args.name, "\n".join(lines))


def is_learned(r: dict) -> bool:
    """A learned-VQ row with ANS-coded indices, as trained (not the occupancy-refresh probe)."""
    return r["grid_mode"] == "vq" and "ANS" in r["series"] and not r.get("refreshed")


def render_note(rows) -> str:
    """The measured render time per test view (seconds, one thread), as a range over the rows that record it."""
    per = [r["render_seconds"] / r["test_views"] for r in rows if r.get("render_seconds") and r.get("test_views")]
    if not per:
        return "render time not recorded"
    return f"rendering a view took {min(per):.1f}–{max(per):.1f} s on one thread"


def kmeans_psnr_at_bytes(rows, nbytes: int):
    """PSNR (dB) of the post-hoc k-means curve at ``nbytes``, linear in log bytes between the two k-means files that
    bracket it; None when no two do."""
    km = sorted((r["bytes"], r["psnr"]) for r in rows if r["grid_mode"] == "kmeans")
    for (b0, p0), (b1, p1) in zip(km, km[1:]):
        if b0 <= nbytes <= b1 and b1 > b0:
            return p0 + (p1 - p0) * (math.log(nbytes) - math.log(b0)) / (math.log(b1) - math.log(b0))
    return None


def summary(rows) -> list:
    """Measured comparisons in words (paper Tables 2 and 3), computed from the rows."""
    out = []
    learned = [r for r in rows if is_learned(r)]
    vq = learned[0] if learned else None
    raw = next((r for r in rows if r["grid_mode"] == "vq" and "raw" in r["series"]), None)
    fl = next((r for r in rows if r["grid_mode"] == "float"), None)
    if vq:
        for lv in learned:  # equal bits, every learned b
            km = next((r for r in rows if r["grid_mode"] == "kmeans" and r["bits"] == lv["bits"]), None)
            if km:
                out.append(f"- Equal bits, learned VQ vs post-hoc k-means VQ at b={lv['bits']}: {lv['psnr']:.2f} vs {km['psnr']:.2f} dB "
                           f"(**{lv['psnr'] - km['psnr']:+.2f} dB**; paper Table 2: +3 to +5 dB), files {lv['bytes']:,} vs "
                           f"{km['bytes']:,} bytes (the k-means model comes from the float run, whose occupancy keeps fewer vertices).")
        for lv in learned:  # every learned b
            at_bytes = kmeans_psnr_at_bytes(rows, lv["bytes"])
            if at_bytes is not None:
                out.append(f"- Learned VQ (b={lv['bits']}) vs post-hoc k-means at equal bytes ({lv['bytes']:,}, the k-means "
                           f"curve interpolated in log bytes): {lv['psnr']:.2f} vs {at_bytes:.2f} dB "
                           f"(**{lv['psnr'] - at_bytes:+.2f} dB**).")
                continue
            kmeans = [r for r in rows if r["grid_mode"] == "kmeans"]
            near = min(kmeans, key=lambda r: abs(math.log(r["bytes"] / lv["bytes"])), default=None)
            if near is not None and abs(math.log(near["bytes"] / lv["bytes"])) < 0.05:
                gap = lv["bytes"] / near["bytes"] - 1
                out.append(f"- Equal bytes, learned b={lv['bits']}: its file ({lv['bytes']:,} B) lies outside the k-means "
                           f"files' range; the nearest, k-means b={near['bits']} at {near['bytes']:,} B ({100 * gap:+.1f}% "
                           f"for learned): {lv['psnr']:.2f} vs {near['psnr']:.2f} dB (**{lv['psnr'] - near['psnr']:+.2f} dB**"
                           " for learned).")
            elif near is not None:
                better = [r for r in kmeans if r["bytes"] <= lv["bytes"] and r["psnr"] >= lv["psnr"]]
                if better:  # a smaller and better k-means file: the learned one loses at any equal-bytes reading
                    b = max(better, key=lambda r: r["bytes"])
                    out.append(f"- Equal bytes, learned b={lv['bits']} ({lv['bytes']:,} B, {lv['psnr']:.2f} dB): no k-means "
                               f"file within 5% of its size, but k-means b={b['bits']} is smaller and better ({b['bytes']:,} B, "
                               f"{b['psnr']:.2f} dB): learned is **at least {b['psnr'] - lv['psnr']:.2f} dB below** k-means at "
                               "equal bytes.")
                else:
                    out.append(f"- Equal bytes, learned b={lv['bits']}: no k-means file within 5% of its {lv['bytes']:,} B.")
        for rf in [r for r in rows if r.get("refreshed")]:
            before = next((r for r in learned if r.get("bits") == rf["bits"]), None)
            if before:
                out.append(f"- Occupancy refreshed from the final model before export (b={rf['bits']}; a probe, not adopted: "
                           f"the last scheduled grid stays): {before['bytes']:,} → {rf['bytes']:,} bytes "
                           f"({100 * (rf['bytes'] / before['bytes'] - 1):+.1f}%), {before['psnr']:.2f} → {rf['psnr']:.2f} dB.")
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
