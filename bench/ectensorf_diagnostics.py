"""Diagnostic variants of ectensorf stage 2: what limits its PSNR? (bench only; not model options.)

Each variant replaces one piece of :class:`~nscodec.ectensorf.model.ECTensoRFModel` for a whole ``ns-train`` run::

    python bench/ectensorf_probe.py --tag noquant --diagnostic noquant -- --pipeline.model.learn-latent-step False

* ``noquant``: the decoder reads the continuous latents (no rounding, no mask, no rate term): the PSNR this
  architecture reaches in the same steps without quantization — an upper bound, not a file. The probe evaluates the
  trained model in-process under the same patch (its ``.nsc`` would round the latents).
* ``prefit-rate0``: the plane-only prefit at the stage switch runs with λ = 0 (stage 2 keeps its λ).
* ``relax-noise``: additive uniform noise instead of straight-through rounding for the first 70% of stage 2.
* ``relax-softround``: SHACIRA's annealed soft rounding (:func:`nscodec.shacira.latents.soft_round`, τ 0.5 → 0.05)
  for the first 70% of stage 2.
* ``mask-lr``: the mask logits train in the ``latents`` group (learning rate 2e-2) instead of ``codec`` (1e-3): can
  the masks close when their logits move 20× faster? (Use with ``--pipeline.model.use-mask True``.)

The three relaxation/prefit variants were measured with unit latent steps (``--pipeline.model.learn-latent-step
False``, the code before the learned steps); they ignore the learned steps. Used as ``python
bench/ectensorf_diagnostics.py VARIANT <ns-train arguments>`` (what the probe runs).

``python bench/ectensorf_diagnostics.py --latent-stats <run>/config.yml`` prints, per stack, the share of latent
symbols that are non-zero and of mask entries that are open, in the run's latest checkpoint.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict

import torch

FRACTION = 0.7  # relaxations: share of stage 2 before straight-through rounding takes over


def _noquant() -> None:
    import nscodec.ectensorf.model as em

    def decode_planes(self):
        out = {}
        for s in em.STACKS:
            z = getattr(self.codec, f"latents_{s}")
            c = z.shape[0] // 3
            out[s] = getattr(self.codec, f"decoder_{s}")(z.reshape(3, c, *z.shape[1:]), self.plane_resolution)
        out["rate_bits"] = self.codec.importance.new_zeros(())
        return out

    em.ECTensoRFModel.decode_planes = decode_planes


def _prefit_rate0() -> None:
    import nscodec.ectensorf.model as em

    orig = em.ECTensoRFModel.prefit_latents

    def prefit_latents(self, steps):
        lam, self.config.rate_lambda = self.config.rate_lambda, 0.0
        try:
            return orig(self, steps)
        finally:
            self.config.rate_lambda = lam

    em.ECTensoRFModel.prefit_latents = prefit_latents


def _relax(kind: str) -> Callable[[], None]:
    def apply() -> None:
        import nscodec.ectensorf.model as em
        from nscodec.coding.entropy_models import quantize
        from nscodec.shacira.latents import soft_round

        orig = em.ECTensoRFModel.decode_planes

        def decode_planes(self):
            start = self._stage2_start()
            f = (self._step - start) / max(1, (self._max_steps or start + 1) - start)
            if not self.training or f >= FRACTION:
                return orig(self)
            out = {}
            bits = self.codec.importance.new_zeros(())
            for s in em.STACKS:
                prior = getattr(self.codec, f"prior_{s}")
                z = getattr(self.codec, f"latents_{s}")
                zq = quantize(z, "noise") if kind == "noise" else soft_round(z, 0.5 * (0.05 / 0.5) ** (f / FRACTION))
                mask = prior.sample_mask(self.tau(), True) if self.config.use_mask else prior.deterministic_mask()
                lik = prior.prior.likelihood(quantize(z, "noise"))
                bits = bits + (mask * -torch.log2(lik)).sum() + prior.mask_bits(mask)
                c = z.shape[0] // 3
                out[s] = getattr(self.codec, f"decoder_{s}")((zq * mask).reshape(3, c, *z.shape[1:]), self.plane_resolution)
            out["rate_bits"] = bits
            return out

        em.ECTensoRFModel.decode_planes = decode_planes

    return apply


def _mask_lr() -> None:
    import nscodec.ectensorf.model as em

    orig = em.ECTensoRFModel.get_param_groups

    def get_param_groups(self):
        groups = orig(self)
        if self.stage2:  # mask logits (one per latent location) move from the codec group to the latents group
            masks = [getattr(self.codec, f"prior_{s}").mask_logits for s in em.STACKS]
            groups["codec"] = [p for p in groups["codec"] if all(p is not m for m in masks)]
            groups["latents"] = groups["latents"] + masks
        return groups

    em.ECTensoRFModel.get_param_groups = get_param_groups


VARIANTS: Dict[str, Callable[[], None]] = {
    "mask-lr": _mask_lr,
    "noquant": _noquant,
    "prefit-rate0": _prefit_rate0,
    "relax-noise": _relax("noise"),
    "relax-softround": _relax("softround"),
}
#: variants whose .nsc is not the trained model (evaluate in-process under the patch instead)
NO_FILE = {"noquant"}


def apply(name: str) -> None:
    """Patch ECTensoRFModel for variant ``name``. Raises SystemExit naming the variants for an unknown one."""
    if name not in VARIANTS:
        raise SystemExit(f"unknown diagnostic {name!r}; one of {sorted(VARIANTS)}")
    VARIANTS[name]()


def latent_stats(config_yml: str) -> Dict[str, Dict[str, float]]:
    """``{stack: {"nonzero_symbols": share of latent symbols != 0 among open mask entries, "mask_open": share}}``."""
    from pathlib import Path

    from nerfstudio.utils.eval_utils import eval_setup

    def here(cfg):  # the run folder may have moved since training: <output>/<experiment>/<method>/<timestamp>
        cfg.output_dir = Path(config_yml).resolve().parents[3]
        return cfg

    _, pipeline, _, _ = eval_setup(Path(config_yml), test_mode="inference", update_config_callback=here)
    model = pipeline.model
    model.finalize()  # folds learned steps: the latents are then the file's symbols (before rounding)
    stats = {}
    for s in ("density", "color"):
        mask = getattr(model.codec, f"prior_{s}").deterministic_mask() > 0
        sym = torch.round(getattr(model.codec, f"latents_{s}").detach())[mask]
        stats[s] = {"nonzero_symbols": float((sym != 0).float().mean()), "mask_open": float(mask.float().mean())}
    return stats


def main() -> None:
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    import nscodec  # noqa: F401  (offline / checkpoint patches, as ns-train's startup hook does)

    if sys.argv[1] == "--latent-stats":
        import json

        print(json.dumps(latent_stats(sys.argv[2]), indent=2))
        return

    apply(sys.argv[1])
    from nerfstudio.scripts.train import entrypoint

    sys.argv = ["ns-train"] + sys.argv[2:]
    entrypoint()


if __name__ == "__main__":
    main()
