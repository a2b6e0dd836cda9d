"""Scene contraction for unbounded captures: all of space mapped into a box twice the size of the scene box.

Mip-NeRF 360 (Barron et al. 2022, Sec. 2, Eq. 10) contracts space so that a bounded grid covers an unbounded
scene: points inside the unit ball keep their coordinates, points outside move to ``(2 - 1/|x|) x/|x|``. nerfstudio's
:class:`~nerfstudio.field_components.spatial_distortions.SceneContraction` implements it; with ``order=inf`` (the
L∞ norm, as nerfacto uses for its grids) the unit *cube* stays put and everything maps into ``[-2, 2]^3``.
:func:`contract_linf` is the same map written with ``amax(|x|)`` for the L∞ norm: nerfstudio's module computes it
with ``torch.linalg.norm(ord=inf)``, much slower on CPU for ``[S, 3]`` inputs (docs/benchmarks.md, "Capture
kernels"); the tests compare the two, values and gradients.

:class:`Contraction` applies it in the frame of a scene box (centre ``c``, half extents ``h``): the scene box is the
inner, uncontracted region and the *field box* ``c ± 2h`` holds all of space. Every nscodec grid (TensoRF planes,
latent planes, hash and VQ-AD grids, triplanes) and the occupancy grid then cover the field box, and a sample at world
position ``x`` is looked up at ``contract(x)`` ("field space"). Rays are marched in world distance ``t`` with a step
that is uniform in ``s(t)`` — linear up to ``t = h`` and in disparity beyond (Mip-NeRF 360's piecewise spacing,
nerfstudio's ``UniformLinDispPiecewiseSampler``) — so each field-space cell receives about as many samples near
the camera as at infinity.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Contraction", "MAX_CONTRACTED_RADIUS", "contract_linf"]

#: contracted L∞ radius (in inner-box units) at which :meth:`Contraction.inverse` stops: world radius 1000 × h
MAX_CONTRACTED_RADIUS = 2.0 - 1e-3


def contract_linf(x: Tensor) -> Tensor:
    """Mip-NeRF 360's contraction (Barron et al. 2022, Eq. 10) under the L∞ norm: ``x`` where ``|x|_∞ <= 1``, else
    ``(2 - 1/|x|_∞) x / |x|_∞``. ``x [..., 3]`` (inner-box units) → ``[..., 3]`` in ``[-2, 2]^3``; differentiable.

    The values of nerfstudio's ``SceneContraction(order=inf)`` (its reference twin in the tests), with the L∞
    norm taken as ``amax(|x|)``."""
    r = x.abs().amax(dim=-1, keepdim=True).clamp_min(1.0)  # 1 inside the cube: the scale below is exactly 1 there
    return x * ((2 - 1 / r) / r)


class Contraction(torch.nn.Module):
    """L∞ scene contraction in the frame of a scene box (module docstring).

    Buffers: ``center [3]`` and ``half_extent [3]`` (world units) of the inner box.

    Args:
        inner_aabb: ``[2, 3]`` (or ``[6]``) scene box ``(min, max)``, world units; the region left uncontracted.

    Raises:
        ValueError: a box with a non-positive or non-finite extent.
    """

    def __init__(self, inner_aabb: Tensor) -> None:
        super().__init__()
        box = inner_aabb.detach().float().reshape(2, 3)
        half = 0.5 * (box[1] - box[0])
        if not bool(torch.isfinite(box).all()) or bool((half <= 0).any()):
            raise ValueError(f"scene contraction needs a box with positive, finite extents, got {box.tolist()}")
        self.register_buffer("center", 0.5 * (box[0] + box[1]), persistent=False)  # derived from the config: not saved
        self.register_buffer("half_extent", half, persistent=False)

    @staticmethod
    def field_aabb(inner_aabb: Tensor) -> Tensor:
        """``[2, 3]`` field box (``centre ± 2 h``) that holds all of contracted space, for a scene box ``[2, 3]``."""
        box = inner_aabb.detach().float().reshape(2, 3)
        c, h = 0.5 * (box[0] + box[1]), 0.5 * (box[1] - box[0])
        return torch.stack([c - 2.0 * h, c + 2.0 * h])

    @property
    def ray_scale(self) -> float:
        """Distance (world units) at which ray spacing turns from linear to disparity: the mean half extent."""
        return float(self.half_extent.mean())

    def forward(self, x: Tensor) -> Tensor:
        """World positions ``[..., 3]`` → field-space positions ``[..., 3]`` inside the field box."""
        return self.center + self.half_extent * contract_linf((x - self.center) / self.half_extent)

    def inverse(self, y: Tensor) -> Tensor:
        """Field-space positions ``[..., 3]`` → world positions ``[..., 3]`` (contracted radius clamped to
        :data:`MAX_CONTRACTED_RADIUS`, so the box's outer faces map to a finite distance)."""
        yn = (y - self.center) / self.half_extent
        r = yn.abs().amax(dim=-1, keepdim=True)
        rc = r.clamp(1.0, MAX_CONTRACTED_RADIUS)
        world_r = 1.0 / (2.0 - rc)
        xn = torch.where(r > 1.0, yn / r.clamp_min(1e-12) * world_r, yn)
        return self.center + self.half_extent * xn

    def world_step_factor(self, y: Tensor) -> Tensor:
        """``[...]``: world length per unit of field-space length at field positions ``y [..., 3]`` — 1 inside the
        scene box, ``1 / (2 - r)^2`` at contracted L∞ radius ``r`` outside (the radial derivative of
        :meth:`inverse`, the larger of its two; so ``alpha = 1 - exp(-sigma · step · factor)`` never underestimates
        a sample's opacity). Clamped like :meth:`inverse`."""
        r = ((y - self.center) / self.half_extent).abs().amax(dim=-1)
        return torch.where(r > 1.0, 1.0 / (2.0 - r.clamp(1.0, MAX_CONTRACTED_RADIUS)) ** 2, torch.ones_like(r))

    def s_of_t(self, t: Tensor | float) -> Tensor:
        """Ray spacing coordinate of world distance ``t >= 0``: ``t / h`` up to ``h``, ``2 - h / t`` beyond (in
        ``[0, 2)``; ``h`` = :attr:`ray_scale`)."""
        h = self.ray_scale
        t = torch.as_tensor(t, dtype=torch.float32, device=self.center.device)
        return torch.where(t <= h, t / h, 2.0 - h / t.clamp_min(1e-12))

    def t_of_s(self, s: Tensor) -> Tensor:
        """Inverse of :meth:`s_of_t` for ``s`` in ``[0, 2)`` (world distance; ``s`` is clamped below 2)."""
        h = self.ray_scale
        return torch.where(s <= 1.0, s * h, h / (2.0 - s.clamp_max(MAX_CONTRACTED_RADIUS)))
