"""Packed volume rendering through an occupancy grid, the renderer every nscodec model shares
(:class:`PackedRenderer`, a part of :class:`nscodec.core.model_base.NscModel`).

A model marches its rays through :attr:`PackedRenderer.occupancy` (:class:`~nscodec.render.OccupancyGrid`: empty-space
skipping, camera-visibility culling, scene contraction for captures) at :attr:`PackedRenderer.step_size`, keeps each
ray's own samples only (packed, no padding), drops what barely changes the render (early ray termination, an alpha
threshold, importance resampling to a cap of samples per ray) in a first pass without gradients, and evaluates
appearance only where the rendering weight counts (:meth:`PackedRenderer.render_packed`). The occupancy grid is
refreshed on a schedule (:meth:`PackedRenderer.occupancy_update_due`) from the model's own density.

What a model provides: :meth:`~PackedRenderer.base_step_size` and :meth:`~PackedRenderer.occupancy_density`; the
sample spacing, thresholds and schedule are fields of its config (:class:`nscodec.core.model_base.NscModelConfig`).
"""

from __future__ import annotations

import abc
from typing import Any, Callable, Optional, Tuple

import torch
from torch import Tensor

from nscodec.render import OccupancyGrid, accumulate_along_rays, importance_resample_packed, render_weight_from_density
from nscodec.render.contraction import Contraction

__all__ = ["PackedRenderer"]


