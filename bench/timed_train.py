"""Train one nerfstudio method for a fixed wall-clock budget, then evaluate it (one subprocess per run).

Used by ``bench/tensorf_vs_stock.py``. Stock nerfstudio models build torchmetrics' LPIPS, which downloads
AlexNet; here (benchmark only) it is replaced by a stub so stock ``tensorf`` can run offline — our own models
never need this.

    python bench/timed_train.py --method tensorf --data ../shared/data/blender/lego --scale 0.25 \\
        --seconds 600 --out bench/runs/stock.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import stub_lpips, train_timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--seconds", type=float, default=600)
    ap.add_argument("--rays", type=int, default=4096)
    ap.add_argument("--eval-every", type=int, default=20, help="evaluate test views 0, N, 2N, ...")
    ap.add_argument("--workdir", default="bench/runs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                    help="override a model config field (Python literal), e.g. step_ratio=1.0")
    args = ap.parse_args()

    stub_lpips()  # stock models only; see module docstring
    from nerfstudio.configs.base_config import MachineConfig
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
    from nscodec.tools.evaluate import evaluate_model

    config = all_methods[args.method]
    config.machine = MachineConfig(device_type="cpu")
    config.data = Path(args.data)
    dm = config.pipeline.datamanager
    from nscodec.data import NscDataManagerConfig

    if type(dm) not in (VanillaDataManagerConfig, NscDataManagerConfig):  # stock tensorf: a multi-process datamanager
        dm = VanillaDataManagerConfig(dataparser=dm.dataparser, train_num_rays_per_batch=dm.train_num_rays_per_batch,
                                      eval_num_rays_per_batch=dm.eval_num_rays_per_batch)
        config.pipeline.datamanager = dm
    dm.data = Path(args.data)
    dm.camera_res_scale_factor = args.scale
    dm.train_num_rays_per_batch = args.rays
    import ast

    for kv in args.model_arg:
        key, value = kv.split("=", 1)
        if not hasattr(config.pipeline.model, key):
            raise SystemExit(f"unknown model config field {key!r}")
        setattr(config.pipeline.model, key, ast.literal_eval(value))
    config.output_dir = Path(args.workdir)
    config.experiment_name = f"{args.method}_{int(args.seconds)}s"
    config.vis = "tensorboard"
    config.max_num_iterations = 10**7
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = 10**8
    config.steps_per_save = 10**8
    config.logging.local_writer.enable = False
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    timing = train_timed(trainer, args.seconds)
    wall, trained, state = timing["wall_seconds"], timing["train_seconds"], {"steps": timing["steps"]}
    trainer.save_checkpoint(state["steps"])
    model = trainer.pipeline.model
    res = evaluate_model(model, Path(args.data), "test", args.scale, every=args.eval_every)
    res.pop("per_view")
    out = {
        "method": args.method + "".join(f" [{kv}]" for kv in args.model_arg),
        "scene": Path(args.data).name,
        "resolution": f"{res['width']}x{res['height']}",
        "psnr": res["psnr"],
        "ssim": res["ssim"],
        "test_views": res["num_views"],
        "steps": state["steps"],
        "rays_per_batch": args.rays,
        "train_seconds": trained,
        "wall_seconds_incl_setup": wall,
        "rays_per_second": state["steps"] * args.rays / trained,
        "eval_render_seconds_per_view": res["render_seconds"] / max(1, res["num_views"]),
        "fp32_bytes": sum(p.numel() * 4 for p in model.parameters()),
        "bytes": sum(p.numel() * 4 for p in model.parameters()),  # uncompressed: fp32 parameters
        "config": str(config.get_base_dir() / "config.yml"),
        "device": "cpu",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
