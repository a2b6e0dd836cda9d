"""Post-hoc coding of trained tensors: uniform scalar quantization or k-means vector quantization, each followed
by an empirical (histogram) entropy model.

This is the classic "quantize, then entropy-code" baseline (e.g. Deng & Tartaglione 2023 compare against it;
it is what ``nscodec-tensorf`` stores in its ``.nsc``). Unlike :class:`~nscodec.coding.FactorizedPrior`,
nothing is learned: the integer CDF table is the symbols' own histogram, so it is stored in the file.
"""

from __future__ import annotations

from typing import Tuple

import numpy as np

from .cdf_tables import IntegerCDFTable
from nscodec.errors import NscError


def uniform_quantize(x: np.ndarray, bits: int, axis: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel uniform quantization to ``bits`` bits (asymmetric min/max range).

    Args:
        x: float array ``[..., C, ...]`` with channels on ``axis``.
        bits: 1..16 bits per value.
        axis: channel axis.

    Returns:
        ``symbols`` (int32, same shape, in ``[0, 2**bits - 1]``), ``lo [C]`` and ``step [C]`` (float32) with
        ``dequantized = lo + symbols * step`` broadcast along ``axis``. Max abs error ``step / 2``.

    Raises:
        NscError: bits out of range or non-finite input.
    """
    if not 1 <= int(bits) <= 16:
        raise NscError(f"bits must be in 1..16, got {bits}")
    x = np.asarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise NscError("cannot quantize a tensor with NaN/inf values")
    xm = np.moveaxis(x, axis, 0).reshape(x.shape[axis], -1)
    lo = xm.min(axis=1).astype(np.float32)
    hi = xm.max(axis=1).astype(np.float32)
    levels = (1 << int(bits)) - 1
    step = np.where(hi > lo, (hi - lo) / levels, 1.0).astype(np.float32)
    shape = [1] * x.ndim
    shape[axis] = -1
    sym = np.rint((x - lo.reshape(shape)) / step.reshape(shape))
    return np.clip(sym, 0, levels).astype(np.int32), lo, step


def uniform_dequantize(symbols: np.ndarray, lo: np.ndarray, step: np.ndarray, axis: int = 0) -> np.ndarray:
    """Inverse of :func:`uniform_quantize`: ``lo + symbols * step`` (float32, same shape as ``symbols``)."""
    shape = [1] * symbols.ndim
    shape[axis] = -1
    return (np.asarray(lo, np.float32).reshape(shape) + symbols.astype(np.float32) * np.asarray(step, np.float32).reshape(shape)).astype(np.float32)


def histogram_table(symbols: np.ndarray, precision: int = 16, escape_mass: float = 1e-9) -> IntegerCDFTable:
    """One-channel integer CDF table from the empirical histogram of ``symbols`` (any shape, integers).

    The support is ``[min, max]`` of the symbols plus one escape entry (never used by these symbols, given
    the smallest mass). Code length is within a fraction of a percent of the empirical entropy; the table's
    own cost is in :meth:`IntegerCDFTable.to_bytes`.

    Raises:
        NscError: empty input or a support longer than ``2**precision - 1`` symbols.
    """
    s = np.asarray(symbols).reshape(-1).astype(np.int64)
    if s.size == 0:
        raise NscError("histogram_table needs at least one symbol")
    lo, hi = int(s.min()), int(s.max())
    n = hi - lo + 1
    if n + 1 > (1 << precision):
        raise NscError(f"symbol range {n} too wide for a {precision}-bit table")
    counts = np.bincount(s - lo, minlength=n).astype(np.float64)
    probs = np.concatenate([counts / counts.sum(), [escape_mass]])[None, :]
    return IntegerCDFTable.from_probabilities(probs, [n + 1], [lo], precision)


def kmeans_quantize(
    vectors: np.ndarray, codebook_size: int, iters: int = 20, seed: int = 0, chunk: int = 65536
) -> Tuple[np.ndarray, np.ndarray]:
    """k-means vector quantization (Lloyd's algorithm after k-means++ seeding, Arthur & Vassilvitskii 2007).

    The post-hoc VQ baseline of VQ-TensoRF / VQ-AD Table 2: cluster the trained feature vectors, then store
    the codebook and one index per vector.

    Args:
        vectors: float array ``[M, D]``.
        codebook_size: K codewords (``K <= M``).
        iters: Lloyd iterations.
        seed: RNG seed of the initial codewords (results are deterministic for a given seed).
        chunk: vectors per distance block (memory ``chunk * K`` floats).

    Returns:
        ``codebook [K, D]`` (float32) and ``indices [M]`` (int32 in ``[0, K)``), ``vectors ≈ codebook[indices]``.

    Raises:
        NscError: non-2D or non-finite input, or ``codebook_size`` not in ``[1, M]``.
    """
    import torch

    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise NscError(f"kmeans_quantize needs finite vectors [M, D], got shape {x.shape}")
    m = x.shape[0]
    if not 1 <= int(codebook_size) <= m:
        raise NscError(f"codebook_size must be in 1..{m}, got {codebook_size}")
    xt = torch.from_numpy(x)
    g = torch.Generator().manual_seed(int(seed))
    k = int(codebook_size)
    codebook = torch.empty(k, x.shape[1])
    codebook[0] = xt[torch.randint(m, (1,), generator=g)[0]]
    d2 = ((xt - codebook[0]) ** 2).sum(1)
    for j in range(1, k):  # k-means++: next seed drawn with probability ∝ squared distance to the nearest seed
        total = float(d2.sum())
        pick = int(torch.multinomial(d2 / total, 1, generator=g)[0]) if total > 0 else int(torch.randint(m, (1,), generator=g)[0])
        codebook[j] = xt[pick]
        d2 = torch.minimum(d2, ((xt - codebook[j]) ** 2).sum(1))
    idx = torch.zeros(m, dtype=torch.long)

    def assign() -> None:
        c2 = (codebook * codebook).sum(1)
        for i in range(0, m, chunk):
            blk = xt[i : i + chunk]
            idx[i : i + chunk] = (c2[None, :] - 2.0 * blk @ codebook.T).argmin(1)

    for _ in range(int(iters)):
        assign()
        sums = torch.zeros_like(codebook).index_add_(0, idx, xt)
        counts = torch.bincount(idx, minlength=codebook.shape[0]).to(xt.dtype)
        empty = counts == 0
        codebook = torch.where(empty[:, None], codebook, sums / counts.clamp_min(1)[:, None])
        if empty.any():  # re-seed dead codewords with the worst-fitted vectors
            err = ((xt - codebook[idx]) ** 2).sum(1)
            codebook[empty] = xt[err.topk(int(empty.sum())).indices]
    assign()
    return codebook.numpy().astype(np.float32), idx.numpy().astype(np.int32)


def pow2_quantize(x: np.ndarray, bits: int, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel scalar quantization with a power-of-two step, for storing network weights.

    Channel ``c`` (row ``c`` of ``x.reshape(channels, -1)``) gets step ``2**exp[c]``, the smallest power of two
    with ``max|x_c| / step <= 2**(bits-1) - 1``; symbols are ``rint(x / step)``. Because every step is a power of
    two, ``x̂ = sym * step`` is exact in float32 and re-quantizing ``x̂`` returns ``x̂`` bit for bit (idempotent):
    a model whose weights were quantized in place before evaluation exports to a file that decodes to exactly
    those weights. The step is up to 2× finer than a min/max uniform quantizer's; with an entropy coder behind
    it the unused range costs almost no rate.

    Args:
        x: float array of any shape whose size is divisible by ``channels``.
        bits: 2..16; symbols lie in ``[-(2**(bits-1) - 1), 2**(bits-1) - 1]``.
        channels: number of rows sharing one step each (e.g. output channels of a weight matrix).

    Returns:
        ``symbols`` (int32, shape of ``x``) and ``exp [channels]`` (int32, the step's base-2 exponent).
        Max abs error per channel ``2**exp / 2``.

    Raises:
        NscError: bits out of range, size not divisible by ``channels``, or non-finite input.
    """
    if not 2 <= int(bits) <= 16:
        raise NscError(f"bits must be in 2..16, got {bits}")
    x = np.asarray(x, dtype=np.float32)
    if channels < 1 or x.size % channels:
        raise NscError(f"cannot split {x.size} values into {channels} channels")
    if not np.isfinite(x).all():
        raise NscError("cannot quantize a tensor with NaN/inf values")
    qmax = (1 << (int(bits) - 1)) - 1
    xm = x.reshape(channels, -1).astype(np.float64)
    amax = np.abs(xm).max(axis=1) if xm.shape[1] else np.zeros(channels)
    with np.errstate(divide="ignore"):
        exp = np.where(amax > 0, np.ceil(np.log2(np.maximum(amax, 1e-300) / qmax)), 0.0)
    exp = np.clip(exp, -120, 120).astype(np.int32)
    exp = np.where(amax / np.ldexp(1.0, exp) > qmax, exp + 1, exp)  # guard against log2 rounding
    sym = np.clip(np.rint(xm / np.ldexp(1.0, exp)[:, None]), -qmax, qmax)
    return sym.reshape(x.shape).astype(np.int32), exp.astype(np.int32)


def pow2_dequantize(symbols: np.ndarray, exp: np.ndarray) -> np.ndarray:
    """Inverse of :func:`pow2_quantize`: ``symbols * 2**exp`` per channel (float32, exact), shape of ``symbols``.

    Raises:
        NscError: ``symbols.size`` not divisible by ``len(exp)``.
    """
    exp = np.asarray(exp, dtype=np.int32).reshape(-1)
    symbols = np.asarray(symbols)
    if exp.size == 0 or symbols.size % exp.size:
        raise NscError(f"{symbols.size} symbols do not split into {exp.size} channels")
    step = np.ldexp(np.float32(1.0), exp).astype(np.float32)
    return (symbols.reshape(exp.size, -1).astype(np.float32) * step[:, None]).reshape(symbols.shape)
