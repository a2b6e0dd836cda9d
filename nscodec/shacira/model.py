"""``shacira``: SHACIRA (Girish, Shrivastava, Gupta 2023, ICCV) — end-to-end compressed Instant-NGP hash grids.

The field (:mod:`nscodec.shacira.field`) is a multi-resolution hash grid whose tables are ``Z = d_θ(Q)``: integer
latents ``Q`` (``ΣT_l × D``) through one shared linear decoder (Sec. 3.2, Eq. 7). Training keeps continuous
proxies ``Q̂`` and rounds them by annealed stochastic soft rounding (Eq. 4, :mod:`nscodec.shacira.latents`) for
the first ``anneal_fraction`` of the run, then with a straight-through estimator. One learned factorized density
per latent dimension ``d`` (Ballé et al. 2018, :class:`~nscodec.coding.FactorizedPrior` with ``D`` channels,
shared by all levels) gives the self-information loss (Eq. 5)::

    L = MSE(ŷ, y) + λ_I · L_I,   L_I = −(1/T) Σ_d Σ_i log2 P_d(Q̂[i, d] + n),   n ~ U(−½, ½)

(the paper writes ``U[−1, 1]``; ``U(−½, ½)`` is the noise whose density equals the pmf of the rounded latent,
Ballé et al. 2017, and is what the shared prior implements). After training ``round(Q̂)`` is entropy-coded (ANS)
into the ``.nsc`` with integer CDF tables from the learned densities.

Levels of detail (Sec. 4.5): each level's latents are one section with ``meta.lod = l``, written coarse to fine
after the sections every level needs (decoder, MLPs, occupancy), so a file prefix decodes levels ``0..l``;
rendering at LOD ``l`` sets the features of levels ``> l`` to zero ("masking out the finer resolutions", as the
paper does; no retraining). :meth:`~nscodec.core.model_base.NscModel.set_lod` / the viewer slider pick the level.

``compress=False`` trains the same hash grid with plain fp32 tables (no latents, decoder, prior or rate): the
uncompressed Instant-NGP baseline of the same configuration; its ``.nsc`` stores fp32 tables and MLPs.

Sampling: the occupancy grid + packed ray marching every nscodec model shares (:class:`~nscodec.core.model_base.NscModel`),
with early ray termination. The latent decoder runs under :meth:`~nscodec.core.model_base.NscModel.decoding` whenever
the evaluation table is built, so the table a receiver decodes is bit-identical to the sender's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.config_utils import to_immutable_dict
from torch import Tensor, nn
from torch.nn import Parameter

import nscodec.compat  # noqa: F401  (checkpoint globals for torch.load(weights_only=True))
from nscodec.coding.container import NscFile, Section
from nscodec.coding.entropy_models import FactorizedPrior
from nscodec.errors import NscFormatError
from nscodec.coding.quantization import annealed_temperature, quantize
from nscodec.coding.sections import meta_int, dense_section_names, dense_sections, load_dense_sections, load_occupancy_section, occupancy_section
from nscodec.core.model_base import NscModel, NscModelConfig
from nscodec.shacira.field import ShaciraField, ShaciraHashEncoding, fp32_table_bytes


@dataclass
class ShaciraModelConfig(NscModelConfig):
    """Config of :class:`ShaciraModel` (CPU-sized defaults for 200² Blender scenes)."""

    _target: Type = field(default_factory=lambda: ShaciraModel)
    compress: bool = True
    """False: uncompressed fp32 hash grid of the same configuration (the baseline)."""
    num_levels: int = 8
    min_res: int = 16
    max_res: int = 256
    log2_hashmap_size: int = 15
    """``T = 2^log2_hashmap_size`` rows per (hashed) level."""
    features_per_level: int = 2
    """``F``."""
    latent_dim: int = 2
    """``D``: latent values per table row."""
    dense_coarse_levels: bool = True
    latent_init_scale: float = 0.5
    decoder_init_scale: float = 0.1
    hidden_dim: int = 64
    geo_feat_dim: int = 15
    hidden_dim_color: int = 64
    num_layers_color: int = 2
    lambda_i: float = 1e-4
    """λ_I of Eq. 9 (weight of the self-information loss, in bits per table row)."""
    rate_knots: int = 4096
    """Training rate of the latents through :meth:`FactorizedPrior.rate`'s tabulated path: ``-log2 P`` exact at this
    many knots per latent dimension, interpolated linearly between them (the density network runs on the knots,
    not on each of the ~400 K latents of a step). 0: the exact rate of every latent. Evaluation and the file are
    always exact."""
    anneal_fraction: float = 0.5
    """Fraction of the run with annealed soft rounding (Eq. 4); straight-through rounding afterwards. 0 = STE."""
    tau_start: float = 1.0
    tau_end: float = 0.05
    render_steps: int = 256
    """Sample spacing along rays = scene-box edge / render_steps (world units)."""
    occupancy_resolution: int = 64
    occupancy_warmup: int = 10
    occupancy_update_every: int = 10
    occupancy_fast_until: int = 400
    occupancy_update_every_late: int = 100
    occupancy_threshold: float = 5e-3
    """A cell is occupied when alpha = 1 - exp(-sigma * step) exceeds this at a corner (the initial density
    trunc_exp(0) = 1 gives alpha ≈ 0.006, so untrained space stays occupied until rays carve it)."""
    warmup_step_multiplier: float = 8.0
    """Samples are this many times sparser before the first occupancy update and while more than
    ``coarse_march_above`` of the grid is occupied (early training: the box is mostly "fog")."""
    coarse_march_above: float = 0.4
    loss_coefficients: Dict[str, float] = to_immutable_dict({"rgb_loss": 1.0})
    dense_dtype: Literal["float16", "float32"] = "float16"
    """Storage of MLPs / decoder in the compressed ``.nsc`` (the baseline always stores float32)."""
    eval_num_rays_per_chunk: int = 1 << 13

    #: plane options of the TensoRF base this config once inherited; older files carry them
    nsc_retired_fields: ClassVar[frozenset] = frozenset(
        {"init_resolution", "final_resolution", "upsampling_iters", "num_den_components", "num_color_components",
         "density_init_scale", "appearance_dim", "codec_scheme", "codec_bits"}
    )

    def nsc_limits(self) -> Dict[str, Tuple[float, float]]:
        return {**super().nsc_limits(), "num_levels": (1, 32), "min_res": (1, 1 << 16), "max_res": (1, 1 << 16),
                "log2_hashmap_size": (1, 24), "features_per_level": (1, 16), "latent_dim": (1, 16),
                "hidden_dim": (1, 1024), "geo_feat_dim": (1, 256), "hidden_dim_color": (1, 1024),
                "num_layers_color": (1, 16), "render_steps": (1, 1 << 16), "coarse_march_above": (0.0, 1.0)}

    #: training-only fields: initial scales, the rate weight and its tabulation, the rounding anneal
    nsc_unread_fields: ClassVar[frozenset] = frozenset({"latent_init_scale", "decoder_init_scale", "lambda_i", "rate_knots",
                                                        "anneal_fraction", "tau_start", "tau_end"})

    def nsc_decode_bytes(self) -> Dict[str, int]:
        """On top of the shared parts: the table rows (latents ``[ΣT_l, D]`` or the fp32 table, and the decoded
        table ``[ΣT_l, F]``), the MLPs."""
        levels, feats = int(self.num_levels), int(self.features_per_level)
        rows = levels * min(1 << int(self.log2_hashmap_size), (int(self.max_res) + 1) ** 3)  # ≥ ΣT_l
        hid, hc, geo = int(self.hidden_dim), int(self.hidden_dim_color), int(self.geo_feat_dim)
        mlps = 4 * (hid * (levels * feats + hid + geo + 3) + hc * (geo + 32 + hc * int(self.num_layers_color) + 3))
        return {**super().nsc_decode_bytes(), "table rows (stored and decoded)": 4 * rows * (max(int(self.latent_dim), feats) + feats),
                "MLPs": mlps}

    def nsc_derived_limits(self) -> List[Tuple[str, float, float]]:
        rows = self.num_levels * (1 << self.log2_hashmap_size)  # upper bound of ΣT_l
        return [*super().nsc_derived_limits(),
                ("hash-table rows × features (num_levels · 2^log2_hashmap_size · max(F, D))",
                 rows * max(self.features_per_level, self.latent_dim), 1 << 27)]


class ShaciraModel(NscModel):
    """SHACIRA on packed samples; see the module docstring.

    Outputs ``rgb [R, 3]``, ``accumulation [R, 1]``, ``depth [R, 1]`` (world units); while training also
    ``num_samples`` and the rate of the latents (``rate_bits``, bits, compressed mode only).
    """

    config: ShaciraModelConfig
    supports_lod: ClassVar[bool] = True

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        enc = ShaciraHashEncoding(
            num_levels=cfg.num_levels, min_res=cfg.min_res, max_res=cfg.max_res, log2_hashmap_size=cfg.log2_hashmap_size,
            features_per_level=cfg.features_per_level, latent_dim=cfg.latent_dim, compress=cfg.compress,
            dense_coarse_levels=cfg.dense_coarse_levels, latent_init_scale=cfg.latent_init_scale,
            decoder_init_scale=cfg.decoder_init_scale,
        )
        self.field = ShaciraField(
            self.scene_box.aabb, enc, hidden_dim=cfg.hidden_dim, geo_feat_dim=cfg.geo_feat_dim,
            hidden_dim_color=cfg.hidden_dim_color, num_layers_color=cfg.num_layers_color,
        )
        self.prior = FactorizedPrior(cfg.latent_dim) if cfg.compress else None
        self._eval_table: Optional[Tensor] = None
        self._occupied_fraction = ((-1, 0), 1.0)
        self._placeholder = Parameter(torch.zeros(0))

    @property
    def encoding(self) -> ShaciraHashEncoding:
        return self.field.encoding

    # ---------------------------------------------------------------------------------------- level of detail
    @property
    def num_lods(self) -> int:
        """Number of levels of detail (= hash-grid levels ``L``)."""
        return self.config.num_levels

    def on_lod_changed(self) -> None:
        """Levels ``> lod`` contribute zero features (SHACIRA Sec. 4.5)."""
        self.field.lod = None if self.lod >= self.num_lods - 1 else self.lod

    # -------------------------------------------------------------------------------------------- schedule
    def base_step_size(self) -> float:
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        return extent / self.config.render_steps

    def coarse_marching(self) -> bool:
        return not self.occupancy_ready or self.occupied_fraction() > self.config.coarse_march_above

    def occupied_fraction(self) -> float:
        """Occupied fraction of the occupancy grid (a function of saved state, cached per grid update)."""
        key = (int(self.occupancy.num_updates), self.occupancy.occupied.data_ptr())
        if self._occupied_fraction[0] != key:
            self._occupied_fraction = (key, float(self.occupancy.occupied.float().mean()))
        return self._occupied_fraction[1]

    def tau(self) -> Optional[float]:
        """Soft-rounding temperature now (None once annealing is over: straight-through rounding)."""
        c = self.config
        return annealed_temperature(self._step, max(1, self._max_steps or 1), c.anneal_fraction, c.tau_start, c.tau_end)

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        f = self.field
        enc = f.encoding
        return {
            "fields": list(f.mlp_base.parameters()) + list(f.mlp_head.parameters()),
            "encodings": [enc.latents] if enc.compress else [enc.table],
            "codec": list(enc.decoder.parameters()) + list(self.prior.parameters()) if enc.compress else [self._placeholder],
        }

    # ------------------------------------------------------------------------------------------- tables
    def current_table(self) -> Tensor:
        """Table ``[ΣT_l, F]`` for this forward pass: training — soft-rounded (annealing) or STE-rounded
        latents through the decoder; evaluation — rounded latents (cached until the next train step)."""
        enc = self.encoding
        if self.training:
            self._eval_table = None
            if not enc.compress:
                return enc.table
            tau = self.tau()
            return enc.get_table("anneal", tau) if tau is not None else enc.get_table("ste")
        if self._eval_table is None:
            self._eval_table = self.rounded_table()
        return self._eval_table

    @torch.no_grad()
    def rounded_table(self) -> Tensor:
        """``d_θ(round(Q̂))`` ``[ΣT_l, F]`` (the fp32 table when uncompressed), decoded under :meth:`decoding`."""
        with self.decoding():
            return self.encoding.get_table("round").detach()

    def decoded_tensors(self) -> Dict[str, Tensor]:
        return {"table": self.rounded_table()} if self.encoding.compress else {}

    def train(self, mode: bool = True):
        self._eval_table = None
        return super().train(mode)

    def occupancy_density(self, positions: Tensor) -> Tensor:
        return self.field.density_at(positions, self.rounded_table())

    @torch.no_grad()
    def update_occupancy(self) -> float:
        """Refresh the occupancy grid from the current (rounded-latent) density at every level; returns the occupied
        fraction.

        As Instant-NGP's density grid, the threshold is ``min(occupancy_threshold, mean alpha)`` (mean over random
        points of the box), so a field that is still transparent everywhere early in training is never carved
        away entirely (which would leave no samples, hence no gradients)."""
        table = self.rounded_table()
        lod, self.field.lod = self.field.lod, None
        try:
            g = torch.Generator(device="cpu").manual_seed(int(self.occupancy.num_updates))
            lo, hi = self.scene_box.aabb[0], self.scene_box.aabb[1]
            pts = (lo + (hi - lo) * torch.rand(1 << 15, 3, generator=g)).to(table.device)
            mean_alpha = float((1.0 - torch.exp(-self.field.density_at(pts, table) * self.step_size)).mean())
            thr = min(self.config.occupancy_threshold, mean_alpha)
            return self.occupancy.update(lambda p: self.field.density_at(p, table), self.step_size, thr)
        finally:
            self.field.lod = lod

    def rate_bits(self) -> Tensor:
        """Self-information of the latents (Eq. 5 numerator): ``−Σ log2 P_d(Q̂ + n)`` in bits (scalar), noise
        ``n ~ U(−½, ½)`` while training; at evaluation the rate of the rounded latents."""
        enc = self.encoding
        y = enc.latents.t()  # [D, ΣT_l]: channel-first for the per-dimension densities
        if not self.training:
            return self.prior.rate(quantize(y, "round"))
        return self.prior.rate(quantize(y, "noise"), knots=self.config.rate_knots)

    # ------------------------------------------------------------------------------------------ rendering
    def get_outputs(self, ray_bundle: RayBundle) -> Dict[str, Tensor]:
        table = self.current_table()
        f = self.field
        out = self.render_packed(ray_bundle, lambda p: f.density_and_geo(p, table), f.rgb_from_geo,
                                 density_only=lambda p: f.density_at(p, table.detach()))
        if self.training and self.encoding.compress:
            out["rate_bits"] = self.rate_bits()
        return out

    # ------------------------------------------------------------------------------------- losses & metrics
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss = super().get_loss_dict(outputs, batch, metrics_dict)
        if "rate_bits" in outputs:
            T = float(self.encoding.hash_table_size)
            if self.config.lambda_i > 0:
                loss["self_information"] = self.config.lambda_i * outputs["rate_bits"] / T  # Eq. 5 / Eq. 9
            loss["entropy_aux"] = self.prior.aux_loss()  # quantile fit only (support of the CDF tables)
        return loss

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        m = super().get_metrics_dict(outputs, batch)
        if "rate_bits" in outputs:
            m["rate_kbytes"] = outputs["rate_bits"].detach() / 8e3
            tau = self.tau()
            m["soft_round_tau"] = torch.tensor(0.0 if tau is None else tau)
        return m

    # ------------------------------------------------------------------------------------------ .nsc codec
    def dense_modules(self) -> Dict[str, nn.Module]:
        """MLPs (and the latent decoder) stored as dense float arrays."""
        mods: Dict[str, nn.Module] = {"mlp_base": self.field.mlp_base, "mlp_head": self.field.mlp_head}
        if self.encoding.compress:
            mods["decoder"] = self.encoding.decoder
        return mods

    def _dense_dtype(self) -> str:
        return self.config.dense_dtype if self.encoding.compress else "float32"

    @torch.no_grad()
    def finalize_for_storage(self) -> None:
        """Round the dense parameters to their storage dtype in place, so the ``.nsc`` is lossless for them and a
        decoded file renders exactly like this model (the latents are rounded at evaluation anyway)."""
        if self._dense_dtype() == "float16":
            for mod in self.dense_modules().values():
                for p in mod.parameters():
                    p.copy_(p.half().float())
        self._eval_table = None

    def nsc_sections(self) -> List[Section]:
        """Sections: dense MLPs/decoder and occupancy (needed by every LOD), then one section per hash-grid level,
        coarse to fine, with ``meta.lod = l``: ANS-coded ``round(Q̂_l)`` ``[D, T_l]`` under the learned per-dimension
        densities (compressed), or the raw fp32 table ``[T_l, F]`` (baseline)."""
        from nscodec.coding.tensor_codec import raw_section

        sections = dense_sections(self.dense_modules(), self._dense_dtype())
        sections.append(occupancy_section(self.occupancy))
        enc = self.encoding
        for lvl, sl in enumerate(enc.level_slices()):
            meta = {"lod": lvl, "rows": enc.level_sizes[lvl]}
            if enc.compress:
                sections.append(self.prior.encode_section(f"latents.level{lvl:02d}", enc.latents[sl].t().contiguous(),
                                                          meta=meta))  # round(Q̂_l) [D, T_l]
            else:
                sections.append(raw_section(f"table.level{lvl:02d}", enc.table[sl].detach().cpu().numpy(), "float32", meta=meta))
        return sections

    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Inverse of :meth:`nsc_sections`; decodes the levels present in ``nsc`` (a file prefix may hold only
        levels ``0..l``; finer latents stay zero and are masked out).

        Raises:
            NscFormatError: missing/malformed sections (shapes are checked before decoding), or not even level 0.
        """
        from nscodec.coding.tensor_codec import decode_section
        from nscodec.coding.lod import available_lod

        top = available_lod(nsc)
        enc = self.encoding
        dense = self.dense_modules()
        prefix = "latents" if enc.compress else "table"
        levels = [f"{prefix}.level{l:02d}" for l in range(min(top, enc.num_levels - 1) + 1)]
        nsc.require(dense_section_names(dense) + ["occupancy"] + levels, optional=[f"{prefix}.level{l:02d}" for l in range(enc.num_levels)])
        param = enc.latents if enc.compress else enc.table
        wants = [(param.shape[1], n) if enc.compress else (n, param.shape[1]) for n in enc.level_sizes]
        for lvl, name in enumerate(levels):  # declared shapes first: nothing is decoded for a file that cannot fit
            meta_int(nsc.sections[name], "lod", lvl, lvl)
            meta_int(nsc.sections[name], "rows", enc.level_sizes[lvl], enc.level_sizes[lvl])
            if tuple(nsc.sections[name].shape) != wants[lvl]:
                raise NscFormatError(f"section {name!r}: shape {list(nsc.sections[name].shape)}, model expects {list(wants[lvl])}")
        load_dense_sections(dense, nsc)
        load_occupancy_section(self.occupancy, nsc)
        with torch.no_grad():
            param.zero_()
            for lvl, sl in enumerate(enc.level_slices()[: len(levels)]):
                sec = nsc.sections[levels[lvl]]
                arr = FactorizedPrior.decode_section(sec) if enc.compress else decode_section(sec, dtype=("float32",))
                val = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32))
                param[sl] = val.t() if enc.compress else val
        self.decoded_lod = len(levels) - 1
        self._eval_table = None


def uncompressed_table_bytes(model: ShaciraModel) -> int:
    """fp32 bytes of the hash tables of ``model``'s configuration (``ΣT_l · F · 4``)."""
    return fp32_table_bytes(model.encoding)
