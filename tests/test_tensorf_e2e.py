"""nscodec-tensorf end to end with the ns-* tools, on a generated scene: train (nerfstudio Trainer) → checkpoint →
ns-export compressed →
decode → evaluate. Export and decode run under ../shared/tools/offline: no network, nothing downloads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import shared_path

BIN = Path(sys.executable).parent


def _run(cmd, offline=True, **kw):
    if offline:
        cmd = [str(shared_path("tools/offline"))] + cmd
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, **kw)


@pytest.fixture(scope="module")
def trained(scene, tmp_path_factory):
    from nscodec.tools.demo import train_in_process

    work = tmp_path_factory.mktemp("tensorf")
    torch.manual_seed(0)
    config_yml, trainer, _ = train_in_process(
        scene, work, steps=120, rays=1024, progress=False,
        init_resolution=32, final_resolution=48, upsampling_iters=(40, 80), occupancy_warmup=30, occupancy_update_every=30,
    )
    return config_yml, trainer, work


def test_checkpoint_loads_with_torch_weights_only(trained):
    """torch>=2.6 defaults to weights_only=True; nerfstudio's eval_setup must load our checkpoint."""
    from nerfstudio.utils.eval_utils import eval_setup

    config_yml, trainer, _ = trained
    _, pipeline, ckpt, step = eval_setup(config_yml, test_mode="inference")
    assert step == 119
    ref = trainer.pipeline.model.state_dict()
    got = pipeline.model.state_dict()
    assert got["field.density_encoding.plane_coef"].shape[-1] == 48  # resized to the checkpoint's resolution
    for k in ("field.density_encoding.plane_coef", "field.color_encoding.line_coef", "occupancy.occupied"):
        assert torch.equal(ref[k].cpu(), got[k].cpu()), k


def test_export_decode_evaluate(trained, scene):
    from nscodec.tools.evaluate import evaluate_model
    from nscodec.io import load_model

    config_yml, trainer, work = trained
    out_dir = work / "export"
    r = _run([str(BIN / "ns-export"), "compressed", "--load-config", str(config_yml), "--output-dir", str(out_dir)])
    assert r.returncode == 0, r.stderr[-3000:]
    nsc = out_dir / "scene.nsc"
    assert nsc.is_file()

    # refuses to overwrite without --overwrite, with one clear line and the file intact
    size = nsc.stat().st_size
    r2 = _run([str(BIN / "ns-export"), "compressed", "--load-config", str(config_yml), "--output-dir", str(out_dir)])
    assert r2.returncode != 0 and "exists" in r2.stderr and "Traceback" not in r2.stderr
    assert nsc.stat().st_size == size

    model, f = load_model(nsc)
    assert f.total_bytes == os.path.getsize(nsc)
    fp32 = sum(p.numel() * 4 for p in trainer.pipeline.model.parameters())
    assert size < fp32 / 3, (size, fp32)

    base = evaluate_model(trainer.pipeline.model, scene, "test", progress=False)
    dec = evaluate_model(model, scene, "test", progress=False)
    # a trained model must beat a blank white render by a wide margin, and 8-bit coding must cost little
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig  # noqa: F401
    from nscodec.tools.evaluate import load_split

    _, ds = load_split(scene, "test")
    white_mse = sum(
        float(((trainer.pipeline.model.renderer_rgb.blend_background(ds.get_image_float32(i)) - 1.0) ** 2).mean()) for i in range(len(ds))
    ) / len(ds)
    white_psnr = -10 * torch.log10(torch.tensor(white_mse)).item()
    assert base["psnr"] > white_psnr + 3.0, (base["psnr"], white_psnr)
    assert abs(dec["psnr"] - base["psnr"]) < 0.5, (dec["psnr"], base["psnr"])

    # the CLI path, offline: decode + evaluate, JSON out, bytes = file size
    r3 = _run([str(BIN / "nscodec"), "eval", str(nsc), "--data", str(scene), "--every", "2"])
    assert r3.returncode == 0, r3.stderr[-3000:]
    res = json.loads(r3.stdout[r3.stdout.index("{"):])
    assert res["bytes"] == size and res["num_views"] == 2

    r4 = _run([str(BIN / "nscodec"), "info", str(nsc)], offline=False)
    assert r4.returncode == 0 and "density.planes" in r4.stdout and "nscodec-tensorf" in r4.stdout


