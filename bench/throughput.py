"""Training throughput of the grid methods against the TensoRF base, side by side in one run (CPU).

Each point trains one method with its registered preset (steps, rays per batch, every default) on lego 200² in its
own process, one after the other, and records train rays/s over the whole run (``steps × rays ÷ train seconds``),
epochs (``steps × rays ÷ (views × pixels)``), peak resident memory, and the test PSNR of the trained model on every
``--every``-th test view. ``--kernels`` runs each grid method with nscodec's C++ kernels (``cpp``) and with their
plain-torch twins (``torch``, the code before the kernels), so the speed-up is a ratio measured in the same run.

    python bench/throughput.py                                   # nscodec-tensorf, shacira, vqad; cpp and torch
    python bench/throughput.py --methods shacira --kernels cpp --steps 200    # a quick look
    python bench/throughput.py --kernels cpp --repeats 2      # every method twice, rounds interleaved: medians

With ``--repeats R`` the methods run in R rounds (A B C A B C …), so a slow spell of the machine hits every method
alike; each row's ratio is against the base row of its own round, and the summary gives the ratio of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import ROOT, apply_model_set, git_commit, record, update_doc_section  # noqa: E402

#: methods whose grid core has C++ kernels (the others run one point, with whatever NSCODEC_KERNELS says)
GRID_METHODS = ("shacira", "vqad", "codecnerf")


def child(args: argparse.Namespace) -> None:
    """One training run in this process; prints one JSON line."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    from nerfstudio.configs.method_configs import all_methods

    from nscodec.tools.demo import train_in_process
    from nscodec.tools.evaluate import evaluate_model

    from nscodec._backend import preload_kernels

    preload_kernels()  # a first use on a fresh machine compiles them (once, ~1 min): not part of training time
    cfg = all_methods[args.child]
    cfg.machine.device_type = "cpu"
    apply_model_set(cfg, args.model_set)
    dm = cfg.pipeline.datamanager
    dm.camera_res_scale_factor = args.scale
    steps = args.steps or cfg.max_num_iterations
    rays = dm.train_num_rays_per_batch
    work = ROOT / "bench/runs/throughput" / f"{args.child}-{os.environ.get('NSCODEC_KERNELS', 'auto')}"
    _, trainer, seconds = train_in_process(Path(args.data), work, steps, rays, progress=False, trainer_config=cfg)
    model = trainer.pipeline.model
    rss_train = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    ds = trainer.pipeline.datamanager.train_dataset
    views = len(ds)
    h, w = int(ds.cameras.height[0]), int(ds.cameras.width[0])
    ev = evaluate_model(model, Path(args.data), "test", scale_factor=args.scale, every=args.every, progress=False)
    print("RESULT " + json.dumps({
        "steps": steps, "rays_per_batch": rays, "train_seconds": round(seconds, 1),
        "rays_per_second": round(steps * rays / seconds), "epochs": round(steps * rays / (views * h * w), 3),
        "peak_rss_mb": round(rss_train), "psnr": round(ev["psnr"], 2), "test_views": ev["num_views"],
    }), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--methods", default="nscodec-tensorf,shacira,vqad")
    ap.add_argument("--kernels", default="cpp,torch", help="NSCODEC_KERNELS values to run each grid method with")
    ap.add_argument("--steps", type=int, default=0, help="0: the preset's steps")
    ap.add_argument("--every", type=int, default=20, help="evaluate every N-th test view")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="rounds of every method, interleaved (medians reported)")
    ap.add_argument("--name", default="throughput")
    ap.add_argument("--report-only", action="store_true", help="rewrite the docs table from bench/results, run nothing")
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                    help="set a model config field of every point (value parsed as JSON), e.g. rate_knots=0: an A/B probe")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.report_only:
        return report(args.name, json.loads((ROOT / "bench/results" / f"{args.name}.json").read_text())["rows"], args.every)
    command = "python bench/throughput.py " + " ".join(sys.argv[1:])
    out = ROOT / "bench/results" / f"{args.name}.json"
    # rows of other (method, kernels) pairs are kept from earlier invocations; each row carries its own command/commit
    kept = json.loads(out.read_text())["rows"] if out.exists() else []
    rows = []
    for rnd, method in [(r, m) for r in range(args.repeats) for m in args.methods.split(",")]:
        for kernels in (args.kernels.split(",") if method in GRID_METHODS else ["cpp"]):
            env = {**os.environ, "NSCODEC_KERNELS": kernels}
            cmd = [sys.executable, __file__, "--child", method, "--data", args.data, "--scale", str(args.scale),
                   "--steps", str(args.steps), "--every", str(args.every), "--threads", str(args.threads)]
            cmd += [a for kv in args.model_set for a in ("--model-set", kv)]
            t0 = time.time()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                raise SystemExit(f"{method} ({kernels}) failed")
            row = {"method": method, "scene": f"lego {int(800 * args.scale)}²",
                   "kernels": kernels if method in GRID_METHODS else f"{kernels} (VM encoding)",
                   **json.loads(line[7:]), "git_commit": git_commit(), "command": command}
            if args.repeats > 1:
                row["round"] = rnd
            rows.append(row)
            kept = [r for r in kept if (r["method"], r["kernels"]) != (row["method"], row["kernels"])
                    or (r["method"] not in GRID_METHODS and r["command"] != command and any(
                        k["command"] == r["command"] and k["method"] in GRID_METHODS for k in kept))]
            print(f"{method:16s} {kernels:5s} {row['rays_per_second']:>7,} rays/s  {row['train_seconds']:7.1f} s  "
                  f"{row['peak_rss_mb']:>6,} MB  {row['psnr']:.2f} dB  ({time.time() - t0:.0f} s wall)", flush=True)
            record(args.name, kept + rows, command)
    rows = kept + rows
    report(args.name, rows, args.every)


