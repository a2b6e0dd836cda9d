"""Shared fixtures. Under CI (CI=true) missing shared data is a failure, not a skip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(rel: str) -> Path:
    """Path under ../shared; skips locally when missing, fails under CI."""
    p = SHARED / rel
    if not p.exists():
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"required shared file missing under CI: {p}")
        pytest.skip(f"shared data not available: {p}")
    return p


@pytest.fixture(scope="session")
def lego_tiny() -> Path:
    """NeRF-Synthetic lego at 100x100 (train 20 / val 5 / test 10)."""
    return shared_path("data/blender/lego_tiny")


@pytest.fixture(autouse=True)
def _single_thread_torch():
    """Torch's 2-thread mode is much slower than 1 on a loaded 2-core machine; tests use one thread."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        yield
        return
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
