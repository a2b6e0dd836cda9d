"""Sections every codec model shares: dense network weights and the occupancy grid.

A codec model (:class:`nscodec.core.model_base.NscModel`) stores its own compressed representation (latents,
indices, deltas) and, beside it, the small dense parts (MLP heads, decoders, basis matrices) and the occupancy
grid it samples with. Those two are written and read here, once, for every method:

* :func:`dense_sections` / :func:`load_dense_sections` / :func:`quantize_dense_` — every parameter of a set of
  modules as ``<module>.<param>`` sections: raw float16/float32, or ``bits``-bit power-of-two quantization +
  entropy coding (:func:`~nscodec.coding.posthoc.pow2_quantize`);
* :func:`occupancy_section` / :func:`decode_occupancy` / :func:`load_occupancy_section` — the boolean grid
  (bit-packed + DEFLATE, or the context model of :mod:`nscodec.coding.binary_context`) and its marching box.

Every reader validates what it reads before it allocates or copies (shapes against the model, metadata types and
ranges, finite boxes) and raises :class:`~nscodec.errors.NscFormatError` naming the section and field.
"""

from __future__ import annotations

from typing import Any, Dict, List, Literal, Optional, Sequence

import numpy as np

from .container import NscFile, Section
from nscodec.errors import NscError, NscFormatError

__all__ = [
    "dense_section_names",
    "quantize_dense_",
    "dense_sections",
    "load_dense_sections",
    "occupancy_section",
    "decode_occupancy",
    "load_occupancy_section",
    "meta_int",
    "meta_floats",
    "load_section_into",
]

#: largest |value| a float32 tensor can hold; metadata floats beyond it would decode to inf
_FLOAT32_MAX = float(np.finfo(np.float32).max)


# ------------------------------------------------------------------------------------------ metadata readers
def meta_int(section: Section, key: str, lo: int, hi: int) -> int:
    """``section.meta[key]`` as an int in ``[lo, hi]``.

    Raises:
        NscFormatError: the key is missing, not an int (bools excluded), or out of range (naming section, key and value).
    """
    v = section.meta.get(key) if isinstance(section.meta, dict) else None
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise NscFormatError(f"section {section.name!r}: meta.{key} must be an int in [{lo}, {hi}], got {v!r}")
    return v


def meta_floats(section: Section, key: str, count: Optional[int] = None, positive: bool = False) -> np.ndarray:
    """``section.meta[key]`` as a float32 vector ``[count]`` of finite values (float32-representable).

    Args:
        count: required length (None: any length ≥ 1).
        positive: every value must be > 0 (quantization steps).

    Raises:
        NscFormatError: missing, not a list of numbers, wrong length, non-finite / out of float32 range, or not
            positive when required.
    """
    v = section.meta.get(key) if isinstance(section.meta, dict) else None
    ok = isinstance(v, list) and len(v) >= 1 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    if ok:
        arr = np.asarray(v, dtype=np.float64)
        ok = bool(np.all(np.abs(arr) <= _FLOAT32_MAX)) and (count is None or arr.size == count)
        ok = ok and (not positive or bool(np.all(arr > 0)))
    if not ok:
        want = f"{count} " if count is not None else ""
        sign = "positive " if positive else ""
        raise NscFormatError(
            f"section {section.name!r}: meta.{key} must be a list of {want}finite {sign}float32 numbers, got {_short(v)}"
        )
    return arr.astype(np.float32)


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def load_section_into(tensor: Any, nsc: NscFile, name: str, dtypes: Sequence[str] = ("float16", "float32")) -> None:
    """Decode section ``name`` (declared dtype in ``dtypes``) and copy it into ``tensor`` (same shape, any device).

    Raises:
        NscFormatError: wrong dtype or a shape other than the tensor's.
    """
    import torch

    from .tensor_codec import decode_section

    sec = nsc.sections[name]
    if tuple(sec.shape) != tuple(tensor.shape):  # before decoding: nothing is allocated for a file that cannot fit
        raise NscFormatError(f"section {name!r}: shape {list(sec.shape)}, model expects {list(tensor.shape)}")
    arr = decode_section(sec, dtype=tuple(dtypes))
    with torch.no_grad():
        tensor.copy_(torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32)).to(tensor.device))


# ------------------------------------------------------------------------------------------------ dense parts
def dense_section_names(modules: Dict[str, Any]) -> List[str]:
    """Section names ``<module>.<param>`` for :func:`dense_sections` (``modules``: name → ``nn.Module``)."""
    return [f"{m}.{p}" for m, mod in modules.items() for p, _ in mod.named_parameters()]


