"""Learned entropy models (training path) and their export to integer CDF tables (coding path).

The two paths are deliberately separate:

* **Training path** — differentiable: :meth:`FactorizedPrior.forward` / :meth:`FactorizedPrior.likelihood`
  return per-latent probabilities, :meth:`FactorizedPrior.rate_bits` turns them into a rate in bits for
  the rate-distortion loss ``L = R + lambda * D``.
* **Coding path** — frozen: :meth:`FactorizedPrior.build_cdf_table` evaluates the learned density ONCE on an
  integer support and quantizes it to an :class:`~nscodec.coding.cdf_tables.IntegerCDFTable`. Encoding and
  decoding use only that integer table (stored in the ``.nsc`` file); nothing recomputes float CDFs.
  :meth:`FactorizedPrior.encode_section` / :meth:`FactorizedPrior.decode_section` (and the masked model's
  :meth:`~MaskedFactorizedPrior.encode_sections` / :meth:`~MaskedFactorizedPrior.decode_sections`) are that path
  end to end, as CompressAI's ``compress`` / ``decompress``: values → rounded symbols → the table → an entropy-coded
  ``.nsc`` section carrying it, and back; every method codes its prior's latents through them.

Length: two entropy models with both paths each, and the autograd functions of their fused rate kernel; the
training and coding paths of one model stay side by side, so a change to its density changes both.

Models:

* :class:`FactorizedPrior` — the non-parametric fully factorized density of Ballé, Minnen, Singh, Hwang,
  Johnston 2018, "Variational image compression with a scale hyperprior" (ICLR), Appendix 6.1: one
  learned univariate CDF per channel, a composition of ``K+1`` small dense layers with softplus-positive
  matrices and tanh gating, which is monotone by construction.
* :class:`MaskedFactorizedPrior` — the spike-and-slab *masked* entropy model of ECTensoRF ("Neural NeRF
  Compression", ICML 2024, arXiv:2406.08943, masked entropy model section): a learned binary
  mask over latent locations; masked-out latents cost no rate and are zeroed, the mask itself is rated
  under a learned per-channel Bernoulli prior in training and coded with each channel's open fraction.
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from nscodec.errors import NscError, NscFormatError

from .cdf_tables import MAX_TABLE_LENGTH, IntegerCDFTable
from .container import Section
from .quantization import quantize, to_symbols
from .tensor_codec import decode_section, entropy_section

__all__ = ["FactorizedPrior", "MaskedFactorizedPrior"]

_LN2 = math.log(2.0)


class _LowerBoundFn(torch.autograd.Function):
    """``max(x, bound)`` whose gradient also passes where ``x < bound`` if it pushes ``x`` upwards.

    Source: Ballé et al. 2018 (tensorflow-compression ``lower_bound``): a plain clamp would zero the gradient
    of likelihoods that underflow the bound and stall training of the tails.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return x.clamp_min(bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        pass_through = (x >= ctx.bound) | (grad < 0)
        return grad * pass_through.to(grad.dtype), None




def _rate_kernel():
    """The compiled factorized-rate kernel, or None where the torch path runs (:func:`nscodec._backend.kernel`)."""
    from nscodec._backend import kernel

    return kernel("factorized_rate")


def _split_density_params(params, layers: int):
    """``(H, b, a)`` lists from the flat ``H_0..H_K, b_0..b_K, a_0..a_{K-1}`` argument tuple of :class:`_FactorizedRate`."""
    return list(params[:layers]), list(params[layers:2 * layers]), list(params[2 * layers:])


class _FactorizedRate(torch.autograd.Function):
    """Rate in bits of ``v [C, N]`` under a factorized density given ``H_k = softplus(matrix_k)``, biases ``b_k`` and
    ``a_k = tanh(factor_k)`` (the fused twin of ``rate_bits(likelihood(v))``). When a gradient is needed the kernel
    forms the rate and its gradients in one pass (for an upstream gradient of 1) and the backward scales them."""

    @staticmethod
    def forward(ctx, kernel, bound: float, layers: int, v: torch.Tensor, *params: torch.Tensor):  # type: ignore[override]
        v = v.contiguous()
        params = tuple(p.contiguous() for p in params)
        H, b, a = _split_density_params(params, layers)
        ctx.meta = (kernel, bound, layers)
        if not any(ctx.needs_input_grad[3:]):
            return kernel.factorized_rate_forward(v, H, b, a, bound).to(v.dtype)
        bits, *grads = kernel.factorized_rate_backward(v, H, b, a, bound, 1.0)
        ctx.save_for_backward(v, *params, *grads)
        return bits.to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        kernel, bound, layers = ctx.meta
        saved = ctx.saved_tensors
        n_params = 3 * layers - 1
        v, params, grads = saved[0], saved[1:1 + n_params], saved[1 + n_params:]
        g = float(grad)
        if g < 0:  # the lower bound passes gradients by their sign: recompute for this one
            H, b, a = _split_density_params(params, layers)
            grads = kernel.factorized_rate_backward(v, H, b, a, bound, g)[1:]
            return (None, None, None, *grads)
        return (None, None, None, *(t * g for t in grads))


def _tabulated_rate_torch(v: torch.Tensor, f: torch.Tensor, df: torch.Tensor, lo: torch.Tensor, inv_h: torch.Tensor,
                          want_grad: bool):
    """Torch twin of the kernel's ``tabulated_rate``: ``(bits float64 scalar, W [C, K] or None, d/dv [C, N] or None)``
    for latents ``v [C, N]``, ``-log2 P`` and its derivative at the knots ``f, df [C, K]`` (``lo + j / inv_h``), both
    linearly interpolated."""
    t = (v - lo[:, None]) * inv_h[:, None]
    j = t.floor().clamp(0, f.shape[1] - 2)
    frac = t - j
    j = j.long()
    f0, f1 = f.gather(1, j), f.gather(1, j + 1)
    bits = (f0 + frac * (f1 - f0)).double().sum()
    if not want_grad:
        return bits, None, None
    W = torch.zeros_like(f).scatter_add_(1, j, 1.0 - frac).scatter_add_(1, j + 1, frac)
    d0 = df.gather(1, j)
    return bits, W, d0 + frac * (df.gather(1, j + 1) - d0)


def _dense_strides(v: torch.Tensor) -> bool:
    """Whether ``v [C, N]`` is row-major or the transpose of a row-major ``[N, C]`` (no gaps, no overlap)."""
    c, n = v.shape
    return v.stride() in ((n, 1), (1, c)) or v.numel() <= 1


class _TabulatedRate(torch.autograd.Function):
    """Sum over latents ``v [C, N]`` of ``-log2 P`` interpolated linearly between knots ``f [C, K]`` (bits). The
    gradient w.r.t. ``v`` is the exact derivative at the knots ``df [C, K]`` interpolated the same way (a smaller error
    than the segments' slopes); w.r.t. ``f`` the interpolation weight each knot received (autograd carries it on to
    the density parameters through the exact evaluation of ``f``)."""

    @staticmethod
    def forward(ctx, kernel, v: torch.Tensor, f: torch.Tensor, df: torch.Tensor, lo: torch.Tensor,  # type: ignore[override]
                inv_h: torch.Tensor):
        want = bool(ctx.needs_input_grad[1] or ctx.needs_input_grad[2])
        f, df, lo, inv_h = (t.detach().contiguous() for t in (f, df, lo, inv_h))
        v = v.detach()
        if kernel is not None and not _dense_strides(v):
            v = v.contiguous()  # the kernel reads any dense [C, N] layout (a channel-first view of [N, C] included)
        if kernel is not None:
            out = kernel.tabulated_rate(v, f, df, lo, inv_h, want)
            bits, W, gv = (out[0], out[1], out[2]) if want else (out[0], None, None)
        else:
            bits, W, gv = _tabulated_rate_torch(v, f, df, lo, inv_h, want)
        if want:
            ctx.save_for_backward(W, gv)
        return bits.to(v.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        W, gv = ctx.saved_tensors
        return None, gv * grad, W * grad, None, None, None


class _StraightThroughBinarize(torch.autograd.Function):
    """Forward ``1[x > 0.5]`` (exactly 0.0/1.0), backward identity (straight-through estimator).

    Written as a Function rather than ``hard + soft - soft.detach()``, whose float rounding can yield
    0.99999994 instead of an exact 1.
    """

    @staticmethod
    def forward(ctx, soft: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return (soft > 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # type: ignore[override]
        return grad


def _as_modes(mode: str) -> None:
    if mode not in ("noise", "ste", "round", "mixed"):
        raise NscError(f"unknown entropy-model mode {mode!r}; expected 'noise', 'ste', 'round' or 'mixed'")


class FactorizedPrior(nn.Module):
    """Fully factorized learned density, one univariate non-parametric model per channel.

    Ballé et al. 2018, "Variational image compression with a scale hyperprior", Appendix 6.1: the CDF of
    channel ``c`` is ``sigmoid(f_K(...f_0(x)))`` with ``f_k(x) = g_k(H_k x + b_k)``,
    ``H_k = softplus(matrix_k)`` (positive => monotone) and ``g_k(x) = x + tanh(a_k) * tanh(x)`` for
    ``k < K``. The pmf of an integer-quantized latent is ``P(y) = CDF(y + 0.5) - CDF(y - 0.5)``.

    Args:
        channels: number of channels ``C`` (one density each).
        filters: hidden widths of the density network (default ``(3, 3, 3)``).
        init_scale: initial scale of the densities (default 10: the initial density is wide).
        tail_mass: probability mass left outside the estimated support ``[lower, upper]`` learned by
            :meth:`aux_loss` (default 1e-9).
        likelihood_bound: lower bound on returned likelihoods (default 1e-9), so ``-log2 p`` stays finite.

    Latent layout: CHANNEL FIRST, ``[C, *]`` with any trailing dims (e.g. ``[C, H, W]`` feature planes or
    ``[C, N]`` vectors).

    Raises:
        NscError: invalid constructor arguments.
    """

    def __init__(
        self,
        channels: int,
        filters: Sequence[int] = (3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
        likelihood_bound: float = 1e-9,
    ) -> None:
        super().__init__()
        if isinstance(channels, bool) or not isinstance(channels, numbers.Integral) or channels < 1:
            raise NscError(f"channels must be a positive int, got {channels!r}")
        channels = int(channels)
        filters = tuple(int(f) for f in filters)
        if any(f < 1 for f in filters):
            raise NscError(f"filters must be positive ints, got {filters}")
        if not init_scale > 0:
            raise NscError(f"init_scale must be > 0, got {init_scale}")
        if not 0 < tail_mass < 1:
            raise NscError(f"tail_mass must lie in (0, 1), got {tail_mass}")
        if not 0 < likelihood_bound < 1:
            raise NscError(f"likelihood_bound must lie in (0, 1), got {likelihood_bound}")
        self.channels = channels
        self.filters = filters
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)
        self.likelihood_bound = float(likelihood_bound)

        widths = (1,) + filters + (1,)
        scale = self.init_scale ** (1.0 / (len(filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(len(filters) + 1):
            init = math.log(math.expm1(1.0 / scale / widths[k + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, widths[k + 1], widths[k]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, widths[k + 1], 1).uniform_(-0.5, 0.5)))
            if k < len(filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, widths[k + 1], 1)))

        self.quantiles = nn.Parameter(
            torch.tensor([-self.init_scale, 0.0, self.init_scale]).repeat(channels, 1, 1)
        )
        t = math.log(2.0 / self.tail_mass - 1.0)
        self.register_buffer("_aux_target", torch.tensor([-t, 0.0, t]), persistent=False)

    # -- density network -------------------------------------------------------------------------------
    def _logits_cumulative(
        self, x: torch.Tensor, stop_gradient: bool = False, dtype: Optional[torch.dtype] = None
    ) -> torch.Tensor:
        """Logit of the learned CDF at ``x`` shaped ``[C, 1, N]`` -> ``[C, 1, N]``."""
        logits = x
        for k in range(len(self.filters) + 1):
            m, b = self.matrices[k], self.biases[k]
            if stop_gradient:
                m, b = m.detach(), b.detach()
            if dtype is not None:
                m, b = m.to(dtype), b.to(dtype)
            logits = torch.matmul(F.softplus(m), logits) + b
            if k < len(self.filters):
                a = self.factors[k].detach() if stop_gradient else self.factors[k]
                if dtype is not None:
                    a = a.to(dtype)
                logits = logits + torch.tanh(a) * torch.tanh(logits)
        return logits

    def _check_latents(self, y: torch.Tensor, what: str = "y") -> None:
        if not isinstance(y, torch.Tensor):
            raise NscError(f"{what} must be a torch.Tensor shaped [C, *], got {type(y).__name__}")
        if y.dim() < 1 or y.shape[0] != self.channels:
            raise NscError(
                f"{what} must be channel-first [C={self.channels}, *], got shape {tuple(y.shape)}"
            )
        if not y.is_floating_point():
            raise NscError(f"{what} must be floating point, got {y.dtype}")

    def _pmf_and_logits(self, v: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        lower = self._logits_cumulative(v - 0.5, dtype=dtype)
        upper = self._logits_cumulative(v + 0.5, dtype=dtype)
        # Evaluate on the side of the median where the sigmoid is far from saturating to 1 (stable
        # difference of CDFs): for upper + lower > 0 use 1 - CDF = sigmoid(-logits) instead.
        sign = -torch.sign(lower + upper).detach()
        sign = torch.where(sign == 0, torch.ones_like(sign), sign)
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def likelihood(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Probability of each (quantized or noisy) latent: ``CDF(y + 0.5) - CDF(y - 0.5)``.

        Args:
            y_hat: latents ``[C, *]`` (float).

        Returns:
            Tensor of the same shape with values in ``[likelihood_bound, 1]`` (unitless probabilities).
            Differentiable w.r.t. ``y_hat`` and the density parameters.

        Raises:
            NscError: ``y_hat`` not a float tensor shaped ``[C, *]``.
        """
        self._check_latents(y_hat, "y_hat")
        shape = y_hat.shape
        v = y_hat.reshape(self.channels, 1, -1)
        lik = self._pmf_and_logits(v)
        lik = _LowerBoundFn.apply(lik, self.likelihood_bound)
        return lik.reshape(shape)

    def forward(self, y: torch.Tensor, mode: str = "noise") -> Tuple[torch.Tensor, torch.Tensor]:
        """Quantize latents and return their likelihoods.

        Args:
            y: latents ``[C, *]`` (float).
            mode: ``"noise"`` (additive uniform noise; the training rate proxy, Ballé et al. 2017),
                ``"ste"`` (rounding with straight-through gradient), ``"round"`` (hard rounding; evaluation)
                or ``"mixed"`` (Minnen et al. 2018 / Minnen & Singh 2020: ``y_hat`` via STE for the
                distortion path, likelihood of the noisy latent for the rate).

        Returns:
            ``(y_hat, likelihood)``, both shaped like ``y``.

        Raises:
            NscError: bad ``y`` or unknown ``mode``.
        """
        _as_modes(mode)
        self._check_latents(y)
        if mode == "mixed":
            return quantize(y, "ste"), self.likelihood(quantize(y, "noise"))
        y_hat = quantize(y, mode)
        return y_hat, self.likelihood(y_hat)

    def quantize_and_rate(self, y: torch.Tensor, mode: str = "noise", knots: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(y_hat, rate in bits)``: :meth:`forward`'s quantization of ``y [C, *]`` with its rate summed through
        :meth:`rate` (the fused kernel on CPU; ``knots`` as there) instead of per-latent likelihoods. For ``mixed``
        the rate is that of the noisy latents, as in :meth:`forward`.

        Raises:
            NscError: bad ``y`` or unknown ``mode``.
        """
        _as_modes(mode)
        self._check_latents(y)
        if mode == "mixed":
            return quantize(y, "ste"), self.rate(quantize(y, "noise"), knots)
        y_hat = quantize(y, mode)
        return y_hat, self.rate(y_hat, knots)

    def rate(self, y_hat: torch.Tensor, knots: int = 0, max_spacing: float = 1.0 / 32) -> torch.Tensor:
        """Rate ``-Σ log2 P(y_hat)`` in bits (scalar tensor) of quantized or noisy latents ``[C, *]``.

        Equals ``rate_bits(likelihood(y_hat))`` (same density, lower bound and gradients); on CPU float32 it runs the
        fused kernel ``nscodec/csrc/factorized_rate.cpp`` (one pass per latent instead of ~40 tensor ops),
        elsewhere that torch path. Differentiable w.r.t. ``y_hat`` and the density parameters.

        ``knots > 0`` (a training rate of many latents): ``-log2 P`` and its derivative are evaluated exactly, with
        gradients, at ``knots`` evenly spaced points per channel spanning the latents' range and interpolated linearly
        in between, so the density network runs ``C · knots`` times instead of once per latent; the latents then cost
        one memory pass. For a knot spacing ``h`` the error per latent is at most ``h² / 8 · max |d² log2 P / dy²|``
        (bits) in the value and ``h² / 8 · max |d³ log2 P / dy³|`` in its gradient. The exact path runs instead when the
        spacing would exceed ``max_spacing`` (latents spread too widely), when there are fewer than ``4 · knots``
        latents per channel, or without gradients (evaluation). Coding never uses it: files are coded with integer CDF
        tables (:meth:`build_cdf_table`).

        Raises:
            NscError: ``y_hat`` not a float tensor shaped ``[C, *]``.
        """
        self._check_latents(y_hat, "y_hat")
        on_cpu = y_hat.device.type == "cpu" and y_hat.dtype == torch.float32
        if knots >= 2 and torch.is_grad_enabled() and y_hat[0].numel() >= 4 * knots:
            tabulated = self._tabulated_rate(y_hat.reshape(self.channels, -1), knots, max_spacing, on_cpu)
            if tabulated is not None:
                return tabulated
        kernel = _rate_kernel() if on_cpu else None
        if kernel is None or len(self.filters) + 1 > 8 or max(self.filters) > 16:
            return self.rate_bits(self.likelihood(y_hat))
        H = [F.softplus(m) for m in self.matrices]
        a = [torch.tanh(f) for f in self.factors]
        return _FactorizedRate.apply(kernel, self.likelihood_bound, len(H), y_hat.reshape(self.channels, -1), *H,
                                     *self.biases, *a)

    def _tabulated_rate(self, v: torch.Tensor, knots: int, max_spacing: float, on_cpu: bool) -> Optional[torch.Tensor]:
        """:meth:`rate` of ``v [C, N]`` through ``knots`` knots per channel, or None where the spacing exceeds
        ``max_spacing`` (or the range is not finite)."""
        with torch.no_grad():
            lo, hi = torch.aminmax(v, dim=1)
            h = (hi - lo) / (knots - 1)
            if not (bool(torch.isfinite(h).all()) and float(h.max()) <= max_spacing):
                return None
            h = h.clamp_min(1e-6)  # a channel of equal latents: any small spacing interpolates it exactly
        x = (lo[:, None] + h[:, None] * torch.arange(knots, device=v.device, dtype=v.dtype)).requires_grad_(True)
        f = -torch.log2(self.likelihood(x))  # [C, K]: exact, differentiable w.r.t. the density parameters
        (df,) = torch.autograd.grad(f.sum(), x, retain_graph=True)  # d(-log2 P)/dy at the knots
        return _TabulatedRate.apply(_rate_kernel() if on_cpu else None, v, f, df, lo, 1.0 / h)

    @staticmethod
    def rate_bits(likelihood: torch.Tensor) -> torch.Tensor:
        """Rate of latents with the given likelihoods: ``-sum(log2 p)``, a scalar tensor in bits.

        Raises:
            NscError: ``likelihood`` not a tensor.
        """
        if not isinstance(likelihood, torch.Tensor):
            raise NscError(f"likelihood must be a torch.Tensor, got {type(likelihood).__name__}")
        return -torch.log2(likelihood).sum()

    # -- support estimation ----------------------------------------------------------------------------
    @property
    def medians(self) -> torch.Tensor:
        """Per-channel median estimate ``[C]`` (middle learned quantile), detached."""
        return self.quantiles.detach()[:, 0, 1]

    def aux_loss(self) -> torch.Tensor:
        """Auxiliary loss fitting :attr:`quantiles` ``[C, 1, 3]`` to the ``tail_mass/2``, 0.5 and
        ``1 - tail_mass/2`` quantiles of each learned density (scalar tensor, logit units).

        Only the quantiles receive gradients (the density is detached). Minimize it with its own optimizer
        alongside the rate-distortion loss so :meth:`build_cdf_table` knows the support
        ``[lower tail, upper tail]`` (Ballé et al. 2018; tensorflow-compression's quantile estimation).
        """
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self._aux_target.to(logits.dtype)).sum()

    # -- export ----------------------------------------------------------------------------------------
    def _support(
        self, symbols, max_support: int
    ) -> Tuple[np.ndarray, np.ndarray]:
        q = self.quantiles.detach().to(torch.float64).cpu().numpy()[:, 0, :]
        lo = np.floor(np.minimum(q[:, 0], q[:, 2]))
        hi = np.ceil(np.maximum(q[:, 0], q[:, 2]))
        med = np.round(q[:, 1])
        if symbols is not None:
            per_channel = self._split_symbols(symbols)
            for c, s in enumerate(per_channel):
                if s.size:
                    lo[c], hi[c] = float(s.min()), float(s.max())
                    med[c] = float(np.median(s))
        lo = lo.astype(np.int64)
        hi = hi.astype(np.int64)
        med = np.clip(med.astype(np.int64), lo, hi)
        too_long = hi - lo + 1 > max_support
        # cap the support at max_support symbols, centred on the median and kept inside [lo, hi]
        new_lo = np.clip(med - max_support // 2, lo, hi - max_support + 1)
        lo = np.where(too_long, new_lo, lo)
        hi = np.where(too_long, new_lo + max_support - 1, hi)
        return lo, hi

    def _split_symbols(self, symbols) -> list:
        if isinstance(symbols, torch.Tensor):
            symbols = symbols.detach().cpu().numpy()
        if isinstance(symbols, np.ndarray):
            if symbols.ndim < 1 or symbols.shape[0] != self.channels:
                raise NscError(f"symbols must be [C={self.channels}, *], got shape {symbols.shape}")
            parts = [symbols[c].reshape(-1) for c in range(self.channels)]
        else:
            parts = [np.asarray(s.detach().cpu().numpy() if isinstance(s, torch.Tensor) else s).reshape(-1) for s in symbols]
            if len(parts) != self.channels:
                raise NscError(f"symbols must hold one array per channel ({self.channels}), got {len(parts)}")
        for c, s in enumerate(parts):
            if s.size and s.dtype.kind not in "iu":
                if s.dtype.kind != "f" or not np.all(np.isfinite(s)) or not np.all(s == np.round(s)):
                    raise NscError(f"symbols of channel {c} must be integers (got dtype {s.dtype})")
        return [s.astype(np.int64) for s in parts]

    @torch.no_grad()
    def build_cdf_table(
        self, precision: int = 16, symbols=None, max_support: int = 4096
    ) -> IntegerCDFTable:
        """Export the learned densities as an :class:`IntegerCDFTable` (the coding path).

        Per channel, the integer support is ``[floor(lower quantile), ceil(upper quantile)]``; if ``symbols``
        is given, it is replaced by the actual symbol range of that channel (widened or narrowed, so no
        probability mass is wasted and no symbol in the data needs an escape), and it is then capped at
        ``max_support`` symbols around the median (symbols outside become escapes). The pmf
        ``CDF(k + 0.5) - CDF(k - 0.5)`` is evaluated in float64 on that support, ONE escape symbol carrying
        the remaining tail mass ``CDF(lo - 0.5) + 1 - CDF(hi + 0.5)`` is appended, and the result is quantized
        with :meth:`IntegerCDFTable.from_probabilities`.

        Args:
            precision: bits of the integer table, 12..24 (16 for torchac compatibility).
            symbols: optional integer symbols, an array/tensor ``[C, *]`` or a sequence of ``C`` 1-D arrays
                (ragged, e.g. only the unmasked latents of each channel).
            max_support: maximum in-range support length per channel (default 4096; further capped at
                ``2**precision - 1``).

        Returns:
            The table (``offsets`` = first in-range symbol, ``lengths`` = support + 1).

        Raises:
            NscError: bad ``symbols`` shape/dtype or ``precision``/``max_support`` out of range.
        """
        if isinstance(precision, bool) or not isinstance(precision, int) or not 12 <= precision <= 24:
            raise NscError(f"precision must be an int in 12..24, got {precision!r}")
        if isinstance(max_support, bool) or not isinstance(max_support, int) or max_support < 1:
            raise NscError(f"max_support must be a positive int, got {max_support!r}")
        max_support = min(max_support, (1 << precision) - 1, MAX_TABLE_LENGTH - 1)
        lo, hi = self._support(symbols, max_support)
        n = hi - lo + 1
        L = int(n.max())
        device = self.quantiles.device
        k = torch.arange(L, dtype=torch.float64, device=device)
        lo_t = torch.as_tensor(lo, dtype=torch.float64, device=device)
        hi_t = torch.as_tensor(hi, dtype=torch.float64, device=device)
        grid = (lo_t[:, None] + k[None, :]).unsqueeze(1)  # [C, 1, L]
        pmf = self._pmf_and_logits(grid, dtype=torch.float64)[:, 0, :]
        lower_tail = torch.sigmoid(self._logits_cumulative((lo_t - 0.5).view(-1, 1, 1), dtype=torch.float64)).view(-1)
        upper_tail = torch.sigmoid(-self._logits_cumulative((hi_t + 0.5).view(-1, 1, 1), dtype=torch.float64)).view(-1)
        probs = np.zeros((self.channels, L + 1), dtype=np.float64)
        pmf_np = pmf.cpu().numpy()
        tails = (lower_tail + upper_tail).cpu().numpy()
        for c in range(self.channels):
            probs[c, : n[c]] = pmf_np[c, : n[c]]
            probs[c, n[c]] = tails[c]
        return IntegerCDFTable.from_probabilities(probs, n + 1, lo, precision)

    @torch.no_grad()
    def encode_section(self, name: str, values: Union[np.ndarray, torch.Tensor], meta: Optional[Dict] = None,
                       precision: int = 16) -> Section:
        """The ``.nsc`` section of ``values [C, *]`` (one channel per row of this prior): rounded to integer symbols
        (:func:`~nscodec.coding.quantization.to_symbols`), coded under the table :meth:`build_cdf_table` builds from
        those symbols, the table carried in the section (CompressAI's ``compress``).

        Raises:
            NscError: values not ``[C, *]`` with this prior's ``C``, or non-finite."""
        sym = to_symbols(values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values)))
        sym = sym.cpu().numpy()
        return entropy_section(name, sym, self.build_cdf_table(precision=precision, symbols=sym), meta=meta)

    @staticmethod
    def decode_section(section: Section, shape: Optional[Tuple[int, ...]] = None) -> np.ndarray:
        """The integer symbols (int32, the section's shape) of a section :meth:`encode_section` wrote; the table is
        the section's own, so no prior is needed (CompressAI's ``decompress``). ``shape``: what the caller's model
        expects, checked before decoding.

        Raises:
            NscFormatError: another declared shape or dtype, or a malformed entropy-coded payload (the section named)."""
        if shape is not None and tuple(section.shape) != tuple(shape):
            raise NscFormatError(f"section {section.name!r}: shape {list(section.shape)}, model expects {list(shape)}")
        return decode_section(section, dtype=("int32",))


class MaskedFactorizedPrior(nn.Module):
    """Spike-and-slab masked entropy model over feature planes ``[C, H, W]`` (ECTensoRF).

    "Neural NeRF Compression" (ICML 2024, arXiv:2406.08943), masked entropy model: each latent
    location has a learned binary mask ``m``; the reconstruction uses ``y_hat * m``, latents with ``m = 0``
    are not transmitted (zero rate), and the mask is transmitted under a learned Bernoulli prior (one
    logit per channel here). Rate in bits::

        R = sum m * (-log2 p(y_hat)) + sum -log2 Bern(m; sigmoid(a_c))

    During training ``m`` is a straight-through Gumbel-softmax (binary Concrete) sample with temperature
    ``tau`` (Jang et al. 2017; Maddison et al. 2017); at evaluation/export ``m = 1[logits > 0]``.

    Args:
        channels, height, width: latent grid ``[C, H, W]``.
        filters, init_scale, tail_mass: passed to the wrapped :class:`FactorizedPrior`.
        init_mask_logit: initial mask logit (default 2.0: masks start mostly open).
        init_prior_logit: initial per-channel Bernoulli prior logit (default 0.0: 1 bit per mask entry).

    Raises:
        NscError: invalid sizes.
    """

    def __init__(
        self,
        channels: int,
        height: int,
        width: int,
        filters: Sequence[int] = (3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = 1e-9,
        init_mask_logit: float = 2.0,
        init_prior_logit: float = 0.0,
    ) -> None:
        super().__init__()
        for name, v in (("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise NscError(f"{name} must be a positive int, got {v!r}")
        self.prior = FactorizedPrior(channels, filters=filters, init_scale=init_scale, tail_mass=tail_mass)
        self.shape = (int(channels), int(height), int(width))
        self.mask_logits = nn.Parameter(torch.full(self.shape, float(init_mask_logit)))
        self.mask_prior_logits = nn.Parameter(torch.full((channels,), float(init_prior_logit)))

    @property
    def channels(self) -> int:
        """Number of channels ``C``."""
        return self.shape[0]

    def sample_mask(self, tau: float = 1.0, hard: bool = True) -> torch.Tensor:
        """Sample a relaxed binary mask ``[C, H, W]`` by the Gumbel-softmax trick.

        ``soft = sigmoid((logits + log u - log(1 - u)) / tau)``, ``u ~ U(0, 1)`` (two-class Gumbel-softmax).
        With ``hard=True`` the forward value is ``1[soft > 0.5]`` (exactly 0/1) and the gradient is that of
        ``soft`` (straight-through).

        Args:
            tau: temperature > 0 (small = closer to binary, higher-variance gradients).
            hard: straight-through binary output if True, soft relaxation in (0, 1) if False.

        Raises:
            NscError: ``tau <= 0``.
        """
        if not tau > 0:
            raise NscError(f"Gumbel-softmax temperature tau must be > 0, got {tau}")
        u = torch.rand_like(self.mask_logits).clamp(1e-6, 1.0 - 1e-6)
        soft = torch.sigmoid((self.mask_logits + torch.log(u) - torch.log1p(-u)) / tau)
        if not hard:
            return soft
        return _StraightThroughBinarize.apply(soft)

    @torch.no_grad()
    def deterministic_mask(self) -> torch.Tensor:
        """Evaluation/export mask ``1[logits > 0]`` as a float tensor ``[C, H, W]`` of 0/1 (no gradient)."""
        return (self.mask_logits > 0).to(self.mask_logits.dtype)

    def mask_bits(self, mask: torch.Tensor) -> torch.Tensor:
        """Bits to code ``mask`` ``[C, H, W]`` under the per-channel Bernoulli prior (scalar tensor)."""
        a = self.mask_prior_logits.view(-1, 1, 1)
        nats = -(mask * F.logsigmoid(a) + (1.0 - mask) * F.logsigmoid(-a))
        return nats.sum() / _LN2

    def forward(
        self,
        y: torch.Tensor,
        tau: float = 1.0,
        mode: str = "noise",
        hard: bool = True,
        stochastic: Optional[bool] = None,
        knots: int = 0,
    ) -> Tuple[torch.Tensor, torch.Tensor, Dict[str, torch.Tensor]]:
        """Mask, quantize and rate latents.

        Args:
            y: latents ``[C, H, W]``.
            tau: Gumbel-softmax temperature (used when the mask is sampled).
            mode: quantization mode of the wrapped :meth:`FactorizedPrior.forward`.
            hard: straight-through binary mask (True) or soft mask (False) when sampling.
            stochastic: sample the mask (default: ``self.training``); otherwise use
                :meth:`deterministic_mask`.
            knots: with a deterministic mask open everywhere, the tabulated training rate of
                :meth:`FactorizedPrior.rate` through this many knots per channel (0: exact per latent).

        Returns:
            ``(y_masked_hat [C, H, W], rate_bits scalar tensor, info)`` with ``info`` holding
            ``"latent_bits"`` (``sum mask * -log2 p``, exactly 0 where the mask is 0), ``"mask_bits"``,
            ``"mask"`` ``[C, H, W]`` and ``"density"`` (fraction of open mask entries). With a deterministic
            mask that is open everywhere (ectensorf's CPU default, ``use_mask`` off) the latent bits come from
            :meth:`FactorizedPrior.rate` (the fused kernel on CPU) instead of per-latent likelihoods.

        Raises:
            NscError: ``y`` not shaped ``[C, H, W]`` as configured, bad ``tau`` or ``mode``.
        """
        if not isinstance(y, torch.Tensor) or tuple(y.shape) != self.shape:
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise NscError(f"y must be a tensor shaped {list(self.shape)}, got {got}")
        if stochastic is None:
            stochastic = self.training
        mask = self.sample_mask(tau, hard) if stochastic else self.deterministic_mask()
        if not stochastic and bool(mask.all()):  # every latent coded: the fused rate (FactorizedPrior.rate)
            y_hat, latent_bits = self.prior.quantize_and_rate(y, mode, knots)
        else:
            y_hat, lik = self.prior(y, mode)
            latent_bits = (mask * -torch.log2(lik)).sum()
        mask_bits = self.mask_bits(mask)
        info = {
            "latent_bits": latent_bits,
            "mask_bits": mask_bits,
            "mask": mask,
            "density": mask.detach().mean(),
        }
        return y_hat * mask, latent_bits + mask_bits, info

    def aux_loss(self) -> torch.Tensor:
        """Quantile auxiliary loss of the wrapped prior (see :meth:`FactorizedPrior.aux_loss`)."""
        return self.prior.aux_loss()

    @torch.no_grad()
    def build_cdf_table(
        self, symbols: Union[np.ndarray, torch.Tensor], precision: int = 16, max_support: int = 4096
    ) -> IntegerCDFTable:
        """Export the latent table from the symbols that will actually be coded (mask == 1 only).

        Args:
            symbols: integer symbols ``[C, H, W]`` (e.g. ``to_symbols(y)``).
            precision, max_support: as :meth:`FactorizedPrior.build_cdf_table`.

        Raises:
            NscError: wrong shape.
        """
        if isinstance(symbols, torch.Tensor):
            symbols = symbols.detach().cpu().numpy()
        symbols = np.asarray(symbols)
        if symbols.shape != self.shape:
            raise NscError(f"symbols must be shaped {list(self.shape)}, got {list(symbols.shape)}")
        keep = self.deterministic_mask().cpu().numpy() > 0
        per_channel = [symbols[c][keep[c]] for c in range(self.channels)]
        return self.prior.build_cdf_table(precision=precision, symbols=per_channel, max_support=max_support)

    @torch.no_grad()
    def mask_cdf_table(self, precision: int = 16, mask: Union[np.ndarray, torch.Tensor, None] = None) -> IntegerCDFTable:
        """Export the mask's Bernoulli model as a table over symbols {0, 1} (+ unused escape), ``C`` channels.

        Args:
            precision: bits of the integer table, 12..24.
            mask: optional 0/1 mask ``[C, H, W]`` that will be coded with this table. Given, each channel's
                probability of 1 is that channel's open fraction in ``mask`` (the static Bernoulli that codes it in
                the fewest bits: an all-open channel costs ~0 bits instead of ``-log2 sigmoid(a_c)`` per entry);
                otherwise it is the learned prior ``sigmoid(a_c)``. The table travels in the section either way.

        Raises:
            NscError: ``mask`` not shaped ``[C, H, W]``.
        """
        if mask is None:
            p1 = torch.sigmoid(self.mask_prior_logits.detach().to(torch.float64)).cpu().numpy()
        else:
            m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
            if m.shape != self.shape:
                raise NscError(f"mask must be shaped {list(self.shape)}, got {list(m.shape)}")
            p1 = (m.reshape(self.channels, -1) > 0).mean(axis=1).astype(np.float64)
        tail = self.prior.tail_mass
        probs = np.stack([1.0 - p1, p1, np.full_like(p1, tail)], axis=1)
        C = self.channels
        return IntegerCDFTable.from_probabilities(probs, np.full(C, 3), np.zeros(C, dtype=np.int64), precision)

    @torch.no_grad()
    def encode_sections(self, name: str, values: Union[np.ndarray, torch.Tensor], meta: Optional[Dict] = None,
                        precision: int = 16) -> Tuple[Section, Section]:
        """``(mask section "mask.<name>", latent section "latents.<name>")`` of latents ``values [C, H, W]``: the
        deterministic mask coded with each channel's open fraction (:meth:`mask_cdf_table`), then the rounded latents
        where it is open, under :meth:`build_cdf_table` (both tables carried in their sections).

        Raises:
            NscError: values not shaped ``[C, H, W]``."""
        sym = to_symbols(values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values))).cpu().numpy()
        msk = (self.deterministic_mask() > 0).cpu().numpy()
        mask_sec = entropy_section(f"mask.{name}", msk.astype(np.int32), self.mask_cdf_table(precision, mask=msk), meta=meta)
        latent_sec = entropy_section(f"latents.{name}", sym, self.build_cdf_table(sym, precision), mask=msk, meta=meta)
        return mask_sec, latent_sec

    @staticmethod
    def decode_sections(mask_section: Section, latent_section: Section,
                        shape: Optional[Tuple[int, ...]] = None) -> Tuple[np.ndarray, np.ndarray]:
        """``(symbols int32 [C, H, W], mask bool [C, H, W])`` of the sections :meth:`encode_sections` wrote (their own
        tables; symbols are 0 where the mask is closed). ``shape``: what the caller's model expects, checked first.

        Raises:
            NscFormatError: another declared shape, mask values other than 0/1, a malformed payload."""
        for sec in (mask_section, latent_section):
            if shape is not None and tuple(sec.shape) != tuple(shape):
                raise NscFormatError(f"section {sec.name!r}: shape {list(sec.shape)}, model expects {list(shape)}")
        mask_sym = decode_section(mask_section, dtype=("int32",))
        if mask_sym.size and (mask_sym.min() < 0 or mask_sym.max() > 1):
            raise NscFormatError(f"section {mask_section.name!r}: values outside {{0, 1}}")
        mask = mask_sym.astype(bool)
        return decode_section(latent_section, mask=mask, dtype=("int32",)), mask
