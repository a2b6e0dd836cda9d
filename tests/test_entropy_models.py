"""Quantization, FactorizedPrior, MaskedFactorizedPrior and IntegerCDFTable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nscodec.coding.cdf_tables import IntegerCDFTable, encode_varints, zigzag_encode
from nscodec.coding.coders import get_coder
from nscodec.coding.entropy_models import FactorizedPrior, MaskedFactorizedPrior
from nscodec.errors import NscError, NscFormatError
from nscodec.coding.quantization import quantize, to_symbols


@pytest.fixture(autouse=True)
def _seed_and_single_thread():
    # tiny models: intra-op threading only adds overhead (and contention on small CI machines)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)


def _train(prior: FactorizedPrior, y: torch.Tensor, steps: int, aux_steps_per_step: int = 1):
    main = torch.optim.Adam([p for n, p in prior.named_parameters() if n != "quantiles"], lr=2e-2)
    aux = torch.optim.Adam([prior.quantiles], lr=0.2)
    rates = []
    for _ in range(steps):
        _, lik = prior(y, "noise")
        rate = prior.rate_bits(lik) / y.numel()
        main.zero_grad()
        rate.backward()
        main.step()
        for _ in range(aux_steps_per_step):
            loss = prior.aux_loss()
            aux.zero_grad()
            loss.backward()
            aux.step()
        rates.append(rate.item())
    return rates


# ---------------------------------------------------------------------------------------------------------
# quantization
# ---------------------------------------------------------------------------------------------------------
def test_quantize_modes():
    x = torch.randn(1000) * 5
    noisy = quantize(x, "noise")
    assert torch.all((noisy - x).abs() <= 0.5) and not torch.equal(noisy, torch.round(noisy))
    assert torch.equal(quantize(x, "round"), torch.round(x))
    off = torch.tensor(0.25)
    assert torch.equal(quantize(x, "round", off), torch.round(x - 0.25) + 0.25)
    sym = to_symbols(x, off)
    assert sym.dtype == torch.int32
    assert torch.equal(quantize(sym, "dequantize", off), torch.round(x - 0.25) + 0.25)
    with pytest.raises(NscError, match="unknown quantization mode"):
        quantize(x, "floor")


def test_ste_has_identity_gradient_and_round_has_none():
    x = (torch.randn(50) * 3).requires_grad_()
    y = quantize(x, "ste")
    assert torch.equal(y, torch.round(x.detach()))
    (y * torch.arange(50.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(50.0))
    assert not quantize(x, "round").requires_grad


def test_to_symbols_rejects_nonfinite_and_int32_overflow():
    with pytest.raises(NscError, match="NaN or infinite"):
        to_symbols(torch.tensor([0.0, float("nan")]))
    with pytest.raises(NscError, match="int32"):
        to_symbols(torch.tensor([3e9]))


# ---------------------------------------------------------------------------------------------------------
# FactorizedPrior
# ---------------------------------------------------------------------------------------------------------
def test_likelihoods_sum_to_one_over_integer_support():
    prior = FactorizedPrior(3)
    k = torch.arange(-400, 401, dtype=torch.float32).repeat(3, 1)
    sums = prior.likelihood(k).sum(dim=1)
    torch.testing.assert_close(sums, torch.ones(3), atol=2e-3, rtol=0)
    _train(prior, torch.randn(3, 500) * 0.7, steps=30)
    sums = prior.likelihood(k).sum(dim=1)
    torch.testing.assert_close(sums, torch.ones(3), atol=2e-3, rtol=0)


def test_likelihood_shape_range_and_channel_check():
    prior = FactorizedPrior(4)
    y = torch.randn(4, 5, 6) * 3
    lik = prior.likelihood(y)
    assert lik.shape == y.shape
    assert torch.all(lik > 0) and torch.all(lik <= 1)
    far = prior.likelihood(torch.full((4, 1), 1e6))
    assert torch.all(far >= prior.likelihood_bound)  # lower bound keeps -log2 p finite
    with pytest.raises(NscError, match="channel-first"):
        prior.likelihood(torch.randn(3, 10))
    with pytest.raises(NscError, match="mode"):
        prior(y, "bogus")


def test_rate_decreases_when_training_on_peaked_data():
    prior = FactorizedPrior(2)
    y = torch.randn(2, 2000) * 0.3
    rates = _train(prior, y, steps=60)
    assert rates[-1] < 0.6 * rates[0]
    # a peaked density at sigma=0.3 needs well under 2 bits per latent
    assert rates[-1] < 2.0


def test_gradients_flow_in_noise_and_ste_modes():
    prior = FactorizedPrior(2)
    for mode in ("noise", "ste", "mixed"):
        y = (torch.randn(2, 100) * 2).requires_grad_()
        y_hat, lik = prior(y, mode)
        distortion = ((y_hat - 1.0) ** 2).sum()
        (distortion + prior.rate_bits(lik)).backward()
        assert y.grad is not None and torch.all(torch.isfinite(y.grad)) and y.grad.abs().sum() > 0, mode
        assert prior.matrices[0].grad is not None and prior.matrices[0].grad.abs().sum() > 0, mode
        prior.zero_grad()
    y = torch.randn(2, 100, requires_grad=True)
    y_hat, _ = prior(y, "round")
    assert not y_hat.requires_grad and torch.equal(y_hat, torch.round(y.detach()))
    y_hat, _ = prior(y, "ste")
    assert torch.equal(y_hat, torch.round(y.detach()))


def test_aux_loss_learns_support_and_table_covers_data():
    prior = FactorizedPrior(2)
    y = torch.randn(2, 2000) * torch.tensor([[1.0], [4.0]])
    _train(prior, y, steps=200, aux_steps_per_step=2)
    table = prior.build_cdf_table(precision=16)
    sym = torch.round(y).to(torch.int64).numpy()
    ch = np.repeat(np.arange(2), 2000)
    _, is_escape, _ = table.map_symbols(sym.reshape(-1), ch)
    assert is_escape.mean() < 0.01
    # the escape entry only carries the (tiny) tail mass
    assert np.all(table.pmf[np.arange(2), table.lengths - 1] < 2**16 * 1e-3)
    # the wider channel gets the wider support
    assert table.lengths[1] > table.lengths[0]


def test_exported_table_matches_training_rate_and_roundtrips():
    prior = FactorizedPrior(3)
    y = torch.randn(3, 8, 8) * torch.tensor([0.5, 1.5, 3.0]).view(3, 1, 1)
    _train(prior, y, steps=80)
    sym = to_symbols(y).numpy()
    table = prior.build_cdf_table(precision=16, symbols=sym)
    for c in range(3):  # support narrowed/widened to the actual symbol range
        assert table.offsets[c] == sym[c].min()
        assert table.offsets[c] + table.lengths[c] - 2 == sym[c].max()
    ch = np.repeat(np.arange(3), 64)
    ideal = table.estimated_bits(sym.reshape(-1), ch)
    with torch.no_grad():
        _, lik = prior(torch.as_tensor(sym, dtype=torch.float32), "round")
        train_bits = prior.rate_bits(lik).item()
    assert abs(ideal - train_bits) <= 0.01 * train_bits + 2  # integer quantization costs ~nothing
    coder = get_coder("ans")
    np.testing.assert_array_equal(coder.decode(coder.encode(sym.reshape(-1), ch, table), ch, table), sym.reshape(-1))


def test_build_cdf_table_caps_support_and_escapes_outliers():
    prior = FactorizedPrior(2)
    sym = np.zeros((2, 100), dtype=np.int64)
    sym[0, 0] = 10**6
    sym[1, :] = np.arange(-50, 50)
    table = prior.build_cdf_table(precision=16, symbols=sym, max_support=64)
    assert table.lengths.max() <= 65
    _, is_escape, _ = table.map_symbols(sym.reshape(-1), np.repeat(np.arange(2), 100))
    assert is_escape[0] and is_escape.sum() == 1 + (100 - 64)
    coder = get_coder("ans")
    ch = np.repeat(np.arange(2), 100)
    np.testing.assert_array_equal(coder.decode(coder.encode(sym.reshape(-1), ch, table), ch, table), sym.reshape(-1))
    with pytest.raises(NscError, match="integers"):
        prior.build_cdf_table(symbols=np.full((2, 3), 0.5))
    with pytest.raises(NscError, match=r"\[C=2"):
        prior.build_cdf_table(symbols=np.zeros((3, 3), dtype=np.int64))


# ---------------------------------------------------------------------------------------------------------
# MaskedFactorizedPrior
# ---------------------------------------------------------------------------------------------------------
def test_closed_mask_gives_exactly_zero_latent_rate():
    model = MaskedFactorizedPrior(3, 4, 5)
    with torch.no_grad():
        model.mask_logits.fill_(-5.0)
    y = torch.randn(3, 4, 5) * 10
    y_masked, rate, info = model(y, stochastic=False)
    assert info["latent_bits"].item() == 0.0
    assert torch.count_nonzero(y_masked) == 0
    assert rate.item() == pytest.approx(info["mask_bits"].item())


def test_lowering_logits_lowers_rate():
    model = MaskedFactorizedPrior(2, 6, 6)  # neutral mask prior: every mask entry costs 1 bit either way
    y = torch.randn(2, 6, 6) * 4
    rates, latent = [], []
    for n_closed in (0, 10, 30, 72):
        with torch.no_grad():
            logits = torch.full((72,), 3.0)
            logits[:n_closed] = -3.0
            model.mask_logits.copy_(logits.view(2, 6, 6))
        _, rate, info = model(y, stochastic=False)
        rates.append(rate.item())
        latent.append(info["latent_bits"].item())
    assert all(a > b for a, b in zip(rates, rates[1:]))
    assert all(a > b for a, b in zip(latent, latent[1:])) and latent[-1] == 0.0


def test_hard_mask_is_binary_with_straight_through_gradient():
    model = MaskedFactorizedPrior(2, 8, 8, init_mask_logit=0.0)
    model.train()
    y = torch.randn(2, 8, 8)
    y_masked, rate, info = model(y, tau=0.5)
    mask = info["mask"]
    assert set(torch.unique(mask.detach()).tolist()) <= {0.0, 1.0}
    assert 0 < mask.detach().sum() < mask.numel()  # logits 0: both states occur
    rate.backward()
    assert model.mask_logits.grad is not None and model.mask_logits.grad.abs().sum() > 0
    assert model.mask_prior_logits.grad is not None
    soft = model.sample_mask(tau=1.0, hard=False)
    assert torch.all((soft > 0) & (soft < 1))
    with pytest.raises(NscError, match="tau"):
        model.sample_mask(tau=0.0)
    with pytest.raises(NscError, match=r"\[2, 8, 8\]"):
        model(torch.randn(2, 8, 7))


def test_masked_table_ignores_masked_out_symbols():
    model = MaskedFactorizedPrior(1, 2, 2)
    with torch.no_grad():
        model.mask_logits.copy_(torch.tensor([[[1.0, 1.0], [1.0, -1.0]]]))
    sym = np.array([[[0, 1], [-1, 10**6]]])
    table = model.build_cdf_table(sym)
    assert table.offsets[0] == -1 and table.lengths[0] == 4  # {-1, 0, 1} + escape; 1e6 is masked out
    mask_table = model.mask_cdf_table()
    assert mask_table.lengths.tolist() == [3] and mask_table.pmf.sum() == 2**16


def test_mask_table_from_the_coded_mask_codes_an_open_channel_in_almost_no_bytes():
    """With the coded mask given, the table holds each channel's open fraction: an all-open channel (a model
    trained without the mask) costs ~0 bits instead of the learned prior's -log2 sigmoid(a) per entry, and a mixed
    channel still round-trips exactly."""
    from nscodec.coding.tensor_codec import decode_section, entropy_section

    model = MaskedFactorizedPrior(2, 64, 64)  # neutral learned prior: 1 bit per entry
    rng = np.random.default_rng(0)
    mask = np.ones((2, 64, 64), dtype=np.int32)
    mask[1] = rng.random((64, 64)) < 0.3  # channel 1: 30% open
    learned = entropy_section("m", mask, model.mask_cdf_table())
    empirical = entropy_section("m", mask, model.mask_cdf_table(mask=mask))
    assert np.array_equal(decode_section(empirical), mask)
    ideal_ch1 = 64 * 64 * -(0.3 * np.log2(0.3) + 0.7 * np.log2(0.7)) / 8  # bytes, the binary entropy of channel 1
    assert len(learned.payload) > 2 * 64 * 64 / 8  # 1 bit per entry
    assert len(empirical.payload) < 1.1 * ideal_ch1 + 64, (len(empirical.payload), ideal_ch1)
    with pytest.raises(NscError, match=r"\[2, 64, 64\]"):
        model.mask_cdf_table(mask=mask[:, :32])


# ---------------------------------------------------------------------------------------------------------
# IntegerCDFTable
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("precision", [12, 16, 24])
def test_from_probabilities_sums_exactly_and_has_no_zero_entries(precision):
    rng = np.random.default_rng(precision)
    C, L = 6, 300
    probs = rng.random((C, L)) ** 8
    probs[0, :100] = 0.0  # exact zeros
    probs[1] = 1e-30
    probs[1, 5] = 1.0  # one dominant symbol
    probs[2, :] = 1.0  # uniform
    lengths = np.array([L, L, L, 2, 50, 299])
    table = IntegerCDFTable.from_probabilities(probs, lengths, np.arange(C) - 3, precision)
    for c in range(C):
        used = table.pmf[c, : lengths[c]]
        assert used.sum() == 2**precision
        assert used.min() >= 1
        assert np.all(table.pmf[c, lengths[c]:] == 0)
    cdf = table.cdf()
    assert cdf.shape == (C, table.max_length + 1) and np.all(cdf[:, -1] == 2**precision)
    again = IntegerCDFTable.from_probabilities(probs, lengths, np.arange(C) - 3, precision)
    assert again == table  # deterministic


def test_from_probabilities_is_close_to_the_float_distribution():
    rng = np.random.default_rng(11)
    p = rng.random((1, 200)) ** 3
    p /= p.sum()
    table = IntegerCDFTable.from_probabilities(p, [200], [0], 16)
    q = table.pmf[0] / 2.0**16
    kl_bits = float(np.sum(p[0] * np.log2(p[0] / q)))
    assert kl_bits < 1e-3


def test_from_probabilities_rejects_bad_input():
    with pytest.raises(NscError, match="finite"):
        IntegerCDFTable.from_probabilities(np.array([[0.5, np.nan]]), [2], [0], 16)
    with pytest.raises(NscError, match="sum to zero"):
        IntegerCDFTable.from_probabilities(np.zeros((1, 4)), [4], [0], 16)
    with pytest.raises(NscError, match="lengths"):
        IntegerCDFTable.from_probabilities(np.ones((1, 5000)), [5000], [0], 12)
    with pytest.raises(NscError, match="precision"):
        IntegerCDFTable.from_probabilities(np.ones((1, 4)), [4], [0], 8)


def test_table_constructor_validates_invariants():
    ok = dict(precision=12, offsets=np.array([0]), pmf=np.array([[4000, 96]]), lengths=np.array([2]))
    IntegerCDFTable(**ok)
    with pytest.raises(NscError, match="sum to 4095"):
        IntegerCDFTable(**{**ok, "pmf": np.array([[4000, 95]])})
    with pytest.raises(NscError, match="zero-probability"):
        IntegerCDFTable(**{**ok, "pmf": np.array([[4096, 0]])})
    with pytest.raises(NscError, match="padding"):
        IntegerCDFTable(**{**ok, "pmf": np.array([[4000, 95, 1]])})


def test_serialization_roundtrip_and_compactness():
    rng = np.random.default_rng(12)
    C = 20
    lengths = rng.integers(2, 100, C)
    table = IntegerCDFTable.from_probabilities(rng.random((C, 100)), lengths, rng.integers(-10**6, 10**6, C), 16)
    data = table.to_bytes()
    assert IntegerCDFTable.from_bytes(data) == table
    assert len(data) < 3 * int(lengths.sum()) + 16 * C  # compact: a few bytes per entry


def test_from_bytes_rejects_garbage():
    table = IntegerCDFTable.from_probabilities(np.ones((3, 10)), [10, 5, 7], [0, -2, 4], 16)
    data = table.to_bytes()
    bad_inputs = [
        b"",
        b"NC",
        b"XX" + data[2:],  # magic
        data[:2] + b"\x07" + data[3:],  # version
        data[:3] + b"\x05" + data[4:],  # precision
        data[:-1],  # truncated
        data + b"\x00",  # trailing
    ]
    rng = np.random.default_rng(13)
    bad_inputs += [b"NC\x01\x10" + rng.integers(0, 256, 40, dtype=np.uint8).tobytes() for _ in range(20)]
    for bad in bad_inputs:
        with pytest.raises(NscFormatError):
            IntegerCDFTable.from_bytes(bad)
    # frequencies that overflow 2**precision are caught, not silently renormalized
    head = b"NC\x01\x10" + encode_varints([1]) + encode_varints(zigzag_encode(np.array([0]))) + encode_varints([3])
    IntegerCDFTable.from_bytes(head + encode_varints([29999, 29999]))  # 30000 + 30000 + 5536 = 2**16: valid
    with pytest.raises(NscFormatError, match="exceed"):
        IntegerCDFTable.from_bytes(head + encode_varints([39999, 39999]))


def test_the_priors_code_their_own_sections_and_read_them_back():
    """encode_section / decode_section (CompressAI's compress / decompress): rounded values in, the same integers
    out, with the table in the section; the masked model codes the mask and the open latents."""
    import numpy as np

    from nscodec.coding.container import read_nsc, write_nsc
    from nscodec.coding.entropy_models import FactorizedPrior, MaskedFactorizedPrior
    from nscodec.errors import NscFormatError

    torch.manual_seed(0)
    y = torch.randn(3, 50) * 4
    prior = FactorizedPrior(3)
    sec = prior.encode_section("latents", y, meta={"lod": 0})
    assert sec.coder == "ans" and sec.meta["lod"] == 0
    assert np.array_equal(FactorizedPrior.decode_section(sec, (3, 50)), torch.round(y).numpy().astype(np.int32))
    with pytest.raises(NscFormatError, match="model expects"):
        FactorizedPrior.decode_section(sec, (3, 49))
    masked = MaskedFactorizedPrior(2, 4, 5, init_mask_logit=2.0)
    with torch.no_grad():
        masked.mask_logits[0, :2] = -5.0  # a closed row
    z = torch.randn(2, 4, 5) * 3
    mask_sec, lat_sec = masked.encode_sections("density", z)
    assert (mask_sec.name, lat_sec.name) == ("mask.density", "latents.density")
    sym, mask = MaskedFactorizedPrior.decode_sections(mask_sec, lat_sec, (2, 4, 5))
    want = masked.deterministic_mask().numpy() > 0
    assert np.array_equal(mask, want) and not mask[0, :2].any()
    assert np.array_equal(sym[mask], torch.round(z).numpy().astype(np.int32)[mask]) and not sym[~mask].any()
