"""VM feature sampling ``f(x) = M(x) ∘ v(x)`` with a CPU-fast backward, and its plain reference.

TensoRF-VM (Chen et al. 2022, Sec. 3.2, Eq. 3): for each of the three (plane, line) pairs ``(XY, Z), (XZ, Y),
(YZ, X)`` the feature of a point is the bilinearly sampled plane ``M [C, N, N]`` times the linearly sampled line
``v [C, N]``, concatenated over the three pairs (nerfstudio's ``TensorVMEncoding.forward`` layout).

* :func:`vm_features_reference` — nerfstudio's formulation: ``F.grid_sample`` forward and autograd backward. On
  CPU ``grid_sample``'s backward is ~5× its forward (measured below) and dominates a training step.
* :func:`vm_features` — the same forward (the very same ``grid_sample`` calls, so outputs are bit-identical), with
  a hand-written backward that scatters ``∂L/∂M`` and ``∂L/∂v`` with ``index_add_`` over the 4 (plane) and 2
  (line) interpolation corners. Gradients equal the reference's up to float summation order. Used on CPU; on CUDA
  the reference is used (its atomics backward is fast there).

``tests/test_vm_sample.py`` compares outputs and gradients of the two, including points outside ``[-1, 1]``
(zeros padding). ``bench/vm_kernel.py`` measures the two side by side (results in docs/benchmarks.md).
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _coords(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Plane coords ``[3, S, 1, 2]`` and line coords ``[3, S, 1, 2]`` (grid_sample order: (W, H))."""
    plane = torch.stack([x[..., [0, 1]], x[..., [0, 2]], x[..., [1, 2]]]).view(3, -1, 1, 2)
    line = torch.stack([x[..., 2], x[..., 1], x[..., 0]])
    line = torch.stack([torch.zeros_like(line), line], dim=-1).view(3, -1, 1, 2)
    return plane, line


def vm_features_reference(plane_coef: Tensor, line_coef: Tensor, x: Tensor) -> Tensor:
    """Reference VM features (nerfstudio ``TensorVMEncoding.forward``; autograd through ``grid_sample``).

    Args:
        plane_coef: ``[3, C, N, N]`` planes (XY, XZ, YZ). line_coef: ``[3, C, N, 1]`` lines (Z, Y, X).
        x: ``[S, 3]`` positions in ``[-1, 1]^3`` (outside: zeros padding, as ``grid_sample``).

    Returns:
        ``[S, 3C]`` features, pair-major (``[:, p*C + c]``).
    """
    pc, lc = _coords(x.detach())
    feats = F.grid_sample(plane_coef, pc, align_corners=True) * F.grid_sample(line_coef, lc, align_corners=True)
    return feats.view(3 * plane_coef.shape[1], -1).T


def _linear_corners(u: Tensor, n: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """``align_corners=True`` linear interpolation of coords ``u ∈ [-1, 1]`` on ``n`` nodes: lower index
    (clamped into range, int64), its weight, upper index, its weight; corners outside ``[0, n-1]`` get weight 0
    (zeros padding)."""
    p = (u + 1.0) * (0.5 * (n - 1))
    lo = torch.floor(p)
    frac = p - lo
    lo = lo.long()
    hi = lo + 1
    w_lo = (1.0 - frac) * ((lo >= 0) & (lo <= n - 1))
    w_hi = frac * ((hi >= 0) & (hi <= n - 1))
    return lo.clamp(0, n - 1), w_lo, hi.clamp(0, n - 1), w_hi


class _VMFeatures(torch.autograd.Function):
    """grid_sample forward, index_add_ backward (see module docstring)."""

    @staticmethod
    def forward(ctx, plane_coef: Tensor, line_coef: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        c, n = plane_coef.shape[1], plane_coef.shape[-1]
        pc, lc = _coords(x)
        m = F.grid_sample(plane_coef, pc, align_corners=True)[..., 0]  # [3, C, S]
        v = F.grid_sample(line_coef, lc, align_corners=True)[..., 0]  # [3, C, S]
        ctx.save_for_backward(m, v, x)
        ctx.sizes = (c, n, line_coef.shape[-2])
        return (m * v).view(3 * c, -1).T

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        m, v, x = ctx.saved_tensors
        c, n, n_line = ctx.sizes
        s = x.shape[0]
        g = grad.T.reshape(3, c, s)
        grad_plane = grad_line = None
        dev, dt = grad.device, grad.dtype
        if ctx.needs_input_grad[0]:
            gm = (g * v).transpose(1, 2)  # [3, S, C]
            a = torch.stack([x[:, 0], x[:, 0], x[:, 1]])  # W coordinate of each plane
            b = torch.stack([x[:, 1], x[:, 2], x[:, 2]])  # H coordinate
            a0, wa0, a1, wa1 = _linear_corners(a, n)
            b0, wb0, b1, wb1 = _linear_corners(b, n)
            base = torch.arange(3, device=dev)[:, None] * (n * n)
            table = torch.zeros(3 * n * n, c, device=dev, dtype=dt)
            for bi, wb in ((b0, wb0), (b1, wb1)):
                for ai, wa in ((a0, wa0), (a1, wa1)):
                    table.index_add_(0, (base + bi * n + ai).view(-1), (gm * (wb * wa)[..., None]).reshape(-1, c))
            grad_plane = table.view(3, n, n, c).permute(0, 3, 1, 2)
        if ctx.needs_input_grad[1]:
            gv = (g * m).transpose(1, 2)  # [3, S, C]
            u = torch.stack([x[:, 2], x[:, 1], x[:, 0]])
            u0, w0, u1, w1 = _linear_corners(u, n_line)
            base = torch.arange(3, device=dev)[:, None] * n_line
            lines = torch.zeros(3 * n_line, c, device=dev, dtype=dt)
            lines.index_add_(0, (base + u0).view(-1), (gv * w0[..., None]).reshape(-1, c))
            lines.index_add_(0, (base + u1).view(-1), (gv * w1[..., None]).reshape(-1, c))
            grad_line = lines.view(3, n_line, c).permute(0, 2, 1)[..., None]
        return grad_plane, grad_line, None


def vm_features(plane_coef: Tensor, line_coef: Tensor, x: Tensor) -> Tensor:
    """VM features ``[S, 3C]`` of positions ``x [S, 3]`` (arguments and layout as :func:`vm_features_reference`).

    CPU: :class:`_VMFeatures` (same forward, index_add_ backward). CUDA, or a non-float32 plane: the reference.
    No gradient flows to ``x`` (nerfstudio detaches the sample coordinates too).
    """
    if plane_coef.is_cuda or plane_coef.dtype != torch.float32 or line_coef.shape[-1] != 1:
        return vm_features_reference(plane_coef, line_coef, x)
    return _VMFeatures.apply(plane_coef, line_coef, x.detach().reshape(-1, 3))
