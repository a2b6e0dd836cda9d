"""Public grid-encoding API: the fused C++ kernels (``nscodec/csrc/grid_encode.cpp``) on CPU tensors, the torch twin
(:mod:`._torch_impl`) everywhere else and wherever the kernels cannot be built.

The kernels are compiled once per machine at first use (:mod:`nscodec._backend`; ``NSCODEC_KERNELS`` = ``auto`` /
``cpp`` / ``torch`` picks). On CUDA tensors the twin runs (tiny-cuda-nn is not installable from the package registries and
its grids own their parameters, while SHACIRA's tables are decoded tensors).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from nscodec._backend import kernel
from nscodec.grid import _torch_impl
from nscodec.grid._torch_impl import HashLevels



def cpu_kernel():
    """The compiled grid kernels (:func:`nscodec._backend.kernel`, with the SIMD flags: gcc vectorises the per-level
    loops, same values), or None where the twin runs."""
    return kernel("grid_encode")


def vm_kernel():
    """The compiled VM-encoding kernel (``nscodec/csrc/vm_encode.cpp``), or None where the twin runs."""
    return kernel("vm_encode")


def _kernel_for(*tensors: Tensor):
    if all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors):
        return cpu_kernel()
    return None


def implementation(device: torch.device | str = "cpu") -> str:
    """``"cpp"`` or ``"torch"``: what :func:`hash_encode` / :func:`dense_level_forward` run on ``device``."""
    return "cpp" if torch.device(device).type == "cpu" and cpu_kernel() is not None else "torch"


class _HashEncodeCpp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, table: Tensor, x: Tensor, levels: HashLevels, active: int, mod) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.meta = (levels, active, mod, table.shape[0])
        return mod.hash_encode_forward(x, table, levels.scale, levels.offset, levels.verts, levels.table_size, active)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        levels, active, mod, rows = ctx.meta
        if not ctx.needs_input_grad[0]:
            return None, None, None, None, None
        g = mod.hash_encode_backward(grad.contiguous(), x, rows, levels.scale, levels.offset, levels.verts,
                                     levels.table_size, active)
        return g, None, None, None, None


def hash_encode(x: Tensor, table: Tensor, levels: HashLevels, active: Optional[int] = None) -> Tensor:
    """Multi-resolution hash encoding (Instant-NGP Eqs. 2–4; SHACIRA's tables ``Z = d_θ(Q)``).

    Args:
        x: ``[N, 3]`` positions in ``[0, 1]^3``.
        table: ``[ΣT_l, F]`` concatenated level tables (a parameter or a decoded tensor; gradients flow to it).
        levels: the grid's :class:`~nscodec.grid._torch_impl.HashLevels` (on ``table``'s device).
        active: levels ``0..active-1`` contribute, finer ones are zero (level of detail); None = all.

    Returns:
        ``[N, L, F]`` features (same values from the kernel and the twin up to float summation order).
    """
    n_levels = levels.num_levels
    active = n_levels if active is None else max(0, min(int(active), n_levels))
    x = x.contiguous()
    mod = _kernel_for(x, table)
    if mod is None:
        return _torch_impl.hash_encode(x, table, levels, active)
    return _HashEncodeCpp.apply(table.contiguous(), x, levels, active, mod)


def dense_level_forward(x: Tensor, table: Tensor, res: int, indices: Optional[Tensor] = None) -> Tensor:
    """``[S, k]`` trilinear lookup of one dense level; see :func:`._torch_impl.dense_level_forward`. Not differentiable
    (on either path): callers with gradients wrap it with :func:`dense_level_vertex_grads` in their backward."""
    mod = _kernel_for(x, table)
    if mod is None:
        with torch.no_grad():
            return _torch_impl.dense_level_forward(x, table, res, indices)
    out = torch.zeros(x.shape[0], table.shape[1], dtype=table.dtype)
    empty = torch.empty(0, dtype=torch.int64)
    mod.dense_level_forward_(out, x.contiguous(), table.detach().contiguous(),
                             empty if indices is None else indices.contiguous(), int(res))
    return out


def dense_level_vertex_grads(grad: Tensor, x: Tensor, res: int) -> Tuple[Tensor, Tensor]:
    """Gradient per vertex read ``(u [U], G [U, k])``; see :func:`._torch_impl.dense_level_vertex_grads`."""
    mod = _kernel_for(x, grad)
    if mod is None:
        return _torch_impl.dense_level_vertex_grads(grad, x, res)
    return tuple(mod.dense_level_vertex_grads(grad.contiguous(), x.contiguous(), int(res)))  # type: ignore[return-value]


class _VMEncodeCpp(torch.autograd.Function):
    """The fused VM encoding on channel-last copies of the factors (made once per call, kept for the backward)."""

    @staticmethod
    def forward(ctx, plane_coef: Tensor, line_coef: Tensor, x: Tensor, mod) -> Tensor:  # type: ignore[override]
        planes = plane_coef.detach().permute(0, 2, 3, 1).contiguous()  # [3, N, N, C]
        lines = line_coef.detach()[..., 0].permute(0, 2, 1).contiguous()  # [3, N, C]
        x = x.detach().contiguous()
        ctx.save_for_backward(planes, lines, x)
        ctx.mod = mod
        return mod.vm_encode_forward(planes, lines, x)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        if not any(ctx.needs_input_grad[:2]):
            return None, None, None, None
        planes, lines, x = ctx.saved_tensors
        g_planes, g_lines = ctx.mod.vm_encode_backward(grad.contiguous(), planes, lines, x)
        return (g_planes.permute(0, 3, 1, 2).contiguous(), g_lines.permute(0, 2, 1).unsqueeze(-1).contiguous(),
                None, None)


def vm_encode(x: Tensor, plane_coef: Tensor, line_coef: Tensor) -> Tensor:
    """TensoRF VM encoding ``[S, 3C]`` at normalised positions ``x [S, 3]`` in ``[-1, 1]^3`` from planes
    ``[3, C, N, N]`` and lines ``[3, C, N, 1]`` (see :func:`._torch_impl.vm_encode`); gradients flow to both
    factors (a parameter or a decoded tensor), not to ``x``. CPU float32: the fused kernel; elsewhere the twin.

    Raises:
        ValueError: shapes that do not fit ``[S, 3]``, ``[3, C, N, N]``, ``[3, C, N, 1]``.
    """
    if x.dim() != 2 or x.shape[1] != 3:
        raise ValueError(f"vm_encode: positions must be [S, 3], got {list(x.shape)}")
    if plane_coef.dim() != 4 or plane_coef.shape[0] != 3 or plane_coef.shape[2] != plane_coef.shape[3]:
        raise ValueError(f"vm_encode: planes must be [3, C, N, N], got {list(plane_coef.shape)}")
    if tuple(line_coef.shape) != (3, plane_coef.shape[1], plane_coef.shape[2], 1):
        raise ValueError(f"vm_encode: lines must be [3, C, N, 1] = {[3, *plane_coef.shape[1:3], 1]}, "
                         f"got {list(line_coef.shape)}")
    mod = vm_kernel() if (plane_coef.shape[2] >= 2 and all(
        t.device.type == "cpu" and t.dtype == torch.float32 for t in (x, plane_coef, line_coef))) else None
    if mod is None:
        return _torch_impl.vm_encode(x, plane_coef, line_coef)
    return _VMEncodeCpp.apply(plane_coef, line_coef, x, mod)
