"""A/B of ``train_samples_per_ray`` (importance resampling of a training pass) on fox, one training per value.

Each point trains nscodec-tensorf with ectensorf's stage-1 settings (half-voxel steps, four plane upsamplings at
20–80 % of the run) on fox at 135×240 (``instant-ngp-data``: scene contraction, random background) for ``--steps``
steps of 4,096 rays, in its own process, one after the other, then renders all held-out views.

    python bench/capture_resampling.py --steps 600 --k 12,0,8          # ~25 min on 2 cores
"""

from __future__ import annotations

import argparse
import copy
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, git_commit, record, update_doc_section  # noqa: E402

FOX = ROOT.parent / "shared/data/nerfstudio/fox"


def child(steps: int, k: int, rays: int) -> None:
    import torch

    torch.set_num_threads(2)
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    from nscodec._backend import preload_kernels
    from nscodec.tools.demo import train_in_process
    from nscodec.tools.evaluate import evaluate_model
    from nscodec_configs.method_configs import tensorf_trainer_config

    preload_kernels()
    cfg = tensorf_trainer_config(max_steps=steps)
    cfg.machine.device_type = "cpu"
    m = cfg.pipeline.model
    m.step_ratio = 0.5
    m.upsampling_iters = tuple(int(steps * f) for f in (0.2, 0.4, 0.6, 0.8))
    m.train_samples_per_ray = k
    dp = copy.deepcopy(all_dataparsers["instant-ngp-data"])
    cfg.pipeline.datamanager.dataparser = dp
    cfg.pipeline.datamanager.camera_res_scale_factor = 0.125
    _, trainer, secs = train_in_process(FOX, ROOT / "bench/runs/capture_resampling" / f"k{k}", steps, rays,
                                        progress=False, trainer_config=cfg)
    model = trainer.pipeline.model
    model.eval()
    ev = evaluate_model(model, FOX, "test", 0.125, dataparser=dp, progress=False)
    ds = trainer.pipeline.datamanager.train_dataset
    views, h, w = len(ds), int(ds.cameras.height[0]), int(ds.cameras.width[0])
    print("RESULT " + json.dumps({"scene": "fox", "method": "nscodec-tensorf (ectensorf stage 1)", "train_samples_per_ray": k,
                                  "steps": steps, "rays_per_batch": rays, "train_seconds": round(secs, 1),
                                  "rays_per_second": round(steps * rays / secs), "epochs": round(steps * rays / (views * h * w), 3),
                                  "psnr": round(ev["psnr"], 3), "ssim": round(ev["ssim"], 4), "test_views": ev["num_views"]}),
          flush=True)


def markdown(rows: list, command: str, commit: str) -> str:
    lines = [f"`{command}` (git {commit}); CPU, 2 cores; one seed; fox 135×240, all 6 held-out views.", "",
             "| train_samples_per_ray | steps × rays | epochs | train s | rays/s | test PSNR | SSIM |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        k = r["train_samples_per_ray"] or "0 (off)"
        lines.append(f"| {k} | {r['steps']:,} × {r['rays_per_batch']:,} | {r['epochs']} | {r['train_seconds']:,.0f} | "
                     f"{r['rays_per_second']:,} | {r['psnr']:.2f} | {r['ssim']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--k", default="12,0,8", help="train_samples_per_ray values (0: off)")
    ap.add_argument("--rays", type=int, default=4096)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        return child(args.steps, args.child, args.rays)
    command = "python bench/capture_resampling.py " + " ".join(sys.argv[1:])
    rows = []
    for k in [int(v) for v in args.k.split(",")]:
        proc = subprocess.run([sys.executable, __file__, "--child", str(k), "--steps", str(args.steps),
                               "--rays", str(args.rays)], capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            raise SystemExit(f"k={k} failed:\n{proc.stderr[-2000:]}")
        rows.append(json.loads(line[len("RESULT "):]))
        print(json.dumps(rows[-1]), flush=True)
    commit = git_commit()
    for r in rows:
        r["git_commit"] = commit
    record("capture_resampling", rows, command)
    update_doc_section("capture_resampling", markdown(rows, command, commit))


if __name__ == "__main__":
    main()
