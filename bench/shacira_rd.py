"""SHACIRA rate–distortion on lego 200² (CPU): sweep over λ_I and table size T against the uncompressed fp32 hash
grid of the same configuration, the paper's ablations (annealing vs plain STE, Fig. 10; λ_I = 0 vs 1e-4, Fig. 9),
and PSNR / cumulative bytes per level of detail (Sec. 4.5) of the default point.

A thin wrapper over ``nscodec rd`` (:mod:`nscodec.rd`): every run in RUNS is one sweep point (``ns-train shacira``
with that run's settings → ``.nsc`` export → decoded in a fresh process → metrics on every ``--every``-th test
view; bytes = the real file size), cached and resumable under ``bench/runs/<name>``. What ``nscodec rd`` does not
do stays here: the per-level-of-detail evaluation of the ``default`` run's file prefixes, and this script's table.
Results are written after the sweep (a re-run of some runs replaces their rows):

    flock /tmp/nscodec-cpu.lock python bench/shacira_rd.py                      # all runs (see RUNS)
    flock /tmp/nscodec-cpu.lock python bench/shacira_rd.py --runs base,default  # a subset
    python bench/shacira_rd.py --report-only                                    # rewrite the table only
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from common import ROOT, record, update_doc_section  # noqa: E402

#: name -> (series label, model overrides)
RUNS = {
    "default": ("shacira (annealing, paper default)", {"lambda_i": 1e-4}),
    "base": ("hash grid fp32 (uncompressed)", {"compress": False}),
    "lam1e-3": ("shacira (annealing)", {"lambda_i": 1e-3}),
    "T13": ("shacira (annealing)", {"lambda_i": 1e-4, "log2_hashmap_size": 13}),
    "ste": ("shacira (plain STE: the `shacira` CPU preset)", {"lambda_i": 1e-4, "anneal_fraction": 0.0}),
    "lam0": ("shacira (λ_I = 0)", {"lambda_i": 0.0}),
    "anneal0.9": ("shacira (annealing 90% of the run)", {"lambda_i": 1e-4, "anneal_fraction": 0.9}),
}


def tensorf_base() -> dict | None:
    """The TensoRF base of the ectensorf RD sweep (``bench/results/ectensorf_rd.json``, all test views) with the rays it
    trained on, for the fp32 grid's comparison at equal rays (issue 19, item 6); None without that file."""
    path = ROOT / "bench/results/ectensorf_rd.json"
    if not path.exists():
        return None
    row = next((r for r in json.loads(path.read_text())["rows"] if r.get("method") == "nscodec-tensorf" and "psnr_all" in r), None)
    if row is None:
        return None
    from nscodec_configs.method_configs import tensorf_trainer_config

    rays = row["steps"] * tensorf_trainer_config().pipeline.datamanager.train_num_rays_per_batch
    return {"psnr": row["psnr_all"], "views": row["test_views_all"], "rays": rays,
            "source": f"`nscodec-tensorf`, {row['steps']:,} steps, `bench/results/ectensorf_rd.json`"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--rays", type=int, default=1024)
    ap.add_argument("--every", type=int, default=20, help="evaluate every N-th test view (20 -> 10 of 200 views)")
    ap.add_argument("--lod-every", type=int, default=40, help="test-view stride for the per-LOD evaluation")
    ap.add_argument("--runs", default=",".join(RUNS))
    ap.add_argument("--report-only", action="store_true", help="rewrite the doc table from bench/results, run nothing")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the LOD evaluation (the sweep's processes: 1)")
    ap.add_argument("--name", default="shacira_rd")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    command = "python bench/shacira_rd.py " + " ".join(sys.argv[1:])
    data = Path(args.data)
    work = ROOT / "bench" / "runs" / args.name
    out_json = ROOT / "bench" / "results" / f"{args.name}.json"
    rows = json.loads(out_json.read_text())["rows"] if out_json.exists() else []
    lod_rows = []
    runs = [] if args.report_only else [r for r in args.runs.split(",") if r]
    unknown = [r for r in runs if r not in RUNS]
    if unknown:
        raise SystemExit(f"--runs: unknown run(s) {unknown} (known: {', '.join(RUNS)})")
    if runs:
        from nscodec.rd.runner import run_sweep
        from nscodec.rd.spec import Sweep, build_sweep, scene_views

        total = scene_views(data, "test") or 0
        views = str(len(range(0, total, args.every))) if total and args.every > 1 else "all"
        points = []
        from nscodec.rd.spec import METHODS
        from nscodec.shacira.model import ShaciraModelConfig

        for run in runs:  # one nscodec rd point per run: its settings are the run's overrides
            # the runs keep the model defaults (annealing), not the `shacira` preset's plain STE
            settings = {"anneal-fraction": str(ShaciraModelConfig.anneal_fraction)}
            settings.update({k.replace("_", "-"): str(v) for k, v in RUNS[run][1].items()})
            if settings.get("compress") == "False":  # the fp32 grid: nscodec rd's shacira baseline settings
                settings.update(METHODS["shacira"].base[1])
            grid = {"shacira": {k: [v] for k, v in settings.items()}}
            points += build_sweep(["shacira"], [data], grid, steps=args.steps, rays=args.rays, scale=args.scale,
                                  test_views=views, baselines=False, workdir=work).points
        records = run_sweep(Sweep(points, work), work, "rd", command)
        for run, rec in zip(runs, records):
            rows = [r for r in rows if r.get("run") != run]
            if rec["status"] != "ok":
                print(f"[{run}] failed: {rec['error']}", flush=True)
                continue
            rows.append(_row(run, rec, command))
            print(json.dumps(rows[-1]), flush=True)
            if run == "default":
                lod_rows = _lod_rows(Path(rec["nsc"]), data, args)
        _report(args.name, rows, lod_rows, out_json, command)
    if not runs:  # provenance stays that of the runs that measured the rows
        _report(args.name, rows, lod_rows, out_json, "; ".join(dict.fromkeys(r["command"] for r in rows)))


def _row(run: str, rec: dict, command: str) -> dict:
    """This script's row of one ``nscodec rd`` record (the record's fields kept; the model's settings read back
    from the decoded file)."""
    from nscodec.io import load_model
    from nscodec.shacira.field import fp32_table_bytes

    series, overrides = RUNS[run]
    model, _ = load_model(rec["nsc"])
    cfg = model.config
    return {
        **{k: rec[k] for k in ("key", "scene", "resolution", "psnr", "ssim", "bytes", "test_views", "steps", "rays_per_batch",
                               "epochs", "peak_rss_mb", "git_commit")},
        "run": run, "method": "shacira", "series": series, "fp32_table_bytes": fp32_table_bytes(model.field.encoding),
        "train_seconds": round(rec["train_seconds"], 1), "decode_seconds": round(rec["decode_seconds"], 3),
        "rays_per_second": round(rec["rays_per_second"], 1), **overrides,
        "lambda_i": cfg.lambda_i if cfg.compress else None, "log2_hashmap_size": cfg.log2_hashmap_size,
        "anneal_fraction": cfg.anneal_fraction if cfg.compress else None,
        "command": command, "ns_train_command": rec["command"],
    }


def _lod_rows(path: Path, data: Path, args) -> list:
    """PSNR / SSIM of each level-of-detail prefix of ``path`` (decoded from the prefix alone)."""
    from nscodec.coding.container import read_nsc
    from nscodec.tools.evaluate import evaluate_model
    from nscodec.io import load_model
    from nscodec.coding.lod import lod_table

    out = []
    for r in lod_table(read_nsc(path)):
        dec, _ = load_model(path, lod=r["lod"])
        e = evaluate_model(dec, data, "test", args.scale, every=args.lod_every, progress=False)
        out.append({"lod": r["lod"], "bytes": r["bytes"], "psnr": e["psnr"], "ssim": e["ssim"], "test_views": e["num_views"]})
        print(json.dumps(out[-1]), flush=True)
    return out


def _report(name, rows, lod_rows, out_json, command) -> None:
    """Write bench/results/<name>.json (LOD rows kept from the previous file unless re-measured) and the doc table."""
    extra = {"lod": lod_rows} if lod_rows else {}
    if not lod_rows and out_json.exists():
        extra = {"lod": json.loads(out_json.read_text()).get("lod", [])}
    record(name, rows, command, extra)
    write_doc(name, rows, extra.get("lod", []), command)


def write_doc(name, rows, lod_rows, command) -> None:
    cmds = list(dict.fromkeys(r.get("command", command) for r in rows))  # the runs may come from several invocations
    base = next((r for r in rows if r["run"] == "base"), None)
    lines = [f"## SHACIRA rate–distortion ({rows[0]['scene']}, {rows[0]['resolution']}, CPU)", "",
             "Command" + ("s" if len(cmds) > 1 else "") + ": " + "; ".join(f"`{c}`" for c in cmds) + (" (each run: an `nscodec rd` point, `ns-train shacira` + the overrides in the table" if any("ns_train_command" in r for r in rows)
                else " (each run: `shacira_trainer_config` + the overrides in the table") + f", {rows[0]['steps']} steps × {rows[0]['rays_per_batch']} rays; "
             f"metrics of the decoded `.nsc` on {rows[0]['test_views']} test views, evenly spaced over the test split).", "",
             "Configuration (model defaults of `ShaciraModelConfig`): L = 8 levels, resolutions 16 → 256, F = 2 features "
             "and D = 2 latent dims per row, T = 2^15 rows per hashed level (the 2 coarsest levels are dense), "
             "density MLP 64 wide, colour MLP 2×64; MLPs + decoder stored float16 in `shacira` files, everything fp32 "
             "in the baseline (`compress=False`: the same hash grid with fp32 tables). `anneal` = fraction of the run "
             "with annealed soft rounding (Eq. 4), straight-through rounding afterwards (0 = plain STE).", "",
             "| run | series | λ_I | log2 T | anneal | test PSNR (dB) | SSIM | .nsc bytes | vs fp32 grid .nsc | ΔPSNR | train s |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ratio = f"{base['bytes'] / r['bytes']:.1f}×" if base else "–"
        dpsnr = f"{r['psnr'] - base['psnr']:+.2f}" if base else "–"
        lam = "–" if r.get("lambda_i") is None else f"{r['lambda_i']:g}"
        ann = "–" if r.get("anneal_fraction") is None else f"{r['anneal_fraction']:g}"
        lines.append(f"| {r['run']} | {RUNS.get(r['run'], (r['series'],))[0]} | {lam} | {r['log2_hashmap_size']} | {ann} | {r['psnr']:.2f} | "
                     f"{r['ssim']:.3f} | {r['bytes']:,} | {ratio} | {dpsnr} | {r['train_seconds']:.0f} |")
    if base:
        ok = [r["run"] for r in rows if r["run"] != "base" and base["bytes"] / r["bytes"] >= 10 and base["psnr"] - r["psnr"] <= 0.5]
        ok20 = [r for r in ok if base["bytes"] / next(x for x in rows if x["run"] == r)["bytes"] >= 20]
        lines += ["", "Target (issue 4): ≥ 10× smaller than the fp32 hash grid at ≤ 0.5 dB PSNR loss — met by: "
                  + (", ".join(f"`{r}`" for r in ok) if ok else "**no run**") + ".",
                  "Goal at the equal budget (issue 19, item 6): ≥ 20× smaller within 0.5 dB — met by: "
                  + (", ".join(f"`{r}`" for r in ok20) if ok20 else "**no run**") + "."]
        tb = tensorf_base()
        if tb is not None and base["steps"] * base["rays_per_batch"] == tb["rays"] and base["test_views"] == tb["views"]:
            lines.append(f"fp32 hash grid vs the TensoRF base trained on as many rays ({tb['psnr']:.2f} dB on "
                         f"{tb['views']} views: {tb['source']}): {base['psnr'] - tb['psnr']:+.2f} dB "
                         "(issue 19's goal: within 1 dB).")
        by = {r["run"]: r for r in rows}
        if "default" in by and "ste" in by:
            d = by["default"]["psnr"] - by["ste"]["psnr"]
            lines.append(f"Annealing (default, {by['default']['anneal_fraction']:g} of the run) vs plain STE: {d:+.2f} dB at "
                         f"{by['default']['bytes']:,} vs {by['ste']['bytes']:,} bytes ({'a gain' if d > 0 else 'a loss'} for annealing).")
        if "default" in by and "lam0" in by:
            lines.append(f"Entropy regularisation (λ_I = 1e-4 vs 0): {by['default']['psnr'] - by['lam0']['psnr']:+.2f} dB at "
                         f"{by['lam0']['bytes'] / by['default']['bytes']:.2f}× fewer bytes.")
    if lod_rows:
        lines += ["", f"Levels of detail of the `default` run (file prefix decoded; levels above `lod` zeroed, paper Sec. 4.5; "
                  f"{lod_rows[0]['test_views']} test views):", "",
                  "| LOD | cumulative bytes | test PSNR (dB) | SSIM |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['lod']} | {r['bytes']:,} | {r['psnr']:.2f} | {r['ssim']:.3f} |" for r in lod_rows]
    update_doc_section(name, "\n".join(lines))


if __name__ == "__main__":
    main()
