"""Method specification ``vqad`` (VQ-AD, Takikawa et al. 2022); the code lives in :mod:`nscodec.vqad`.

Registered in ``pyproject.toml`` under ``[project.entry-points."nerfstudio.method_configs"]``.
"""

from __future__ import annotations

from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig

import nscodec.compat  # noqa: F401
from nscodec.optim import FusedAdamOptimizerConfig, SparseAdamOptimizerConfig
from nscodec.vqad.model import VQADModelConfig
from nscodec_configs.method_configs import nscodec_trainer_config


def vqad_trainer_config(method_name: str = "vqad", max_steps: int = 3600, **model_kwargs) -> TrainerConfig:
    """TrainerConfig of VQ-AD: 3,600 steps × 2,048 rays (1.84 epochs of lego 200², the rays of ectensorf's default
    run: issue 19's equal budget). Learning rates: grid tables (logits / features) 100× the MLP's, as the paper's
    supplement 7.3 (there 1e-3 × 100); here 1e-2 for the MLPs/codebooks, 0.1 → grid, for a short CPU schedule."""
    optimizers = {
        "grid": {
            "optimizer": SparseAdamOptimizerConfig(lr=0.1, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.01, max_steps=max_steps),
        },
        "codebooks": {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=max_steps),
        },
        "fields": {
            "optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=max_steps),
        },
    }
    return nscodec_trainer_config(
        method_name, VQADModelConfig(**model_kwargs), optimizers, max_steps, rays=2048, steps_per_save=max_steps
    )
