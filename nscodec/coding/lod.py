"""Levels of detail in a ``.nsc`` file: streaming a coarse scene first (VQ-AD Sec. 3.4, SHACIRA Sec. 4.5).

Convention shared by every LOD-capable codec:

* a section belongs to level ``l`` when its ``meta`` has ``"lod": l`` (an int ≥ 0); sections without the key
  (MLP heads, codebook headers, occupancy, ...) are needed by every level and count as level 0;
* writers emit sections sorted by level, coarse to fine (checked here), so that a **file prefix** ending on a
  level boundary holds a complete coarser scene. A partially downloaded file, or the first ``lod_table(...)[l]
  ["bytes"]`` bytes of a complete one, decodes as level ``l``.

Decoders read with ``read_nsc(..., allow_prefix=True)`` (or :func:`read_lod_prefix`) and call
:func:`available_lod` to learn how far they can go.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from nscodec.coding.container import NscFile, SectionInfo, read_nsc
from nscodec.errors import NscFormatError

__all__ = ["section_lod", "lod_table", "available_lod", "read_lod_prefix", "lod_prefix_bytes"]


def section_lod(info: SectionInfo) -> int:
    """Level of one section (``meta["lod"]``, 0 when absent).

    Raises:
        NscFormatError: ``meta["lod"]`` is present but not a non-negative int.
    """
    lod = info.meta.get("lod", 0) if isinstance(info.meta, dict) else 0
    if not isinstance(lod, int) or isinstance(lod, bool) or lod < 0:
        raise NscFormatError(f"section {info.name!r}: meta.lod must be a non-negative int, got {lod!r}")
    return lod


def lod_table(nsc: NscFile) -> List[Dict[str, int]]:
    """Cumulative bytes needed to decode each level.

    Returns:
        ``[{"lod": l, "bytes": b_l, "sections": n_l}, ...]`` for every level in the file, ascending; ``b_l`` is
        the length in bytes of the file prefix (preamble and header included) that holds every section of
        levels ``≤ l``; ``n_l`` counts those sections. A file without LOD sections has one row, level 0, whose
        bytes are the whole file.

    Raises:
        NscFormatError: the sections are not sorted coarse to fine (the file could not be streamed).
    """
    rows: List[Dict[str, int]] = []
    last = -1
    for i, info in enumerate(nsc.index):
        lod = section_lod(info)
        if lod < last:
            raise NscFormatError(
                f"section {info.name!r} (lod {lod}) follows a section of lod {last}: "
                "LOD sections must be stored coarse to fine"
            )
        end = nsc.header_bytes + info.offset + info.nbytes
        if lod == last:
            rows[-1].update(bytes=end, sections=i + 1)
        else:
            rows.append({"lod": lod, "bytes": end, "sections": i + 1})
        last = lod
    if not rows:
        rows.append({"lod": 0, "bytes": nsc.header_bytes, "sections": 0})
    return rows


def available_lod(nsc: NscFile) -> int:
    """Highest level ``l`` such that every section of levels ``≤ l`` is wholly present in ``nsc``.

    Raises:
        NscFormatError: not even the coarsest level is complete (too short a prefix), or sections unsorted.
    """
    best = None
    present = 0
    for row in lod_table(nsc):
        while present < row["sections"] and nsc.index[present].present:
            present += 1
        if present < row["sections"]:
            break
        best = row["lod"]
    if best is None:
        raise NscFormatError(
            f".nsc prefix of {nsc.available_bytes} bytes does not hold the coarsest level of detail "
            f"(needs {lod_table(nsc)[0]['bytes']} bytes)"
        )
    return best


def lod_prefix_bytes(nsc: NscFile, lod: int) -> int:
    """Prefix length in bytes that decodes level ``lod`` (the file size for ``lod`` ≥ the finest level).

    Raises:
        NscFormatError: ``lod`` is negative.
    """
    if lod < 0:
        raise NscFormatError(f"level of detail must be >= 0, got {lod}")
    rows = [r for r in lod_table(nsc) if r["lod"] <= lod]
    return rows[-1]["bytes"] if rows else lod_table(nsc)[0]["bytes"]


def read_lod_prefix(path: Union[str, os.PathLike], lod: Optional[int]) -> NscFile:
    """Read only the bytes of ``path`` that level ``lod`` needs (the whole file when ``lod`` is None).

    Reads the header first, then exactly the prefix, as a streaming client would.

    Raises:
        FileNotFoundError / NscFormatError: as :func:`~nscodec.coding.container.read_nsc`.
    """
    if lod is None:
        return read_nsc(path)
    from nscodec.coding.container import PREAMBLE_SIZE, _PREAMBLE

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"no such .nsc file: {str(p)!r}")
    with open(p, "rb") as fh:
        head = fh.read(PREAMBLE_SIZE)
        if len(head) < PREAMBLE_SIZE:
            return read_nsc(head)  # raises the container's own "too short" error
        hlen = _PREAMBLE.unpack_from(head, 0)[4]
        fh.seek(0)
        header_only = read_nsc(fh.read(PREAMBLE_SIZE + hlen), allow_prefix=True)
        n = lod_prefix_bytes(header_only, lod)
        fh.seek(0)
        data = fh.read(n)
    return read_nsc(data, allow_prefix=True)


def describe_lods(nsc: NscFile) -> List[Dict[str, Any]]:
    """:func:`lod_table` rows with each level's share of the total file (for ``nscodec info``)."""
    total = max(nsc.total_bytes, 1)
    return [{**r, "percent": 100.0 * r["bytes"] / total} for r in lod_table(nsc)]
