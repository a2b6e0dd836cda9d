"""``nscodec demo``: the end-to-end job, on CPU, with no download.

1. generate the procedural scene (:mod:`nscodec.scenes`) in Blender layout;
2. train ``nscodec-tensorf`` on it with nerfstudio's own :class:`~nerfstudio.engine.trainer.Trainer`;
3. export the checkpoint to ``.nsc`` exactly as ``ns-export compressed`` does;
4. decode the file and evaluate on the test split; print test PSNR (dB) and file bytes next to the
   uncompressed model's, and write ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional



def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``nscodec demo``."""
    p.add_argument("--workdir", default="outputs/demo", help="where the scene, run and .nsc go")
    p.add_argument("--steps", type=int, default=1200, help="training iterations")
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


def run_demo(workdir: Path, steps: int = 1200, rays: int = 4096, resolution: int = 100, overwrite: bool = False) -> Dict[str, Any]:
    """Run the whole demo; returns (and writes to ``workdir/results.json``) the measured figures."""
    from nscodec.evaluate import evaluate_model, evaluate_nsc
    from nscodec.export import export_from_config
    from nscodec.scenes import generate_blender_scene

    workdir = Path(workdir)
    scene = workdir / "scene"
    if overwrite or not (scene / "transforms_test.json").exists():
        print(f"[1/4] generating the procedural scene in {scene}")
        generate_blender_scene(scene, resolution=resolution, overwrite=True)
    else:
        print(f"[1/4] reusing the scene in {scene}")
    print(f"[2/4] training nscodec-tensorf for {steps} steps on CPU")
    config_yml, trainer, train_s = train_in_process(
        scene, workdir, steps, rays,
        init_resolution=48, final_resolution=128, upsampling_iters=tuple(int(steps * f) for f in (0.15, 0.3, 0.45, 0.6)),
    )
    model = trainer.pipeline.model
    fp32_bytes = sum(p.numel() * 4 for p in model.parameters())
    base = evaluate_model(model, scene, "test")
    nsc_path = workdir / "scene.nsc"
    print(f"[3/4] exporting {nsc_path}")
    export_from_config(config_yml, nsc_path, overwrite=True)
    print("[4/4] decoding the .nsc and evaluating on the test split")
    dec = evaluate_nsc(nsc_path, scene, "test", 1.0)
    results = {
        "scene": str(scene),
        "train_seconds": round(train_s, 1),
        "steps": steps,
        "uncompressed": {"psnr": base["psnr"], "ssim": base["ssim"], "bytes_fp32": fp32_bytes},
        "nsc": {"psnr": dec["psnr"], "ssim": dec["ssim"], "bytes": dec["bytes"], "decode_seconds": round(dec["decode_seconds"], 3)},
        "config": str(config_yml),
        "file": str(nsc_path),
    }
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(f"  trained in {train_s:.0f} s ({steps} steps)")
    print(f"  uncompressed model : test PSNR {base['psnr']:.2f} dB   {fp32_bytes:>12,} bytes (fp32 parameters)")
    print(f"  decoded {nsc_path.name:<10} : test PSNR {dec['psnr']:.2f} dB   {dec['bytes']:>12,} bytes on disk "
          f"({fp32_bytes / dec['bytes']:.1f}x smaller)")
    print(f"  results: {workdir / 'results.json'}   inspect: nscodec info {nsc_path}")
    return results


def demo_command(args: argparse.Namespace) -> int:
    """Entry of ``nscodec demo``."""
    import torch

    torch.manual_seed(0)
    run_demo(Path(args.workdir), args.steps, args.rays, args.resolution, args.overwrite)
    return 0
