"""Rendering importance of TensoRF plane locations (ECTensoRF, arXiv 2406.08943, "importance-weighted loss").

The importance of a grid location is how much it contributes to rendering the training views: the sum of the
volume-rendering weights of all training-ray samples that read it. Each sample splats its weight bilinearly
onto the plane cells it interpolates from (the transpose of the lookup), giving one ``[N, N]`` map per plane.
"""

from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor


def splat_plane_weights(coords: Tensor, weights: Tensor, resolution: int) -> Tensor:
    """Bilinear splat of ``weights [S]`` at ``coords [S, 2]`` in ``[-1, 1]`` (align_corners=True, as the
    planes are read by ``grid_sample``) onto an ``[N, N]`` map (rows: second coordinate, cols: first)."""
    n = resolution
    xy = (coords.clamp(-1, 1) + 1) * 0.5 * (n - 1)
    x0 = xy[:, 0].floor().clamp(0, n - 2)
    y0 = xy[:, 1].floor().clamp(0, n - 2)
    fx = xy[:, 0] - x0
    fy = xy[:, 1] - y0
    x0, y0 = x0.long(), y0.long()
    out = torch.zeros(n * n, dtype=weights.dtype, device=weights.device)
    for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
        out.index_add_(0, (y0 + dy) * n + (x0 + dx), weights * w)
    return out.reshape(n, n)


@torch.no_grad()
def accumulate_importance(model, ray_bundles: Iterable, resolution: int) -> Tensor:
    """Importance maps ``[3, N, N]`` (planes xy, xz, yz, as nerfstudio's TensorVMEncoding orders them).

    Args:
        model: an :class:`~nscodec.tensorf.model.NscTensoRFModel` (its ``render_samples`` gives packed
            samples with weights).
        ray_bundles: training rays, e.g. batches from the datamanager.
        resolution: plane resolution ``N``.
    """
    maps = torch.zeros(3, resolution, resolution)
    for rb in ray_bundles:
        pos, weights = model.render_samples(rb)
        p = model.field.normalize(pos)
        for i, axes in enumerate(((0, 1), (0, 2), (1, 2))):
            maps[i] += splat_plane_weights(p[:, list(axes)], weights, resolution).cpu()
    return maps
