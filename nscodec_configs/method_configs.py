"""Method specifications: configs as wiring, the code lives in :mod:`nscodec`.

Registered in ``pyproject.toml`` under ``[project.entry-points."nerfstudio.method_configs"]``.
"""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig

import nscodec.compat  # noqa: F401  (torch.load weights_only fix, applied as soon as methods are discovered)
from nscodec.data import NscDataManagerConfig
from nscodec.ectensorf.model import ECTensoRFModelConfig
from nscodec.optim import FusedAdamOptimizerConfig
from nscodec.pipeline import NscPipelineConfig
from nscodec.tensorf.model import NscTensoRFModelConfig


def default_device_type() -> str:
    """``"cuda"`` when a CUDA device is present, else ``"cpu"`` (stock nerfstudio assumes CUDA)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def nscodec_trainer_config(
    method_name: str,
    model,
    optimizers,
    max_steps: int,
    rays: int = 4096,
    steps_per_save: int = 1000,
    viewer_chunk: int = 1 << 14,
) -> TrainerConfig:
    """The TrainerConfig every nscodec method shares: Blender data through :class:`~nscodec.data.NscDataManagerConfig`
    (a bad dataset is one clear error), :class:`NscPipelineConfig` (``ns-eval`` reports ``compressed_bytes``), CPU
    unless CUDA is present, no mixed precision; ``rays`` per training batch."""
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_save=steps_per_save,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=NscPipelineConfig(
            datamanager=NscDataManagerConfig(
                dataparser=BlenderDataParserConfig(), train_num_rays_per_batch=rays, eval_num_rays_per_batch=4096
            ),
            model=model,
        ),
        optimizers=optimizers,
        viewer=ViewerConfig(num_rays_per_chunk=viewer_chunk),
        vis="viewer",
    )


def tensorf_trainer_config(method_name: str = "nscodec-tensorf", max_steps: int = 3000) -> TrainerConfig:
    """TrainerConfig of the CPU-fast TensoRF-VM base (learning rates as TensoRF: 0.02 grids, 1e-3 MLP)."""
    return nscodec_trainer_config(
        method_name,
        NscTensoRFModelConfig(),
        {
            "fields": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-3),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps),
            },
            "encodings": {
                "optimizer": FusedAdamOptimizerConfig(lr=0.02),
                "scheduler": ExponentialDecaySchedulerConfig(lr_final=0.002, max_steps=max_steps),
            },
        },
        max_steps,
    )


def ectensorf_trainer_config(
    method_name: str = "ectensorf", stage1_steps: int = 1200, stage2_steps: int = 600, **model_kwargs
) -> TrainerConfig:
    """ECTensoRF: stage 1 = nscodec-tensorf pretraining, stage 2 = latent compression (one ns-train run)."""
    total = stage1_steps + stage2_steps
    config = tensorf_trainer_config(method_name, max_steps=total)
    config.pipeline.model = ECTensoRFModelConfig(stage1_steps=stage1_steps, **model_kwargs)
    config.optimizers["latents"] = {
        "optimizer": FusedAdamOptimizerConfig(lr=2e-2),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=2e-3, max_steps=total),
    }
    config.optimizers["codec"] = {
        "optimizer": FusedAdamOptimizerConfig(lr=1e-3),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=total),
    }
    return config
