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
from pathlib import Path

from common import RESULTS, ROOT  # noqa: E402

from nscodec.rd.plot import plot_series, series_from_rows  # noqa: E402


def load_series(names):
    """``{series: [(kilobytes, psnr_db), ...]}`` sorted by size, from ``bench/results/<name>.json`` files
    (:func:`nscodec.rd.plot.series_from_rows` over all their rows).

    Raises:
        SystemExit: a named result file does not exist (one clear message).
    """
    rows = []
    for name in names:
        path = RESULTS / f"{name}.json" if not name.endswith(".json") else Path(name)
        if not path.exists():
            raise SystemExit(f"rd_plot: no result file {path}")
        rows += json.loads(path.read_text())["rows"]
    return series_from_rows(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="+", help="result names under bench/results (or .json paths)")
    ap.add_argument("--out", help="output image (default docs/figures/<first name>.png)")
    ap.add_argument("--title", default=None)
    args = ap.parse_args()
    out = Path(args.out) if args.out else ROOT / "docs" / "figures" / f"{Path(args.names[0]).stem}.png"
    plot_series(load_series(args.names), out, args.title or ", ".join(args.names))
    print(out)


if __name__ == "__main__":
    main()
