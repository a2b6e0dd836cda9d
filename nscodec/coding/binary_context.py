"""Context-adaptive arithmetic coding of a 3-D binary grid (the occupancy grid of a radiance field).

Occupancy is spatially coherent, so a voxel is predicted from already-coded neighbours, the way JBIG codes
bilevel images (ITU-T T.82) and MPEG G-PCC codes octree occupancy from neighbour configurations. The grid
``[X, Y, Z]`` is coded in raster order, one row ``(x, y, :)`` at a time. The context of voxel ``(x, y, z)`` is
the 9 bits of its causal neighbours in :data:`CONTEXT_OFFSETS` (earlier slices ``x-1``, ``x-2`` and earlier rows
``y-1``, ``y-2``; nothing from the same row), so a whole row is decoded in one vectorised call. The probability
of a 1 in each of the 512 contexts is the grid's own frequency (a static two-pass model, like
:func:`~nscodec.coding.posthoc.histogram_table`), stored in the payload as 16-bit fixed point; symbols are
range-coded with constriction's ``Bernoulli`` model (``constriction.stream.queue``).

Payload layout (little-endian)::

    u8     layout version (2; 1 = the same without W)
    3×u32  X, Y, Z
    u32    T = byte length of the DEFLATE-compressed probability table
    u32    W = number of u32 words of the range-coder stream (layout 2)
    T      zlib(512 × u16: P(1 | context) · 65536, in [1, 65535])
    4·W    range-coder stream (u32 words)

A range decoder cannot tell where its stream ends, so trailing bytes are caught by ``W`` (layout 2), or, for
layout-1 payloads, by re-encoding the decoded grid and comparing the words.

On occupancy grids of real objects this takes markedly fewer bytes than DEFLATE-packed bits (measured in
docs/benchmarks.md, "occupancy coding").
"""

from __future__ import annotations

import struct
import zlib
from typing import Optional, Tuple

import numpy as np

from nscodec.errors import NscError, NscFormatError

#: ``(dx, dy, dz)``: the context reads voxel ``(x - dx, y - dy, z - dz)`` (0 outside the grid); bit ``i`` of the
#: context index is neighbour ``i``. All are causal for row-by-row raster decoding (``dx > 0`` or ``dy > 0``).
CONTEXT_OFFSETS: Tuple[Tuple[int, int, int], ...] = (
    (1, 0, 0), (0, 1, 0), (1, 0, 1), (1, 0, -1), (0, 1, 1), (0, 1, -1), (1, 1, 0), (2, 0, 0), (0, 2, 0),
)
NUM_CONTEXTS = 1 << len(CONTEXT_OFFSETS)
_HEAD = struct.Struct("<BIIII")  # layout 1
_HEAD2 = struct.Struct("<BIIIII")  # layout 2: + the stream's word count
_LAYOUT = 2
_PAD = 2  # max |offset|


def _padded(grid: np.ndarray) -> np.ndarray:
    return np.pad(grid.astype(np.int64), ((_PAD, 0), (_PAD, 0), (1, 1)))


def _contexts_all(grid: np.ndarray) -> np.ndarray:
    """Context index ``[X, Y, Z]`` (int64 in ``[0, 512)``) of every voxel, from the full grid (encoder side)."""
    X, Y, Z = grid.shape
    P = _padded(grid)
    ctx = np.zeros(grid.shape, np.int64)
    for bit, (dx, dy, dz) in enumerate(CONTEXT_OFFSETS):
        ctx |= P[_PAD - dx : _PAD - dx + X, _PAD - dy : _PAD - dy + Y, 1 - dz : 1 - dz + Z] << bit
    return ctx


def _slice_contexts(P: np.ndarray, x: int, Y: int, Z: int) -> np.ndarray:
    """Context bits ``[Y, Z]`` of slice ``x`` that read earlier slices (``dx > 0``), from the padded grid ``P``."""
    ctx = np.zeros((Y, Z), np.int64)
    for bit, (dx, dy, dz) in enumerate(CONTEXT_OFFSETS):
        if dx > 0:
            ctx |= P[_PAD + x - dx, _PAD - dy : _PAD - dy + Y, 1 - dz : 1 - dz + Z] << bit
    return ctx


def _row_bits(P: np.ndarray, x: int, y: int, Z: int) -> np.ndarray:
    """Context bits ``[Z]`` of row ``(x, y, :)`` that read earlier rows of the same slice (``dx == 0``)."""
    ctx = np.zeros(Z, np.int64)
    for bit, (dx, dy, dz) in enumerate(CONTEXT_OFFSETS):
        if dx == 0:
            ctx |= P[_PAD + x, _PAD + y - dy, 1 - dz : 1 - dz + Z] << bit
    return ctx


