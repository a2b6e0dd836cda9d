"""``nscodec demo``: the product end to end, on CPU, with no download.

1. generate a procedural scene (:mod:`nscodec.scenes`) in Blender layout;
2. train ``ectensorf`` on it with nerfstudio's own :class:`~nerfstudio.engine.trainer.Trainer` (both stages, sized
   for a CPU); the uncompressed TensoRF of stage 1 is evaluated at the switch, as the base the file is compared with;
3. export the run to ``.nsc`` exactly as ``ns-export compressed`` does;
4. decode the file **in a fresh process** (``nscodec eval``) and report its test PSNR, bytes on disk, size ratio and
   PSNR change against the uncompressed base, and the decode time; write ``comparison.png`` (ground truth | decoded |
   error) and print the ``ns-viewer`` / ``nscodec render`` commands that open the file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``nscodec demo``."""
    p.add_argument("--workdir", default="outputs/demo", help="where the scene, run and .nsc go")
    p.add_argument("--stage1-steps", type=int, default=800, help="TensoRF pretraining steps (stage 1)")
    p.add_argument("--stage2-steps", type=int, default=300, help="compression steps (stage 2)")
    p.add_argument("--rays", type=int, default=4096, help="rays per batch")
    p.add_argument("--resolution", type=int, default=100, help="image size of the generated scene")
    p.add_argument("--overwrite", action="store_true", help="regenerate the scene and replace results")


