"""CodecNeRF: unprojection geometry, VQ, zero-initialised PEFT, tiny pretraining (the session's ``codec_model``),
what a finetuned file holds, codec-model hash check, the scratch baseline, `ns-export` / `ns-eval` with a codec model.
CPU-sized (tiny codec, a few steps, generated scene); train → export → decode identity is in test_conformance.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nscodec.codecnerf.encoder import PLANE_AXES, VectorQuantizer, axis_pool, project_points, unproject_features, voxel_centers
from nscodec.coding.determinism import fixed_threads
from nscodec.codecnerf.network import CODEC_MODEL_ENV
from nscodec.codecnerf.peft import LoRALinear, PlaneDeltas, add_lora
from nscodec.codecnerf.triplane import sample_triplanes
from tests.conftest import shared_path
from tests.helpers import TINY_CODEC as TINY, rays

BIN = Path(sys.executable).parent
AABB = torch.tensor([[-1.5] * 3, [1.5] * 3])


def _cam(eye):
    from nscodec.scenes.procedural import look_at_c2w

    return look_at_c2w(eye)[:3]


def test_unprojected_point_lands_in_its_voxel():
    """Two orthogonal cameras each see a blob at the projection of X: the product of their unprojected volumes
    peaks in the voxel that contains X."""
    res, size, f = 24, 64, 60.0
    x = torch.tensor([0.31, -0.42, 0.17])
    c2w = torch.stack([_cam((4.0, 0.0, 0.0)), _cam((0.0, 4.0, 0.0))])
    fx = fy = torch.full((2,), f)
    cx = cy = torch.full((2,), size / 2)
    u, v, depth = project_points(x[None], c2w, fx, fy, cx, cy)
    assert (depth > 0).all()
    jj, ii = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="xy")
    blobs = torch.stack([torch.exp(-((jj - u[n, 0]) ** 2 + (ii - v[n, 0]) ** 2) / 2.0) for n in range(2)])[:, None]
    vols, valid = unproject_features(blobs, c2w, fx, fy, cx, cy, size, size, AABB, res)
    score = (vols[0, 0] * vols[1, 0]).reshape(-1)
    got = torch.unravel_index(score.argmax(), (res, res, res))
    want = ((x - AABB[0]) / (AABB[1] - AABB[0]) * res).floor().long()
    assert tuple(int(g) for g in got) == tuple(want.tolist())
    assert valid.shape == (2, 1, res, res, res)


def test_unprojection_reads_the_projected_pixel():
    """A feature map holding each pixel's own (u, v) gives every voxel exactly its centre's projection
    (independent projection via the inverse 4x4 camera matrix)."""
    res, w, h, f = 12, 40, 30, 35.0
    c2w = _cam((2.5, -3.0, 1.5))[None]
    fx = fy = torch.tensor([f])
    cx, cy = torch.tensor([w / 2]), torch.tensor([h / 2])
    jj, ii = torch.meshgrid(torch.arange(w) + 0.5, torch.arange(h) + 0.5, indexing="xy")
    feats = torch.stack([jj, ii])[None]  # pixel-centre coordinates
    vols, valid = unproject_features(feats, c2w, fx, fy, cx, cy, w, h, AABB, res)
    pts = voxel_centers(AABB, res).reshape(-1, 3)
    m = torch.eye(4)
    m[:3] = c2w[0]
    pc = (torch.linalg.inv(m) @ torch.cat([pts, torch.ones(len(pts), 1)], 1).t()).t()
    u_ref = cx + f * pc[:, 0] / -pc[:, 2]
    v_ref = cy - f * pc[:, 1] / -pc[:, 2]
    inner = (u_ref > 0.5) & (u_ref < w - 0.5) & (v_ref > 0.5) & (v_ref < h - 0.5) & (pc[:, 2] < 0)
    assert inner.sum() > 100
    got = vols[0].reshape(2, -1)
    torch.testing.assert_close(got[0, inner], u_ref[inner], atol=1e-3, rtol=0)
    torch.testing.assert_close(got[1, inner], v_ref[inner], atol=1e-3, rtol=0)
    assert bool(valid.reshape(-1)[inner].all())


def test_axis_pooled_planes_are_read_back_at_voxel_centres():
    """Layout contract between axis pooling (Eq. 2) and triplane sampling (Eq. 6)."""
    res = 8
    vol = torch.randn(3, res, res, res)
    planes = axis_pool(vol)
    ijk = torch.tensor([[1, 6, 3], [0, 0, 7], [5, 2, 2]])
    pts = voxel_centers(AABB, res)[ijk[:, 0], ijk[:, 1], ijk[:, 2]]
    pn = (pts - AABB[0]) / (AABB[1] - AABB[0]) * 2 - 1
    got = sample_triplanes([planes], pn)
    for n, (i, j, k) in enumerate(ijk.tolist()):
        want = vol[:, i, j, :].mean(-1) + vol[:, :, j, k].mean(1) + vol[:, i, :, k].mean(1)
        torch.testing.assert_close(got[n], want, atol=1e-5, rtol=0)
    assert PLANE_AXES == ((0, 1), (1, 2), (0, 2))


def test_vq_straight_through_and_commitment_loss():
    vq = VectorQuantizer(codebook_size=4, dim=2, commitment=0.25)
    with torch.no_grad():
        vq.codebook.copy_(torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    l = torch.tensor([[[[0.9]], [[0.2]]], [[[0.1]], [[0.8]]]], requires_grad=True)  # [B=2, D=2, 1, 1]
    out, idx, loss = vq(l)
    assert idx.reshape(-1).tolist() == [1, 2]
    torch.testing.assert_close(out.detach().reshape(2, 2), torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 2, 1, 1)
    want = ((q - l.detach()) ** 2).mean() * 1.25  # codebook term + 0.25 * commitment term (same value)
    torch.testing.assert_close(loss, want)
    (g_out,) = torch.autograd.grad(out.sum(), l, retain_graph=True)
    assert torch.equal(g_out, torch.ones_like(l))  # straight-through
    g_l, g_cb = torch.autograd.grad(loss, [l, vq.codebook])
    torch.testing.assert_close(g_l, 0.25 * 2 * (l.detach() - q) / l.numel())  # commitment only
    assert g_cb[0].abs().sum() == 0 and g_cb[3].abs().sum() == 0 and g_cb[1].abs().sum() > 0  # used codewords only


@pytest.mark.parametrize("quantized", [False, True])
def test_plane_deltas_start_at_exactly_zero(quantized):
    d = PlaneDeltas(channels=5, resolutions=(4, 8), rank=4, quantized=quantized)
    base = [torch.randn(3, 5, 4, 4), torch.randn(3, 5, 8, 8)]
    for train in (True, False):
        d.train(train)
        for b, o in zip(base, d.apply(base)):
            assert torch.equal(b, o)
    assert d.matrices[0].shape == (12, 4, 4) and d.vectors[1].shape == (4, 5)
    d.train(True)
    loss = sum(x.sum() for x in d.apply(base))
    loss.backward()
    assert d.vectors[0].grad.abs().sum() > 0  # the zero vectors get gradient (through the random matrices)


def test_lora_starts_as_the_pretrained_layer():
    lin = torch.nn.Linear(7, 5)
    seq = torch.nn.Sequential(lin, torch.nn.ReLU(), torch.nn.Linear(5, 3))
    x = torch.randn(11, 7)
    ref = seq(x)
    layers = add_lora(seq, rank=4)
    assert len(layers) == 2 and isinstance(seq[0], LoRALinear)
    assert torch.equal(seq(x), ref)
    assert not seq[0].base.weight.requires_grad and seq[0].lora_a.requires_grad


# ------------------------------------------------------------------------------------------ pretrain → finetune
def test_tiny_pretrain_writes_a_codec_model(codec_model):
    from nscodec.codecnerf.network import file_sha256, load_codec_model

    path, meta, _ = codec_model
    assert path.is_file() and meta["steps"] == 4 and meta["num_scenes"] == 2
    payload = torch.load(path, weights_only=True)  # no pickled code
    assert payload["format"] == "nscodec-codecnerf-model" and payload["version"] == 1
    net, info = load_codec_model(path, meta["sha256"])
    assert info["sha256"] == meta["sha256"] == file_sha256(path)
    assert net.arch == TINY


def test_pretrain_resumes_from_a_codec_model(codec_model):
    """--resume continues from the file's weights (no codebook re-init) and counts the earlier steps and time."""
    from nscodec.codecnerf.network import load_codec_model
    from nscodec.codecnerf.pretrain import find_scenes, pretrain

    path, meta, work = codec_model
    before, _ = load_codec_model(path)
    with fixed_threads(1):
        meta2 = pretrain(find_scenes(work / "corpus"), work / "resumed.cnm", steps=0, arch=None, progress=False, resume=path)
    after, _ = load_codec_model(work / "resumed.cnm")
    for (k, a), b in zip(before.state_dict().items(), after.state_dict().values()):
        assert torch.equal(a, b), k  # 0 further steps: the weights (codebook included) are carried over unchanged
    assert meta2["resumed_sha256"] == meta["sha256"] and meta2["total_steps"] == meta["steps"]
    assert meta2["total_train_seconds"] >= meta["train_seconds"]
    with fixed_threads(1):
        meta3 = pretrain(find_scenes(work / "corpus"), work / "resumed2.cnm", steps=2, rays=64, samples=16, progress=False,
                         resume=work / "resumed.cnm")
    assert meta3["total_steps"] == meta["steps"] + 2
    moved, _ = load_codec_model(work / "resumed2.cnm")
    assert not all(torch.equal(a, b) for a, b in zip(after.state_dict().values(), moved.state_dict().values()))


