"""Side by side: stock ``ns-train tensorf`` vs ``nscodec-tensorf`` on CPU, same data, same wall-clock budget.

Both runs use nerfstudio's Trainer and VanillaDataManager, 4096 rays per batch, one after the other on the
same machine (never concurrently). Reports train rays/s (ratio ours / stock) and test PSNR after the budget.

    python bench/tensorf_vs_stock.py --data ../shared/data/blender/lego --scale 0.25 --seconds 600
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import ROOT, record, update_doc_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--methods", default="tensorf,nscodec-tensorf",
                    help="comma-separated; a method may carry model overrides after ':' e.g. nscodec-tensorf:step_ratio=1.0")
    ap.add_argument("--report-only", action="store_true", help="rebuild the record/table from existing bench/runs JSON")
    args = ap.parse_args()
    argv = [a for a in sys.argv[1:] if a != "--report-only"]
    command = "python bench/tensorf_vs_stock.py " + " ".join(argv)
    rows = []
    for spec in args.methods.split(","):
        method, *overrides = spec.split(":")
        tag = method + "".join("_" + o.replace("=", "") for o in overrides)
        out = ROOT / "bench" / "runs" / f"{tag}_{int(args.seconds)}s.json"
        if args.report_only:
            row = json.loads(out.read_text())
            row.setdefault("bytes", row["fp32_bytes"])
            rows.append(row)
            continue
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "timed_train.py"), "--method", method, "--data", args.data,
             "--scale", str(args.scale), "--seconds", str(args.seconds), "--eval-every", str(args.eval_every),
             "--workdir", str(ROOT / "bench" / "runs"), "--out", str(out)] + [a for o in overrides for a in ("--model-arg", o)],
            check=True,
        )
        rows.append(json.loads(out.read_text()))
    stock, ours = rows[0], rows[1:]
    for r in ours:
        r["throughput_ratio_vs_stock"] = r["rays_per_second"] / stock["rays_per_second"]
        r["psnr_gain_vs_stock_db"] = r["psnr"] - stock["psnr"]
    extra = {"baseline": stock["method"]}
    record("tensorf_vs_stock", rows, command, extra)
    lines = [
        "## nscodec-tensorf vs stock nerfstudio tensorf (CPU, equal wall-clock)",
        "",
        f"Command: `{command}`  ",
        f"Scene: {stock['scene']} at {stock['resolution']}, test views every {args.eval_every}-th ({stock['test_views']} views), "
        f"{stock['rays_per_batch']} rays/batch, budget {int(args.seconds)} s of training each, run one after the other.",
        "",
        "| method | steps | train rays/s | test PSNR (dB) | SSIM | fp32 bytes | eval s/view |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['steps']} | {r['rays_per_second']:,.0f} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
            f"{r['fp32_bytes']:,} | {r['eval_render_seconds_per_view']:.1f} |"
        )
    lines.append("")
    for r in ours:
        lines.append(f"- {r['method']}: throughput **{r['throughput_ratio_vs_stock']:.1f}×** stock; "
                     f"test PSNR at equal time **{r['psnr_gain_vs_stock_db']:+.2f} dB** vs stock.")
    update_doc_section("tensorf_vs_stock", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
