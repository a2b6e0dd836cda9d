"""``vqad``: vector-quantized auto-decoder radiance field with streaming levels of detail.

Takikawa et al. 2022, "Variable Bitrate Neural Fields" (VQ-AD). A multi-level vertex grid
(:class:`~nscodec.vqad.grid.MultiLevelVQGrid`) stores per vertex a b-bit index into a per-level codebook;
training learns the indices through softened logits with a straight-through softmax (Sec. 4.3, Eqs. 8–9).
Features of levels ``0..lod`` are summed and decoded by a small MLP; one LOD is sampled per batch, each finer
level twice as likely (supplement 7.3).

Rendering reuses :mod:`nscodec.render` (occupancy grid, packed samples, early termination) exactly as
``nscodec-tensorf`` does.

Deviations from the paper, each for CPU training without depth maps:

* dense lattices per level instead of NGLOD's sparse octree (built from depth maps in the paper); the file
  stores only vertices around occupied cells (see :func:`~nscodec.vqad.grid.vertex_mask`);
* density depends on position only (density MLP → ``sigma`` + geometry feature, colour MLP on it + encoded view
  direction) so the occupancy grid can be computed without a direction; the paper feeds one MLP
  ``[feature, PE(dir)] → (sigma, rgb)``;
* ``trunc_exp`` density activation (nerfstudio / Instant-NGP) instead of ReLU.

``.nsc`` layout (coarse to fine, so any prefix ending on a level boundary decodes that LOD — see
:mod:`nscodec.lod`): MLP weights (float16) and the occupancy grid (needed by every LOD), then per level
``l`` (section meta ``{"lod": l}``) its codebook (float16) and its indices, entropy-coded with a histogram
table (``index_coding="entropy"``) or bit-packed raw as in the paper (``"raw"``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import NeRFEncoding
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.renderers import RGBRenderer
from torch import Tensor, nn
from torch.nn import Parameter

import nscodec.compat  # noqa: F401  (checkpoint globals for torch.load(weights_only=True))
from nscodec.model_base import NscModel, OccupancyScheduleConfig
from nscodec.coding.container import NscFile, Section
from nscodec.metrics import ImageMetrics
from nscodec.render import OccupancyGrid
from nscodec.tensorf.model import dense_section_names, dense_sections, load_dense_sections, load_occupancy_section, occupancy_section
from nscodec.vqad.grid import MultiLevelVQGrid, kmeans, lod_probabilities, vertex_mask


@dataclass
class VQADModelConfig(OccupancyScheduleConfig):
    """Config of :class:`VQADModel` (CPU-sized defaults for 200² Blender scenes)."""

    _target: Type = field(default_factory=lambda: VQADModel)
    grid_mode: Literal["vq", "float", "hash"] = "vq"
    """``vq``: learned indices (the method); ``float``: the uncompressed grid of the same configuration (for the
    post-hoc k-means baseline); ``hash``: fixed spatial-hash indices into ``2^hash_bits`` codewords."""
    bits: int = 4
    """b: index bits per vertex (codebook of 2^b rows per level); the paper uses 1, 2, 4, 6."""
    hash_bits: int = 12
    """Codebook rows per level ``2^hash_bits`` in ``hash`` mode."""
    base_resolution: int = 16
    """Cells per axis of the coarsest level; level l has ``base_resolution * 2^l``."""
    num_levels: int = 4
    """Levels of detail."""
    feature_dim: int = 16
    """k: feature size (paper: 16)."""
    hidden_dim: int = 64
    """Width of the density and colour MLPs (one hidden layer each)."""
    geo_feat_dim: int = 15
    """Geometry feature passed from the density MLP to the colour MLP."""
    init_std: float = 0.01
    """Std of the normal init of features / codebooks (paper Sec. 7.2: 0.01)."""
    logit_init_std: float = 1.0
    """Std of the normal init of the index logits C."""
    lod_sampling: Literal["pyramid", "finest"] = "pyramid"
    """``pyramid``: one LOD per batch, p_l ∝ 2^l (supplement 7.3); ``finest``: always the finest."""
    alpha_threshold: float = 1e-4
    """While training, samples with smaller alpha get no gradient pass (they barely affect the render)."""
    index_coding: Literal["entropy", "raw"] = "entropy"
    """``.nsc`` index storage: ANS with a per-level histogram table, or bit-packed b-bit integers (paper)."""
    background_color: Literal["random", "black", "white"] = "white"
    enable_collider: bool = False
    eval_num_rays_per_chunk: int = 1 << 14

    def resolutions(self) -> List[int]:
        """Cells per axis of every level, coarse to fine."""
        return [self.base_resolution << level for level in range(self.num_levels)]


class VQADModel(NscModel):
    """VQ-AD radiance field; see the module docstring. Outputs ``rgb [R,3]``, ``accumulation [R,1]``,
    ``depth [R,1]`` (world units) at the current LOD (``render_lod``; training samples one per batch)."""

    config: VQADModelConfig
    supports_lod = True
    """A prefix of the ``.nsc`` ending on a level boundary decodes (see :mod:`nscodec.lod`)."""

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        if cfg.grid_mode == "vq" and cfg.bits not in (1, 2, 3, 4, 5, 6, 7, 8):
            raise ValueError(f"bits must be in 1..8, got {cfg.bits}")
        self.grid = MultiLevelVQGrid(
            cfg.resolutions(), cfg.feature_dim, cfg.grid_mode, cfg.bits, cfg.hash_bits, cfg.init_std, cfg.logit_init_std
        )
        self.density_mlp = nn.Sequential(
            nn.Linear(cfg.feature_dim, cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, 1 + cfg.geo_feat_dim)
        )
        self.direction_encoding = NeRFEncoding(in_dim=3, num_frequencies=4, min_freq_exp=0, max_freq_exp=3, include_input=True)
        self.color_mlp = nn.Sequential(
            nn.Linear(cfg.geo_feat_dim + self.direction_encoding.get_out_dim(), cfg.hidden_dim), nn.ReLU(), nn.Linear(cfg.hidden_dim, 3)
        )
        self.occupancy = OccupancyGrid(self.scene_box.aabb.reshape(6), cfg.occupancy_resolution)
        self.register_buffer("lod_probs", lod_probabilities(cfg.num_levels).float(), persistent=False)
        self.renderer_rgb = RGBRenderer(background_color=cfg.background_color)
        self.rgb_loss = MSELoss()
        self.image_metrics = ImageMetrics()
        self.collider = None
        self.render_lod = cfg.num_levels - 1
        self.decoded_lod = cfg.num_levels - 1  # highest LOD whose data the model holds (less after a prefix decode)
        self._lod_bytes: Optional[List[int]] = None
        self._placeholder = Parameter(torch.zeros(1))
        self.lod_slider = self._make_lod_slider()

    # --------------------------------------------------------------------------------------------- LOD
    def _make_lod_slider(self):
        """nerfstudio viewer slider choosing the rendered LOD; its hint lists cumulative .nsc bytes per LOD."""
        try:
            from nerfstudio.viewer.viewer_elements import ViewerSlider
        except Exception:  # pragma: no cover - viewer deps missing
            return None
        top = self.config.num_levels - 1
        return ViewerSlider("VQAD LOD (coarse 0 → fine)", top, 0, top, step=1, cb_hook=self._on_lod_slider,
                            hint="level of detail; the label shows the cumulative .nsc bytes of that LOD prefix")

    def _on_lod_slider(self, element) -> None:
        self.set_render_lod(int(element.value))
        try:
            nbytes = self.lod_bytes()[self.render_lod]
            label = f"VQAD LOD {self.render_lod} ({nbytes / 1024:.1f} kB)"
            if getattr(element, "gui_handle", None) is not None:
                element.gui_handle.label = label
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.print(f"[vqad] rendering {label}")
        except Exception:  # the label is a nicety; rendering the LOD is what matters
            pass

    def set_render_lod(self, lod: int) -> None:
        """Render levels ``0..lod`` (clamped to what the model holds). Raises ValueError if ``lod < 0``."""
        if lod < 0:
            raise ValueError(f"lod must be >= 0, got {lod}")
        self.render_lod = min(int(lod), self.decoded_lod)

    def lod_bytes(self) -> List[int]:
        """Cumulative ``.nsc`` bytes needed to decode each LOD (exported to a temporary file and measured with
        :func:`nscodec.lod.lod_table` unless this model was decoded from a file)."""
        if self._lod_bytes is None:
            from nscodec.io import export_model
            from nscodec.lod import lod_table

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "m.nsc"
                export_model(self, path)
                from nscodec.coding.container import read_nsc

                self._lod_bytes = [int(r["bytes"]) for r in lod_table(read_nsc(path))]
        return self._lod_bytes

    def sample_lod(self) -> int:
        """LOD of a training batch: p_l ∝ 2^l (``pyramid``) or the finest."""
        if self.config.lod_sampling == "finest":
            return self.config.num_levels - 1
        return int(torch.multinomial(self.lod_probs, 1).item())

    # ------------------------------------------------------------------------------------------ field
    def normalize(self, positions: Tensor) -> Tensor:
        """World ``[S, 3]`` → ``[0, 1]^3`` box coordinates."""
        aabb = self.scene_box.aabb.to(positions.device)
        return (positions - aabb[0]) / (aabb[1] - aabb[0])

    def _density_head(self, feats: Tensor) -> Tuple[Tensor, Tensor]:
        h = self.density_mlp(feats)
        return trunc_exp(h[:, 0] - 1.0), h[:, 1:]

    def density_geo(self, positions: Tensor, lod: int) -> Tuple[Tensor, Tensor]:
        """``sigma [S]`` (1 / world unit) and geometry features ``[S, geo]`` at world ``positions [S, 3]``."""
        if positions.shape[0] == 0:
            return positions.new_zeros((0,)), positions.new_zeros((0, self.config.geo_feat_dim))
        return self._density_head(self.grid(self.normalize(positions), lod))

    def density_at(self, positions: Tensor, lod: Optional[int] = None) -> Tensor:
        """``sigma [S]`` at world ``positions [S, 3]`` and LOD ``lod`` (default: the rendered one)."""
        return self.density_geo(positions, self.render_lod if lod is None else lod)[0]

    def density_max_lods(self, positions: Tensor) -> Tensor:
        """``max_l sigma_l [S]`` over all LODs (the occupancy grid must hold every LOD's geometry)."""
        feats = self.grid.all_lods(self.normalize(positions))
        return torch.stack([self._density_head(f)[0] for f in feats], dim=0).amax(dim=0)

    def rgb_from_geo(self, geo: Tensor, directions: Tensor) -> Tensor:
        """Colour ``[S, 3]`` in [0, 1] from geometry features and unit ``directions [S, 3]``."""
        if geo.shape[0] == 0:
            return geo.new_zeros((0, 3))
        return torch.sigmoid(self.color_mlp(torch.cat([geo, self.direction_encoding(directions)], dim=-1)))

    # --------------------------------------------------------------------------------------- schedule
    @property
    def step_size(self) -> float:
        """Sample spacing (world units) = step_ratio × cell size of the finest level."""
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        step = self.config.step_ratio * extent / self.grid.resolutions[-1]
        if not bool(self.occupancy.num_updates.item() > 0):
            step *= self.config.warmup_step_multiplier
        return step

    def update_occupancy(self) -> float:
        """Refresh the occupancy grid from the max density over LODs; returns the occupied fraction."""
        self._lod_bytes = None
        return self.occupancy.update(self.density_max_lods, self.step_size, self.config.occupancy_threshold)

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        max_steps = attrs.trainer.config.max_num_iterations if attrs.trainer is not None else None

        def occupancy(step: int) -> None:
            if self.occupancy_update_due(step):
                self.update_occupancy()

        def visibility(step: int) -> None:
            if attrs.pipeline is not None:
                self.ensure_visibility(attrs.pipeline.datamanager.train_dataset.cameras)

        def finalize(step: int) -> None:
            self._lod_bytes = None
            if max_steps is not None and step == max_steps - 1:
                self.round_stored_to_float16()

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], visibility, update_every_num_iters=1),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], occupancy, update_every_num_iters=1),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], finalize, update_every_num_iters=1),
        ]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """``grid``: per-vertex tables (logits C or float features; sparse gradients → SparseAdam),
        ``codebooks``: D per level, ``fields``: the MLPs. Empty groups get a gradient-less placeholder."""
        return {
            "grid": list(self.grid.tables) or [self._placeholder],
            "codebooks": list(self.grid.codebooks) or [self._placeholder],
            "fields": list(self.density_mlp.parameters()) + list(self.color_mlp.parameters()),
        }

    # -------------------------------------------------------------------------------------- rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        lod = self.sample_lod() if self.training else min(self.render_lod, self.decoded_lod)
        alpha_min = self.config.alpha_threshold
        out = self.render_packed(ray_bundle, lambda p: self.density_geo(p, lod), self.rgb_from_geo,
                                 density_only=lambda p: self.density_at(p, lod), sample_mask=lambda sigma, alpha: alpha > alpha_min)
        if self.training:
            out["lod"] = torch.tensor(float(lod))
        return out

    # composite_background, get_metrics_dict (psnr + lod/sample counts), get_loss_dict (rgb MSE) and
    # get_image_metrics_and_images come from NscModel.

    # -------------------------------------------------------------------------------------- .nsc codec
    def dense_modules(self) -> Dict[str, nn.Module]:
        """MLPs stored as float16 (needed by every LOD)."""
        return {"density_mlp": self.density_mlp, "color_mlp": self.color_mlp}

    @torch.no_grad()
    def round_stored_to_float16(self) -> None:
        """Round every float16-stored tensor (MLPs, codebooks, float features) to float16 values in place, so the
        ``.nsc`` is lossless for them and a decoded file renders bit-identically."""
        params = [p for m in self.dense_modules().values() for p in m.parameters()] + list(self.grid.codebooks)
        if self.config.grid_mode == "float":
            params += list(self.grid.tables)
        for p in params:
            p.copy_(p.half().float())

    def level_masks(self) -> List[Tensor]:
        """``[(N_l+1)^3]`` bool per level: vertices stored in the file (around occupied cells)."""
        return [vertex_mask(self.occupancy.occupied.cpu(), res) for res in self.grid.resolutions]

    def nsc_sections(self) -> List[Section]:
        """MLPs (float16) + occupancy (lod-less, needed by all LODs), then per level, coarse to fine, its codebook
        (float16) and its stored vertices: indices (``vq``; ANS + histogram or bit-packed), float16 features
        (``float``), nothing (``hash``)."""
        from nscodec.coding.posthoc import histogram_table
        from nscodec.coding.tensor_codec import entropy_section, raw_section

        cfg = self.config
        self.round_stored_to_float16()
        sections = dense_sections(self.dense_modules()) + [occupancy_section(self.occupancy)]
        for level, mask in enumerate(self.level_masks()):
            meta = {"lod": level, "resolution": self.grid.resolutions[level], "count": int(mask.sum())}
            if cfg.grid_mode in ("vq", "hash"):
                sections.append(raw_section(f"level{level}.codebook", self.grid.codebooks[level].detach().cpu(), "float16", meta=meta))
            if cfg.grid_mode == "vq":
                sym = self.grid.hard_indices(level).cpu()[mask].numpy().astype(np.int32)
                if cfg.index_coding == "entropy" and sym.size:
                    sections.append(entropy_section(f"level{level}.indices", sym[None, :], histogram_table(sym), meta=meta))
                else:
                    sections.append(raw_section(f"level{level}.indices", pack_bits(sym, cfg.bits), "uint8", meta={**meta, "packed": True}))
            elif cfg.grid_mode == "float":
                feats = self.grid.tables[level].detach().cpu()[mask]
                sections.append(raw_section(f"level{level}.features", feats, "float16", meta=meta))
        return sections

    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Inverse of :meth:`nsc_sections` for every LOD present in ``nsc`` (a whole file or a prefix); renders
        the finest LOD present. Raises NscFormatError on missing or malformed sections."""
        from nscodec.coding.errors import NscFormatError
        from nscodec.coding.tensor_codec import decode_section
        from nscodec.lod import available_lod

        cfg = self.config
        lod = min(available_lod(nsc), cfg.num_levels - 1)
        dense = self.dense_modules()
        per_level = {"vq": ["codebook", "indices"], "float": ["features"], "hash": ["codebook"]}[cfg.grid_mode]
        nsc.require(dense_section_names(dense) + ["occupancy"] + [f"level{lv}.{p}" for lv in range(lod + 1) for p in per_level],
                    optional=[f"level{lv}.{p}" for lv in range(cfg.num_levels) for p in per_level])
        load_dense_sections(dense, nsc)
        load_occupancy_section(self.occupancy, nsc)
        masks = self.level_masks()
        with torch.no_grad():
            for level in range(lod + 1):
                mask = masks[level]
                n = int(mask.sum())
                if cfg.grid_mode in ("vq", "hash"):
                    cb = decode_section(nsc.sections[f"level{level}.codebook"])
                    if tuple(cb.shape) != tuple(self.grid.codebooks[level].shape):
                        raise NscFormatError(f"section 'level{level}.codebook': shape {tuple(cb.shape)}, expected {tuple(self.grid.codebooks[level].shape)}")
                    cb = torch.from_numpy(cb.astype(np.float32))
                if cfg.grid_mode == "vq":
                    sec = nsc.sections[f"level{level}.indices"]
                    raw = decode_section(sec)
                    sym = unpack_bits(raw, cfg.bits, n) if sec.meta.get("packed") else raw.reshape(-1)
                    if sym.size != n or (n and (sym.min() < 0 or sym.max() >= 1 << cfg.bits)):
                        raise NscFormatError(f"section 'level{level}.indices': {sym.size} indices for {n} stored vertices or out of range")
                    idx = torch.zeros(self.grid.num_vertices(level), dtype=torch.long)
                    idx[mask] = torch.from_numpy(sym.astype(np.int64))
                    self.grid.set_indices(level, idx, cb)
                elif cfg.grid_mode == "float":
                    feats = decode_section(nsc.sections[f"level{level}.features"])
                    if tuple(feats.shape) != (n, cfg.feature_dim):
                        raise NscFormatError(f"section 'level{level}.features': shape {tuple(feats.shape)}, expected {(n, cfg.feature_dim)}")
                    table = self.grid.tables[level]
                    table.zero_()
                    table[mask] = torch.from_numpy(feats.astype(np.float32))
                else:
                    self.grid.codebooks[level].copy_(cb)
        self.decoded_lod = lod
        self.render_lod = lod
        try:
            from nscodec.lod import lod_table

            self._lod_bytes = [int(r["bytes"]) for r in lod_table(nsc)]
        except Exception:
            self._lod_bytes = None

    def size_report(self) -> Dict[str, Any]:
        """Per-level byte accounting of the export: stored vertices, codebook bytes (float16), entropy-coded
        index bytes (as exported with ``index_coding="entropy"``) and raw ``ceil(n·b/8)`` index bytes."""
        from nscodec.coding.posthoc import histogram_table
        from nscodec.coding.tensor_codec import entropy_section

        rows = []
        for level, mask in enumerate(self.level_masks()):
            n = int(mask.sum())
            row: Dict[str, Any] = {"level": level, "resolution": self.grid.resolutions[level], "stored_vertices": n}
            if self.config.grid_mode in ("vq", "hash"):
                row["codebook_bytes"] = int(self.grid.codebooks[level].numel() * 2)
            if self.config.grid_mode == "vq":
                sym = self.grid.hard_indices(level).cpu()[mask].numpy().astype(np.int32)
                row["index_bytes_raw"] = (n * self.config.bits + 7) // 8
                row["index_bytes_entropy"] = len(entropy_section("x", sym[None, :], histogram_table(sym)).payload) if n else 0
                hist = np.bincount(sym, minlength=1 << self.config.bits) / max(n, 1)
                row["index_entropy_bits"] = float(-(hist[hist > 0] * np.log2(hist[hist > 0])).sum())
            if self.config.grid_mode == "float":
                row["feature_bytes_fp16"] = n * self.config.feature_dim * 2
            rows.append(row)
        mlp = sum(p.numel() * 2 for m in self.dense_modules().values() for p in m.parameters())
        return {"levels": rows, "mlp_bytes_fp16": int(mlp)}


def pack_bits(values: np.ndarray, bits: int) -> np.ndarray:
    """Bit-pack ``values [n]`` (ints in ``[0, 2^bits)``) MSB-first into ``ceil(n·bits/8)`` uint8."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    planes = (v[:, None] >> np.arange(bits - 1, -1, -1)) & 1
    return np.packbits(planes.astype(np.uint8).reshape(-1))


