"""Public packed-rendering API: nerfacc CUDA kernels on CUDA tensors, the torch twin everywhere else.

``render_weight_from_density`` and ``accumulate_along_rays`` have CUDA twins in nerfacc 0.5 (compared against
:mod:`._torch_impl` in ``tests/test_render_twins.py`` where CUDA exists). ``march_rays`` is torch on every
device (its sample positions are ours: uniform steps from the box entry, which nerfacc's ``traverse_grids``
does not reproduce exactly), and it runs unchanged on CUDA tensors.
"""

from __future__ import annotations

import functools
from typing import Tuple

import torch
from torch import Tensor

from nscodec.render import _torch_impl
from nscodec.render._torch_impl import march_rays, ray_aabb_intersect  # noqa: F401  (re-exported)


@functools.lru_cache(maxsize=1)
def nerfacc_cuda_available() -> bool:
    """True when a CUDA device exists and nerfacc's CUDA extension loads (it may JIT-compile on first use)."""
    if not torch.cuda.is_available():
        return False
    try:
        from nerfacc.cuda._backend import _C  # noqa: F401

        return _C is not None
    except Exception:
        return False


def _use_cuda(t: Tensor) -> bool:
    return t.is_cuda and nerfacc_cuda_available()


def render_weight_from_density(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """Packed volume-rendering weights; see :func:`nscodec.render._torch_impl.render_weight_from_density`."""
    if _use_cuda(sigmas):
        import nerfacc

        return nerfacc.render_weight_from_density(
            t_starts, t_ends, sigmas, ray_indices=ray_indices, n_rays=n_rays
        )
    return _torch_impl.render_weight_from_density(t_starts, t_ends, sigmas, ray_indices, n_rays)


def accumulate_along_rays(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray weighted sum; see :func:`nscodec.render._torch_impl.accumulate_along_rays`."""
    if _use_cuda(weights):
        import nerfacc

        return nerfacc.accumulate_along_rays(weights, values, ray_indices=ray_indices, n_rays=n_rays)
    return _torch_impl.accumulate_along_rays(weights, values, ray_indices, n_rays)


class OccupancyGrid(torch.nn.Module):
    """Binary occupancy grid for empty-space skipping (TensoRF's "alpha mask", Chen et al. 2022 Sec. 4.4).

    Buffers (saved in checkpoints): ``occupied [G, G, G]`` bool over ``grid_aabb [6]``, and ``bbox [6]`` — the
    tight box around occupied cells, which rays are marched in. Before the first :meth:`update` every cell is
    occupied. :meth:`update` evaluates ``alpha = 1 - exp(-sigma * step)`` at cell centres and marks cells
    (dilated by one cell) whose alpha exceeds ``threshold``.
    """

    def __init__(self, aabb: Tensor, resolution: int = 128) -> None:
        super().__init__()
        self.resolution = resolution
        self.register_buffer("grid_aabb", aabb.detach().clone().float().reshape(6))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))
        self.register_buffer("bbox", aabb.detach().clone().float().reshape(6))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def cell_centers(self) -> Tensor:
        """``[G^3, 3]`` world coordinates of cell centres (x-major order matching ``occupied``)."""
        g = self.resolution
        lin = (torch.arange(g, device=self.grid_aabb.device, dtype=torch.float32) + 0.5) / g
        xyz = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), dim=-1).reshape(-1, 3)
        lo, hi = self.grid_aabb[:3], self.grid_aabb[3:]
        return lo + xyz * (hi - lo)

    @torch.no_grad()
    def update(self, density_fn, step_size: float, threshold: float = 1e-4, chunk: int = 1 << 18) -> float:
        """Re-evaluate occupancy from ``density_fn(points [N, 3]) -> sigma [N]``; returns the occupied fraction."""
        pts = self.cell_centers()
        sigma = torch.cat([density_fn(pts[i : i + chunk]).reshape(-1) for i in range(0, pts.shape[0], chunk)])
        occ = (1.0 - torch.exp(-sigma * step_size)) > threshold
        occ = occ.reshape((self.resolution,) * 3).float()[None, None]
        occ = torch.nn.functional.max_pool3d(occ, kernel_size=3, stride=1, padding=1)[0, 0] > 0
        self.occupied.copy_(occ)
        self.num_updates += 1
        idx = occ.nonzero()
        if idx.numel() == 0:  # nothing left: keep one degenerate box so rays get no samples
            self.bbox.copy_(torch.cat([self.grid_aabb[:3], self.grid_aabb[:3]]))
            return 0.0
        cell = (self.grid_aabb[3:] - self.grid_aabb[:3]) / self.resolution
        lo = self.grid_aabb[:3] + idx.min(0).values.float() * cell
        hi = self.grid_aabb[:3] + (idx.max(0).values.float() + 1) * cell
        self.bbox.copy_(torch.cat([lo, hi]))
        return float(occ.float().mean())

    def march(self, origins: Tensor, directions: Tensor, step_size: float, jitter: Tensor | None = None):
        """Samples in occupied space; see :func:`nscodec.render._torch_impl.march_rays`."""
        return march_rays(origins, directions, self.bbox, self.occupied, self.grid_aabb, step_size, jitter)
