"""Post-hoc baselines of the uncompressed base (issue 3): every scheme writes a real .nsc that decodes to what
the scheme promises, and k-means VQ clusters."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nscodec.errors import NscError, NscFormatError
from nscodec.coding.posthoc import kmeans_quantize


def test_kmeans_recovers_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 5)).astype(np.float32) * 10
    labels = rng.integers(0, 8, 4000)
    x = centres[labels] + 0.01 * rng.normal(size=(4000, 5)).astype(np.float32)
    codebook, idx = kmeans_quantize(x, 8, iters=30)
    assert codebook.shape == (8, 5) and idx.shape == (4000,) and idx.dtype == np.int32
    err = np.abs(codebook[idx] - x).max()
    assert err < 0.1, err  # every point sits next to its own centre: no two clusters merged
    a, b = kmeans_quantize(x, 8, iters=30)
    assert np.array_equal(a, codebook) and np.array_equal(b, idx)  # deterministic for a seed
    with pytest.raises(NscError):
        kmeans_quantize(x, 0)
    with pytest.raises(NscError):
        kmeans_quantize(x[:, :, None], 2)


def _model(scheme: str, bits: int = 8):
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.tensorf.model import NscTensoRFModelConfig

    torch.manual_seed(0)
    cfg = NscTensoRFModelConfig(init_resolution=20, final_resolution=20, codec_scheme=scheme, codec_bits=bits)
    m = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=1, metadata={})
    with torch.no_grad():  # structured planes (smooth + noise), not a constant init
        for t in m.vm_tensors().values():
            t.copy_(torch.randn_like(t) * 0.2 + torch.linspace(-1, 1, t.shape[-2])[:, None])
    return m


@pytest.mark.parametrize("scheme,bits", [("fp32", 0), ("fp16-zstd", 0), ("uniform", 8), ("uniform", 4), ("kmeans", 6)])
def test_scheme_round_trip(tmp_path, scheme, bits):
    from nscodec.io import export_model, load_model

    m = _model(scheme, bits or 8)
    path = tmp_path / f"{scheme}{bits}.nsc"
    size = export_model(m, path)
    dec, nsc = load_model(path)
    assert nsc.total_bytes == size == path.stat().st_size
    for name, ref in m.vm_tensors().items():
        got = dec.vm_tensors()[name].detach()
        ref = ref.detach()
        assert got.shape == ref.shape
        if scheme == "fp32":
            assert torch.equal(got, ref), name
        elif scheme == "fp16-zstd":
            assert torch.equal(got, ref.half().float()), name
        elif scheme == "uniform":
            span = (ref.amax(dim=(2, 3)) - ref.amin(dim=(2, 3)))[..., None, None]
            assert ((got - ref).abs() <= span / (2 ** bits - 1) / 2 + 1e-6).all(), name
        else:  # kmeans: every decoded vector is one of 2**bits codewords
            vec = got.moveaxis(1, -1).reshape(-1, got.shape[1])
            assert torch.unique(vec, dim=0).shape[0] <= 2 ** bits
            assert (got - ref).pow(2).mean() < ref.pow(2).mean()  # better than all-zeros


def test_scheme_sizes_are_ordered(tmp_path):
    from nscodec.io import compressed_size

    sizes = {f"{s}{b}": compressed_size(_model(s, b)) for s, b in [("fp32", 8), ("fp16-zstd", 8), ("uniform", 8), ("uniform", 4)]}
    assert sizes["fp328"] > sizes["fp16-zstd8"] > sizes["uniform8"] > sizes["uniform4"] > 0


def test_kmeans_file_with_out_of_range_index_is_rejected(tmp_path):
    from nscodec.coding.container import read_nsc, write_nsc
    from nscodec.coding.tensor_codec import raw_section
    from nscodec.io import export_model, load_model

    m = _model("kmeans", 2)
    path = tmp_path / "k.nsc"
    export_model(m, path)
    f = read_nsc(path)
    secs = [raw_section(n, np.zeros((1, 5), np.float16)) if n == "density.planes.codebook" else s for n, s in f.sections.items()]
    bad = tmp_path / "bad.nsc"
    write_nsc(bad, f.method, f.config, secs, meta=f.meta)
    with pytest.raises(NscFormatError, match="density.planes"):
        load_model(bad)


def test_pow2_quantizer_error_bound_and_idempotence():
    from nscodec.coding.posthoc import pow2_dequantize, pow2_quantize

    rng = np.random.default_rng(1)
    x = (rng.normal(size=(6, 40)) * np.array([1e-3, 0.1, 1, 10, 300, 0])[:, None]).astype(np.float32)
    for bits in (4, 8):
        sym, exp = pow2_quantize(x, bits, channels=6)
        assert sym.shape == x.shape and exp.shape == (6,)
        qmax = 2 ** (bits - 1) - 1
        assert np.abs(sym).max() <= qmax
        step = np.ldexp(1.0, exp)
        amax = np.abs(x).max(1)
        nz = amax > 0
        assert (amax[nz] / step[nz] <= qmax).all() and (amax[nz] / step[nz] > qmax / 2).all()  # smallest 2^k step
        y = pow2_dequantize(sym, exp)
        assert (np.abs(y - x) <= step[:, None] / 2).all()
        assert (y[5] == 0).all()  # an all-zero channel stays zero
        sym2, exp2 = pow2_quantize(y, bits, channels=6)
        assert np.array_equal(pow2_dequantize(sym2, exp2), y)  # re-quantizing is exact (bit for bit)
    with pytest.raises(NscError):
        pow2_quantize(x, 1, 6)
    with pytest.raises(NscError):
        pow2_quantize(x, 8, 7)
    with pytest.raises(NscError):
        pow2_quantize(np.array([[np.nan, 1.0]]), 8, 1)


def test_quantized_dense_sections_decode_to_the_in_place_quantized_model(tmp_path):
    from nscodec.coding.container import read_nsc, write_nsc
    from nscodec.coding.sections import dense_sections, load_dense_sections, quantize_dense_

    torch.manual_seed(0)
    mods = {"mlp": torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)),
            "lines": torch.nn.ParameterDict({"d": torch.nn.Parameter(torch.randn(3, 5, 50, 1) * torch.arange(1, 6)[:, None, None])})}
    before = {n: p.detach().clone() for m in mods.values() for n, p in m.named_parameters()}
    quantize_dense_(mods, 6, {"lines": 2})
    after = {n: p.detach().clone() for m in mods.values() for n, p in m.named_parameters()}
    assert not torch.equal(after["0.weight"], before["0.weight"])  # weights really moved onto the grid
    assert torch.equal(after["0.bias"], before["0.bias"].half().float())  # biases: float16
    # per-(plane, component) steps for the lines: the small component keeps a small step
    assert (after["d"][:, 0] - before["d"][:, 0]).abs().max() < (after["d"][:, 4] - before["d"][:, 4]).abs().max()
    raw = sum(p.numel() * 2 for m in mods.values() for p in m.parameters())
    secs = dense_sections(mods, bits=6, channel_dims={"lines": 2})
    assert sum(len(s.payload) for s in secs) < 0.5 * raw  # 6-bit + entropy coding vs float16
    write_nsc(tmp_path / "d.nsc", "test", {}, secs)
    fresh = {"mlp": torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 3)),
             "lines": torch.nn.ParameterDict({"d": torch.nn.Parameter(torch.zeros(3, 5, 50, 1))})}
    load_dense_sections(fresh, read_nsc(tmp_path / "d.nsc"))
    for n, p in ((n, p) for m in fresh.values() for n, p in m.named_parameters()):
        assert torch.equal(p.detach(), after[n]), n  # lossless after the in-place quantization
    bad = [s if s.name != "mlp.0.weight" else type(s)(s.name, s.payload, s.dtype, s.shape, s.coder, {**s.meta, "exp": "x"}) for s in secs]
    write_nsc(tmp_path / "bad.nsc", "test", {}, bad)
    with pytest.raises(NscFormatError, match="mlp.0.weight"):
        load_dense_sections(fresh, read_nsc(tmp_path / "bad.nsc"))
