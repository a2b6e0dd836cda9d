"""The model ↔ ``.nsc`` contract every nscodec method implements, and the base that builds what they share.

:class:`NscModel` is a nerfstudio ``Model`` (an abstract base: a method that leaves out part of the contract fails
at ``setup``). It builds what every method shares — the occupancy grid with camera-visibility culling and its update
schedule, the RGB renderer, the RGB loss, the metrics, the sample spacing with its warm-up — and declares the
contract with the file:

========================================  =====================================================================
``nsc_sections()``                        encode the model into sections (its compression); never mutates it
``load_nsc_sections(nsc)``                decode sections into an already-built model (a whole file or a prefix)
``finalize_for_storage()``                round the model in place to exactly what its file stores (idempotent)
``export_blocker()``                      why the model cannot be exported yet (None: it can)
``decoded_tensors()``                     what its decoder networks compute from the file (thread-count checks)
``supports_lod``, ``num_lods``            whether a file prefix decodes a coarser level, and how many levels
``set_lod(l)``, ``lod``, ``lod_bytes()``  render level ``l``; the level rendered; cumulative file bytes per level
========================================  =====================================================================

Export never mutates the live model: :meth:`NscModel.encode` finalizes a copy (:meth:`NscModel.finalized_copy`),
unless the model is already finalized — the last training step finalizes it once (``finalize_at_last_step``), and a
model decoded from a file is finalized by construction. Every decoder network runs under :meth:`NscModel.decoding`
(a fixed intra-op thread count, :mod:`nscodec.coding.determinism`), so a file decodes bit-identically everywhere.

One viewer control serves every level-of-detail method: a slider picking the rendered level and a text showing
that level's cumulative bytes (from the decoded file's level table, or from exporting a finalized copy).
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional, Tuple

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps, misc
from torch import Tensor

from nscodec.coding.container import NscFile, Section
from nscodec.coding.determinism import fixed_threads
from nscodec.coding.errors import NscError
from nscodec.metrics import ImageMetrics
from nscodec.render import OccupancyGrid, accumulate_along_rays, importance_resample_packed, render_weight_from_density
from nscodec.render.contraction import Contraction

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


def _copy_memo(model: torch.nn.Module) -> Dict[int, Any]:
    """``deepcopy`` memo for :meth:`NscModel.finalized_copy`: the copy shares the viewer controls (their handles hold
    the viewer's server, threads and locks, which cannot be copied), and tensors that are results of this step's
    autograd graph (e.g. decoded planes held as plain attributes) are copied detached — deepcopy refuses non-leaf
    tensors, and the finalized copy recomputes them anyway."""
    try:
        from nerfstudio.viewer.viewer_elements import ViewerElement
    except Exception:  # viewer extras missing: no elements to share
        ViewerElement = ()  # noqa: N806
    memo: Dict[int, Any] = {}
    for mod in model.modules():
        for v in vars(mod).values():
            if ViewerElement and isinstance(v, ViewerElement):
                memo[id(v)] = v
            elif isinstance(v, Tensor) and v.grad_fn is not None:
                memo[id(v)] = v.detach().clone()
    return memo


class NscModel(Model, metaclass=abc.ABCMeta):
    """nerfstudio ``Model`` + the ``.nsc`` contract + shared occupancy, rendering, losses and metrics (module
    docstring). Outputs of ``get_outputs`` hold ``rgb [R, 3]``, ``accumulation [R, 1]`` and ``depth [R, 1]``."""

    config: NscModelConfig

    #: a file prefix ending on a level boundary decodes a coarser level (see :mod:`nscodec.lod`)
    supports_lod: ClassVar[bool] = False
    #: the last training step rounds the model in place to its file (False: a post-hoc codec, chosen at export)
    finalize_at_last_step: ClassVar[bool] = True
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
        self.register_buffer("nsc_finalized", torch.zeros((), dtype=torch.bool))
        self._step = 0
        self._max_steps: Optional[int] = None
        self._lod_bytes: Optional[List[int]] = None
        self._lod_bytes_from_file = False
        self._stored_sections: Optional[List[Section]] = None  # a round-trip finalize's sections: the file itself
        self.decoded_lod = self.num_lods - 1
        """Highest level of detail whose data the model holds (less after decoding a file prefix)."""
        self._lod = self.num_lods - 1
        self.export_meta: Optional[Dict[str, Any]] = None
        """Metadata ``ns-export compressed`` records for this model (set by :class:`nscodec.pipeline.NscPipeline`);
        :meth:`lod_bytes` measures a file with it, so its byte counts are those of the exported file."""
        self.viewer_cameras = None
        """Training cameras (nerfstudio ``Cameras``) written to the file's ``viewer.cameras`` section so it opens
        without its dataset (:mod:`nscodec.cameras`); set by the pipeline, or from the decoded file."""
        self.viewer_default_view = 0
        """Index into :attr:`viewer_cameras` of the view a viewer opens on (a decoded file's ``default_view``)."""
        self.viewer_lod = self.viewer_lod_bytes = None
        if self.supports_lod and self.num_lods > 1:
            self._make_lod_controls()

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

    # ------------------------------------------------------------------------------- contract: the subclass
    @abc.abstractmethod
    def base_step_size(self) -> float:
        """Sample spacing along rays once the occupancy grid is ready (world units)."""

    @abc.abstractmethod
    def occupancy_density(self, positions: Tensor) -> Tensor:
        """Density ``[S]`` (1 / world unit) at field-space ``positions [S, 3]`` (world positions unless the model
        contracts space) that occupancy updates threshold."""

    @abc.abstractmethod
    def nsc_sections(self) -> List[Section]:
        """The model's ``.nsc`` sections (levels of detail coarse to fine). Called on a finalized model; must not
        change it. Raises NscError when it cannot be encoded."""

    @abc.abstractmethod
    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Decode ``nsc`` (a whole file or, for level-of-detail codecs, a prefix) into this freshly built model.
        Sets :attr:`decoded_lod` where it decodes fewer levels. Raises NscFormatError on missing, extra or
        malformed sections."""

    def finalize_for_storage(self) -> None:
        """Round the model in place to exactly what its file stores, so a file written afterwards decodes to this
        very model (idempotent). Default: a round trip through the codec (encode, decode into ``self``), right for a
        post-hoc codec; its sections are kept and are the file (re-encoding a decoded post-hoc model need not give back
        the same bits). Methods that quantize in training override it with their in-place rounding."""
        from nscodec.coding.container import encode_nsc, read_nsc
        from nscodec.io import codec_name_of

        sections = self.nsc_sections()
        self.load_nsc_sections(read_nsc(encode_nsc(codec_name_of(self), {}, sections)))
        self._stored_sections = sections

    def export_blocker(self) -> Optional[str]:
        """Why the model cannot be exported (finalized) yet, e.g. still in a pretraining stage; None when it can."""
        return None

    def decoded_tensors(self) -> Dict[str, Tensor]:
        """The tensors the model's decoder networks compute from its stored values (planes, tables), evaluated as
        rendering uses them. Empty for codecs without a decoder network."""
        return {}

    def method_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """The method's own training callbacks, run between the shared ones (:meth:`get_training_callbacks`)."""
        return []

    def occupancy_bound(self) -> Optional[Tensor]:
        """``[G, G, G]`` bool: the cells an occupancy update may mark occupied (None: any visible cell)."""
        return None

    def first_occupancy_update(self) -> int:
        """Training step of the first occupancy update (``occupancy_warmup``)."""
        return self.config.occupancy_warmup

    def on_lod_changed(self) -> None:
        """Hook: the rendered level (:attr:`lod`) changed."""

    # -------------------------------------------------------------------------------- finalize and encode
    @property
    def finalized(self) -> bool:
        """True when the model holds exactly what its file stores (saved in checkpoints)."""
        return bool(self.nsc_finalized)

    @property
    def decoded_from_file(self) -> bool:
        """True for a model built by :func:`nscodec.io.load_model` (its level table and cameras are the file's)."""
        return self._lod_bytes_from_file

    @torch.no_grad()
    def finalize(self) -> None:
        """:meth:`finalize_for_storage` in place and mark the model finalized.

        Raises:
            NscError: :meth:`export_blocker` names a reason the model cannot be stored yet.
        """
        blocker = self.export_blocker()
        if blocker is not None:
            raise NscError(blocker)
        self._stored_sections = None
        self.finalize_for_storage()
        self.nsc_finalized.fill_(True)

    def finalized_copy(self) -> "NscModel":
        """A finalized deep copy (``self`` itself when already finalized); the live model, its parameters, buffers and
        the global RNG are left untouched. Viewer controls are shared, not copied.

        Raises:
            NscError: as :meth:`finalize`.
        """
        if self.finalized:
            return self
        blocker = self.export_blocker()
        if blocker is not None:
            raise NscError(blocker)
        with _preserved_rng(self):
            clone = copy.deepcopy(self, _copy_memo(self))
            clone.finalize()
        return clone

    def encode(self) -> List[Section]:
        """The sections of this model's file, from a finalized copy unless the model is finalized (never mutates
        the model nor consumes its RNG).

        Raises:
            NscError: the model cannot be exported yet, or its sections cannot be encoded.
        """
        model = self.finalized_copy()
        if model._stored_sections is not None:
            return list(model._stored_sections)
        with _preserved_rng(self), torch.no_grad():
            return model.nsc_sections()

    def decoding(self):
        """Context manager every decoder network runs under: a fixed intra-op thread count, so the decoded tensors
        are bit-identical on the sender's and every receiver's machine."""
        return fixed_threads()

    def on_decoded(self, nsc: NscFile) -> None:
        """Called by :func:`nscodec.io.load_model` after :meth:`load_nsc_sections`: the model is the file (finalized),
        its level table, viewer cameras and sections (what exporting it again writes) come from the file, and it renders
        the finest level it decoded.

        Raises:
            NscFormatError: a malformed ``viewer.cameras`` section."""
        from nscodec.cameras import CAMERAS_SECTION, decode_cameras
        from nscodec.lod import lod_table

        if CAMERAS_SECTION in nsc.sections:
            self.viewer_cameras, self.viewer_default_view = decode_cameras(nsc.sections[CAMERAS_SECTION])
        self.nsc_finalized.fill_(True)
        # the file's sections are this model's: exporting it again writes them as they are (re-encoding would need
        # what a file does not carry, e.g. the trained entropy models behind its CDF tables)
        self._stored_sections = [sec for name, sec in nsc.sections.items() if name != CAMERAS_SECTION]
        self._lod_bytes = [int(r["bytes"]) for r in lod_table(nsc)]
        self._lod_bytes_from_file = True
        self.set_lod(self.decoded_lod)

    # --------------------------------------------------------------------------------------- levels of detail
    @property
    def num_lods(self) -> int:
        """Number of levels of detail (1 for codecs without them)."""
        return 1

    @property
    def lod(self) -> int:
        """The rendered level of detail (levels ``0..lod`` are used)."""
        return self._lod

    def set_lod(self, lod: int) -> None:
        """Render at level of detail ``lod`` (clamped to :attr:`decoded_lod`, the finest level the model holds).

        Raises:
            ValueError: ``lod`` outside ``[0, num_lods)``.
        """
        if not 0 <= int(lod) < self.num_lods:
            raise ValueError(f"level of detail must be in [0, {self.num_lods - 1}], got {lod}")
        self._lod = min(int(lod), self.decoded_lod)
        self.on_lod_changed()
        if self.viewer_lod_bytes is not None:
            self.viewer_lod_bytes.value = self._lod_label(self._lod)

    def lod_bytes(self) -> List[int]:
        """Cumulative ``.nsc`` bytes (preamble and header included) needed to decode each level of detail: the
        decoded file's level table, else that of a file exported from a finalized copy (cached until the next
        training step).

        Raises:
            NscError: the model cannot be exported yet.
        """
        if self._lod_bytes is None:
            import tempfile
            from pathlib import Path

            from nscodec.coding.container import read_nsc
            from nscodec.io import export_model
            from nscodec.lod import lod_table

            with tempfile.TemporaryDirectory(prefix="nscodec-lod-") as tmp:
                export_model(self, Path(tmp) / "m.nsc", meta=self.export_meta)
                self._lod_bytes = [int(r["bytes"]) for r in lod_table(read_nsc(Path(tmp) / "m.nsc"))]
        return self._lod_bytes

    def _lod_label(self, lod: int) -> str:
        top = self.num_lods - 1
        if self._lod_bytes is None:
            return f"level {lod}/{top} (bytes: exported on first move)"
        size = self._lod_bytes[min(lod, len(self._lod_bytes) - 1)]
        return f"level {lod}/{top}: {size:,} bytes"

    def _make_lod_controls(self) -> None:
        """The viewer's level-of-detail slider and the read-only text with that level's cumulative bytes."""
        try:
            from nerfstudio.viewer.viewer_elements import ViewerSlider, ViewerText
        except Exception:  # viewer extras missing: the model works without the controls
            return
        top = self.num_lods - 1

        def on_change(slider) -> None:
            lod = int(slider.value)
            try:
                self.lod_bytes()
            except NscError:  # nothing exportable yet: the label says so
                pass
            self.set_lod(lod)

        self.viewer_lod = ViewerSlider("Level of detail", top, 0, top, step=1, cb_hook=on_change,
                                       hint="render with levels 0..l of the file (a file prefix decodes them)")
        self.viewer_lod_bytes = ViewerText("Level-of-detail bytes", self._lod_label(top), disabled=True,
                                           hint="cumulative .nsc bytes needed to decode this level")

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

    # ------------------------------------------------------------------------------------------- callbacks
    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Shared callbacks around :meth:`method_training_callbacks`: before each step, track the step, drop the
        finalized mark and the level table, set camera visibility once; after it, the occupancy schedule and, at the
        last step, :meth:`finalize` (when ``finalize_at_last_step`` and the model is exportable)."""
        max_steps = attrs.trainer.config.max_num_iterations if attrs.trainer is not None else None

        def begin(step: int) -> None:
            self._step, self._max_steps = step, max_steps
            if self.finalized:
                self.nsc_finalized.fill_(False)  # this step changes the model
                self._stored_sections = None
            if not self._lod_bytes_from_file:
                self._lod_bytes = None
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
        (nerfstudio's ``mask_path``; :class:`nscodec.metrics.ImageMetrics`) — and the ground-truth | render,
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


class _preserved_rng:
    """Context manager: the global torch RNG (CPU and the model's CUDA device) is restored on exit, so exporting or
    evaluating a copy never changes the random numbers training draws next."""

    def __init__(self, model: torch.nn.Module) -> None:
        dev = next((t.device for t in model.buffers()), torch.device("cpu"))
        self._devices = [dev.index or 0] if dev.type == "cuda" else []

    def __enter__(self):
        self._ctx = torch.random.fork_rng(devices=self._devices)
        return self._ctx.__enter__()

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
