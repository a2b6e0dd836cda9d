"""The three steps of one sweep point, each run by :mod:`nscodec.rd.runner` in a fresh Python process
(``python -m nscodec.rd.worker STEP ...``), each writing a JSON report:

* ``train --report R.json -- METHOD NS-TRAIN-FLAGS...``: parse the flags with ``ns-train``'s own config machinery
  (tyro over nerfstudio's method registry) and train as ``ns-train`` does (seed, ``config.yml``, checkpoints).
  Reports ``train_seconds`` (the training loop only: ``Trainer.train()``; nerfstudio's setup excluded), ``steps``,
  ``rays_per_batch``, ``train_views``, ``train_pixels`` (all training views), ``epochs`` (= steps × rays ÷ train
  pixels), ``peak_rss_mb`` (the process's VmHWM, MiB) and ``config`` (the ``config.yml``).
* ``export --config C.yml --output F.nsc [--set KEY=VALUE ...]``: :func:`nscodec.tools.export.export_from_config` with
  export-time model settings (``nscodec-tensorf``'s post-hoc codec). Reports ``bytes``, ``export_seconds``.
* ``eval --file F.nsc --data D --scale S --every E --limit N``: decode the file and evaluate it on the test split
  (:func:`nscodec.tools.evaluate.evaluate_nsc`). Reports its result (``psnr`` dB, ``ssim``, ``bytes``, ``decode_seconds``,
  ``num_views``, ``width``/``height``, ``render_seconds``) and ``peak_rss_mb``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional


def peak_rss_mb() -> Optional[float]:
    """Peak resident memory of this process (``VmHWM`` of /proc/self/status) in MiB; None where unavailable.

    VmHWM belongs to the process's own address space, so unlike ``ru_maxrss`` it does not count the pages of a
    large parent that forked it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    try:  # not Linux: the best available (may include a parent's pages before exec)
        import resource

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(rss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)
    except Exception:  # pragma: no cover
        return None


def _write(path: str, data: Dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(data, indent=2) + "\n")


def train(report: str, argv: List[str]) -> None:
    """Train as ``ns-train`` does (``nerfstudio.scripts.train``: main + train_loop on one device), timed."""
    import torch
    import tyro
    from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion
    from nerfstudio.scripts.train import _set_random_seed

    config = tyro.cli(AnnotatedBaseConfigUnion, args=argv)
    if config.data:  # as ns-train's main: --data is an alias
        config.pipeline.datamanager.data = config.data
    config.set_timestamp()
    config.save_config()
    _set_random_seed(config.machine.seed)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    cams = trainer.pipeline.datamanager.train_dataset.cameras
    pixels = int((cams.width.long() * cams.height.long()).sum())
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    steps = int(config.max_num_iterations)
    rays = int(config.pipeline.datamanager.train_num_rays_per_batch)
    _write(report, {
        "train_seconds": seconds, "steps": steps, "rays_per_batch": rays, "train_views": len(cams),
        "train_pixels": pixels, "epochs": steps * rays / pixels, "rays_per_second": steps * rays / seconds,
        "peak_rss_mb": peak_rss_mb(), "config": str(config.get_base_dir() / "config.yml"),
        "threads": torch.get_num_threads(),
    })


def export(report: str, config: str, output: str, settings: List[str]) -> None:
    """Export the latest checkpoint of ``config`` with the export-time ``settings`` (``key=value``)."""
    from nscodec.tools.export import export_from_config

    overrides = dict(s.split("=", 1) for s in settings)
    t0 = time.perf_counter()
    size = export_from_config(Path(config), Path(output), overwrite=True, quiet=True, model_overrides=overrides)
    _write(report, {"bytes": size, "export_seconds": time.perf_counter() - t0, "export_peak_rss_mb": peak_rss_mb()})


def evaluate(report: str, file: str, data: str, scale: float, every: int, limit: Optional[int]) -> None:
    """Decode ``file`` in this (fresh) process and evaluate it on the test split."""
    from nscodec.tools.evaluate import evaluate_nsc

    res = evaluate_nsc(Path(file), Path(data), "test", scale, every=every, limit=limit, progress=False)
    res.pop("per_view", None)
    res["eval_peak_rss_mb"] = peak_rss_mb()
    _write(report, res)


def main(argv: Optional[List[str]] = None) -> None:
    """Entry point: ``python -m nscodec.rd.worker {train,export,eval} ...`` (see the module docstring)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m nscodec.rd.worker")
    sub = ap.add_subparsers(dest="step", required=True)
    t = sub.add_parser("train")
    t.add_argument("--report", required=True)
    e = sub.add_parser("export")
    e.add_argument("--report", required=True)
    e.add_argument("--config", required=True)
    e.add_argument("--output", required=True)
    e.add_argument("--set", action="append", default=[])
    v = sub.add_parser("eval")
    v.add_argument("--report", required=True)
    v.add_argument("--file", required=True)
    v.add_argument("--data", required=True)
    v.add_argument("--scale", type=float, required=True)
    v.add_argument("--every", type=int, default=1)
    v.add_argument("--limit", type=int, default=None)
    if argv and argv[0] == "train":  # everything after "--" is ns-train's
        split = argv.index("--") if "--" in argv else len(argv)
        args = ap.parse_args(argv[:split])
        train(args.report, argv[split + 1:])
        return
    args = ap.parse_args(argv)
    if args.step == "export":
        export(args.report, args.config, args.output, args.set)
    else:
        evaluate(args.report, args.file, args.data, args.scale, args.every, args.limit)


if __name__ == "__main__":
    main()