def train_in_process(
    data: Path, workdir: Path, steps: int, rays: int, progress: bool = True, trainer_config: Any = None,
    on_step: Optional[Callable[[Any, int], None]] = None, **model_overrides: Any
):
    """Train in-process with nerfstudio's Trainer (default method ``nscodec-tensorf``, or ``trainer_config``);
    ``on_step(trainer, step)`` runs after every training step's callbacks. Returns ``(config_yml, trainer, seconds)``."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from tqdm import tqdm

    from nscodec_configs.method_configs import tensorf_trainer_config

    config = trainer_config if trainer_config is not None else tensorf_trainer_config(max_steps=steps)
    config.max_num_iterations = steps
    config.data = data
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.train_num_rays_per_batch = rays
    config.output_dir = workdir / "runs"
    config.experiment_name = config.method_name
    config.vis = "tensorboard"
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = steps + 1
    config.steps_per_save = steps
    config.logging.local_writer.enable = False
    for k, v in model_overrides.items():
        setattr(config.pipeline.model, k, v)
    config.set_timestamp()
    config.save_config()
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(config.machine.seed)  # as `ns-train` does: python, numpy and torch RNGs (image order, rays)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    bar = tqdm(total=steps, desc=f"train {config.method_name}", unit="it", disable=not progress)

    def tick(step: int) -> None:
        bar.update(1)
        if on_step is not None:
            on_step(trainer, step)

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], tick, update_every_num_iters=1))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    bar.close()
    return config.get_base_dir() / "config.yml", trainer, seconds


def run_demo(workdir: Path, stage1_steps: int = 800, stage2_steps: int = 300, rays: int = 4096, resolution: int = 100,
             overwrite: bool = False) -> Dict[str, Any]:
    """Run the whole demo; returns (and writes to ``workdir/results.json``) the measured figures."""
    from nscodec.tools.evaluate import evaluate_model
    from nscodec.tools.export import export_from_config
    from nscodec.scenes import generate_blender_scene
    from nscodec_configs.method_configs import ectensorf_trainer_config

    workdir = Path(workdir)
    scene = workdir / "scene"
    if overwrite or not (scene / "transforms_test.json").exists():
        print(f"[1/4] generating the procedural scene in {scene}", flush=True)
        generate_blender_scene(scene, resolution=resolution, overwrite=True)
    else:
        print(f"[1/4] reusing the scene in {scene}", flush=True)
    total = stage1_steps + stage2_steps
    print(f"[2/4] training ectensorf on CPU: {stage1_steps} TensoRF steps, then {stage2_steps} compression steps", flush=True)
    base: Dict[str, Any] = {}

    def evaluate_base(trainer, step: int) -> None:  # the uncompressed TensoRF, just before the stage switch
        if step == stage1_steps - 1:
            model = trainer.pipeline.model
            t0 = time.perf_counter()
            base.update(evaluate_model(model, scene, "test", progress=False))
            model.train()
            base["bytes_fp32"] = sum(t.numel() * t.element_size() for t in model.field.parameters())
            base["eval_seconds"] = time.perf_counter() - t0

    config = ectensorf_trainer_config(stage1_steps=stage1_steps, stage2_steps=stage2_steps)
    spread = tuple(int(stage1_steps * f) for f in (0.2, 0.4, 0.6, 0.8))
    config_yml, trainer, train_s = train_in_process(
        scene, workdir, total, rays, trainer_config=config, on_step=evaluate_base,
        init_resolution=48, final_resolution=128, upsampling_iters=spread,
    )
    train_s -= base.get("eval_seconds", 0.0)
    nsc_path = workdir / "scene.nsc"
    print(f"[3/4] exporting {nsc_path} (as ns-export compressed)", flush=True)
    export_from_config(config_yml, nsc_path, overwrite=True, quiet=True)
    print("[4/4] decoding the .nsc in a fresh process and evaluating it on the test split", flush=True)
    out_json = workdir / "decoded_eval.json"
    r = subprocess.run([sys.executable, "-m", "nscodec.cli", "eval", str(nsc_path), "--data", str(scene), "--output", str(out_json)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"nscodec demo: decoding in a fresh process failed:\n{r.stderr[-2000:]}")
    dec = json.loads(out_json.read_text())
    png = workdir / "comparison.png"
    write_comparison(nsc_path, scene, png)
    results = {
        "scene": str(scene),
        "method": "ectensorf",
        "train_seconds": round(train_s, 1),
        "steps": {"stage1": stage1_steps, "stage2": stage2_steps, "rays_per_batch": rays},
        "uncompressed": {"psnr": base.get("psnr"), "ssim": base.get("ssim"), "bytes_fp32": base.get("bytes_fp32")},
        "nsc": {"psnr": dec["psnr"], "ssim": dec["ssim"], "bytes": dec["bytes"], "decode_seconds": round(dec["decode_seconds"], 3)},
        "ratio": base["bytes_fp32"] / dec["bytes"] if base else None,
        "psnr_change_db": dec["psnr"] - base["psnr"] if base else None,
        "config": str(config_yml),
        "file": str(nsc_path),
        "comparison_png": str(png),
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"  trained in {train_s:.0f} s ({stage1_steps} + {stage2_steps} steps, {rays} rays each)")
    print(f"  uncompressed TensoRF : test PSNR {base['psnr']:.2f} dB   {base['bytes_fp32']:>11,} bytes (fp32 parameters; "
          f"stage 1 at step {stage1_steps}, what stage 2 compressed)")
    print(f"  decoded {nsc_path.name:<12} : test PSNR {dec['psnr']:.2f} dB   {dec['bytes']:>11,} bytes on disk")
    print(f"  {results['ratio']:.0f}x smaller, {results['psnr_change_db']:+.2f} dB (stage 2 also kept training the "
          f"appearance for {stage2_steps} steps); decoded in {dec['decode_seconds']:.2f} s in a fresh process (imports excluded)")
    print(f"  ground truth | decoded | error: {png}")
    print()
    print("  look at it:     ns-viewer --load-config", nsc_path)
    print("  make a video:   nscodec render", nsc_path, "--output", workdir / "orbit.mp4")
    print("  what it holds:  nscodec info", nsc_path)
    return results


def write_comparison(nsc_path: Path, scene: Path, png: Path, view: int = 0) -> None:
    """``png``: ground truth | decoded render | absolute error (×4) of test view ``view``."""
    import numpy as np
    import torch
    from PIL import Image

    from nscodec.data import load_split
    from nscodec.io import load_model

    model, _ = load_model(nsc_path)
    cams, ds = load_split(scene, "test")
    with torch.no_grad():
        rgb = model.get_outputs_for_camera(cams[view : view + 1])["rgb"].clamp(0, 1)
    gt = model.renderer_rgb.blend_background(ds.get_image_float32(view))
    err = ((rgb - gt).abs() * 4).clamp(0, 1)
    strip = torch.cat([gt, rgb, err], dim=1).numpy()
    Image.fromarray((strip * 255).round().astype(np.uint8)).save(png)


def demo_command(args: argparse.Namespace) -> int:
    """Entry of ``nscodec demo``."""
    import torch

    torch.manual_seed(0)
    run_demo(Path(args.workdir), args.stage1_steps, args.stage2_steps, args.rays, args.resolution, args.overwrite)
    return 0
