"""Entropy coders: exact round trips, escapes, adversarial inputs, size vs ideal bits, corruption."""

from __future__ import annotations

import numpy as np
import pytest

from nscodec.coding.cdf_tables import IntegerCDFTable, decode_varints
from nscodec.coding.coders import ConstrictionCoder, TorchacCoder, available_coders, get_coder
from nscodec.errors import EntropyCodingError, NscError


def laplace_table(scales, support=30, escape_mass=1e-4, precision=16, offsets=None) -> IntegerCDFTable:
    """Discretized Laplace(0, b) table per channel over [-support, support] plus one escape entry."""
    scales = np.asarray(scales, dtype=np.float64)
    k = np.arange(-support, support + 1, dtype=np.float64)
    p = np.exp(-np.abs(k)[None, :] / scales[:, None])
    p /= p.sum(axis=1, keepdims=True)
    probs = np.concatenate([p * (1 - escape_mass), np.full((len(scales), 1), escape_mass)], axis=1)
    C = len(scales)
    offs = np.full(C, -support) if offsets is None else np.asarray(offsets)
    return IntegerCDFTable.from_probabilities(probs, np.full(C, probs.shape[1]), offs, precision)


def main_stream_bytes(data: bytes) -> int:
    """Size M of the entropy-coded main stream, read from the coder header."""
    (_, _, m), _ = decode_varints(data, 0, 3)
    return int(m)


@pytest.fixture
def coder():
    return get_coder("ans")


def test_laplacian_roundtrip_is_exact(coder):
    rng = np.random.default_rng(0)
    scales = np.array([0.3, 1.0, 2.5, 6.0])
    table = laplace_table(scales)
    ch = rng.integers(0, 4, 40_000)
    sym = np.round(rng.laplace(0.0, scales[ch])).astype(np.int32)
    data = coder.encode(sym, ch.astype(np.int32), table)
    out = coder.decode(data, ch, table)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, sym)


def test_coded_size_close_to_ideal_bits(coder):
    rng = np.random.default_rng(1)
    scales = np.array([0.5, 2.0, 4.0])
    table = laplace_table(scales)
    ch = np.repeat(np.arange(3), 50_000)
    sym = np.round(rng.laplace(0.0, scales[ch])).clip(-30, 30).astype(np.int64)
    ideal = table.estimated_bits(sym, ch)
    data = coder.encode(sym, ch, table)
    actual = 8 * main_stream_bytes(data)
    # ANS is within a constant (its final 64-bit state + word padding) of the ideal code length
    assert ideal - 64 <= actual <= ideal * 1.002 + 128
    # and the whole stream adds only the small header (no escapes here: all symbols are in range)
    assert len(data) - main_stream_bytes(data) <= 16


def test_single_repeated_symbol_costs_its_code_length(coder):
    table = laplace_table([1.0])
    sym = np.full(10_000, 3, dtype=np.int32)
    data = coder.encode(sym, np.zeros(10_000, dtype=np.int32), table)
    np.testing.assert_array_equal(coder.decode(data, np.zeros(10_000, dtype=np.int32), table), sym)
    ideal = table.estimated_bits(sym, 0)
    assert abs(8 * main_stream_bytes(data) - ideal) <= 96


@pytest.mark.parametrize(
    "values",
    [
        [10**6, -(10**6), 31, -31, 0],
        [2**31 - 1, -(2**31), 5, -5],
        [2**62, -(2**62), np.iinfo(np.int64).max, np.iinfo(np.int64).min],
    ],
)
def test_out_of_range_values_roundtrip_via_escape(coder, values):
    table = laplace_table([1.0, 3.0], support=30)
    rng = np.random.default_rng(2)
    base = np.round(rng.laplace(0.0, 1.0, 2000)).clip(-30, 30).astype(np.int64)
    pos = rng.choice(2000, len(values), replace=False)
    base[pos] = values
    ch = rng.integers(0, 2, 2000)
    data = coder.encode(base, ch, table)
    np.testing.assert_array_equal(coder.decode(data, ch, table), base)
    _, is_escape, _ = table.map_symbols(base, ch)
    assert is_escape.sum() == sum(1 for v in values if abs(v) > 30)


def test_all_symbols_escaped(coder):
    table = laplace_table([1.0])
    sym = np.arange(1000, 3000, dtype=np.int64) * (-1) ** np.arange(2000)
    data = coder.encode(sym, 0, table)
    np.testing.assert_array_equal(coder.decode(data, np.zeros(2000, dtype=np.int64), table), sym)


def test_empty_input(coder):
    table = laplace_table([1.0, 2.0])
    data = coder.encode(np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32), table)
    out = coder.decode(data, np.zeros(0, dtype=np.int32), table)
    assert out.shape == (0,) and out.dtype == np.int64


def test_many_channels_with_different_offsets_and_lengths(coder):
    rng = np.random.default_rng(3)
    C = 400
    lengths = rng.integers(2, 60, C)
    offsets = rng.integers(-50, 50, C)
    probs = rng.random((C, 60)) ** 4
    table = IntegerCDFTable.from_probabilities(probs, lengths, offsets, precision=14)
    ch = rng.integers(0, C, 20_000)
    sym = offsets[ch] + rng.integers(-3, lengths[ch] + 2)  # a few below/above range -> escapes
    data = coder.encode(sym, ch, table)
    np.testing.assert_array_equal(coder.decode(data, ch, table), sym)


