"""Shared helpers for bench scripts: result JSON records and the docs/benchmarks.md tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List

# the helpers `nscodec rd` shares with the bench scripts live in the package (one copy); re-exported here
from nscodec.rd.results import device_string, git_commit, ns_train_flags, update_markdown_section, write_results  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def ectensorf_sweep_base(step: int = 1200):
    """``(pipeline, datamanager, checkpoint path)`` of the ``bench/ectensorf_rd.py`` base run at ``step``, loaded for
    inference with the training rays set up (for bench scripts that start from the sweep's stage 1).

    Raises:
        SystemExit: the sweep's base (or that step's checkpoint) is not there yet.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    run = ROOT / "bench/runs/ectensorf_rd/base/nscodec-tensorf/run"
    ckpt = run / f"nerfstudio_models/step-{step:09d}.ckpt"
    if not ckpt.is_file():
        raise SystemExit(f"{ckpt} missing: run bench/ectensorf_rd.py first (it trains and caches the base)")
    _, pipe, _, _ = eval_setup(run / "config.yml", test_mode="inference")
    dm = pipe.datamanager
    if not hasattr(dm, "iter_train_image_dataloader"):  # eval_setup's inference mode skips the training rays
        dm.setup_train()
    return pipe, dm, ckpt


def record(name: str, rows: List[Dict[str, Any]], command: str, extra: Dict[str, Any] | None = None) -> Path:
    """Write ``bench/results/<name>.json`` with rows + provenance (command, date, device, git commit)."""
    return write_results(RESULTS / f"{name}.json", name, rows, command, extra)


def update_doc_section(name: str, markdown: str) -> None:
    """Replace (or append) the block between ``<!-- bench:name -->`` markers in docs/benchmarks.md."""
    update_markdown_section(DOC, name, markdown)


class NoLPIPS:
    """Benchmark-only stand-in for torchmetrics' LPIPS (which would download AlexNet): stock nerfstudio models
    (``tensorf``, ``nerfacto``) build it; nscodec's own models never do. Install with :func:`stub_lpips`."""

    def __new__(cls, *a, **k):
        import torch

        class _Stub(torch.nn.Module):
            def forward(self, a, b):
                return torch.tensor(float("nan"))

        return _Stub()


def stub_lpips() -> None:
    """Replace torchmetrics' LPIPS by :class:`NoLPIPS` (benchmarks of stock methods only)."""
    import torchmetrics.image.lpip as lpip_mod

    lpip_mod.LearnedPerceptualImagePatchSimilarity = NoLPIPS


class _Stop(Exception):
    pass


def train_timed(trainer, seconds: float = 0.0) -> Dict[str, float]:
    """Run ``trainer.train()`` (a set-up nerfstudio Trainer), stopped after ``seconds`` of training steps when
    ``seconds > 0``. Returns ``{"steps", "wall_seconds" (incl. what comes before the first step),
    "train_seconds" (from the end of the first step)}``."""
    import time

    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    state: Dict[str, Any] = {"start": None, "steps": 0}

    def clock(step: int) -> None:
        if state["start"] is None:
            state["start"] = time.perf_counter()
        state["steps"] = step + 1
        if seconds and time.perf_counter() - state["start"] >= seconds:
            raise _Stop

    trainer.callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], clock, update_every_num_iters=1))
    t0 = time.perf_counter()
    try:
        trainer.train()
    except _Stop:
        pass
    end = time.perf_counter()
    return {"steps": state["steps"], "wall_seconds": end - t0, "train_seconds": end - (state["start"] or t0)}


def apply_model_set(cfg, items) -> None:
    """``--model-set KEY=VALUE`` of a bench script: set model config fields of the trainer config ``cfg`` in place (each
    value parsed as JSON), for a probe of one setting.

    Raises:
        SystemExit: the model config has no such field."""
    import json

    for item in items:
        key, value = item.split("=", 1)
        if not hasattr(cfg.pipeline.model, key):
            raise SystemExit(f"--model-set: {type(cfg.pipeline.model).__name__} has no field {key!r}")
        setattr(cfg.pipeline.model, key, json.loads(value))
