"""Entropy coders: integer symbols + :class:`IntegerCDFTable` -> bytes, and back.

All coders share one self-delimiting stream layout (varints are unsigned LEB128,
:func:`nscodec.coding.cdf_tables.encode_varints`)::

    varint   N            number of symbols (must equal len(channels) at decode time)
    varint   E            number of escaped symbols
    varint   M            byte length of the main (entropy-coded) stream
    u32      CRC-32 (zlib) of the N symbols as little-endian int64 -- end-to-end check
    M bytes               main stream (backend specific, see the coder classes)
    E varints             zigzag(true value) of each escaped symbol, in symbol order

A symbol ``s`` of channel ``c`` is *in range* when ``offsets[c] <= s <= offsets[c] + lengths[c] - 2``; it
is then coded as table index ``s - offsets[c]``. Any other value (e.g. an outlier latent of +-1e6) is coded
as the channel's *escape* symbol (index ``lengths[c] - 1``, carrying the tail mass of the entropy model)
and its true value is appended raw after the main stream. This mirrors the overflow/escape mechanism of
Ballé et al.'s range-coding ops in tensorflow-compression (``unbounded_index_range_encode``), written
independently here.

Decoding validates everything it can: the header against the caller's channel array, that every part
ends where the header says, that the backend consumed its stream exactly (ANS final-state check), that
decoded indices are within each channel's table, that escaped values really are out of range, and finally
the CRC-32 of the decoded symbols (which also catches decoding with the wrong table, and corruption that
the ANS state check alone misses). Any inconsistency raises :class:`EntropyCodingError`; garbage never
yields a silently wrong array (up to the 2**-32 CRC collision probability).
"""

from __future__ import annotations

import abc
import struct
import zlib
from typing import Dict, List, Tuple, Type, Union

import numpy as np

from .cdf_tables import IntegerCDFTable, decode_varints, encode_varints, zigzag_decode, zigzag_encode
from nscodec.errors import EntropyCodingError, NscError

__all__ = [
    "EntropyCoder",
    "ConstrictionCoder",
    "TorchacCoder",
    "get_coder",
    "register_coder",
    "available_coders",
]

BytesLike = Union[bytes, bytearray, memoryview]

#: constriction's ``Categorical`` quantizes to 24-bit fixed point (``DefaultContiguousCategoricalEntropyModel``).
_CONSTRICTION_PRECISION = 24


