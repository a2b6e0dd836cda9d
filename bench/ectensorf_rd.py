"""ECTensoRF rate–distortion on a Blender scene (issue 3): λ sweep, ablations, and post-hoc baselines of the
same uncompressed base, all as real ``.nsc`` files decoded and evaluated on the test split.

    python bench/ectensorf_rd.py --data ../shared/data/blender/lego --scale 0.25
    python bench/ectensorf_rd.py --data ../shared/data/blender/lego_tiny --scale 1 --stage1 60 --stage2 30 \\
        --lambdas 2e-3 --uniform-bits 8 --kmeans-bits 4 --name ectensorf_rd_smoke     # pipeline check, ~3 min

Protocol (equal training budget):

1. ``ns-train nscodec-tensorf`` for ``stage1 + stage2`` steps, keeping the checkpoint at ``stage1``. The final
   checkpoint is "the base"; it is evaluated uncompressed (``fp32`` scheme: a raw float32 ``.nsc``).
2. Post-hoc baselines of the base (nothing retrained; ``codec_scheme`` of ``nscodec-tensorf``): float16 + zstd,
   uniform b-bit + entropy coding, k-means VQ (2^b codewords) + entropy-coded indices.
3. ``ns-train ectensorf --pipeline.model.init-from <stage1 checkpoint>`` for ``stage2`` steps per λ, and the two
   ablations at ``--ablation-lambda`` (no importance weighting; no mask), exported with ``nscodec export``.
4. Every file: ``nscodec eval`` on the test split (every ``--every``-th view; 1 = all). Bytes = file size.

Why this is not (yet) a wrapper over ``nscodec rd``: its protocol trains ectensorf's stage 2 *from the base's
step-``stage1`` checkpoint* (``--pipeline.model.init-from``), so every λ and ablation depends on one earlier training,
and it re-exports cached files (``--reexport``) and evaluates some series on two view subsets. ``nscodec rd`` runs
independent points (ectensorf trains both stages in one run, against an equal-budget ``nscodec-tensorf`` base with
the same post-hoc codecs): ``nscodec rd --methods ectensorf ...`` gives the one-run RD curve (README, "Rate–distortion
sweeps"; ``bench/results/rd_lego.json``), this script the stage-2 sweep and the paper ablations.

Results: ``bench/results/<name>.json`` (one row per file), a table in ``docs/benchmarks.md`` including each
ectensorf point's PSNR gain over every baseline at equal bytes (log-bytes interpolation), and the RD plot
(``bench/rd_plot.py``). Finished steps are cached under ``bench/runs/<name>`` (delete it to start over).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from common import ROOT, ns_train_flags, record, update_doc_section  # noqa: E402

BIN = Path(sys.executable).parent


def _env() -> Dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _train(cmd: List[str], log: Path) -> float:
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(cmd, check=True, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=_env())
    return time.perf_counter() - t0


def _eval_cache(nsc: Path, every: int) -> Path:
    """Where :func:`_eval` caches the evaluation of ``nsc`` on every ``every``-th test view."""
    return nsc.with_name(f"{nsc.stem}_every{every}.json")


def _eval(nsc: Path, args, every: int) -> Dict[str, Any]:
    """``nscodec eval`` of ``nsc`` on every ``every``-th test view, cached as ``<stem>_every<every>.json``."""
    out = _eval_cache(nsc, every)
    if not out.exists():
        subprocess.run(
            [str(BIN / "nscodec"), "eval", str(nsc), "--data", args.data, "--scale-factor", str(args.scale),
             "--every", str(every), "--output", str(out)],
            check=True, cwd=ROOT, stdout=subprocess.DEVNULL, env=_env(),
        )
    return json.loads(out.read_text())


def _full(row: Dict[str, Any], nsc: Path, args) -> None:
    """Add the whole test split's PSNR/SSIM (``psnr_all``, ``ssim_all``, ``test_views_all``) to ``row``."""
    if args.every != 1:
        ev = _eval(nsc, args, 1)
        row.update(psnr_all=ev["psnr"], ssim_all=ev["ssim"], test_views_all=ev["num_views"])


def interpolate_psnr(points: List[Dict[str, Any]], nbytes: float, key: str = "psnr") -> Optional[float]:
    """PSNR (``points[i][key]``) of a baseline curve at ``nbytes``, linear in log(bytes) between its two neighbours
    (None outside)."""
    pts = sorted((p["bytes"], p[key]) for p in points)
    for (b0, p0), (b1, p1) in zip(pts, pts[1:]):
        if b0 <= nbytes <= b1:
            t = (math.log(nbytes) - math.log(b0)) / max(math.log(b1) - math.log(b0), 1e-12)
            return p0 + t * (p1 - p0)
    return None


