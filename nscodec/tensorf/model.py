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

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Literal, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.config_utils import to_immutable_dict
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.losses import tv_loss
from nerfstudio.utils import misc
from torch import Tensor
from torch.nn import Parameter

import nscodec.compat  # noqa: F401  (registers checkpoint globals for torch.load(weights_only=True))
from nscodec.coding.container import NscFile, Section
from nscodec.errors import NscFormatError
from nscodec.coding.sections import dense_section_names, dense_sections, load_dense_sections, load_occupancy_section, occupancy_section
from nscodec.core.model_base import NscModel, NscModelConfig
from nscodec.optim import reset_param_group
from nscodec.render import render_weight_from_density
from nscodec.tensorf.field import PackedTensoRFField

#: largest plane resolution a decodable file may declare (3 × 64 components × 1024² float32 = 805 MB)
MAX_PLANE_RESOLUTION = 1024


@dataclass
class NscTensoRFModelConfig(NscModelConfig):
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

    #: training-only fields (the upsampling schedule is read only for its length, bounded in :meth:`nsc_limits`)
    nsc_unread_fields: ClassVar[frozenset] = frozenset({"density_init_scale"})

    def nsc_limits(self) -> Dict[str, Tuple[float, float]]:
        res = (1, MAX_PLANE_RESOLUTION)
        comp = (1, 512)
        return {**super().nsc_limits(), "init_resolution": res, "final_resolution": res, "num_den_components": comp,
                "num_color_components": comp, "appearance_dim": comp, "codec_bits": (0, 16),
                "upsampling_iters": (0, 1 << 31)}

    def max_plane_resolution(self) -> int:
        """The largest plane resolution a file of this config may store (training grows it from
        ``init_resolution`` to ``final_resolution``; an export mid-training holds one in between)."""
        return max(int(self.init_resolution), int(self.final_resolution))

    def nsc_decode_bytes(self) -> Dict[str, int]:
        """The VM planes and lines at the initial resolution (built) and at the largest stored one (decoded), the
        basis matrix and the MLP head, on top of the shared parts."""
        comps = int(self.num_den_components) + int(self.num_color_components)

        def vm(r: int) -> int:
            return 4 * 3 * comps * (r * r + r)

        app = int(self.appearance_dim)
        head = 4 * ((5 * app + 15) * 128 + 128 * 128 + 3 * 128 + 259 + 3 * int(self.num_color_components) * app)
        return {**super().nsc_decode_bytes(), "VM planes and lines": vm(int(self.init_resolution)) + vm(self.max_plane_resolution()),
                "basis matrix and MLP head": head}


