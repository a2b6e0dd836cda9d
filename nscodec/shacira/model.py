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
paper does; no retraining). ``ShaciraModel.set_lod`` / the viewer slider pick the level.

``compress=False`` trains the same hash grid with plain fp32 tables (no latents, decoder, prior or rate): the
uncompressed Instant-NGP baseline of the same configuration; its ``.nsc`` stores fp32 tables and MLPs.

Sampling: the CPU-safe occupancy grid + packed ray marching of :mod:`nscodec.render` (shared with
``nscodec-tensorf``), with early ray termination.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.configs.config_utils import to_immutable_dict
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn
from torch.nn import Parameter

from nscodec.coding.container import NscFile, Section
from nscodec.coding.entropy_models import FactorizedPrior
from nscodec.shacira.field import ShaciraField, ShaciraHashEncoding, fp32_table_bytes
from nscodec.shacira.latents import anneal_temperature
from nscodec.tensorf.model import (
    NscTensoRFModel,
    NscTensoRFModelConfig,
    dense_section_names,
    dense_sections,
    load_dense_sections,
    load_occupancy_section,
    occupancy_section,
)


@dataclass
class ShaciraModelConfig(NscTensoRFModelConfig):
    """Config of :class:`ShaciraModel` (CPU-sized defaults for 200² Blender scenes).

    Inherits the occupancy-grid / rendering options of ``nscodec-tensorf``; its plane options
    (``init_resolution``, ``*_components``, ``upsampling_iters`` ...) are unused.
    """

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
    anneal_fraction: float = 0.5
    """Fraction of the run with annealed soft rounding (Eq. 4); straight-through rounding afterwards. 0 = STE."""
    tau_start: float = 1.0
    tau_end: float = 0.05
    render_steps: int = 256
    """Sample spacing along rays = scene-box edge / render_steps (world units)."""
    upsampling_iters: Tuple[int, ...] = ()
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


