"""Array <-> :class:`~nscodec.coding.container.Section` codecs.

* :func:`raw_section` — little-endian raw bytes of an array cast to a chosen dtype (``coder="raw"``).
* :func:`zlib_section` — the same bytes, DEFLATE-compressed (``coder="zlib"``; RFC 1950/1951).
* :func:`zstd_section` — the same bytes, Zstandard-compressed (``coder="zstd"``; RFC 8878).
* :func:`entropy_section` — integer symbols entropy-coded with an
  :class:`~nscodec.coding.cdf_tables.IntegerCDFTable` (``coder="ans"`` default, or ``"torchac"``).
* :func:`binary_grid_section` — a 3-D boolean grid, context-coded (``coder="ctx3d"``;
  :mod:`nscodec.coding.binary_context`).
* :func:`decode_section` — inverse of all of the above, dispatching on ``Section.coder``.

Round trips are exact (for raw/zlib: exact after the requested dtype cast, which is checked for
overflow). Entropy-section payload layout (little-endian)::

    u8    payload layout version (1)
    u8    channel axis of the symbol array
    u8    flags (bit 0: only positions where a boolean mask is True are coded)
    u32   T = byte length of the serialized CDF table
    T     IntegerCDFTable.to_bytes()
    ...   coded stream (nscodec.coding.coders layout)

The CDF table travels with the symbols, so the decoder never re-evaluates the float entropy model.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Dict, Optional, Sequence

import numpy as np

from .cdf_tables import IntegerCDFTable
from .coders import available_coders, get_coder
from .container import Section
from nscodec.errors import EntropyCodingError, NscError, NscFormatError

__all__ = ["raw_section", "zlib_section", "zstd_section", "entropy_section", "binary_grid_section", "decode_section", "RAW_DTYPES"]

#: dtypes accepted by raw/zlib sections
RAW_DTYPES = (
    "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64",
)
_ENTROPY_HEAD = struct.Struct("<BBBI")
_ENTROPY_LAYOUT = 1
_FLAG_MASKED = 1


def _to_numpy(array: Any, what: str) -> np.ndarray:
    if hasattr(array, "detach") and hasattr(array, "cpu"):  # torch.Tensor without importing torch
        array = array.detach().cpu().numpy()
    try:
        return np.asarray(array)
    except Exception as err:  # pragma: no cover - exotic inputs
        raise NscError(f"{what} cannot be converted to a numpy array ({err})") from None


def _cast(name: str, arr: np.ndarray, dtype: Optional[str]) -> np.ndarray:
    target = np.dtype(arr.dtype if dtype is None else dtype)
    if target.name not in RAW_DTYPES:
        raise NscError(f"section {name!r}: unsupported dtype {target.name!r}; use one of {', '.join(RAW_DTYPES)}")
    if arr.dtype.kind not in "biuf":
        raise NscError(f"section {name!r}: cannot store array of dtype {arr.dtype} (need bool/int/float)")
    if target.kind in "iu" and arr.dtype.kind == "f":
        raise NscError(
            f"section {name!r}: refusing to cast float array to {target.name} (round it first, e.g. to_symbols)"
        )
    if target.kind == "b" and arr.dtype.kind != "b":
        raise NscError(f"section {name!r}: refusing to cast {arr.dtype} to bool")
    if target.kind in "iu" and arr.size and arr.dtype.kind in "iu":
        info = np.iinfo(target)
        if int(arr.min()) < info.min or int(arr.max()) > info.max:
            raise NscError(
                f"section {name!r}: values {int(arr.min())}..{int(arr.max())} do not fit {target.name}"
            )
    with np.errstate(over="ignore", invalid="ignore"):
        out = arr.astype(target)
    if target.kind == "f" and arr.size:
        src_finite = np.isfinite(arr) if arr.dtype.kind == "f" else np.ones(arr.shape, dtype=bool)
        if np.any(src_finite & ~np.isfinite(out)):
            raise NscError(f"section {name!r}: values overflow {target.name} (max {np.finfo(target).max:g})")
    return out


def raw_section(name: str, array: Any, dtype: Optional[str] = None, meta: Optional[Dict[str, Any]] = None) -> Section:
    """Store an array as raw little-endian bytes.

    Args:
        name: section name.
        array: numpy array or torch tensor of any shape ``[*]``.
        dtype: storage dtype (one of :data:`RAW_DTYPES`; default: the array's dtype). E.g. ``"float16"``
            halves the size of float32 weights.
        meta: optional JSON-safe dict.

    Returns:
        Section with ``coder="raw"``, payload ``prod(shape) * itemsize`` bytes.

    Raises:
        NscError: unsupported dtype, float->int cast, integer range overflow, or finite values overflowing a
            float dtype (e.g. 1e5 -> float16).
    """
    arr = _to_numpy(array, f"section {name!r} array")
    out = _cast(name, arr, dtype)
    payload = out.astype(out.dtype.newbyteorder("<"), copy=False).tobytes()
    return Section(name, payload, out.dtype.name, tuple(arr.shape), "raw", dict(meta or {}))


def _compressed_section(name, array, dtype, meta, coder: str, compress) -> Section:
    raw = raw_section(name, array, dtype, meta)
    return Section(name, compress(raw.payload), raw.dtype, raw.shape, coder, raw.meta)


def zlib_section(
    name: str, array: Any, dtype: Optional[str] = None, level: int = 9, meta: Optional[Dict[str, Any]] = None
) -> Section:
    """Like :func:`raw_section` but DEFLATE-compressed (``coder="zlib"``).

    Args:
        level: zlib compression level 0..9.

    Raises:
        NscError: as :func:`raw_section`, or a bad ``level``.
    """
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 9:
        raise NscError(f"zlib level must be an int in 0..9, got {level!r}")
    return _compressed_section(name, array, dtype, meta, "zlib", lambda b: zlib.compress(b, level))


def zstd_section(
    name: str, array: Any, dtype: Optional[str] = None, level: int = 19, meta: Optional[Dict[str, Any]] = None
) -> Section:
    """Like :func:`raw_section` but Zstandard-compressed (``coder="zstd"``, via the ``zstandard`` package).

    Args:
        level: zstd compression level 1..22.

    Raises:
        NscError: as :func:`raw_section`, or a bad ``level``.
    """
    import zstandard

    if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= 22:
        raise NscError(f"zstd level must be an int in 1..22, got {level!r}")
    return _compressed_section(name, array, dtype, meta, "zstd", zstandard.ZstdCompressor(level=level).compress)


def _channel_index(shape, axis: int) -> np.ndarray:
    C = shape[axis]
    view = [1] * len(shape)
    view[axis] = C
    return np.broadcast_to(np.arange(C, dtype=np.int64).reshape(view), shape).reshape(-1)


def entropy_section(
    name: str,
    symbols: Any,
    table: IntegerCDFTable,
    coder: str = "ans",
    channel_axis: int = 0,
    mask: Any = None,
    meta: Optional[Dict[str, Any]] = None,
) -> Section:
    """Entropy-code an integer symbol array with a CDF table.

    Args:
        name: section name.
        symbols: integer array/tensor of any shape ``[..., C, ...]`` (``C`` at ``channel_axis`` equals
            ``table.num_channels``), e.g. ``to_symbols(latents)``.
        table: exported entropy model (stored inside the payload).
        coder: registered coder name (``"ans"`` default, ``"torchac"`` optional).
        channel_axis: which axis of ``symbols`` indexes the table's channels (negative allowed).
        mask: optional boolean array shaped like ``symbols``; only positions where it is True are coded
            (masked entropy model). The same mask must be passed to :func:`decode_section`; other
            positions decode to 0.
        meta: optional JSON-safe dict.

    Returns:
        Section with ``coder=coder``, dtype ``"int32"`` (or ``"int64"`` if values need it) and the symbols'
        shape. Payload size ~ ideal bits / 8 + table bytes + a few header bytes.

    Raises:
        NscError: non-integer symbols, channel count mismatch, bad axis/mask, unknown coder.
    """
    if not isinstance(table, IntegerCDFTable):
        raise NscError(f"section {name!r}: table must be an IntegerCDFTable, got {type(table).__name__}")
    sym = _to_numpy(symbols, f"section {name!r} symbols")
    if sym.ndim < 1:
        raise NscError(f"section {name!r}: symbols must have at least one (channel) axis")
    if sym.size and sym.dtype.kind not in "iu":
        raise NscError(f"section {name!r}: symbols must be integers, got dtype {sym.dtype}")
    if not isinstance(channel_axis, int) or not -sym.ndim <= channel_axis < sym.ndim:
        raise NscError(f"section {name!r}: channel_axis {channel_axis!r} invalid for {sym.ndim}-D symbols")
    axis = channel_axis % sym.ndim
    if sym.shape[axis] != table.num_channels:
        raise NscError(
            f"section {name!r}: symbols have {sym.shape[axis]} channels on axis {axis} but the table has "
            f"{table.num_channels}"
        )
    codec = get_coder(coder)
    flat = sym.reshape(-1).astype(np.int64)
    channels = _channel_index(sym.shape, axis)
    flags = 0
    if mask is not None:
        m = _to_numpy(mask, f"section {name!r} mask")
        if m.dtype != np.bool_ or m.shape != sym.shape:
            raise NscError(f"section {name!r}: mask must be a bool array shaped {sym.shape}, got {m.dtype} {m.shape}")
        keep = m.reshape(-1)
        flat, channels = flat[keep], channels[keep]
        flags |= _FLAG_MASKED
    table_bytes = table.to_bytes()
    stream = codec.encode(flat, channels, table)
    payload = _ENTROPY_HEAD.pack(_ENTROPY_LAYOUT, axis, flags, len(table_bytes)) + table_bytes + stream
    fits32 = flat.size == 0 or (flat.min() >= -(2**31) and flat.max() < 2**31)
    return Section(name, payload, "int32" if fits32 else "int64", tuple(sym.shape), coder, dict(meta or {}))


def binary_grid_section(name: str, grid: Any, meta: Optional[Dict[str, Any]] = None) -> Section:
    """A boolean grid ``[X, Y, Z]`` coded with the 9-neighbour context model of
    :func:`~nscodec.coding.binary_context.encode_binary_grid` (``coder="ctx3d"``, dtype ``bool``).

    Raises:
        NscError: not a 3-D 0/1 array.
    """
    from .binary_context import encode_binary_grid

    g = _to_numpy(grid, f"section {name!r} grid")
    return Section(name, encode_binary_grid(g), "bool", tuple(g.shape), "ctx3d", dict(meta or {}))


def _raw_dtype(section: Section) -> np.dtype:
    """The declared dtype of a raw/zlib/zstd section (one of :data:`RAW_DTYPES`)."""
    try:
        dt = np.dtype(section.dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in RAW_DTYPES:
        raise NscFormatError(f"section {section.name!r}: unsupported dtype {section.dtype!r}")
    return dt


def _expected_size(section: Section) -> int:
    """Decoded byte size of a raw/zlib/zstd section from its declared dtype and shape (validated first)."""
    return int(np.prod(section.shape, dtype=np.int64)) * _raw_dtype(section).itemsize


def _expected_raw(section: Section, data: bytes) -> np.ndarray:
    dt = _raw_dtype(section)
    size = _expected_size(section)
    if len(data) != size:
        raise NscFormatError(
            f"section {section.name!r}: {len(data)} bytes do not match shape {list(section.shape)} of {dt.name} ({size} bytes)"
        )
    arr = np.frombuffer(data, dtype=dt.newbyteorder("<")).astype(dt).reshape(section.shape)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():  # no file holds NaN / inf weights on purpose
        bad = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
        raise NscFormatError(f"section {section.name!r}: value {bad} is {arr.reshape(-1)[bad]} (stored floats must be finite)")
    return arr


def _inflate(section: Section) -> bytes:
    """DEFLATE payload → exactly the declared number of bytes; more output or bytes after the stream is an error."""
    want = _expected_size(section)
    d = zlib.decompressobj()
    try:
        data = d.decompress(section.payload, want + 1)
    except zlib.error as err:
        raise NscFormatError(f"section {section.name!r}: corrupt zlib data ({err})") from None
    if len(data) > want or d.unconsumed_tail:
        raise NscFormatError(f"section {section.name!r}: zlib stream inflates beyond the declared {want} bytes")
    if not d.eof:
        raise NscFormatError(f"section {section.name!r}: truncated zlib stream")
    if d.unused_data:
        raise NscFormatError(f"section {section.name!r}: {len(d.unused_data)} bytes after the end of the zlib stream")
    return data


def _unzstd(section: Section) -> bytes:
    """Zstandard payload → exactly the declared number of bytes (one frame, nothing after it)."""
    import zstandard

    want = _expected_size(section)
    d = zstandard.ZstdDecompressor().decompressobj()
    try:
        data = d.decompress(section.payload)
    except zstandard.ZstdError as err:
        raise NscFormatError(f"section {section.name!r}: corrupt zstd data ({err})") from None
    if not d.eof:
        raise NscFormatError(f"section {section.name!r}: truncated zstd stream")
    if d.unused_data:
        raise NscFormatError(f"section {section.name!r}: {len(d.unused_data)} bytes after the end of the zstd frame")
    if len(data) != want:
        raise NscFormatError(f"section {section.name!r}: zstd frame holds {len(data)} bytes, declared {want}")
    return data


def decode_section(section: Section, mask: Any = None, dtype: Optional[Sequence[str]] = None) -> np.ndarray:
    """Decode a section produced by :func:`raw_section`, :func:`zlib_section`, :func:`zstd_section`,
    :func:`entropy_section` or :func:`binary_grid_section`.

    Args:
        section: the section (e.g. ``read_nsc(path).sections["name"]``).
        mask: the boolean mask given to :func:`entropy_section`, if one was used.
        dtype: declared dtypes the caller accepts (e.g. ``("float16", "float32")`` for weights); None accepts any.
            A file whose section declares another dtype is rejected instead of being reinterpreted.

    Returns:
        numpy array with ``section.shape`` and ``section.dtype`` (a fresh, writable copy).

    Raises:
        NscFormatError: a dtype outside ``dtype``, unknown coder, payload inconsistent with dtype/shape, a NaN or
            infinite stored float, corrupt zlib/zstd data or bytes after the stream, corrupt or mismatched
            entropy-coded payload (the section is named).
        NscError: a required ``mask`` missing or of the wrong shape; an optional backend not installed.
    """
    if not isinstance(section, Section):
        raise NscError(f"decode_section needs a Section, got {type(section).__name__}")
    name = section.name
    if dtype is not None and section.dtype not in tuple(dtype):
        raise NscFormatError(f"section {name!r}: dtype {section.dtype!r}, expected {' or '.join(map(repr, dtype))}")
    if section.coder == "raw":
        return _expected_raw(section, section.payload).copy()
    if section.coder == "zlib":
        return _expected_raw(section, _inflate(section)).copy()
    if section.coder == "zstd":
        return _expected_raw(section, _unzstd(section)).copy()
    if section.coder == "ctx3d":
        from .binary_context import decode_binary_grid

        if len(section.shape) != 3:
            raise NscFormatError(f"section {name!r}: a ctx3d grid must have a 3-D shape, got {list(section.shape)}")
        try:
            grid = decode_binary_grid(section.payload, tuple(section.shape))
        except NscFormatError as err:
            raise NscFormatError(f"section {name!r}: {err}") from None
        if grid.shape != tuple(section.shape):
            raise NscFormatError(f"section {name!r}: decoded grid {list(grid.shape)} does not match shape {list(section.shape)}")
        return grid
    if section.coder not in available_coders():
        raise NscFormatError(
            f"section {name!r}: unknown coder {section.coder!r} (known: raw, zlib, zstd, ctx3d, {', '.join(available_coders())})"
        )
    if section.dtype not in ("int32", "int64"):
        raise NscFormatError(f"section {name!r}: entropy-coded section must have dtype int32/int64, got {section.dtype!r}")
    payload = section.payload
    if len(payload) < _ENTROPY_HEAD.size:
        raise NscFormatError(f"section {name!r}: entropy payload too short ({len(payload)} bytes)")
    layout, axis, flags, tlen = _ENTROPY_HEAD.unpack_from(payload, 0)
    if layout != _ENTROPY_LAYOUT:
        raise NscFormatError(f"section {name!r}: unsupported entropy payload layout {layout}")
    shape = section.shape
    if len(shape) < 1 or axis >= len(shape):
        raise NscFormatError(f"section {name!r}: channel axis {axis} invalid for shape {list(shape)}")
    if flags & ~_FLAG_MASKED:
        raise NscFormatError(f"section {name!r}: unknown entropy payload flags {flags:#x}")
    start = _ENTROPY_HEAD.size
    if start + tlen > len(payload):
        raise NscFormatError(f"section {name!r}: CDF table ({tlen} bytes) extends past the payload")
    try:
        table = IntegerCDFTable.from_bytes(payload[start : start + tlen])
    except NscFormatError as err:
        raise NscFormatError(f"section {name!r}: {err}") from None
    if table.num_channels != shape[axis]:
        raise NscFormatError(
            f"section {name!r}: CDF table has {table.num_channels} channels, shape {list(shape)} has {shape[axis]} on axis {axis}"
        )
    channels = _channel_index(shape, axis)
    keep = None
    if flags & _FLAG_MASKED:
        if mask is None:
            raise NscError(f"section {name!r} was coded with a mask; pass the same mask to decode_section")
        m = _to_numpy(mask, f"section {name!r} mask")
        if m.dtype != np.bool_ or m.shape != tuple(shape):
            raise NscError(f"section {name!r}: mask must be a bool array shaped {tuple(shape)}, got {m.dtype} {m.shape}")
        keep = m.reshape(-1)
        channels = channels[keep]
    elif mask is not None:
        raise NscError(f"section {name!r} was coded without a mask, but a mask was given")
    try:
        values = get_coder(section.coder).decode(payload[start + tlen :], channels, table)
    except EntropyCodingError as err:
        raise NscFormatError(f"section {name!r}: {err}") from None
    dt = np.dtype(section.dtype)
    if values.size and (values.min() < np.iinfo(dt).min or values.max() > np.iinfo(dt).max):
        raise NscFormatError(f"section {name!r}: decoded values do not fit the declared dtype {dt.name}")
    if keep is None:
        return values.astype(dt).reshape(shape)
    out = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=dt)
    out[keep] = values
    return out.reshape(shape)
