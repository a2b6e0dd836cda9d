"""Real captures: every nscodec method on fox (a phone capture, instant-ngp format) against nerfstudio's ``nerfacto``,
and the train throughput on fox side by side with lego, in one run (CPU).

Each point trains in its own process, one after the other. Our methods train their registered preset (or ``--steps``)
on fox through nerfstudio's ``instant-ngp-data`` parser (scene contraction and a random background are what
``auto`` resolves to there), write the ``.nsc``, and the file is decoded and evaluated in a fresh process
(``nscodec eval``: the dataparser and eval split the file records; all of fox's held-out views). ``nerfacto`` then
trains for as long as the longest of our runs (equal CPU wall time) and is evaluated on the same views; its bytes
are those of its checkpoint file (the model's fp32 state, as nerfstudio saves it) and of its parameters.
``--lego`` adds ectensorf and shacira on lego 200² at the same steps, so the two scenes' rays/s are measured in the
same run. LPIPS is stubbed for nerfacto (it would download AlexNet); ours never build it.

    python bench/captures.py --lego                       # ~1 h on 2 cores (--budget short)
    python bench/captures.py --methods ectensorf --steps 300 --no-nerfacto   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, apply_model_set, git_commit, record, stub_lpips, train_timed, update_doc_section  # noqa: E402

FOX = ROOT.parent / "shared/data/nerfstudio/fox"
LEGO = ROOT.parent / "shared/data/blender/lego"
OURS = ("ectensorf", "shacira", "vqad", "codecnerf")


def short_config(method: str):
    """The ``--budget short`` trainer config of ``method``: its preset's code path at about half the steps (a whole
    run of every method plus nerfacto fits about an hour on 2 cores), built with the preset's own config function so
    the learning-rate schedules end at the last step. None: the registered preset as it is."""
    if method == "ectensorf":
        from nscodec_configs.method_configs import ectensorf_trainer_config

        return ectensorf_trainer_config(stage1_steps=600, stage2_steps=300, upsampling_iters=(120, 240, 360, 480))
    if method == "shacira":
        from nscodec_configs.shacira_configs import shacira_trainer_config

        return shacira_trainer_config(max_steps=600, anneal_fraction=0.0)
    if method == "codecnerf":
        from nscodec_configs.codecnerf_configs import codecnerf_trainer_config

        return codecnerf_trainer_config(max_steps=1000)
    if method == "vqad":  # the 800 steps its preset had when the table's row was measured
        from nscodec_configs.vqad_configs import vqad_trainer_config

        return vqad_trainer_config(max_steps=800)
    return None  # nerfacto: as registered


def child(args: argparse.Namespace) -> None:
    """One training run in this process; prints one ``RESULT`` JSON line."""
    import copy
    import resource

    import torch

    torch.set_num_threads(args.threads)
    stub_lpips()  # nerfacto only; ours never build LPIPS
    from nerfstudio.configs.dataparser_configs import all_dataparsers
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig

    from nscodec._backend import preload_kernels
    from nscodec.data import NscDataManagerConfig
    from nscodec.tools.evaluate import evaluate_model
    from nscodec.data import training_meta
    from nscodec.io import export_model
    from nscodec.core.model_base import NscModel

    preload_kernels()  # a fresh machine compiles them once: not training time
    cfg = (short_config(args.child) if args.budget == "short" else None) or copy.deepcopy(all_methods[args.child])
    cfg.machine.device_type = "cpu"
    apply_model_set(cfg, args.model_set)  # --model-set key=value: a probe of one model setting
    dm = cfg.pipeline.datamanager
    if type(dm) not in (VanillaDataManagerConfig, NscDataManagerConfig):  # nerfacto: a multi-process datamanager
        dm = VanillaDataManagerConfig(train_num_rays_per_batch=dm.train_num_rays_per_batch,
                                      eval_num_rays_per_batch=dm.eval_num_rays_per_batch)
        cfg.pipeline.datamanager = dm
    data = Path(args.data)
    dm.dataparser = copy.deepcopy(all_dataparsers[args.dataparser])
    dm.data = dm.dataparser.data = cfg.data = data
    dm.camera_res_scale_factor = args.scale
    rays = dm.train_num_rays_per_batch
    steps = args.steps or cfg.max_num_iterations
    work = ROOT / "bench/runs/captures" / f"{data.name}-{args.child}"
    cfg.output_dir, cfg.experiment_name, cfg.timestamp = work, args.child, "run"
    cfg.vis = "tensorboard"
    cfg.max_num_iterations = steps if not args.seconds else 10**7
    cfg.steps_per_eval_image = cfg.steps_per_eval_batch = cfg.steps_per_eval_all_images = 10**8
    cfg.steps_per_save = 10**8
    cfg.logging.local_writer.enable = False
    cfg.save_config()
    from nerfstudio.scripts.train import _set_random_seed

    _set_random_seed(cfg.machine.seed)
    trainer = cfg.setup(local_rank=0, world_size=1)
    trainer.setup()
    timing = train_timed(trainer, args.seconds)
    seconds, state = timing["wall_seconds"], {"steps": timing["steps"]}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    model = trainer.pipeline.model
    ds = trainer.pipeline.datamanager.train_dataset
    views, h, w = len(ds), int(ds.cameras.height[0]), int(ds.cameras.width[0])
    out = {"steps": state["steps"], "rays_per_batch": rays, "train_seconds": round(seconds, 1),
           "rays_per_second": round(state["steps"] * rays / seconds, 1),
           "epochs": round(state["steps"] * rays / (views * h * w), 3), "train_views": views,
           "resolution": f"{w}x{h}", "peak_rss_mb": round(rss, 1)}
    if isinstance(model, NscModel):
        path = work / f"{args.child}.nsc"
        export_model(model, path, meta=training_meta(trainer.pipeline.config), overwrite=True)
        out["nsc"] = str(path)
        out["scene_contraction"], out["background_color"] = model.config.scene_contraction, model.config.background_color
    else:
        trainer.save_checkpoint(state["steps"])
        ckpt = max(cfg.get_checkpoint_dir().glob("*.ckpt"))
        out["bytes"] = ckpt.stat().st_size
        out["bytes_what"] = "nerfstudio checkpoint file (model, optimizers, schedulers)"
        out["fp32_parameter_bytes"] = sum(p.numel() * 4 for p in model.parameters())
        ev = evaluate_model(model, data, "test", args.scale, dataparser=dm.dataparser, progress=False)
        out.update(psnr=ev["psnr"], ssim=ev["ssim"], test_views=ev["num_views"])
    print("RESULT " + json.dumps(out), flush=True)


def run_point(method: str, data: Path, dataparser: str, scale: float, steps: int, seconds: float, threads: int,
              budget: str, evaluate: bool = True, model_set: tuple = ()) -> dict:
    """Train one point in a child process, then (ours, with ``evaluate``) decode and evaluate its file in another
    fresh process."""
    cmd = [sys.executable, __file__, "--child", method, "--data", str(data), "--dataparser", dataparser,
           "--scale", str(scale), "--steps", str(steps), "--seconds", str(seconds), "--threads", str(threads),
           "--budget", budget] + [a for kv in model_set for a in ("--model-set", kv)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        return {"method": method, "scene": data.name, "status": "failed", "error": (proc.stderr or proc.stdout)[-2000:]}
    res = {"method": method, "scene": data.name, "status": "ok", **json.loads(line[len("RESULT "):])}
    nsc = res.pop("nsc", None)
    if nsc is not None and evaluate:
        ev = subprocess.run([str(Path(sys.executable).parent / "nscodec"), "eval", nsc, "--split", "test"],
                            capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        if ev.returncode != 0:
            return {**res, "status": "failed", "error": ev.stderr[-2000:]}
        e = json.loads(ev.stdout[ev.stdout.index("{"):])
        res.update(psnr=e["psnr"], ssim=e["ssim"], bytes=e["bytes"], decode_seconds=round(e["decode_seconds"], 3),
                   test_views=e["num_views"], bytes_what=".nsc file on disk")
    return res


def markdown(rows: list, command: str, commit: str) -> str:
    lines = [f"`{command}` (git {commit}); CPU, 2 cores; one seed. Fox: 135×240 (scale 0.125), nerfstudio's "
             "instant-ngp-data split (fraction 0.9); lego: 200² (scale 0.25), Blender split.", "",
             "| scene | method | steps × rays | epochs | train s | rays/s | test PSNR | SSIM | bytes | what the bytes are |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if r.get("status") != "ok":
            lines.append(f"| {r['scene']} | {r['method']} | failed: {r.get('error', '')[-120:]!r} | | | | | | | |")
            continue
        psnr = f"{r['psnr']:.2f}" if "psnr" in r else "—"
        ssim = f"{r['ssim']:.3f}" if "ssim" in r else "—"
        size = f"{r['bytes']:,}" if "bytes" in r else "—"
        label = r["method"] + (f" (earlier run, git {r['git_commit']})" if r.get("reused_from_earlier_run") else "")
        lines.append(f"| {r['scene']} | {label} | {r['steps']:,} × {r['rays_per_batch']:,} | {r['epochs']} | "
                     f"{r['train_seconds']:,.0f} | {r['rays_per_second']:,.0f} | {psnr} | {ssim} | {size} | "
                     f"{r.get('bytes_what', 'not evaluated (throughput point)')} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--data", default=str(FOX))
    ap.add_argument("--dataparser", default="instant-ngp-data")
    ap.add_argument("--scale", type=float, default=0.125)
    ap.add_argument("--methods", default=",".join(OURS))
    ap.add_argument("--steps", type=int, default=0, help="0: each method's (see --budget)")
    ap.add_argument("--budget", choices=("short", "preset"), default="short",
                    help="short: about half of each preset's steps (short_config); preset: the registered presets")
    ap.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--no-nerfacto", action="store_true")
    ap.add_argument("--reuse-nerfacto", action="store_true",
                    help="with --no-nerfacto: keep the nerfacto row of the previous bench/results/<name>.json (its own "
                         "commit, date and train time) instead of training nerfacto again")
    ap.add_argument("--reuse", default="", metavar="METHODS",
                    help="comma-separated methods not run now whose rows (fox and lego) are kept from the previous "
                         "bench/results/<name>.json, marked reused_from_earlier_run (e.g. codecnerf, whose pretrained "
                         "codec model a fresh machine lacks)")
    ap.add_argument("--lego", action="store_true", help="ectensorf and shacira on lego 200² too, at the same steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-set", action="append", default=[], metavar="KEY=VALUE",
                    help="set a model config field of our methods (value as JSON), e.g. train_samples_per_ray=8")
    ap.add_argument("--name", default="captures")
    ap.add_argument("--codec", default=str(ROOT / "bench/runs/lego_points/codec.cnm"),
                    help="codecnerf's pretrained codec model (bench/codecnerf_table1.py --pretrain-only makes one)")
    args = ap.parse_args()
    if args.child:
        return child(args)
    command = "python bench/captures.py " + " ".join(sys.argv[1:])
    os.environ.setdefault("NSCODEC_CODECNERF_MODEL", args.codec)  # inherited by every point
    commit = git_commit()
    rows = []
    for m in [m for m in args.methods.split(",") if m]:
        rows.append(run_point(m, Path(args.data), args.dataparser, args.scale, args.steps, 0.0, args.threads,
                              args.budget, model_set=tuple(args.model_set)))
        print(json.dumps(rows[-1]), flush=True)
    if not args.no_nerfacto:
        budget = max((r["train_seconds"] for r in rows if r.get("status") == "ok"), default=600.0)
        rows.append(run_point("nerfacto", Path(args.data), args.dataparser, args.scale, 0, budget, args.threads, args.budget))
        print(json.dumps(rows[-1]), flush=True)
    if args.lego:
        for m in ("ectensorf", "shacira"):
            if m in args.methods.split(","):
                rows.append(run_point(m, LEGO, "blender-data", 0.25, args.steps, 0.0, args.threads, args.budget,
                                      evaluate=False, model_set=tuple(args.model_set)))
                print(json.dumps(rows[-1]), flush=True)
    for r in rows:
        r["git_commit"] = commit
    reuse = {m for m in args.reuse.split(",") if m} | ({"nerfacto"} if args.no_nerfacto and args.reuse_nerfacto else set())
    if reuse:
        old = json.loads((ROOT / "bench/results" / f"{args.name}.json").read_text())
        for r in old["rows"]:
            if r["method"] in reuse:  # keeps its git_commit, date and command: a row of the earlier run
                rows.insert(len([x for x in rows if x["scene"] == r["scene"]]), {**r, "reused_from_earlier_run": True})
    record(args.name, rows, command)
    update_doc_section(args.name, markdown(rows, command, commit))


if __name__ == "__main__":
    main()
