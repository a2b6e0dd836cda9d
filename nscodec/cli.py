"""``nscodec`` command-line interface.

Subcommands are registered in :data:`COMMANDS` (name -> function adding an argparse sub-parser whose
``func`` default runs the command and returns an exit code), so other modules can add commands::

    from nscodec import cli
    def _add_mycmd(subparsers): ...
    cli.COMMANDS["mycmd"] = _add_mycmd

Currently: ``nscodec info FILE.nsc`` — print what a ``.nsc`` file holds.

Exit codes: 0 success; 2 for a user-facing error (malformed/unsupported ``.nsc`` file, missing file,
bad arguments), reported as ONE line ``nscodec: error: <message>`` on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, Dict, List, Optional, Sequence, TextIO

__all__ = ["main", "build_parser", "COMMANDS", "printable"]


def printable(text: Any) -> str:
    """``text`` (``str()`` of it) with every character a terminal could act on escaped as Python does (``\\x1b``,
    ``\\n``, ``\\ud800``): control codes, escapes, separators other than the space, and lone surrogates (which no
    encoder can write). What ``nscodec`` prints from a file goes through this."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
                   for c in str(text))


def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, dict):
        text = f"{{{len(value)} keys}}"
    elif isinstance(value, list) and len(value) > 8:
        text = f"[{len(value)} items]"
    else:
        text = repr(value)
    text = printable(text)
    return text if len(text) <= width else text[: width - 3] + "..."