def report(name: str, rows: list, every: int) -> None:
    """docs/benchmarks.md table of ``rows``; each method is compared with the ``nscodec-tensorf`` row of the same
    invocation (side by side in one run) and with its own torch-twin row."""
    cmds = "; ".join(dict.fromkeys(f"`{r['command']}` (commit {r['git_commit']})" for r in rows))
    lines = [f"Commands: {cmds}  ",
             "Each point: the method's registered preset, trained in its own process, one after the other on the same "
             "2 cores; rays/s over the whole run; PSNR of the trained model on every "
             f"{every}-th test view; each ratio is against the row of the same command (one run).", "",
             "| method | kernels | round | steps × rays | epochs | train rays/s | vs nscodec-tensorf | vs torch twin | train s | peak RSS MB | PSNR (dB) |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        same = [b for b in rows if b["command"] == r["command"] and b.get("round") == r.get("round")]
        base = next((b for b in same if b["method"] == "nscodec-tensorf"), None)
        twin = next((t for t in same if t["method"] == r["method"] and t["kernels"] == "torch"), None)
        vs_base = f"{r['rays_per_second'] / base['rays_per_second']:.2f}×" if base else "—"
        vs_twin = f"{r['rays_per_second'] / twin['rays_per_second']:.2f}×" if twin and twin is not r else "—"
        lines.append(f"| `{r['method']}` | {r['kernels']} | {r.get('round', '—')} | {r['steps']} × {r['rays_per_batch']} | {r['epochs']} | "
                     f"{r['rays_per_second']:,} | {vs_base} | {vs_twin} | {r['train_seconds']} | {r['peak_rss_mb']:,} | "
                     f"{r['psnr']:.2f} |")
    rounds = [r for r in rows if "round" in r]
    if rounds:  # the medians of the latest invocation with rounds
        import statistics

        cmd = rounds[-1]["command"]
        med = {}
        for r in rounds:
            if r["command"] == cmd:
                med.setdefault((r["method"], r["kernels"]), []).append(r["rays_per_second"])
        base = next((statistics.median(v) for (m, _), v in med.items() if m == "nscodec-tensorf"), None)
        lines += ["", f"Medians over the rounds of `{cmd}`:", ""]
        for (m, k), v in med.items():
            ratio = f", {statistics.median(v) / base:.2f}× `nscodec-tensorf`'s median" if base else ""
            lines.append(f"- `{m}` ({k}): {statistics.median(v):,.0f} rays/s over {len(v)} rounds{ratio}")
    update_doc_section(name, "## Training throughput: grid methods vs the TensoRF base (CPU)\n\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
