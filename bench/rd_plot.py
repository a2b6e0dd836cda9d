"""Rate–distortion plot (PSNR in dB against file size in KB, log x) from bench result files.

    python bench/rd_plot.py ectensorf_rd                      # bench/results/ectensorf_rd.json → docs/figures/ectensorf_rd.png
    python bench/rd_plot.py ectensorf_rd shacira_rd --out docs/figures/lego_rd.png --title "lego 200²"

Every row with ``psnr`` and ``bytes`` is a point; rows are grouped into lines by ``series`` (else ``method``).
A series whose rows all carry ``psnr_all`` (the whole test split) is plotted with it, marked "all views".
Shared by all methods: any ``bench/results/<name>.json`` written by :func:`common.record` works.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, ROOT  # noqa: E402


def load_series(names):
    """``{series: [(kilobytes, psnr_db), ...]}`` sorted by size, from ``bench/results/<name>.json`` files.

    Raises:
        SystemExit: a named result file does not exist (one clear message).
    """
    series = {}
    for name in names:
        path = RESULTS / f"{name}.json" if not name.endswith(".json") else Path(name)
        if not path.exists():
            raise SystemExit(f"rd_plot: no result file {path}")
        for r in json.loads(path.read_text())["rows"]:
            if r.get("psnr") is None or r.get("bytes") is None:
                continue
            key = r.get("series") or r.get("method", "?")
            series.setdefault(key, []).append((r["bytes"] / 1e3, r["psnr"], r.get("psnr_all")))
    out = {}
    for k, v in series.items():
        full = all(p[2] is not None for p in v)
        out[k + (" (all views)" if full else "")] = sorted((kb, (pa if full else ps)) for kb, ps, pa in v)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="result names under bench/results (or .json paths)")
    ap.add_argument("--out", help="output image (default docs/figures/<first name>.png)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = load_series(args.names)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in series.items():
        xs, ys = zip(*pts)
        ax.plot(xs, ys, marker="o" if len(pts) > 1 else "*", markersize=5 if len(pts) > 1 else 11,
                linestyle="-" if len(pts) > 1 else "none", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("file size (KB, .nsc on disk)")
    ax.set_ylabel("test PSNR (dB)")
    ax.set_title(args.title or ", ".join(args.names))
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    out = Path(args.out) if args.out else ROOT / "docs" / "figures" / f"{Path(args.names[0]).stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
