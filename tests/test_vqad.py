"""VQ-AD: straight-through VQ, LOD sampling, index coding (entropy and bit-packed), the vertex mask, post-hoc
k-means. Training → export → decode and LOD prefixes are checked for every codec in ``tests/test_conformance.py``."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from tests.helpers import rays

from nscodec.vqad.grid import MultiLevelVQGrid, lod_probabilities, straight_through_vq, vertex_mask
from nscodec.vqad.model import pack_bits, unpack_bits


def test_straight_through_forward_is_hard_codeword_and_backward_is_softmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 16, generator=g, requires_grad=True)
    book = torch.randn(16, 8, generator=g, requires_grad=True)
    out = straight_through_vq(logits, book)
    assert torch.equal(out, book[logits.argmax(-1)])  # bitwise: Eq. 8 forward
    up = torch.randn(50, 8, generator=g)
    (out * up).sum().backward()
    ref_l = logits.detach().clone().requires_grad_(True)
    ref_b = book.detach().clone().requires_grad_(True)
    ((torch.softmax(ref_l, -1) @ ref_b) * up).sum().backward()  # Eq. 9
    torch.testing.assert_close(logits.grad, ref_l.grad)
    torch.testing.assert_close(book.grad, ref_b.grad)
    assert logits.grad.abs().sum() > 0


def test_fused_grid_lookup_matches_dense_softmax_reference():
    """The grid's fused trilinear VQ lookup: hard forward, and sparse gradients equal to those of the dense
    soft lookup ``interp(x, softmax(C) D)``."""
    torch.manual_seed(0)
    grid = MultiLevelVQGrid([2, 4], feature_dim=4, mode="vq", bits=2, init_std=0.5)
    x = torch.rand(64, 3)
    out = grid(x, 1)
    hard = sum(_dense_interp(x, grid.codebooks[lv][grid.tables[lv].argmax(-1)], grid.resolutions[lv]) for lv in range(2))
    torch.testing.assert_close(out, hard, rtol=0, atol=1e-6)
    up = torch.randn(64, 4)
    (out * up).sum().backward()
    refs = [t.detach().clone().requires_grad_(True) for t in grid.tables]
    books = [b.detach().clone().requires_grad_(True) for b in grid.codebooks]
    soft = sum(_dense_interp(x, torch.softmax(refs[lv], -1) @ books[lv], grid.resolutions[lv]) for lv in range(2))
    (soft * up).sum().backward()
    for lv in range(2):
        assert grid.tables[lv].grad.is_sparse
        torch.testing.assert_close(grid.tables[lv].grad.to_dense(), refs[lv].grad, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(grid.codebooks[lv].grad, books[lv].grad, rtol=1e-4, atol=1e-6)


def _dense_interp(x, vertex_feats, res):
    """Reference trilinear interpolation of ``[(res+1)^3, k]`` vertex features with grid_sample."""
    k = vertex_feats.shape[1]
    vol = vertex_feats.t().reshape(1, k, res + 1, res + 1, res + 1)  # [1, k, X, Y, Z] (x-major)
    coords = (x * 2 - 1).flip(-1).view(1, -1, 1, 1, 3)  # grid_sample wants (z, y, x) → (W, H, D) order
    return torch.nn.functional.grid_sample(vol, coords, align_corners=True).view(k, -1).t()


def test_lod_sampling_finer_twice_as_likely():
    p = lod_probabilities(4)
    torch.testing.assert_close(p, torch.tensor([1, 2, 4, 8], dtype=torch.float64) / 15)
    assert torch.allclose(p[1:] / p[:-1], torch.full((3,), 2.0, dtype=torch.float64))
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.vqad.model import VQADModelConfig

    model = VQADModelConfig(base_resolution=2, num_levels=4, occupancy_resolution=8).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1
    )
    torch.manual_seed(0)
    counts = np.bincount([model.sample_lod() for _ in range(2000)], minlength=4) / 2000
    assert np.abs(counts - p.numpy()).max() < 0.035, counts  # ~3.5 sigma of the largest binomial std
    with pytest.raises(ValueError):
        lod_probabilities(0)


def test_a_grid_no_decoder_would_open_is_refused_before_training_and_before_writing(tmp_path):
    """b = 7 at the preset's 129³ finest vertices is a 2^7-logit table per vertex (315M values): past the decoder's
    limit. Training refuses it at once; a model whose config was changed afterwards is not written either."""
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.errors import NscError
    from nscodec.io import export_model
    from nscodec.vqad.model import VQADModelConfig

    box = SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3]))
    with pytest.raises(ValueError, match="exceeds 268,435,456"):
        VQADModelConfig(bits=7).setup(scene_box=box, num_train_data=1)
    model = VQADModelConfig(base_resolution=4, num_levels=2, occupancy_resolution=8, bits=2).setup(scene_box=box, num_train_data=1)
    model.config.base_resolution = 256  # e.g. an edited config: the finest level would be 512 cells
    with pytest.raises(NscError, match="no decoder would open.*grid vertices"):
        export_model(model, tmp_path / "x.nsc")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bits", [1, 2, 4, 6])
def test_indices_round_trip_entropy_coder_and_bitpacking(bits):
    from nscodec.coding.posthoc import histogram_table
    from nscodec.coding.tensor_codec import decode_section, entropy_section

    rng = np.random.default_rng(bits)
    probs = rng.dirichlet(np.ones(1 << bits) * 0.5)
    sym = rng.choice(1 << bits, size=5000, p=probs).astype(np.int32)
    sec = entropy_section("idx", sym[None, :], histogram_table(sym))
    assert np.array_equal(decode_section(sec).reshape(-1), sym)
    packed = pack_bits(sym, bits)
    assert packed.size == (sym.size * bits + 7) // 8
    assert np.array_equal(unpack_bits(packed, bits, sym.size), sym)
    if bits >= 2:  # skewed histogram: ANS beats raw b-bit storage
        assert len(sec.payload) < packed.size


def test_vertex_mask_covers_every_vertex_a_sample_reads():
    occ = torch.zeros(16, 16, 16, dtype=torch.bool)
    occ[3:6, 8:12, 1:4] = True
    for res in (4, 8, 16, 32):
        mask = vertex_mask(occ, res)
        cells = occ.nonzero().float()
        pts = (cells[:, None, :] + torch.rand(len(cells), 20, 3)).reshape(-1, 3) / 16  # points in occupied cells
        i0 = (pts * res).floor().clamp(0, res - 1).long()
        for off in [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]:
            v = i0 + torch.tensor(off)
            assert mask[(v[:, 0] * (res + 1) + v[:, 1]) * (res + 1) + v[:, 2]].all()
        assert mask.float().mean() < 0.9


# ------------------------------------------------------------------------------------------- trained model
@pytest.fixture(scope="module")
def trained_vqad(scene, tmp_path_factory):
    from nscodec.tools.demo import train_in_process
    from nscodec_configs.vqad_configs import vqad_trainer_config

    work = tmp_path_factory.mktemp("vqad")
    torch.manual_seed(0)
    steps = 40
    config_yml, trainer, _ = train_in_process(
        scene, work, steps=steps, rays=512, progress=False, trainer_config=vqad_trainer_config(max_steps=steps),
        base_resolution=8, num_levels=3, occupancy_resolution=32, occupancy_warmup=10, occupancy_update_every=10,
    )
    return config_yml, trainer, work


def test_raw_index_coding_and_bad_files(trained_vqad):
    from nscodec.errors import NscFormatError
    from nscodec.io import export_model, load_model

    _, trainer, work = trained_vqad
    model = trainer.pipeline.model
    model.eval()
    model.config.index_coding = "raw"
    try:
        raw_path = work / "raw.nsc"
        export_model(model, raw_path)
    finally:
        model.config.index_coding = "entropy"
    decoded, _ = load_model(raw_path)
    rb = rays(128, seed=3)
    with torch.no_grad():
        assert torch.equal(decoded.get_outputs(rb)["rgb"], model.get_outputs(rb)["rgb"])
    export_model(model, work / "scene.nsc", overwrite=True)
    data = (work / "scene.nsc").read_bytes()
    from nscodec.coding.lod import lod_table
    from nscodec.coding.container import read_nsc

    lod0 = lod_table(read_nsc(data))[0]["bytes"]
    with pytest.raises(NscFormatError):
        load_model(data[: lod0 - 1])  # not even the coarsest level
    with pytest.raises(NscFormatError):
        load_model(data[:100])
    bad = bytearray(data)
    bad[-5] ^= 0xFF  # corrupt the finest level's payload (CRC)
    with pytest.raises(NscFormatError):
        load_model(bytes(bad))


def test_posthoc_kmeans_of_a_float_grid():
    """The kmVQ baseline: k-means per level of a float grid, exportable as a vq model."""
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.io import export_model, load_model
    from nscodec.vqad.model import VQADModelConfig, posthoc_kmeans_model

    torch.manual_seed(0)
    fm = VQADModelConfig(grid_mode="float", base_resolution=4, num_levels=2, occupancy_resolution=8, init_std=0.5).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=1
    )
    fm.occupancy.occupied.zero_()
    fm.occupancy.occupied[2:5, 2:5, 2:5] = True
    fm.occupancy.num_updates.fill_(1)
    fm.finalize()  # as the last training step does
    vq = posthoc_kmeans_model(fm, bits=2)
    for lv, mask in enumerate(fm.level_masks()):
        feats = fm.grid.tables[lv].detach()[mask]
        q = vq.grid.codebooks[lv][vq.grid.hard_indices(lv)[mask]]
        assert torch.equal(torch.cdist(feats, vq.grid.codebooks[lv]).argmin(-1), vq.grid.hard_indices(lv)[mask])
        assert ((feats - q) ** 2).sum(-1).mean() < (feats - feats.mean(0)).pow(2).sum(-1).mean()
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        export_model(vq, Path(tmp) / "km.nsc")
        dec, _ = load_model(Path(tmp) / "km.nsc")
        export_model(fm, Path(tmp) / "float.nsc")
        dec_f, _ = load_model(Path(tmp) / "float.nsc")
    rb = rays(64, seed=4)
    rb.origins = rb.origins * 0 + torch.tensor([0.0, -3.0, 0.0])
    with torch.no_grad():
        assert torch.equal(dec.get_outputs(rb)["rgb"], vq.get_outputs(rb)["rgb"])
        assert torch.equal(dec_f.get_outputs(rb)["rgb"], fm.eval().get_outputs(rb)["rgb"])