def _format_table(rows: List[List[str]], right: Sequence[int]) -> List[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for r in rows:
        cells = [r[i].rjust(widths[i]) if i in right else r[i].ljust(widths[i]) for i in range(len(r))]
        lines.append("  ".join(cells).rstrip())
    return lines


def info_command(args: argparse.Namespace, out: Optional[TextIO] = None) -> int:
    """Print method, format version, total bytes, complete flag, a config summary and the section table
    (name, coder, dtype, shape, bytes, % of file) of ``args.file``.

    Truncated files are shown as a prefix (``complete: False``; absent sections marked ``missing``).

    Raises:
        NscFormatError / FileNotFoundError: propagated to :func:`main`, which reports them (exit 2).
    """
    from nscodec.coding.container import read_nsc

    out = sys.stdout if out is None else out
    f = read_nsc(args.file, allow_prefix=True)
    total = max(f.total_bytes, 1)
    print(f"file:        {printable(args.file)}", file=out)
    print(f"method:      {printable(f.method)}", file=out)
    print(f"format:      .nsc {f.version[0]}.{f.version[1]}", file=out)
    print(f"total bytes: {f.total_bytes}" + ("" if f.complete else f" (only {f.available_bytes} present)"), file=out)
    print(f"complete:    {f.complete}", file=out)
    print(f"header:      {f.header_bytes} bytes ({100.0 * f.header_bytes / total:.1f}%)", file=out)
    if f.config:
        print("config:", file=out)
        for key, value in f.config.items():
            print(f"  {printable(key)}: {_short(value)}", file=out)
    else:
        print("config:      {}", file=out)
    if f.meta:
        print("meta:", file=out)
        for key, value in f.meta.items():
            print(f"  {printable(key)}: {_short(value)}", file=out)
    print(f"sections ({len(f.index)}):", file=out)
    if f.index:
        rows = [["name", "coder", "dtype", "shape", "bytes", "% of file"]]
        for s in f.index:
            rows.append(
                [
                    printable(s.name),
                    printable(s.coder),
                    printable(s.dtype),
                    "x".join(str(d) for d in s.shape) or "scalar",
                    str(s.nbytes),
                    f"{100.0 * s.nbytes / total:.1f}%" + ("" if s.present else " missing"),
                ]
            )
        for line in _format_table(rows, right=(4, 5)):
            print("  " + line, file=out)
    from nscodec.coding.lod import describe_lods

    lods = describe_lods(f)
    if len(lods) > 1:
        print("levels of detail (a prefix of this many bytes decodes the level):", file=out)
        rows = [["lod", "bytes", "% of file"]] + [[str(r["lod"]), str(r["bytes"]), f"{r['percent']:.1f}%"] for r in lods]
        for line in _format_table(rows, right=(0, 1, 2)):
            print("  " + line, file=out)
    return 0


def _add_info(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("info", help="show the contents of a .nsc file", description=info_command.__doc__)
    p.add_argument("file", help="path to a .nsc file")
    p.set_defaults(func=info_command)


def export_command(args: argparse.Namespace) -> int:
    """Same as ``ns-export compressed``: checkpoint of a training ``config.yml`` → ``.nsc``. The cheap checks (the
    config exists, the target does not) come before nerfstudio is imported."""
    from pathlib import Path

    out = Path(args.output_dir)
    if not Path(args.load_config).is_file():
        raise FileNotFoundError(f"training config not found: {args.load_config}")
    if (out / args.filename).exists() and not args.overwrite:
        raise FileExistsError(f"{out / args.filename} already exists; pass --overwrite to replace it")
    from nscodec.tools.export import export_from_config

    out.mkdir(parents=True, exist_ok=True)
    export_from_config(Path(args.load_config), out / args.filename, overwrite=args.overwrite, load_step=args.load_step)
    return 0


def _add_export(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("export", help="write a trained model as .nsc (same as `ns-export compressed`)")
    p.add_argument("--load-config", required=True, help="config.yml of a training run")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--filename", default="scene.nsc")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--load-step", type=int, default=None, help="step of the checkpoint to export (default: the latest)")
    p.set_defaults(func=export_command)


def eval_command(args: argparse.Namespace) -> int:
    """Decode a ``.nsc`` and print PSNR / SSIM / bytes on a split as JSON (optionally write it to a file)."""
    import json
    from pathlib import Path

    from nscodec.tools.evaluate import evaluate_nsc

    res = evaluate_nsc(
        Path(args.file), Path(args.data) if args.data else None, args.split, args.scale_factor, lod=args.lod, every=args.every
    )
    if not args.per_view:
        res.pop("per_view", None)
    text = json.dumps(res, indent=2)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")
    return 0


def _add_eval(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("eval", help="decode a .nsc and measure PSNR/SSIM against a dataset split")
    p.add_argument("file", help="path to a .nsc file")
    p.add_argument("--data", help="dataset directory (default: the one recorded in the file)")
    p.add_argument("--split", default="test")
    p.add_argument("--scale-factor", type=float, default=None, help="camera resolution scale (default: as trained)")
    p.add_argument("--every", type=int, default=1, help="evaluate every N-th view")
    p.add_argument("--per-view", action="store_true", help="include per-view metrics")
    p.add_argument("--lod", type=int, default=None, help="decode only the file prefix of this level of detail")
    p.add_argument("--output", help="also write the JSON here")
    p.set_defaults(func=eval_command)


def make_scene_command(args: argparse.Namespace) -> int:
    """Generate a procedural scene — an object in Blender layout, or with ``--capture`` a capture of it in an
    environment (nerfstudio-data or LLFF layout) — no download."""
    from nscodec.scenes import SceneSpec, generate_blender_scene

    spec = SceneSpec.random(args.random) if args.random is not None else None
    if args.capture:
        from nscodec.scenes.captures import generate_capture_scene

        width = args.width or args.resolution
        path = generate_capture_scene(args.output, args.capture, spec, width=width, height=args.height or width * 3 // 4,
                                      n_views=args.views, seed=args.seed, overwrite=args.overwrite, layout=args.layout)
    else:
        path = generate_blender_scene(
            args.output, spec=spec, resolution=args.resolution, n_train=args.n_train, n_val=args.n_val,
            n_test=args.n_test, seed=args.seed, overwrite=args.overwrite,
        )
    print(path)
    return 0


def _add_make_scene(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("make-scene", help="generate a synthetic scene (Blender layout) or a capture of one (--capture)")
    p.add_argument("output")
    p.add_argument("--resolution", type=int, default=100)
    p.add_argument("--n-train", type=int, default=40)
    p.add_argument("--n-val", type=int, default=5)
    p.add_argument("--n-test", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--random", type=int, default=None, help="random multi-object scene with this seed")
    p.add_argument("--capture", choices=("unbounded", "forward"), default=None,
                   help="a capture of the scene in an environment: 360° around it (unbounded) or facing it (forward)")
    p.add_argument("--layout", choices=("nerfstudio", "llff"), default=None,
                   help="--capture: the files written (default: nerfstudio-data for unbounded, LLFF for forward)")
    p.add_argument("--width", type=int, default=None, help="--capture: image width (default --resolution)")
    p.add_argument("--height", type=int, default=None, help="--capture: image height (default 3/4 of the width)")
    p.add_argument("--views", type=int, default=60, help="--capture: number of images (nerfstudio's split holds out 10%%)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=make_scene_command)


def _add_demo(subparsers: "argparse._SubParsersAction") -> None:
    from nscodec.tools.demo import add_arguments, demo_command  # import-light: torch is imported when the demo runs

    p = subparsers.add_parser("demo", help="end to end: make a scene, train on CPU, export .nsc, decode, evaluate")
    add_arguments(p)
    p.set_defaults(func=demo_command)


def _add_render(subparsers: "argparse._SubParsersAction") -> None:
    from nscodec.tools.video import add_arguments, render_command  # import-light: nerfstudio is imported when it runs

    p = subparsers.add_parser("render", help="render a .nsc to a video or frames (an orbit, or a camera-path JSON)")
    add_arguments(p)
    p.set_defaults(func=render_command)


#: subcommand name -> function registering its sub-parser (extend to add commands)
COMMANDS: Dict[str, Callable[["argparse._SubParsersAction"], None]] = {
    "info": _add_info,
    "export": _add_export,
    "eval": _add_eval,
    "make-scene": _add_make_scene,
    "demo": _add_demo,
    "render": _add_render,
    "rd": lambda sub: __import__("nscodec.rd.cli", fromlist=["add_subparser"]).add_subparser(sub),
    "codecnerf-pretrain": lambda sub: __import__("nscodec.codecnerf.cli", fromlist=["add_subparser"]).add_subparser(sub),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default also prints usage)
        self.print_usage(sys.stderr)
        self.exit(2, f"nscodec: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``nscodec`` argparse parser with every registered subcommand."""
    parser = _Parser(prog="nscodec", description="nscodec: NeRF compression tools")
    parser.add_argument("--max-decode-bytes", default=None, metavar="SIZE",
                        help="largest model a decode may build (e.g. 8G; default 2G, or $NSCODEC_MAX_DECODE_BYTES)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for add in COMMANDS.values():
        add(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``nscodec`` CLI.

    Args:
        argv: arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        Exit code: 0 on success, 2 on a user-facing error (printed as one ``nscodec: error: ...`` line on
        stderr: :class:`~nscodec.errors.NscError`, :class:`FileNotFoundError` and other
        :class:`OSError`, argparse usage errors).
    """
    from nscodec.errors import NscError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors / --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, for commands that record it
    try:
        if args.max_decode_bytes is not None:  # every decode of this process, the workers it starts included
            import os

            from nscodec.io import MAX_DECODE_BYTES_ENV, parse_byte_size

            os.environ[MAX_DECODE_BYTES_ENV] = str(parse_byte_size(args.max_decode_bytes, "--max-decode-bytes"))
        return int(args.func(args))
    except (NscError, OSError) as err:
        message = printable(" ".join(str(err).split()) or type(err).__name__)
        print(f"nscodec: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