def reexport(nsc: Path, config_yml: Path) -> None:
    """Re-export ``nsc`` from its run with the current code (``--reexport``: a coding change that must not change
    the decoded model). If the new file decodes to exactly the same tensors as the cached one (all but the entropy
    models' own parameters, which the file replaces by CDF tables), its evaluation
    caches stay valid and only their ``bytes`` become the new file's size; otherwise they are deleted, so the file
    is evaluated again. Prints what it did."""
    import torch

    from nscodec.tools.export import export_from_config
    from nscodec.io import load_model

    old, _ = load_model(nsc)
    tmp = nsc.with_name(nsc.stem + ".reexport.nsc")
    export_from_config(config_yml, tmp, overwrite=True, quiet=True)
    new, _ = load_model(tmp)
    # the entropy models' own parameters (".prior.") are not in the file (it holds their CDF tables) and are
    # re-initialised at random on every load: compare everything else
    a, b = ({k: v for k, v in m.state_dict().items() if ".prior." not in k} for m in (old, new))
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    size = os.path.getsize(tmp)
    os.replace(tmp, nsc)
    for cache in nsc.parent.glob(f"{nsc.stem}_every*.json"):
        if not same:
            cache.unlink()
            continue
        ev = json.loads(cache.read_text())
        ev["bytes_before_reexport"], ev["bytes"] = ev["bytes"], size
        cache.write_text(json.dumps(ev))
    print(f"[reexport] {nsc.name}: {size:,} bytes, decoded model {'identical: evaluations kept' if same else 'changed: re-evaluate'}",
          flush=True)


