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
:mod:`nscodec.coding.lod`): MLP weights (float16) and the occupancy grid (needed by every LOD), then per level
``l`` (section meta ``{"lod": l}``) its codebook (float16) and its indices, entropy-coded with a histogram
table (``index_coding="entropy"``) or bit-packed raw as in the paper (``"raw"``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import NeRFEncoding
from torch import Tensor, nn
from torch.nn import Parameter

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation

import nscodec.compat  # noqa: F401  (checkpoint globals for torch.load(weights_only=True))
from nscodec.coding.container import NscFile, Section
from nscodec.errors import NscFormatError
from nscodec.coding.posthoc import kmeans_quantize
from nscodec.coding.sections import dense_section_names, dense_sections, load_dense_sections, load_occupancy_section, occupancy_section
from nscodec.core.model_base import NscModel, NscModelConfig
from nscodec.vqad.grid import MultiLevelVQGrid, lod_probabilities, vertex_mask


@dataclass
class VQADModelConfig(NscModelConfig):
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
    warmup_step_multiplier: float = 8.0
    """Samples 8× sparser until the first occupancy update (shared default 4×, shacira 8×): the untrained density is a
    fog every sample of every ray passes."""
    occupancy_update_every: int = 100
    """Occupancy-grid refresh period before ``occupancy_fast_until`` (shared default 50): a refresh evaluates every
    level of detail on the whole (G+1)^3 corner lattice (docs/benchmarks.md, "Grid core, stop 29")."""
    occupancy_update_every_late: int = 400
    """Refresh period after ``occupancy_fast_until`` (shared default 200), for the same reason."""
    #: bounded scenes: rays with more than 48 samples past the first pass get 48 importance-resampled ones; it binds
    #: in the first steps, while the untrained density fills the box (a fog each ray crosses with ~100 samples)
    bounded_samples_per_ray: ClassVar[int] = 48

    def resolutions(self) -> List[int]:
        """Cells per axis of every level, coarse to fine."""
        return [self.base_resolution << level for level in range(self.num_levels)]

    def nsc_limits(self) -> Dict[str, Tuple[float, float]]:
        return {**super().nsc_limits(), "bits": (1, 8), "hash_bits": (1, 24), "base_resolution": (1, 512),
                "num_levels": (1, 8), "feature_dim": (1, 256), "hidden_dim": (1, 1024), "geo_feat_dim": (1, 256)}

    #: training-only fields: initialisation scales
    nsc_unread_fields: ClassVar[frozenset] = frozenset({"init_std", "logit_init_std"})

    def nsc_decode_bytes(self) -> Dict[str, int]:
        """On top of the shared parts: the grid tables (index logits, features or nothing per vertex), the codebooks
        and the MLPs."""
        verts = sum((r + 1) ** 3 for r in self.resolutions())
        per_vertex = {"vq": 1 << int(self.bits), "float": int(self.feature_dim)}.get(self.grid_mode, 0)
        rows = {"vq": 1 << int(self.bits), "hash": 1 << int(self.hash_bits)}.get(self.grid_mode, 0)
        hid, geo, k = int(self.hidden_dim), int(self.geo_feat_dim), int(self.feature_dim)
        return {**super().nsc_decode_bytes(), "grid tables": 4 * verts * max(per_vertex, 1) + verts,
                "codebooks": 4 * int(self.num_levels) * rows * k, "MLPs": 4 * hid * (k + geo + 1 + geo + 27 + 3 + 2)}

    def nsc_derived_limits(self) -> List[Tuple[str, float, float]]:
        verts = sum((r + 1) ** 3 for r in self.resolutions())
        per_vertex = {"vq": 1 << self.bits, "float": self.feature_dim, "hash": 0}.get(self.grid_mode, 1)
        return [*super().nsc_derived_limits(),
                ("finest level resolution (base_resolution · 2^(num_levels-1))", self.resolutions()[-1], 512),
                ("grid vertices × values per vertex", verts * per_vertex, 1 << 28)]


class VQADModel(NscModel):
    """VQ-AD radiance field; see the module docstring. Outputs ``rgb [R,3]``, ``accumulation [R,1]``,
    ``depth [R,1]`` (world units) at the current LOD (:attr:`~nscodec.core.model_base.NscModel.lod`; training samples one
    per batch)."""

    config: VQADModelConfig
    supports_lod: ClassVar[bool] = True

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        if cfg.grid_mode == "vq" and cfg.bits not in (1, 2, 3, 4, 5, 6, 7, 8):
            raise ValueError(f"bits must be in 1..8, got {cfg.bits}")
        for what, value, hi in cfg.nsc_derived_limits():  # before allocating, and before hours of training
            if value > hi:
                raise ValueError(f"{what} = {value:,} exceeds {hi:,}, the most a .nsc decoder allocates: lower bits, "
                                 "num_levels or base_resolution")
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
        self.register_buffer("lod_probs", lod_probabilities(cfg.num_levels).float(), persistent=False)
        self._placeholder = Parameter(torch.zeros(1))

    # --------------------------------------------------------------------------------------------- LOD
    @property
    def num_lods(self) -> int:
        """Levels of detail (= grid levels)."""
        return self.config.num_levels

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
        return self.density_geo(positions, self.lod if lod is None else lod)[0]

    def density_max_lods(self, positions: Tensor) -> Tensor:
        """``max_l sigma_l [S]`` over all LODs (the occupancy grid must hold every LOD's geometry)."""
        feats = self.grid.all_lods(self.normalize(positions))
        first, last = self.density_mlp[0], self.density_mlp[2]
        w, b = last.weight[:1].t(), last.bias[:1]  # only the density output of the last layer
        sigma = [trunc_exp(torch.addmm(b, torch.relu(first(f)), w)[:, 0] - 1.0) for f in feats]
        return torch.stack(sigma, dim=0).amax(dim=0)

    def rgb_from_geo(self, geo: Tensor, directions: Tensor) -> Tensor:
        """Colour ``[S, 3]`` in [0, 1] from geometry features and unit ``directions [S, 3]``."""
        if geo.shape[0] == 0:
            return geo.new_zeros((0, 3))
        return torch.sigmoid(self.color_mlp(torch.cat([geo, self.direction_encoding(directions)], dim=-1)))

    # --------------------------------------------------------------------------------------- schedule
    def base_step_size(self) -> float:
        """Sample spacing (world units) = step_ratio × cell size of the finest level."""
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        return self.config.step_ratio * extent / self.grid.resolutions[-1]

    def occupancy_density(self, positions: Tensor) -> Tensor:
        """The occupancy grid holds every LOD's geometry: max density over the levels of detail."""
        return self.density_max_lods(positions)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        """``grid``: per-vertex tables (logits C or float features; sparse gradients → SparseAdam),
        ``codebooks``: D per level, ``fields``: the MLPs. Empty groups get a gradient-less placeholder."""
        return {
            "grid": list(self.grid.tables) or [self._placeholder],
            "codebooks": list(self.grid.codebooks) or [self._placeholder],
            "fields": list(self.density_mlp.parameters()) + list(self.color_mlp.parameters()),
        }

    def method_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """After each step, refresh the hard indices of the logits rows the step updated
        (:meth:`~nscodec.vqad.grid.MultiLevelVQGrid.refresh_touched_indices`)."""
        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                 lambda step: self.grid.refresh_touched_indices(), update_every_num_iters=1)]

    # -------------------------------------------------------------------------------------- rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        lod = self.sample_lod() if self.training else self.lod
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
    def finalize_for_storage(self) -> None:
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
        the finest LOD present. Declared shapes and counts are checked against the model before decoding.

        Raises:
            NscFormatError: missing or malformed sections (named, with the bad value).
        """
        from nscodec.coding.sections import meta_int
        from nscodec.coding.tensor_codec import decode_section
        from nscodec.coding.lod import available_lod

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
                res = self.grid.resolutions[level]
                for part in per_level:
                    sec = nsc.sections[f"level{level}.{part}"]
                    meta_int(sec, "count", n, n)  # the stored vertices follow from the decoded occupancy grid
                    meta_int(sec, "resolution", res, res)
                    meta_int(sec, "lod", level, level)
                if cfg.grid_mode in ("vq", "hash"):
                    cb_sec = nsc.sections[f"level{level}.codebook"]
                    want = tuple(self.grid.codebooks[level].shape)
                    if tuple(cb_sec.shape) != want:
                        raise NscFormatError(f"section 'level{level}.codebook': shape {list(cb_sec.shape)}, expected {list(want)}")
                    cb = torch.from_numpy(decode_section(cb_sec, dtype=("float16",)).astype(np.float32))
                if cfg.grid_mode == "vq":
                    sec = nsc.sections[f"level{level}.indices"]
                    if sec.meta.get("packed"):
                        if tuple(sec.shape) != ((n * cfg.bits + 7) // 8,):
                            raise NscFormatError(f"section 'level{level}.indices': shape {list(sec.shape)} does not hold {n} {cfg.bits}-bit indices")
                        sym = unpack_bits(decode_section(sec, dtype=("uint8",)), cfg.bits, n)
                    else:
                        if tuple(sec.shape) != (1, n):
                            raise NscFormatError(f"section 'level{level}.indices': shape {list(sec.shape)}, expected [1, {n}]")
                        sym = decode_section(sec, dtype=("int32",)).reshape(-1)
                    if n and (sym.min() < 0 or sym.max() >= 1 << cfg.bits):
                        raise NscFormatError(f"section 'level{level}.indices': indices outside [0, {(1 << cfg.bits) - 1}]")
                    idx = torch.zeros(self.grid.num_vertices(level), dtype=torch.long)
                    idx[mask] = torch.from_numpy(sym.astype(np.int64))
                    self.grid.set_indices(level, idx, cb)
                elif cfg.grid_mode == "float":
                    sec = nsc.sections[f"level{level}.features"]
                    if tuple(sec.shape) != (n, cfg.feature_dim):
                        raise NscFormatError(f"section 'level{level}.features': shape {list(sec.shape)}, expected {[n, cfg.feature_dim]}")
                    feats = decode_section(sec, dtype=("float16",))
                    table = self.grid.tables[level]
                    table.zero_()
                    table[mask] = torch.from_numpy(feats.astype(np.float32))
                else:
                    self.grid.codebooks[level].copy_(cb)
        self.decoded_lod = lod

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
    from nscodec.errors import NscFormatError

    flat = np.unpackbits(np.asarray(packed, dtype=np.uint8).reshape(-1))
    if flat.size < n * bits:
        raise NscFormatError(f"packed indices: {flat.size} bits for {n} x {bits}-bit values")
    planes = flat[: n * bits].reshape(n, bits).astype(np.int64)
    return planes @ (1 << np.arange(bits - 1, -1, -1))


@torch.no_grad()
def posthoc_kmeans_model(float_model: VQADModel, bits: int, iters: int = 30, seed: int = 0) -> VQADModel:
    """The post-hoc kmVQ baseline (VQ-AD Sec. 5.2, Table 2): k-means the stored features of every level of a
    trained ``grid_mode="float"`` model into ``2^bits`` codewords (:func:`~nscodec.coding.posthoc.kmeans_quantize`,
    the k-means of every post-hoc baseline) and return the equivalent ``vq`` model (same MLPs and occupancy),
    finalized: it renders exactly like its file.

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
        feats = float_model.grid.tables[level].detach().cpu()[mask].numpy()
        k = 1 << bits
        cents = np.zeros((k, feats.shape[1]), np.float32)
        assign = np.zeros(feats.shape[0], np.int64)
        if feats.shape[0]:  # fewer stored vertices than codewords: the spare codewords stay zero
            cb, assign = kmeans_quantize(feats, min(k, feats.shape[0]), iters=iters, seed=seed + level)
            cents[: cb.shape[0]] = cb
        idx = torch.zeros(vq.grid.num_vertices(level), dtype=torch.long)
        idx[mask] = torch.from_numpy(assign.astype(np.int64))
        vq.grid.set_indices(level, idx, torch.from_numpy(cents).half().float())
    vq.finalize()  # the MLPs at their stored precision: the returned model renders exactly like its file
    return vq.eval()
