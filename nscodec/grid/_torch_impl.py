"""Plain-torch reference implementations of the grid encodings (any device; the twins of ``nscodec/csrc/grid_encode.cpp``).

Two lattices:

* **hash levels** (Instant-NGP, Müller et al. 2022, Sec. 3, Eqs. 2–4; nerfstudio's ``HashEncoding.pytorch_fwd``
  convention): level ``l`` scales ``[0, 1]^3`` positions by ``s_l``; the 8 corners are ``floor`` / ``ceil`` per axis,
  corner ``k = 4a + 2b + c``; a level whose ``(R_l+1)^3`` vertices fit its table is indexed densely
  (``x + y·n + z·n²``), else by the spatial hash ``(x ⊕ y·π₂ ⊕ z·π₃) mod T``; rows are offset per level into
  one concatenated table, levels are concatenated (``[N, L, F]``).
* **dense levels** (VQ-AD, Takikawa et al. 2022, Sec. 4.3): ``res`` cells per axis, ``(res+1)^3`` vertices in
  x-major order (``v = (i·n + j)·n + k``), the lower corner ``floor(p·res)`` clamped to ``[0, res-1]``.

Trilinear weights are ``(w_x · w_y) · w_z`` in both, the same products the C++ kernels form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import torch
from torch import Tensor

from nscodec.grid.hashing import spatial_hash


@dataclass(frozen=True)
class HashLevels:
    """Static description of a multi-resolution hash grid's levels (all tensors on the table's device).

    Attributes:
        scale: ``[L]`` float32 resolution ``s_l`` of each level (positions in ``[0, 1]^3`` are multiplied by it).
        offset: ``[L]`` int64 first row of each level in the concatenated table.
        verts: ``[L]`` int32 vertices per axis ``R_l + 1`` for densely indexed levels, 0 for hashed levels.
        table_size: ``T`` rows of a hashed level (a power of two).
    """

    scale: Tensor
    offset: Tensor
    verts: Tensor
    table_size: int

    @property
    def num_levels(self) -> int:
        return int(self.scale.shape[0])


def unit_positions(x: Tensor) -> Tensor:
    """``x`` clamped to ``[0, 1]``, NaN read as 0 (as the kernels do): a non-finite sample never indexes outside a
    table."""
    return torch.nan_to_num(x, nan=0.0).clamp(0.0, 1.0)


def hash_corners(x: Tensor, levels: HashLevels) -> Tuple[Tensor, Tensor]:
    """Rows ``[N, L, 8]`` (int64) and trilinear weights ``[N, L, 8]`` of the 8 vertices around each point.

    Args:
        x: ``[N, 3]`` float32 positions in ``[0, 1]^3`` (clamped, NaN read as 0: :func:`unit_positions`).
        levels: the grid's :class:`HashLevels`.
    """
    scaled = unit_positions(x)[:, None, :] * levels.scale.to(x)[None, :, None]  # [N, L, 3]
    lo = torch.floor(scaled)
    off = scaled - lo
    c = torch.stack([lo.to(torch.int32), torch.ceil(scaled).to(torch.int32)], dim=-1)  # [N, L, 3, 2]
    cx, cy, cz = c[:, :, 0, :, None, None], c[:, :, 1, None, :, None], c[:, :, 2, None, None, :]
    n = levels.verts.to(torch.int32)[None, :, None, None, None]
    dense = cx + cy * n + cz * (n * n)
    hashed = spatial_hash(cx, cy, cz, levels.table_size)
    idx = torch.where(n > 0, dense, hashed).to(torch.int64) + levels.offset[None, :, None, None, None]
    w = torch.stack([1.0 - off, off], dim=-1)  # [N, L, 3, 2]
    wt = w[..., 0, :, None, None] * w[..., 1, None, :, None] * w[..., 2, None, None, :]
    return idx.reshape(x.shape[0], levels.num_levels, 8), wt.reshape(x.shape[0], levels.num_levels, 8)


class _InterpolateRows(torch.autograd.Function):
    """``out[n, l] = Σ_k wt[n, l, k] · table[idx[n, l, k]]`` with an ``index_add_`` backward for the table
    (faster on CPU than autograd's gather backward); no gradient to ``wt`` (positions are data)."""

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor, wt: Tensor) -> Tensor:  # type: ignore[override]
        n, l, k = idx.shape
        f = table.shape[1]
        rows = table.index_select(0, idx.reshape(-1)).reshape(n * l, k, f)
        ctx.save_for_backward(idx, wt)
        ctx.num_rows = table.shape[0]
        return torch.bmm(wt.reshape(n * l, 1, k), rows).reshape(n, l, f)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        idx, wt = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        g = (wt[..., None] * grad[:, :, None, :]).reshape(-1, grad.shape[-1])
        out = torch.zeros(ctx.num_rows, grad.shape[-1], dtype=grad.dtype, device=grad.device)
        out.index_add_(0, idx.reshape(-1), g)
        return out, None, None


