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

__all__ = ["main", "build_parser", "COMMANDS"]


def _short(value: Any, width: int = 60) -> str:
    if isinstance(value, dict):
        text = f"{{{len(value)} keys}}"
    elif isinstance(value, list) and len(value) > 8:
        text = f"[{len(value)} items]"
    else:
        text = repr(value)
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
    print(f"file:        {args.file}", file=out)
    print(f"method:      {f.method}", file=out)
    print(f"format:      .nsc {f.version[0]}.{f.version[1]}", file=out)
    print(f"total bytes: {f.total_bytes}" + ("" if f.complete else f" (only {f.available_bytes} present)"), file=out)
    print(f"complete:    {f.complete}", file=out)
    print(f"header:      {f.header_bytes} bytes ({100.0 * f.header_bytes / total:.1f}%)", file=out)
    if f.config:
        print("config:", file=out)
        for key, value in f.config.items():
            print(f"  {key}: {_short(value)}", file=out)
    else:
        print("config:      {}", file=out)
    if f.meta:
        print("meta:", file=out)
        for key, value in f.meta.items():
            print(f"  {key}: {_short(value)}", file=out)
    print(f"sections ({len(f.index)}):", file=out)
    if f.index:
        rows = [["name", "coder", "dtype", "shape", "bytes", "% of file"]]
        for s in f.index:
            rows.append(
                [
                    s.name,
                    s.coder,
                    s.dtype,
                    "x".join(str(d) for d in s.shape) or "scalar",
                    str(s.nbytes),
                    f"{100.0 * s.nbytes / total:.1f}%" + ("" if s.present else " missing"),
                ]
            )
        for line in _format_table(rows, right=(4, 5)):
            print("  " + line, file=out)
    return 0


def _add_info(subparsers: "argparse._SubParsersAction") -> None:
    p = subparsers.add_parser("info", help="show the contents of a .nsc file", description=info_command.__doc__)
    p.add_argument("file", help="path to a .nsc file")
    p.set_defaults(func=info_command)


#: subcommand name -> function registering its sub-parser (extend to add commands)
COMMANDS: Dict[str, Callable[["argparse._SubParsersAction"], None]] = {"info": _add_info}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse's default also prints usage)
        self.print_usage(sys.stderr)
        self.exit(2, f"nscodec: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The top-level ``nscodec`` argparse parser with every registered subcommand."""
    parser = _Parser(prog="nscodec", description="nscodec: NeRF compression tools")
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
        stderr: :class:`~nscodec.coding.errors.NscError`, :class:`FileNotFoundError` and other
        :class:`OSError`, argparse usage errors).
    """
    from nscodec.coding.errors import NscError

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse usage errors / --help
        return int(exc.code or 0) if not isinstance(exc.code, str) else 2
    try:
        return int(args.func(args))
    except (NscError, OSError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"nscodec: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
