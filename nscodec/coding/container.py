"""The ``.nsc`` container: one self-describing file per compressed NeRF.

Byte layout (all integers little-endian)::

    offset  size  field
    0       4     magic b"NSC\\x00"
    4       2     format version, major (uint16)   -- a reader accepts only its own major version
    6       2     format version, minor (uint16)   -- minor bumps only add optional JSON keys
    8       8     total file length in bytes (uint64), preamble included
    16      4     header length H in bytes (uint32)
    20      4     CRC-32 (uint32, zlib.crc32) of bytes 0..19 followed by the header (format 1.1; in 1.0 files
                  it covers the header only, so a flipped version or length field went unnoticed)
    24      H     header: UTF-8 JSON object (nesting at most MAX_JSON_DEPTH levels)
    24+H    ...   section payloads, back to back, in header order

    header = {
      "method":   str,             # nerfstudio method name, e.g. "ectensorf"
      "config":   dict,            # JSON-safe config needed to rebuild the model
      "meta":     dict,            # free-form JSON-safe metadata (scene, PSNR, encoder version, ...)
      "sections": [                # in payload order
        {"name": str, "dtype": str, "shape": [int, ...], "coder": str,
         "offset": int,            # byte offset RELATIVE TO THE FIRST PAYLOAD BYTE (24 + H)
         "nbytes": int, "crc32": int, "meta": dict}, ...]
    }

Sections are contiguous: ``offset[0] = 0``, ``offset[i+1] = offset[i] + nbytes[i]`` and the last one ends
exactly at the declared total length. Writers may order sections coarse -> fine so that a file PREFIX
(e.g. a partially streamed download) is still useful: ``read_nsc(..., allow_prefix=True)`` returns the
sections that are wholly present (CRC-checked) and ``complete=False``.

Every section's declared shape is checked before anything is decoded: at most :data:`MAX_SECTION_ELEMENTS`
elements, a dtype its coder can produce, and for raw sections exactly ``nbytes`` of payload. Every malformed input
raises :class:`~nscodec.errors.NscFormatError` with a message naming the problem; a nonexistent path raises :class:`FileNotFoundError` naming the path. Writes are atomic (temp file
in the same directory + fsync + ``os.replace``), so a failed write never leaves a partial ``.nsc`` file.

Length: the byte layout, its writer and its validating reader are one module on purpose — a change to the format is a
change to all three, and the reader checks every field the writer sets.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import struct
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from nscodec.errors import NscError, NscFormatError

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "PREAMBLE_SIZE",
    "Section",
    "SectionInfo",
    "NscFile",
    "write_nsc",
    "read_nsc",
    "check_json_safe",
    "encode_nsc",
    "MAX_SECTION_ELEMENTS",
    "MAX_JSON_DEPTH",
    "NAME_PATTERN",
    "valid_name",
    "remove_stale_temps",
]

MAGIC = b"NSC\x00"
FORMAT_VERSION: Tuple[int, int] = (1, 1)
_PREAMBLE = struct.Struct("<4sHHQII")
PREAMBLE_SIZE = _PREAMBLE.size  # 24 bytes
_CRC_COVERED = 20  # format >= 1.1: the header CRC also covers preamble bytes 0..19 (magic, version, lengths)
_SECTION_KEYS = ("name", "dtype", "shape", "coder", "offset", "nbytes", "crc32", "meta")
#: largest element count a section may declare (its decoded array, and the coder's index arrays, are this big)
MAX_SECTION_ELEMENTS = 1 << 26
#: deepest nesting of JSON arrays/objects accepted in a header
MAX_JSON_DEPTH = 32
#: dtypes each built-in coder produces (other coders: the entropy coders' int32/int64)
_CODER_DTYPES = {
    "raw": ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64"),
    "ctx3d": ("bool",),
}
_CODER_DTYPES["zlib"] = _CODER_DTYPES["zstd"] = _CODER_DTYPES["raw"]
_ITEMSIZE = {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
             "float32": 4, "int64": 8, "uint64": 8, "float64": 8}
_ENTROPY_DTYPES = ("int32", "int64")
#: DEFLATE cannot expand data by more than ~1032:1; a larger declared size is a lie
_ZLIB_MAX_RATIO = 1040
#: the characters a method, section or coder name may hold (read and written): ASCII letters and digits first, then
#: also ``_ . : / + -``; 1 to 128 characters. Nothing a terminal interprets (no control codes, no escapes).
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.:/+-]{0,127}"
_NAME_RE = re.compile(NAME_PATTERN)


def valid_name(value: Any) -> bool:
    """Whether ``value`` is a string of :data:`NAME_PATTERN` (a method, section or coder name)."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def header_crc(preamble: bytes, header: bytes, minor: int) -> int:
    """The header checksum of a file of format ``1.minor``: CRC-32 of preamble bytes 0..19 + header (minor ≥ 1),
    of the header alone (minor 0, the original layout)."""
    return zlib.crc32(header, zlib.crc32(preamble[:_CRC_COVERED])) if minor >= 1 else zlib.crc32(header)