def hash_encode(x: Tensor, table: Tensor, levels: HashLevels, active: int) -> Tensor:
    """Multi-resolution hash encoding ``[N, L, F]`` of ``x [N, 3]`` from ``table [ΣT_l, F]``; levels ``>= active``
    are zero (level of detail). Differentiable w.r.t. ``table``."""
    idx, wt = hash_corners(x, levels)
    out = _InterpolateRows.apply(table, idx, wt)
    if active < levels.num_levels:
        keep = (torch.arange(levels.num_levels, device=x.device) < active).to(out.dtype)
        out = out * keep[None, :, None]
    return out


# ------------------------------------------------------------------------------------------------- dense levels
_OFFS = [(a, b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]


def dense_corners(x: Tensor, res: int) -> Tuple[Tensor, Tensor]:
    """Vertex ids ``[S, 8]`` (int64, x-major) and trilinear weights ``[S, 8]`` of a dense level of ``res`` cells.

    Args:
        x: ``[S, 3]`` positions in ``[0, 1]^3`` (clamped, NaN read as 0: :func:`unit_positions`).
        res: cells per axis (``res + 1`` vertices).
    """
    p = unit_positions(x) * res
    i0 = p.floor().clamp(0, res - 1)
    frac = p - i0
    i0 = i0.long()
    n = res + 1
    offs = torch.tensor(_OFFS, device=x.device)  # [8, 3]
    corners = i0[:, None, :] + offs[None]
    lin = (corners[..., 0] * n + corners[..., 1]) * n + corners[..., 2]
    w = torch.stack([1.0 - frac, frac], dim=-1)  # [S, 3, 2]
    a, b, c = offs[:, 0], offs[:, 1], offs[:, 2]
    wt = w[:, 0, a] * w[:, 1, b] * w[:, 2, c]
    return lin, wt


def dense_level_forward(x: Tensor, table: Tensor, res: int, indices: Tensor | None = None) -> Tensor:
    """``[S, k]`` trilinear lookup of one dense level: rows ``table[v]`` (``indices`` None, ``table [(res+1)^3, k]``)
    or ``table[indices[v]]`` (a codebook ``[K, k]`` addressed by per-vertex ``indices [(res+1)^3]``)."""
    lin, w = dense_corners(x, res)
    rows = lin if indices is None else indices[lin]
    return torch.bmm(w[:, None, :], table[rows]).squeeze(1)


def dense_level_vertex_grads(grad: Tensor, x: Tensor, res: int) -> Tuple[Tensor, Tensor]:
    """Gradient per vertex read: sorted vertex ids ``u [U]`` and ``G [U, k]``, ``G[v] = Σ_{(s,c): lin = u[v]}
    w[s,c] · grad[s]`` (bincount + nonzero: O(S + m), no sort)."""
    lin, w = dense_corners(x, res)
    m = (res + 1) ** 3
    flat = lin.reshape(-1)
    u = torch.bincount(flat, minlength=m).nonzero().squeeze(1)
    pos = torch.empty(m, dtype=torch.long, device=x.device)
    pos[u] = torch.arange(u.numel(), device=x.device)
    contrib = (w[..., None] * grad[:, None, :]).reshape(-1, grad.shape[1])
    G = torch.zeros(u.numel(), grad.shape[1], dtype=grad.dtype, device=grad.device).index_add_(0, pos[flat], contrib)
    return u, G


def vm_encode(x: Tensor, plane_coef: Tensor, line_coef: Tensor) -> Tensor:
    """TensoRF VM encoding (Chen et al. 2022, Sec. 3.2, Eq. 3) at ``x [S, 3]`` in ``[-1, 1]^3``: ``[S, 3C]``, entry
    ``p·C + c`` = bilinear ``plane_coef[p, c]`` at ``(u, v)`` times linear ``line_coef[p, c]`` at ``w``, with
    ``(u, v, w)`` = ``(x, y, z), (x, z, y), (y, z, x)`` for ``p`` = 0, 1, 2 (``grid_sample``, align_corners, zero
    padding). The same values as nerfstudio's ``TensorVMEncoding.forward``, which the tests also compare against.

    Args:
        x: ``[S, 3]`` normalised positions (no gradient flows to them).
        plane_coef: ``[3, C, N, N]`` planes. line_coef: ``[3, C, N, 1]`` lines.
    """
    x = x.detach()
    uv = torch.stack([x[:, [0, 1]], x[:, [0, 2]], x[:, [1, 2]]])[:, :, None]  # [3, S, 1, 2]
    w = torch.stack([x[:, 2], x[:, 1], x[:, 0]])  # [3, S]
    w = torch.stack([torch.zeros_like(w), w], dim=-1)[:, :, None]  # [3, S, 1, 2]
    planes = torch.nn.functional.grid_sample(plane_coef, uv, align_corners=True)  # [3, C, S, 1]
    lines = torch.nn.functional.grid_sample(line_coef, w, align_corners=True)  # [3, C, S, 1]
    return (planes * lines)[..., 0].reshape(-1, x.shape[0]).t()