@pytest.fixture(scope="module")
def finetuned(codec_model, scene, tmp_path_factory):
    from nscodec.tools.demo import train_in_process
    from nscodec_configs.codecnerf_configs import codecnerf_trainer_config

    path, _, _ = codec_model
    work = tmp_path_factory.mktemp("finetuned")
    torch.manual_seed(0)
    cfg = codecnerf_trainer_config(mode="peft_ec", max_steps=12, codec_model_path=path, occupancy_resolution=32)
    with fixed_threads(1):
        config_yml, trainer, _ = train_in_process(scene, work, steps=12, rays=256, progress=False, trainer_config=cfg)
    return config_yml, trainer, work


def test_step0_renders_equal_the_encoder_output(codec_model, scene):
    """Before any finetuning step, base + ΔF (= 0) through LoRA MLPs (B = 0) renders exactly what the pretrained
    decoder alone renders."""
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.codecnerf.model import CodecNeRFModelConfig
    from nscodec.codecnerf.network import load_codec_model
    from nscodec.data import load_split

    path, _, _ = codec_model
    model = CodecNeRFModelConfig(codec_model_path=path, occupancy_resolution=32).setup(
        scene_box=SceneBox(aabb=AABB.clone()), num_train_data=20, metadata={}
    )
    _, dataset = load_split(scene, "train")
    model.encode_from_dataset(dataset)
    model.eval()
    with torch.no_grad():
        a = model.get_outputs(rays(128, seed=0))["rgb"]
        for s, lv in enumerate(model.levels()):
            assert torch.equal(lv, getattr(model, f"base_{s}"))
        plain, _ = load_codec_model(path)
        model.renderer = plain.renderer  # the pretrained MLP without LoRA
        b = model.get_outputs(rays(128, seed=0))["rgb"]
    assert torch.equal(a, b)


