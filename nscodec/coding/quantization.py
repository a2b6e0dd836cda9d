"""Quantization of continuous latents for learned compression.

Training-time proxies and test-time rounding, following

* Ballé, Laparra, Simoncelli 2017, "End-to-end optimized image compression" (ICLR): replacing
  rounding by additive uniform noise U(-1/2, 1/2) makes the density of the noisy latent equal to the
  discrete pmf of the rounded latent convolved with a box, so ``-log2 p(y + u)`` is a differentiable,
  unbiased *rate* proxy.
* Minnen, Ballé, Toderici 2018, "Joint autoregressive and hierarchical priors for learned image
  compression" (NeurIPS), and Minnen & Singh 2020, "Channel-wise autoregressive entropy models for learned
  image compression" (ICIP), "mixed" quantization: use noise for the rate term and rounding with a
  straight-through estimator (STE; Bengio et al. 2013) for the *distortion* path, so the decoder is
  trained on exactly the values it sees at test time.

Modes of :func:`quantize`:

``"noise"``       ``x + u``, ``u ~ U(-0.5, 0.5)`` i.i.d. — the rate proxy (training only).
``"ste"``         ``round(x - offset) + offset`` in the forward pass, identity gradient in the backward pass
                  — the distortion path.
``"round"``       ``round(x - offset) + offset`` with no gradient — evaluation / export.
``"dequantize"``  ``x + offset`` where ``x`` holds integer symbols — decoder side.

Rounding is to the integer grid shifted by ``offset`` (e.g. a per-channel median); :func:`to_symbols`
produces the integer *symbols* ``round(x - offset)`` that are entropy-coded.
"""

from __future__ import annotations

from typing import Optional

import torch

from nscodec.errors import NscError

__all__ = ["QUANTIZATION_MODES", "quantize", "to_symbols", "annealed_temperature"]

QUANTIZATION_MODES = ("noise", "ste", "round", "dequantize")

_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def _check_tensor(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise NscError(f"{what} must be a torch.Tensor, got {type(x).__name__}")


def _check_offset(x: torch.Tensor, offset: Optional[torch.Tensor]) -> None:
    """Raise NscError unless ``offset`` is None or a tensor broadcastable to ``x``."""
    if offset is None:
        return
    _check_tensor(offset, "offset")
    try:
        torch.broadcast_shapes(x.shape, offset.shape)
    except RuntimeError:
        raise NscError(
            f"offset of shape {tuple(offset.shape)} is not broadcastable to x of shape {tuple(x.shape)}"
        ) from None


def quantize(x: torch.Tensor, mode: str, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Quantize (or simulate quantizing) a latent tensor.

    Args:
        x: latent tensor of any shape ``[*]`` (floating point). For ``mode="dequantize"`` it holds
            integer symbols (any dtype; returned as float32 unless already floating point).
        mode: one of ``"noise"`` (additive U(-0.5, 0.5) noise, the training rate proxy of Ballé et al.
            2017), ``"ste"`` (rounding with a straight-through identity gradient, the distortion path of
            Minnen et al. 2018's mixed quantization), ``"round"`` (hard rounding, no gradient) or
            ``"dequantize"`` (``x + offset``).
        offset: optional tensor broadcastable to ``x`` (e.g. per-channel medians shaped ``[C, 1, ...]``);
            the quantization grid is ``offset + Z``. Ignored by ``"noise"`` (noise is shift invariant).

    Returns:
        Tensor with the shape of ``x`` (the broadcast shape with ``offset``), in latent units.

    Raises:
        NscError: unknown ``mode``, ``x`` not a tensor, or ``offset`` not broadcastable to ``x``.
    """
    _check_tensor(x, "x")
    if mode not in QUANTIZATION_MODES:
        raise NscError(f"unknown quantization mode {mode!r}; expected one of {', '.join(QUANTIZATION_MODES)}")
    _check_offset(x, offset)
    if mode == "dequantize":
        out = x if x.is_floating_point() else x.to(torch.float32)
        return out + offset if offset is not None else out
    if not x.is_floating_point():
        raise NscError(f"quantize(mode={mode!r}) needs a floating-point tensor, got {x.dtype}")
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    shifted = x - offset if offset is not None else x
    rounded = torch.round(shifted)
    if offset is not None:
        rounded = rounded + offset
    if mode == "round":
        return rounded.detach()
    # "ste": forward = rounded value, backward = identity.
    return x + (rounded - x).detach()


def to_symbols(x: torch.Tensor, offset: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Map a latent tensor to the integer symbols that are entropy-coded: ``round(x - offset)``.

    Args:
        x: latent tensor of any shape ``[*]`` (floating point, finite).
        offset: optional tensor broadcastable to ``x`` (same convention as :func:`quantize`).

    Returns:
        ``torch.int32`` tensor of the (broadcast) shape of ``x``, detached from autograd.

    Raises:
        NscError: ``x`` not a floating-point tensor, non-finite values (NaN/inf latents), or a rounded value
            outside the int32 range.
    """
    _check_tensor(x, "x")
    if not x.is_floating_point():
        raise NscError(f"to_symbols needs a floating-point tensor, got {x.dtype}")
    _check_offset(x, offset)
    if offset is not None:
        q = torch.round(x.detach() - offset.detach())
    else:
        q = torch.round(x.detach())
    if q.numel() == 0:
        return q.to(torch.int32)
    if not bool(torch.isfinite(q).all()):
        raise NscError("to_symbols: latent tensor contains NaN or infinite values")
    lo, hi = float(q.min()), float(q.max())
    if lo < _INT32_MIN or hi > _INT32_MAX:
        raise NscError(f"to_symbols: rounded latents span [{lo:g}, {hi:g}], outside the int32 symbol range")
    return q.to(torch.int32)


def annealed_temperature(step: int, total_steps: int, fraction: float = 1.0, tau_start: float = 1.0, tau_end: float = 0.05):
    """The temperature of every annealed relaxation in nscodec (SHACIRA's soft rounding, Eq. 4; ectensorf's
    Gumbel-softmax masks): exponential decay from ``tau_start`` to ``tau_end`` over the first
    ``fraction × total_steps`` steps, ``None`` afterwards (the relaxation is over: hard decisions from then on).

    Args:
        step: steps since annealing began (≥ 0).
        total_steps: length of the run in steps.
        fraction: annealing period as a fraction of the run in ``[0, 1]`` (SHACIRA Fig. 10; 0 = never anneal).
        tau_start, tau_end: temperatures (> 0) at the start and at the end of the period.

    Returns:
        ``τ`` (float) while annealing, else ``None``.

    Raises:
        NscError: ``fraction`` outside ``[0, 1]`` or non-positive temperatures.
    """
    if not 0.0 <= fraction <= 1.0:
        raise NscError(f"annealing fraction must lie in [0, 1], got {fraction}")
    if not (tau_start > 0 and tau_end > 0):
        raise NscError(f"temperatures must be > 0, got {tau_start}, {tau_end}")
    period = fraction * max(1, total_steps)
    step = max(0, step)
    if step >= period:
        return None
    return float(tau_start * (tau_end / tau_start) ** (step / period))
