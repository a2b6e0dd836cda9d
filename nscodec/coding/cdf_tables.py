"""Integer CDF tables: the exported, frozen form of an entropy model.

A learned entropy model (e.g. :class:`nscodec.coding.entropy_models.FactorizedPrior`) is evaluated ONCE at
export time on an integer support per channel; the resulting probabilities are quantized to integer
frequencies that sum to exactly ``2**precision``. Encoder and decoder then only use these integers, so
coding is bit-exact across machines and no floating-point CDF is ever recomputed at decode time (the
determinism argument of Ballé et al. 2019, "Integer networks for data compression with latent-variable
models", ICLR, applied to the final pmf; the table layout follows the usual range/ANS-coder practice of
Duda 2013, "Asymmetric numeral systems").

Layout of a table with ``C`` channels (all arrays are numpy):

* ``precision``: int, bits of the probability resolution (12..24); every channel's frequencies sum to
  ``2**precision``.
* ``offsets``: int32 ``[C]``, the smallest in-range symbol of each channel.
* ``lengths``: int32 ``[C]``, number of USED entries = in-range support length + 1. Entry ``lengths[c]-1``
  (the LAST used entry) is the *escape symbol*: it carries the tail mass, and a symbol outside
  ``[offsets[c], offsets[c] + lengths[c] - 2]`` is coded as the escape symbol followed by its raw value
  (see :mod:`nscodec.coding.coders`).
* ``pmf``: uint32 ``[C, L]`` integer frequencies, ``L = max(lengths)``, zero-padded after the used entries.
  Every used entry is >= 1, so no symbol has zero probability.

This module also holds the zigzag + LEB128 varint helpers shared by the serializers.

Length: one data structure (the table), its construction from probabilities, its validation and its byte serialisation
— what a file carries and what its decoder trusts, kept together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Type, Union

import numpy as np

from nscodec.errors import NscError, NscFormatError

__all__ = [
    "IntegerCDFTable",
    "MIN_PRECISION",
    "MAX_PRECISION",
    "MAX_TABLE_LENGTH",
    "encode_varints",
    "decode_varints",
    "zigzag_encode",
    "zigzag_decode",
]

MIN_PRECISION = 12
MAX_PRECISION = 24
#: Largest number of used entries (in-range support + escape) a channel may have.
MAX_TABLE_LENGTH = 1 << 16

_TABLE_MAGIC = b"NC"
_TABLE_VERSION = 1
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


# ----------------------------------------------------------------------------------------------------------
# varints
# ----------------------------------------------------------------------------------------------------------
def zigzag_encode(values: np.ndarray) -> np.ndarray:
    """Zigzag-map signed integers to unsigned ones (0, -1, 1, -2, ... -> 0, 1, 2, 3, ...).

    Args:
        values: integer array of any shape (converted to int64).

    Returns:
        uint64 array of the same shape.

    Source: the zigzag encoding of Google Protocol Buffers ("Encoding", signed integers).
    """
    v = np.asarray(values, dtype=np.int64)
    return ((v << np.int64(1)) ^ (v >> np.int64(63))).view(np.uint64)


def zigzag_decode(values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`zigzag_encode`: uint64 array -> int64 array of the same shape."""
    u = np.asarray(values, dtype=np.uint64)
    return ((u >> np.uint64(1)) ^ (np.uint64(0) - (u & np.uint64(1)))).view(np.int64)


def encode_varints(values: np.ndarray) -> bytes:
    """Encode non-negative integers as concatenated unsigned LEB128 varints (7 bits per byte).

    Args:
        values: 1-D array-like of non-negative integers below 2**64 (``[N]``).

    Returns:
        The bytes; each value takes ``max(1, ceil(bit_length / 7))`` bytes (1..10).

    Raises:
        NscError: a negative value.

    Source: DWARF 4 standard, Sec. 7.6 "Variable Length Data" (unsigned LEB128).
    """
    arr = np.asarray(values)
    if arr.size and arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise NscError("encode_varints: values must be non-negative (zigzag-encode signed values first)")
    v = arr.astype(np.uint64).ravel()
    if v.size == 0:
        return b""
    nbytes = np.ones(v.shape, dtype=np.int64)
    for k in range(1, 10):
        nbytes += v >= np.uint64(1 << (7 * k))
    ends = np.cumsum(nbytes)
    starts = ends - nbytes
    out = np.zeros(int(ends[-1]), dtype=np.uint8)
    for k in range(int(nbytes.max())):
        m = nbytes > k
        byte = (v[m] >> np.uint64(7 * k)) & np.uint64(0x7F)
        byte = byte | np.where(nbytes[m] > k + 1, np.uint64(0x80), np.uint64(0))
        out[starts[m] + k] = byte.astype(np.uint8)
    return out.tobytes()


