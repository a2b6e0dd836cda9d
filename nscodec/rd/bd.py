"""Bjøntegaard deltas: how codecs are ranked on rate–distortion curves.

G. Bjøntegaard, "Calculation of average PSNR differences between RD-curves", VCEG-M33 (2001): fit each curve and
average the gap between them over the range where both exist — in log-rate at equal PSNR (**BD-rate**, percent of
bytes; negative = fewer bytes for the same quality) and in PSNR at equal log-rate (**BD-PSNR**, dB; positive =
better at the same bytes). The fit is piecewise cubic Hermite interpolation (PCHIP), as the JVET common test
conditions use it, so three points per curve suffice and the fit does not overshoot between them.

A curve is ``[(bytes, psnr_db), ...]`` (bytes on disk). Points that would make the interpolated variable
non-increasing (a point below its neighbours: not on the curve's upper envelope) are dropped first.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

__all__ = ["bd_rate", "bd_psnr", "envelope"]

Curve = Sequence[Tuple[float, float]]


def envelope(curve: Curve) -> List[Tuple[float, float]]:
    """The points of ``curve`` (``(bytes, psnr)``) on its rate–distortion envelope, by increasing bytes: each one
    better than every smaller file (PSNR strictly increasing with bytes); non-finite or non-positive points dropped."""
    pts = sorted((float(b), float(p)) for b, p in curve if b > 0 and math.isfinite(b) and math.isfinite(p))
    out: List[Tuple[float, float]] = []
    for b, p in pts:
        if out and b == out[-1][0]:
            if p > out[-1][1]:
                out[-1] = (b, p)
            continue
        if not out or p > out[-1][1]:
            out.append((b, p))
    return out


def _integral(xs: List[float], ys: List[float], lo: float, hi: float) -> float:
    from scipy.interpolate import PchipInterpolator

    return float(PchipInterpolator(xs, ys).integrate(lo, hi))


def bd_rate(reference: Curve, test: Curve) -> Optional[float]:
    """BD-rate of ``test`` against ``reference`` (percent: the average bytes difference at equal PSNR over the PSNR
    range both curves cover); None when either has fewer than two envelope points or the ranges do not overlap."""
    a, b = envelope(reference), envelope(test)
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = max(a[0][1], b[0][1]), min(a[-1][1], b[-1][1])
    if not hi > lo:
        return None
    ia = _integral([p for _, p in a], [math.log(r) for r, _ in a], lo, hi)
    ib = _integral([p for _, p in b], [math.log(r) for r, _ in b], lo, hi)
    return (math.exp((ib - ia) / (hi - lo)) - 1.0) * 100.0


def bd_psnr(reference: Curve, test: Curve) -> Optional[float]:
    """BD-PSNR of ``test`` against ``reference`` (dB: the average PSNR difference at equal bytes over the log-rate
    range both curves cover); None when either has fewer than two envelope points or the ranges do not overlap."""
    a, b = envelope(reference), envelope(test)
    if len(a) < 2 or len(b) < 2:
        return None
    lo, hi = max(math.log(a[0][0]), math.log(b[0][0])), min(math.log(a[-1][0]), math.log(b[-1][0]))
    if not hi > lo:
        return None
    ia = _integral([math.log(r) for r, _ in a], [p for _, p in a], lo, hi)
    ib = _integral([math.log(r) for r, _ in b], [p for _, p in b], lo, hi)
    return (ib - ia) / (hi - lo)
