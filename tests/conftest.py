"""Shared fixtures. The tests are hermetic: scenes and codec models are generated here (:mod:`nscodec.scenes`).
A test that ever needs ../shared data goes through :func:`shared_path`: under CI (CI=true) a missing file fails."""

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


@pytest.fixture(scope="session")
def scene(tmp_path_factory) -> Path:
    """A procedural scene in Blender layout (:mod:`nscodec.scenes`), 48×48: train 16 / val 2 / test 3. Generated, so
    the tests are hermetic (no ../shared data)."""
    from nscodec.scenes import generate_blender_scene

    return generate_blender_scene(tmp_path_factory.mktemp("scene") / "scene", resolution=48, n_train=16, n_val=2, n_test=3,
                                  progress=False)


@pytest.fixture(scope="session")
def codec_model(tmp_path_factory):
    """A tiny CodecNeRF codec pretrained for 4 steps on 2 generated scenes: ``(path, meta, workdir)``."""
    from nscodec.codecnerf.pretrain import find_scenes, pretrain
    from nscodec.coding.determinism import fixed_threads
    from nscodec.scenes.procedural import generate_corpus
    from tests.helpers import TINY_CODEC

    work = tmp_path_factory.mktemp("codecnerf")
    generate_corpus(work / "corpus", 2, seed=3, resolution=24, n_train=8, n_val=1, n_test=1, progress=False)
    scenes = find_scenes(work / "corpus")
    with fixed_threads(1):
        meta = pretrain(scenes, work / "codec.cnm", steps=4, rays=64, samples=16, arch=TINY_CODEC, progress=False)
    return work / "codec.cnm", meta, work


pytest_plugins = ["tests.pytest_safety"]  # failures pytest cannot format are still reported as failures
