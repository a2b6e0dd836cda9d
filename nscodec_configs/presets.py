"""The preset of every method: a function returning its ``TrainerConfig`` (what :mod:`nscodec.core.methods` names as
each method's ``trainer``). The config functions live beside them in this package."""

from __future__ import annotations

from nscodec_configs.codecnerf_configs import codecnerf_trainer_config
from nscodec_configs.method_configs import ectensorf_trainer_config, tensorf_trainer_config
from nscodec_configs.shacira_configs import shacira_trainer_config
from nscodec_configs.vqad_configs import vqad_trainer_config


def nscodec_tensorf():
    return tensorf_trainer_config()


def ectensorf():
    return ectensorf_trainer_config()


def ectensorf_paper():
    return ectensorf_trainer_config(
        "ectensorf-paper", stage1_steps=30000, stage2_steps=30000, init_resolution=128, final_resolution=300,
        upsampling_iters=(2000, 3000, 4000, 5500, 7000),
        # the paper's architecture and entropy model (the CPU default differs: ECTensoRFModelConfig's docstring):
        # 1/4 latents, the masked prior, unit latent steps, stage 2 from zero latents, an unbounded occupancy grid
        latent_downsample=4, use_mask=True, recon_weight=0.01, rate_lambda=1e-3, decoder_hidden=64,
        learn_latent_step=False, latent_prefit_steps=0, bound_stage2_occupancy=False,
    )


def shacira():
    """CPU preset: plain straight-through rounding. At the CPU budget annealed soft rounding measured worse than STE at equal bytes (docs/benchmarks.md, "SHACIRA"); the paper's benefit (Fig. 10) is over long runs. Annealing stays one flag away (``--pipeline.model.anneal-fraction 0.5``) and is the ``shacira-paper`` default."""
    return shacira_trainer_config(anneal_fraction=0.0)


def shacira_paper():
    return shacira_trainer_config(
        "shacira-paper", max_steps=30000, rays=1 << 14, num_levels=16, max_res=2048, log2_hashmap_size=19,
        occupancy_resolution=128, render_steps=1024,
    )


def vqad():
    return vqad_trainer_config()


def codecnerf():
    return codecnerf_trainer_config()


def codecnerf_peft():
    return codecnerf_trainer_config("codecnerf-peft", "peft")


def codecnerf_scratch():
    return codecnerf_trainer_config("codecnerf-scratch", "scratch")