def ablation(name: str) -> Tuple[str, List[str]]:
    """``(series label, ns-train flags)`` of a paper ablation: flip ``use_<name>`` (``importance`` or ``mask``)
    from the preset's default, so the ablation is "no mask" when the preset codes with the mask and "with mask"
    when it does not. Raises SystemExit naming the allowed ablations."""
    from nscodec.ectensorf.model import ECTensoRFModelConfig

    if name not in ("importance", "mask"):
        raise SystemExit(f"--ablations: unknown ablation {name!r} (allowed: importance, mask)")
    on = bool(getattr(ECTensoRFModelConfig, f"use_{name}"))  # the dataclass default, no instance needed
    return f"ectensorf ({'no' if on else 'with'} {name})", [f"--pipeline.model.use-{name}", str(not on)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--stage1", type=int, default=1500, help="base pretraining steps before compression")
    ap.add_argument("--stage2", type=int, default=600, help="compression steps (the base trains stage1+stage2)")
    ap.add_argument("--stage2-run", type=int, default=None,
                    help="compression steps of the ectensorf runs (default: --stage2, i.e. an equal step budget)")
    ap.add_argument("--lambdas", default="5e-4,2e-3,8e-3", help="comma-separated λ (rate weight per Mbit)")
    ap.add_argument("--ablation-lambda", default="2e-3")
    ap.add_argument("--ablations", default="importance,mask", help="comma-separated subset of importance,mask ('' = none)")
    ap.add_argument("--uniform-bits", default="8,6,5,4,3,2")
    ap.add_argument("--kmeans-bits", default="12,10,8,6,4")
    ap.add_argument("--every", type=int, default=1, help="evaluate every N-th test view (1 = all)")
    ap.add_argument("--full-split", default="ectensorf,base",
                    help="with --every > 1, also evaluate these series on every test view: comma-separated subset of "
                         "ectensorf (the λ sweep), ablations, base, posthoc ('' = none)")
    ap.add_argument("--name", default="ectensorf_rd")
    ap.add_argument("--reexport", action="store_true",
                    help="re-export every cached ectensorf file with the current code first (keeps evaluations whose "
                         "decoded model is unchanged, updating their bytes)")
    args = ap.parse_args()
    command = "python bench/ectensorf_rd.py " + " ".join(sys.argv[1:])
    work = ROOT / "bench" / "runs" / args.name
    work.mkdir(parents=True, exist_ok=True)
    s2 = args.stage2_run or args.stage2
    scene = Path(args.data).name
    total = args.stage1 + args.stage2
    ups = [str(int(args.stage1 * f)) for f in (0.2, 0.4, 0.6, 0.8)]
    common = ns_train_flags(args.data, work, args.scale)
    rows: List[Dict[str, Any]] = []
    full_split = [x for x in args.full_split.split(",") if x]

    # 1. the base, with a checkpoint at stage1 for ectensorf to start from
    base_dir = work / "base" / "nscodec-tensorf" / "run"
    base_ckpt = base_dir / "nerfstudio_models" / f"step-{total - 1:09d}.ckpt"
    init_ckpt = base_dir / "nerfstudio_models" / f"step-{args.stage1:09d}.ckpt"
    timing = work / "base_train_seconds.txt"
    if not base_ckpt.exists():
        print(f"[base] ns-train nscodec-tensorf, {total} steps", flush=True)
        s = _train([str(BIN / "ns-train"), "nscodec-tensorf", *common, "--experiment-name", "base",
                    "--max-num-iterations", str(total), "--steps-per-save", str(args.stage1),
                    "--save-only-latest-checkpoint", "False", "--pipeline.model.upsampling-iters", *ups,
                    # ectensorf samples every half voxel (its config default); its base must sample the same way
                    "--pipeline.model.step-ratio", "0.5"], work / "base.log")
        timing.write_text(f"{s}\n")
    base_train_s = float(timing.read_text()) if timing.exists() else float("nan")

    # 2. post-hoc baselines of the final base checkpoint (in-process: load once, export each scheme)
    schemes = [("fp32", 32, "base (fp32, uncompressed)"), ("fp16-zstd", 16, "post-hoc fp16 + zstd")]
    schemes += [("uniform", int(b), "post-hoc uniform + EC") for b in args.uniform_bits.split(",") if b]
    schemes += [("kmeans", int(b), "post-hoc k-means VQ + EC") for b in args.kmeans_bits.split(",") if b]
    pending = [(s, b, label) for s, b, label in schemes if not (work / f"posthoc_{s}{b}.nsc").exists()]
    if pending:
        from nerfstudio.utils.eval_utils import eval_setup

        from nscodec.data import training_meta
        from nscodec.io import export_model

        config, pipeline, _, _ = eval_setup(base_dir / "config.yml", test_mode="inference")
        meta = training_meta(config.pipeline)
        model = pipeline.model
        for s, b, _ in pending:
            model.config.codec_scheme, model.config.codec_bits = s, (b if s in ("uniform", "kmeans") else 8)
            t0 = time.perf_counter()
            export_model(model, work / f"posthoc_{s}{b}.nsc", meta=meta, overwrite=True)
            print(f"[post-hoc] {s} {b}: exported in {time.perf_counter() - t0:.1f} s", flush=True)
    # 3. ectensorf from the stage-1 checkpoint: λ sweep + ablations
    runs = [(lam, "ectensorf", []) for lam in args.lambdas.split(",") if lam]
    for name in (a for a in args.ablations.split(",") if a):
        runs.append((args.ablation_lambda, *ablation(name)))
    for lam, label, extra in runs:
        tag = f"ec_{lam}" + ("" if not extra else "_" + extra[0].rsplit(".", 1)[-1] + "-" + extra[1])
        nsc = work / f"{tag}.nsc"
        tfile = work / f"{tag}_train_seconds.txt"
        if args.reexport and nsc.exists():
            reexport(nsc, work / tag / "ectensorf" / "run" / "config.yml")
        if not nsc.exists():
            print(f"[{label}] λ={lam}: ns-train ectensorf, {s2} steps from {init_ckpt.name}", flush=True)
            s = _train([str(BIN / "ns-train"), "ectensorf", *common, "--experiment-name", tag,
                        "--max-num-iterations", str(s2), "--pipeline.model.init-from", str(init_ckpt),
                        "--pipeline.model.rate-lambda", lam, *extra], work / f"{tag}.log")
            tfile.write_text(f"{s}\n")
            subprocess.run([str(BIN / "nscodec"), "export", "--load-config", str(work / tag / "ectensorf" / "run" / "config.yml"),
                            "--output-dir", str(work), "--filename", nsc.name, "--overwrite"], check=True, cwd=ROOT, env=_env())
        print(f"[eval] {label} λ={lam}", flush=True)
        ev = _eval(nsc, args, args.every)
        rows.append({"series": label, "lambda": float(lam), "psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": ev["bytes"],
                     "test_views": ev["num_views"], "train_seconds": base_train_s * args.stage1 / total + float(tfile.read_text()),
                     "steps": args.stage1 + s2, "decode_seconds": ev["decode_seconds"], "resolution": f"{ev['width']}x{ev['height']}"})
        if ("ectensorf" if not extra else "ablations") in full_split:
            _full(rows[-1], nsc, args)
    for s, b, label in schemes:
        print(f"[eval] post-hoc {s} {b}", flush=True)
        nsc = work / f"posthoc_{s}{b}.nsc"
        ev = _eval(nsc, args, args.every)
        rows.append({"series": label, "scheme": s, "bits": b, "psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": ev["bytes"],
                     "test_views": ev["num_views"], "train_seconds": base_train_s, "steps": total,
                     "decode_seconds": ev["decode_seconds"], "resolution": f"{ev['width']}x{ev['height']}"})
        if ("base" if s == "fp32" else "posthoc") in full_split or _eval_cache(nsc, 1).exists():  # cached: free
            _full(rows[-1], nsc, args)

    for r in rows:
        r.update(method=r["series"].split(" (")[0] if r["series"].startswith("ectensorf") else "nscodec-tensorf", scene=scene)

    # equal-bytes comparison against every post-hoc curve
    base = next(r for r in rows if r.get("scheme") == "fp32")
    curves: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows:
        if r.get("scheme") in ("uniform", "kmeans"):
            curves.setdefault(r["series"], []).append(r)
    fp16 = next(r for r in rows if r.get("scheme") == "fp16-zstd")

    def key_for(*groups: List[Dict[str, Any]]) -> str:
        """Compare on all test views when every row involved has them, else on the --every subset."""
        return "psnr_all" if all("psnr_all" in q for g in groups for q in g) else "psnr"

    for r in rows:
        if r["series"].startswith("ectensorf"):
            k = key_for([r, base])
            r["psnr_below_base_db"] = base[k] - r[k]
            r["psnr_below_base_views"] = "all" if k == "psnr_all" else f"every {args.every}"
            r["fraction_of_base_bytes"] = r["bytes"] / base["bytes"]
            r["gain_db_at_equal_bytes"], r["gain_views"], r["gain_db_lower_bound"] = {}, {}, {}
            for name, v in curves.items():
                k = key_for([r], v)
                p = interpolate_psnr(v, r["bytes"], k)
                r["gain_db_at_equal_bytes"][name] = None if p is None else r[k] - p
                r["gain_views"][name] = "all" if k == "psnr_all" else f"every {args.every}"
                # below a baseline's smallest file: its PSNR there is at most that of its smallest file (the curve
                # rises with bytes), so when ectensorf is both smaller and better that difference bounds the gain
                small = min(v, key=lambda q: q["bytes"])
                if p is None and r["bytes"] < small["bytes"] and r[k] > small[k]:
                    r["gain_db_lower_bound"][name] = r[k] - small[k]
    record(args.name, rows, command, extra={"protocol": __doc__.split("Protocol")[1].split("Results")[0].strip()})

    views = f"{rows[0]['test_views']} test views"
    if all("psnr_all" in r for r in rows):
        views = f"all {rows[0]['test_views_all']} test views, and the {rows[0]['test_views']}-view subset"
    lines = [f"## ectensorf rate–distortion ({scene}, {rows[0]['resolution']}, {views})", "",
             f"Command: `{command}`", "",
             f"Base: `nscodec-tensorf`, {total} steps ({base_train_s:.0f} s). ectensorf: stage 2 for {s2} steps from the "
             f"base's step-{args.stage1} checkpoint ({'the same' if s2 == args.stage2 else 'a smaller'} total step budget: "
             f"{args.stage1 + s2} vs {total}). Every row is a real `.nsc` decoded and evaluated.", "",
             "| series | setting | test PSNR (dB) | SSIM | PSNR / SSIM, all test views | .nsc bytes | vs base bytes | "
             "Δ vs base (dB) | gain at equal bytes vs uniform / k-means (dB) | training (s) |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---:|"]
    for r in rows:
        setting = f"λ={r['lambda']:g}" if "lambda" in r else (f"{r['bits']} bits" if r["scheme"] in ("uniform", "kmeans") else r["scheme"])
        gains = r.get("gain_db_at_equal_bytes")
        bounds = r.get("gain_db_lower_bound", {})
        gtxt = " / ".join(
            (f"≥ {bounds[k]:+.2f} (smaller and better than its smallest file)" if k in bounds else "n/a (outside range)")
            if g is None else f"{g:+.2f}" for k, g in gains.items()
        ) if gains else ""
        if gains and all(v == "all" for v in r["gain_views"].values()):
            gtxt += " (all views)"
        full_txt = f"{r['psnr_all']:.2f} / {r['ssim_all']:.3f} ({r['test_views_all']} views)" if "psnr_all" in r else ""
        k = key_for([r, base])
        delta = f"{r[k] - base[k]:+.2f}" + (" (all views)" if k == "psnr_all" else "")
        lines.append(f"| {r['series']} | {setting} | {r['psnr']:.2f} | {r['ssim']:.3f} | {full_txt} | {r['bytes']:,} | "
                     f"{r['bytes'] / base['bytes']:.4f} | {delta} | {gtxt} | {r['train_seconds']:.0f} |")
    lines += ["", f"fp16 + zstd: {fp16['bytes']:,} bytes at {fp16[key_for([fp16])]:.2f} dB. Plot: `python bench/rd_plot.py {args.name}` "
              f"→ `docs/figures/{args.name}.png`."]
    update_doc_section(args.name, "\n".join(lines))
    subprocess.run([sys.executable, str(ROOT / "bench" / "rd_plot.py"), args.name], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()