def _quant_channels(module: str, t: Any, bits: int, channel_dims: Optional[Dict[str, int]]) -> int:
    """Channels of ``t`` under :func:`~nscodec.coding.posthoc.pow2_quantize` (0 = not quantized: 1-D or bits=0)."""
    if bits <= 0 or t.dim() < 2:
        return 0
    return int(np.prod(t.shape[: max(1, (channel_dims or {}).get(module, 1))]))


def quantize_dense_(
    modules: Dict[str, Any], bits: int = 0, channel_dims: Optional[Dict[str, int]] = None, dtype: str = "float16"
) -> None:
    """Round every parameter of ``modules`` in place to what :func:`dense_sections` stores, so a file written
    afterwards decodes to exactly these values: ``bits``-bit power-of-two quantization for parameters with ≥ 2 dims
    when ``bits > 0``, else a ``dtype`` (float16/float32) round trip. Idempotent.

    Raises:
        NscError: bits outside 2..16 (when > 0), or non-finite weights.
    """
    import torch

    from .posthoc import pow2_dequantize, pow2_quantize

    with torch.no_grad():
        for m, mod in modules.items():
            for _, t in mod.named_parameters():
                ch = _quant_channels(m, t, bits, channel_dims)
                if ch:
                    sym, exp = pow2_quantize(t.detach().cpu().numpy(), bits, ch)
                    t.copy_(torch.from_numpy(pow2_dequantize(sym, exp)).to(t.device))
                else:
                    t.copy_(t.to(getattr(torch, dtype)).float())


def dense_sections(
    modules: Dict[str, Any], dtype: str = "float16", bits: int = 0, channel_dims: Optional[Dict[str, int]] = None
) -> List[Section]:
    """Every parameter of ``modules`` as a section named ``<module>.<param>``.

    ``bits = 0``: raw ``dtype``. ``bits > 0``: parameters with ≥ 2 dims are quantized per channel with power-of-two
    steps (:func:`~nscodec.coding.posthoc.pow2_quantize`; channels = the product of the first
    ``channel_dims[module]`` dims, default 1, e.g. output rows of a weight matrix) and entropy-coded under their own
    histogram (table in the section; exponents in ``meta["exp"]``); 1-D parameters (biases) stay raw ``dtype``.
    Call :func:`quantize_dense_` first for a lossless file.

    Raises:
        NscError: as :func:`~nscodec.coding.posthoc.pow2_quantize` / :func:`~nscodec.coding.tensor_codec.raw_section`.
    """
    from .posthoc import histogram_table, pow2_quantize
    from .tensor_codec import entropy_section, raw_section

    sections = []
    for m, mod in modules.items():
        for p, t in mod.named_parameters():
            x = t.detach().cpu().numpy()
            ch = _quant_channels(m, t, bits, channel_dims)
            if ch:
                sym, exp = pow2_quantize(x, bits, ch)
                meta = {"quantizer": "pow2", "bits": int(bits), "exp": exp.tolist()}
                sections.append(entropy_section(f"{m}.{p}", sym.reshape(1, -1), histogram_table(sym), meta=meta))
            else:
                sections.append(raw_section(f"{m}.{p}", x, dtype))
    return sections


