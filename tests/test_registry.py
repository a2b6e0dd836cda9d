"""Our methods are registered through nerfstudio's entry point and show in `ns-train --help`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from importlib.metadata import entry_points

import pytest

from nscodec.io import CODECS, codec_config_class

from nscodec.core.methods import METHODS

#: every method this package registers (read from its installed entry points, so a new method is tested too)
REGISTERED = sorted(ep.name for ep in entry_points(group="nerfstudio.method_configs") if ep.value.startswith("nscodec_configs"))
#: methods that need a pretrained codec-model file to build (CodecNeRF's shared encoder/decoder)
NEEDS_CODEC_MODEL = {m.name for m in METHODS.values() if m.needs_codec_model}


def test_all_methods_registered():
    for name in ("nscodec-tensorf", "ectensorf", "ectensorf-paper", "shacira", "vqad", "codecnerf"):
        assert name in REGISTERED, name


def test_the_entry_points_are_the_declared_methods():
    """pyproject.toml's entry points (as installed) and nscodec/methods.py name the same methods, each entry point the
    attribute its declaration says; the source pyproject.toml agrees too (an install from an older checkout would not)."""
    import tomllib

    installed = {ep.name: ep.value for ep in entry_points(group="nerfstudio.method_configs") if ep.value.startswith("nscodec_configs")}
    declared = {m.name: m.entry_point for m in METHODS.values()}
    assert installed == declared
    source = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert source["project"]["entry-points"]["nerfstudio.method_configs"] == declared


def test_entry_points_discovered():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    for name in REGISTERED:
        assert name in methods, f"{name} not discovered via nerfstudio.method_configs"
        assert methods[name].method_name == name
        assert descriptions[name]


def test_every_codec_maps_to_a_registered_model_config():
    from nerfstudio.plugins.registry import discover_methods

    methods, _ = discover_methods()
    for codec in CODECS:
        cls = codec_config_class(codec)
        assert any(type(m.pipeline.model) is cls for m in methods.values()), codec


def test_ns_train_help_lists_methods():
    r = subprocess.run([str(Path(sys.executable).parent / "ns-train"), "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    for name in REGISTERED:
        assert name in r.stdout


def test_every_registered_preset_builds_its_model():
    """Each method's default config must instantiate (catches inconsistent presets before a user does)."""
    import torch
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.plugins.registry import discover_methods

    from nscodec.errors import NscError

    methods, _ = discover_methods()
    for name in REGISTERED:
        cfg = methods[name].pipeline.model
        if name in NEEDS_CODEC_MODEL:  # no codec model given: one clear error naming what is missing
            with pytest.raises(NscError, match="codec model"):
                cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=2)
            continue
        if name.endswith("-paper") and hasattr(cfg, "init_resolution"):  # paper-scale planes (300^2): built smaller
            cfg = type(cfg)(**{**cfg.__dict__, "init_resolution": 8, "final_resolution": 16})
        model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=2)
        assert sum(p.numel() for p in model.parameters()) > 0, name