class NscTensoRFModel(NscModel):
    """TensoRF-VM on packed samples; see the module docstring. Outputs ``rgb [R,3]``, ``accumulation [R,1]``,
    ``depth [R,1]`` (world units) and, while training, ``num_samples`` (packed samples this batch)."""

    config: NscTensoRFModelConfig
    #: the file is a post-hoc codec of the uncompressed base, chosen at export (``codec_scheme``): training never
    #: rounds the model in place
    finalize_at_last_step: ClassVar[bool] = False

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        self.resolutions = (
            np.round(np.exp(np.linspace(np.log(cfg.init_resolution), np.log(cfg.final_resolution), len(cfg.upsampling_iters) + 1)))
            .astype(int)
            .tolist()
        )
        self.field = self.build_field()

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
    def base_step_size(self) -> float:
        """Sample spacing (world units) = step_ratio × voxel size at the field's current resolution."""
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        return self.config.step_ratio * extent / self.field.density_encoding.resolution

    def occupancy_density(self, positions: Tensor) -> Tensor:
        return self.field.density_at(positions)

    def method_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """Coarse-to-fine plane upsampling (TensoRF Sec. 4.4) at ``upsampling_iters``."""
        cfg = self.config

        def upsample(step: int) -> None:
            if not self.planes_trainable():
                return
            self.field.upsample(self.resolutions[cfg.upsampling_iters.index(step) + 1])
            self.update_occupancy()
            reset_param_group(attrs, "encodings")

        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], upsample, iters=tuple(cfg.upsampling_iters))]

    def planes_trainable(self) -> bool:
        """Whether the VM planes are free parameters (subclasses that decode them return False)."""
        return True

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
        """Packed samples of ``ray_bundle`` (mid-points, no jitter): field-space positions ``[S, 3]`` and their
        volume-rendering weights ``[S]`` (used e.g. for ECTensoRF's importance maps)."""
        origins = ray_bundle.origins.reshape(-1, 3)
        dirs = ray_bundle.directions.reshape(-1, 3)
        ray_idx, t0, t1 = self.occupancy.march(origins, dirs, self.step_size, None)
        pos = self.sample_positions(origins, dirs, ray_idx, t0, t1)
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
        from nscodec.errors import NscError
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
        """Inverse of :meth:`nsc_sections`; every declared shape and quantizer parameter is checked against the
        model's configuration before the planes are allocated.

        Raises:
            NscFormatError: missing, extra or malformed sections (named, with the bad value).
        """
        from nscodec.coding.posthoc import uniform_dequantize
        from nscodec.coding.sections import meta_floats
        from nscodec.coding.tensor_codec import decode_section

        cfg = self.config
        scheme, bits = cfg.codec_scheme, int(cfg.codec_bits)
        dense = self.dense_modules()
        names = list(self.vm_tensors())
        extra = [f"{n}.codebook" for n in names] if scheme == "kmeans" else []
        nsc.require(names + extra + dense_section_names(dense) + ["occupancy"])
        shapes = {name: self._declared_vm_shape(nsc.sections[name]) for name in names}
        for stack in ("density", "color"):
            if shapes[f"{stack}.planes"][2] != shapes[f"{stack}.lines"][2]:
                raise NscFormatError(f"sections '{stack}.planes' / '{stack}.lines': resolutions {shapes[f'{stack}.planes'][2]} "
                                     f"and {shapes[f'{stack}.lines'][2]} differ")
        state = {}
        for name in names:
            sec, shape = nsc.sections[name], shapes[name]
            count = int(np.prod(shape))
            if scheme == "uniform":
                self._expect_shape(sec, (1, count))
                channels = shape[0] * shape[1]
                lo, step = meta_floats(sec, "lo", channels), meta_floats(sec, "step", channels, positive=True)
                sym = decode_section(sec, dtype=("int32",))
                if sym.size and (sym.min() < 0 or sym.max() >= 1 << bits):
                    raise NscFormatError(f"section {name!r}: symbols outside [0, {(1 << bits) - 1}] of {bits}-bit quantization")
                x = uniform_dequantize(sym.reshape(channels, *shape[2:]), lo, step, axis=0)
                if not np.isfinite(x).all():
                    raise NscFormatError(f"section {name!r}: meta.lo / meta.step dequantize to non-finite values")
            elif scheme == "kmeans":
                cb_sec = nsc.sections[f"{name}.codebook"]
                if len(cb_sec.shape) != 2 or cb_sec.shape[1] != shape[1] or not 1 <= cb_sec.shape[0] <= 1 << 16:
                    raise NscFormatError(f"section '{name}.codebook': shape {list(cb_sec.shape)}, expected [K ≤ 65536, {shape[1]}]")
                self._expect_shape(sec, (1, count // shape[1]))
                codebook = decode_section(cb_sec, dtype=("float16", "float32")).astype(np.float32)
                idx = decode_section(sec, dtype=("int32",)).reshape(-1)
                if idx.size and (idx.min() < 0 or idx.max() >= codebook.shape[0]):
                    raise NscFormatError(f"section {name!r}: index out of codebook range [0, {codebook.shape[0]})")
                x = np.moveaxis(codebook[idx].reshape(shape[0], *shape[2:], shape[1]), -1, 1)
            else:
                self._expect_shape(sec, shape)
                x = decode_section(sec, dtype=("float16",) if scheme == "fp16-zstd" else ("float32",)).astype(np.float32)
            state[name] = torch.from_numpy(np.ascontiguousarray(x.reshape(shape), dtype=np.float32))
        enc_d, enc_c = self.field.density_encoding, self.field.color_encoding
        enc_d.load_state_dict({"plane_coef": state["density.planes"], "line_coef": state["density.lines"]})
        enc_c.load_state_dict({"plane_coef": state["color.planes"], "line_coef": state["color.lines"]})
        load_dense_sections(dense, nsc)
        load_occupancy_section(self.occupancy, nsc)

    def _declared_vm_shape(self, sec: Section) -> Tuple[int, int, int, int]:
        """``meta.shape`` of a VM section: ``[3, C, N, N]`` (planes) or ``[3, C, N, 1]`` (lines) with ``C`` the
        configured components and ``N`` ≤ the config's largest resolution
        (:meth:`NscTensoRFModelConfig.max_plane_resolution`). Raises NscFormatError otherwise."""
        cfg = self.config
        comps = cfg.num_den_components if sec.name.startswith("density") else cfg.num_color_components
        shape = sec.meta.get("shape")
        ok = isinstance(shape, list) and len(shape) == 4 and all(isinstance(d, int) and not isinstance(d, bool) for d in shape)
        if ok:
            n = shape[2]
            last = n if sec.name.endswith("planes") else 1
            ok = shape[0] == 3 and shape[1] == comps and 1 <= n <= cfg.max_plane_resolution() and shape[3] == last
        if not ok:
            kind = "[3, C, N, N]" if sec.name.endswith("planes") else "[3, C, N, 1]"
            raise NscFormatError(f"section {sec.name!r}: meta.shape {shape!r}, expected {kind} with C = {comps}, "
                                 f"N ≤ {cfg.max_plane_resolution()} (the config's largest resolution)")
        return tuple(shape)

    @staticmethod
    def _expect_shape(sec: Section, shape: Tuple[int, ...]) -> None:
        if tuple(sec.shape) != tuple(shape):
            raise NscFormatError(f"section {sec.name!r}: declared shape {list(sec.shape)}, meta.shape needs {list(shape)}")
