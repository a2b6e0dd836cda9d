"""One ectensorf stage-2 probe from a fixed base checkpoint, with a learning curve: train, export every saved
checkpoint as a real ``.nsc``, evaluate it, and append one row per checkpoint to
``bench/results/ectensorf_probes.json``.

    python bench/ectensorf_probe.py --tag big --steps 600 --every 10 \\
        -- --pipeline.model.latent-channels-density 32 --pipeline.model.latent-channels-color 96

Arguments after ``--`` go to ``ns-train ectensorf`` unchanged. The base defaults to the RD sweep's step-1200
checkpoint (``bench/runs/ectensorf_rd``), so a probe is comparable with the sweep's 600-step rows. Runs live in
``bench/runs/ectensorf_probe/<tag>``; finished exports/evaluations are cached there. ``--diagnostic NAME`` trains
with a variant from ``bench/ectensorf_diagnostics.py`` (e.g. ``noquant``, evaluated in-process: no file holds it).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS, ROOT, device_string, git_commit, ns_train_flags  # noqa: E402

from nscodec.tools.export import export_from_config, load_run  # noqa: E402

BIN = Path(sys.executable).parent


def _eval_in_process(config_yml: Path, step: int, args) -> dict:
    """Evaluate checkpoint ``step`` of a run in this process (for diagnostics whose model no file holds)."""
    from nscodec.tools.evaluate import evaluate_model

    _, pipeline = load_run(config_yml, load_step=step)
    ev = evaluate_model(pipeline.model, Path(args.data), "test", args.scale, every=args.every, progress=False)
    ev.pop("per_view", None)
    return {**ev, "bytes": None, "note": "no file: evaluated in-process (the model is not what a .nsc stores)"}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--data", default=str(ROOT.parent / "shared/data/blender/lego"))
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--init", default=str(ROOT / "bench/runs/ectensorf_rd/base/nscodec-tensorf/run/nerfstudio_models/step-000001200.ckpt"))
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--save-every", type=int, default=0, help="also export/evaluate every N steps (0 = final only)")
    ap.add_argument("--every", type=int, default=10, help="evaluate every N-th test view")
    ap.add_argument("--note", default="")
    ap.add_argument("--diagnostic", default=None,
                    help="train with a variant of bench/ectensorf_diagnostics.py (e.g. noquant: no latent quantization)")
    args = ap.parse_args(argv)
    work = ROOT / "bench" / "runs" / "ectensorf_probe" / args.tag
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    trainer, no_file = [str(BIN / "ns-train")], False
    if args.diagnostic:
        import ectensorf_diagnostics as diag

        diag.apply(args.diagnostic)  # unknown name: one clear error before training; patches this process for eval
        trainer = [sys.executable, str(ROOT / "bench" / "ectensorf_diagnostics.py"), args.diagnostic]
        no_file = args.diagnostic in diag.NO_FILE
    train_cmd = [*trainer, "ectensorf", *ns_train_flags(args.data, work, args.scale), "--experiment-name", "p", "--max-num-iterations", str(args.steps),
                 "--steps-per-save", str(args.save_every or args.steps), "--save-only-latest-checkpoint", "False",
                 "--pipeline.model.init-from", args.init, *extra]
    run = work / "p" / "ectensorf" / "run"
    tfile = work / "train_seconds.txt"
    if not tfile.exists():
        t0 = time.perf_counter()
        with open(work / "train.log", "w") as fh:
            subprocess.run(train_cmd, check=True, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
        tfile.write_text(f"{time.perf_counter() - t0}\n")
    train_s = float(tfile.read_text())
    steps = sorted(int(p.stem.split("-")[1]) for p in (run / "nerfstudio_models").glob("step-*.ckpt"))
    rows = []
    commit = git_commit()  # the code whose defaults the flags apply to
    for step in steps:
        nsc = work / f"step{step}.nsc"
        ev_path = work / f"step{step}_every{args.every}.json"
        if no_file:
            if not ev_path.exists():  # no file holds this model: evaluate it in-process, under the same patch
                ev_path.write_text(json.dumps(_eval_in_process(run / "config.yml", step, args)))
            nsc = None
        elif not nsc.exists():
            export_from_config(run / "config.yml", nsc, overwrite=True, quiet=True, load_step=step)
        if nsc is not None and not ev_path.exists():
            subprocess.run([str(BIN / "nscodec"), "eval", str(nsc), "--data", args.data, "--scale-factor", str(args.scale),
                            "--every", str(args.every), "--output", str(ev_path)], check=True, cwd=ROOT,
                           stdout=subprocess.DEVNULL, env=env)
        ev = json.loads(ev_path.read_text())
        print(f"[{args.tag}] step {step}: {ev['psnr']:.2f} dB, {ev['bytes'] or 0:,} B ({ev['num_views']} views)", flush=True)
        rows.append({"device": device_string(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                     "probe": f"{args.tag}: stage 2 step {step + 1} of {args.steps}" + (f" ({args.note})" if args.note else ""),
                     "psnr": ev["psnr"], "ssim": ev["ssim"], "bytes": ev["bytes"], "test_views": ev["num_views"],
                     "stage2_steps": step + 1, "train_seconds_whole_run": train_s,
                     "run_command": "python bench/ectensorf_probe.py " + shlex.join(sys.argv[1:]), "git_commit": commit,
                     "resolution": f"{ev['width']}x{ev['height']}"})
    path = RESULTS / "ectensorf_probes.json"
    data = json.loads(path.read_text()) if path.exists() else {"name": "ectensorf_probes", "rows": []}
    data["rows"] = [r for r in data["rows"] if not r.get("probe", "").startswith(f"{args.tag}: ")] + rows
    path.write_text(json.dumps(data, indent=2) + "\n")


if __name__ == "__main__":
    main()
