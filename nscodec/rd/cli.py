"""The ``nscodec rd`` subcommand: a rate–distortion sweep from flags and/or a spec file.

    nscodec rd --data ../shared/data/blender/lego --scale 0.25 --methods ectensorf \
        --set ectensorf:rate-lambda=1e-5,3e-5 --posthoc fp16-zstd,uniform8,kmeans8 --steps 900 --test-views 20 \
        --workdir outputs/rd/lego --results bench/results --name rd_lego
    nscodec rd ... --backend ray --address auto          # the same points as Ray tasks on a cluster

Flags given on the command line override the spec file's values. Bad input (unknown method or setting, a value of
the wrong type, a missing scene) is one ``nscodec: error:`` line before anything is trained or written.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any, Dict

from nscodec.rd.spec import METHODS, SpecError

DEFAULT_POSTHOC = "fp16-zstd,uniform8,kmeans8"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``nscodec rd``."""
    knobs = "; ".join(f"{m}: {', '.join(s.knobs) or '-'}" for m, s in METHODS.items())
    p.add_argument("--data", "--scenes", dest="scenes", nargs="+", default=None, metavar="DIR",
                   help="scene directories (Blender, nerfstudio-data, instant-ngp or LLFF layout: the dataparser is "
                        "detected; a spec file's scenes may also name one with its options)")
    p.add_argument("--methods", default=None, help=f"comma-separated, of: {', '.join(METHODS)}")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="METHOD:KEY=V1,V2",
                   help="sweep a setting (an ns-train config field, model fields without 'pipeline.model.'); repeat for a "
                        f"grid (cartesian product). Rate knobs: {knobs}")
    p.add_argument("--spec", type=Path, default=None, help="JSON/YAML spec file (keys: methods, set, scenes, seeds, steps, budget, "
                                                           "rays, scale, test_views, posthoc, baselines)")
    p.add_argument("--seeds", default=None, help="comma-separated seeds (--machine.seed; default 0)")
    p.add_argument("--steps", type=int, default=None, help="training steps of every point (default: each preset's)")
    p.add_argument("--budget", type=str, default=None,
                   help="a multiple of each method's preset steps (e.g. 4: every point and its base train 4x their "
                        "preset's steps, schedules rescaled; default 1); not with --steps")
    p.add_argument("--rays", type=int, default=None, help="rays per batch (default: each preset's)")
    p.add_argument("--scale", type=float, default=None, help="camera resolution scale factor (default 1)")
    p.add_argument("--test-views", default=None, help="'all' (default) or N evenly spaced test views")
    p.add_argument("--posthoc", default=None, help=f"post-hoc codecs of ectensorf's nscodec-tensorf base (default {DEFAULT_POSTHOC}; "
                                                   "'' = none): fp32, fp16-zstd, uniform<bits>, kmeans<bits>")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", default=None,
                   help="leave out each method's uncompressed baseline (and the post-hoc codecs)")
    p.add_argument("--workdir", type=Path, default=None, help="where runs are cached (default outputs/rd/<name>)")
    p.add_argument("--results", type=Path, default=None, help="where <name>.json/.png/.md go (default: the workdir)")
    p.add_argument("--name", default="rd", help="name of the results (default rd)")
    p.add_argument("--doc", type=Path, default=None, help="also write the table into this Markdown file's "
                                                          "<!-- bench:NAME --> section")
    p.add_argument("--backend", choices=("local", "ray"), default="local")
    p.add_argument("--address", default=None, help="Ray cluster address (auto, ray://HOST:10001; default: a local Ray)")
    p.add_argument("--dry-run", action="store_true", help="list the points and their ns-train commands, run nothing")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite NAME.png / NAME.md (and the --doc section) from --results/NAME.json, run nothing "
                        "(NAME may list several sweeps, comma-separated)")
    p.add_argument("--merge", default=None, metavar="NAME",
                   help="with --report-only: merge the sweeps of --name (comma-separated) into one record NAME.json, "
                        "its table NAME.md and one RD plot per scene (NAME-SCENE.png)")
    p.add_argument("--readme", type=Path, default=None,
                   help="with --report-only: regenerate this README's status table from the records (commits only)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=True)
    p.add_argument("--allow-dirty", action="store_true",
                   help="run from a tree with uncommitted code (rows are marked dirty; the README generator refuses them)")


def _budget(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SpecError(f"--budget must be a number (a multiple of each preset's steps), got {value!r}") from None


def build_from_args(args: argparse.Namespace):
    """The validated :class:`~nscodec.rd.spec.Sweep` of parsed ``nscodec rd`` arguments (spec file + flags).

    Raises:
        SpecError: any bad input (see :func:`nscodec.rd.spec.build_sweep`).
    """
    from nscodec.rd.spec import build_sweep, load_spec_file, parse_posthoc, parse_set

    spec: Dict[str, Any] = load_spec_file(args.spec) if args.spec else {}

    def pick(flag: Any, key: str, default: Any) -> Any:
        return flag if flag is not None else spec.get(key, default)

    methods = pick(args.methods, "methods", None)
    if methods is None:
        raise SpecError("no methods given (--methods ectensorf,shacira,...)")
    methods = [m.strip() for m in methods.split(",")] if isinstance(methods, str) else list(methods)
    methods = [m for m in methods if m]
    for m in methods:
        if m not in METHODS:
            raise SpecError(f"unknown method {m!r} (known: {', '.join(METHODS)})")
    grid: Dict[str, Dict[str, Any]] = {}
    for m, kv in (spec.get("set") or {}).items():
        if not isinstance(kv, dict):
            raise SpecError(f"spec file: set.{m} must map settings to lists of values")
        grid[m] = {k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in kv.items()}
    for m, kv in parse_set(args.sets, methods).items():
        grid.setdefault(m, {}).update(kv)
    scenes = pick(args.scenes, "scenes", None)
    if not scenes:
        raise SpecError("no scenes given (--data DIR ...)")
    seeds = pick(args.seeds, "seeds", "0")
    try:
        seeds = [int(s) for s in (seeds.split(",") if isinstance(seeds, str) else seeds)]
    except ValueError:
        raise SpecError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    posthoc = pick(args.posthoc, "posthoc", DEFAULT_POSTHOC)
    return build_sweep(methods, [scenes] if isinstance(scenes, (str, dict)) else list(scenes), grid, seeds=seeds,
                       steps=pick(args.steps, "steps", None), rays=pick(args.rays, "rays", None),
                       budget=_budget(pick(args.budget, "budget", 1.0)),
                       scale=float(pick(args.scale, "scale", 1.0)), test_views=str(pick(args.test_views, "test_views", "all")),
                       baselines=bool(pick(args.baselines, "baselines", True)),
                       posthoc=parse_posthoc(posthoc if isinstance(posthoc, str) else ",".join(posthoc)),
                       workdir=args.workdir or Path("outputs/rd") / args.name)


def rd_command(args: argparse.Namespace) -> int:
    """Run ``nscodec rd``: validate everything, then run the points not finished yet and write the outputs."""
    import os

    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")  # no compile-process pool (nerfstudio's torch.compile)
    if getattr(args, "allow_dirty", False):
        from nscodec.rd.results import ALLOW_DIRTY_ENV

        os.environ[ALLOW_DIRTY_ENV] = "1"
    from nscodec.rd.runner import run_sweep
    from nscodec.rd.results import ns_train_flags

    if args.report_only:
        import json

        from nscodec.rd.runner import write_outputs

        results = args.results or args.workdir or Path("outputs/rd") / args.name
        rows = []
        for name in args.name.split(","):  # several sweeps: one README from all of them
            path = results / f"{name}.json"
            if not path.is_file():
                raise SpecError(f"--report-only: no results file {path}")
            saved = json.loads(path.read_text())
            rows += saved["rows"]
            if args.readme is None and not args.merge:
                out = write_outputs(saved["rows"], results, name, saved["command"], doc=args.doc, doc_section=name,
                                    commit=saved.get("git_commit"), total=saved.get("points"))
                print(", ".join(dict.fromkeys(str(p) for p in out.values())))
        if args.merge:  # one record, table and per-scene plots from several sweeps (a point measured twice: the later)
            from nscodec.rd.results import write_results

            merged: Dict[str, Any] = {}
            for r in rows:
                if r["key"] not in merged or str(r.get("date", "")) >= str(merged[r["key"]].get("date", "")):
                    merged[r["key"]] = r
            command = "nscodec " + shlex.join(args.argv if args.argv is not None else sys.argv[1:])
            path = write_results(results / f"{args.merge}.json", args.merge, list(merged.values()), command,
                                 extra={"sources": args.name.split(","), "points": len(merged)})
            out = write_outputs(list(merged.values()), results, args.merge, command, doc=args.doc, doc_section=args.merge)
            print(", ".join(dict.fromkeys(str(p) for p in [path, *out.values()])))
        if args.readme is not None:
            from nscodec.rd.report import readme_status, update_readme

            update_readme(args.readme, readme_status(rows))
            print(f"{args.readme}: status table from {args.name}")
        return 0
    sweep = build_from_args(args)
    if args.dry_run:
        for p in sweep.points:
            flags = [p.method, *ns_train_flags(p.scene, sweep.workdir / "train", p.scale), "--experiment-name", p.train_key,
                     "--machine.seed", str(p.seed), *p.train_flags, *p.dataparser_flags]
            export = " ".join(f"{k}={v}" for k, v in p.export_settings)
            print(f"{p.key}  [{p.role}: {p.series}]" + (f"  export: {export}" if export else ""))
            print("    ns-train " + shlex.join(flags))
        print(f"{len(sweep.points)} points, {len({p.train_key for p in sweep.points})} trainings")
        return 0
    argv = args.argv if args.argv is not None else sys.argv[1:]
    command = "nscodec " + shlex.join(argv)
    results = args.results or sweep.workdir
    rows = run_sweep(sweep, results, args.name, command, backend=args.backend, address=args.address, progress=args.progress,
                     doc=args.doc, doc_section=args.name)
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"{ok}/{len(rows)} points ok; results: {results / (args.name + '.json')}, {results / (args.name + '.png')}, "
          f"{results / (args.name + '.md')}")
    return 0 if ok == len(rows) else 1


def add_subparser(subparsers: "argparse._SubParsersAction") -> None:
    """Register ``nscodec rd``."""
    p = subparsers.add_parser("rd", help="rate–distortion sweep: train, export, decode, evaluate many points; JSON + plot + table",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=rd_command, argv=None)
