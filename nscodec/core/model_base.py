"""The base every nscodec method's model stands on: :class:`NscModelConfig` (the options they share) and
:class:`NscModel`, a nerfstudio ``Model`` assembled from

* :class:`nscodec.core.contract.NscContract` — the model ↔ ``.nsc`` contract (abstract encode / decode, finalizing,
  levels of detail);
* :class:`nscodec.render.packed.PackedRenderer` — the occupancy grid with camera-visibility culling and its update
  schedule, and packed volume rendering through it;
* what this module adds: the shared modules (RGB renderer, loss, metrics, scene contraction from the dataset), the
  training callbacks around the method's own, the distortion term and the evaluation images.

``NscModel`` is an abstract base: a method that leaves out part of the contract fails at ``setup``.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple

import torch
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps, misc
from torch import Tensor

from nscodec.core.contract import NscContract
from nscodec.core.metrics import ImageMetrics
from nscodec.render.contraction import Contraction
from nscodec.render.packed import PackedRenderer

__all__ = ["NscModel", "NscModelConfig"]

#: bounds of shared config values that size tensors or loops, checked before a decoded model is built
_LIMITS: Dict[str, Tuple[float, float]] = {
    "occupancy_resolution": (1, 512),
    "step_ratio": (1e-3, 64.0),
    "warmup_step_multiplier": (1e-3, 1e3),
    "occupancy_threshold": (0.0, 1.0),
    "weight_threshold": (0.0, 1.0),
    "transmittance_threshold": (0.0, 1.0),
    "resample_padding": (0.0, 1.0),
    "eval_num_rays_per_chunk": (1, 1 << 24),
    "occupancy_warmup": (0, 1 << 31),
    "occupancy_update_every": (1, 1 << 31),
    "occupancy_fast_until": (0, 1 << 31),
    "occupancy_update_every_late": (1, 1 << 31),
    "near_plane": (0.0, 1e6),
    "far_plane": (1e-6, 1e9),
}


#: rays of a contracted model start and end here (world units) unless the config or the data says otherwise
DEFAULT_NEAR_PLANE, DEFAULT_FAR_PLANE = 0.05, 1000.0


@dataclass
class NscModelConfig(ModelConfig):
    """Options every nscodec model shares: packed ray marching through an occupancy grid (empty-space skipping,
    early ray termination, appearance only where it counts), the grid's update schedule and camera-visibility
    culling, and the background. Methods override the defaults that differ."""

    step_ratio: float = 0.5
    """Sample spacing along rays, in cells of the model's finest grid (planes, LOD grid or triplane texels)."""
    warmup_step_multiplier: float = 4.0
    """Before the first occupancy update every cell counts as occupied; march with steps this many times coarser."""
    occupancy_resolution: int = 128
    """Cells per axis of the occupancy grid."""
    occupancy_threshold: float = 1e-2
    """A cell is occupied when alpha = 1 - exp(-sigma * step) exceeds this at a corner of the cell."""
    occupancy_warmup: int = 50
    """First occupancy-grid update (training step)."""
    occupancy_update_every: int = 50
    """Occupancy-grid update period (steps) before ``occupancy_fast_until``."""
    occupancy_fast_until: int = 500
    """``occupancy_update_every`` applies before this step, ``occupancy_update_every_late`` after it."""
    occupancy_update_every_late: int = 200
    restrict_to_visible: bool = True
    """Cells no training camera sees are never occupied (no samples are spent on unobservable space)."""
    weight_threshold: float = 1e-3
    """Appearance is evaluated only for samples with rendering weight above this."""
    transmittance_threshold: float = 1e-2
    """Early ray termination: while training, samples behind this transmittance get no density gradient pass."""
    background_color: Literal["auto", "random", "black", "white"] = "auto"
    """``auto``: white for Blender-layout data (objects on white), random for captures (so the model has to explain
    every pixel with the scene; nerfstudio's ``random``). Resolved by :class:`nscodec.pipeline.NscPipeline` from the
    dataparser; a model built without it reads ``auto`` as white."""
    scene_contraction: Literal["auto", "off", "on"] = "auto"
    """``on``: model all of space (unbounded captures) — the scene box is left uncontracted and the rest of space
    is contracted into a box twice its size, which every grid and the occupancy grid cover
    (:mod:`nscodec.render.contraction`); ``off``: only the inside of the scene box (objects). ``auto``: off for
    Blender-layout data, on for every other dataparser (nerfstudio-data, instant-ngp, ...), resolved like
    ``background_color``."""
    alpha_threshold: Optional[float] = None
    """While training, samples whose alpha (first, gradient-free pass) is at most this get no gradient pass
    (nerfacc's ``alpha_thre``): a capture's early density is diffuse, and without it every sample of every ray is
    evaluated with gradients. None: 0 for bounded scenes, 1e-2 with scene contraction (as nerfacc's unbounded
    examples). Applied only once the occupancy grid is ready (:attr:`NscModel.occupancy_ready`): alpha is
    ``1 - exp(-sigma · step)``, so a field at its initial density can sit below the threshold at every sample of
    every ray (short world steps, e.g. a capture scaled into a small box), and filtering then would leave it without
    a single gradient, never to learn."""
    train_samples_per_ray: Optional[int] = None
    """While training, rays that keep more samples than this for the gradient pass get this many instead, placed by
    importance resampling of the gradient-free pass's weights (:func:`nscodec.render.importance_resample_packed`,
    NeRF's hierarchical sampling with the field as its own proposal); 0: off. Captures fill their bounds, so every
    ray meets a (at first diffuse) surface and keeps ~25 samples; this caps the cost per ray. None:
    :attr:`bounded_samples_per_ray` for bounded scenes, :attr:`capture_samples_per_ray` with scene contraction.
    Rendering outside training always uses every marched sample."""
    resample_padding: float = 0.01
    """Uniform share of the resampling mass (nerfstudio's ``histogram_padding``): low-weight regions still get samples."""
    contraction_inner_radius: Optional[float] = None
    """With scene contraction: half extent (world units) of the uncontracted cube around the scene box's centre;
    None: the scene box itself — except for instant-ngp data, whose scene box (``aabb_scale``) spans the whole
    environment: there the cube of radius 1 (twice instant-ngp's unit cube)."""
    near_plane: Optional[float] = None
    """With scene contraction: where rays start (world units, after the dataparser's scaling). None: from the data
    where the dataparser measures depth bounds (``llff-data``: 0.9 × the smallest near bound of its views, recorded
    as the dataparser metadata ``near_plane``), else 0.05. The file records the resolved value."""
    far_plane: Optional[float] = None
    """With scene contraction: where rays end (world units; 1000 × the scene box is contracted radius 1.999). None:
    from the data (``llff-data``: 1.1 × the largest far bound along the image-corner ray, metadata ``far_plane``),
    else 1000."""
    enable_collider: bool = False
    eval_num_rays_per_chunk: int = 1 << 14

    #: header fields written by older nscodec versions that this config no longer has (ignored when decoding)
    nsc_retired_fields: ClassVar[frozenset] = frozenset()
    #: what a file that lacks a field (written before it existed) decodes with, where the field's default is a
    #: placeholder resolved at training time: files from before scene contraction marched from 0.05 to 1000
    nsc_absent_field_values: ClassVar[Dict[str, Any]] = {"near_plane": DEFAULT_NEAR_PLANE, "far_plane": DEFAULT_FAR_PLANE}
    #: what ``train_samples_per_ray`` resolves to with scene contraction: 12 here (fewer cost the grid methods
    #: quality on fox), 8 for ectensorf (docs/benchmarks.md, "Capture kernels")
    capture_samples_per_ray: ClassVar[int] = 12
    #: what it resolves to for bounded scenes: 0 (off) here; a method whose early fog (untrained density filling the
    #: box) is costly sets a cap (vqad: docs/benchmarks.md, "Grid core, stop 29")
    bounded_samples_per_ray: ClassVar[int] = 0

    def nsc_limits(self) -> Dict[str, Tuple[float, float]]:
        """``{field: (lo, hi)}``: the values a decodable file may hold for the fields that size tensors or loops.
        Subclasses add theirs (``{**super().nsc_limits(), ...}``); :func:`nscodec.io.validate_config` checks them."""
        limits = dict(_LIMITS)
        if self.contraction_inner_radius is not None:
            limits["contraction_inner_radius"] = (1e-6, 1e6)
        if self.alpha_threshold is not None:
            limits["alpha_threshold"] = (0.0, 1.0)
        if self.train_samples_per_ray is not None:
            limits["train_samples_per_ray"] = (0, 1 << 16)
        return limits

    def nsc_derived_limits(self) -> List[Tuple[str, float, float]]:
        """``[(what, value, hi)]``: derived sizes (products of fields) a decodable file may not exceed, checked
        after :meth:`nsc_limits` holds (e.g. a grid's vertex count times its codebook size)."""
        return [("near_plane - far_plane (rays must run from near to far)", self.near_plane - self.far_plane, -1e-9)]

    def nsc_decode_bytes(self) -> Dict[str, int]:
        """``{part: bytes}``: an upper bound of what building and decoding a model of this config allocates — every
        parameter and buffer (float32: 4 bytes a value), at the largest size a file may give it — from the config
        alone, so :func:`nscodec.io.validate_config` can refuse a file before anything is built (its sum against
        :func:`nscodec.io.max_decode_bytes`). Subclasses add their parts (``{**super().nsc_decode_bytes(), ...}``);
        ``tests/test_conformance.py`` checks the sum against a decoded model's tensors. Here: the occupancy grid
        (``occupied`` and ``visible`` masks, ``G^3`` bytes each, and the 4×-coarser marching grid)."""
        g = int(self.occupancy_resolution)
        return {"occupancy grid": 2 * g ** 3 + (-(-g // 4)) ** 3}

    #: fields no decoder reads (training schedules, learning signals): any value of their type decodes the same
    #: model (``tests/test_conformance.py`` checks it); every other numeric field has a range in :meth:`nsc_limits`
    nsc_unread_fields: ClassVar[frozenset] = frozenset()

    def resolve_for_data(self, dataparser: Any) -> None:
        """Resolve ``auto`` in :attr:`scene_contraction` and :attr:`background_color` for the dataparser config a
        run uses (in place): Blender-layout data is a bounded object on white, everything else a capture."""
        from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

        bounded = dataparser is None or isinstance(dataparser, BlenderDataParserConfig)
        if self.scene_contraction == "auto":
            self.scene_contraction = "off" if bounded else "on"
        if self.background_color == "auto":
            self.background_color = "white" if bounded else "random"
        if self.alpha_threshold is None:
            self.alpha_threshold = 0.0 if bounded else 1e-2
        if self.train_samples_per_ray is None:
            self.train_samples_per_ray = self.bounded_samples_per_ray if bounded else self.capture_samples_per_ray
        if self.contraction_inner_radius is None and type(dataparser).__name__ == "InstantNGPDataParserConfig":
            self.contraction_inner_radius = 1.0

    def inner_box(self, scene_box: Tensor) -> Tensor:
        """``[2, 3]``: the uncontracted region for a dataset's ``scene_box [2, 3]`` (:attr:`contraction_inner_radius`).

        Raises:
            ValueError: a radius that is not positive and finite."""
        r = self.contraction_inner_radius
        if r is None:
            return scene_box
        if not (isinstance(r, (int, float)) and 0 < r < float("inf")):
            raise ValueError(f"contraction_inner_radius must be a positive number, got {r!r}")
        centre = scene_box.float().mean(dim=0)
        return torch.stack([centre - r, centre + r])

    @property
    def contracted(self) -> bool:
        """Whether the model contracts space (``scene_contraction == "on"``; ``auto`` unresolved reads as off)."""
        return self.scene_contraction == "on"

    @property
    def background(self) -> str:
        """The background colour in use (``auto`` unresolved reads as white)."""
        return "white" if self.background_color == "auto" else self.background_color


class NscModel(NscContract, PackedRenderer, Model, metaclass=abc.ABCMeta):
    """nerfstudio ``Model`` + the ``.nsc`` contract + shared occupancy, rendering, losses and metrics (module
    docstring). Outputs of ``get_outputs`` hold ``rgb [R, 3]``, ``accumulation [R, 1]`` and ``depth [R, 1]``."""

    config: NscModelConfig

    #: outputs copied into the training metrics when present (sample counts, LOD, ...)
    logged_outputs: Tuple[str, ...] = ("num_samples_marched", "num_samples", "num_samples_appearance", "lod")

    # --------------------------------------------------------------------------------------- shared modules
    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        self.world_box = self.scene_box
        """The dataset's scene box (what a file records); :attr:`scene_box` is the box the grids cover — the same, or
        with scene contraction the field box, twice the uncontracted region (:meth:`NscModelConfig.inner_box`)."""
        self._resolve_depth_range(self.kwargs.get("metadata") or {})
        if cfg.contracted:
            if not cfg.near_plane < cfg.far_plane:
                raise ValueError(f"near_plane {cfg.near_plane} must be below far_plane {cfg.far_plane}")
            self.scene_box = SceneBox(aabb=Contraction.field_aabb(cfg.inner_box(self.world_box.aabb)))
        self.occupancy = self.new_occupancy_grid()
        self.renderer_rgb = RGBRenderer(background_color=cfg.background)
        self.rgb_loss = MSELoss()
        self.image_metrics = ImageMetrics()
        self.collider = None
        self._step = 0
        self._max_steps: Optional[int] = None
        self.init_contract()
        self.viewer_cameras = None
        """Training cameras (nerfstudio ``Cameras``) a file carries so it opens without its dataset (the
        ``viewer.cameras`` section, :mod:`nscodec.io`); set by the pipeline, or from the decoded file."""
        self.viewer_default_view = 0
        """Index into :attr:`viewer_cameras` of the view a viewer opens on (a decoded file's ``default_view``)."""

    def _resolve_depth_range(self, metadata: Dict[str, Any]) -> None:
        """Set :attr:`NscModelConfig.near_plane` / ``far_plane`` left at None (in place, so the file records the values):
        from the dataparser's ``metadata`` keys of the same names where it measured them, else 0.05 and 1000.

        Raises:
            ValueError: a bound from the data that is not a positive finite number."""
        cfg = self.config
        for name, default in (("near_plane", DEFAULT_NEAR_PLANE), ("far_plane", DEFAULT_FAR_PLANE)):
            if getattr(cfg, name) is not None:
                continue
            value = metadata.get(name, default)
            if not (isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < float("inf")):
                raise ValueError(f"the dataparser's {name} must be a positive finite number, got {value!r}")
            setattr(cfg, name, float(value))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        key = prefix + "nsc_finalized"
        if key in missing_keys:  # a checkpoint from before the flag: not finalized (the buffer keeps its False)
            missing_keys.remove(key)


    def method_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """The method's own training callbacks, run between the shared ones (:meth:`get_training_callbacks`)."""
        return []


    # ------------------------------------------------------------------------------------------- callbacks
    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Shared callbacks around :meth:`method_training_callbacks`: before each step, track the step, drop the
        finalized mark and the level table, set camera visibility once; after it, the occupancy schedule and, at the
        last step, :meth:`finalize` (when ``finalize_at_last_step`` and the model is exportable)."""
        max_steps = attrs.trainer.config.max_num_iterations if attrs.trainer is not None else None

        def begin(step: int) -> None:
            self._step, self._max_steps = step, max_steps
            self.begin_training_step()  # this step changes the model
            if attrs.pipeline is not None:
                self.ensure_visibility(attrs.pipeline.datamanager.train_dataset.cameras)

        def end(step: int) -> None:
            if self.occupancy_update_due(step):
                self.update_occupancy()
            last = max_steps is not None and step == max_steps - 1
            if last and self.finalize_at_last_step and self.export_blocker() is None:
                self.finalize()

        every = dict(update_every_num_iters=1)
        return (
            [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], begin, **every)]
            + self.method_training_callbacks(attrs)
            + [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], end, **every)]
        )

    # ------------------------------------------------------------------------------------ losses & metrics
    def composite_background(self, comp: Tensor, acc: Tensor) -> Tensor:
        """Blend the composited colour ``[R, 3]`` (accumulation ``acc [R, 1]``) with the background colour.
        A random background is left to the loss while training (as nerfstudio does) and is black at eval."""
        bg = self.config.background
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
        """The distortion term, scaled by ``loss_coefficients``; methods add their rate terms."""
        return misc.scale_dict(self.rgb_loss_dict(outputs, batch), self.config.loss_coefficients)

    def get_image_metrics_and_images(self, outputs, batch) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """PSNR / SSIM (/ LPIPS) of a full image — over the pixels of ``batch["mask"]`` where the dataset has masks
        (nerfstudio's ``mask_path``; :class:`nscodec.core.metrics.ImageMetrics`) — and the ground-truth | render,
        accumulation and depth images."""
        image = self.renderer_rgb.blend_background(batch["image"].to(outputs["rgb"].device))
        rgb = outputs["rgb"]
        mask = batch.get("mask")
        metrics = self.image_metrics(torch.moveaxis(image, -1, 0)[None], torch.moveaxis(rgb, -1, 0)[None],
                                     None if mask is None else torch.moveaxis(mask, -1, 0)[None])
        images = {
            "img": torch.cat([image, rgb], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        return metrics, images
