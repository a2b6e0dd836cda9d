"""The rate a model optimises against the bytes its file takes: for every point of an ``nscodec rd`` sweep, the
model's own rate term at the end of training (the training estimate — additive-noise likelihood, what the loss
sees — and the ideal rate of the rounded symbols under the learned float density) beside the payload of its
entropy-coded sections in the ``.nsc`` (the ANS streams, and the CDF tables they carry), and the rest of the file:
header (JSON config, metadata) and the other sections.

    python bench/rate_vs_bytes.py --sweep bench/results/refactor_check_before.json --name rate_vs_bytes

Reads each point's training checkpoint (``config.yml`` of its run) and its exported ``.nsc``; trains nothing.
Methods without a rate term (nscodec-tensorf's post-hoc codecs, vqad's learned indices) report their file's parts only.
The rate term covers a method's latents (:data:`RATED`); its other entropy-coded sections (e.g. quantized MLPs) are
counted apart.
"""

from __future__ import annotations

import argparse
import json
import struct
from pathlib import Path
from typing import Any, Dict

_HEAD = struct.Struct("<BBBI")  # the entropy-section payload header of nscodec.coding.tensor_codec
#: the sections each method's rate term covers (its latents; ectensorf also its mask): the rest are other parts
RATED = {"ectensorf": ("latents.", "mask."), "shacira": ("latents.",), "codecnerf": ("delta.matrices.",)}


def entropy_parts(sec) -> Dict[str, int]:
    """``{table, stream}`` bytes of an ANS section (the CDF table it carries and the coded stream)."""
    _, _, _, table = _HEAD.unpack_from(sec.payload, 0)
    return {"table": table, "stream": len(sec.payload) - _HEAD.size - table}


def rate_terms(model) -> Dict[str, float]:
    """``{train_bits, rounded_bits}``: the model's rate term in training (noise proxy, as its loss has it at the last
    step) and the ideal rate of its rounded symbols under the learned density, in bits."""
    import torch

    name = type(model).__name__
    out: Dict[str, float] = {}
    torch.manual_seed(0)
    with torch.no_grad():
        for train in (True, False):
            model.train(train)
            if name == "ECTensoRFModel":
                bits = model.decode_planes(rate=True)["rate_bits"]
            elif name == "ShaciraModel":
                bits = model.rate_bits()
            elif name == "CodecNeRFModel":
                bits = model.delta_rate_bits()
            else:
                return {}
            out["train_bits" if train else "rounded_bits"] = float(bits)
    model.eval()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", type=Path, required=True, help="an nscodec rd results file (its points' runs and files)")
    ap.add_argument("--name", default="rate_vs_bytes")
    args = ap.parse_args()

    from nerfstudio.utils.eval_utils import eval_setup

    from nscodec.coding.container import read_nsc
    from nscodec.rd.results import ROOT, update_markdown_section, write_results

    sweep = json.loads(args.sweep.read_text())
    rows = []
    for rec in sweep["rows"]:
        if rec.get("status") != "ok" or not rec.get("nsc"):
            continue
        nsc = read_nsc(rec["nsc"])
        coded = {"table": 0, "stream": 0}
        other_ans = other = 0
        rated = RATED.get(rec["method"], ())
        for s in nsc.sections.values():
            if s.coder == "ans" and s.name.startswith(rated or ("",)):
                for k, v in entropy_parts(s).items():
                    coded[k] += v
            elif s.coder == "ans":
                other_ans += s.nbytes
            else:
                other += s.nbytes
        row: Dict[str, Any] = {"point": rec["key"], "method": rec["method"], "scene": rec["scene"], "bytes": rec["bytes"],
                               "header_bytes": nsc.header_bytes, "ans_stream_bytes": coded["stream"],
                               "ans_table_bytes": coded["table"], "other_entropy_coded_bytes": other_ans,
                               "other_section_bytes": other, "rated_sections": list(rated)}
        config = Path(rec["command"].split("--output-dir ")[1].split()[0]) / rec["train_key"] / rec["method"] / "run" / "config.yml"
        if config.is_file() and rec.get("role") == "method":
            _, pipeline, _, _ = eval_setup(config, test_mode="inference")
            model = pipeline.model
            if not model.finalized:
                model = model.finalized_copy()
            row.update(rate_terms(model))
            if "rounded_bits" in row and coded["stream"]:
                row["stream_over_rounded"] = coded["stream"] * 8 / row["rounded_bits"]
                row["stream_over_train"] = coded["stream"] * 8 / row["train_bits"]
        row["header_share"] = row["header_bytes"] / row["bytes"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    command = "python bench/rate_vs_bytes.py --sweep " + str(args.sweep) + " --name " + args.name
    write_results(ROOT / "bench/results" / f"{args.name}.json", args.name, rows, command)
    lines = [f"`{command}`: the model's rate term against its file (bits → bytes ÷ 8).", "",
             "| method | scene | file bytes | header | rated ANS streams | their CDF tables | other ANS sections | other sections | "
             "rate term (training) | rate of rounded symbols | streams ÷ rounded | streams ÷ training |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        f = lambda k: f"{r[k] / 8:,.0f} B" if k in r else "–"  # noqa: E731
        g = lambda k: f"{r[k]:.3f}" if k in r else "–"  # noqa: E731
        lines.append(f"| {r['method']} | {r['scene']} | {r['bytes']:,} | {r['header_bytes']:,} ({100 * r['header_share']:.1f} %) | "
                     f"{r['ans_stream_bytes']:,} | {r['ans_table_bytes']:,} | {r['other_entropy_coded_bytes']:,} | "
                     f"{r['other_section_bytes']:,} | {f('train_bits')} | "
                     f"{f('rounded_bits')} | {g('stream_over_rounded')} | {g('stream_over_train')} |")
    update_markdown_section(ROOT / "docs/benchmarks.md", args.name, "\n".join(lines))


if __name__ == "__main__":
    main()