def decode_varints(
    data: Union[bytes, bytearray, memoryview],
    pos: int,
    count: int,
    exc: Type[NscError] = NscFormatError,
    what: str = "varint stream",
) -> Tuple[np.ndarray, int]:
    """Decode ``count`` unsigned LEB128 varints from ``data`` starting at byte ``pos``.

    Args:
        data: the byte buffer.
        pos: start offset in bytes.
        count: number of varints to read (>= 0).
        exc: exception class raised on malformed input.
        what: name of the structure being parsed, used in error messages.

    Returns:
        ``(values, new_pos)``: uint64 array ``[count]`` and the offset just after the last varint.

    Raises:
        exc (default NscFormatError): the buffer ends before ``count`` varints were read (truncated), a
            varint is longer than 10 bytes or overflows 64 bits, or it is not minimally encoded.
    """
    if count < 0:
        raise exc(f"{what}: negative varint count {count}")
    if count == 0:
        return np.zeros(0, dtype=np.uint64), pos
    buf = np.frombuffer(data, dtype=np.uint8)[pos:]
    term = np.flatnonzero(buf < 0x80)
    if term.size < count:
        raise exc(f"{what}: truncated (expected {count} varints, found {term.size})")
    ends = term[:count]
    starts = np.empty(count, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lens = ends - starts + 1
    maxlen = int(lens.max())
    if maxlen > 10:
        raise exc(f"{what}: varint longer than 10 bytes (corrupt data)")
    if maxlen > 1 and np.any((lens > 1) & (buf[ends] == 0)):
        raise exc(f"{what}: non-minimal varint encoding (corrupt data)")
    if maxlen == 10 and np.any((lens == 10) & (buf[ends] > 1)):
        raise exc(f"{what}: varint overflows 64 bits (corrupt data)")
    vals = np.zeros(count, dtype=np.uint64)
    for k in range(maxlen):
        m = lens > k
        vals[m] |= (buf[starts[m] + k] & np.uint8(0x7F)).astype(np.uint64) << np.uint64(7 * k)
    return vals, pos + int(ends[-1]) + 1


# ----------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class IntegerCDFTable:
    """Per-channel integer frequency table with one escape symbol per channel.

    Attributes:
        precision: probability resolution in bits (``MIN_PRECISION``..``MAX_PRECISION`` = 12..24); each
            channel's used frequencies sum to exactly ``2**precision``.
        offsets: int32 ``[C]``, smallest in-range symbol of each channel.
        pmf: uint32 ``[C, L]`` integer frequencies, zero-padded; every used entry >= 1. Stored in canonical
            form with ``L = max(lengths)`` (extra all-zero columns are dropped on construction).
        lengths: int32 ``[C]``, used entries per channel = in-range support length + 1 (the escape symbol,
            which is the LAST used entry ``lengths[c] - 1``); each >= 2 and <= ``MAX_TABLE_LENGTH``.

    Symbol ``s`` of channel ``c`` maps to table index ``s - offsets[c]`` when
    ``offsets[c] <= s <= offsets[c] + lengths[c] - 2``, otherwise to the escape index ``lengths[c] - 1``.
    Its ideal code length is ``precision - log2(pmf[c, index])`` bits.

    Raises:
        NscError: on construction with inconsistent shapes/dtypes, a precision outside 12..24, a channel
            whose used frequencies do not sum to ``2**precision``, a zero used entry, or a non-zero padding
            entry.
    """

    precision: int
    offsets: np.ndarray
    pmf: np.ndarray
    lengths: np.ndarray

    def __post_init__(self) -> None:
        self._validate(NscError)

    # -- validation ------------------------------------------------------------------------------------
    def _validate(self, exc: Type[NscError]) -> None:
        if isinstance(self.precision, bool) or not isinstance(self.precision, (int, np.integer)):
            raise exc(f"CDF table precision must be an int, got {type(self.precision).__name__}")
        self.precision = int(self.precision)
        if not MIN_PRECISION <= self.precision <= MAX_PRECISION:
            raise exc(
                f"CDF table precision {self.precision} outside the supported range "
                f"{MIN_PRECISION}..{MAX_PRECISION} bits"
            )
        offsets = np.asarray(self.offsets)
        lengths = np.asarray(self.lengths)
        pmf = np.asarray(self.pmf)
        if offsets.ndim != 1 or lengths.ndim != 1 or pmf.ndim != 2:
            raise exc(
                f"CDF table needs offsets [C], lengths [C], pmf [C, L]; got shapes {offsets.shape}, "
                f"{lengths.shape}, {pmf.shape}"
            )
        C = pmf.shape[0]
        if C == 0:
            raise exc("CDF table must have at least one channel")
        if offsets.shape[0] != C or lengths.shape[0] != C:
            raise exc(f"CDF table channel mismatch: pmf has {C} rows, offsets {offsets.shape[0]}, lengths {lengths.shape[0]}")
        for name, arr in (("offsets", offsets), ("lengths", lengths), ("pmf", pmf)):
            if arr.dtype.kind not in "iu":
                raise exc(f"CDF table {name} must be an integer array, got dtype {arr.dtype}")
        if lengths.min() < 2:
            c = int(np.argmin(lengths))
            raise exc(f"CDF table channel {c} has length {int(lengths[c])}; need >= 2 (one symbol + escape)")
        if lengths.max() > MAX_TABLE_LENGTH:
            c = int(np.argmax(lengths))
            raise exc(f"CDF table channel {c} has length {int(lengths[c])} > maximum {MAX_TABLE_LENGTH}")
        if lengths.max() > pmf.shape[1]:
            raise exc(f"CDF table pmf has {pmf.shape[1]} columns but a channel length is {int(lengths.max())}")
        if lengths.max() > (1 << self.precision):
            raise exc(f"CDF table support length {int(lengths.max())} exceeds 2**precision = {1 << self.precision}")
        off64 = offsets.astype(np.int64)
        if off64.min() < _INT32_MIN or (off64 + lengths.astype(np.int64) - 2).max() > _INT32_MAX:
            raise exc("CDF table symbol range exceeds int32")
        if pmf.size and (pmf.min() < 0 or pmf.max() > (1 << self.precision)):
            raise exc("CDF table pmf entries must lie in [0, 2**precision]")
        pmf64 = pmf.astype(np.int64)
        used = np.arange(pmf.shape[1])[None, :] < lengths[:, None]
        if np.any(pmf64[used] < 1):
            c = int(np.flatnonzero((~(pmf64 >= 1) & used).any(axis=1))[0])
            raise exc(f"CDF table channel {c} has a zero-probability symbol (every used entry must be >= 1)")
        if np.any(pmf64[~used] != 0):
            raise exc("CDF table padding entries (beyond each channel's length) must be zero")
        sums = pmf64.sum(axis=1)
        if np.any(sums != (1 << self.precision)):
            c = int(np.flatnonzero(sums != (1 << self.precision))[0])
            raise exc(
                f"CDF table channel {c} frequencies sum to {int(sums[c])}, expected 2**{self.precision} = "
                f"{1 << self.precision}"
            )
        self.offsets = off64.astype(np.int32)
        self.lengths = lengths.astype(np.int32)
        # canonical form: drop all-zero padding columns beyond the longest channel
        self.pmf = pmf64[:, : int(lengths.max())].astype(np.uint32)

    # -- basic properties ------------------------------------------------------------------------------
    @property
    def num_channels(self) -> int:
        """Number of channels ``C``."""
        return int(self.pmf.shape[0])

    @property
    def max_length(self) -> int:
        """``L = pmf.shape[1]``, the padded table width (entries)."""
        return int(self.pmf.shape[1])

    @property
    def escape_indices(self) -> np.ndarray:
        """int32 ``[C]``: table index of each channel's escape symbol (``lengths - 1``)."""
        return (self.lengths - 1).astype(np.int32)

    def cdf(self) -> np.ndarray:
        """Cumulative frequencies, uint32 ``[C, L + 1]``.

        ``cdf[c, 0] = 0`` and ``cdf[c, k] = sum(pmf[c, :k])``; entries from ``lengths[c]`` on equal
        ``2**precision``. Symbol index ``k`` occupies ``[cdf[c, k], cdf[c, k+1])`` of ``[0, 2**precision)``.
        """
        out = np.zeros((self.num_channels, self.max_length + 1), dtype=np.uint32)
        out[:, 1:] = np.cumsum(self.pmf.astype(np.uint64), axis=1).astype(np.uint32)
        return out

    def code_lengths(self) -> np.ndarray:
        """Ideal code length of every table entry in bits, float64 ``[C, L]`` (``inf`` for padding)."""
        with np.errstate(divide="ignore"):
            return self.precision - np.log2(self.pmf.astype(np.float64))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntegerCDFTable):
            return NotImplemented
        return (
            self.precision == other.precision
            and np.array_equal(self.offsets, other.offsets)
            and np.array_equal(self.lengths, other.lengths)
            and self.pmf.shape == other.pmf.shape
            and np.array_equal(self.pmf, other.pmf)
        )

    # -- symbol mapping --------------------------------------------------------------------------------
    def _broadcast_channels(self, symbols: np.ndarray, channel_index) -> np.ndarray:
        ch = np.asarray(channel_index)
        if ch.ndim == 0:
            ch = np.full(symbols.shape, int(ch), dtype=np.int64)
        if ch.shape != symbols.shape:
            raise NscError(f"channel index array shape {ch.shape} does not match symbols shape {symbols.shape}")
        if ch.size and ch.dtype.kind not in "iu":
            raise NscError(f"channel indices must be integers, got dtype {ch.dtype}")
        ch = ch.astype(np.int64)
        if ch.size and (ch.min() < 0 or ch.max() >= self.num_channels):
            raise NscError(
                f"channel index out of range [0, {self.num_channels}): found {int(ch.min())}..{int(ch.max())}"
            )
        return ch

    def map_symbols(self, symbols: np.ndarray, channel_index) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Map integer symbols to table indices, replacing out-of-range symbols by the escape index.

        Args:
            symbols: integer array ``[N]``.
            channel_index: int, or integer array ``[N]`` with the channel of each symbol (``0 <= c < C``).

        Returns:
            ``(indices, is_escape, channels)``: int64 ``[N]`` table indices in ``[0, lengths[c])``, bool
            ``[N]`` escape flags, int64 ``[N]`` channel indices.

        Raises:
            NscError: non-integer symbols, shape mismatch, or channel index out of range.
        """
        sym = np.asarray(symbols)
        if sym.ndim != 1:
            raise NscError(f"symbols must be a 1-D array [N], got shape {sym.shape}")
        if sym.size and sym.dtype.kind not in "iu":
            raise NscError(f"symbols must be integers, got dtype {sym.dtype}")
        if sym.dtype == np.uint64 and sym.size and sym.max() > np.iinfo(np.int64).max:
            raise NscError("symbols exceed the int64 range")
        sym = sym.astype(np.int64)
        ch = self._broadcast_channels(sym, channel_index)
        idx = sym - self.offsets.astype(np.int64)[ch]
        esc_idx = self.lengths.astype(np.int64)[ch] - 1
        is_escape = (idx < 0) | (idx >= esc_idx)
        idx = np.where(is_escape, esc_idx, idx)
        return idx, is_escape, ch

    def estimated_bits(self, symbols: np.ndarray, channel_index) -> float:
        """Exact ideal code length of ``symbols`` under this table, in bits.

        ``sum_i (precision - log2 pmf[c_i, index(s_i)])``; an out-of-range symbol counts as its channel's
        escape symbol. The raw escape values appended by the coders are NOT included (they are not
        entropy-coded). An ideal arithmetic/ANS coder approaches this bound up to a constant.

        Args:
            symbols: integer array ``[N]``.
            channel_index: int (all symbols in one channel) or integer array ``[N]``.

        Returns:
            float, bits.

        Raises:
            NscError: as :meth:`map_symbols`.
        """
        idx, _, ch = self.map_symbols(symbols, channel_index)
        if idx.size == 0:
            return 0.0
        freq = self.pmf[ch, idx].astype(np.float64)
        return float(np.sum(self.precision - np.log2(freq)))

    # -- construction from float probabilities ---------------------------------------------------------
    @classmethod
    def from_probabilities(
        cls,
        probs: np.ndarray,
        lengths: Sequence[int],
        offsets: Sequence[int],
        precision: int = 16,
    ) -> "IntegerCDFTable":
        """Quantize float probabilities to an integer table, deterministically.

        Per channel, the used probabilities (entries ``0..lengths[c]-1``; the last is the escape symbol) are
        normalized, scaled to ``2**precision`` and rounded, every entry is clamped to >= 1, and the sum is
        then fixed up exactly by an iterative greedy step that adds (removes) one unit at the entries where
        that lowers (raises least) the cross-entropy ``-sum p log2 q``; ties are broken by index (stable
        sort), so the result depends only on the input values.

        Args:
            probs: float64 ``[C, L]`` non-negative probabilities (need not be normalized; entries beyond each
                channel's length are ignored).
            lengths: ``[C]`` used entries per channel (in-range support + 1 escape), each in
                ``2..min(L, 2**precision, MAX_TABLE_LENGTH)``.
            offsets: ``[C]`` smallest in-range symbol per channel.
            precision: bits, 12..24.

        Returns:
            A validated :class:`IntegerCDFTable`.

        Raises:
            NscError: bad shapes, NaN/inf/negative probabilities, a channel with zero total mass, or lengths
                out of range.
        """
        P = np.asarray(probs, dtype=np.float64)
        lens = np.asarray(lengths)
        offs = np.asarray(offsets)
        if P.ndim != 2:
            raise NscError(f"probs must be [C, L], got shape {P.shape}")
        C, L = P.shape
        if lens.shape != (C,) or offs.shape != (C,):
            raise NscError(f"lengths and offsets must have shape [{C}], got {lens.shape} and {offs.shape}")
        if C == 0:
            raise NscError("probs has no channels")
        if isinstance(precision, bool) or not MIN_PRECISION <= int(precision) <= MAX_PRECISION:
            raise NscError(f"precision {precision} outside the supported range {MIN_PRECISION}..{MAX_PRECISION}")
        precision = int(precision)
        total = 1 << precision
        lens = lens.astype(np.int64)
        if lens.min() < 2 or lens.max() > L or lens.max() > min(total, MAX_TABLE_LENGTH):
            raise NscError(
                f"lengths must lie in 2..min(L={L}, 2**precision={total}, {MAX_TABLE_LENGTH}); got "
                f"{int(lens.min())}..{int(lens.max())}"
            )
        pmf = np.zeros((C, L), dtype=np.int64)
        for c in range(C):
            n = int(lens[c])
            p = P[c, :n]
            if not np.all(np.isfinite(p)) or np.any(p < 0):
                raise NscError(f"channel {c}: probabilities must be finite and non-negative")
            s = float(p.sum())
            if not s > 0:
                raise NscError(f"channel {c}: probabilities sum to zero")
            pmf[c, :n] = _quantize_channel(p / s, total)
        return cls(precision=precision, offsets=offs.astype(np.int64), pmf=pmf, lengths=lens)

    # -- serialization ---------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """Serialize compactly.

        Byte layout (all varints unsigned LEB128, see :func:`encode_varints`)::

            b"NC"                magic (2 bytes)
            u8                   table format version (1)
            u8                   precision (bits)
            varint               C
            varint * C           zigzag(offsets)
            varint * C           lengths
            per channel c:       varint * (lengths[c] - 1)  pmf[c, k] - 1 for k < lengths[c] - 1
                                 (the escape frequency is implied: 2**precision - sum of the others)

        Returns:
            bytes (typically ~1-2 bytes per table entry).
        """
        parts = [
            _TABLE_MAGIC,
            bytes([_TABLE_VERSION, self.precision]),
            encode_varints(np.array([self.num_channels], dtype=np.uint64)),
            encode_varints(zigzag_encode(self.offsets.astype(np.int64))),
            encode_varints(self.lengths.astype(np.uint64)),
        ]
        used = np.arange(self.max_length)[None, :] < (self.lengths[:, None] - 1)
        parts.append(encode_varints(self.pmf[used].astype(np.uint64) - np.uint64(1)))
        return b"".join(parts)

    @classmethod
    def from_bytes(cls, data: Union[bytes, bytearray, memoryview]) -> "IntegerCDFTable":
        """Parse :meth:`to_bytes` output; the whole buffer must be consumed.

        Args:
            data: serialized table.

        Returns:
            The validated table.

        Raises:
            NscFormatError: bad magic/version, truncated or trailing bytes, out-of-range precision, lengths or
                offsets, or frequencies that do not sum to ``2**precision`` (garbage input never yields a
                table).
        """
        try:
            data = bytes(data)
        except TypeError:
            raise NscFormatError(f"CDF table must be bytes, got {type(data).__name__}") from None
        what = "CDF table"
        if len(data) < 4:
            raise NscFormatError(f"{what}: {len(data)} bytes is too short")
        if data[:2] != _TABLE_MAGIC:
            raise NscFormatError(f"{what}: bad magic {data[:2]!r} (expected {_TABLE_MAGIC!r})")
        if data[2] != _TABLE_VERSION:
            raise NscFormatError(f"{what}: unsupported table version {data[2]} (this reader supports {_TABLE_VERSION})")
        precision = data[3]
        if not MIN_PRECISION <= precision <= MAX_PRECISION:
            raise NscFormatError(f"{what}: precision {precision} outside {MIN_PRECISION}..{MAX_PRECISION}")
        (C_arr, pos) = decode_varints(data, 4, 1, what=what)
        C = int(C_arr[0])
        if C < 1 or 2 * C > len(data) - pos:
            raise NscFormatError(f"{what}: implausible channel count {C} for {len(data)} bytes")
        zz, pos = decode_varints(data, pos, C, what=what)
        offsets = zigzag_decode(zz)
        lens_u, pos = decode_varints(data, pos, C, what=what)
        if lens_u.min() < 2 or lens_u.max() > min(MAX_TABLE_LENGTH, 1 << precision):
            raise NscFormatError(f"{what}: channel length out of range 2..{min(MAX_TABLE_LENGTH, 1 << precision)}")
        lengths = lens_u.astype(np.int64)
        if offsets.min() < _INT32_MIN or (offsets + lengths - 2).max() > _INT32_MAX:
            raise NscFormatError(f"{what}: symbol range exceeds int32")
        n_explicit = int((lengths - 1).sum())
        if n_explicit > len(data) - pos:
            raise NscFormatError(f"{what}: truncated (needs at least {n_explicit} more bytes, has {len(data) - pos})")
        vals, pos = decode_varints(data, pos, n_explicit, what=what)
        if pos != len(data):
            raise NscFormatError(f"{what}: {len(data) - pos} trailing bytes after the table")
        total = 1 << precision
        if n_explicit and vals.max() >= np.uint64(total):
            raise NscFormatError(f"{what}: frequency exceeds 2**precision")
        L = int(lengths.max())
        pmf = np.zeros((C, L), dtype=np.int64)
        explicit = np.arange(L)[None, :] < (lengths[:, None] - 1)
        pmf[explicit] = vals.astype(np.int64) + 1
        escape = total - pmf.sum(axis=1)
        if np.any(escape < 1):
            c = int(np.flatnonzero(escape < 1)[0])
            raise NscFormatError(f"{what}: channel {c} frequencies exceed 2**{precision} (corrupt table)")
        pmf[np.arange(C), lengths - 1] = escape
        table = cls.__new__(cls)
        table.precision, table.offsets, table.pmf, table.lengths = precision, offsets, pmf, lengths
        table._validate(NscFormatError)
        return table

    def __repr__(self) -> str:
        return (
            f"IntegerCDFTable(channels={self.num_channels}, precision={self.precision}, "
            f"lengths={int(self.lengths.min())}..{int(self.lengths.max())})"
        )


def _quantize_channel(p: np.ndarray, total: int) -> np.ndarray:
    """Quantize one normalized pmf ``p`` ``[n]`` to ints >= 1 summing to ``total`` (greedy fix-up)."""
    n = p.shape[0]
    q = np.maximum(1, np.floor(p * total + 0.5)).astype(np.int64)
    deficit = total - int(q.sum())
    idx = np.arange(n)
    while deficit != 0:
        qf = q.astype(np.float64)
        if deficit > 0:
            # gain (nats) of adding one unit: p * log((q+1)/q)
            gain = p * np.log1p(1.0 / qf)
            order = np.lexsort((idx, -gain))
            k = min(deficit, n)
            q[order[:k]] += 1
            deficit -= k
        else:
            # loss of removing one unit: p * log(q/(q-1)); only where q > 1
            with np.errstate(divide="ignore", invalid="ignore"):
                loss = np.where(q > 1, -p * np.log1p(-1.0 / qf), math.inf)
            eligible = int(np.count_nonzero(q > 1))
            order = np.lexsort((idx, loss))
            k = min(-deficit, eligible)
            q[order[:k]] -= 1
            deficit += k
    return q