class ShaciraModel(NscTensoRFModel):
    """SHACIRA on packed samples; see the module docstring.

    Outputs ``rgb [R, 3]``, ``accumulation [R, 1]``, ``depth [R, 1]`` (world units); while training also
    ``num_samples`` and the rate of the latents (``rate_bits``, bits, compressed mode only).
    """

    config: ShaciraModelConfig
    supports_lod = True  # nscodec.io.load_model may hand us a file prefix (levels of detail)

    def populate_modules(self) -> None:
        super().populate_modules()
        cfg = self.config
        self.prior = FactorizedPrior(cfg.latent_dim) if cfg.compress else None
        self._step = 0
        self._max_steps = 1
        self._eval_table: Optional[Tensor] = None
        self._lod_bytes: Optional[List[int]] = None
        self._occupied_fraction = ((-1, 0), 1.0)
        self._placeholder = Parameter(torch.zeros(0))
        self._setup_viewer_controls()

    def build_field(self) -> ShaciraField:  # called by NscTensoRFModel.populate_modules
        cfg = self.config
        enc = ShaciraHashEncoding(
            num_levels=cfg.num_levels, min_res=cfg.min_res, max_res=cfg.max_res, log2_hashmap_size=cfg.log2_hashmap_size,
            features_per_level=cfg.features_per_level, latent_dim=cfg.latent_dim, compress=cfg.compress,
            dense_coarse_levels=cfg.dense_coarse_levels, latent_init_scale=cfg.latent_init_scale,
            decoder_init_scale=cfg.decoder_init_scale,
        )
        return ShaciraField(
            self.scene_box.aabb, enc, hidden_dim=cfg.hidden_dim, geo_feat_dim=cfg.geo_feat_dim,
            hidden_dim_color=cfg.hidden_dim_color, num_layers_color=cfg.num_layers_color,
        )

    @property
    def encoding(self) -> ShaciraHashEncoding:
        return self.field.encoding

    # ---------------------------------------------------------------------------------------- level of detail
    @property
    def num_lods(self) -> int:
        """Number of levels of detail (= hash-grid levels ``L``)."""
        return self.config.num_levels

    @property
    def lod(self) -> Optional[int]:
        """Rendering level of detail: levels ``0..lod`` are used, finer ones are zero; None = all."""
        return self.field.lod

    def set_lod(self, lod: Optional[int]) -> None:
        """Render at level of detail ``lod`` (``0 ≤ lod < L``, or None for all levels).

        Raises:
            ValueError: ``lod`` out of range.
        """
        if lod is not None and not 0 <= int(lod) < self.num_lods:
            raise ValueError(f"shacira: level of detail must be in [0, {self.num_lods - 1}], got {lod}")
        self.field.lod = None if lod is None or int(lod) == self.num_lods - 1 else int(lod)

    def lod_bytes(self) -> List[int]:
        """Cumulative ``.nsc`` bytes needed for each level of detail (from the decoded file's LOD table, else by
        exporting the current model once and caching the table)."""
        if self._lod_bytes is None:
            import tempfile
            from pathlib import Path

            from nscodec.io import export_model
            from nscodec.lod import lod_table
            from nscodec.coding.container import read_nsc

            with tempfile.TemporaryDirectory(prefix="nscodec-lod-") as tmp:
                export_model(self, Path(tmp) / "m.nsc")
                rows = lod_table(read_nsc(Path(tmp) / "m.nsc"))
            self._lod_bytes = [r["bytes"] for r in rows]
        return self._lod_bytes

    def _setup_viewer_controls(self) -> None:
        """A nerfstudio viewer slider picking the LOD, and a read-only text with that LOD's cumulative bytes."""
        try:
            from nerfstudio.viewer.viewer_elements import ViewerSlider, ViewerText
        except Exception:  # viewer extras missing: the model works without the controls
            return
        last = self.num_lods - 1

        def on_change(slider) -> None:
            lod = int(slider.value)
            self.set_lod(lod)
            try:
                size = self.lod_bytes()[min(lod, len(self.lod_bytes()) - 1)]
                self.viewer_lod_bytes.value = f"level {lod}/{last}: {size:,} bytes"
            except Exception as err:  # e.g. nothing exportable yet
                self.viewer_lod_bytes.value = f"level {lod}/{last}: size unavailable ({err})"

        self.viewer_lod = ViewerSlider("SHACIRA level of detail", last, 0, last, step=1, cb_hook=on_change,
                                       hint="render with hash-grid levels 0..l (finer levels zeroed)")
        self.viewer_lod_bytes = ViewerText("SHACIRA LOD bytes", f"level {last}/{last}", disabled=True)

    # -------------------------------------------------------------------------------------------- schedule
    @property
    def step_size(self) -> float:
        extent = float((self.scene_box.aabb[1] - self.scene_box.aabb[0]).mean())
        step = extent / self.config.render_steps
        if not self.occupancy_ready or self.occupied_fraction() > self.config.coarse_march_above:
            step *= self.config.warmup_step_multiplier
        return step

    def occupied_fraction(self) -> float:
        """Occupied fraction of the occupancy grid (a function of saved state, cached per grid update)."""
        key = (int(self.occupancy.num_updates), self.occupancy.occupied.data_ptr())
        if self._occupied_fraction[0] != key:
            self._occupied_fraction = (key, float(self.occupancy.occupied.float().mean()))
        return self._occupied_fraction[1]

    def tau(self) -> Optional[float]:
        """Soft-rounding temperature now (None once annealing is over: straight-through rounding)."""
        c = self.config
        return anneal_temperature(self._step, self._max_steps, c.anneal_fraction, c.tau_start, c.tau_end)

    def planes_trainable(self) -> bool:
        return False  # no TensoRF planes (disables the inherited upsampling callback)

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attrs)
        max_steps = attrs.trainer.config.max_num_iterations if attrs.trainer is not None else 1

        def track(step: int) -> None:
            self._step = step
            self._max_steps = max(1, max_steps)

        def finalize(step: int) -> None:
            if step == max_steps - 1:
                self.round_dense_for_storage()

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], track, update_every_num_iters=1)] + callbacks + [
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], finalize, update_every_num_iters=1)
        ]

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        f = self.field
        enc = f.encoding
        groups = {
            "fields": list(f.mlp_base.parameters()) + list(f.mlp_head.parameters()),
            "encodings": [enc.latents] if enc.compress else [enc.table],
            "codec": list(enc.decoder.parameters()) + list(self.prior.parameters()) if enc.compress else [self._placeholder],
        }
        return groups

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
            with torch.no_grad():
                self._eval_table = enc.get_table("round").detach()
        return self._eval_table

    def train(self, mode: bool = True):
        self._eval_table = None
        return super().train(mode)

    @torch.no_grad()
    def update_occupancy(self) -> float:
        """Refresh the occupancy grid from the current (rounded-latent) density; returns the occupied fraction.

        As Instant-NGP's density grid, the threshold is ``min(occupancy_threshold, mean alpha)`` (mean over random
        points of the box), so a field that is still transparent everywhere early in training is never carved
        away entirely (which would leave no samples, hence no gradients)."""
        table = self.encoding.get_table("round")
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
        mode = "noise" if self.training else "round"
        _, lik = self.prior(y, mode=mode)
        return FactorizedPrior.rate_bits(lik)

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
    def round_dense_for_storage(self) -> None:
        """Round the dense parameters to their storage dtype in place, so the ``.nsc`` is lossless for them and a
        decoded file renders exactly like this model."""
        if self._dense_dtype() == "float16":
            for mod in self.dense_modules().values():
                for p in mod.parameters():
                    p.copy_(p.half().float())
        self._eval_table = None
        self._lod_bytes = None

    def nsc_sections(self) -> List[Section]:
        """Sections: dense MLPs/decoder and occupancy (needed by every LOD), then one section per hash-grid level,
        coarse to fine, with ``meta.lod = l``: ANS-coded ``round(Q̂_l)`` ``[D, T_l]`` under the learned per-dimension
        densities (compressed), or the raw fp32 table ``[T_l, F]`` (baseline)."""
        from nscodec.coding.quantization import to_symbols
        from nscodec.coding.tensor_codec import entropy_section, raw_section

        self.round_dense_for_storage()
        sections = dense_sections(self.dense_modules(), self._dense_dtype())
        sections.append(occupancy_section(self.occupancy))
        enc = self.encoding
        for lvl, sl in enumerate(enc.level_slices()):
            meta = {"lod": lvl, "rows": enc.level_sizes[lvl]}
            if enc.compress:
                sym = to_symbols(enc.latents[sl].t().contiguous()).cpu().numpy()  # [D, T_l]
                table = self.prior.build_cdf_table(symbols=sym)
                sections.append(entropy_section(f"latents.level{lvl:02d}", sym, table, meta=meta))
            else:
                sections.append(raw_section(f"table.level{lvl:02d}", enc.table[sl].detach().cpu().numpy(), "float32", meta=meta))
        return sections

    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Inverse of :meth:`nsc_sections`; decodes the levels present in ``nsc`` (a file prefix may hold only
        levels ``0..l``) and then renders at that LOD (finer latents are zero and masked out).

        Raises:
            NscFormatError: missing/malformed sections, or not even level 0 present.
        """
        from nscodec.coding.errors import NscFormatError
        from nscodec.coding.tensor_codec import decode_section
        from nscodec.lod import available_lod, lod_table

        top = available_lod(nsc)
        enc = self.encoding
        dense = self.dense_modules()
        prefix = "latents" if enc.compress else "table"
        levels = [f"{prefix}.level{l:02d}" for l in range(min(top, enc.num_levels - 1) + 1)]
        nsc.require(dense_section_names(dense) + ["occupancy"] + levels, optional=[f"{prefix}.level{l:02d}" for l in range(enc.num_levels)])
        load_dense_sections(dense, nsc)
        load_occupancy_section(self.occupancy, nsc)
        param = enc.latents if enc.compress else enc.table
        with torch.no_grad():
            param.zero_()
            for lvl, sl in enumerate(enc.level_slices()[: len(levels)]):
                arr = decode_section(nsc.sections[levels[lvl]])
                want = (param.shape[1], enc.level_sizes[lvl]) if enc.compress else (enc.level_sizes[lvl], param.shape[1])
                if tuple(arr.shape) != want:
                    raise NscFormatError(f"section {levels[lvl]!r}: shape {tuple(arr.shape)}, model expects {want}")
                val = torch.from_numpy(np.ascontiguousarray(arr).astype(np.float32))
                param[sl] = val.t() if enc.compress else val
        self.set_lod(len(levels) - 1)
        self._lod_bytes = [r["bytes"] for r in lod_table(nsc)]
        self._eval_table = None


def uncompressed_table_bytes(model: ShaciraModel) -> int:
    """fp32 bytes of the hash tables of ``model``'s configuration (``ΣT_l · F · 4``)."""
    return fp32_table_bytes(model.encoding)