def test_decoded_model_renders_deterministically(trained):
    """Decoding the same file twice gives bit-identical renders (no float CDF recomputation, no randomness)."""
    from nerfstudio.cameras.rays import RayBundle

    from nscodec.io import export_model, load_model

    _, trainer, work = trained
    path = work / "det.nsc"
    export_model(trainer.pipeline.model, path)
    a, _ = load_model(path)
    b, _ = load_model(path)
    g = torch.Generator().manual_seed(0)
    o = torch.randn(256, 3, generator=g) * 0.1 + torch.tensor([0.0, -4.0, 0.5])
    d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, -0.1]) + 0.2 * torch.randn(256, 3, generator=g), dim=-1)
    rb = RayBundle(origins=o, directions=d, pixel_area=torch.ones(256, 1))
    with torch.no_grad():
        ra, rb_ = a.get_outputs(rb)["rgb"], b.get_outputs(rb)["rgb"]
    assert torch.equal(ra, rb_)
    assert (ra < 0.99).any(), "rays aimed at the scene should hit something"


def test_ns_eval_offline_on_cpu(trained):
    """`ns-eval` (stock nerfstudio script) loads our checkpoint on CPU with no network and reports metrics."""
    config_yml, _, work = trained
    out = work / "ns_eval.json"
    r = _run([str(BIN / "ns-eval"), "--load-config", str(config_yml), "--output-path", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    assert res["psnr"] > 10 and 0 < res["ssim"] <= 1
    assert "lpips" not in res  # no local AlexNet weights: reported as unavailable, never downloaded
    # rate is a real file: exactly the size of the .nsc `ns-export compressed` writes for this checkpoint
    from nscodec.tools.export import export_from_config

    path = work / "ns_eval_ref.nsc"
    size = export_from_config(config_yml, path, overwrite=True, quiet=True)
    assert res["compressed_bytes"] == size == os.path.getsize(path)


def test_ns_eval_opens_nsc_file(trained, scene):
    """`ns-eval --load-config scene.nsc` decodes the file; compressed_bytes is its size; PSNR equals nscodec eval."""
    from nscodec.tools.evaluate import evaluate_nsc
    from nscodec.io import export_model

    _, trainer, work = trained
    nsc = work / "for_ns_eval.nsc"
    size = export_model(trainer.pipeline.model, nsc, meta={"train": {"data": str(scene), "method_name": "nscodec-tensorf"}}, overwrite=True)
    out = work / "ns_eval_nsc.json"
    r = _run([str(BIN / "ns-eval"), "--load-config", str(nsc), "--output-path", str(out)])
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    assert res["compressed_bytes"] == size == os.path.getsize(nsc)
    ref = evaluate_nsc(nsc, progress=False)
    assert abs(res["psnr"] - ref["psnr"]) < 1e-3, (res["psnr"], ref["psnr"])


def test_nsc_eval_setup_missing_data_is_one_clear_error(trained, tmp_path):
    from nscodec.errors import NscError
    from nscodec.io import export_model
    from nscodec.pipeline import nsc_eval_setup

    nsc = tmp_path / "nodata.nsc"
    export_model(trained[1].pipeline.model, nsc, meta={"train": {"data": str(tmp_path / "gone"), "method_name": "nscodec-tensorf"}})
    with pytest.raises(NscError, match="NSCODEC_DATA"):
        nsc_eval_setup(nsc)


@pytest.mark.parametrize("source", ["config", "nsc"])
def test_ns_viewer_loads_checkpoint_offline(trained, tmp_path, source, scene):
    """`ns-viewer` loads our checkpoint — or a .nsc file directly — on CPU with no network and starts serving
    (stopped after start-up)."""
    import time

    config_yml, trainer, _ = trained
    target, ready = config_yml, "Done loading checkpoint"
    if source == "nsc":  # the file alone: the dataset it records does not exist on this "machine"
        from nscodec.io import export_model

        target, ready = tmp_path / "view.nsc", "Done decoding"
        export_model(trainer.pipeline.model, target, meta={"train": {"data": str(tmp_path / "gone"), "method_name": "nscodec-tensorf"}})
    log = tmp_path / "viewer.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [str(shared_path("tools/offline")), str(BIN / "ns-viewer"), "--load-config", str(target), "--viewer.websocket-port", str(7191 + (source == "nsc"))],
            stdout=fh, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )
        try:
            deadline = time.time() + 240
            text = ""
            while time.time() < deadline and proc.poll() is None:
                time.sleep(2)
                text = log.read_text()
                if ready in text and ("Viewer" in text or "viser" in text.lower()):
                    break
            assert proc.poll() is None, "ns-viewer exited early:\n" + log.read_text()[-3000:]
            assert ready in text, text[-3000:]
            assert "Traceback" not in text
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def test_export_load_step_picks_that_checkpoint(trained, tmp_path):
    """``load_step`` exports the named checkpoint, not the latest; a step the run lacks is one clear error."""
    import yaml

    from nscodec.errors import NscError
    from nscodec.tools.export import export_from_config
    from nscodec.io import load_model

    config_yml, trainer, _ = trained
    cfg = yaml.load(config_yml.read_text(), Loader=yaml.Loader)
    cfg.output_dir = tmp_path / "runs"
    ckpt_dir = cfg.get_checkpoint_dir()
    ckpt_dir.mkdir(parents=True)
    state = torch.load(trainer.checkpoint_dir / "step-000000119.ckpt", map_location="cpu", weights_only=False)
    torch.save(state, ckpt_dir / "step-000000119.ckpt")
    key = "_model.field.color_encoding.line_coef"
    state["pipeline"][key] = state["pipeline"][key] * 0.5  # an earlier checkpoint that differs
    state["step"] = 60
    torch.save(state, ckpt_dir / "step-000000060.ckpt")
    config = tmp_path / "config.yml"
    config.write_text(yaml.dump(cfg))

    export_from_config(config, tmp_path / "latest.nsc", quiet=True)
    export_from_config(config, tmp_path / "s60.nsc", quiet=True, load_step=60)
    latest = load_model(tmp_path / "latest.nsc")[0].field.color_encoding.line_coef
    s60 = load_model(tmp_path / "s60.nsc")[0].field.color_encoding.line_coef
    ref = trainer.pipeline.model.field.color_encoding.line_coef.detach().cpu()
    assert torch.allclose(latest, ref, atol=1e-2 * ref.abs().max().item())
    assert torch.allclose(s60, 0.5 * ref, atol=1e-2 * ref.abs().max().item())
    with pytest.raises(NscError, match=r"no checkpoint of step 7 .*\[60, 119\]"):
        export_from_config(config, tmp_path / "s7.nsc", load_step=7)
    assert not (tmp_path / "s7.nsc").exists()


@pytest.mark.parametrize("case", ["missing", "not_yaml", "no_checkpoint"])
def test_export_bad_config_is_one_clear_error(case, tmp_path, trained):
    from nscodec.errors import NscError
    from nscodec.tools.export import export_from_config

    config_yml, _, _ = trained
    if case == "missing":
        path, msg = tmp_path / "nope.yml", "not found"
    elif case == "not_yaml":
        path, msg = tmp_path / "bad.yml", "not a"
        path.write_text("just: [a, list\n")
    else:
        import yaml

        cfg = yaml.load(config_yml.read_text(), Loader=yaml.Loader)
        cfg.timestamp = "never-trained"
        path, msg = tmp_path / "config.yml", "no checkpoint"
        path.write_text(yaml.dump(cfg))
    with pytest.raises(NscError, match=msg):
        export_from_config(path, tmp_path / "x.nsc")
    assert not (tmp_path / "x.nsc").exists()


# ------------------------------------------------------------------------------------- a file you can ship
def _shipped(trainer, tmp_path, monkeypatch) -> Path:
    """The exported file copied into an empty directory; the dataset it records is gone, NSCODEC_DATA unset."""
    import shutil

    from nscodec.data import training_meta
    from nscodec.io import export_model

    src = tmp_path / "sender" / "scene.nsc"
    src.parent.mkdir()
    meta = training_meta(trainer.pipeline.config)
    meta["train"]["data"] = str(tmp_path / "sender" / "no-such-dataset")
    export_model(trainer.pipeline.model, src, meta=meta)
    dst = tmp_path / "receiver" / "scene.nsc"
    dst.parent.mkdir()
    shutil.copy(src, dst)
    shutil.rmtree(src.parent)
    monkeypatch.delenv("NSCODEC_DATA", raising=False)
    monkeypatch.chdir(dst.parent)
    return dst


def test_nsc_opens_without_dataset(trained, tmp_path, monkeypatch):
    """The viewer's pipeline builds from the file alone (its own training cameras, no images, no network) and
    renders the default view exactly as the sender's model does."""
    from nscodec.cameras import CamerasDataManager
    from nscodec.pipeline import eval_setup_view

    _, trainer, _ = trained
    path = _shipped(trainer, tmp_path, monkeypatch)
    _, pipeline, _, _ = eval_setup_view(path, test_mode="test")
    assert isinstance(pipeline.datamanager, CamerasDataManager)
    model = pipeline.model
    cams = pipeline.datamanager.train_dataset.cameras
    assert len(cams) == len(trainer.pipeline.datamanager.train_dataset)
    view = model.viewer_default_view
    with torch.no_grad():
        got = model.get_outputs_for_camera(cams[view : view + 1])["rgb"]
        ref = trainer.pipeline.model.finalized_copy().eval().get_outputs_for_camera(cams[view : view + 1])["rgb"]
    assert torch.equal(got, ref)
    assert got.std() > 0.01, "the default view should see the scene, not an empty background"
    ref_c2w = trainer.pipeline.datamanager.train_dataset.cameras.camera_to_worlds
    assert torch.allclose(cams.camera_to_worlds, ref_c2w.float(), atol=1e-6)
    # evaluation needs the images: one clear error saying how to point at them
    from nscodec.errors import NscError
    from nscodec.pipeline import nsc_eval_setup

    with pytest.raises(NscError, match="NSCODEC_DATA"):
        nsc_eval_setup(path)


def test_view_only_viewer_hides_training_controls_and_opens_at_a_training_view(trained, tmp_path, monkeypatch):
    from nerfstudio.configs.base_config import ViewerConfig

    from nscodec.pipeline import eval_setup_view
    from nscodec.viewer import NscViewerState, viser_pose

    _, trainer, _ = trained
    path = _shipped(trainer, tmp_path, monkeypatch)
    config, pipeline, _, _ = eval_setup_view(path, test_mode="test")
    state = NscViewerState(ViewerConfig(websocket_port=7195, num_rays_per_chunk=1 << 12), log_filename=tmp_path / "v.log",
                           datapath=path, pipeline=pipeline)
    try:
        assert not state.pause_train.visible and not state.resume_train.visible
        assert "scene.nsc" in state.stats_markdown.content and "nscodec-tensorf" in state.stats_markdown.content
        assert "Step" not in state.make_stats_markdown(0, "64x64px")
        wxyz, pos = viser_pose(pipeline.model.viewer_cameras.camera_to_worlds[pipeline.model.viewer_default_view])
        assert abs(sum(w * w for w in wxyz) - 1) < 1e-6 and any(abs(x) > 1 for x in pos)
    finally:
        state.viser_server.stop()


def test_nscodec_render_writes_a_video_and_frames_from_the_file_alone(trained, tmp_path, monkeypatch):
    _, trainer, _ = trained
    path = _shipped(trainer, tmp_path, monkeypatch)
    r = _run([str(BIN / "nscodec"), "render", str(path), "--output", "orbit.mp4", "--seconds", "1", "--fps", "4",
              "--resolution-scale", "0.5"], cwd=path.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    video = path.parent / "orbit.mp4"
    assert video.is_file() and video.stat().st_size > 1000 and video.read_bytes()[4:8] == b"ftyp"
    r = _run([str(BIN / "nscodec"), "render", str(path), "--output", "frames", "--seconds", "0.5", "--fps", "4",
              "--resolution-scale", "0.5"], cwd=path.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    frames = sorted((path.parent / "frames").glob("*.png"))
    assert len(frames) == 2
    from PIL import Image
    import numpy as np

    a, b = (np.asarray(Image.open(f)) for f in frames)
    assert a.shape[:2] == (24, 24) and not np.array_equal(a, b)  # the orbit moves


def test_ns_render_opens_a_nsc_file(trained, tmp_path, monkeypatch):
    """nerfstudio's own `ns-render` (interpolate between the file's cameras) on a .nsc, without its dataset."""
    _, trainer, _ = trained
    path = _shipped(trainer, tmp_path, monkeypatch)
    r = _run([str(BIN / "ns-render"), "interpolate", "--load-config", str(path), "--output-path", "interp.mp4",
              "--interpolation-steps", "1", "--frame-rate", "8", "--downscale-factor", "4"], cwd=path.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (path.parent / "interp.mp4").stat().st_size > 1000


def test_ns_eval_of_a_shipped_file_takes_the_dataset_from_data(trained, scene, tmp_path, monkeypatch):
    """`ns-eval --load-config scene.nsc --data DIR`: the file alone plus the receiver's copy of the images."""
    _, trainer, _ = trained
    path = _shipped(trainer, tmp_path, monkeypatch)
    out = path.parent / "eval.json"
    r = _run([str(BIN / "ns-eval"), "--load-config", str(path), "--data", str(scene), "--output-path", str(out)], cwd=path.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    assert res["compressed_bytes"] == path.stat().st_size and res["psnr"] > 15
    r = _run([str(BIN / "ns-eval"), "--load-config", str(path), "--output-path", str(out)], cwd=path.parent)
    assert r.returncode == 2 and "ns-eval: error:" in r.stderr and "NSCODEC_DATA" in r.stderr and "Traceback" not in r.stderr
