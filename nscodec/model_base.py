"""What every nscodec model shares with nerfstudio's ``Model`` beyond the base class: background compositing of
packed renders, the RGB loss and training PSNR, and the evaluation metrics/images (PSNR, SSIM, LPIPS only when
its weights are local). Method models subclass :class:`NscModel` and add their field, rate terms and codec.

A subclass must create ``self.renderer_rgb`` (nerfstudio ``RGBRenderer``), ``self.rgb_loss`` (``MSELoss``) and
``self.image_metrics`` (:class:`nscodec.metrics.ImageMetrics`) in ``populate_modules`` and have a
``config.background_color``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps
from torch import Tensor

from nscodec.render import accumulate_along_rays, render_weight_from_density

__all__ = ["NscModel", "OccupancyScheduleConfig", "PackedSamplingConfig"]


@dataclass
class PackedSamplingConfig(ModelConfig):
    """Options of the packed ray marcher every nscodec model uses (occupancy grid, early ray termination,
    appearance only where it counts). Methods override the defaults that differ."""

    step_ratio: float = 0.5
    """Sample spacing along rays, in cells of the model's finest grid (planes, LOD grid or triplane texels)."""
    warmup_step_multiplier: float = 4.0
    """Before the first occupancy update every cell counts as occupied; march with steps this many times coarser."""
    occupancy_resolution: int = 128
    """Cells per axis of the occupancy grid."""
    occupancy_threshold: float = 1e-2
    """A cell is occupied when alpha = 1 - exp(-sigma * step) exceeds this at its centre (dilated by 1 cell)."""
    occupancy_warmup: int = 50
    """First occupancy-grid update (training step)."""
    occupancy_update_every: int = 50
    """Occupancy-grid update period (steps)."""
    weight_threshold: float = 1e-3
    """Appearance is evaluated only for samples with rendering weight above this."""
    transmittance_threshold: float = 1e-2
    """Early ray termination: while training, samples behind this transmittance get no density gradient pass."""


@dataclass
class OccupancyScheduleConfig(PackedSamplingConfig):
    """:class:`PackedSamplingConfig` + a fast-then-slow occupancy update schedule and camera-visibility culling
    (used through :meth:`NscModel.occupancy_update_due` and :meth:`NscModel.ensure_visibility`)."""

    occupancy_fast_until: int = 500
    """``occupancy_update_every`` applies before this step, ``occupancy_update_every_late`` after it."""
    occupancy_update_every_late: int = 200
    restrict_to_visible: bool = True
    """Cells no training camera sees are never occupied (no samples are spent on unobservable space)."""


class NscModel(Model):
    """nerfstudio ``Model`` + shared compositing, RGB loss, metrics. Outputs must hold ``rgb [R,3]``,
    ``accumulation [R,1]`` and ``depth [R,1]``."""

    #: outputs copied into the training metrics when present (sample counts, LOD, ...)
    logged_outputs: Tuple[str, ...] = ("num_samples_marched", "num_samples", "num_samples_appearance", "lod")

    def composite_background(self, comp: Tensor, acc: Tensor) -> Tensor:
        """Blend the composited colour ``[R, 3]`` (accumulation ``acc [R, 1]``) with the background colour.
        A random background is left to the loss while training (as nerfstudio does) and is black at eval."""
        bg = self.config.background_color
        if bg == "random":
            if self.training:
                return comp
            bg = "black"
        return comp + (1.0 - acc) * RGBRenderer.get_background_color(bg, shape=comp.shape, device=comp.device)

    def _pred_and_gt(self, outputs, batch) -> Tuple[Tensor, Tensor]:
        image = batch["image"].to(outputs["rgb"].device)
        return self.renderer_rgb.blend_background_for_loss_computation(outputs["rgb"], outputs["accumulation"], image)

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        """Training PSNR (dB) plus the :attr:`logged_outputs` present in ``outputs``."""
        pred, gt = self._pred_and_gt(outputs, batch)
        metrics = {"psnr": self.image_metrics.psnr(pred, gt)}
        for k in self.logged_outputs:
            if k in outputs:
                metrics[k] = outputs[k]
        return metrics

    def rgb_loss_dict(self, outputs, batch) -> Dict[str, Tensor]:
        """``{"rgb_loss": MSE}`` against the background-blended ground truth (the distortion term)."""
        pred, gt = self._pred_and_gt(outputs, batch)
        return {"rgb_loss": self.rgb_loss(gt, pred)}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        return self.rgb_loss_dict(outputs, batch)

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
        ``config.transmittance_threshold`` (early ray termination) and those failing ``sample_mask`` — samples that
        leave the render unchanged. Colour is evaluated only where the rendering weight exceeds
        ``config.weight_threshold``.

        Args:
            ray_bundle: nerfstudio ``RayBundle`` of ``R`` rays (origins / unit directions ``[..., 3]``).
            density_geo: world positions ``[S, 3]`` → (density ``[S]`` in 1 / world unit, per-sample features
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
        pos = origins[ray_idx] + dirs[ray_idx] * t_mid[:, None]
        n_marched = ray_idx.numel()
        if torch.is_grad_enabled():
            with torch.no_grad():
                sigma = density_only(pos) if density_only is not None else density_geo(pos)[0]
                _, trans, alphas = render_weight_from_density(t0, t1, sigma, ray_idx, n_rays)
                mask = trans > cfg.transmittance_threshold
                if sample_mask is not None:
                    mask &= sample_mask(sigma, alphas)
                keep = mask.nonzero().squeeze(-1)
            ray_idx, t0, t1, t_mid, pos = ray_idx[keep], t0[keep], t1[keep], t_mid[keep], pos[keep]
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

    # ------------------------------------------------ occupancy schedule (models with an OccupancyScheduleConfig)
    def occupancy_update_due(self, step: int) -> bool:
        """Whether the occupancy grid is refreshed after training ``step``: from ``occupancy_warmup`` on, every
        ``occupancy_update_every`` steps until ``occupancy_fast_until``, then every ``occupancy_update_every_late``."""
        cfg = self.config
        if step < cfg.occupancy_warmup:
            return False
        every = cfg.occupancy_update_every if step < cfg.occupancy_fast_until else cfg.occupancy_update_every_late
        return (step - cfg.occupancy_warmup) % every == 0

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

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR / SSIM (/ LPIPS) of a full image and the ground-truth | render, accumulation and depth images."""
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb"].device))
        rgb = outputs["rgb"]
        metrics = self.image_metrics(torch.moveaxis(image, -1, 0)[None], torch.moveaxis(rgb, -1, 0)[None])
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images
