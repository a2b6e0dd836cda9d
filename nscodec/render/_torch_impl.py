"""Plain-torch reference implementations of the packed rendering ops (run on any device).

"Packed" samples: a flat list of ``S`` samples, each with the index of its ray (``ray_indices [S]``, sorted
ascending, so each ray's samples are contiguous) — the layout of nerfacc 0.5 (Li et al. 2023, "NerfAcc").
Volume rendering follows Max 1995 / Mildenhall et al. 2020 Eq. 3: ``alpha_i = 1 - exp(-sigma_i * delta_i)``,
``T_i = exp(-sum_{j<i} sigma_j delta_j)``, ``w_i = T_i * alpha_i``.
"""

from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor


def ray_aabb_intersect(origins: Tensor, directions: Tensor, aabb: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays against one axis-aligned box.

    Args:
        origins: ``[R, 3]`` ray origins (world units).
        directions: ``[R, 3]`` ray directions (need not be unit length; t is in units of ``|d|``).
        aabb: ``[6]`` box ``(xmin, ymin, zmin, xmax, ymax, zmax)``.

    Returns:
        ``t_near [R]``, ``t_far [R]`` (``t_near`` clamped at 0) and ``hit [R]`` (bool, ``t_far > t_near``).
    """
    inv = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (aabb[:3] - origins) * inv
    t1 = (aabb[3:] - origins) * inv
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp_min(0.0)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    return t_near, t_far, t_far > t_near


def pack_info(ray_indices: Tensor, n_rays: int) -> Tensor:
    """``[R, 2]`` (start, count) of each ray's samples in a packed array; ``ray_indices [S]`` sorted."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = torch.cumsum(counts, 0) - counts
    return torch.stack([starts, counts], dim=-1)


def exclusive_sum_packed(inputs: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """Per-ray exclusive prefix sum of packed ``inputs [S]`` (float64 accumulation, returned in input dtype).

    The running sum over all rays is taken in float64 and each ray's offset subtracted, so the result of a
    ray does not depend on how many samples came before it (to ~1e-12 relative).
    """
    if inputs.numel() == 0:
        return inputs.clone()
    x = inputs.double()
    inclusive = torch.cumsum(x, 0)
    exclusive = inclusive - x
    info = pack_info(ray_indices, n_rays)
    ray_offset = exclusive[info[:, 0].clamp_max(inputs.numel() - 1)]  # exclusive sum at each ray's first sample
    return (exclusive - ray_offset[ray_indices]).to(inputs.dtype)


def render_weight_from_density(
    t_starts: Tensor, t_ends: Tensor, sigmas: Tensor, ray_indices: Tensor, n_rays: int
) -> Tuple[Tensor, Tensor, Tensor]:
    """Volume-rendering weights of packed samples.

    Args:
        t_starts, t_ends: ``[S]`` sample interval bounds along each ray.
        sigmas: ``[S]`` densities (1 / world unit).
        ray_indices: ``[S]`` sorted ray index of each sample.
        n_rays: number of rays ``R``.

    Returns:
        ``weights [S]``, ``transmittance [S]`` (before the sample), ``alphas [S]``.
    """
    tau = sigmas * (t_ends - t_starts)
    trans = torch.exp(-exclusive_sum_packed(tau, ray_indices, n_rays))
    alphas = 1.0 - torch.exp(-tau)
    return trans * alphas, trans, alphas


def accumulate_along_rays(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """``out[r] = sum_{i: ray(i)=r} w_i * v_i``; ``values [S, D]`` or None (→ ``[R, 1]`` accumulated weight)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros((n_rays, src.shape[-1]), dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def march_rays(
    origins: Tensor,
    directions: Tensor,
    aabb: Tensor,
    occupancy: Tensor,
    grid_aabb: Tensor,
    step_size: float,
    jitter: Tensor | None = None,
    max_samples: int = 1 << 24,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Uniform-step marching that keeps only samples in occupied cells (empty-space skipping).

    Args:
        origins, directions: ``[R, 3]``; directions unit length (so ``step_size`` is in world units).
        aabb: ``[6]`` region to march in (the occupied bounding box; rays missing it get no samples).
        occupancy: ``[G, G, G]`` bool occupancy grid covering ``grid_aabb``.
        grid_aabb: ``[6]`` box covered by ``occupancy``.
        step_size: spacing of samples along the ray (world units).
        jitter: ``[R]`` offsets in [0, 1) (stratified sampling while training) or None (mid-points, for eval).
        max_samples: raises ``RuntimeError`` if the candidate count would exceed it (a bad config).

    Returns:
        ``ray_indices [S]`` (sorted), ``t_starts [S]``, ``t_ends [S]``.
    """
    n_rays = origins.shape[0]
    device = origins.device
    t_near, t_far, hit = ray_aabb_intersect(origins, directions, aabb)
    n_steps = torch.where(hit, torch.ceil((t_far - t_near) / step_size), torch.zeros_like(t_far)).long()
    total = int(n_steps.sum())
    if total > max_samples:
        raise RuntimeError(f"march_rays: {total} candidate samples exceed max_samples={max_samples}")
    empty = torch.empty(0, device=device)
    if total == 0:
        return torch.empty(0, dtype=torch.long, device=device), empty, empty
    ray_idx = torch.repeat_interleave(torch.arange(n_rays, device=device), n_steps)
    first = torch.cumsum(n_steps, 0) - n_steps
    k = torch.arange(total, device=device) - first[ray_idx]
    off = 0.5 if jitter is None else jitter[ray_idx]
    t_mid = t_near[ray_idx] + (k.to(origins.dtype) + off) * step_size
    keep = t_mid < t_far[ray_idx]
    pos = origins[ray_idx] + directions[ray_idx] * t_mid[:, None]
    res = torch.tensor(occupancy.shape, device=device)
    cell = ((pos - grid_aabb[:3]) / (grid_aabb[3:] - grid_aabb[:3]) * res).long()
    inside = ((cell >= 0) & (cell < res)).all(dim=-1)
    cell = torch.minimum(cell.clamp_min(0), res - 1)
    keep &= inside & occupancy[cell[:, 0], cell[:, 1], cell[:, 2]]
    ray_idx, t_mid = ray_idx[keep], t_mid[keep]
    half = 0.5 * step_size
    return ray_idx, t_mid - half, t_mid + half
