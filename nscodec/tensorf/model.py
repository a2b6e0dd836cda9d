"""``nscodec-tensorf``: TensoRF-VM with empty-space skipping, early termination and packed samples (CPU-fast).

Same field as nerfstudio's TensoRF (Chen et al. 2022) — so stock checkpoints load — but rendered the way the
original TensoRF code does it, which is what makes it fast without CUDA:

* **empty-space skipping**: an occupancy grid ("alpha mask", TensoRF Sec. 4.4) refreshed during training; rays
  are marched only inside the tight box around occupied cells and samples in empty cells are dropped;
* **packed samples**: every ray keeps only its own surviving samples (no padding to a fixed count);
* **early ray termination**: the appearance branch (48-channel planes, basis matrix and MLP — most of the cost)
  runs only for samples whose rendering weight exceeds ``weight_threshold``, i.e. not behind opaque surfaces
  nor in near-empty space;
* coarse-to-fine plane resolution (TensoRF Sec. 4.4), step size tied to the current voxel size.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.config_utils import to_immutable_dict
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.losses import MSELoss, tv_loss
from nerfstudio.model_components.renderers import RGBRenderer
from nerfstudio.utils import misc
from torch import Tensor
from torch.nn import Parameter

import nscodec.compat  # noqa: F401  (registers checkpoint globals for torch.load(weights_only=True))
from nscodec.coding.container import NscFile, Section
from nscodec.metrics import ImageMetrics
from nscodec.model_base import NscModel, OccupancyScheduleConfig
from nscodec.render import OccupancyGrid, render_weight_from_density
from nscodec.tensorf.field import PackedTensoRFField


@dataclass
class NscTensoRFModelConfig(OccupancyScheduleConfig):
    """Config of :class:`NscTensoRFModel` (CPU-sized defaults for 200² Blender scenes)."""

    _target: Type = field(default_factory=lambda: NscTensoRFModel)
    step_ratio: float = 1.0
    """Sample spacing in voxels of the current plane resolution. One voxel measured faster *and* better at equal
    wall-clock than half a voxel on lego 200² (docs/benchmarks.md, "nscodec-tensorf vs stock")."""
    init_resolution: int = 64
    """Initial plane/line resolution N (grid has N^3 virtual voxels)."""
    final_resolution: int = 160
    """Resolution reached after the last upsampling step."""
    upsampling_iters: Tuple[int, ...] = (300, 600, 1000, 1500)
    """Steps at which planes are upsampled (log-spaced resolutions from init to final)."""
    num_den_components: int = 16
    num_color_components: int = 48
    density_init_scale: float = 0.01
    """Std of the initial density VM factors (stock nerfstudio: 0.1, i.e. ReLU fog everywhere at start; small
    values start from nearly empty space, so occluded regions hold no floaters and occupancy stays tight)."""
    appearance_dim: int = 27
    loss_coefficients: Dict[str, float] = to_immutable_dict(
        {"rgb_loss": 1.0, "l1_reg": 5e-4, "tv_reg_density": 0.0, "tv_reg_color": 0.0}
    )
    codec_scheme: Literal["uniform", "kmeans", "fp16-zstd", "fp32"] = "uniform"
    """``.nsc`` export of the VM planes/lines (post-hoc, nothing is retrained): ``uniform`` = per-channel uniform
    quantization to ``codec_bits`` + histogram entropy coding; ``kmeans`` = k-means VQ of the per-location
    component vectors into ``2**codec_bits`` float16 codewords + entropy-coded indices; ``fp16-zstd`` = float16
    + Zstandard; ``fp32`` = raw float32 (the uncompressed reference, also for the dense parts)."""
    codec_bits: int = 8
    """``.nsc`` export: bits per plane/line value (``uniform``) or log2 of the codebook size (``kmeans``)."""
    background_color: Literal["random", "black", "white"] = "white"
    enable_collider: bool = False
    eval_num_rays_per_chunk: int = 1 << 14


class NscTensoRFModel(NscModel):
    """TensoRF-VM on packed samples; see the module docstring. Outputs ``rgb [R,3]``, ``accumulation [R,1]``,
    ``depth [R,1]`` (world units) and, while training, ``num_samples`` (packed samples this batch)."""

    config: NscTensoRFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        self.resolutions = (
            np.round(np.exp(np.linspace(np.log(cfg.init_resolution), np.log(cfg.final_resolution), len(cfg.upsampling_iters) + 1)))
            .astype(int)
            .tolist()
        )
        self.field = self.build_field()
        self.occupancy = OccupancyGrid(self.scene_box.aabb.reshape(6), cfg.occupancy_resolution)
        self.renderer_rgb = RGBRenderer(background_color=cfg.background_color)
        self.rgb_loss = MSELoss()
        self.image_metrics = ImageMetrics()
        self.collider = None

    def build_field(self) -> PackedTensoRFField:
        """The radiance field; subclasses (``ectensorf``) replace its planes by decoded latents."""
        cfg = self.config
        return PackedTensoRFField(
            self.scene_box.aabb,
            resolution=cfg.init_resolution,
            num_den_components=cfg.num_den_components,
            num_color_components=cfg.num_color_components,
            appearance_dim=cfg.appearance_dim,
            density_init_scale=cfg.density_init_scale,
        )

    # ----------------------------------------------------------------------------------------------- schedule
    @property
    def step_size(self) -> float:
        """Sample spacing (world units) = step_ratio × voxel size at the field's current resolution."""
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        step = self.config.step_ratio * extent / self.field.density_encoding.resolution
        if not self.occupancy_ready:
            step *= self.config.warmup_step_multiplier
        return step

    @property
    def occupancy_ready(self) -> bool:
        """True once the occupancy grid was computed from the density at least once (saved in checkpoints)."""
        return bool(self.occupancy.num_updates.item() > 0)

    def update_occupancy(self) -> float:
        """Refresh the occupancy grid from the current density; returns the occupied fraction."""
        return self.occupancy.update(
            self.field.density_at, self.step_size, self.config.occupancy_threshold, bound=self.occupancy_bound()
        )

    def occupancy_bound(self) -> Optional[Tensor]:
        """``[G, G, G]`` bool: the cells an occupancy update may mark occupied (None: any visible cell)."""
        return None

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        cfg = self.config

        def upsample(step: int) -> None:
            if not self.planes_trainable():
                return
            self.field.upsample(self.resolutions[cfg.upsampling_iters.index(step) + 1])
            self.update_occupancy()
            self.reset_encoding_optimizer(attrs)

        def occupancy(step: int) -> None:
            if self.occupancy_update_due(step):
                self.update_occupancy()

        def visibility(step: int) -> None:
            if attrs.pipeline is not None:
                self.ensure_visibility(attrs.pipeline.datamanager.train_dataset.cameras)

        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], visibility, update_every_num_iters=1),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], upsample, iters=tuple(cfg.upsampling_iters)),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], occupancy, update_every_num_iters=1),
        ]

    def planes_trainable(self) -> bool:
        """Whether the VM planes are free parameters (subclasses that decode them return False)."""
        return True

    @staticmethod
    def reset_encoding_optimizer(
        attrs: TrainingCallbackAttributes, group: str = "encodings", max_steps: Optional[int] = None, keep_state: bool = False
    ) -> None:
        """Re-create the optimizer (and scheduler) of a param group whose tensors were replaced (upsampling).

        ``max_steps``: the new scheduler decays over this many steps instead of its config's ``max_steps``.
        ``keep_state``: keep the optimizer (same tensors, Adam moments kept) and re-create only the scheduler,
        which restarts from the configured initial learning rate."""
        assert attrs.optimizers is not None and attrs.pipeline is not None
        conf = attrs.optimizers.config[group]
        if not keep_state:
            params = attrs.pipeline.get_param_groups()[group]
            attrs.optimizers.optimizers[group] = conf["optimizer"].setup(params=params)
        if conf["scheduler"]:
            sched = conf["scheduler"] if max_steps is None else replace(conf["scheduler"], max_steps=max(1, max_steps))
            optimizer = attrs.optimizers.optimizers[group]
            for pg in optimizer.param_groups:  # restart from the configured rate (LambdaLR scales initial_lr)
                pg["initial_lr"] = pg["lr"] = conf["optimizer"].lr
            attrs.optimizers.schedulers[group] = sched.setup().get_scheduler(optimizer=optimizer, lr_init=conf["optimizer"].lr)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        f = self.field
        return {
            "fields": list(f.mlp_head.parameters()) + list(f.B.parameters()) + list(f.field_output_rgb.parameters()),
            "encodings": list(f.density_encoding.parameters()) + list(f.color_encoding.parameters()),
        }

    # -------------------------------------------------------------------------------------------- rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        # under ReLU a sample with sigma == 0 has zero optical depth and zero gradient: no gradient pass for it
        f = self.field
        return self.render_packed(ray_bundle, lambda p: (f.density_at(p), p), f.rgb_at,
                                  sample_mask=lambda sigma, alpha: sigma > 0)

    @torch.no_grad()
    def render_samples(self, ray_bundle: RayBundle) -> Tuple[Tensor, Tensor]:
        """Packed samples of ``ray_bundle`` (mid-points, no jitter): world positions ``[S, 3]`` and their
        volume-rendering weights ``[S]`` (used e.g. for ECTensoRF's importance maps)."""
        origins = ray_bundle.origins.reshape(-1, 3)
        dirs = ray_bundle.directions.reshape(-1, 3)
        ray_idx, t0, t1 = self.occupancy.march(origins, dirs, self.step_size, None)
        pos = origins[ray_idx] + dirs[ray_idx] * (0.5 * (t0 + t1))[:, None]
        weights, _, _ = render_weight_from_density(t0, t1, self.field.density_at(pos), ray_idx, origins.shape[0])
        return pos, weights

    # ------------------------------------------------------------------------------------- losses & metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss = self.rgb_loss_dict(outputs, batch)
        coef = self.config.loss_coefficients
        if coef.get("l1_reg", 0.0) > 0:
            enc = self.field.density_encoding
            loss["l1_reg"] = torch.cat([enc.plane_coef.reshape(-1), enc.line_coef.reshape(-1)]).abs().mean()
        if coef.get("tv_reg_density", 0.0) > 0:
            loss["tv_reg_density"] = tv_loss(self.field.density_encoding.plane_coef)
        if coef.get("tv_reg_color", 0.0) > 0:
            loss["tv_reg_color"] = tv_loss(self.field.color_encoding.plane_coef)
        return misc.scale_dict(loss, coef)

    # ------------------------------------------------------------------------------------------- .nsc codec
    def vm_tensors(self) -> Dict[str, Parameter]:
        """The VM factors by section name: ``{density,color}.{planes,lines}``."""
        f = self.field
        return {
            "density.planes": f.density_encoding.plane_coef,
            "density.lines": f.density_encoding.line_coef,
            "color.planes": f.color_encoding.plane_coef,
            "color.lines": f.color_encoding.line_coef,
        }

    def dense_modules(self) -> Dict[str, torch.nn.Module]:
        """Small dense parts stored as float16: basis matrix B, MLP head, RGB head."""
        return {"basis": self.field.B, "mlp": self.field.mlp_head, "rgb_head": self.field.field_output_rgb}

    def nsc_sections(self) -> List[Section]:
        """Post-hoc codec of the uncompressed base (``codec_scheme``, see the config), float16 dense parts
        (float32 for ``fp32``), and the occupancy grid (bit-packed, DEFLATE) so the decoded model samples exactly
        where the trained one did.

        Raises:
            NscError: unknown ``codec_scheme`` or bad ``codec_bits``.
        """
        from nscodec.coding.errors import NscError
        from nscodec.coding.posthoc import histogram_table, kmeans_quantize, uniform_quantize
        from nscodec.coding.tensor_codec import entropy_section, raw_section, zstd_section

        scheme, bits = self.config.codec_scheme, int(self.config.codec_bits)
        sections = []
        for name, t in self.vm_tensors().items():
            x = t.detach().cpu().numpy()  # [3, C, N, N] planes or [3, C, N, 1] lines
            meta: Dict[str, object] = {"shape": list(x.shape)}
            if scheme == "uniform":
                flat = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])  # [3*C, N, N|1]: one channel per component
                sym, lo, step = uniform_quantize(flat, bits, axis=0)
                meta.update(lo=lo.tolist(), step=step.tolist())
                sections.append(entropy_section(name, sym.reshape(1, -1), histogram_table(sym), meta=meta))
            elif scheme == "kmeans":
                if not 1 <= bits <= 16:
                    raise NscError(f"codec_bits for kmeans must be in 1..16, got {bits}")
                vec = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])  # [3*N*N', C] component vectors
                codebook, idx = kmeans_quantize(vec, min(1 << bits, vec.shape[0]))
                sections.append(raw_section(f"{name}.codebook", codebook, "float16"))
                sections.append(entropy_section(name, idx.reshape(1, -1), histogram_table(idx), meta=meta))
            elif scheme == "fp16-zstd":
                sections.append(zstd_section(name, x, "float16", meta=meta))
            elif scheme == "fp32":
                sections.append(raw_section(name, x, "float32", meta=meta))
            else:
                raise NscError(f"unknown codec_scheme {scheme!r} (uniform, kmeans, fp16-zstd, fp32)")
        sections += dense_sections(self.dense_modules(), "float32" if scheme == "fp32" else "float16")
        sections.append(occupancy_section(self.occupancy))
        return sections

    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Inverse of :meth:`nsc_sections`. Raises NscFormatError on missing, extra or malformed sections."""
        from nscodec.coding.errors import NscFormatError
        from nscodec.coding.posthoc import uniform_dequantize
        from nscodec.coding.tensor_codec import decode_section

        scheme = self.config.codec_scheme
        dense = self.dense_modules()
        names = list(self.vm_tensors())
        extra = [f"{n}.codebook" for n in names] if scheme == "kmeans" else []
        nsc.require(names + extra + dense_section_names(dense) + ["occupancy"])
        state = {}
        for name, param in self.vm_tensors().items():
            sec = nsc.sections[name]
            shape = tuple(sec.meta.get("shape", ()))
            if len(shape) != 4 or shape[0] != 3:
                raise NscFormatError(f"section {name!r}: bad shape {shape}")
            if scheme == "uniform":
                sym = decode_section(sec).reshape(shape[0] * shape[1], *shape[2:])
                x = uniform_dequantize(sym, np.asarray(sec.meta["lo"]), np.asarray(sec.meta["step"]), axis=0)
            elif scheme == "kmeans":
                codebook = decode_section(nsc.sections[f"{name}.codebook"]).astype(np.float32)
                idx = decode_section(sec).reshape(-1)
                if codebook.ndim != 2 or codebook.shape[1] != shape[1] or idx.size * shape[1] != int(np.prod(shape)):
                    raise NscFormatError(f"section {name!r}: codebook {codebook.shape} does not fit shape {shape}")
                if idx.size and (idx.min() < 0 or idx.max() >= codebook.shape[0]):
                    raise NscFormatError(f"section {name!r}: index out of codebook range")
                x = np.moveaxis(codebook[idx].reshape(shape[0], *shape[2:], shape[1]), -1, 1)
            else:
                x = decode_section(sec).astype(np.float32)
            state[name] = torch.from_numpy(np.ascontiguousarray(x.reshape(shape), dtype=np.float32))
        enc_d, enc_c = self.field.density_encoding, self.field.color_encoding
        enc_d.load_state_dict({"plane_coef": state["density.planes"], "line_coef": state["density.lines"]})
        enc_c.load_state_dict({"plane_coef": state["color.planes"], "line_coef": state["color.lines"]})
        load_dense_sections(dense, nsc)
        load_occupancy_section(self.occupancy, nsc)


def dense_section_names(modules: Dict[str, torch.nn.Module]) -> List[str]:
    """Section names ``<module>.<param>`` for :func:`dense_sections`."""
    return [f"{m}.{p}" for m, mod in modules.items() for p, _ in mod.named_parameters()]


def _quant_channels(module: str, t: torch.Tensor, bits: int, channel_dims: Optional[Dict[str, int]]) -> int:
    """Channels of ``t`` under :func:`~nscodec.coding.posthoc.pow2_quantize` (0 = not quantized: 1-D or bits=0)."""
    if bits <= 0 or t.dim() < 2:
        return 0
    return int(np.prod(t.shape[: max(1, (channel_dims or {}).get(module, 1))]))


@torch.no_grad()
def quantize_dense_(
    modules: Dict[str, torch.nn.Module], bits: int = 0, channel_dims: Optional[Dict[str, int]] = None, dtype: str = "float16"
) -> None:
    """Round every parameter of ``modules`` in place to what :func:`dense_sections` stores, so that a file written
    afterwards decodes to exactly these values: ``bits``-bit power-of-two quantization for parameters with ≥ 2 dims
    when ``bits > 0``, else a ``dtype`` (float16/float32) round trip. Idempotent."""
    from nscodec.coding.posthoc import pow2_dequantize, pow2_quantize

    for m, mod in modules.items():
        for _, t in mod.named_parameters():
            ch = _quant_channels(m, t, bits, channel_dims)
            if ch:
                sym, exp = pow2_quantize(t.detach().cpu().numpy(), bits, ch)
                t.copy_(torch.from_numpy(pow2_dequantize(sym, exp)))
            else:
                t.copy_(t.to(getattr(torch, dtype)).float())


def dense_sections(
    modules: Dict[str, torch.nn.Module], dtype: str = "float16", bits: int = 0, channel_dims: Optional[Dict[str, int]] = None
) -> List[Section]:
    """Every parameter of ``modules`` as a section named ``<module>.<param>``.

    ``bits = 0``: raw ``dtype``. ``bits > 0``: parameters with ≥ 2 dims are quantized per channel with power-of-two
    steps (:func:`~nscodec.coding.posthoc.pow2_quantize`; channels = the product of the first
    ``channel_dims[module]`` dims, default 1, e.g. output rows of a weight matrix) and entropy-coded under their own
    histogram (table in the section; exponents in ``meta["exp"]``); 1-D parameters (biases) stay raw ``dtype``.
    Call :func:`quantize_dense_` first for a lossless file.
    """
    from nscodec.coding.posthoc import histogram_table, pow2_quantize
    from nscodec.coding.tensor_codec import entropy_section, raw_section

    sections = []
    for m, mod in modules.items():
        for p, t in mod.named_parameters():
            x = t.detach().cpu().numpy()
            ch = _quant_channels(m, t, bits, channel_dims)
            if ch:
                sym, exp = pow2_quantize(x, bits, ch)
                meta = {"quantizer": "pow2", "bits": int(bits), "exp": exp.tolist()}
                sections.append(entropy_section(f"{m}.{p}", sym.reshape(1, -1), histogram_table(sym), meta=meta))
            else:
                sections.append(raw_section(f"{m}.{p}", x, dtype))
    return sections


def load_dense_sections(modules: Dict[str, torch.nn.Module], nsc: NscFile) -> None:
    """Load sections written by :func:`dense_sections` (raw casts or power-of-two quantized symbols, to float32).

    Raises:
        NscFormatError: a shape that does not match the model, or bad quantizer metadata.
    """
    from nscodec.coding.errors import NscError, NscFormatError
    from nscodec.coding.posthoc import pow2_dequantize
    from nscodec.coding.tensor_codec import decode_section

    for m, mod in modules.items():
        for p, t in mod.named_parameters():
            sec = nsc.sections[f"{m}.{p}"]
            arr = decode_section(sec)
            if sec.meta.get("quantizer") == "pow2":
                try:
                    arr = pow2_dequantize(arr, np.asarray(sec.meta["exp"], dtype=np.int64).clip(-126, 127))
                except (KeyError, TypeError, ValueError, NscError) as err:
                    raise NscFormatError(f"section '{m}.{p}': bad power-of-two quantizer metadata ({err})") from None
                if arr.size == t.numel():
                    arr = arr.reshape(t.shape)
            if tuple(arr.shape) != tuple(t.shape):
                raise NscFormatError(f"section '{m}.{p}': shape {tuple(arr.shape)}, model expects {tuple(t.shape)}")
            with torch.no_grad():
                t.copy_(torch.from_numpy(arr.astype(np.float32)))


def occupancy_section(grid: OccupancyGrid, coder: Literal["zlib", "ctx3d"] = "zlib") -> Section:
    """The occupancy grid as a section (meta: grid box, marching box): ``zlib`` = bit-packed + DEFLATE; ``ctx3d`` =
    context-adaptive arithmetic coding (:mod:`nscodec.coding.binary_context`, ~0.55× the DEFLATE bytes on lego,
    ~0.4 s to decode a 128³ grid on CPU).

    Raises:
        NscError: unknown ``coder``.
    """
    from nscodec.coding.errors import NscError
    from nscodec.coding.tensor_codec import binary_grid_section, zlib_section

    meta = {"resolution": grid.resolution, "grid_aabb": grid.grid_aabb.tolist(), "bbox": grid.bbox.tolist()}
    occ = grid.occupied.cpu().numpy()
    if coder == "ctx3d":
        return binary_grid_section("occupancy", occ.reshape((grid.resolution,) * 3), meta=meta)
    if coder != "zlib":
        raise NscError(f"unknown occupancy coder {coder!r} (zlib, ctx3d)")
    return zlib_section("occupancy", np.packbits(occ.reshape(-1)), meta=meta)


def decode_occupancy(sec: Section) -> np.ndarray:
    """The boolean grid ``[G, G, G]`` of an ``occupancy`` section from :func:`occupancy_section` (either coder).

    Raises:
        NscFormatError: missing ``resolution`` metadata or a payload that does not hold ``G³`` cells.
    """
    from nscodec.coding.errors import NscFormatError
    from nscodec.coding.tensor_codec import decode_section

    g = int(sec.meta.get("resolution", -1))
    cells = decode_section(sec)
    if sec.coder != "ctx3d":  # bit-packed bytes
        cells = np.unpackbits(cells)[: max(g, 0) ** 3].astype(bool)
    if g < 1 or cells.size != g**3:
        raise NscFormatError(f"section {sec.name!r}: {cells.size} cells do not make a {g}³ grid")
    return cells.reshape(g, g, g)


def load_occupancy_section(grid: OccupancyGrid, nsc: NscFile) -> None:
    """Restore an occupancy grid written by :func:`occupancy_section`.

    Raises:
        NscFormatError: as :func:`decode_occupancy`, or a grid resolution other than the model's.
    """
    from nscodec.coding.errors import NscFormatError

    sec = nsc.sections["occupancy"]
    if int(sec.meta.get("resolution", -1)) != grid.resolution:
        raise NscFormatError(f"section 'occupancy': resolution {sec.meta.get('resolution')} does not match the model's {grid.resolution}")
    occ = decode_occupancy(sec)
    grid.occupied.copy_(torch.from_numpy(occ))
    grid.bbox.copy_(torch.tensor(sec.meta["bbox"], dtype=torch.float32))
    grid.num_updates.fill_(max(1, int(grid.num_updates)))
