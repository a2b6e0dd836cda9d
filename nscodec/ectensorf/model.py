"""``ectensorf``: Neural NeRF Compression (Pham et al. 2024, arXiv 2406.08943) on the nscodec TensoRF-VM base.

Stage 1 trains :class:`~nscodec.tensorf.model.NscTensoRFModel`. Stage 2 (from ``stage1_steps``, or from step 0
with ``init_from``) replaces each VM plane stack (density ``[3, 16, N, N]``, appearance ``[3, 48, N, N]``) by
latent codes ``Z`` at ``ceil(N/4)`` as in the paper (``ceil(N/2)`` in the CPU default; zero-initialised) and a decoder
of two transposed convolutions (:class:`~nscodec.ectensorf.decoder.LatentPlaneDecoder`). The latents are rated by
a masked (spike-and-slab) factorized entropy model (:class:`~nscodec.coding.MaskedFactorizedPrior`, Gumbel-softmax
masks with annealed temperature; a plain factorized prior in the CPU default) and the objective is (paper Eq. for
the rate-distortion loss)::

    L = λ · R[Mbit] + w_rec · mean_i( W_i ⊙ (D(Ẑ)_i − P*_i)² ) + L_render

with ``P*`` the stage-1 planes and ``W`` their rendering-importance maps (sum of training-ray weights that
read each location, :mod:`nscodec.ectensorf.importance`), normalised to mean 1. Lines, basis matrix, MLP
heads and decoder keep training in stage 2; they are stored with ``dense_bits``-bit power-of-two quantization and
entropy coding (biases float16); their file share is in ``nscodec info``.

Each latent channel has a learned quantization step ``Δ_c = exp(s_c)`` (``learn_latent_step``; learned step size
quantization, Esser et al. 2020, not in the paper): the decoder reads ``Δ ⊙ round(Y / Δ)`` and the entropy model
rates the symbols ``round(Y / Δ)``, so the rate–distortion gradient sets how finely each channel is quantized rather
than the decoder's initial weight scale. At the last step ``Δ`` is folded into the decoder's first layer (exact:
it is linear in its input) and the latents become the integer symbols, so the file format does not change.

The occupancy grid refreshed from the pretrained field at the switch bounds every stage-2 occupancy update
(:meth:`ECTensoRFModel.occupancy_bound`): the importance maps are ~0 in empty space, where the decoded planes may
hold low density that the pretrained grid skipped, and stage 2 may only carve cells, not add them (not in the paper).

Evaluation (and the ``.nsc``) uses rounded latents and the deterministic mask; the last training step (or, for an
export mid-training, a copy) folds the latent steps and quantizes the dense parts in place
(:meth:`ECTensoRFModel.finalize_for_storage`), so a decoded file renders bit-identically to the model that was
evaluated. The decoders run under :meth:`~nscodec.core.model_base.NscModel.decoding` at evaluation (a fixed thread count).

Length: the paper's method section in one model (stage switch, latents and decoders, rate, importance-weighted loss,
the file); its parts are in this folder (decoder, importance maps).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Dict, List, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from torch import Tensor, nn
from torch.nn import Parameter

from nscodec.coding.container import NscFile, Section
from nscodec.coding.entropy_models import MaskedFactorizedPrior
from nscodec.errors import NscError, NscFormatError
from nscodec.coding.quantization import annealed_temperature, quantize
from nscodec.coding.sections import (
    dense_section_names,
    dense_sections,
    load_dense_sections,
    load_occupancy_section,
    meta_int,
    occupancy_section,
    quantize_dense_,
)
from nscodec.ectensorf.decoder import LatentPlaneDecoder, latent_size
from nscodec.ectensorf.importance import accumulate_importance
from nscodec.optim import reset_param_group
from nscodec.tensorf.model import NscTensoRFModel, NscTensoRFModelConfig

STACKS = ("density", "color")


@dataclass
class ECTensoRFModelConfig(NscTensoRFModelConfig):
    """Config of :class:`ECTensoRFModel`: CPU-sized defaults (lego 200², 1,200 + 600 steps).

    Five choices differ from the paper because they measured better at this budget (docs/benchmarks.md, "stage-2
    probes" and the RD sweep): latents at 1/2 of the plane resolution (``latent_downsample``), no mask
    (``use_mask``), a learned latent quantization step (``learn_latent_step``), a plane-only prefit of the latents
    at the switch (``latent_prefit_steps``), and stage-2 occupancy updates bounded by the pretrained grid
    (``bound_stage2_occupancy``). ``ns-train ectensorf-paper`` turns all five back to the paper's (1/4 latents, the
    masked entropy model, unit steps, zero latents, an unbounded grid), with its schedule."""

    _target: Type = field(default_factory=lambda: ECTensoRFModel)
    #: 8 samples per training ray on captures: faster than 12 at about equal quality on fox (docs/benchmarks.md,
    #: "Capture kernels")
    capture_samples_per_ray: ClassVar[int] = 8
    step_ratio: float = 0.5
    """Half-voxel sample spacing (denser than ``nscodec-tensorf``'s default of 1): ectensorf trains a fixed number
    of steps, not a wall-clock budget, and its rate–distortion figures in docs/benchmarks.md were measured so."""
    stage1_steps: int = 1200
    """TensoRF pretraining steps (stage 1); compression (stage 2) runs from here to the last step. Stage 1 of the
    default run (1,200 of 1,800 steps, schedules over 1,800) is the first 1,200 steps of the RD sweep's 1,800-step
    ``nscodec-tensorf`` base, so docs/benchmarks.md's sweep measures this preset."""
    upsampling_iters: Tuple[int, ...] = (240, 480, 720, 960)
    """Plane upsampling steps; all must come before ``stage1_steps``."""
    init_from: Optional[Path] = None
    """Checkpoint (.ckpt) of nscodec-tensorf or stock nerfstudio tensorf to compress: stage 2 only."""
    latent_channels_density: int = 16
    """Latent channels per density plane (``ceil(N/4)²`` positions each); the density stack has 16 components."""
    latent_channels_color: int = 48
    """Latent channels per appearance plane; the appearance stack has 48 components. Fewer channels measured
    clearly worse, more channels a worse trade than a smaller λ (docs/benchmarks.md, capacity probes)."""
    decoder_hidden: int = 96
    """Channels between the decoder's two transposed convolutions (96 measured a better trade than 64 or a smaller λ;
    docs/benchmarks.md)."""
    latent_downsample: int = 2
    """Plane resolution / latent resolution: 4 as in the paper (two stride-2 layers), or 2 (4× as many latent
    locations; the decoder's first layer is stride 1). Stored in the file's config. Default 2: it measured better
    than 4 at this budget (docs/benchmarks.md, stage-2 probes)."""
    rate_lambda: float = 3e-5
    """λ: weight of the rate, counted in Mbit (1e6 bits): the loss is ``λ·R + D`` (paper Sec. 3). Larger λ, smaller
    files; the measured RD curve is in docs/benchmarks.md."""
    recon_weight: float = 1e-3
    """Weight of the (importance-weighted) plane reconstruction term, against the rendering MSE. Large weights tie
    the planes to what the latents can copy; small ones let them drift from the pretrained planes while rendering
    recovers from the switch. The default measured best at this budget (docs/benchmarks.md)."""
    use_importance: bool = True
    """Ablation switch: False weights every plane location equally."""
    use_mask: bool = False
    """The paper's masked (spike-and-slab) entropy model; False = a plain factorized prior (every latent is coded).
    Off by default: with 600 stage-2 steps the mask measured a loss (docs/benchmarks.md, ablations) — no mask entry
    closed, and the Gumbel samples only drop latents at random. ``ectensorf-paper`` turns it on."""
    tau_start: float = 1.0
    tau_end: float = 0.05
    """Gumbel-softmax temperature, annealed exponentially over stage 2."""
    importance_batches: int = 32
    """Training-ray batches used to accumulate the importance maps."""
    latent_prefit_steps: int = 300
    """Adam steps fitting the zero-initialised latents and decoders to the pretrained planes (importance-weighted
    reconstruction + λ·rate, no rendering) at the stage switch. Not in the paper, which starts stage 2 from zero
    latents directly; it removes the PSNR collapse at the switch. 0 disables it."""
    latent_prefit_lr: float = 2e-2
    learn_latent_step: bool = True
    """Learn one quantization step per latent channel (see the module docstring; not in the paper). Off = the
    paper's unit step, where the scale the decoder settles at in the plane-only prefit fixes the precision: most
    latents then round to 0 and a smaller λ buys no PSNR (docs/benchmarks.md)."""
    bound_stage2_occupancy: bool = True
    """Stage-2 occupancy updates only carve inside the grid of the pretrained field (:meth:`ECTensoRFModel.occupancy_bound`;
    not in the paper). Off: stage 2 updates its grid from the decoded planes alone, as stage 1 does."""
    rate_knots: int = 0
    """Training rate of the latents through :meth:`~nscodec.coding.entropy_models.FactorizedPrior.rate`'s
    tabulated path: ``-log2 P`` exact at this many knots per latent channel, linear in between (the density network
    runs on the knots, not on each latent). 0: the exact rate of every latent. Evaluation and the file are always
    exact; applies without the mask (``use_mask`` off)."""
    dense_bits: int = 6
    """Storage of the parts that are not latents (plane decoders, line factors, basis matrix, MLP heads): weights
    with ≥ 2 dims quantized per channel to this many bits with power-of-two steps and entropy-coded
    (:func:`~nscodec.coding.sections.dense_sections`); biases float16. 0 stores everything as float16. Applied in
    place at the last training step (or to the exported copy), so the evaluated model is the file."""

    #: training-only fields: the stage-2 objective, its temperature anneal and the latent prefit
    nsc_unread_fields: ClassVar[frozenset] = NscTensoRFModelConfig.nsc_unread_fields | {
        "rate_lambda", "recon_weight", "tau_start", "tau_end", "importance_batches", "latent_prefit_steps",
        "latent_prefit_lr", "rate_knots"}

    def nsc_limits(self):
        return {**super().nsc_limits(), "latent_channels_density": (1, 256), "latent_channels_color": (1, 256),
                "decoder_hidden": (1, 1024), "latent_downsample": (2, 4), "dense_bits": (0, 16),
                "stage1_steps": (0, 1 << 31)}

    def nsc_derived_limits(self):
        rows = list(super().nsc_derived_limits())
        if self.init_from is None and self.upsampling_iters:  # the planes stop being free parameters at the switch
            rows.append(("last upsampling step - stage1_steps (upsampling must end before stage 2)",
                         max(self.upsampling_iters) - self.stage1_steps, -1))
        return rows

    def nsc_decode_bytes(self) -> Dict[str, int]:
        """On top of the TensoRF base: the latents and their mask logits, the decoders, and the buffers of the codec
        (target planes, decoded planes, importance maps, occupancy bound) at the largest plane resolution."""
        r = self.max_plane_resolution()
        h = -(-r // int(self.latent_downsample))
        k = 9 if int(self.latent_downsample) == 2 else 16
        hid, comps = int(self.decoder_hidden), int(self.num_den_components) + int(self.num_color_components)
        lat = int(self.latent_channels_density) + int(self.latent_channels_color)
        g = int(self.occupancy_resolution)
        return {**super().nsc_decode_bytes(),
                "latents and mask logits": 4 * 2 * 3 * lat * h * h,
                "latent decoders": 4 * (lat * hid * k + hid * comps * 16 + 2 * (hid + comps) + 64 * lat),
                "target and decoded planes, importance, occupancy bound": 4 * (2 * 3 * comps * r * r + 3 * r * r) + g ** 3}


class ECTensoRFModel(NscTensoRFModel):
    """TensoRF-VM whose planes are decoded from entropy-coded latents in stage 2 (see module docstring)."""

    config: ECTensoRFModelConfig
    #: unlike its post-hoc base, the file is what training produced: the last step rounds the model in place
    finalize_at_last_step: ClassVar[bool] = True

    def populate_modules(self) -> None:
        cfg = self.config
        if cfg.init_from is None and any(it >= cfg.stage1_steps for it in cfg.upsampling_iters):
            raise ValueError(
                f"ectensorf: every upsampling step {tuple(cfg.upsampling_iters)} must come before stage1_steps="
                f"{cfg.stage1_steps} (the planes stop being free parameters in stage 2)"
            )
        if cfg.latent_downsample not in (2, 4):
            raise ValueError(f"ectensorf: latent_downsample must be 4 (the paper) or 2, got {cfg.latent_downsample}")
        if not (cfg.dense_bits == 0 or 2 <= cfg.dense_bits <= 16):
            raise ValueError(f"ectensorf: dense_bits must be 0 (float16) or 2..16, got {cfg.dense_bits}")
        super().populate_modules()
        self.stage2 = False
        self.codec = nn.Module()  # latents / decoders / entropy models, created at the stage switch
        self._decoded_cache: Optional[tuple] = None
        # nerfstudio builds one optimizer per param group at setup and Adam rejects empty lists: stage 1 holds
        # a 0-element placeholder in the groups that only stage 2 fills (it never gets a gradient).
        self._placeholder = Parameter(torch.zeros(0))

    # ------------------------------------------------------------------------------------------ structure
    def _build_codec(self, resolution: int) -> None:
        cfg = self.config
        h = latent_size(resolution, cfg.latent_downsample)
        codec = nn.Module()
        for stack, c_lat in (("density", cfg.latent_channels_density), ("color", cfg.latent_channels_color)):
            enc = getattr(self.field, f"{stack}_encoding")
            codec.register_parameter(f"latents_{stack}", Parameter(torch.zeros(3 * c_lat, h, h)))
            # log Δ per latent channel (shared by the 3 planes); 0 = unit step, the paper's integer latents
            codec.register_parameter(f"log_step_{stack}", Parameter(torch.zeros(c_lat), requires_grad=cfg.learn_latent_step))
            codec.add_module(f"decoder_{stack}", LatentPlaneDecoder(c_lat, enc.num_components, cfg.decoder_hidden, cfg.latent_downsample))
            codec.add_module(
                f"prior_{stack}",
                MaskedFactorizedPrior(3 * c_lat, h, h, init_mask_logit=2.0 if cfg.use_mask else 30.0),
            )
            codec.register_buffer(f"target_{stack}", torch.zeros(3, enc.num_components, resolution, resolution))
        codec.register_buffer("importance", torch.ones(3, resolution, resolution))
        # the stage-1 occupancy grid: stage-2 updates may only carve inside it (see enter_stage2)
        codec.register_buffer("occupancy_bound", torch.ones_like(self.occupancy.occupied))
        device = self.field.aabb.device
        self.codec = codec.to(device)
        self.plane_resolution = resolution
        for stack in STACKS:  # planes are now a function of the latents, not parameters
            enc = getattr(self.field, f"{stack}_encoding")
            if "plane_coef" in enc._parameters:
                del enc._parameters["plane_coef"]
            enc.plane_coef = torch.zeros(3, enc.num_components, resolution, resolution, device=device)
        self.stage2 = True
        self._decoded_cache = None

    def enter_stage2(self, ray_bundles=None) -> None:
        """Switch to compression: importance maps from the current (pretrained) field, targets = its planes,
        zero latents, then ``latent_prefit_steps`` of plane-only fitting. ``ray_bundles``: training rays for the
        importance maps (None → uniform maps).

        The occupancy grid is refreshed from the pretrained field and kept as an upper bound for stage 2
        (:meth:`occupancy_bound`). Importance is near 0 in empty space, so the decoded planes are free to hold
        "fog" there; an unbounded update at the switch marks many more cells occupied and the render collapses
        (``bench/ectensorf_switch.py``). Bounded, stage 2 renders only where the pretrained model has density and
        can only carve, never add, occupied cells."""
        cfg = self.config
        res = self.field.density_encoding.resolution
        self.update_occupancy()  # still stage 1: the pretrained field's grid, unbounded
        with torch.no_grad():
            bound = self.occupancy.occupied.clone()
            targets = {s: getattr(self.field, f"{s}_encoding").plane_coef.detach().clone() for s in STACKS}
            importance = None
            if cfg.use_importance and ray_bundles is not None:
                importance = accumulate_importance(self, ray_bundles, res)
            self._build_codec(res)
            for s in STACKS:
                getattr(self.codec, f"target_{s}").copy_(targets[s])
            self.codec.occupancy_bound.copy_(bound)
            if importance is not None:
                imp = importance.to(self.codec.importance.device)
                imp = imp / imp.mean(dim=(1, 2), keepdim=True).clamp_min(1e-12)
                self.codec.importance.copy_(imp)
        self.prefit_latents(cfg.latent_prefit_steps)
        with torch.no_grad():  # the field now renders the decoded planes (occupancy updates read them)
            was_training = self.training
            self.eval()
            self._install_planes()
            self.train(was_training)

    def plane_rate_distortion(self, dec: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """``(λ-weighted rate in Mbit, importance-weighted plane reconstruction MSE)`` of decoded planes ``dec``
        (output of :meth:`decode_planes`), the stage-2 terms of paper Sec. 3 besides the rendering loss."""
        rec = 0.0
        for s in STACKS:
            err = (dec[s] - getattr(self.codec, f"target_{s}")) ** 2  # [3, C, N, N]
            rec = rec + (err * self.codec.importance[:, None]).mean()
        return self.config.rate_lambda * dec["rate_bits"] / 1e6, self.config.recon_weight * rec

    def prefit_latents(self, steps: int) -> List[float]:
        """Fit latents, decoders and priors to the target planes alone (no rendering) for ``steps`` Adam steps.

        Returns:
            the loss after each step (rate + reconstruction), for logging/tests.
        """
        if steps <= 0:
            return []
        was_training = self.training
        self.train()
        self._step = self._stage2_start()  # tau at its start value
        params = list(self.codec.parameters())
        opt = torch.optim.Adam(params, lr=self.config.latent_prefit_lr)
        history = []
        for _ in range(steps):
            dec = self.decode_planes()
            rate, rec = self.plane_rate_distortion(dec)
            aux = sum(getattr(self.codec, f"prior_{s}").aux_loss() for s in STACKS)
            loss = rate + rec
            opt.zero_grad(set_to_none=True)
            (loss + aux).backward()
            opt.step()
            history.append(float(loss))
        self.train(was_training)
        self._decoded_cache = None
        return history

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        key = prefix + "codec.latents_density"
        if key in state_dict and not self.stage2:  # a stage-2 checkpoint: build the structure to load into
            res = int(state_dict[prefix + "codec.target_density"].shape[-1])
            self.field.upsample(res)
            self._build_codec(res)
        if key in state_dict:  # older checkpoints: unit latent steps, no occupancy bound (every cell allowed)
            for s in STACKS:
                z = state_dict[prefix + f"codec.latents_{s}"]
                state_dict.setdefault(prefix + f"codec.log_step_{s}", z.new_zeros(z.shape[0] // 3))
            state_dict.setdefault(prefix + "codec.occupancy_bound", torch.ones_like(self.occupancy.occupied))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def planes_trainable(self) -> bool:
        return not self.stage2

    def occupancy_bound(self) -> Optional[Tensor]:
        """Stage 2: the grid at the stage switch ``[G, G, G]`` bool (updates only carve inside it); stage 1, or
        ``bound_stage2_occupancy`` off: None."""
        return self.codec.occupancy_bound if self.stage2 and self.config.bound_stage2_occupancy else None

    # ------------------------------------------------------------------------------------------ decoding
    def tau(self) -> float:
        """Gumbel-softmax temperature at the current stage-2 step: the shared exponential anneal
        (:func:`~nscodec.coding.quantization.annealed_temperature`) over stage 2, ``tau_end`` after it."""
        cfg = self.config
        start = self._stage2_start()
        steps = max(1, (self._max_steps or start + 1) - start)
        tau = annealed_temperature(self._step - start, steps, 1.0, cfg.tau_start, cfg.tau_end)
        return cfg.tau_end if tau is None else tau

    def _stage2_start(self) -> int:
        return 0 if self.config.init_from is not None else self.config.stage1_steps

    def decode_planes(self, rate: bool = True) -> Dict[str, Tensor]:
        """Decode ``{stack: planes [3, C, N, N]}`` plus, with ``rate``, ``"rate_bits"`` (scalar, bits; evaluation
        rendering skips it: the file's bytes are measured, not estimated).

        The symbols are ``Y / Δ`` (latents over their channel's quantization step, :meth:`latent_steps`); the
        decoder reads ``Δ ⊙ Ŷ``. Training: one Gumbel-softmax mask sample per step (deterministic when ``use_mask``
        is off), straight-through rounding for the values and the additive-noise likelihood for the rate ("mixed"
        quantization, Minnen & Singh 2020); through the rounding, ``Δ`` gets the learned-step-size gradient
        ``Ŷ − Y/Δ`` (Esser et al. 2020). Evaluation: rounded symbols, deterministic mask — exactly what the file
        holds once the steps are folded (:meth:`fold_latent_steps`)."""
        out: Dict[str, Tensor] = {}
        bits = torch.zeros((), device=self.codec.importance.device)
        for s in STACKS:
            prior: MaskedFactorizedPrior = getattr(self.codec, f"prior_{s}")
            z = getattr(self.codec, f"latents_{s}")
            c_lat = z.shape[0] // 3
            step = self.latent_steps(s).view(1, c_lat, 1, 1)
            sym = (z.view(3, c_lat, *z.shape[1:]) / step).view(z.shape)
            if self.training:  # one mask sample; STE values, rate from the noisy-latent likelihood
                z_hat, rate, _ = prior(sym, tau=self.tau(), mode="mixed", stochastic=self.config.use_mask,
                                       knots=self.config.rate_knots)
                bits = bits + rate
            elif rate:
                z_hat, bits_s, _ = prior(sym, mode="round", stochastic=False)
                bits = bits + bits_s.detach()
            else:  # what the file holds: rounded symbols where the mask is open
                z_hat = quantize(sym, "round") * prior.deterministic_mask()
            planes_in = z_hat.view(3, c_lat, *z.shape[1:]) * step
            out[s] = getattr(self.codec, f"decoder_{s}")(planes_in, self.plane_resolution)
        if rate or self.training:
            out["rate_bits"] = bits
        return out

    def latent_steps(self, stack: str) -> Tensor:
        """Quantization step ``Δ = exp(s)`` ``[C_lat]`` of each latent channel of ``stack`` (latent units)."""
        return torch.exp(getattr(self.codec, f"log_step_{stack}"))

    @torch.no_grad()
    def fold_latent_steps(self) -> None:
        """Fold each channel's step into its decoder: latents ``Y ← Y / Δ``, first-layer weights ``W[c] ← Δ_c W[c]``,
        ``Δ ← 1``. The decoded planes are unchanged (the transposed convolution is linear in its input; equal up to
        float rounding) and the latents are now the symbols the file stores. Idempotent."""
        for s in STACKS:
            log_step = getattr(self.codec, f"log_step_{s}")
            if not torch.any(log_step != 0):
                continue
            step = torch.exp(log_step)
            z = getattr(self.codec, f"latents_{s}")
            c_lat = step.numel()
            z.copy_((z.view(3, c_lat, *z.shape[1:]) / step.view(1, c_lat, 1, 1)).view(z.shape))
            getattr(self.codec, f"decoder_{s}").up1.weight.mul_(step.view(c_lat, 1, 1, 1))
            log_step.zero_()
        self._decoded_cache = None

    def _install_planes(self) -> Dict[str, Tensor]:
        if self.training:
            self._decoded_cache = None
            dec = self.decode_planes()
        else:
            if self._decoded_cache is None:
                with torch.no_grad(), self.decoding():
                    self._decoded_cache = (self.decode_planes(rate=False),)
            dec = self._decoded_cache[0]
        for s in STACKS:
            getattr(self.field, f"{s}_encoding").plane_coef = dec[s]
        return dec

    def get_outputs(self, ray_bundle):
        if not self.stage2:
            return super().get_outputs(ray_bundle)
        dec = self._install_planes()
        out = super().get_outputs(ray_bundle)
        if self.training:
            out["_decoded"] = dec  # consumed by get_loss_dict
        return out

    def train(self, mode: bool = True):
        self._decoded_cache = None
        return super().train(mode)

    # -------------------------------------------------------------------------------------------- losses
    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        loss = super().get_loss_dict(outputs, batch, metrics_dict)
        dec = outputs.pop("_decoded", None)
        if dec is None:
            return loss
        loss.pop("l1_reg", None)  # the planes are no longer free parameters
        loss["rate"], loss["plane_reconstruction"] = self.plane_rate_distortion(dec)
        aux = sum(getattr(self.codec, f"prior_{s}").aux_loss() for s in STACKS)
        loss["entropy_aux"] = aux  # quantile fit of the priors (no effect on the rate-distortion gradient)
        return loss

    def get_metrics_dict(self, outputs, batch) -> Dict[str, Tensor]:
        m = super().get_metrics_dict(outputs, batch)
        if self.stage2 and "_decoded" in outputs:
            m["rate_kbytes"] = outputs["_decoded"]["rate_bits"].detach() / 8e3
            m["gumbel_tau"] = torch.tensor(self.tau())
        return m

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        if self.stage2:
            groups["encodings"] = [self.field.density_encoding.line_coef, self.field.color_encoding.line_coef]
            groups["latents"] = [p for n, p in self.codec.named_parameters() if n.startswith(("latents_", "log_step_"))]
            groups["codec"] = [p for n, p in self.codec.named_parameters() if not n.startswith(("latents_", "log_step_"))]
        else:
            groups["latents"] = [self._placeholder]
            groups["codec"] = [self._placeholder]
        return groups

    # ----------------------------------------------------------------------------------------- callbacks
    def method_training_callbacks(self, attrs: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """The stage switch (before the step at ``stage1_steps``, or step 0 with ``init_from``), then TensoRF's."""
        cfg = self.config

        def switch(step: int) -> None:
            if self.stage2 or step != self._stage2_start():
                return
            if cfg.init_from is not None:
                self.load_pretrained(Path(cfg.init_from))
            dm = attrs.pipeline.datamanager
            bundles = [dm.next_train(step)[0] for _ in range(cfg.importance_batches)]
            self.enter_stage2(bundles)
            self.update_occupancy()
            # every stage-2 schedule restarts here and decays over the steps that are left, so the learning rates
            # reach their final values at the last step whatever --max-num-iterations is (docs/benchmarks.md)
            max_steps = attrs.trainer.config.max_num_iterations if attrs.trainer is not None else step + 1
            left = max_steps - step
            for group in ("encodings", "latents", "codec"):
                reset_param_group(attrs, group, max_steps=left)
            reset_param_group(attrs, "fields", max_steps=left, keep_state=True)

        switch_cb = TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], switch, update_every_num_iters=1)
        return [switch_cb] + super().method_training_callbacks(attrs)

    @torch.no_grad()
    def load_pretrained(self, ckpt: Path) -> None:
        """Load the field of a ``nscodec-tensorf`` or stock ``tensorf`` checkpoint (``step-*.ckpt``).

        Raises:
            FileNotFoundError / ValueError: missing file, or no TensoRF field in it.
        """
        if not ckpt.is_file():
            raise FileNotFoundError(f"init_from checkpoint not found: {ckpt}")
        state = torch.load(ckpt, map_location="cpu")
        pipe = state.get("pipeline", state)
        prefix = next((p for p in ("_model.field.", "module._model.field.") if p + "density_encoding.plane_coef" in pipe), None)
        if prefix is None:
            raise ValueError(f"{ckpt} holds no TensoRF-VM field (expected '_model.field.density_encoding.plane_coef')")
        field_state = {k[len(prefix) :]: v for k, v in pipe.items() if k.startswith(prefix)}
        self.field.load_state_dict(field_state, strict=True)
        occ_prefix = prefix.replace("field.", "occupancy.")
        if occ_prefix + "occupied" in pipe:
            self.occupancy.load_state_dict({k[len(occ_prefix) :]: v for k, v in pipe.items() if k.startswith(occ_prefix)}, strict=False)
        self.occupancy.num_updates.fill_(max(1, int(self.occupancy.num_updates)))

    # ------------------------------------------------------------------------------------------- .nsc codec
    def dense_modules(self) -> Dict[str, nn.Module]:
        mods = super().dense_modules()
        lines = nn.Module()
        lines.register_parameter("density", self.field.density_encoding.line_coef)
        lines.register_parameter("color", self.field.color_encoding.line_coef)
        mods["lines"] = lines
        if self.stage2:
            mods["decoder_density"] = self.codec.decoder_density
            mods["decoder_color"] = self.codec.decoder_color
        return mods

    #: line factors [3, C, N, 1] get one quantization step per (plane, component); other weights one per row
    DENSE_CHANNEL_DIMS = {"lines": 2}

    def export_blocker(self) -> Optional[str]:
        if not self.stage2:
            return "ectensorf model is still in stage 1 (TensoRF pretraining): train past stage1_steps first"
        return None

    @torch.no_grad()
    def finalize_for_storage(self) -> None:
        """Round every parameter outside the latents to its stored value in place (``dense_bits``-bit power-of-two
        quantization, or float16), so the .nsc decodes to exactly the evaluated model. Folds the latent steps
        into the decoders first (:meth:`fold_latent_steps`). Idempotent."""
        if self.stage2:
            self.fold_latent_steps()
        quantize_dense_(self.dense_modules(), int(self.config.dense_bits), self.DENSE_CHANNEL_DIMS)
        self._decoded_cache = None

    def decoded_tensors(self) -> Dict[str, Tensor]:
        """The planes ``[3, C, N, N]`` the decoders compute from the rounded latents (as evaluation renders them)."""
        if not self.stage2:
            return {}
        was = self.training
        self.eval()
        try:
            dec = self._install_planes()
            return {f"{s}.planes": dec[s] for s in STACKS}
        finally:
            self.train(was)

    def nsc_sections(self) -> List[Section]:
        """Entropy-coded latents (only where the mask is 1; the mask coded with each channel's open fraction,
        :meth:`MaskedFactorizedPrior.mask_cdf_table`), quantized dense parts, occupancy.

        Raises:
            NscError: still in stage 1 (nothing compressed yet), or not finalized (latent steps not folded)."""
        blocker = self.export_blocker()
        if blocker is not None:
            raise NscError(blocker)
        if any(bool(torch.any(getattr(self.codec, f"log_step_{s}") != 0)) for s in STACKS):
            raise NscError("ectensorf: the latent steps are not folded; export through NscModel.encode (finalize first)")
        sections = []
        for s in STACKS:
            prior: MaskedFactorizedPrior = getattr(self.codec, f"prior_{s}")
            meta = {"plane_resolution": int(self.plane_resolution)}
            sections += prior.encode_sections(s, getattr(self.codec, f"latents_{s}"), meta=meta)
        sections += dense_sections(self.dense_modules(), bits=int(self.config.dense_bits), channel_dims=self.DENSE_CHANNEL_DIMS)
        sections.append(occupancy_section(self.occupancy, coder="ctx3d"))
        return sections

    def load_nsc_sections(self, nsc: NscFile) -> None:
        """Inverse of :meth:`nsc_sections`: integer latents and masks, quantized dense parts, occupancy.

        Raises:
            NscFormatError: missing/extra/malformed sections; a plane resolution outside [2, the config's largest]
                or not matching the latents' shape; mask values other than 0/1.
        """
        if "latents.density" not in nsc.sections:
            raise NscFormatError("missing section 'latents.density'")
        res = meta_int(nsc.sections["latents.density"], "plane_resolution", 2, self.config.max_plane_resolution())
        self.field.upsample(res)
        self._build_codec(res)
        dense = self.dense_modules()
        nsc.require([f"{k}.{s}" for k in ("mask", "latents") for s in STACKS] + dense_section_names(dense) + ["occupancy"])
        with torch.no_grad():
            for s in STACKS:
                prior: MaskedFactorizedPrior = getattr(self.codec, f"prior_{s}")
                z = getattr(self.codec, f"latents_{s}")
                for kind in ("mask", "latents"):
                    sec = nsc.sections[f"{kind}.{s}"]
                    if tuple(sec.shape) != tuple(z.shape) or meta_int(sec, "plane_resolution", res, res) != res:
                        raise NscFormatError(f"section '{kind}.{s}': shape {list(sec.shape)} at plane resolution "
                                             f"{sec.meta.get('plane_resolution')!r}, model expects {list(z.shape)} at {res}")
                sym, mask = MaskedFactorizedPrior.decode_sections(nsc.sections[f"mask.{s}"], nsc.sections[f"latents.{s}"],
                                                                  tuple(z.shape))
                z.copy_(torch.from_numpy(sym.astype(np.float32)))
                prior.mask_logits.copy_(torch.where(torch.from_numpy(mask), 10.0, -10.0))
        load_dense_sections(dense, nsc)
        load_occupancy_section(self.occupancy, nsc)
        self._decoded_cache = None
