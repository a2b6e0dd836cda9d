"""Method specification ``vqad`` (VQ-AD, Takikawa et al. 2022); the code lives in :mod:`nscodec.vqad`.

Registered in ``pyproject.toml`` under ``[project.entry-points."nerfstudio.method_configs"]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Type

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig, OptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

import nscodec.compat  # noqa: F401
from nscodec.pipeline import NscPipelineConfig
from nscodec.vqad.model import VQADModelConfig


@dataclass
class SparseAdamOptimizerConfig(OptimizerConfig):
    """``torch.optim.SparseAdam`` (lazy Adam): updates only the grid rows a batch touched, so a step costs what
    the batch read, not the ``m × 2^b`` logits table."""

    _target: Type = torch.optim.SparseAdam


def vqad_trainer_config(method_name: str = "vqad", max_steps: int = 800, **model_kwargs) -> TrainerConfig:
    """TrainerConfig of VQ-AD. Learning rates: grid tables (logits / features) 100× the MLP's, as the paper's
    supplement 7.3 (there 1e-3 × 100); here 1e-2 for the MLPs/codebooks, 0.1 → grid, for a short CPU schedule."""
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_save=max_steps,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu"),
        pipeline=NscPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=BlenderDataParserConfig(),
                train_num_rays_per_batch=2048,
                eval_num_rays_per_batch=4096,
            ),
            model=VQADModelConfig(**model_kwargs),
        ),
        optimizers={
            "grid": {
                "optimizer": SparseAdamOptimizerConfig(lr=0.1, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.01, max_steps=max_steps),
            },
            "codebooks": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=max_steps),
            },
            "fields": {
                "optimizer": AdamOptimizerConfig(lr=1e-2, eps=1e-15),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-3, max_steps=max_steps),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14),
        vis="viewer",
    )


vqad = MethodSpecification(
    config=vqad_trainer_config(),
    description="VQ-AD (Variable Bitrate Neural Fields): learned b-bit codebook indices, streaming LODs; CPU-sized.",
)