def load_dense_sections(modules: Dict[str, Any], nsc: NscFile) -> None:
    """Load sections written by :func:`dense_sections` (raw float16/float32, or power-of-two quantized symbols).

    Raises:
        NscFormatError: a dtype other than float16/float32 (raw) or int32 (quantized), a shape that does not match
            the model, or bad quantizer metadata (exponents outside [-126, 127], wrong count).
    """
    import torch

    from .posthoc import pow2_dequantize
    from .tensor_codec import decode_section

    for m, mod in modules.items():
        for p, t in mod.named_parameters():
            name = f"{m}.{p}"
            sec = nsc.sections[name]
            quantized = sec.meta.get("quantizer") == "pow2"
            declared = (1, t.numel()) if quantized else tuple(t.shape)
            if tuple(sec.shape) != declared:  # before decoding: nothing is allocated for a file that cannot fit
                raise NscFormatError(f"section {name!r}: shape {list(sec.shape)}, model expects {list(declared)}")
            if quantized:
                arr = decode_section(sec, dtype=("int32",))
                exp = sec.meta.get("exp")
                if not (isinstance(exp, list) and exp and all(isinstance(e, int) and not isinstance(e, bool) and -126 <= e <= 127 for e in exp)):
                    raise NscFormatError(f"section {name!r}: meta.exp must be a list of ints in [-126, 127], got {_short(exp)}")
                if arr.size != t.numel():
                    raise NscFormatError(f"section {name!r}: {arr.size} values, model expects {tuple(t.shape)}")
                try:
                    arr = pow2_dequantize(arr, np.asarray(exp, dtype=np.int64)).reshape(t.shape)
                except NscError as err:
                    raise NscFormatError(f"section {name!r}: bad power-of-two quantizer metadata ({err})") from None
            elif "quantizer" in sec.meta:
                raise NscFormatError(f"section {name!r}: unknown quantizer {sec.meta['quantizer']!r} (pow2)")
            else:
                arr = decode_section(sec, dtype=("float16", "float32"))
            if tuple(arr.shape) != tuple(t.shape):
                raise NscFormatError(f"section {name!r}: shape {tuple(arr.shape)}, model expects {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(torch.from_numpy(arr.astype(np.float32)).to(t.device))


# ------------------------------------------------------------------------------------------------- occupancy
def occupancy_section(grid: Any, coder: Literal["zlib", "ctx3d"] = "zlib") -> Section:
    """The occupancy grid (:class:`nscodec.render.OccupancyGrid`) as a section named ``occupancy`` (meta: grid
    resolution, grid box, marching box): ``zlib`` = bit-packed + DEFLATE; ``ctx3d`` = context-adaptive arithmetic
    coding (:mod:`nscodec.coding.binary_context`; fewer bytes, slower to decode).

    Raises:
        NscError: unknown ``coder``.
    """
    from .tensor_codec import binary_grid_section, zlib_section

    meta = {"resolution": grid.resolution, "grid_aabb": grid.grid_aabb.tolist(), "bbox": grid.bbox.tolist()}
    occ = grid.occupied.cpu().numpy()
    if coder == "ctx3d":
        return binary_grid_section("occupancy", occ.reshape((grid.resolution,) * 3), meta=meta)
    if coder != "zlib":
        raise NscError(f"unknown occupancy coder {coder!r} (zlib, ctx3d)")
    return zlib_section("occupancy", np.packbits(occ.reshape(-1)), meta=meta)


def decode_occupancy(sec: Section, resolution: int) -> np.ndarray:
    """The boolean grid ``[G, G, G]`` of an ``occupancy`` section (either coder); ``G = resolution``, the model's.

    Raises:
        NscFormatError: ``meta.resolution`` other than ``resolution``, a declared shape or dtype that does not fit,
            or a payload that does not hold ``G³`` cells.
    """
    from .tensor_codec import decode_section

    g = meta_int(sec, "resolution", resolution, resolution)
    if sec.coder == "ctx3d":
        if tuple(sec.shape) != (g, g, g):
            raise NscFormatError(f"section {sec.name!r}: shape {list(sec.shape)}, expected [{g}, {g}, {g}]")
        cells = decode_section(sec, dtype=("bool",))
    else:
        if tuple(sec.shape) != ((g**3 + 7) // 8,):
            raise NscFormatError(f"section {sec.name!r}: shape {list(sec.shape)} does not hold a bit-packed {g}³ grid")
        cells = np.unpackbits(decode_section(sec, dtype=("uint8",)))[: g**3].astype(bool)
    return cells.reshape(g, g, g)


def _check_box(sec: Section, key: str, within: np.ndarray, slack: float) -> np.ndarray:
    box = meta_floats(sec, key, 6)
    lo, hi = within[:3] - slack, within[3:] + slack
    if not (np.all(box[:3] <= box[3:]) and np.all(box[:3] >= lo) and np.all(box[3:] <= hi)):
        raise NscFormatError(f"section {sec.name!r}: meta.{key} {box.tolist()} is not a box inside the grid {within.tolist()}")
    return box


def load_occupancy_section(grid: Any, nsc: NscFile) -> None:
    """Restore an occupancy grid written by :func:`occupancy_section` into ``grid`` (same resolution and box).

    Raises:
        NscFormatError: as :func:`decode_occupancy`; a grid box other than the model's, or a marching box outside it.
    """
    import torch

    sec = nsc.sections["occupancy"]
    model_box = grid.grid_aabb.detach().cpu().numpy().astype(np.float32)
    extent = float(np.max(model_box[3:] - model_box[:3]))
    tol = 1e-5 * max(1.0, extent)
    box = _check_box(sec, "grid_aabb", model_box, tol)
    if not np.allclose(box, model_box, rtol=0, atol=tol):
        raise NscFormatError(f"section 'occupancy': meta.grid_aabb {box.tolist()} differs from the model's {model_box.tolist()}")
    bbox = _check_box(sec, "bbox", model_box, tol)
    occ = decode_occupancy(sec, grid.resolution)
    grid.occupied.copy_(torch.from_numpy(occ).to(grid.occupied.device))
    grid.bbox.copy_(torch.from_numpy(bbox).to(grid.bbox.device))
    grid.num_updates.fill_(max(1, int(grid.num_updates)))