class PackedRenderer:
    """Occupancy grid, its schedule and packed rendering (module docstring). Expects ``self.config`` (an
    :class:`~nscodec.core.model_base.NscModelConfig`), ``self.scene_box`` (the box the grids cover) and
    ``self.world_box`` (the dataset's scene box)."""

    def new_occupancy_grid(self) -> OccupancyGrid:
        """An empty occupancy grid over :attr:`scene_box` at ``occupancy_resolution``, contracted like the model."""
        cfg = self.config
        contraction = Contraction(cfg.inner_box(self.world_box.aabb)) if cfg.contracted else None
        return OccupancyGrid(self.scene_box.aabb.reshape(6), cfg.occupancy_resolution, contraction,
                             cfg.near_plane, cfg.far_plane).to(self.scene_box.aabb.device)

    def sample_positions(self, origins: Tensor, dirs: Tensor, ray_idx: Tensor, t0: Tensor, t1: Tensor) -> Tensor:
        """Field-space positions ``[S, 3]`` of packed samples (interval mid-points of rays ``origins, dirs [R, 3]``),
        contracted when the model contracts space: what every field is evaluated at."""
        return self.occupancy.to_field(origins[ray_idx] + dirs[ray_idx] * (0.5 * (t0 + t1))[:, None])

    # ------------------------------------------------------------------------------- the method provides

    @abc.abstractmethod
    def base_step_size(self) -> float:
        """Sample spacing along rays once the occupancy grid is ready (world units)."""

    @abc.abstractmethod
    def occupancy_density(self, positions: Tensor) -> Tensor:
        """Density ``[S]`` (1 / world unit) at field-space ``positions [S, 3]`` (world positions unless the model
        contracts space) that occupancy updates threshold."""

    def occupancy_bound(self) -> Optional[Tensor]:
        """``[G, G, G]`` bool: the cells an occupancy update may mark occupied (None: any visible cell)."""
        return None

    def first_occupancy_update(self) -> int:
        """Training step of the first occupancy update (``occupancy_warmup``)."""
        return self.config.occupancy_warmup

    # ------------------------------------------------------------------------------------------- occupancy

    @property
    def occupancy_ready(self) -> bool:
        """True once the occupancy grid was computed from the density at least once (saved in checkpoints)."""
        return bool(self.occupancy.num_updates.item() > 0)

    def coarse_marching(self) -> bool:
        """Whether samples are :attr:`~NscModelConfig.warmup_step_multiplier` times sparser right now (default:
        until the occupancy grid is ready)."""
        return not self.occupancy_ready

    @property
    def step_size(self) -> float:
        """Sample spacing along rays (world units): :meth:`base_step_size`, coarser while :meth:`coarse_marching`."""
        step = self.base_step_size()
        return step * self.config.warmup_step_multiplier if self.coarse_marching() else step

    def update_occupancy(self) -> float:
        """Refresh the occupancy grid from :meth:`occupancy_density`; returns the occupied fraction."""
        return self.occupancy.update(
            self.occupancy_density, self.step_size, self.config.occupancy_threshold, bound=self.occupancy_bound()
        )

    def occupancy_update_due(self, step: int) -> bool:
        """Whether the occupancy grid is refreshed after training ``step``: from :meth:`first_occupancy_update` on,
        every ``occupancy_update_every`` steps until ``occupancy_fast_until``, then every
        ``occupancy_update_every_late``."""
        cfg = self.config
        first = self.first_occupancy_update()
        if step < first:
            return False
        every = cfg.occupancy_update_every if step < cfg.occupancy_fast_until else cfg.occupancy_update_every_late
        return (step - first) % every == 0

    def ensure_visibility(self, cameras) -> None:
        """Set ``self.occupancy``'s camera-visibility mask from the training ``cameras`` (nerfstudio Cameras) once;
        with ``restrict_to_visible=False`` every cell counts as visible. The mask is a buffer (kept in checkpoints)."""
        grid = self.occupancy
        if bool(grid.visibility_set):
            return
        if not self.config.restrict_to_visible:
            grid.visibility_set.fill_(True)
            return
        grid.set_visibility(cameras.camera_to_worlds, cameras.fx, cameras.fy, cameras.cx, cameras.cy, cameras.width, cameras.height)

    # ------------------------------------------------------------------------------------- packed rendering

    def render_packed(
        self,
        ray_bundle,
        density_geo: Callable[[Tensor], Tuple[Tensor, Any]],
        rgb_from_geo: Callable[[Any, Tensor], Tensor],
        density_only: Optional[Callable[[Tensor], Tensor]] = None,
        sample_mask: Optional[Callable[[Tensor, Tensor], Tensor]] = None,
    ) -> Dict[str, Tensor]:
        """Volume-render a ray bundle on packed samples marched through ``self.occupancy`` (``step_size`` spacing,
        jittered while training), as every nscodec model does.

        While gradients are enabled a first pass without gradients drops samples behind transmittance
        ``config.transmittance_threshold`` (early ray termination), those of alpha at most ``config.alpha_threshold``
        and those failing ``sample_mask`` — samples that leave the render (nearly) unchanged; rays that still keep more
        than ``config.train_samples_per_ray`` samples get that many, importance-resampled from the first pass's
        weights. Colour is evaluated only where the rendering weight exceeds ``config.weight_threshold``.

        Args:
            ray_bundle: nerfstudio ``RayBundle`` of ``R`` rays (origins / unit directions ``[..., 3]``).
            density_geo: field-space positions ``[S, 3]`` (:meth:`sample_positions`) → (density ``[S]`` in 1 / world unit, per-sample features
                indexable by a sample index, handed to ``rgb_from_geo``).
            rgb_from_geo: (features of the live samples, their unit directions ``[S', 3]``) → colour ``[S', 3]``.
            density_only: cheaper density-only twin of ``density_geo`` for the first pass (default: ``density_geo``).
            sample_mask: (density ``[S]``, alpha ``[S]``) → bool ``[S]``, samples worth a gradient pass.

        Returns:
            ``rgb [R, 3]`` (background composited), ``accumulation [R, 1]``, ``depth [R, 1]``; while training also the
            sample counts ``num_samples_marched``, ``num_samples`` and ``num_samples_appearance`` (scalars).
        """
        cfg = self.config
        origins = ray_bundle.origins.reshape(-1, 3)
        dirs = ray_bundle.directions.reshape(-1, 3)
        n_rays = origins.shape[0]
        jitter = torch.rand(n_rays, device=origins.device) if self.training else None
        ray_idx, t0, t1 = self.occupancy.march(origins, dirs, self.step_size, jitter)
        t_mid = 0.5 * (t0 + t1)
        pos = self.sample_positions(origins, dirs, ray_idx, t0, t1)
        n_marched = ray_idx.numel()
        if torch.is_grad_enabled():
            with torch.no_grad():
                sigma = density_only(pos) if density_only is not None else density_geo(pos)[0]
                _, trans, alphas = render_weight_from_density(t0, t1, sigma, ray_idx, n_rays)
                mask = trans > cfg.transmittance_threshold
                if cfg.alpha_threshold and self.occupancy_ready:  # None (unresolved) or 0: off; see alpha_threshold
                    mask &= alphas > cfg.alpha_threshold
                if sample_mask is not None:
                    mask &= sample_mask(sigma, alphas)
                keep = mask.nonzero().squeeze(-1)
            ray_idx, t0, t1, t_mid, pos = ray_idx[keep], t0[keep], t1[keep], t_mid[keep], pos[keep]
            k = int(cfg.train_samples_per_ray or 0)
            if k > 0 and ray_idx.numel() > 0:
                ray_idx, t0, t1, t_mid, pos = self._resample(origins, dirs, ray_idx, t0, t1, pos,
                                                             (trans * alphas)[keep], n_rays, k)
        sigma, geo = density_geo(pos)
        weights, _, _ = render_weight_from_density(t0, t1, sigma, ray_idx, n_rays)
        live = (weights > cfg.weight_threshold).nonzero().squeeze(-1)
        rgb_live = rgb_from_geo(geo[live], dirs[ray_idx[live]])
        comp = accumulate_along_rays(weights[live], rgb_live, ray_idx[live], n_rays)
        acc = accumulate_along_rays(weights, None, ray_idx, n_rays)
        depth = accumulate_along_rays(weights, t_mid[:, None], ray_idx, n_rays) / acc.clamp_min(1e-10)
        out = {"rgb": self.composite_background(comp, acc), "accumulation": acc, "depth": depth}
        if self.training:
            out["num_samples_marched"] = torch.tensor(float(n_marched))
            out["num_samples"] = torch.tensor(float(ray_idx.numel()))
            out["num_samples_appearance"] = torch.tensor(float(live.numel()))
        return out

    def _resample(self, origins, dirs, ray_idx, t0, t1, pos, weights, n_rays: int, k: int):
        """Rays with more than ``k`` packed samples get ``k`` importance-resampled ones (see
        :attr:`NscModelConfig.train_samples_per_ray`); the others keep theirs. Returns the packed samples, sorted by ray."""
        over_rays = torch.bincount(ray_idx, minlength=n_rays) > k
        over = over_rays[ray_idx]
        if not bool(over.any()):
            return ray_idx, t0, t1, 0.5 * (t0 + t1), pos
        sel, rest = over.nonzero().squeeze(-1), (~over).nonzero().squeeze(-1)
        jitter = torch.rand(int(over_rays.sum()), k, device=t0.device) if self.training else None
        r_new, t0_new, t1_new = importance_resample_packed(ray_idx[sel], t0[sel], t1[sel], weights[sel], n_rays, k,
                                                           self.config.resample_padding, jitter)
        pos_new = self.sample_positions(origins, dirs, r_new, t0_new, t1_new)
        ray_idx = torch.cat([ray_idx[rest], r_new])
        order = torch.sort(ray_idx, stable=True).indices
        t0, t1 = torch.cat([t0[rest], t0_new])[order], torch.cat([t1[rest], t1_new])[order]
        return ray_idx[order], t0, t1, 0.5 * (t0 + t1), torch.cat([pos[rest], pos_new])[order]
