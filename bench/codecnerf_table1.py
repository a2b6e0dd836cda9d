"""CodecNeRF Table 1 on one scene, CPU-sized: PSNR and real ``.nsc`` bytes after 0 / 500 / 1000 / 2000 finetuning
iterations for (a) per-scene triplanes from scratch (``codecnerf-scratch``), (b) PEFT (``codecnerf-peft``),
(c) PEFT + entropy coding (``codecnerf``), plus encode wall-clock (forward + finetune) against the from-scratch
run reaching the same PSNR, and the pretraining cost.

    # 1) pretrain the shared codec on the procedural corpus (writes bench/runs/codecnerf/codec.cnm)
    flock /tmp/nscodec-cpu.lock python bench/codecnerf_table1.py --pretrain-only --corpus-scenes 48 --pretrain-minutes 12
    # 2) the table on lego 200² (camera-res-scale-factor 0.25)
    flock /tmp/nscodec-cpu.lock python bench/codecnerf_table1.py --data ../shared/data/blender/lego --scale 0.25
    # 3) the table on 3 held-out procedural scenes the codec never saw (corpus seed 1, same generator and
    #    resolution as the pretraining corpus; 24 training views each, as the paper finetunes on 24 views)
    flock /tmp/nscodec-cpu.lock python bench/codecnerf_table1.py --heldout 3 --name codecnerf_heldout

``--train-views K`` finetunes on K evenly spaced training views of ``--data`` (the paper's 24) through a derived scene
under bench/runs/codecnerf/subsets (its JSONs list the chosen frames; the images are links to the originals).

Every training runs in this process with nerfstudio's Trainer (one thread by default, ``--threads``). Evaluation
(test views every ``--every``-th) runs at the checkpoints and is excluded from the training wall-clock.
Bytes are the size of a real ``.nsc`` exported at that iteration; "with codec" adds the codec-model file.

Why this is not a wrapper over ``nscodec rd``: Table 1 evaluates *one* training at several iterations (0 / 250 / ...,
timing the encoder forward pass apart from finetuning), and step 1 pretrains the shared codec on a generated corpus;
an ``nscodec rd`` point is one finished training. The end points of the table are ``nscodec rd`` points:
``nscodec rd --methods codecnerf --set codecnerf:codec-model-path=bench/runs/codecnerf/codec.cnm ...`` (its baseline
``codecnerf-scratch`` comes along).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

from common import ROOT, record, update_doc_section  # noqa: E402

WORK = ROOT / "bench" / "runs" / "codecnerf"
#: the table's name of each variant (``--variants`` key → row label)
SERIES = {"scratch": "triplanes (scratch)", "peft": "codecnerf PEFT", "peft_ec": "codecnerf PEFT++"}


def do_pretrain(args) -> dict:
    from nscodec.codecnerf.pretrain import find_scenes, pretrain
    from nscodec.scenes.procedural import generate_corpus

    corpus = WORK / "corpus"
    t0 = time.perf_counter()
    if len(find_scenes(corpus)) < args.corpus_scenes:
        generate_corpus(corpus, args.corpus_scenes, seed=0, resolution=args.corpus_resolution, n_train=24, n_val=1, n_test=4,
                        overwrite=True, progress=False)
    gen_s = time.perf_counter() - t0
    scenes = find_scenes(corpus)[: args.corpus_scenes]
    resume = args.codec if args.pretrain_resume else None
    if resume is not None and not Path(resume).exists():
        raise SystemExit(f"--pretrain-resume: no codec model at {resume} to continue from")
    meta = pretrain(scenes, args.codec, steps=args.pretrain_steps, minutes=args.pretrain_minutes, rays=args.pretrain_rays,
                    samples=args.pretrain_samples, seed=0 if resume is None else 1, resume=resume)
    meta["command"] = "python bench/codecnerf_table1.py " + " ".join(sys.argv[1:])
    meta["corpus_generation_seconds"] = round(gen_s, 1)
    meta["corpus_resolution"] = args.corpus_resolution
    meta["codec_model_bytes"] = os.path.getsize(args.codec)
    old = WORK / "pretrain.json"
    if resume is not None and old.exists():  # keep the earlier session(s) for the record
        prev = {k: v for k, v in json.loads(old.read_text()).items() if k not in ("scenes", "history")}
        meta["previous_sessions"] = prev.pop("previous_sessions", []) + [prev]
    (WORK / "pretrain.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def heldout_scenes(args) -> list:
    """Generate (once) ``--heldout`` procedural scenes from corpus seed ``--heldout-seed``, which the codec never saw:
    the pretraining corpus uses seed 0 and each scene's seed is drawn from ``(corpus seed, index)``
    (:func:`~nscodec.scenes.procedural.generate_corpus`). Same generator and resolution as the corpus (in distribution,
    as the paper's held-out Objaverse objects), ``--heldout-test`` test views each.

    Raises:
        SystemExit: a held-out scene's seed is also in the pretraining corpus.
    """
    from nscodec.codecnerf.pretrain import find_scenes
    from nscodec.scenes.procedural import generate_corpus

    root = WORK / f"heldout_seed{args.heldout_seed}"
    if len(find_scenes(root)) < args.heldout:
        generate_corpus(root, args.heldout, seed=args.heldout_seed, resolution=args.corpus_resolution, n_train=24, n_val=1,
                        n_test=args.heldout_test, overwrite=True, progress=False)
    corpus = WORK / "corpus" / "corpus.json"
    if corpus.exists():
        seen = {e["seed"] for e in json.loads(corpus.read_text())["scenes"]}
        mine = {e["seed"] for e in json.loads((root / "corpus.json").read_text())["scenes"]}
        if seen & mine:
            raise SystemExit(f"held-out scenes share seeds with the pretraining corpus: {sorted(seen & mine)}")
    return find_scenes(root)[: args.heldout]


def train_subset(data: Path, k: int) -> Path:
    """A copy of the Blender-layout scene ``data`` whose train split keeps ``k`` evenly spaced frames (images linked,
    not copied; val/test unchanged), under ``bench/runs/codecnerf/subsets``.

    Raises:
        SystemExit: ``k`` is not in ``[1, number of training frames]``.
    """
    meta = json.loads((data / "transforms_train.json").read_text())
    n = len(meta["frames"])
    if not 1 <= k <= n:
        raise SystemExit(f"--train-views {k}: {data} has {n} training views")
    out = WORK / "subsets" / f"{data.name}_train{k}"
    out.mkdir(parents=True, exist_ok=True)
    keep = [meta["frames"][round(i * n / k)] for i in range(k)]
    (out / "transforms_train.json").write_text(json.dumps({**meta, "frames": keep}, indent=1))
    for split in ("val", "test"):
        if (data / f"transforms_{split}.json").exists():
            (out / f"transforms_{split}.json").write_text((data / f"transforms_{split}.json").read_text())
    for entry in data.iterdir():  # image folders, linked
        if entry.is_dir() and not (out / entry.name).exists():
            (out / entry.name).symlink_to(entry.resolve())
    return out


def run_variant(args, method: str, mode: str, checkpoints, data: Path) -> list:
    """Train one variant, evaluating + exporting at each checkpoint (excluded from the timing)."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from nscodec.tools.evaluate import evaluate_model
    from nscodec.io import export_model
    from nscodec_configs.codecnerf_configs import codecnerf_trainer_config

    steps = max(checkpoints)
    kw = {} if mode == "scratch" else {"codec_model_path": Path(args.codec)}
    if mode == "peft_ec":
        kw["rate_lambda"] = args.rate_lambda
    config = codecnerf_trainer_config(method, mode=mode, max_steps=steps, **kw)
    config.max_num_iterations = steps
    config.data = data
    config.pipeline.datamanager.data = data
    scale = 1.0 if args.heldout else args.scale
    config.pipeline.datamanager.camera_res_scale_factor = scale
    config.pipeline.datamanager.train_num_rays_per_batch = args.rays
    config.output_dir = WORK / "runs"
    config.experiment_name = method
    config.vis = "tensorboard"
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = steps + 10
    config.steps_per_save = steps
    config.logging.local_writer.enable = False
    config.set_timestamp()
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    model = trainer.pipeline.model
    rows = []
    clock = {"train": 0.0, "t": None, "encode": 0.0}

    def evaluate(done: int) -> None:
        model.eval()
        ev = evaluate_model(model, data, "test", scale_factor=scale, every=args.every, progress=False)
        nsc = WORK / f"{method}_{data.name}_{done}.nsc"
        size = export_model(model, nsc, overwrite=True)
        model.train()
        row = {"method": method, "mode": mode, "scene": data.name, "train_views": len(trainer.pipeline.datamanager.train_dataset),
               "iterations": done, "psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": size,
               "train_seconds": round(clock["train"], 2), "encode_forward_seconds": round(clock["encode"], 3),
               "test_views": ev["num_views"], "resolution": f"{ev['width']}x{ev['height']}"}
        if mode != "scratch":
            row["bytes_with_codec_model"] = size + os.path.getsize(args.codec)
        rows.append(row)
        print(json.dumps(row), flush=True)

    def before(step: int) -> None:
        if step == 0 and mode != "scratch":  # the one forward pass, timed on its own
            t = time.perf_counter()
            model.encode_from_dataset(trainer.pipeline.datamanager.train_dataset)
            clock["encode"] = time.perf_counter() - t
            clock["train"] += clock["encode"]
        if step == 0 and 0 in checkpoints and mode != "scratch":  # scratch at 0 is its random init (and renders slowly)
            evaluate(0)
        clock["t"] = time.perf_counter()

    def after(step: int) -> None:
        clock["train"] += time.perf_counter() - clock["t"]
        if step + 1 in checkpoints:
            evaluate(step + 1)

    trainer.callbacks.insert(0, TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before, update_every_num_iters=1))
    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after, update_every_num_iters=1))
    trainer.train()
    return rows


