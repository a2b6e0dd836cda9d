"""What the render looks like at ectensorf's stage switch: PSNR on one batch of training rays (train mode, as the
step-0 training metric) of the RD sweep's step-1200 base, after the latent prefit, and after the occupancy update
that follows the switch — with the stage-2 bound (the code) and as the code before 2026-11-30, fourth session did
it (no grid refresh at the switch, no bound). No training; about a minute on 2 cores::

    python bench/ectensorf_switch.py [--seed 0]

Prints one JSON line per state and appends a row to ``bench/results/ectensorf_switch.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from common import ROOT, device_string, ectensorf_sweep_base, git_commit  # noqa: E402

OUT = ROOT / "bench/results/ectensorf_switch.json"


def batch_psnr(model, ray_bundle, batch) -> float:
    """PSNR (dB) of ``model``'s train-mode render of ``ray_bundle`` against ``batch["image"]`` (RGBA composited on
    white, as the Blender dataparser's training loss sees it)."""
    model.train()
    with torch.no_grad():
        rgb = model.get_outputs(ray_bundle)["rgb"]
    img = batch["image"].to(rgb)
    gt = img[..., :3] * img[..., 3:] + (1 - img[..., 3:]) if img.shape[-1] == 4 else img
    return float(-10 * torch.log10(((rgb - gt) ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from nscodec.ectensorf.model import ECTensoRFModelConfig

    pipe, dm, ckpt = ectensorf_sweep_base(1200)
    row = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "device": device_string(), "git_commit": git_commit(),
           "command": " ".join(["python bench/ectensorf_switch.py", *sys.argv[1:]]), "rays": dm.config.train_num_rays_per_batch}
    for bounded in (True, False):
        torch.manual_seed(args.seed)
        cfg = ECTensoRFModelConfig(init_from=ckpt)  # the default preset
        model = cfg.setup(scene_box=pipe.model.scene_box, num_train_data=len(dm.train_dataset), metadata={})
        model.load_pretrained(ckpt)
        torch.manual_seed(args.seed)
        ray_bundle, batch = dm.next_train(0)
        key = "bounded" if bounded else "before_bound"
        row.setdefault("stage1_psnr", batch_psnr(model, ray_bundle, batch))
        model.train()
        if not bounded:  # the code before the bound: no refresh at the switch, any visible cell may become occupied
            model.occupancy_bound = lambda: None
            model.update_occupancy = lambda: 0.0
        model.enter_stage2([dm.next_train(0)[0] for _ in range(cfg.importance_batches)])
        row[f"{key}_after_prefit_psnr"] = batch_psnr(model, ray_bundle, batch)
        if not bounded:
            del model.update_occupancy  # the class's method again (still unbounded)
        occ_before = int(model.occupancy.occupied.sum())
        model.update_occupancy()
        row[f"{key}_after_update_psnr"] = batch_psnr(model, ray_bundle, batch)
        row[f"{key}_occupied_cells"] = [occ_before, int(model.occupancy.occupied.sum())]
        print(json.dumps({k: v for k, v in row.items() if k.startswith((key, "stage1"))}), flush=True)
    rows = json.loads(OUT.read_text()) if OUT.exists() else []
    OUT.write_text(json.dumps(rows + [row], indent=2) + "\n")


if __name__ == "__main__":
    main()
