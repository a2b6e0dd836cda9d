"""How much of the ectensorf PSNR gap is the latent bottleneck? Fit latents + decoders to the stage-1 planes
alone (``ECTensoRFModel.prefit_latents``: importance-weighted plane reconstruction + λ·rate, no rendering loss),
install the decoded planes in the unchanged stage-1 field, and render test views.

Reads the cached base of ``bench/ectensorf_rd.py`` (its step-1200 checkpoint). Each positional argument is one
variant: a JSON dict of ``ECTensoRFModelConfig`` fields plus ``prefit`` (steps; -1 = the base itself)::

    python bench/ectensorf_capacity.py '{"prefit": -1}' '{"prefit": 300}' \\
        '{"prefit": 1500, "latent_channels_density": 16, "latent_channels_color": 48}'

Appends one row per variant to ``bench/results/ectensorf_capacity.json``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

from common import ectensorf_sweep_base  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared/data/blender/lego"
OUT = ROOT / "bench/results/ectensorf_capacity.json"


def main() -> None:
    from nscodec.ectensorf.model import ECTensoRFModelConfig
    from nscodec.tools.evaluate import evaluate_model

    pipe, dm, ckpt = ectensorf_sweep_base(1200)
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    for arg in sys.argv[1:]:
        variant = json.loads(arg)
        fields = {k: v for k, v in variant.items() if k != "prefit"}
        steps = int(variant.get("prefit", 300))
        torch.manual_seed(0)
        cfg = ECTensoRFModelConfig(init_from=ckpt, latent_prefit_steps=max(steps, 0), **fields)
        model = cfg.setup(scene_box=pipe.model.scene_box, num_train_data=len(dm.train_dataset), metadata={})
        model.load_pretrained(ckpt)
        model.train()
        t0 = time.perf_counter()
        if steps >= 0:
            model.enter_stage2([dm.next_train(1200)[0] for _ in range(cfg.importance_batches)])
        fit_s = time.perf_counter() - t0
        model.eval()
        res = evaluate_model(model, DATA, "test", 0.25, every=40, progress=False)
        rate_bits = float(model.decode_planes()["rate_bits"]) if steps >= 0 else 0.0
        row = {"variant": variant, "psnr": res["psnr"], "test_views": res["num_views"], "latent_rate_bytes": rate_bits / 8,
               "fit_seconds": fit_s, "scene": "lego", "resolution": f"{res['width']}x{res['height']}", "device": "cpu",
               "command": "python bench/ectensorf_capacity.py '" + arg + "'", "date": time.strftime("%Y-%m-%d")}
        rows.append(row)
        OUT.write_text(json.dumps(rows, indent=2) + "\n")
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
