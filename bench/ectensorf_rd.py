"""Rate–distortion points of ``ectensorf``: for each λ, ``ns-train ectensorf`` → ``nscodec export`` →
``nscodec eval`` (decoded file vs the test split). Bytes are the real ``.nsc`` file size on disk.

    python bench/ectensorf_rd.py --data ../shared/data/blender/lego --scale 0.25 --lambdas 2e-3
    python bench/ectensorf_rd.py --data ../shared/data/blender/lego_tiny --scale 1 --lambdas 2e-3 \\
        --stage1 60 --stage2 60 --name ectensorf_rd_smoke      # a quick check of the pipeline

Run alone on the machine: two trainings at once on 2 cores slow each other down 10x or more.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, record, update_doc_section  # noqa: E402

BIN = Path(sys.executable).parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--lambdas", default="5e-4,2e-3,8e-3", help="comma-separated λ (rate weight, per Mbit)")
    ap.add_argument("--stage1", type=int, default=1500)
    ap.add_argument("--stage2", type=int, default=1500)
    ap.add_argument("--every", type=int, default=1, help="evaluate every N-th test view (1 = all)")
    ap.add_argument("--name", default="ectensorf_rd")
    args = ap.parse_args()
    command = "python bench/ectensorf_rd.py " + " ".join(sys.argv[1:])
    work = ROOT / "bench" / "runs" / args.name
    rows = []
    for lam in args.lambdas.split(","):
        tag = f"lambda{lam}"
        t0 = time.perf_counter()
        train = [
            str(BIN / "ns-train"), "ectensorf", "--data", args.data, "--output-dir", str(work), "--experiment-name", tag,
            "--timestamp", "run", "--vis", "tensorboard", "--max-num-iterations", str(args.stage1 + args.stage2),
            "--pipeline.model.stage1-steps", str(args.stage1), "--pipeline.model.rate-lambda", lam,
            "--pipeline.datamanager.camera-res-scale-factor", str(args.scale),
            "--pipeline.model.upsampling-iters", *[str(int(args.stage1 * f)) for f in (0.2, 0.4, 0.6, 0.8)],
            "--steps-per-eval-image", "100000000", "--steps-per-eval-batch", "100000000",
        ]
        subprocess.run(train, check=True, cwd=ROOT)
        train_s = time.perf_counter() - t0
        config = work / tag / "ectensorf" / "run" / "config.yml"
        nsc = work / f"{tag}.nsc"
        subprocess.run([str(BIN / "nscodec"), "export", "--load-config", str(config), "--output-dir", str(work),
                        "--filename", nsc.name, "--overwrite"], check=True, cwd=ROOT)
        out = work / f"{tag}.json"
        subprocess.run([str(BIN / "nscodec"), "eval", str(nsc), "--data", args.data, "--scale-factor", str(args.scale),
                        "--every", str(args.every), "--output", str(out)], check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        ev = json.loads(out.read_text())
        rows.append({
            "method": "ectensorf", "scene": Path(args.data).name, "resolution": f"{ev['width']}x{ev['height']}",
            "lambda": float(lam), "psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": ev["bytes"], "test_views": ev["num_views"],
            "train_seconds": train_s, "decode_seconds": ev["decode_seconds"], "steps": args.stage1 + args.stage2,
        })
        print(json.dumps(rows[-1], indent=2))
    record(args.name, rows, command)
    lines = [f"## ectensorf rate–distortion ({rows[0]['scene']}, {rows[0]['resolution']})", "", f"Command: `{command}`", "",
             "| λ | test PSNR (dB) | SSIM | .nsc bytes | views | train s (incl. setup) | decode s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['lambda']:g} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['bytes']:,} | {r['test_views']} | "
                     f"{r['train_seconds']:.0f} | {r['decode_seconds']:.2f} |")
    update_doc_section(args.name, "\n".join(lines))


if __name__ == "__main__":
    main()