@pytest.mark.parametrize("precision", [12, 16, 24])
def test_constriction_model_reproduces_table_boundaries_exactly(precision):
    """Probe constriction's decoder at every CDF boundary: its quantized model must equal the table.

    An AnsCoder built from words [q, 1] has state 2**32 + q, so the first decoded symbol is the one whose
    24-bit interval contains q. Checking q = cdf[k] and q = cdf[k] - 1 for all k pins every frequency.
    """
    import constriction

    rng = np.random.default_rng(precision)
    n = 40
    probs = rng.random((1, n)) ** 3
    table = IntegerCDFTable.from_probabilities(probs, [n], [0], precision)
    cdf24 = table.cdf()[0].astype(np.int64) << (24 - precision)
    model = ConstrictionCoder._model(table, 0)

    def first_symbol(q: int) -> int:
        ans = constriction.stream.stack.AnsCoder(np.array([q, 1], dtype=np.uint32))
        return int(ans.decode(model, 1)[0])

    for k in range(n):
        assert first_symbol(int(cdf24[k])) == k
        if k > 0:
            assert first_symbol(int(cdf24[k]) - 1) == k - 1
    assert first_symbol(2**24 - 1) == n - 1


def test_naive_float_probabilities_would_not_match_the_table():
    """Control for the probe above: passing pmf / 2**precision directly shifts the boundaries."""
    import constriction

    rng = np.random.default_rng(5)
    probs = rng.random((1, 40)) ** 3
    table = IntegerCDFTable.from_probabilities(probs, [40], [0], 16)
    naive = constriction.stream.model.Categorical(table.pmf[0] / 2.0**16, perfect=False)
    cdf24 = table.cdf()[0].astype(np.int64) << 8
    mismatches = 0
    for k in range(1, 40):
        ans = constriction.stream.stack.AnsCoder(np.array([int(cdf24[k]), 1], dtype=np.uint32))
        mismatches += int(ans.decode(naive, 1)[0]) != k
    assert mismatches > 0


def _encoded(coder):
    rng = np.random.default_rng(7)
    table = laplace_table([1.0, 2.0, 4.0])
    ch = rng.integers(0, 3, 3000)
    sym = np.round(rng.laplace(0.0, 2.0, 3000)).astype(np.int64)
    sym[:3] = [500, -500, 10**6]
    return table, ch, sym, coder.encode(sym, ch, table)


def test_truncated_or_extended_stream_raises(coder):
    table, ch, _, data = _encoded(coder)
    for bad in (data[:-1], data[: len(data) // 2], data[:3], b"", data + b"\x00"):
        with pytest.raises(EntropyCodingError):
            coder.decode(bad, ch, table)


def test_every_single_bit_flip_is_detected(coder):
    table, ch, sym, data = _encoded(coder)
    for i in range(0, 8 * len(data), 3):
        bad = bytearray(data)
        bad[i // 8] ^= 1 << (i % 8)
        with pytest.raises(EntropyCodingError):
            coder.decode(bytes(bad), ch, table)


def test_random_garbage_raises(coder):
    table, ch, _, data = _encoded(coder)
    rng = np.random.default_rng(8)
    for _ in range(20):
        garbage = rng.integers(0, 256, len(data), dtype=np.uint8).tobytes()
        with pytest.raises(EntropyCodingError):
            coder.decode(garbage, ch, table)


def test_wrong_symbol_count_or_table_raises(coder):
    table, ch, _, data = _encoded(coder)
    with pytest.raises(EntropyCodingError, match="3000 symbols"):
        coder.decode(data, ch[:-1], table)
    other = laplace_table([0.2, 0.2, 0.2])
    with pytest.raises(EntropyCodingError):
        coder.decode(data, ch, other)


def test_invalid_symbols_and_channels_raise(coder):
    table = laplace_table([1.0, 2.0])
    with pytest.raises(NscError, match="integers"):
        coder.encode(np.array([0.5, 1.0]), np.array([0, 1]), table)
    with pytest.raises(NscError, match="channel index out of range"):
        coder.encode(np.array([0, 1]), np.array([0, 2]), table)
    with pytest.raises(NscError, match="shape"):
        coder.encode(np.array([0, 1, 2]), np.array([0, 1]), table)
    with pytest.raises(NscError, match="1-D"):
        coder.encode(np.zeros((2, 2), dtype=np.int32), 0, table)


def test_get_coder_registry():
    assert {"ans", "torchac"} <= set(available_coders())
    assert isinstance(get_coder("ans"), ConstrictionCoder)
    with pytest.raises(NscError, match="available: .*ans"):
        get_coder("huffman")


def test_torchac_missing_gives_install_hint():
    try:
        import torchac  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("torchac is installed")
    table = laplace_table([1.0])
    with pytest.raises(NscError, match="pip install torchac"):
        get_coder("torchac").encode(np.array([0, 1]), 0, table)


def test_torchac_roundtrip_with_escapes():
    pytest.importorskip("torchac")
    rng = np.random.default_rng(9)
    table = laplace_table([1.0, 3.0])
    ch = rng.integers(0, 2, 5000)
    sym = np.round(rng.laplace(0.0, 2.0, 5000)).astype(np.int64)
    sym[:2] = [10**6, -(10**6)]
    coder = TorchacCoder()
    data = coder.encode(sym, ch, table)
    np.testing.assert_array_equal(coder.decode(data, ch, table), sym)
    assert 8 * main_stream_bytes(data) <= table.estimated_bits(sym, ch) * 1.01 + 256
    with pytest.raises(NscError, match="precision-16"):
        coder.encode(sym, ch, laplace_table([1.0, 3.0], precision=14))