def seconds_to_reach(rows: list, psnr: float):
    """First (linearly interpolated) training time at which a run's evaluated PSNR reaches ``psnr``; None if never."""
    prev = None
    for r in rows:
        if r["psnr"] >= psnr:
            if prev is None:
                return r["train_seconds"]
            f = (psnr - prev["psnr"]) / max(1e-9, r["psnr"] - prev["psnr"])
            return prev["train_seconds"] + f * (r["train_seconds"] - prev["train_seconds"])
        prev = r
    return None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--codec", default=str(WORK / "codec.cnm"))
    ap.add_argument("--checkpoints", default="0,250,500,1000,1500,2000")
    ap.add_argument("--variants", default="scratch,peft_ec,peft")
    ap.add_argument("--rays", type=int, default=2048)
    ap.add_argument("--every", type=int, default=20, help="evaluate every N-th test view")
    ap.add_argument("--rate-lambda", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pretrain-only", action="store_true")
    ap.add_argument("--report-only", action="store_true", help="rewrite the doc table from bench/results, run nothing")
    ap.add_argument("--pretrain-resume", action="store_true", help="continue pretraining from --codec (adds to its steps/time)")
    ap.add_argument("--corpus-scenes", type=int, default=48)
    ap.add_argument("--corpus-resolution", type=int, default=64)
    ap.add_argument("--pretrain-steps", type=int, default=100000)
    ap.add_argument("--pretrain-minutes", type=float, default=12.0)
    ap.add_argument("--pretrain-rays", type=int, default=1024)
    ap.add_argument("--pretrain-samples", type=int, default=64)
    ap.add_argument("--name", default="codecnerf_table1")
    ap.add_argument("--heldout", type=int, default=0, help="run on N generated held-out procedural scenes instead of --data")
    ap.add_argument("--heldout-seed", type=int, default=1, help="corpus seed of the held-out scenes (pretraining uses 0)")
    ap.add_argument("--heldout-test", type=int, default=20, help="test views per held-out scene")
    ap.add_argument("--train-views", type=int, default=0, help="finetune on K evenly spaced training views (paper: 24)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    WORK.mkdir(parents=True, exist_ok=True)
    command = "python bench/codecnerf_table1.py " + " ".join(sys.argv[1:])
    if args.pretrain_only or (not args.report_only and not Path(args.codec).exists()):
        meta = do_pretrain(args)
        print(json.dumps({k: v for k, v in meta.items() if k not in ("history", "scenes")}, indent=2))
        name = "codecnerf_pretrain" if args.name == "codecnerf_table1" else f"{args.name}_pretrain"
        record(name, [], command, {"pretrain": {k: v for k, v in meta.items() if k != "scenes"}})
        if args.pretrain_only:
            return
    pre = json.loads((WORK / "pretrain.json").read_text()) if (WORK / "pretrain.json").exists() else {}
    data = Path(args.data)
    if args.report_only:  # rebuild the table from bench/results (e.g. after a doc edit), measuring nothing
        saved = json.loads((ROOT / "bench" / "results" / f"{args.name}.json").read_text())
        args.threads = saved.get("threads", args.threads)
        args.rays = saved.get("rays", args.rays)
        write_doc(args, saved["rows"], saved.get("pretrain") or pre, saved["command"])
        return
    cps = sorted({int(c) for c in args.checkpoints.split(",")})
    methods = {"scratch": "codecnerf-scratch", "peft": "codecnerf-peft", "peft_ec": "codecnerf"}
    scenes = heldout_scenes(args) if args.heldout else [data]
    if args.train_views:
        scenes = [train_subset(d, args.train_views) for d in scenes]
    rows = []
    for scene in scenes:
        for v in args.variants.split(","):  # results are recorded after every variant (a cut-short run keeps what it measured)
            rows += run_variant(args, methods[v], v, cps, scene)
            finish(args, rows, pre, command)


def finish(args, rows, pre, command) -> None:
    for r in rows:
        r["series"] = SERIES[r["mode"]]
        scratch = [s for s in rows if s["mode"] == "scratch" and s["scene"] == r["scene"]]
        if r["mode"] != "scratch" and scratch:
            t = seconds_to_reach(scratch, r["psnr"])
            r["scratch_seconds_to_same_psnr"] = None if t is None else round(t, 1)
    extra = {"pretrain": {k: v for k, v in pre.items() if k not in ("scenes", "history")}, "threads": args.threads, "rays": args.rays}
    record(args.name, rows, command, extra)
    write_doc(args, rows, pre, command)


def write_doc(args, rows, pre, command) -> None:
    scenes = list(dict.fromkeys(r["scene"] for r in rows))
    where = scenes[0] if len(scenes) == 1 else f"{len(scenes)} held-out procedural scenes"
    views = sorted({r.get("train_views") for r in rows if r.get("train_views")})
    for r in rows:  # rows recorded before this was a row field
        r.setdefault("series", SERIES[r["mode"]])
    lines = [
        f"## codecnerf — Table 1 style on {where} {rows[0]['resolution']} (CPU, {args.threads} thread)", "",
        f"Command: `{command}`  ",
        "Pretraining: " + " then ".join(f"`{p.get('command', '?')}`" for p in pre.get("previous_sessions", []) + [pre]) + " — "
        f"{pre.get('num_scenes', '?')} procedural scenes at {pre.get('corpus_resolution', '?')}², "
        f"{pre.get('total_steps', pre.get('steps', '?'))} steps, {pre.get('total_train_seconds', pre.get('train_seconds', '?'))} s "
        f"training in all (+{pre.get('corpus_generation_seconds', '?')} s corpus generation), "
        f"final training PSNR (EMA, corpus views) {pre.get('final_train_psnr_ema', '?')} dB, "
        f"codec model {pre.get('codec_model_bytes', 0):,} bytes.  ",
        f"Finetuning views: {', '.join(map(str, views)) or '?'}; test views per scene: {rows[0]['test_views']}. "
        + epochs_note(rows, args.rays), "",
    ]
    head = ["| variant | iters | test PSNR (dB) | SSIM | .nsc bytes | bytes incl. codec model | train s (encode+finetune) | scratch s to same PSNR |",
            "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for scene in scenes:
        srows = [r for r in rows if r["scene"] == scene]
        first = next((r for r in srows if r["mode"] == "scratch"), None)
        if len(scenes) > 1:
            lines += [f"**{scene}**", ""]
        lines += head
        for r in srows:
            w = r.get("bytes_with_codec_model")
            s = r.get("scratch_seconds_to_same_psnr", "")
            s = "not reached" if s is None else (f"{s:.0f}" if s != "" else "")
            if s and first and r["mode"] != "scratch" and first["iterations"] > 0 and r["psnr"] <= first["psnr"]:
                s = f"≤ {s}"  # no iteration-0 row of scratch: its first evaluation already beat this PSNR
            lines.append(f"| {r['series']} | {r['iterations']} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['bytes']:,} | "
                         f"{'' if w is None else f'{w:,}'} | {r['train_seconds']:.0f} | {s} |")
        lines += ["", summary(srows), ""]
    lines.pop()
    if len(scenes) > 1:  # the mean over scenes, per variant and iteration
        lines += ["", f"**Mean over the {len(scenes)} scenes**", "",
                  "| variant | iters | test PSNR (dB) | SSIM | .nsc bytes | train s |", "|---|---:|---:|---:|---:|---:|"]
        keys = list(dict.fromkeys((r["series"], r["iterations"]) for r in rows))
        mean_rows = []
        for series, it in keys:
            g = [r for r in rows if r["series"] == series and r["iterations"] == it]
            if len(g) != len(scenes):
                continue
            m = {k: sum(r[k] for r in g) / len(g) for k in ("psnr", "ssim", "bytes", "train_seconds")}
            mean_rows.append({**m, "series": series, "iterations": it, "mode": g[0]["mode"],
                              "bytes_with_codec_model": m["bytes"] + (g[0].get("bytes_with_codec_model", 0) - g[0]["bytes"])})
            lines.append(f"| {series} | {it} | {m['psnr']:.2f} | {m['ssim']:.3f} | {m['bytes']:,.0f} | {m['train_seconds']:.0f} |")
        lines += ["", summary(mean_rows, "On average, at")]
    lines += ["", NOTES.strip()]
    update_doc_section(args.name, "\n".join(lines))


def epochs_note(rows: list, rays: int) -> str:
    """``iterations × rays ÷ (finetuning views × pixels per view)`` at the last iteration, in words."""
    last = max(r["iterations"] for r in rows)
    w, h = (int(v) for v in rows[0]["resolution"].split("x"))
    views = rows[0].get("train_views")
    if not views:
        return f"{last:,} iterations × {rays:,} rays."
    return (f"{last:,} iterations × {rays:,} rays = {last * rays / (views * w * h):.2f} epochs of the finetuning views "
            f"({views} × {w}×{h} pixels).")


def summary(rows: list, lead: str = "At") -> str:
    """One sentence: PEFT++ against from-scratch triplanes (and PEFT) at the last iteration of ``rows``."""
    last = max(r["iterations"] for r in rows)
    end = {r["mode"]: r for r in rows if r["iterations"] == last}
    if not ("scratch" in end and "peft_ec" in end):
        return ""
    sc, ec = end["scratch"], end["peft_ec"]
    return (f"{lead} {last} iterations PEFT++ is {ec['psnr'] - sc['psnr']:+.2f} dB against per-scene triplanes from scratch "
            f"({'a loss' if ec['psnr'] < sc['psnr'] else 'a gain'}), in a file {sc['bytes'] / ec['bytes']:.0f}× smaller "
            f"({ec['bytes']:,.0f} vs {sc['bytes']:,.0f} bytes; {ec['bytes_with_codec_model']:,.0f} with the codec model counted)."
            + (f" Entropy coding shrinks the PEFT file {end['peft']['bytes'] / ec['bytes']:.0f}× for "
               f"{ec['psnr'] - end['peft']['psnr']:+.2f} dB." if "peft" in end else ""))


NOTES = """
How to read it. *iters* = finetuning iterations after the one encoder forward pass (0 = the encoder's output as is;
the from-scratch baseline has a 0 row only in runs before stop 30: its random init). *.nsc bytes* is the real file: VQ indices + deltas + LoRA (+ a few
hundred bytes of header) for PEFT, all planes and MLP weights as float32 for scratch. *bytes incl. codec model*
adds the shared codec-model file, which a receiver needs once for all scenes. *train s* is the wall-clock of the
encoder forward pass plus the finetuning steps so far (evaluation excluded); *scratch s to same PSNR* is the
(linearly interpolated) training time the from-scratch run needed to reach that row's PSNR — the paper's
"encode time vs per-scene optimization" comparison; "≤ t" where its first evaluation (at t) already beat it. One CPU thread, 1024 rays per step.

What the shipped corpus can and cannot teach. The pretraining corpus is `nscodec.scenes.procedural`: 3–6 textured
primitives (spheres, boxes, cylinders, tori, …) per scene, Lambertian shading, 64² views on the upper hemisphere.
It teaches the codec the geometry of unprojection (where surfaces are, from multi-view agreement), a white
background, coarse colour and a sensible density scale. It cannot teach the appearance statistics of real
objects (lego's thin structures, specular highlights, complex textures), and minutes of CPU pretraining on a few
dozen scenes is orders of magnitude below the paper's 36,796 Objaverse objects on GPUs — so expect the encoder's
output on lego to be coarse, and any gain of PEFT over from-scratch triplanes in this setup to come from that
geometric initialisation rather than from a learned prior over real objects. Any directory of Blender-format scenes can be given to
`nscodec codecnerf-pretrain --corpus DIR` instead.
"""


if __name__ == "__main__":
    main()
