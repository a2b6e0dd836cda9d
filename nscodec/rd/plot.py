"""Rate–distortion plot: test PSNR (dB) against file size (KB on disk, log x), one line per series.

Shared by ``nscodec rd`` and ``bench/rd_plot.py``. A series with one point (an uncompressed base, a single
post-hoc codec) is drawn as a star without a line. Needs matplotlib (the ``bench`` extra).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

__all__ = ["series_from_rows", "plot_series"]

Series = Dict[str, List[Tuple[float, float]]]


def series_from_rows(rows: Iterable[Dict[str, Any]]) -> Series:
    """``{label: [(kilobytes, psnr_db), ...]}`` sorted by size, from result rows.

    Every row with ``psnr`` and ``bytes`` is a point (failed sweep points have neither); rows group by ``series``
    (else ``method``). A series whose rows all carry ``psnr_all`` (the whole test split) is plotted with it and its
    label marked "(all views)".
    """
    series: Dict[str, List[Tuple[float, float, Optional[float]]]] = {}
    for r in rows:
        if r.get("psnr") is None or r.get("bytes") is None:
            continue
        key = r.get("series") or r.get("method", "?")
        series.setdefault(key, []).append((r["bytes"] / 1e3, r["psnr"], r.get("psnr_all")))
    out: Series = {}
    for k, v in series.items():
        full = all(p[2] is not None for p in v)
        out[k + (" (all views)" if full else "")] = sorted((kb, (pa if full else ps)) for kb, ps, pa in v)
    return out


def plot_series(series: Series, out: Path, title: str = "") -> Path:
    """Draw ``series`` (from :func:`series_from_rows`) and save it as the image ``out`` (PNG at 120 dpi).

    Raises:
        ImportError: matplotlib is not installed (``pip install nscodec[bench]``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9.5, 4.5))
    colours = plt.get_cmap("tab10").colors + plt.get_cmap("tab20").colors[1::2]  # 20 distinct colours
    for i, (label, pts) in enumerate(series.items()):
        xs, ys = zip(*pts)
        base = "uncompressed" in label or "post-hoc" in label  # a baseline: a star; a method: dots (a line for a curve)
        ax.plot(xs, ys, marker="*" if base else "o", markersize=11 if base else 6, color=colours[i % 20],
                linestyle="-" if len(pts) > 1 else "none", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KB, .nsc on disk)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    if series:  # beside the axes, so no point hides behind it
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