class EntropyCoder(abc.ABC):
    """Interface of an entropy coder over per-channel integer CDF tables.

    Subclasses implement the backend hooks :meth:`_encode_indices` / :meth:`_decode_indices` on table
    indices (``0 <= index < lengths[c]``); escape handling, framing and validation live here.
    """

    #: registry name, stored in ``.nsc`` section headers (``Section.coder``)
    name: str = ""

    def encode(self, symbols: np.ndarray, channels: np.ndarray, table: IntegerCDFTable) -> bytes:
        """Entropy-code integer symbols.

        Args:
            symbols: int32/int64 ``[N]`` symbols (any integer values; out-of-range ones are escaped).
            channels: integer ``[N]``, the table channel of each symbol (``0 <= channels[i] < C``), or an int
                for "all symbols in one channel".
            table: the :class:`IntegerCDFTable` (exported entropy model).

        Returns:
            The coded bytes (layout in the module docstring). Size ~ ``table.estimated_bits(...) / 8`` plus a
            few bytes of header and ~1-10 bytes per escaped symbol.

        Raises:
            NscError: symbols not a 1-D integer array, shape mismatch, channel index out of range, or a table
                the backend cannot use.
        """
        if not isinstance(table, IntegerCDFTable):
            raise NscError(f"table must be an IntegerCDFTable, got {type(table).__name__}")
        idx, is_escape, ch = table.map_symbols(symbols, channels)
        sym = np.asarray(symbols).astype(np.int64)
        # explicit bounds check before handing indices to the backend (some backends silently corrupt)
        if idx.size and (idx.min() < 0 or np.any(idx >= table.lengths.astype(np.int64)[ch])):
            raise EntropyCodingError("internal error: table index out of bounds after escape mapping")
        main = self._encode_indices(idx, ch, table)
        escapes = sym[is_escape]
        header = encode_varints(np.array([idx.size, escapes.size, len(main)], dtype=np.uint64))
        header += struct.pack("<I", _symbols_crc(sym))
        return header + main + encode_varints(zigzag_encode(escapes))

    def decode(self, data: BytesLike, channels: np.ndarray, table: IntegerCDFTable) -> np.ndarray:
        """Decode bytes produced by :meth:`encode` with the same ``channels`` and ``table``.

        Args:
            data: coded bytes.
            channels: integer ``[N]`` channel index of each symbol (as given to :meth:`encode`).
            table: the same :class:`IntegerCDFTable`.

        Returns:
            int64 ``[N]`` symbols, identical to the encoded ones.

        Raises:
            EntropyCodingError: truncated / trailing / garbage data, symbol count mismatch with ``channels``,
                or an inconsistent backend stream.
            NscError: invalid ``channels`` or ``table``.
        """
        if not isinstance(table, IntegerCDFTable):
            raise NscError(f"table must be an IntegerCDFTable, got {type(table).__name__}")
        try:
            data = bytes(data)
        except TypeError:
            raise NscError(f"data must be bytes, got {type(data).__name__}") from None
        ch = np.asarray(channels)
        if ch.ndim != 1:
            raise NscError(f"channels must be a 1-D integer array [N], got shape {ch.shape}")
        ch = table._broadcast_channels(np.zeros(ch.shape, dtype=np.int64), ch)
        what = f"{self.name} stream"
        head, pos = decode_varints(data, 0, 3, exc=EntropyCodingError, what=what)
        n, n_esc, m = (int(v) for v in head)
        if n != ch.size:
            raise EntropyCodingError(f"{what}: holds {n} symbols but {ch.size} channel indices were given")
        if n_esc > n:
            raise EntropyCodingError(f"{what}: declares {n_esc} escapes for {n} symbols (corrupt)")
        if len(data) - pos < 4:
            raise EntropyCodingError(f"{what}: truncated header")
        (crc,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if m > len(data) - pos:
            raise EntropyCodingError(f"{what}: truncated (main stream needs {m} bytes, {len(data) - pos} left)")
        main = data[pos : pos + m]
        pos += m
        zz, pos = decode_varints(data, pos, n_esc, exc=EntropyCodingError, what=f"{what} escapes")
        if pos != len(data):
            raise EntropyCodingError(f"{what}: {len(data) - pos} trailing bytes")
        idx = np.asarray(self._decode_indices(main, ch, table), dtype=np.int64)
        if idx.shape != (n,):
            raise EntropyCodingError(f"{what}: backend decoded {idx.shape} symbols, expected {n}")
        lengths = table.lengths.astype(np.int64)[ch]
        if n and (idx.min() < 0 or np.any(idx >= lengths)):
            raise EntropyCodingError(f"{what}: decoded index outside the CDF table (corrupt stream)")
        is_escape = idx == lengths - 1
        if int(is_escape.sum()) != n_esc:
            raise EntropyCodingError(
                f"{what}: {int(is_escape.sum())} escape symbols decoded but {n_esc} escape values stored (corrupt)"
            )
        out = idx + table.offsets.astype(np.int64)[ch]
        if n_esc:
            values = zigzag_decode(zz)
            lo = table.offsets.astype(np.int64)[ch[is_escape]]
            if np.any((values >= lo) & (values <= lo + lengths[is_escape] - 2)):
                raise EntropyCodingError(f"{what}: escaped value lies inside the table range (corrupt)")
            out[is_escape] = values
        if _symbols_crc(out) != crc:
            raise EntropyCodingError(f"{what}: CRC mismatch of decoded symbols (corrupt stream or wrong CDF table)")
        return out

    # -- backend hooks ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def _encode_indices(self, indices: np.ndarray, channels: np.ndarray, table: IntegerCDFTable) -> bytes:
        """Code table indices int64 ``[N]`` (already bounds-checked) of channels int64 ``[N]``."""

    @abc.abstractmethod
    def _decode_indices(self, main: bytes, channels: np.ndarray, table: IntegerCDFTable) -> np.ndarray:
        """Inverse of :meth:`_encode_indices`; returns int64 ``[N]``; raises EntropyCodingError."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def _symbols_crc(symbols: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i8").tobytes())


def _group_by_channel(channels: np.ndarray, num_channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """Stable permutation sorting symbols by channel, and the start offset of each channel ``[C + 1]``."""
    order = np.argsort(channels, kind="stable")
    counts = np.bincount(channels, minlength=num_channels)
    starts = np.zeros(num_channels + 1, dtype=np.int64)
    np.cumsum(counts, out=starts[1:])
    return order, starts


class ConstrictionCoder(EntropyCoder):
    """Default coder (name ``"ans"``): asymmetric numeral systems via ``constriction`` (Bamler 2022).

    Uses ``constriction.stream.stack.AnsCoder`` (32-bit words, 64-bit state) with one
    ``constriction.stream.model.Categorical`` per channel. Symbols are grouped by channel (stable order),
    so one model is built per channel and each channel's symbols are coded in a single vectorised call;
    the decoder reproduces the grouping from ``channels``. Main stream: the AnsCoder's uint32 words,
    little-endian (``M`` is a multiple of 4).

    Exactness of the model: constriction quantizes float probabilities to 24-bit integers. Its
    ``perfect=False`` ("fast") quantizer assigns entry ``i`` the weight ``floor(F_i * s) + i`` with
    ``F_i = sum_{j<i} w_j``, ``s = (2**24 - n) / sum(w)``. Passing the float weights ``w_i = W_i - 1``
    where ``W = pmf << (24 - precision)`` makes ``s = 1`` and all sums exact integers, so constriction's
    model equals the table (bit-exact code lengths ``precision - log2 pmf``). Passing ``pmf / 2**precision``
    directly would NOT (each weight would be rescaled by ``(2**24 - n) / 2**24`` and shifted by one).
    ``tests/test_coders.py`` probes constriction's decoder to verify every CDF boundary.

    Source: Duda 2013, "Asymmetric numeral systems"; Bamler 2022, "Understanding entropy coding with
    asymmetric numeral systems (ANS): a statistician's perspective" (constriction).
    """

    name = "ans"

    def __init__(self) -> None:
        try:
            import constriction  # noqa: F401
        except ImportError:  # pragma: no cover - constriction is a hard dependency
            raise NscError("the 'ans' coder needs the constriction package: pip install constriction") from None

    @staticmethod
    def _model(table: IntegerCDFTable, c: int):
        import constriction

        n = int(table.lengths[c])
        weights = table.pmf[c, :n].astype(np.int64) << (_CONSTRICTION_PRECISION - table.precision)
        return constriction.stream.model.Categorical((weights - 1).astype(np.float64), perfect=False)

    def _encode_indices(self, indices: np.ndarray, channels: np.ndarray, table: IntegerCDFTable) -> bytes:
        import constriction

        order, starts = _group_by_channel(channels, table.num_channels)
        grouped = indices[order].astype(np.int32)
        coder = constriction.stream.stack.AnsCoder()
        # ANS is a stack: encode the last channel first so that decoding yields channel 0 first.
        for c in range(table.num_channels - 1, -1, -1):
            a, b = int(starts[c]), int(starts[c + 1])
            if b > a:
                coder.encode_reverse(grouped[a:b], self._model(table, c))
        return np.asarray(coder.get_compressed(), dtype="<u4").tobytes()

    def _decode_indices(self, main: bytes, channels: np.ndarray, table: IntegerCDFTable) -> np.ndarray:
        import constriction

        if len(main) % 4:
            raise EntropyCodingError(f"ans stream: main stream length {len(main)} is not a multiple of 4 bytes")
        words = np.frombuffer(main, dtype="<u4").astype(np.uint32)
        order, starts = _group_by_channel(channels, table.num_channels)
        grouped = np.empty(channels.size, dtype=np.int64)
        try:
            coder = constriction.stream.stack.AnsCoder(words)
            for c in range(table.num_channels):
                a, b = int(starts[c]), int(starts[c + 1])
                if b > a:
                    grouped[a:b] = coder.decode(self._model(table, c), b - a)
            consumed = coder.is_empty()
        except EntropyCodingError:
            raise
        except Exception as err:  # constriction raises ValueError/AssertionError variants on bad streams
            raise EntropyCodingError(f"ans stream: corrupt data ({err})") from None
        if not consumed:
            raise EntropyCodingError("ans stream: data left over after decoding all symbols (corrupt or mismatched table)")
        out = np.empty_like(grouped)
        out[order] = grouped
        return out


class TorchacCoder(EntropyCoder):
    """Optional coder (name ``"torchac"``): arithmetic coding with ``torchac`` (Mentzer et al. 2019, GPL-3).

    torchac is imported lazily; if it is missing, :meth:`encode`/:meth:`decode` raise
    ``NscError("torchac backend requested but not installed: pip install torchac (GPL-3)")``.

    torchac needs 16-bit int16 CDF tables (one CDF row per symbol) and int16 symbols, and silently
    corrupts out-of-range symbols; so tables must have ``precision == 16`` and lengths <= 32767, symbols are
    escape-mapped and bounds-checked before torchac sees them. CDF rows hold ``cdf() & 0xFFFF`` as int16 bit
    patterns (torchac reads them as uint16 and treats the last symbol's upper bound as 2**16). Symbols are
    grouped by channel and coded in chunks of at most ``2**22`` CDF entries; main stream layout:
    ``varint K`` (chunk count) + ``K varints`` (chunk byte lengths) + the chunks.

    Arithmetic decoding has no end-of-stream check, so corruption inside a chunk may go undetected by this
    backend (out-of-table indices and framing errors are still caught).

    Source: Mentzer, Agustsson, Tschannen, Timofte, Van Gool 2019, "Practical full resolution learned
    lossless image compression" (CVPR), torchac.
    """

    name = "torchac"
    _CHUNK_ENTRIES = 1 << 22

    @staticmethod
    def _torchac():
        try:
            import torchac  # type: ignore
        except ImportError:
            raise NscError("torchac backend requested but not installed: pip install torchac (GPL-3)") from None
        return torchac

    @staticmethod
    def _check_table(table: IntegerCDFTable) -> None:
        if table.precision != 16:
            raise NscError(f"torchac needs a precision-16 CDF table, got precision {table.precision}")
        if int(table.lengths.max()) > 32767:
            raise NscError(f"torchac supports at most 32767 table entries, got {int(table.lengths.max())}")

    @staticmethod
    def _cdf_rows(table: IntegerCDFTable) -> np.ndarray:
        cdf = table.cdf().astype(np.int64)
        return (cdf & 0xFFFF).astype(np.uint16).view(np.int16)

    def _chunks(self, table: IntegerCDFTable, starts: np.ndarray):
        for c in range(table.num_channels):
            a, b = int(starts[c]), int(starts[c + 1])
            n = int(table.lengths[c])
            step = max(1, self._CHUNK_ENTRIES // (n + 1))
            for lo in range(a, b, step):
                yield c, n, lo, min(b, lo + step)

    def _encode_indices(self, indices: np.ndarray, channels: np.ndarray, table: IntegerCDFTable) -> bytes:
        torchac = self._torchac()
        self._check_table(table)
        import torch

        order, starts = _group_by_channel(channels, table.num_channels)
        grouped = indices[order]
        rows = self._cdf_rows(table)
        streams: List[bytes] = []
        for c, n, lo, hi in self._chunks(table, starts):
            sym = grouped[lo:hi]
            if sym.min() < 0 or sym.max() > n - 1:  # explicit bounds check: torchac would corrupt silently
                raise EntropyCodingError("torchac: symbol index outside the CDF table")
            cdf = torch.from_numpy(np.ascontiguousarray(rows[c, : n + 1])).unsqueeze(0).expand(hi - lo, n + 1)
            streams.append(
                bytes(torchac.encode_int16_normalized_cdf(cdf.contiguous(), torch.from_numpy(sym.astype(np.int16))))
            )
        head = encode_varints(np.array([len(streams)] + [len(s) for s in streams], dtype=np.uint64))
        return head + b"".join(streams)

    def _decode_indices(self, main: bytes, channels: np.ndarray, table: IntegerCDFTable) -> np.ndarray:
        torchac = self._torchac()
        self._check_table(table)
        import torch

        order, starts = _group_by_channel(channels, table.num_channels)
        chunks = list(self._chunks(table, starts))
        k, pos = decode_varints(main, 0, 1, exc=EntropyCodingError, what="torchac stream")
        if int(k[0]) != len(chunks):
            raise EntropyCodingError(f"torchac stream: {int(k[0])} chunks stored, {len(chunks)} expected")
        sizes, pos = decode_varints(main, pos, len(chunks), exc=EntropyCodingError, what="torchac stream")
        if pos + int(sizes.sum()) != len(main):
            raise EntropyCodingError("torchac stream: chunk sizes do not match the stream length (truncated/corrupt)")
        rows = self._cdf_rows(table)
        grouped = np.empty(channels.size, dtype=np.int64)
        for (c, n, lo, hi), size in zip(chunks, sizes):
            size = int(size)
            cdf = torch.from_numpy(np.ascontiguousarray(rows[c, : n + 1])).unsqueeze(0).expand(hi - lo, n + 1)
            try:
                sym = torchac.decode_int16_normalized_cdf(cdf.contiguous(), main[pos : pos + size])
            except Exception as err:
                raise EntropyCodingError(f"torchac stream: corrupt data ({err})") from None
            grouped[lo:hi] = np.asarray(sym, dtype=np.int64).reshape(-1)
            pos += size
        out = np.empty_like(grouped)
        out[order] = grouped
        return out


_REGISTRY: Dict[str, Type[EntropyCoder]] = {
    ConstrictionCoder.name: ConstrictionCoder,
    TorchacCoder.name: TorchacCoder,
}


def register_coder(cls: Type[EntropyCoder]) -> Type[EntropyCoder]:
    """Register an :class:`EntropyCoder` subclass under ``cls.name`` (usable as a class decorator).

    Raises:
        NscError: empty name, not an EntropyCoder subclass, or the name is already taken by another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, EntropyCoder)) or not cls.name:
        raise NscError("register_coder needs an EntropyCoder subclass with a non-empty 'name'")
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise NscError(f"entropy coder name {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def available_coders() -> List[str]:
    """Names of the registered entropy coders (sorted)."""
    return sorted(_REGISTRY)


def get_coder(name: str) -> EntropyCoder:
    """Instantiate the entropy coder registered as ``name`` (``"ans"`` default, ``"torchac"`` optional).

    Raises:
        NscError: unknown name (the message lists the available names).
    """
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise NscError(f"unknown entropy coder {name!r}; available: {', '.join(available_coders())}")
    return cls()