def test_finetuned_file_holds_indices_coded_deltas_and_no_occupancy(finetuned):
    from nscodec.io import export_model, load_model

    _, trainer, work = finetuned
    model = trainer.pipeline.model
    assert bool(model.encoded)
    assert any(v.abs().sum() > 0 for v in model.deltas.vectors)  # the deltas moved
    path = work / "scene.nsc"
    size = export_model(model, path, overwrite=True)
    _, nsc = load_model(path)
    assert set(nsc.sections) >= {"codec_ref", "vq.indices", "delta.matrices.0", "delta.vectors.1"}
    assert nsc.sections["delta.matrices.0"].coder == "ans"
    assert "occupancy" not in nsc.sections  # recomputed identically from the decoded field
    assert not any(name.startswith(("net.", "encoder")) for name in nsc.sections)  # the codec model is referenced only
    assert size == os.path.getsize(path) and size < 64_000


def test_wrong_codec_model_is_a_clear_error(finetuned, codec_model, monkeypatch):
    from nscodec.codecnerf.network import load_codec_model, save_codec_model
    from nscodec.errors import NscFormatError
    from nscodec.io import export_model, load_model

    path, _, work = codec_model
    nsc = work / "ref.nsc"
    export_model(finetuned[1].pipeline.model, nsc, overwrite=True)
    net, _ = load_codec_model(path)
    with torch.no_grad():
        net.compressor.vq.codebook.add_(0.01)
    other = work / "other.cnm"
    save_codec_model(net, other)
    monkeypatch.setenv(CODEC_MODEL_ENV, str(other))
    with pytest.raises(NscFormatError, match="codec model mismatch"):
        load_model(nsc)
    monkeypatch.setenv(CODEC_MODEL_ENV, str(work / "missing.cnm"))
    with pytest.raises(NscFormatError, match="not found"):
        load_model(nsc)


