"""Result records shared by ``nscodec rd`` and the bench scripts: the ``bench/results`` JSON schema, provenance
(git commit, device), the ``ns-train`` flags every sweep run shares, and Markdown sections in docs.

The schema of a results file (``write_results``)::

    {"name", "command", "date", "device", "python", "git_commit", "rows": [{"device", "command", "date", ...}], ...}

A row's own ``command`` (e.g. the ``ns-train`` command of one point) replaces the file's in that row.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

#: the repository root of this checkout (git provenance is read from here)
ROOT = Path(__file__).resolve().parents[2]

__all__ = ["ROOT", "ns_train_flags", "git_commit", "require_clean", "allow_dirty", "device_string", "utc_now", "write_results",
           "update_markdown_section"]


def ns_train_flags(data: str, output_dir: Path, scale: float) -> List[str]:
    """The ``ns-train`` flags every sweep/bench run shares: dataset, output folder with a fixed ``run`` timestamp (so
    results are found again and cached), tensorboard only, image downscale (``scale``: camera resolution factor), and
    no evaluation during training (the real files are evaluated afterwards)."""
    never = "100000000"
    return ["--data", str(data), "--output-dir", str(output_dir), "--timestamp", "run", "--vis", "tensorboard",
            "--pipeline.datamanager.camera-res-scale-factor", str(scale), "--steps-per-eval-image", never,
            "--steps-per-eval-batch", never, "--steps-per-eval-all-images", never]


def git_commit(root: Path = ROOT) -> str:
    """Short hash of the checked-out commit of ``root``, with ``-dirty`` when the code differs from it: changed or
    untracked files under nscodec/, nscodec_configs/ or bench/*.py (results and docs do not count; "" outside git)."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "nscodec", "nscodec_configs", ":(glob)bench/*.py")
    except OSError:
        return ""
    return head + ("-dirty" if head and dirty else "")


def device_string() -> str:
    """e.g. ``cpu: 2 cores (x86_64)`` (or the CUDA device name when one is visible)."""
    try:
        import torch

        if torch.cuda.is_available():
            return f"cuda: {torch.cuda.get_device_name(0)}"
    except Exception:  # pragma: no cover - torch is a dependency
        pass
    return f"cpu: {os.cpu_count()} cores ({platform.machine()})"


def utc_now() -> str:
    """The current time as ``YYYY-MM-DD HH:MM UTC`` (the date format of every results file)."""
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


#: set (to anything but 0) to let results be written from a tree with uncommitted code: its rows are marked dirty
ALLOW_DIRTY_ENV = "NSCODEC_ALLOW_DIRTY"


def allow_dirty() -> bool:
    """Whether results may come from a tree with uncommitted code (``$NSCODEC_ALLOW_DIRTY``, or ``--allow-dirty``)."""
    return os.environ.get(ALLOW_DIRTY_ENV, "") not in ("", "0")


def require_clean(commit: Optional[str] = None) -> str:
    """The checkout's commit (:func:`git_commit`), refusing a tree whose code differs from it unless
    :func:`allow_dirty`: a figure is re-made from a clean commit.

    Raises:
        NscError: uncommitted changes under nscodec/, nscodec_configs/ or bench/*.py, and dirty results not allowed.
    """
    from nscodec.errors import NscError

    commit = git_commit() if commit is None else commit
    if commit.endswith("-dirty") and not allow_dirty():
        raise NscError(f"the checkout has uncommitted code changes ({commit}): results must come from a commit; "
                       f"commit them (or run in a worktree pinned at one), or pass --allow-dirty / set "
                       f"{ALLOW_DIRTY_ENV}=1 to write rows marked dirty")
    return commit


def write_results(path: Path, name: str, rows: List[Dict[str, Any]], command: str,
                  extra: Optional[Dict[str, Any]] = None, commit: Optional[str] = None) -> Path:
    """Write the results file ``path`` (JSON) with ``rows`` + provenance (command, date, device, git commit).

    Each row gets ``device``, ``command`` and ``date`` unless it carries its own; a row measured at a dirty commit
    (its own ``git_commit``, else the file's) gets ``dirty: true``. Returns ``path``.

    Raises:
        NscError: the tree is dirty and dirty results are not allowed (:func:`require_clean`).
    """
    commit = require_clean(commit)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    date, device = utc_now(), device_string()
    rows = [{"device": device, "command": command, "date": date, **r} for r in rows]
    for r in rows:
        if str(r.get("git_commit", commit)).endswith("-dirty"):
            r["dirty"] = True
    payload = {"name": name, "command": command, "date": date, "device": device, "python": sys.version.split()[0],
               "git_commit": commit, "rows": rows, **(extra or {})}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)  # a reader (or a killed sweep) never sees half a file
    return path


def update_markdown_section(doc: Path, name: str, markdown: str) -> None:
    """Replace (or append) the block between ``<!-- bench:name -->`` markers in the Markdown file ``doc``."""
    doc = Path(doc)
    doc.parent.mkdir(parents=True, exist_ok=True)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n\nEvery figure here was measured by the command shown with it.\n"
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{markdown.rstrip()}\n{end}"
    if start in text:
        text = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    doc.write_text(text)