PathOrBytes = Union[str, os.PathLike, bytes, bytearray, memoryview]


def check_json_safe(value: Any, where: str) -> None:
    """Check that ``value`` survives a JSON round trip (dict/list/tuple/str/int/float/bool/None).

    Dict keys must be ``str``; floats must be finite. Tuples are accepted (they read back as lists).

    Args:
        value: the object to check.
        where: name used in the error message, e.g. ``"config"``.

    Raises:
        NscError: naming the offending key path, e.g. ``config['model']['lr'] has non-JSON-safe type
            numpy.float32``.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NscError(f"{where} is {value!r}, which is not JSON-safe (NaN/inf)")
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, str):
                raise NscError(f"{where} has non-string key {k!r} ({type(k).__name__}); JSON keys must be str")
            check_json_safe(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_json_safe(v, f"{where}[{i}]")
        return
    t = type(value)
    raise NscError(
        f"{where} has non-JSON-safe type {t.__module__}.{t.__qualname__} (convert it to int/float/str/list/dict)"
    )


@dataclass
class Section:
    """One named payload of an ``.nsc`` file.

    Attributes:
        name: unique, non-empty section name (e.g. ``"density.planes"``).
        payload: the bytes stored in the file (already coded; see :mod:`nscodec.coding.tensor_codec`).
        dtype: numpy dtype name of the decoded array (e.g. ``"float16"``, ``"int32"``).
        shape: shape of the decoded array (tuple of non-negative ints).
        coder: how ``payload`` is coded (``"raw"``, ``"zlib"``, ``"ans"``, ``"torchac"``, or a custom tag).
        meta: JSON-safe per-section metadata.

    Raises:
        NscError: on construction with a name or coder outside :data:`NAME_PATTERN`, non-bytes payload, bad shape
            or non-JSON-safe meta.
    """

    name: str
    payload: bytes
    dtype: str
    shape: Tuple[int, ...]
    coder: str
    meta: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NscError(f"section name must match {NAME_PATTERN} (ASCII letters, digits, _ . : / + -), got {self.name!r}")
        if not isinstance(self.payload, (bytes, bytearray, memoryview)):
            raise NscError(f"section {self.name!r}: payload must be bytes, got {type(self.payload).__name__}")
        self.payload = bytes(self.payload)
        if not isinstance(self.dtype, str) or not self.dtype:
            raise NscError(f"section {self.name!r}: dtype must be a non-empty str, got {self.dtype!r}")
        if not valid_name(self.coder):
            raise NscError(f"section {self.name!r}: coder must match {NAME_PATTERN}, got {self.coder!r}")
        try:
            dims = list(self.shape)
        except TypeError:
            dims = None
        if dims is None or not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) and d >= 0 for d in dims):
            raise NscError(f"section {self.name!r}: shape must be a sequence of non-negative ints, got {self.shape!r}")
        self.shape = tuple(int(d) for d in dims)
        if self.meta is None:
            self.meta = {}
        if not isinstance(self.meta, dict):
            raise NscError(f"section {self.name!r}: meta must be a dict, got {type(self.meta).__name__}")
        check_json_safe(self.meta, f"section {self.name!r} meta")

    @property
    def nbytes(self) -> int:
        """Payload size in bytes."""
        return len(self.payload)


@dataclass(frozen=True)
class SectionInfo:
    """Header entry of a section (present or not, in prefix reads): name, coder, dtype, shape, byte range."""

    name: str
    dtype: str
    shape: Tuple[int, ...]
    coder: str
    offset: int
    nbytes: int
    crc32: int
    meta: Dict[str, Any]
    present: bool


@dataclass
class NscFile:
    """A parsed ``.nsc`` file.

    Attributes:
        method: method name from the header.
        config: model config dict.
        meta: file metadata dict.
        sections: ordered ``name -> Section`` of the sections wholly present (all of them if ``complete``).
        index: header entries of ALL sections (``SectionInfo.present`` says which were read).
        total_bytes: declared total file length in bytes.
        available_bytes: bytes actually read (< ``total_bytes`` only for a prefix).
        header_bytes: preamble + JSON header size in bytes.
        version: format version ``(major, minor)`` of the file.
        complete: False when only a prefix of the file was available.
    """

    method: str
    config: Dict[str, Any]
    meta: Dict[str, Any]
    sections: "OrderedDict[str, Section]"
    index: List[SectionInfo]
    total_bytes: int
    available_bytes: int
    header_bytes: int
    version: Tuple[int, int]
    complete: bool

    def require(self, names: Iterable[str], optional: Iterable[str] = ()) -> "NscFile":
        """Check that the file holds exactly the expected sections.

        Args:
            names: sections that must be present.
            optional: sections that may be present.

        Returns:
            ``self`` (for chaining).

        Raises:
            NscFormatError: naming every missing required section (noting when the file is an incomplete
                prefix) and every unexpected extra section.
        """
        names = list(names)
        allowed = set(names) | set(optional)
        missing = [n for n in names if n not in self.sections]
        declared = [s.name for s in self.index]
        extra = [n for n in declared if n not in allowed]
        problems = []
        if missing:
            note = " (file is an incomplete prefix)" if not self.complete else ""
            problems.append(f"missing section(s) {', '.join(map(repr, missing))}{note}")
        if extra:
            problems.append(f"unexpected section(s) {', '.join(map(repr, extra))}")
        if problems:
            raise NscFormatError(f".nsc file for method {self.method!r}: " + "; ".join(problems))
        return self


# ----------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------
def _build_bytes(
    method: str, config: Mapping[str, Any], sections: Sequence[Section], meta: Optional[Mapping[str, Any]]
) -> bytes:
    if not valid_name(method):
        raise NscError(f"method must be a name of {NAME_PATTERN}, got {method!r}")
    if not isinstance(config, Mapping):
        raise NscError(f"config must be a dict, got {type(config).__name__}")
    check_json_safe(config, "config")
    meta = {} if meta is None else meta
    if not isinstance(meta, Mapping):
        raise NscError(f"meta must be a dict, got {type(meta).__name__}")
    check_json_safe(meta, "meta")
    sections = list(sections)
    seen = set()
    entries = []
    offset = 0
    for s in sections:
        if not isinstance(s, Section):
            raise NscError(f"sections must be Section objects, got {type(s).__name__}")
        if s.name in seen:
            raise NscError(f"duplicate section name {s.name!r}")
        seen.add(s.name)
        entries.append(
            {
                "name": s.name,
                "dtype": s.dtype,
                "shape": list(s.shape),
                "coder": s.coder,
                "offset": offset,
                "nbytes": len(s.payload),
                "crc32": zlib.crc32(s.payload),
                "meta": s.meta,
            }
        )
        offset += len(s.payload)
    header = json.dumps(
        {"method": method, "config": config, "meta": meta, "sections": entries},
        ensure_ascii=False,
        allow_nan=False,
        separators=(",", ":"),
    ).encode("utf-8")
    total = PREAMBLE_SIZE + len(header) + offset
    head = _PREAMBLE.pack(MAGIC, FORMAT_VERSION[0], FORMAT_VERSION[1], total, len(header), 0)
    preamble = head[:_CRC_COVERED] + struct.pack("<I", header_crc(head, header, FORMAT_VERSION[1]))
    return b"".join([preamble, header] + [s.payload for s in sections])


def encode_nsc(
    method: str, config: Mapping[str, Any], sections: Sequence[Section], meta: Optional[Mapping[str, Any]] = None
) -> bytes:
    """The bytes of an ``.nsc`` file (what :func:`write_nsc` writes), assembled and validated in memory.

    Raises:
        NscError: as :func:`write_nsc`.
    """
    return _build_bytes(method, config, sections, meta)


def write_nsc(
    path: Union[str, os.PathLike],
    method: str,
    config: Mapping[str, Any],
    sections: Sequence[Section],
    meta: Optional[Mapping[str, Any]] = None,
    overwrite: bool = False,
) -> int:
    """Write an ``.nsc`` file atomically.

    The whole file is assembled and validated in memory first, then written to a temporary file in the
    destination directory, fsync'ed and moved into place with ``os.replace``; on any error the temporary
    file is removed, so no partial file is ever left at ``path``.

    Args:
        path: destination path.
        method: method name (non-empty).
        config: JSON-safe dict to rebuild the model.
        sections: :class:`Section` objects, written in this order (order them coarse -> fine).
        meta: optional JSON-safe dict.
        overwrite: replace an existing file at ``path`` (default False).

    Returns:
        Bytes written (= the file's total length).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the destination directory does not exist.
        NscError: empty/duplicate section names, bad method, or non-JSON-safe ``config``/``meta`` (the
            message names the bad key).
    """
    path = Path(path)
    data = _build_bytes(method, config, sections, meta)
    if path.exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file {str(path)!r} (pass overwrite=True)")
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"output directory does not exist: {str(directory)!r}")
    remove_stale_temps(directory)
    if not _write_unnamed(path, directory, data, overwrite):
        _write_named(path, data, overwrite)
    try:  # make the rename durable (best effort; not supported on every platform)
        dfd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return len(data)


_TEMP_SUFFIX = ".nsc-partial"


def _write_unnamed(path: Path, directory: Path, data: bytes, overwrite: bool) -> bool:
    """Write ``data`` to ``path`` through an unnamed file (Linux ``O_TMPFILE``): a writer killed mid-write leaves
    nothing behind, the kernel frees the file. The finished file is linked in place — directly when not
    overwriting (``link`` fails on an existing file: no race), else under a temporary name renamed over ``path``.
    Returns False where the platform or filesystem has no ``O_TMPFILE`` (the caller writes a named temp file)."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None:
        return False
    try:
        fd = os.open(directory, flag | os.O_WRONLY, 0o666)
    except OSError:  # EOPNOTSUPP / EISDIR / EINVAL: no O_TMPFILE on this filesystem
        return False
    dfd = os.open(directory, os.O_RDONLY)
    tmp = None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            # dst_dir_fd makes os.link call linkat(AT_SYMLINK_FOLLOW): it links the file behind /proc's fd link
            proc = f"/proc/self/fd/{f.fileno()}"
            try:
                if not overwrite:
                    os.link(proc, path.name, dst_dir_fd=dfd, follow_symlinks=True)  # fails on an existing file
                    return True
                tmp = _temp_path(path, os.getpid())
                os.link(proc, tmp.name, dst_dir_fd=dfd, follow_symlinks=True)
            except FileExistsError:
                raise FileExistsError(f"refusing to overwrite existing file {str(path)!r} (pass overwrite=True)") from None
            except OSError:
                return False  # no /proc, or linkat refused: the caller writes a named temp file instead
        try:
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return True
    finally:
        os.close(dfd)


def _write_named(path: Path, data: bytes, overwrite: bool) -> None:
    """Write ``data`` to ``path`` through the named temporary file ``.<name>.<pid>.nsc-partial`` beside it (fsync'ed,
    then renamed into place); removed on any error, and by :func:`remove_stale_temps` after a kill."""
    tmp = _temp_path(path, os.getpid())
    # O_EXCL: never follow or reuse a file of that name; mode 0o666 lets the umask decide, like any other output
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not overwrite and path.exists():
            raise FileExistsError(f"refusing to overwrite existing file {str(path)!r} (pass overwrite=True)")
        os.replace(tmp, path)
    except BaseException:
        _unlink_quietly(tmp)
        raise


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _temp_path(path: Path, pid: int) -> Path:
    """The temporary file :func:`write_nsc` writes ``path`` through: ``.<name>.<pid>.nsc-partial`` beside it."""
    return path.with_name(f".{path.name}.{pid}{_TEMP_SUFFIX}")


def remove_stale_temps(where: Union[str, os.PathLike]) -> List[Path]:
    """Delete the temporary files (``.<name>.<pid>.nsc-partial``) of writes whose writer process is gone (killed
    mid-write): in the folder ``where``, or beside the file ``where`` (its folder). Every write and every read of a
    ``.nsc`` path runs it on the folder, so no such file outlives the next nscodec command there. A write in progress
    in another live process keeps its file. Best effort: an unreadable folder is left alone. Returns the paths
    removed."""
    folder = Path(where)
    if not folder.is_dir():
        folder = folder.parent if str(folder.parent) else Path(".")
    removed = []
    try:
        candidates = list(folder.glob(f".*{_TEMP_SUFFIX}"))
    except OSError:
        return removed
    for tmp in candidates:
        stem = tmp.name[: -len(_TEMP_SUFFIX)]
        pid_text = stem.rsplit(".", 1)[-1] if "." in stem[1:] else ""
        if not pid_text.isdigit() or (int(pid_text) != os.getpid() and _pid_alive(int(pid_text))):
            continue
        try:
            tmp.unlink()
            removed.append(tmp)
        except OSError:
            pass
    return removed


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped (for :meth:`pathlib.Path.glob`)."""
    import glob

    return glob.escape(name)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


# ----------------------------------------------------------------------------------------------------------
# reading
# ----------------------------------------------------------------------------------------------------------
def _load(path_or_bytes: PathOrBytes) -> Tuple[bytes, str]:
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes), "<bytes>"
    if not isinstance(path_or_bytes, (str, os.PathLike)):
        raise NscError(f"read_nsc needs a path or bytes, got {type(path_or_bytes).__name__}")
    path = Path(path_or_bytes)
    remove_stale_temps(path)  # a write killed in this folder leaves nothing for long
    if not path.exists():
        raise FileNotFoundError(f"no such .nsc file: {str(path)!r}")
    if path.is_dir():
        raise NscFormatError(f"{str(path)!r} is a directory, not an .nsc file")
    return path.read_bytes(), str(path)


def _expect(cond: bool, src: str, msg: str) -> None:
    if not cond:
        raise NscFormatError(f"{src}: {msg}")


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_depth(value: Any) -> int:
    """Nesting depth of parsed JSON (iterative: a crafted header cannot exhaust the stack here)."""
    depth, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            depth = max(depth, d)
            stack.extend((x, d + 1) for x in v)
        if depth > MAX_JSON_DEPTH:
            break
    return depth


def _check_dtype_and_size(src: str, name: str, coder: str, dtype: str, count: int, nbytes: int) -> None:
    """A section's declared dtype must be one its coder produces; raw payloads must hold exactly the declared
    elements, DEFLATE payloads can expand at most ~1032-fold."""
    allowed = _CODER_DTYPES.get(coder, _ENTROPY_DTYPES)
    _expect(dtype in allowed, src, f"section {name!r}: dtype {dtype!r} is not one coder {coder!r} produces ({', '.join(allowed)})")
    if coder in ("raw", "zlib"):
        size = count * _ITEMSIZE[dtype]
        if coder == "raw":
            _expect(nbytes == size, src, f"section {name!r}: {nbytes} payload bytes, shape and dtype need {size}")
        else:
            _expect(size <= _ZLIB_MAX_RATIO * nbytes + 64, src, f"section {name!r}: {nbytes} zlib bytes cannot inflate to {size}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def _finite_float(text: str) -> float:
    """A JSON number with a fraction or exponent, refused when it overflows to infinity (``1e999``): the same rule as
    the NaN / Infinity literals."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"JSON number {text[:40]} is not a finite double")
    return value


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def read_nsc(path_or_bytes: PathOrBytes, allow_prefix: bool = False) -> NscFile:
    """Read and fully validate an ``.nsc`` file (layout in the module docstring).

    Args:
        path_or_bytes: file path, or the file's bytes.
        allow_prefix: accept a truncated file (shorter than its declared length); only sections wholly
            present are returned and ``complete`` is False. The preamble and JSON header must be complete.

    Returns:
        :class:`NscFile`.

    Raises:
        FileNotFoundError: the path does not exist (message names the path).
        NscFormatError: shorter than the preamble; bad magic ("not an .nsc file"); unsupported major version;
            declared length larger (truncated, unless ``allow_prefix``) or smaller (trailing bytes) than the
            actual size; header truncated, CRC mismatch, not UTF-8 JSON, or missing/mistyped keys; section
            offsets/lengths out of range, overlapping or with gaps; a section CRC mismatch (naming the
            section).
    """
    data, src = _load(path_or_bytes)
    n = len(data)
    _expect(n >= PREAMBLE_SIZE, src, f"file too short ({n} bytes) to hold the {PREAMBLE_SIZE}-byte .nsc preamble")
    magic, major, minor, total, hlen, hcrc = _PREAMBLE.unpack_from(data, 0)
    _expect(magic == MAGIC, src, f"not an .nsc file (bad magic {magic!r}, expected {MAGIC!r})")
    _expect(
        major == FORMAT_VERSION[0],
        src,
        f"unsupported .nsc format version {major}.{minor} (this reader supports {FORMAT_VERSION[0]}.x)",
    )
    _expect(total >= PREAMBLE_SIZE + hlen, src, f"declared total length {total} is smaller than preamble + header ({PREAMBLE_SIZE + hlen})")
    _expect(n <= total, src, f"{n - total} trailing bytes after the declared end of file ({total} bytes)")
    if n < total and not allow_prefix:
        raise NscFormatError(f"{src}: truncated file: declared {total} bytes, got {n}")
    _expect(PREAMBLE_SIZE + hlen <= n, src, f"truncated header: needs {PREAMBLE_SIZE + hlen} bytes, file has {n}")
    header_raw = data[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen]
    what = "preamble or header" if minor >= 1 else "header"
    _expect(header_crc(data, header_raw, minor) == hcrc, src, f"header CRC mismatch (corrupt {what})")
    try:
        header = json.loads(header_raw.decode("utf-8"), parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise NscFormatError(f"{src}: header JSON nests deeper than {MAX_JSON_DEPTH} levels") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise NscFormatError(f"{src}: header is not valid UTF-8 JSON ({err})") from None
    depth = _json_depth(header)
    _expect(depth <= MAX_JSON_DEPTH, src, f"header JSON nests {depth} levels deep (at most {MAX_JSON_DEPTH})")
    _expect(isinstance(header, dict), src, "header is not a JSON object")
    for key, typ in (("method", str), ("config", dict), ("meta", dict), ("sections", list)):
        _expect(key in header, src, f"header is missing key {key!r}")
        _expect(isinstance(header[key], typ), src, f"header key {key!r} must be a {typ.__name__}")
    _expect(valid_name(header["method"]), src, f"method name {_short(header['method'])} is not of {NAME_PATTERN}")

    base = PREAMBLE_SIZE + hlen
    payload_len = total - base
    index: List[SectionInfo] = []
    sections: "OrderedDict[str, Section]" = OrderedDict()
    expected_offset = 0
    seen_names = set()
    for i, e in enumerate(header["sections"]):
        _expect(isinstance(e, dict), src, f"section entry {i} is not a JSON object")
        for key in _SECTION_KEYS:
            _expect(key in e, src, f"section entry {i} is missing key {key!r}")
        name = e["name"]
        _expect(valid_name(name), src, f"section entry {i} has an invalid name {_short(name)} (names are of {NAME_PATTERN})")
        _expect(name not in seen_names, src, f"duplicate section {name!r}")
        seen_names.add(name)
        _expect(isinstance(e["dtype"], str) and valid_name(e["coder"]), src,
                f"section {name!r}: dtype must be a string and coder a name of {NAME_PATTERN}")
        _expect(
            isinstance(e["shape"], list) and len(e["shape"]) <= 8 and all(_is_int(s) and 0 <= s <= MAX_SECTION_ELEMENTS for s in e["shape"]),
            src,
            f"section {name!r}: shape must be a list of at most 8 ints in [0, {MAX_SECTION_ELEMENTS}], got {_short(e['shape'])}",
        )
        count = math.prod(e["shape"])
        _expect(count <= MAX_SECTION_ELEMENTS, src, f"section {name!r}: shape {e['shape']} has {count} elements (at most {MAX_SECTION_ELEMENTS})")
        _expect(isinstance(e["meta"], dict), src, f"section {name!r}: meta must be an object")
        for key in ("offset", "nbytes", "crc32"):
            _expect(_is_int(e[key]) and e[key] >= 0, src, f"section {name!r}: {key} must be a non-negative int")
        _check_dtype_and_size(src, name, e["coder"], e["dtype"], count, e["nbytes"])
        off, nb = e["offset"], e["nbytes"]
        _expect(off + nb <= payload_len, src, f"section {name!r} (offset {off}, {nb} bytes) extends past the end of the file")
        _expect(off >= expected_offset, src, f"section {name!r} (offset {off}) overlaps the previous section (which ends at {expected_offset})")
        _expect(off == expected_offset, src, f"section {name!r} starts at {off} but the previous section ends at {expected_offset} (gap)")
        expected_offset = off + nb
        present = base + off + nb <= n
        info = SectionInfo(name, e["dtype"], tuple(e["shape"]), e["coder"], off, nb, e["crc32"], e["meta"], present)
        index.append(info)
    _expect(
        expected_offset == payload_len,
        src,
        f"{payload_len - expected_offset} unreferenced bytes after the last section",
    )
    # layout is consistent; now verify the payloads that are present
    for info in index:
        if not info.present:
            continue
        payload = data[base + info.offset : base + info.offset + info.nbytes]
        _expect(zlib.crc32(payload) == info.crc32, src, f"section {info.name!r} CRC mismatch (corrupt payload)")
        try:
            sections[info.name] = Section(info.name, payload, info.dtype, info.shape, info.coder, info.meta)
        except NscError as err:
            raise NscFormatError(f"{src}: {err}") from None
    return NscFile(
        method=header["method"],
        config=header["config"],
        meta=header["meta"],
        sections=sections,
        index=index,
        total_bytes=total,
        available_bytes=n,
        header_bytes=base,
        version=(major, minor),
        complete=n == total,
    )
