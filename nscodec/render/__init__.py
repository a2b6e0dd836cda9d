"""Packed-sample volume rendering and occupancy-grid ray marching.

Layout follows gsplat: :mod:`._torch_impl` is the plain-torch reference that runs anywhere (CPU included);
:mod:`._wrapper` is the public API, dispatching to nerfacc's CUDA kernels when the tensors live on a CUDA device
and nerfacc's extension is available, else to the torch twin. Tests compare the two where CUDA exists.
"""

from nscodec.render._wrapper import (
    OccupancyGrid,
    accumulate_along_rays,
    importance_resample_packed,
    march_rays,
    ray_aabb_intersect,
    render_weight_from_density,
)

__all__ = [
    "OccupancyGrid",
    "accumulate_along_rays",
    "importance_resample_packed",
    "march_rays",
    "ray_aabb_intersect",
    "render_weight_from_density",
]
