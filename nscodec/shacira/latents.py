"""Discrete latents of SHACIRA (Girish, Shrivastava, Gupta 2023, "SHACIRA: Scalable HAsh-grid Compression for
Implicit Neural Representations", ICCV): soft rounding by annealing (Sec. 3.2, Eq. 4) and its schedule.

The integer latents ``Q`` are kept as continuous proxies ``Q̂``. During training ``Q`` is obtained from ``Q̂`` by

* **annealed soft rounding** (Eq. 4, after Yang, Bamler & Mandt 2020, "stochastic Gumbel annealing"): with
  ``r = Q̂ − ⌊Q̂⌋ ∈ [0, 1)``, a two-class relaxed (Gumbel-softmax, Jang et al. 2017) gate chooses between
  ``⌊Q̂⌋`` and ``⌈Q̂⌉`` with logits ``−atanh(r)/τ`` (floor) and ``−atanh(1 − r)/τ`` (ceil), so a value close
  to one end is likely rounded to it. (Eq. 4 as printed labels the gate the other way round, which contradicts
  the sentence that follows it and SGA; we implement the reading in which the nearer integer is more likely.)
  The sample ``w_floor ⌊Q̂⌋ + w_ceil ⌈Q̂⌉`` lies in ``[⌊Q̂⌋, ⌈Q̂⌉]``; gradients reach ``Q̂`` through the gate
  weights (reparameterisation). As ``τ → 0`` the gate becomes deterministic rounding;
* **straight-through rounding** (Bengio et al. 2013) once the annealing period is over (and for the whole run
  when the annealing fraction is 0 — the paper's "plain STE" ablation, Fig. 10);

the temperature follows the shared schedule :func:`nscodec.coding.quantization.annealed_temperature`;
* plain ``round`` at evaluation / export: exactly the integers that the ``.nsc`` file stores.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from nscodec.errors import NscError
from nscodec.coding.quantization import quantize

__all__ = ["soft_round", "discretize"]

_EPS = 1e-6


def soft_round(q_hat: Tensor, tau: float, hard: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """Annealed stochastic soft rounding of SHACIRA Eq. 4 (Gumbel reparameterisation).

    Args:
        q_hat: continuous proxies ``Q̂`` of any shape ``[*]`` (latent units, float).
        tau: temperature ``τ > 0`` (1 at the start of training, annealed towards 0).
        hard: return the one-hot choice (exactly ``⌊Q̂⌋`` or ``⌈Q̂⌉``) with the soft sample's gradient
            (straight-through Gumbel-softmax) instead of the relaxed value.
        generator: optional RNG for the Gumbel noise.

    Returns:
        Tensor shaped like ``q_hat`` with values in ``[⌊Q̂⌋, ⌈Q̂⌉]``, differentiable w.r.t. ``q_hat``.

    Raises:
        NscError: ``tau`` is not a positive finite number.
    """
    if not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise NscError(f"soft_round: temperature must be a positive finite number, got {tau!r}")
    lo = torch.floor(q_hat).detach()
    r = (q_hat - lo).clamp(_EPS, 1.0 - _EPS)
    logits = torch.stack([-torch.atanh(r), -torch.atanh(1.0 - r)], dim=-1) / tau  # [*, 2]: floor, ceil
    u = torch.rand(logits.shape, device=q_hat.device, dtype=q_hat.dtype, generator=generator)
    gumbel = -torch.log(-torch.log(u.clamp(_EPS, 1.0 - _EPS)))
    w = torch.softmax((logits + gumbel) / tau, dim=-1)
    if hard:
        one_hot = torch.nn.functional.one_hot(w.argmax(-1), 2).to(w.dtype)
        w = one_hot + (w - w.detach())
    return lo + w[..., 1]  # w_floor * lo + w_ceil * (lo + 1)


def discretize(q_hat: Tensor, mode: str, tau: float = 1.0) -> Tensor:
    """``Q = discretize(Q̂)`` (SHACIRA Eq. 6).

    Args:
        q_hat: proxies ``[*]``.
        mode: ``"anneal"`` (:func:`soft_round` at ``tau``), ``"ste"`` (rounding with a straight-through gradient,
            :func:`nscodec.coding.quantization.quantize`) or ``"round"`` (hard rounding, no gradient: evaluation
            and export).
        tau: temperature for ``"anneal"``.

    Raises:
        NscError: unknown ``mode``.
    """
    if mode == "anneal":
        return soft_round(q_hat, tau)
    if mode in ("ste", "round"):
        return quantize(q_hat, mode)
    raise NscError(f"discretize: unknown mode {mode!r} (expected 'anneal', 'ste' or 'round')")
