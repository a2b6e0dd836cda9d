"""SHACIRA: soft rounding (Eq. 4), self-information loss (Eq. 5), hash encoding vs nerfstudio's, LOD prefixes of a
crafted model, the fp32 baseline, malformed files. Training → export → decode is checked for every codec in
``tests/test_conformance.py``."""

from __future__ import annotations

import os

import pytest
import torch

from tests.helpers import rays

from nscodec.errors import NscError, NscFormatError
from nscodec.coding.quantization import annealed_temperature
from nscodec.shacira.latents import discretize, soft_round

AABB = torch.tensor([[-1.5] * 3, [1.5] * 3])
TINY = dict(num_levels=4, min_res=4, max_res=24, log2_hashmap_size=10, occupancy_resolution=16, hidden_dim=16,
            hidden_dim_color=16)


# --------------------------------------------------------------------------------------------- soft rounding
def test_soft_round_stays_between_floor_and_ceil_and_has_gradients():
    torch.manual_seed(0)
    q = (torch.randn(10000) * 3).requires_grad_(True)
    for tau in (1.0, 0.3, 0.05):
        y = soft_round(q, tau)
        assert torch.all(y >= torch.floor(q) - 1e-6) and torch.all(y <= torch.ceil(q) + 1e-6)
        (g,) = torch.autograd.grad((y * torch.randn_like(y)).sum(), q)
        assert torch.isfinite(g).all() and g.abs().sum() > 0
    hard = soft_round(q, 0.5, hard=True)
    assert torch.equal(hard, torch.floor(q)) or torch.all((hard == torch.floor(q)) | (hard == torch.ceil(q)))
    with pytest.raises(NscError):
        soft_round(q, 0.0)


def test_soft_round_tends_to_rounding_as_tau_goes_to_zero():
    torch.manual_seed(0)
    frac = torch.rand(20000) * 0.8 + 0.1  # away from the 0.5 tie
    q = torch.randint(-5, 5, (20000,)).float() + frac
    err = {tau: (soft_round(q, tau) - torch.round(q)).abs().mean().item() for tau in (1.0, 0.3, 0.05, 0.01)}
    assert err[1.0] > err[0.3] > err[0.05] >= err[0.01]
    assert err[0.01] < 0.02, err
    # at high temperature values are spread inside [floor, ceil], nearer ends more likely
    near_floor = soft_round(torch.full((20000,), 2.1), 0.5)
    assert (near_floor < 2.5).float().mean() > 0.8


def test_discretize_modes_and_schedule():
    q = torch.tensor([0.2, 0.7, -1.4], requires_grad=True)
    ste = discretize(q, "ste")
    assert torch.equal(ste, torch.tensor([0.0, 1.0, -1.0]))
    (g,) = torch.autograd.grad(ste.sum(), q)
    assert torch.equal(g, torch.ones(3))  # straight-through
    assert torch.equal(discretize(q, "round"), ste.detach())
    assert annealed_temperature(0, 100, 0.5) == 1.0
    assert annealed_temperature(49, 100, 0.5) < annealed_temperature(10, 100, 0.5) < 1.0
    assert annealed_temperature(50, 100, 0.5) is None and annealed_temperature(0, 100, 0.0) is None
    with pytest.raises(NscError):
        discretize(q, "nope")


# ----------------------------------------------------------------------------------- rate and hash encoding
def test_self_information_loss_lowers_the_coded_rate():
    """Minimising Eq. 5 over the latents and the densities lowers the bits of the ANS-coded rounded latents."""
    from nscodec.coding.entropy_models import FactorizedPrior
    from nscodec.coding.tensor_codec import entropy_section

    torch.manual_seed(0)
    lat = torch.nn.Parameter(torch.randn(2, 4000) * 4)
    prior = FactorizedPrior(2)
    opt = torch.optim.Adam([lat, *prior.parameters()], lr=5e-2)

    def coded_bytes() -> int:
        sym = torch.round(lat.detach()).int().numpy()
        return len(entropy_section("x", sym, prior.build_cdf_table(symbols=sym)).payload)

    before = coded_bytes()
    for _ in range(150):
        _, lik = prior(lat, mode="noise")
        loss = FactorizedPrior.rate_bits(lik) / lat.shape[1] + prior.aux_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = coded_bytes()
    assert after < 0.6 * before, (before, after)


