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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, record, update_doc_section  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--methods", default="tensorf,nscodec-tensorf")
    args = ap.parse_args()
    command = "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute() else sys.argv[0]] + sys.argv[1:])
    rows = []
    for method in args.methods.split(","):
        out = ROOT / "bench" / "runs" / f"{method}_{int(args.seconds)}s.json"
        subprocess.run(
            [sys.executable, str(ROOT / "bench" / "timed_train.py"), "--method", method, "--data", args.data,
             "--scale", str(args.scale), "--seconds", str(args.seconds), "--eval-every", str(args.eval_every),
             "--workdir", str(ROOT / "bench" / "runs"), "--out", str(out)],
            check=True,
        )
        rows.append(json.loads(out.read_text()))
    stock, ours = rows[0], rows[-1]
    ratio = ours["rays_per_second"] / stock["rays_per_second"]
    extra = {"throughput_ratio": ratio, "psnr_gain_db": ours["psnr"] - stock["psnr"]}
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
    lines += ["", f"Throughput ratio (ours / stock): **{ratio:.1f}×**; PSNR difference at equal time: **{extra['psnr_gain_db']:+.2f} dB**."]
    update_doc_section("tensorf_vs_stock", "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