def unpack_bits(packed: np.ndarray, bits: int, n: int) -> np.ndarray:
    """Inverse of :func:`pack_bits` → ``[n]`` int64. Raises NscFormatError if ``packed`` is too short."""
    from nscodec.coding.errors import NscFormatError

    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8).reshape(-1))
    if flat.size < n * bits:
        raise NscFormatError(f"packed indices: {flat.size} bits for {n} x {bits}-bit values")
    planes = flat[: n * bits].reshape(n, bits).astype(np.int64)
    return planes @ (1 << np.arange(bits - 1, -1, -1))


@torch.no_grad()
def posthoc_kmeans_model(float_model: VQADModel, bits: int, iters: int = 30, seed: int = 0) -> VQADModel:
    """The post-hoc kmVQ baseline (VQ-AD Sec. 5.2, Table 2): k-means the stored features of every level of a
    trained ``grid_mode="float"`` model into ``2^bits`` codewords and return the equivalent ``vq`` model
    (same MLPs and occupancy; exportable, evaluable).

    Raises:
        ValueError: ``float_model`` is not a float grid.
    """
    if float_model.config.grid_mode != "float":
        raise ValueError(f"posthoc_kmeans_model needs a float grid, got {float_model.config.grid_mode!r}")
    cfg = dataclasses.replace(float_model.config, grid_mode="vq", bits=bits)
    vq = cfg.setup(scene_box=float_model.scene_box, num_train_data=float_model.num_train_data, metadata={})
    vq.density_mlp.load_state_dict(float_model.density_mlp.state_dict())
    vq.color_mlp.load_state_dict(float_model.color_mlp.state_dict())
    vq.occupancy.load_state_dict(float_model.occupancy.state_dict())
    for level, mask in enumerate(float_model.level_masks()):
        feats = float_model.grid.tables[level].detach().cpu()[mask]
        cents, assign = kmeans(feats, 1 << bits, iters=iters, seed=seed + level)
        idx = torch.zeros(vq.grid.num_vertices(level), dtype=torch.long)
        idx[mask] = assign
        vq.grid.set_indices(level, idx, cents.half().float())
    return vq.eval()
