"""``codecnerf``: per-scene encoding with a pretrained CodecNeRF codec (Kang et al., AAAI 2025) as a nerfstudio model.

At training step 0 the scene's views go through the shared encoder once (:meth:`CodecNeRFModel.encode_scene`):
16 training views → VQ indices → (decoder side) base triplanes ``F_k^s``. Then only parameter-efficient deltas
are finetuned (Sec. 3.6): rank-R plane deltas (Eq. 10, :class:`~nscodec.codecnerf.peft.PlaneDeltas`) and LoRA on
every MLP layer. ``mode``:

* ``"peft_ec"`` (PEFT++, default, Sec. 3.7): delta matrices are integer symbols (straight-through rounding) rated
  by a factorized prior (``nscodec.coding.FactorizedPrior``, Eqs. 11–12) and entropy-coded in the ``.nsc``;
* ``"peft"``: delta matrices float32, no rate term;
* ``"scratch"``: the per-scene baseline ("Triplanes" in Table 1) — the same triplane renderer, randomly
  initialised, every plane and MLP weight trained and stored as float32. Needs no codec model.

The ``.nsc`` holds the VQ indices, the deltas and the LoRA factors, never the codec model: a ``codec_ref`` section
names it by SHA-256 and version. Decoding re-runs the decoder half (codebook → upsampling CNN → generator) on the
indices, so the decoded model renders bit-identically to the trained one.

Rendering: packed samples with occupancy-grid empty-space skipping (:mod:`nscodec.render`), two passes while
training (density without grad to find live samples, then grad), white background as the Blender data.

Length: the per-scene side of the paper (encoding, PEFT deltas and LoRA, rate, the file); the codec network, encoder,
pretraining and PEFT parts are their own modules here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn
from torch.nn import Parameter

import nscodec.compat  # noqa: F401
from nscodec.codecnerf.encoder import prepare_views
from nscodec.codecnerf.network import CodecArch, CodecNeRFNet, load_codec_model, resolve_codec_model_path
from nscodec.codecnerf.peft import PlaneDeltas, add_lora, lora_parameters
from nscodec.codecnerf.triplane import lattice_plane_features, normalize_points, sample_triplanes, tv_loss_planes
from nscodec.coding.container import NscFile, Section
from nscodec.coding.entropy_models import FactorizedPrior
from nscodec.errors import NscError, NscFormatError
from nscodec.coding.sections import load_occupancy_section, load_section_into, occupancy_section
from nscodec.core.model_base import NscModel, NscModelConfig



@dataclass
class CodecNeRFModelConfig(NscModelConfig):
    """Config of :class:`CodecNeRFModel` (CPU-sized defaults)."""

    _target: Type = field(default_factory=lambda: CodecNeRFModel)
    mode: Literal["peft_ec", "peft", "scratch"] = "peft_ec"
    """peft_ec = PEFT + entropy coding (PEFT++), peft = PEFT with float32 deltas, scratch = per-scene triplanes."""
    codec_model_path: Optional[Path] = None
    """The shared codec-model file (``nscodec codecnerf-pretrain``); ``$NSCODEC_CODECNERF_MODEL`` overrides it."""
    codec_model_sha256: str = ""
    """Expected SHA-256 of the codec model; filled in from the file when empty, checked when decoding."""
    rank: int = 4
    """R of the tensor-factorized plane deltas (Eq. 10; paper: 4)."""
    lora_rank: int = 4
    """LoRA rank on every MLP layer (paper: 4)."""
    delta_init_std: float = 1.0
    """Std of the random init of the delta matrices (in quantization steps for peft_ec); vectors start at 0."""
    rate_lambda: float = 2e-3
    """λ_rate of Eq. 12 per Mbit of the delta matrices (peft_ec)."""
    tv_weight: float = 1e-2
    """λ_tv of Eq. 8 (on the final planes)."""
    scratch_init_std: float = 0.1
    """scratch mode: std of the random plane init."""
    step_ratio: float = 1.0
    """Sample spacing along rays in texels of the finest triplane level."""
    occupancy_warmup: int = 50
    """scratch mode: first occupancy update (PEFT modes update right after encoding)."""
    occupancy_update_every: int = 100
    occupancy_update_every_late: int = 100
    restrict_to_visible: bool = False
    """Off: the decoder recomputes the occupancy grid from the decoded field alone (no cameras in the file)."""

    #: training-only fields: initial scales and the objective's weights
    nsc_unread_fields: ClassVar[frozenset] = frozenset({"delta_init_std", "rate_lambda", "tv_weight", "scratch_init_std"})
    #: bytes of the shared codec network a PEFT file is decoded with (the local codec-model file, not the .nsc:
    #: its architecture is the file's, :class:`~nscodec.codecnerf.network.CodecArch` of the pretraining), an upper
    #: bound for the CPU-sized architectures nscodec pretrains
    codec_network_bytes: ClassVar[int] = 64 << 20

    def nsc_limits(self) -> Dict[str, Tuple[float, float]]:
        # the decoder recomputes the occupancy grid from the decoded field (no occupancy section): its lattice of
        # (G + 1)^3 density evaluations is bounded more tightly than a stored grid's
        return {**super().nsc_limits(), "rank": (1, 64), "lora_rank": (1, 64), "occupancy_resolution": (1, 256)}

    def nsc_decode_bytes(self) -> Dict[str, int]:
        """On top of the shared parts: the triplanes (base, deltas and the decoded levels) of the default
        architecture, the rank-``R`` deltas, and the shared codec network (:attr:`codec_network_bytes`)."""
        from nscodec.codecnerf.network import CodecArch

        arch = CodecArch()
        planes = sum(3 * arch.plane_channels * r * r for r in arch.plane_resolutions)
        deltas = sum(int(self.rank) * (arch.plane_channels + 3 * r * r) for r in arch.plane_resolutions)
        g = int(self.occupancy_resolution) + 1
        return {**super().nsc_decode_bytes(), "triplanes (stored and decoded)": 4 * 3 * planes,
                "plane deltas": 4 * 2 * deltas, "codec network": self.codec_network_bytes,
                "occupancy recomputed from the field (density and alpha lattices)": 3 * 4 * g ** 3}


class CodecNeRFModel(NscModel):
    """See the module docstring. Outputs ``rgb [R, 3]``, ``accumulation [R, 1]``, ``depth [R, 1]``."""

    config: CodecNeRFModelConfig

    # ------------------------------------------------------------------------------------------ structure
    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        if cfg.mode not in ("peft_ec", "peft", "scratch"):
            raise ValueError(f"codecnerf: unknown mode {cfg.mode!r}")
        self.codec_info: Dict = {}
        if cfg.mode == "scratch":
            net = CodecNeRFNet(CodecArch())
            self.arch = net.arch
            self.renderer = net.renderer
            self.planes = nn.ParameterList(
                [Parameter(torch.randn(3, self.arch.plane_channels, r, r) * cfg.scratch_init_std) for r in self.arch.plane_resolutions]
            )
        else:
            path = resolve_codec_model_path(cfg.codec_model_path)
            net, info = load_codec_model(path, cfg.codec_model_sha256 or None)
            cfg.codec_model_sha256 = info["sha256"]
            self.codec_info = info
            for p in net.parameters():
                p.requires_grad_(False)
            self.net = net
            self.arch = net.arch
            self.renderer = net.renderer
            add_lora(self.renderer, cfg.lora_rank)
            a = self.arch
            self.deltas = PlaneDeltas(a.plane_channels, a.plane_resolutions, cfg.rank, cfg.delta_init_std, quantized=cfg.mode == "peft_ec")
            half = a.volume_res // 2
            self.register_buffer("indices", torch.zeros(3, half, half, dtype=torch.long))
            for s, r in enumerate(a.plane_resolutions):
                self.register_buffer(f"base_{s}", torch.zeros(3, a.plane_channels, r, r))
            self.register_buffer("encoded", torch.zeros((), dtype=torch.bool))
            if cfg.mode == "peft_ec":
                self.prior = FactorizedPrior(3 * cfg.rank)
        self._levels_cache: Optional[List[Tensor]] = None
        self.lattice_occupancy = True
        """Occupancy updates evaluate the corner lattice plane by plane (:meth:`lattice_density`); files record it
        (``occupancy_eval``), and files without the record recompute their grid point by point, as they were written."""

    @property
    def aabb(self) -> Tensor:
        return self.scene_box.aabb.to(self.occupancy.grid_aabb.device)

    def base_levels(self) -> List[Tensor]:
        """The decoded (encoder-output) triplanes ``[3, C, V_s, V_s]`` per level (PEFT modes)."""
        return [getattr(self, f"base_{s}") for s in range(len(self.arch.plane_resolutions))]

    def levels(self) -> List[Tensor]:
        """Triplanes used for rendering: ``F + ΔF`` (PEFT modes) or the free planes (scratch)."""
        if self.config.mode == "scratch":
            return list(self.planes)
        if self.training:
            return self.deltas.apply(self.base_levels())
        if self._levels_cache is None:
            with torch.no_grad():
                self._levels_cache = self.deltas.apply(self.base_levels())
        return self._levels_cache

    def train(self, mode: bool = True):
        self._levels_cache = None
        return super().train(mode)

    # ------------------------------------------------------------------------------------------- encoding
    @torch.no_grad()
    def encode_scene(self, images: Tensor, c2w: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, width: float, height: float) -> Tensor:
        """Sec. 3.1–3.3, one forward pass: ``arch.enc_views`` evenly spaced views of ``images [N, H, W, 3]``
        (RGB in [0, 1], background composited; cameras as :func:`~nscodec.codecnerf.encoder.project_points`,
        intrinsics in pixels of ``width × height``) → VQ indices; then the decoder half rebuilds the base
        triplanes exactly as :meth:`load_nsc_sections` will. Returns the indices ``[3, V/2, V/2]``.

        Raises:
            NscError: called in scratch mode.
        """
        if self.config.mode == "scratch":
            raise NscError("codecnerf scratch mode has no encoder")
        a = self.arch
        dev = self.indices.device
        views = prepare_views(images.to(dev), c2w.to(dev), fx.to(dev), fy.to(dev), cx.to(dev), cy.to(dev), width, height, a.enc_image_size)
        idx = self.net.encode(*views, self.aabb, self.occupancy.to_world if self.config.contracted else None)
        self.set_indices(idx)
        return idx

    @torch.no_grad()
    def set_indices(self, idx: Tensor) -> None:
        """Decoder side: indices → base triplanes (buffers); refreshes the occupancy grid."""
        self.indices.copy_(idx)
        self._decode_base()
        self.encoded.fill_(True)
        self._levels_cache = None
        self.update_occupancy()

    @torch.no_grad()
    def _decode_base(self) -> None:
        with self.decoding():
            levels = self.net.decode(self.indices)
        for s, lv in enumerate(levels):
            getattr(self, f"base_{s}").copy_(lv)

    @staticmethod
    def select_views(n_available: int, n: int) -> List[int]:
        """``n`` evenly spaced view indices out of ``n_available`` (all when fewer)."""
        if n_available <= n:
            return list(range(n_available))
        return [int(i) for i in np.linspace(0, n_available - 1, n).round()]

    def encode_from_dataset(self, dataset) -> Tensor:
        """:meth:`encode_scene` with the views of a nerfstudio ``InputDataset`` (alpha composited on the background)."""
        ids = self.select_views(len(dataset), self.arch.enc_views)
        imgs = []
        for i in ids:
            img = dataset.get_image_float32(i)
            if img.shape[-1] == 4:
                img = self.renderer_rgb.blend_background(img)
            imgs.append(img[..., :3])
        cams = dataset.cameras[torch.tensor(ids)]
        return self.encode_scene(
            torch.stack(imgs), cams.camera_to_worlds, cams.fx, cams.fy, cams.cx, cams.cy, float(cams.width[0]), float(cams.height[0])
        )

    # ------------------------------------------------------------------------------------------ occupancy
    def base_step_size(self) -> float:
        """Sample spacing (scene units): ``step_ratio`` texels of the finest triplane level."""
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        return self.config.step_ratio * extent / max(self.arch.plane_resolutions)

    def density_at(self, pos: Tensor) -> Tensor:
        """``sigma [S]`` at world points ``[S, 3]``."""
        pn = normalize_points(pos, self.aabb)
        return self.renderer.density(sample_triplanes(self.levels(), pn), pn)

    def occupancy_density(self, positions: Tensor) -> Tensor:
        return self.density_at(positions)

    def lattice_density(self, axes: Tensor, chunk: int = 1 << 18) -> Tensor:
        """``sigma [n, n, n]`` on the lattice ``axes [3, n]`` (world units per axis), each plane sampled once on its
        own 2-D lattice (:func:`~nscodec.codecnerf.triplane.lattice_plane_features`), then the density MLP on every
        point, in x slabs of at most ``chunk`` points."""
        aabb = self.aabb
        axes_n = (axes - aabb[0][:, None]) / (aabb[1] - aabb[0])[:, None] * 2.0 - 1.0
        xy, yz, xz = lattice_plane_features(self.levels(), axes_n)  # [F, n, n] each
        n = axes.shape[1]
        slab = max(1, chunk // (n * n))
        out = []
        for x0 in range(0, n, slab):
            xs = slice(x0, min(n, x0 + slab))
            feats = xy[:, xs, :, None] + yz[:, None, :, :] + xz[:, xs, None, :]  # [F, nx, n, n], the planes in order
            gx, gy, gz = torch.meshgrid(axes_n[0, xs], axes_n[1], axes_n[2], indexing="ij")
            pn = torch.stack([gx, gy, gz], dim=-1).reshape(-1, 3)
            out.append(self.renderer.density(feats.reshape(feats.shape[0], -1).t(), pn))
        return torch.cat(out).reshape(n, n, n)

    def first_occupancy_update(self) -> int:
        """PEFT modes: right after encoding (step 0); scratch: ``occupancy_warmup``."""
        return self.config.occupancy_warmup if self.config.mode == "scratch" else 0

    @torch.no_grad()
    def update_occupancy(self) -> float:
        """Recompute the occupancy grid from the current field as evaluation renders it (rounded deltas), under
        :meth:`decoding`, so a decoder recomputing it gets the identical grid; returns the occupied fraction."""
        was = self.training
        self.eval()
        try:
            with self.decoding():
                return self.occupancy.update(self.density_at, self.base_step_size(), self.config.occupancy_threshold,
                                             lattice_density_fn=self.lattice_density if self.lattice_occupancy else None)
        finally:
            self.train(was)

    def finalize_for_storage(self) -> None:
        """The file holds the deltas, LoRA and indices as trained (float32 or integer symbols that evaluation rounds
        to anyway); what a decoder recomputes is the occupancy grid, so it is refreshed from the field as stored."""
        self.update_occupancy()

    def export_blocker(self) -> Optional[str]:
        if self.config.mode != "scratch" and not bool(self.encoded):
            return "codecnerf: the scene was not encoded yet (train at least one step)"
        return None

    def decoded_tensors(self) -> Dict[str, Tensor]:
        """The base triplanes the decoder half computes from the VQ indices (PEFT modes)."""
        if self.config.mode == "scratch":
            return {}
        return {f"base_{s}": t for s, t in enumerate(self.base_levels())}

    def method_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """PEFT modes: encode the scene's training views once, before the first step (Sec. 3.1–3.3)."""
        cfg = self.config

        def encode(step: int) -> None:
            if cfg.mode != "scratch" and not bool(self.encoded) and attrs.pipeline is not None:
                self.encode_from_dataset(attrs.pipeline.datamanager.train_dataset)

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], encode, update_every_num_iters=1)]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        if self.config.mode == "scratch":
            return {"planes": list(self.planes), "mlp": list(self.renderer.parameters())}
        groups = {"deltas": list(self.deltas.parameters()), "lora": lora_parameters(self.renderer)}
        if self.config.mode == "peft_ec":
            groups["prior"] = list(self.prior.parameters())
        return groups

    # -------------------------------------------------------------------------------------------- rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        aabb = self.aabb
        levels = self.levels()

        def density_feats(p: Tensor):
            pn = normalize_points(p, aabb)
            feats = sample_triplanes(levels, pn)
            return self.renderer.density(feats, pn), feats

        # pass-1 rule: a sample with sigma == 0 (or occluded) has no effect on the render
        out = self.render_packed(ray_bundle, density_feats, self.renderer.rgb, sample_mask=lambda sigma, alpha: sigma > 0)
        if self.training:
            out["_levels"] = levels
        return out

    # ------------------------------------------------------------------------------------------------ losses
    def delta_rate_bits(self) -> Tensor:
        """Eq. 11 (in bits): ``Σ −log2 p(M)`` of the delta matrices under the factorized prior, with the additive
        uniform-noise proxy while training and the rounded symbols in eval (scalar tensor)."""
        bits = torch.zeros((), device=self.occupancy.grid_aabb.device)
        for m in self.deltas.matrices:
            y = m + torch.empty_like(m).uniform_(-0.5, 0.5) if self.training else torch.round(m)
            bits = bits + FactorizedPrior.rate_bits(self.prior.likelihood(y))
        return bits

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss = self.rgb_loss_dict(outputs, batch)
        levels = outputs.pop("_levels", None)
        if levels is not None and self.config.tv_weight > 0:
            loss["tv_loss"] = self.config.tv_weight * tv_loss_planes(levels)
        if self.config.mode == "peft_ec" and self.training:
            loss["rate"] = self.config.rate_lambda * self.delta_rate_bits() / 1e6
            loss["entropy_aux"] = self.prior.aux_loss()
        return loss

    # ---------------------------------------------------------------------------------------------- .nsc codec
    def lora_tensors(self) -> Dict[str, Parameter]:
        """LoRA factors by section name ``lora.<layer path>.<lora_a|lora_b>``."""
        return {f"lora.{n}": p for n, p in self.renderer.named_parameters() if n.endswith("lora_a") or n.endswith("lora_b")}

    def section_names(self) -> List[str]:
        """Sections :meth:`nsc_sections` writes (besides the optional ``occupancy``)."""
        n = len(self.arch.plane_resolutions)
        if self.config.mode == "scratch":
            return [f"planes.{s}" for s in range(n)] + [f"mlp.{k}" for k, _ in self.renderer.named_parameters()]
        return (
            ["codec_ref", "vq.indices"]
            + [f"delta.vectors.{s}" for s in range(n)]
            + [f"delta.matrices.{s}" for s in range(n)]
            + list(self.lora_tensors())
        )

    @torch.no_grad()
    def _fresh_occupancy_matches(self) -> bool:
        grid = self.new_occupancy_grid()
        was = self.training
        self.eval()
        try:
            with self.decoding():
                grid.update(self.density_at, self.base_step_size(), self.config.occupancy_threshold,
                            lattice_density_fn=self.lattice_density if self.lattice_occupancy else None)
        finally:
            self.train(was)
        return bool(torch.equal(grid.occupied, self.occupancy.occupied) and torch.equal(grid.bbox, self.occupancy.bbox))

    def nsc_sections(self) -> List[Section]:
        """PEFT modes: ``codec_ref`` (codec-model SHA-256 + version, no weights), ``vq.indices`` (uint8/uint16),
        ``delta.vectors.s`` (float32), ``delta.matrices.s`` (peft_ec: integer symbols entropy-coded with the
        factorized prior's CDF table; peft: float32), ``lora.*`` (float32). Scratch: ``planes.s`` and ``mlp.*``
        (float32). ``occupancy`` only when the grid cannot be recomputed identically from the decoded field.

        Raises:
            NscError: PEFT mode before the scene was encoded.
        """
        from nscodec.coding.tensor_codec import raw_section

        cfg = self.config
        sections: List[Section] = []
        if cfg.mode == "scratch":
            for s, p in enumerate(self.planes):
                meta = {"occupancy_eval": "lattice"} if (s == 0 and self.lattice_occupancy) else {}
                sections.append(raw_section(f"planes.{s}", p.detach().cpu().numpy(), "float32", meta=meta))
            for k, p in self.renderer.named_parameters():
                sections.append(raw_section(f"mlp.{k}", p.detach().cpu().numpy(), "float32"))
        else:
            blocker = self.export_blocker()
            if blocker is not None:
                raise NscError(blocker)
            ref = {"format": "nscodec-codecnerf-model", "sha256": cfg.codec_model_sha256, "version": int(self.codec_info.get("version", 1))}
            if self.lattice_occupancy:
                ref["occupancy_eval"] = "lattice"
            sections.append(raw_section("codec_ref", np.zeros(0, dtype=np.uint8), meta=ref))
            idx = self.indices.cpu().numpy()
            sections.append(raw_section("vq.indices", idx.astype(np.uint8 if self.arch.codebook_size <= 256 else np.uint16)))
            for s, v in enumerate(self.deltas.vectors):
                sections.append(raw_section(f"delta.vectors.{s}", v.detach().cpu().numpy(), "float32"))
            for s, m in enumerate(self.deltas.matrices):
                if cfg.mode == "peft_ec":
                    sections.append(self.prior.encode_section(f"delta.matrices.{s}", m.detach()))
                else:
                    sections.append(raw_section(f"delta.matrices.{s}", m.detach().cpu().numpy(), "float32"))
            for name, p in self.lora_tensors().items():
                sections.append(raw_section(name, p.detach().cpu().numpy(), "float32"))
        if not self._fresh_occupancy_matches():
            sections.append(occupancy_section(self.occupancy))
        return sections

    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Inverse of :meth:`nsc_sections`.

        Raises:
            NscFormatError: missing/extra/malformed sections (dtypes and shapes checked against the model), or the
                file was encoded with another codec model (``codec_ref`` SHA-256 differs from the loaded codec
                model's).
        """
        from nscodec.coding.tensor_codec import decode_section

        nsc.require(self.section_names(), optional=["occupancy"])
        cfg = self.config
        first = nsc.sections["planes.0" if cfg.mode == "scratch" else "codec_ref"]
        self.lattice_occupancy = first.meta.get("occupancy_eval") == "lattice"  # older files: point by point
        f32 = ("float32",)
        with torch.no_grad():
            if cfg.mode == "scratch":
                for s, p in enumerate(self.planes):
                    load_section_into(p, nsc, f"planes.{s}", f32)
                for k, p in self.renderer.named_parameters():
                    load_section_into(p, nsc, f"mlp.{k}", f32)
            else:
                ref_sec = nsc.sections["codec_ref"]
                if tuple(ref_sec.shape) != (0,) or ref_sec.nbytes or ref_sec.dtype != "uint8" or ref_sec.coder != "raw":
                    raise NscFormatError(f"section 'codec_ref': a reference holds no data (raw uint8 [0]), got "
                                         f"{ref_sec.coder} {ref_sec.dtype} {list(ref_sec.shape)}")
                ref = ref_sec.meta
                if ref.get("sha256") != self.codec_info.get("sha256"):
                    raise NscFormatError(
                        f"codec model mismatch: the .nsc needs codec model sha256 {str(ref.get('sha256'))[:16]}…, loaded "
                        f"{self.codec_info.get('path')} has {str(self.codec_info.get('sha256'))[:16]}…"
                    )
                if ref.get("version") != int(self.codec_info.get("version", 1)):
                    raise NscFormatError(f"codec model version {ref.get('version')!r} unsupported")
                idx_sec = nsc.sections["vq.indices"]
                if tuple(idx_sec.shape) != tuple(self.indices.shape):
                    raise NscFormatError(f"section 'vq.indices': shape {list(idx_sec.shape)}, model expects {list(self.indices.shape)}")
                idx = decode_section(idx_sec, dtype=("uint8", "uint16")).astype(np.int64)
                if idx.size and idx.max() >= self.arch.codebook_size:
                    raise NscFormatError(f"section 'vq.indices': index {int(idx.max())} outside the codebook of {self.arch.codebook_size}")
                for s, v in enumerate(self.deltas.vectors):
                    load_section_into(v, nsc, f"delta.vectors.{s}", f32)
                for s, m in enumerate(self.deltas.matrices):
                    if cfg.mode == "peft_ec":  # entropy-coded under the prior's table, which travels in the section
                        sym = FactorizedPrior.decode_section(nsc.sections[f"delta.matrices.{s}"], tuple(m.shape))
                        m.copy_(torch.from_numpy(sym.astype(np.float32)))
                    else:
                        load_section_into(m, nsc, f"delta.matrices.{s}", f32)
                for name, p in self.lora_tensors().items():
                    load_section_into(p, nsc, name, f32)
                self.indices.copy_(torch.from_numpy(idx))
                self._decode_base()
                self.encoded.fill_(True)
            self._levels_cache = None
            self.update_occupancy()
            if "occupancy" in nsc.sections:
                load_occupancy_section(self.occupancy, nsc)