def encode_binary_grid(grid: np.ndarray) -> bytes:
    """Code a boolean grid ``[X, Y, Z]`` (any sizes ≥ 1) into a self-contained payload (layout in the module doc).

    Returns:
        the payload; its length in bytes is the coded size (≈ the grid's conditional entropy under the
        9-neighbour context plus ~1 KB of table).

    Raises:
        NscError: not a 3-D array of 0/1 values.
    """
    g = np.asarray(grid)
    if g.ndim != 3 or g.size == 0 or not np.isin(g, (0, 1)).all():
        raise NscError(f"encode_binary_grid needs a non-empty 3-D array of 0/1 values, got shape {g.shape}")
    g = g.astype(np.int64)
    ctx = _contexts_all(g).reshape(-1)
    ones = np.bincount(ctx, weights=g.reshape(-1), minlength=NUM_CONTEXTS)
    total = np.bincount(ctx, minlength=NUM_CONTEXTS)
    p = np.where(total > 0, ones / np.maximum(total, 1), 0.5)
    table = np.clip(np.rint(p * 65536), 1, 65535).astype("<u2")
    stream = _range_code(g, table.astype(np.float64) / 65536.0, ctx)
    tz = zlib.compress(table.tobytes(), 9)
    return _HEAD2.pack(_LAYOUT, *g.shape, len(tz), len(stream) // 4) + tz + stream


def _range_code(g: np.ndarray, probs: np.ndarray, ctx: Optional[np.ndarray] = None) -> bytes:
    """Range-code the int64 0/1 grid ``g [X, Y, Z]`` under per-context probabilities ``probs [NUM_CONTEXTS]``."""
    import constriction

    if ctx is None:
        ctx = _contexts_all(g).reshape(-1)
    enc = constriction.stream.queue.RangeEncoder()
    enc.encode(g.reshape(-1).astype(np.int32), constriction.stream.model.Bernoulli(perfect=False), probs[ctx])
    return enc.get_compressed().astype("<u4").tobytes()


#: largest grid :func:`decode_binary_grid` accepts (cells); its working array takes 8 bytes per cell
MAX_GRID_CELLS = 1 << 27


def decode_binary_grid(payload: bytes, expected_shape: Optional[Tuple[int, int, int]] = None) -> np.ndarray:
    """Inverse of :func:`encode_binary_grid`: the boolean grid ``[X, Y, Z]``.

    Args:
        expected_shape: the shape the caller declared; checked against the payload's before anything is allocated.

    Raises:
        NscFormatError: truncated or corrupt payload, unknown layout version, a grid larger than
            :data:`MAX_GRID_CELLS` or of another shape than ``expected_shape``, or words left after the stream.
    """
    import constriction

    if len(payload) < _HEAD.size:
        raise NscFormatError(f"binary-grid payload of {len(payload)} bytes is shorter than its {_HEAD.size}-byte header")
    layout = payload[0]
    if layout not in (1, 2):
        raise NscFormatError(f"binary-grid payload layout {layout} is not supported (expected 1 or {_LAYOUT})")
    head = _HEAD if layout == 1 else _HEAD2
    if len(payload) < head.size:
        raise NscFormatError(f"binary-grid payload of {len(payload)} bytes is shorter than its {head.size}-byte header")
    layout, X, Y, Z, tlen, *words = head.unpack_from(payload)
    if min(X, Y, Z) < 1 or X * Y * Z > MAX_GRID_CELLS:
        raise NscFormatError(f"binary-grid payload: bad grid size {X}x{Y}x{Z} (at most {MAX_GRID_CELLS} cells)")
    if expected_shape is not None and (X, Y, Z) != tuple(expected_shape):
        raise NscFormatError(f"binary-grid payload holds a {X}x{Y}x{Z} grid, declared {list(expected_shape)}")
    d = zlib.decompressobj()
    try:
        table_raw = d.decompress(payload[head.size : head.size + tlen], 2 * NUM_CONTEXTS + 1)
    except zlib.error as err:
        raise NscFormatError(f"binary-grid payload: corrupt probability table ({err})") from None
    if len(table_raw) != 2 * NUM_CONTEXTS or not d.eof or d.unused_data or d.unconsumed_tail:
        raise NscFormatError("binary-grid payload: bad probability table")
    table = np.frombuffer(table_raw, dtype="<u2")
    rest = payload[head.size + tlen :]
    if words and len(rest) != 4 * words[0]:
        raise NscFormatError(f"binary-grid payload: {len(rest)} stream bytes, the header declares {4 * words[0]}")
    if table.size != NUM_CONTEXTS or (table == 0).any() or len(rest) % 4:
        raise NscFormatError("binary-grid payload: bad probability table or truncated stream")
    probs = table.astype(np.float64) / 65536.0
    dec = constriction.stream.queue.RangeDecoder(np.frombuffer(rest, dtype="<u4").astype(np.uint32))
    model = constriction.stream.model.Bernoulli(perfect=False)
    P = np.zeros((X + _PAD, Y + _PAD, Z + 2), np.int64)
    try:
        for x in range(X):
            sctx = _slice_contexts(P, x, Y, Z)
            for y in range(Y):
                P[_PAD + x, _PAD + y, 1 : Z + 1] = dec.decode(model, probs[sctx[y] | _row_bits(P, x, y, Z)])
    except Exception as err:  # constriction raises on an exhausted/invalid stream
        raise NscFormatError(f"binary-grid payload: corrupt range-coder stream ({err})") from None
    grid = P[_PAD:, _PAD:, 1 : Z + 1]
    # layout 1 has no word count: re-encoding the decoded grid under the file's table must give back exactly the
    # stored words, so trailing words are an error there too
    if not words and _range_code(grid, probs) != rest:
        raise NscFormatError("binary-grid payload: the range-coder stream has trailing or inconsistent words")
    return grid.astype(bool)
