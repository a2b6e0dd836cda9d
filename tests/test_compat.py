"""The nerfstudio 1.1.5 traps, fixed from our plugin: LPIPS offline, torch weights_only, ns-export hook, open3d."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import shared_path


def test_lpips_unavailable_without_local_weights(tmp_path, monkeypatch, caplog):
    import nscodec.compat.lpips as lp

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(lp, "_WARNED", False)
    with caplog.at_level(logging.WARNING, logger="nscodec"):
        assert lp.make_lpips() is None
        assert lp.make_lpips() is None
    msgs = [r.getMessage() for r in caplog.records if "LPIPS unavailable" in r.getMessage()]
    assert len(msgs) == 1, "warn once, clearly"
    assert str(tmp_path) in msgs[0]


def test_lpips_built_when_weights_present(tmp_path, monkeypatch):
    """With the AlexNet file in the hub cache, the metric is built from it (no download attempted)."""
    import torchvision

    import nscodec.compat.lpips as lp

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    path = lp.lpips_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(torchvision.models.alexnet(weights=None).state_dict(), path)  # random weights, right format
    metric = lp.make_lpips()
    assert metric is not None
    a = torch.rand(1, 3, 32, 32)
    assert float(metric(a, a)) == pytest.approx(0.0, abs=1e-6)


def test_weights_only_load_of_numpy_scalars():
    """nerfstudio checkpoints hold numpy scalars; torch>=2.6's weights_only loader must accept them."""
    from nscodec.compat import register_checkpoint_globals

    assert register_checkpoint_globals()
    buf = io.BytesIO()
    torch.save({"step": np.int64(3), "lr": np.float64(0.5), "arr": np.arange(3), "t": torch.ones(2)}, buf)
    buf.seek(0)
    out = torch.load(buf)  # default weights_only=True on torch>=2.6
    assert out["step"] == 3 and out["lr"] == 0.5 and out["arr"].tolist() == [0, 1, 2]


def test_weights_only_still_refuses_arbitrary_globals():
    """The allow-list is narrow: arbitrary classes are still refused."""
    buf = io.BytesIO()
    torch.save({"x": Path("/tmp")}, buf)
    buf.seek(0)
    with pytest.raises(Exception):
        torch.load(buf)


def _python(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})


def test_exporter_has_compressed_and_all_stock_subcommands():
    code = (
        "import typing, nerfstudio.scripts.exporter as e\n"
        "names = [a.__metadata__[0].name for a in typing.get_args(typing.get_args(e.Commands)[0])]\n"
        "print(','.join(names))\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr[-2000:]
    names = r.stdout.strip().split(",")
    for n in ("pointcloud", "tsdf", "poisson", "marching-cubes", "cameras", "gaussian-splat", "compressed"):
        assert n in names


def test_hook_can_be_disabled():
    code = "import typing, nerfstudio.scripts.exporter as e; print(getattr(e, '_nscodec_registered', False))"
    r = _python(code, env={"NSCODEC_NO_STARTUP_HOOK": "1"})
    # with the hook off, the exporter imports only if open3d loads; either way nothing of ours is registered
    assert "True" not in r.stdout


def test_open3d_failure_is_one_clear_error():
    probe = _python("import open3d")
    if probe.returncode == 0:
        pytest.skip("open3d loads on this machine; the shim is not used")
    code = (
        "import nerfstudio.scripts.exporter as e\n"
        "try:\n    e.o3d.geometry\nexcept ImportError as err:\n    print('ERR:', err)\n"
    )
    r = _python(code)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "ERR: open3d could not be loaded" in r.stdout and "libusb" in r.stdout


def test_offline_tool_blocks_network():
    """Sanity check of the tool the end-to-end tests rely on to prove nothing downloads."""
    offline = shared_path("tools/offline")  # absent: skipped locally, a failure under CI=true
    r = subprocess.run(
        [str(offline), sys.executable, "-c", "import socket; socket.create_connection(('127.0.0.1', 9), timeout=2)"],
        capture_output=True, text=True, timeout=60,
    )
    assert r.returncode != 0