def test_scratch_baseline_export_decode_identical(scene, tmp_path):
    from nscodec.tools.demo import train_in_process
    from nscodec.io import export_model, load_model
    from nscodec_configs.codecnerf_configs import codecnerf_trainer_config

    torch.manual_seed(0)
    cfg = codecnerf_trainer_config("codecnerf-scratch", mode="scratch", max_steps=8, occupancy_resolution=32, occupancy_warmup=4)
    _, trainer, _ = train_in_process(scene, tmp_path, steps=8, rays=256, progress=False, trainer_config=cfg)
    model = trainer.pipeline.model
    assert model.finalized
    path = tmp_path / "scratch.nsc"
    export_model(model, path)
    dec, nsc = load_model(path)
    assert "codec_ref" not in nsc.sections
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.get_outputs(rays(128, seed=0))["rgb"], dec.get_outputs(rays(128, seed=0))["rgb"])


@pytest.mark.slow
def test_ns_export_and_ns_eval_report_compressed_bytes(finetuned):
    """`ns-export compressed` and `ns-eval` (stock scripts) on the finetuned run, offline."""
    config_yml, trainer, work = finetuned
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out_dir = work / "export"
    r = subprocess.run([str(shared_path("tools/offline")), str(BIN / "ns-export"), "compressed", "--load-config", str(config_yml), "--output-dir", str(out_dir)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    files = list(out_dir.glob("*.nsc"))
    assert len(files) == 1
    out = work / "ns_eval.json"
    r = subprocess.run([str(shared_path("tools/offline")), str(BIN / "ns-eval"), "--load-config", str(config_yml), "--output-path", str(out)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())["results"]
    from nscodec.io import load_model

    assert res["compressed_bytes"] == os.path.getsize(files[0])  # exactly the file ns-export wrote
    dec, _ = load_model(files[0])
    model = trainer.pipeline.model
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.get_outputs(rays(128, seed=0))["rgb"], dec.get_outputs(rays(128, seed=0))["rgb"])