@pytest.mark.parametrize("dense", [False, True])
def test_hash_encoding_matches_nerfstudio_torch_path(dense):
    from nscodec.shacira.field import ShaciraHashEncoding

    torch.manual_seed(0)
    enc = ShaciraHashEncoding(num_levels=6, min_res=8, max_res=96, log2_hashmap_size=12, compress=False,
                              dense_coarse_levels=dense)
    with torch.no_grad():
        enc.table.uniform_(-1, 1)
    assert any(enc.level_dense.tolist()) == dense
    x = torch.rand(3000, 3)
    x[:10] = torch.tensor([0.0, 0.5, 1.0])  # lattice-aligned points (floor == ceil)
    ours = enc.encode(x, enc.table)
    ref = enc.reference_forward(x, enc.table)  # nerfstudio's HashEncoding.pytorch_fwd with our hash_fn
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-6)
    g1 = torch.autograd.grad(ours.square().sum(), enc.table)[0]
    g2 = torch.autograd.grad(ref.square().sum(), enc.table)[0]
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-5)
    if not dense:  # identical to stock nerfstudio (hash every level into T rows) for the same table
        from nerfstudio.field_components.encodings import HashEncoding

        stock = HashEncoding(num_levels=6, min_res=8, max_res=96, log2_hashmap_size=12, implementation="torch")
        with torch.no_grad():
            stock.hash_table.copy_(enc.table)
        torch.testing.assert_close(ours, stock(x), rtol=0, atol=1e-6)


# ------------------------------------------------------------------------------------------------ LOD files
def _random_model(compress=True):
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.shacira.model import ShaciraModelConfig

    torch.manual_seed(0)
    model = ShaciraModelConfig(compress=compress, **TINY).setup(scene_box=SceneBox(aabb=AABB), num_train_data=4)
    with torch.no_grad():
        enc = model.field.encoding
        if compress:
            enc.latents.copy_(torch.randn_like(enc.latents) * 3)
            enc.decoder.weight.mul_(20)
        else:
            enc.table.normal_(0, 1)
        model.field.mlp_base[-1].bias[0] = 1.0
        model.occupancy.num_updates.fill_(1)  # as after training (a decoded file always has a ready grid)
    model.finalize()  # as the last training step does: the model is now exactly what its file stores
    return model.eval()


def test_lod_prefixes_decode_coarser_levels(tmp_path):
    from nscodec.coding.container import read_nsc
    from nscodec.io import export_model, load_model
    from nscodec.coding.lod import available_lod, lod_table

    model = _random_model()
    path = tmp_path / "lod.nsc"
    size = export_model(model, path)
    rows = lod_table(read_nsc(path))
    assert [r["lod"] for r in rows] == [0, 1, 2, 3] and rows[-1]["bytes"] == size
    assert all(a["bytes"] < b["bytes"] for a, b in zip(rows, rows[1:]))  # coarser LOD, fewer bytes
    rb = rays()
    renders = []
    for lvl in range(4):
        dec, nsc = load_model(path, lod=lvl)
        assert nsc.available_bytes == rows[lvl]["bytes"] and available_lod(nsc) == lvl
        assert dec.lod == lvl and dec.field.lod == (None if lvl == 3 else lvl)
        model.set_lod(lvl)
        with torch.no_grad():
            ref = model.get_outputs(rb)["rgb"]
            got = dec.get_outputs(rb)["rgb"]
        assert (ref - got).abs().max().item() == 0.0, lvl
        renders.append(got)
    model.set_lod(3)
    assert not torch.equal(renders[0], renders[-1])
    # a raw byte prefix (a partial download) decodes the levels it holds completely
    data = path.read_bytes()
    dec, _ = load_model(data[: rows[1]["bytes"] + 5])
    assert dec.lod == 1
    with pytest.raises(ValueError):
        model.set_lod(7)


def test_bad_and_truncated_files_raise_format_errors(tmp_path):
    from nscodec.io import export_model, load_model
    from nscodec.coding.lod import lod_table
    from nscodec.coding.container import read_nsc

    model = _random_model()
    path = tmp_path / "m.nsc"
    export_model(model, path)
    data = path.read_bytes()
    first = lod_table(read_nsc(path))[0]["bytes"]
    with pytest.raises(NscFormatError):  # not even level 0
        load_model(data[: first - 3])
    with pytest.raises(NscFormatError):
        load_model(data[:20])
    bad = bytearray(data)
    bad[0:4] = b"XXXX"
    with pytest.raises(NscFormatError):
        load_model(bytes(bad))
    bad = bytearray(data)
    bad[-40:] = bytes(40)  # corrupt the finest level's entropy-coded payload / table
    try:
        load_model(bytes(bad))
    except NscFormatError:
        pass  # detected; a corrupted ANS stream may also decode to garbage symbols, which is not a crash


def test_uncompressed_baseline_round_trips_fp32(tmp_path):
    from nscodec.io import export_model, load_model
    from nscodec.shacira.field import fp32_table_bytes

    model = _random_model(compress=False)
    path = tmp_path / "base.nsc"
    size = export_model(model, path)
    assert size > fp32_table_bytes(model.field.encoding)
    dec, _ = load_model(path)
    rb = rays()
    with torch.no_grad():
        assert (model.get_outputs(rb)["rgb"] - dec.get_outputs(rb)["rgb"]).abs().max().item() == 0.0
    comp = _random_model(compress=True)
    assert export_model(comp, tmp_path / "c.nsc") < size
