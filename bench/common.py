"""Shared helpers for bench scripts: result JSON records and the docs/benchmarks.md tables."""

from __future__ import annotations

import datetime as _dt
import json
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
DOC = ROOT / "docs" / "benchmarks.md"


def ns_train_flags(data: str, output_dir: Path, scale: float) -> List[str]:
    """The ``ns-train`` flags every bench run shares: dataset, output folder with a fixed ``run`` timestamp (so
    results are found again and cached), tensorboard only, image downscale, and no evaluation during training
    (bench scripts evaluate real files afterwards)."""
    never = "100000000"
    return ["--data", str(data), "--output-dir", str(output_dir), "--timestamp", "run", "--vis", "tensorboard",
            "--pipeline.datamanager.camera-res-scale-factor", str(scale), "--steps-per-eval-image", never,
            "--steps-per-eval-batch", never, "--steps-per-eval-all-images", never]


def git_commit() -> str:
    """Short hash of the checked-out commit, with ``-dirty`` when the code differs from it: changed or untracked
    files under nscodec/, nscodec_configs/ or bench/*.py (results and docs do not count; "" outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "nscodec", "nscodec_configs", ":(glob)bench/*.py")
    except OSError:
        return ""
    return head + ("-dirty" if head and dirty else "")


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


def device_string() -> str:
    """e.g. ``cpu: 2 cores (x86_64)``."""
    import os

    return f"cpu: {os.cpu_count()} cores ({platform.machine()})"


def record(name: str, rows: List[Dict[str, Any]], command: str, extra: Dict[str, Any] | None = None) -> Path:
    """Write ``bench/results/<name>.json`` with rows + provenance (command, date, device, git commit)."""
    commit = git_commit()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    rows = [{"device": device_string(), "command": command, "date": date, **r} for r in rows]
    payload = {
        "name": name,
        "command": command,
        "date": date,
        "device": device_string(),
        "python": sys.version.split()[0],
        "git_commit": commit,
        "rows": rows,
        **(extra or {}),
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def update_doc_section(name: str, markdown: str) -> None:
    """Replace (or append) the block between ``<!-- bench:name -->`` markers in docs/benchmarks.md."""
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\nEvery figure here was measured by the command shown with it.\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
