"""Where a training step's time goes: torch.profiler over a window of training steps of one method (CPU).

Trains the method's registered preset in-process on lego 200² and profiles steps ``--prof-from`` … ``--steps`` (after
the occupancy grid has carved the box), printing the median step time before the window (unprofiled) and the ops
sorted by self CPU time. ``NSCODEC_KERNELS=torch`` profiles the torch twins instead of the C++ kernels.

    python bench/profile_step.py --method shacira --steps 260 --prof-from 230
    python bench/profile_step.py --method vqad --steps 800 --prof-from 800 --timeline 16   # the whole run's timeline
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from common import ROOT, apply_model_set  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--method", default="shacira")
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--dataparser", default="", help="a registered dataparser (e.g. nerfstudio-data); default the preset's")
    ap.add_argument("--dataparser-set", action="append", default=[], metavar="KEY=VALUE",
                    help="a field of that dataparser's config (value parsed as JSON), e.g. downscale_factor=8")
    ap.add_argument("--steps", type=int, default=260)
    ap.add_argument("--prof-from", type=int, default=230)
    ap.add_argument("--rays", type=int, default=0, help="0: the preset's rays per batch")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, default=30)
    ap.add_argument("--timeline", type=int, default=0, metavar="N",
                    help="also print the mean / median / max step time of N equal segments of the whole run (where a "
                         "run's time goes: the steps before the first occupancy update, the refreshes, the rest)")
    ap.add_argument("--shapes", action="store_true", help="also list the ops grouped by input shapes")
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                    help="set a model config field (value parsed as JSON), e.g. occupancy_warmup=16: an A/B probe")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from nerfstudio.configs.method_configs import all_methods

    from nscodec._backend import preload_kernels
    from nscodec.tools.demo import train_in_process

    preload_kernels()
    cfg = all_methods[args.method]
    cfg.machine.device_type = "cpu"
    apply_model_set(cfg, args.model_set)
    cfg.pipeline.datamanager.camera_res_scale_factor = args.scale
    if args.dataparser:
        import copy

        from nerfstudio.configs.dataparser_configs import all_dataparsers

        cfg.pipeline.datamanager.dataparser = copy.deepcopy(all_dataparsers[args.dataparser])
        for item in args.dataparser_set:
            key, value = item.split("=", 1)
            setattr(cfg.pipeline.datamanager.dataparser, key, json.loads(value))
    rays = args.rays or cfg.pipeline.datamanager.train_num_rays_per_batch
    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=bool(args.shapes))
    times: list = []
    every_step: list = []
    last = {"t": None}

    def on_step(trainer, step: int) -> None:
        now = time.perf_counter()
        if last["t"] is not None:
            every_step.append(now - last["t"])
        if last["t"] is not None and step <= args.prof_from:
            times.append(now - last["t"])
        last["t"] = now
        if step == args.prof_from and args.prof_from < args.steps:
            prof.__enter__()
        if step == args.steps - 1 and args.prof_from < args.steps:
            prof.__exit__(None, None, None)

    train_in_process(Path(args.data), ROOT / "bench/runs/profile" / args.method, args.steps, rays, progress=False,
                     trainer_config=cfg, on_step=on_step)
    t = statistics.median(times[len(times) // 2:])
    print(f"{args.method}: median step {t * 1000:.1f} ms over steps {args.prof_from // 2}-{args.prof_from}, "
          f"{rays / t:,.0f} rays/s ({rays} rays per step, {args.threads} threads)")
    if args.timeline > 0:
        seg = max(1, len(every_step) // args.timeline)
        print(f"whole run: {sum(every_step):.1f} s over {len(every_step)} step intervals")
        for i in range(0, len(every_step), seg):
            part = every_step[i:i + seg]
            print(f"steps {i:5d}-{i + len(part):5d}: mean {1000 * sum(part) / len(part):7.1f} ms, median "
                  f"{1000 * statistics.median(part):7.1f} ms, max {1000 * max(part):7.1f} ms, sum {sum(part):6.1f} s")
    if args.prof_from < args.steps:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
        if args.shapes:
            print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=args.rows))


if __name__ == "__main__":
    main()
