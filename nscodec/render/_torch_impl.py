"""Plain-torch reference implementations of the packed rendering ops (run on any device).

"Packed" samples: a flat list of ``S`` samples, each with the index of its ray (``ray_indices [S]``, sorted
ascending, so each ray's samples are contiguous) — the layout of nerfacc 0.5 (Li et al. 2023, "NerfAcc").
Volume rendering follows Max 1995 / Mildenhall et al. 2020 Eq. 3: ``alpha_i = 1 - exp(-sigma_i * delta_i)``,
``T_i = exp(-sum_{j<i} sigma_j delta_j)``, ``w_i = T_i * alpha_i``.
"""

from __future__ import annotations

import math
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


#: the largest optical depth ``sigma · delta`` of one sample in :func:`render_weight_from_density`
TAU_MAX = 100.0


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
        ``weights [S]``, ``transmittance [S]`` (before the sample), ``alphas [S]``. A sample's optical depth is
        capped at :data:`TAU_MAX` (its alpha is 1 either way in float32), so an infinite density stays within its
        own ray (nerfacc's per-ray scan on CUDA has no cross-ray sum to spoil).
    """
    # optical depth per sample, at most TAU_MAX: exp(-TAU_MAX) is below float32's normal range, so the render is
    # unchanged, while an infinite density (trunc_exp overflows past ~88) would make the packed prefix sum
    # inf - inf = NaN for every later ray of the batch, and a huge finite one would cost them the float64 sum's
    # precision; NaN (inf · 0 on an empty interval) counts as 0
    tau = torch.nan_to_num(sigmas * (t_ends - t_starts), nan=0.0).clamp_max(TAU_MAX)
    trans = torch.exp(-exclusive_sum_packed(tau, ray_indices, n_rays))
    alphas = 1.0 - torch.exp(-tau)
    return trans * alphas, trans, alphas


def accumulate_along_rays(weights: Tensor, values: Tensor | None, ray_indices: Tensor, n_rays: int) -> Tensor:
    """``out[r] = sum_{i: ray(i)=r} w_i * v_i``; ``values [S, D]`` or None (→ ``[R, 1]`` accumulated weight)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros((n_rays, src.shape[-1]), dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def march_rays_dense(
    origins: Tensor,
    directions: Tensor,
    aabb: Tensor,
    occupancy: Tensor,
    grid_aabb: Tensor,
    step_size: float,
    jitter: Tensor | None = None,
    max_samples: int = 1 << 25,
    chunk_elements: int = 1 << 21,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Reference marching: every candidate sample is tested against the occupancy grid.

    Sample ``k`` of ray ``r`` sits at ``t = t_near_r + (k + jitter_r) * step_size`` inside ``aabb``. Candidates
    are laid out as a padded ``[rays, K]`` block (broadcast arithmetic, one flat gather into the grid), then
    compacted to packed form; rays are processed in chunks of at most ``chunk_elements`` candidates.

    Args:
        origins, directions: ``[R, 3]``; directions unit length (so ``step_size`` is in world units).
        aabb: ``[6]`` region to march in (the occupied bounding box; rays missing it get no samples).
        occupancy: ``[G, G, G]`` bool occupancy grid covering ``grid_aabb`` (x-major).
        grid_aabb: ``[6]`` box covered by ``occupancy``.
        step_size: spacing of samples along the ray (world units).
        jitter: ``[R]`` offsets in [0, 1) (stratified sampling while training) or None (mid-points, for eval).
        max_samples: raises ``RuntimeError`` if the candidate count would exceed it (a bad config).

    Returns:
        ``ray_indices [S]`` (sorted), ``t_starts [S]``, ``t_ends [S]``.
    """
    device = origins.device
    t_near, t_far, hit = ray_aabb_intersect(origins, directions, aabb)
    n_steps = torch.where(hit, torch.ceil((t_far - t_near) / step_size), torch.zeros_like(t_far)).long()
    total = int(n_steps.sum())
    if total > max_samples:
        raise RuntimeError(f"march_rays: {total} candidate samples exceed max_samples={max_samples}")
    hit_rays = hit.nonzero().squeeze(-1)
    if total == 0:
        empty = torch.empty(0, device=device)
        return torch.empty(0, dtype=torch.long, device=device), empty, empty
    res = occupancy.shape[0]
    occ_flat = occupancy.reshape(-1)
    oc, dc = _cell_frame(origins, directions, grid_aabb, res)
    k_max = int(n_steps.max())
    rays_per_chunk = max(1, chunk_elements // k_max)
    ks = torch.arange(k_max, device=device, dtype=origins.dtype)
    out_r, out_t = [], []
    for c in range(0, hit_rays.numel(), rays_per_chunk):
        rays = hit_rays[c : c + rays_per_chunk]
        off = 0.5 if jitter is None else jitter[rays, None]
        t = t_near[rays, None] + (ks[None, :] + off) * step_size  # [r, K]
        valid = t < t_far[rays, None]
        cell = (oc[rays, None, :] + dc[rays, None, :] * t[..., None]).int()  # int32: G^3 < 2^31
        inside = ((cell >= 0) & (cell < res)).all(dim=-1)
        cell = cell.clamp(0, res - 1)
        lin = (cell[..., 0] * res + cell[..., 1]) * res + cell[..., 2]
        keep = valid & inside & occ_flat[lin]
        r_loc, k_loc = keep.nonzero(as_tuple=True)  # row-major: sorted by ray, then by k
        out_r.append(rays[r_loc])
        out_t.append(t[r_loc, k_loc])
    ray_idx = torch.cat(out_r)
    t_mid = torch.cat(out_t)
    half = 0.5 * step_size
    return ray_idx, t_mid - half, t_mid + half


def _cell_frame(origins: Tensor, directions: Tensor, grid_aabb: Tensor, res: int) -> Tuple[Tensor, Tensor]:
    """Rays in grid-cell units: ``(origins - lo) * res / extent`` and ``directions * res / extent`` (``[R, 3]``
    each), so the cell of the point at distance ``t`` is ``(oc + dc * t)`` truncated — one multiply-add per
    sample instead of a world-space position and a rescale. Both marches use it, so they agree exactly."""
    scale = res / (grid_aabb[3:] - grid_aabb[:3])
    return (origins - grid_aabb[:3]) * scale, directions * scale


def coarse_occupancy(occupancy: Tensor, factor: int) -> Tensor:
    """``[G/f]^3`` block occupancy: a block is occupied if any of its cells or of its 26 neighbour blocks' cells
    is (max-pool by ``factor``, then dilate by one block). Used by :func:`march_rays` to skip empty blocks."""
    occ = occupancy.float()[None, None]
    blocks = torch.nn.functional.max_pool3d(occ, kernel_size=factor, stride=factor, ceil_mode=True)
    return torch.nn.functional.max_pool3d(blocks, kernel_size=3, stride=1, padding=1)[0, 0] > 0


def march_rays(
    origins: Tensor,
    directions: Tensor,
    aabb: Tensor,
    occupancy: Tensor,
    grid_aabb: Tensor,
    step_size: float,
    jitter: Tensor | None = None,
    coarse: Tensor | None = None,
    factor: int = 4,
    max_samples: int = 1 << 25,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Two-level empty-space skipping; returns exactly what :func:`march_rays_dense` returns.

    Rays are first cut into segments of ``m`` fine steps (segment length <= one block of ``factor`` cells);
    a segment is kept if its midpoint lies in a block marked by :func:`coarse_occupancy` (occupied or next to
    an occupied block — every point of the segment is within half a block of its midpoint, so no occupied
    cell is missed). Only kept segments are expanded to fine samples and tested against ``occupancy``.

    Args:
        origins, directions, aabb, occupancy, grid_aabb, step_size, jitter: as :func:`march_rays_dense`.
        coarse: precomputed ``coarse_occupancy(occupancy, factor)`` (computed here if None).
        factor: cells per block edge.

    Returns:
        ``ray_indices [S]`` (sorted by ray, then by depth), ``t_starts [S]``, ``t_ends [S]``.
    """
    device = origins.device
    res = occupancy.shape[0]
    cell = float((grid_aabb[3:] - grid_aabb[:3]).min()) / res  # smallest cell edge
    m = int((factor * cell) // step_size)  # fine steps per segment: segment length <= smallest block edge
    if m < 2:  # blocks no longer than two steps: nothing to gain
        return march_rays_dense(origins, directions, aabb, occupancy, grid_aabb, step_size, jitter, max_samples)
    if coarse is None:
        coarse = coarse_occupancy(occupancy, factor)
    t_near, t_far, hit = ray_aabb_intersect(origins, directions, aabb)
    n_steps = torch.where(hit, torch.ceil((t_far - t_near) / step_size), torch.zeros_like(t_far)).long()
    if int(n_steps.sum()) > max_samples:
        raise RuntimeError(f"march_rays: {int(n_steps.sum())} candidate samples exceed max_samples={max_samples}")
    rays = hit.nonzero().squeeze(-1)
    empty = torch.empty(0, device=device)
    if rays.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=device), empty, empty
    oc, dc = _cell_frame(origins, directions, grid_aabb, res)
    # stage 1: segments [j*m, (j+1)*m) of fine steps, midpoint tested against the dilated block grid
    n_seg = (n_steps[rays] + m - 1) // m
    js = torch.arange(int(n_seg.max()), device=device)
    t_seg = t_near[rays, None] + ((js[None, :] * m).to(origins.dtype) + 0.5 * m) * step_size
    valid = js[None, :] < n_seg[:, None]
    gc = coarse.shape[0]
    blk = ((oc[rays, None, :] + dc[rays, None, :] * t_seg[..., None]) * (1.0 / factor)).floor().long()
    blk = blk.clamp(0, gc - 1)
    keep_seg = valid & coarse.reshape(-1)[(blk[..., 0] * gc + blk[..., 1]) * gc + blk[..., 2]]
    r_loc, j_loc = keep_seg.nonzero(as_tuple=True)
    if r_loc.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=device), empty, empty
    # stage 2: the fine samples of the kept segments, laid out [segments, m] (per-segment gathers, broadcast
    # arithmetic; the formulas are march_rays_dense's, so the samples are identical)
    ray_of_seg = rays[r_loc]
    k = (j_loc * m)[:, None] + torch.arange(m, device=device)[None, :]  # [G, m] step index along the ray
    off = 0.5 if jitter is None else jitter[ray_of_seg, None]
    t_mid = t_near[ray_of_seg, None] + (k.to(origins.dtype) + off) * step_size  # [G, m]
    c = (oc[ray_of_seg, None, :] + dc[ray_of_seg, None, :] * t_mid[..., None]).int()  # [G, m, 3] cells
    inside = ((c >= 0) & (c < res)).all(dim=-1)
    c = c.clamp(0, res - 1)
    valid = (k < n_steps[ray_of_seg, None]) & (t_mid < t_far[ray_of_seg, None])
    keep = valid & inside & occupancy.reshape(-1)[(c[..., 0] * res + c[..., 1]) * res + c[..., 2]]
    s_loc, k_loc = keep.nonzero(as_tuple=True)  # row-major: segments are in ray, then depth, order
    ray_idx, t_mid = ray_of_seg[s_loc], t_mid[s_loc, k_loc]
    half = 0.5 * step_size
    return ray_idx, t_mid - half, t_mid + half


def march_rays_contracted(
    origins: Tensor,
    directions: Tensor,
    occupancy: Tensor,
    grid_aabb: Tensor,
    contraction,
    step_size: float,
    near: float,
    far: float,
    jitter: Tensor | None = None,
    max_samples: int = 1 << 25,
    chunk_elements: int = 1 << 21,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Marching through an occupancy grid that covers contracted space (:mod:`nscodec.render.contraction`).

    Sample ``k`` of every ray sits at spacing coordinate ``s_k = s(near) + (k + jitter_r) * step_size / h``
    (``s`` = :meth:`~nscodec.render.contraction.Contraction.s_of_t`, ``h`` its ray scale) and spans world
    distances ``[t(s_k - δ/2), t(s_k + δ/2)]`` (``δ = step_size / h``): ``step_size`` world units near the camera,
    growing with the square of the distance beyond ``h``. A sample is kept when the field-space position of its
    interval's midpoint lies in an occupied cell. Rays run from ``near`` to ``far`` (no box test: contracted space
    has no outside).

    Args:
        origins, directions: ``[R, 3]`` world rays; directions unit length.
        occupancy: ``[G, G, G]`` bool grid over ``grid_aabb [6]`` (the field box, field-space coordinates).
        contraction: the :class:`~nscodec.render.contraction.Contraction` of the grid.
        step_size: sample spacing in field-space units (world units inside the scene box).
        near, far: ray interval (world units, ``0 <= near < far``).
        jitter: ``[R]`` offsets in [0, 1) while training, None for mid-points.
        max_samples: raises ``RuntimeError`` if the candidate count would exceed it.

    Returns:
        ``ray_indices [S]`` (sorted by ray, then depth), ``t_starts [S]``, ``t_ends [S]`` (world distances).
    """
    device = origins.device
    n_rays = origins.shape[0]
    h = contraction.ray_scale
    delta = step_size / h
    s0, s1 = float(contraction.s_of_t(near)), float(contraction.s_of_t(far))
    k_max = max(int(math.ceil((s1 - s0) / delta)), 0)
    if n_rays * k_max > max_samples:
        raise RuntimeError(f"march_rays_contracted: {n_rays * k_max} candidate samples exceed max_samples={max_samples}")
    empty = torch.empty(0, device=device)
    if n_rays == 0 or k_max == 0:
        return torch.empty(0, dtype=torch.long, device=device), empty, empty
    res = occupancy.shape[0]
    occ_flat = occupancy.reshape(-1)
    lo = grid_aabb[:3]
    scale = res / (grid_aabb[3:] - grid_aabb[:3])
    ks = torch.arange(k_max, device=device, dtype=origins.dtype)
    rays_per_chunk = max(1, chunk_elements // k_max)
    out_r, out_t0, out_t1 = [], [], []
    for c in range(0, n_rays, rays_per_chunk):
        rays = torch.arange(c, min(c + rays_per_chunk, n_rays), device=device)
        off = 0.5 if jitter is None else jitter[rays, None]
        s = (s0 + (ks[None, :] + off) * delta).expand(rays.numel(), k_max)  # [r, K]
        valid = s < s1
        t_lo = contraction.t_of_s((s - 0.5 * delta).clamp_min(s0))
        t_hi = contraction.t_of_s((s + 0.5 * delta).clamp_max(s1))
        t_mid = 0.5 * (t_lo + t_hi)
        pos = contraction(origins[rays, None, :] + directions[rays, None, :] * t_mid[..., None])
        cell = ((pos - lo) * scale).int().clamp(0, res - 1)
        keep = valid & occ_flat[(cell[..., 0] * res + cell[..., 1]) * res + cell[..., 2]]
        r_loc, k_loc = keep.nonzero(as_tuple=True)
        out_r.append(rays[r_loc])
        out_t0.append(t_lo[r_loc, k_loc])
        out_t1.append(t_hi[r_loc, k_loc])
    return torch.cat(out_r), torch.cat(out_t0), torch.cat(out_t1)


def importance_resample_packed(
    ray_indices: Tensor,
    t_starts: Tensor,
    t_ends: Tensor,
    weights: Tensor,
    n_rays: int,
    num_samples: int,
    padding: float = 0.01,
    jitter: Tensor | None = None,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Replace each ray's packed intervals by ``num_samples`` intervals placed by inverse-CDF sampling of their
    rendering weights — hierarchical sampling (Mildenhall et al. 2020, Sec. 5.2; nerfstudio's ``PDFSampler``) on
    packed, possibly gapped samples, with the field itself as the proposal.

    The samples are drawn from a piecewise-constant density over each ray's intervals. The gaps between intervals
    are cells the occupancy grid skipped: they hold no density and get no samples. The probability mass of interval
    ``i`` is ``(1 - padding) · w_i / Σw + padding · len_i / Σlen``. With this uniform padding, a ray whose weights
    are all zero samples its intervals uniformly. ``num_samples`` strata of equal mass split the ray, and new sample
    ``j`` sits at mass ``(j + ξ) / num_samples``; ``ξ`` is ``jitter``, or 0.5 without it. Its interval length is the
    importance-sampling weight ``1 / (K p(x))``, with ``p = mass_i / len_i`` at the sample. So ``Σ σ(x_j) · len_j``
    is an unbiased estimate of the ray's optical depth, ``∫ σ``, over its intervals. Samples are dense where the
    weights are and sparse elsewhere.

    Args:
        ray_indices: ``[S]`` sorted ray index of each sample (rays with no sample get none back).
        t_starts, t_ends: ``[S]`` interval bounds (world units), increasing along each ray.
        weights: ``[S]`` non-negative rendering weights (e.g. from a pass without gradients).
        n_rays: number of rays ``R``.
        num_samples: ``K ≥ 1`` intervals per ray that has samples.
        padding: uniform share of the mass in ``[0, 1]``.
        jitter: ``[R', K]`` uniform draws in ``[0, 1)`` for the ``R'`` rays with samples (ascending ray order), or None.

    Returns:
        ``ray_indices [R'·K]`` (sorted), ``t_starts [R'·K]``, ``t_ends [R'·K]``: interval ``j`` of a ray is centred
        on its sample (so mid-points and depths are the sample positions) and ``t_ends - t_starts`` is its length.

    Raises:
        ValueError: ``num_samples < 1`` or ``padding`` outside ``[0, 1]``.
    """
    if num_samples < 1 or not 0.0 <= padding <= 1.0:
        raise ValueError(f"importance resampling needs num_samples >= 1 and padding in [0, 1], got {num_samples}, {padding}")
    dev = t_starts.device
    if ray_indices.numel() == 0:
        empty = torch.zeros(0, dtype=t_starts.dtype, device=dev)
        return ray_indices.clone(), empty, empty.clone()
    k = int(num_samples)
    length = (t_ends - t_starts).double().clamp_min(0.0)
    w = weights.double().clamp_min(0.0)
    w_ray = torch.zeros(n_rays, dtype=torch.float64, device=dev).index_add_(0, ray_indices, w)
    l_ray = torch.zeros(n_rays, dtype=torch.float64, device=dev).index_add_(0, ray_indices, length)
    has_w = (w_ray > 0)[ray_indices]
    uniform = length / l_ray[ray_indices].clamp_min(1e-300)
    mass = torch.where(has_w, (1.0 - padding) * w / w_ray[ray_indices].clamp_min(1e-300) + padding * uniform, uniform)
    cdf_end = exclusive_sum_packed(mass, ray_indices, n_rays) + mass  # [S] in (0, 1] per ray
    info = pack_info(ray_indices, n_rays)
    rays = (info[:, 1] > 0).nonzero().squeeze(-1)  # [R']
    first, last = info[rays, 0], info[rays, 0] + info[rays, 1] - 1
    xi = torch.full((rays.numel(), k), 0.5, dtype=torch.float64, device=dev) if jitter is None else jitter.double()
    u = (torch.arange(k, dtype=torch.float64, device=dev) + xi) / k  # [R', K] sample masses, one per stratum
    # one sorted key over all rays: ray r's cdf lies in (r, r + 1]; float64 keeps 1e-12 resolution up to 2^40 rays
    key = ray_indices.double() + cdf_end
    query = rays.double()[:, None] + u.clamp(0.0, 1.0 - 1e-12)
    idx = torch.searchsorted(key, query.reshape(-1), right=True).reshape(query.shape)
    idx = torch.minimum(torch.maximum(idx, first[:, None]), last[:, None])  # [R', K] interval of each query
    frac = ((u - (cdf_end[idx] - mass[idx])) / mass[idx].clamp_min(1e-300)).clamp(0.0, 1.0)
    t_mid = t_starts.double()[idx] + frac * length[idx]
    # importance-sampling estimate of a stratum's optical depth: sigma(x) / (K p(x)), p = mass / length at x
    seg = length[idx] / (k * mass[idx]).clamp_min(1e-300)
    out_rays = rays.repeat_interleave(k)
    half = 0.5 * seg
    return out_rays, (t_mid - half).reshape(-1).to(t_starts.dtype), (t_mid + half).reshape(-1).to(t_starts.dtype)
