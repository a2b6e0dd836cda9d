"""Method specifications of SHACIRA (``shacira``, ``shacira-paper``) and its uncompressed baseline switch.

``--pipeline.model.compress False`` turns the same method into the uncompressed fp32 hash grid (the baseline).
Registered in ``pyproject.toml`` under ``[project.entry-points."nerfstudio.method_configs"]``.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

import nscodec.compat  # noqa: F401  (torch.load weights_only fix)
from nscodec.pipeline import NscPipelineConfig
from nscodec.shacira.model import ShaciraModelConfig
from nscodec_configs.method_configs import default_device_type


def shacira_trainer_config(
    method_name: str = "shacira",
    max_steps: int = 1200,
    rays: int = 1024,
    field_lr: float = 1e-2,
    latent_lr: float = 1e-1,
    codec_lr: float = 5e-3,
    **model_kwargs,
) -> TrainerConfig:
    """TrainerConfig of SHACIRA. Param groups: ``fields`` (MLPs), ``encodings`` (latents ``Q̂``, or the fp32 table
    of the baseline, which then uses ``field_lr`` as Instant-NGP does), ``codec`` (decoder ``θ`` + densities)."""
    model = ShaciraModelConfig(**model_kwargs)
    table_lr = latent_lr if model.compress else field_lr

    def adam(lr: float) -> dict:
        return {
            "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr * 0.1, max_steps=max_steps),
        }

    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_save=max_steps,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=NscPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=BlenderDataParserConfig(), train_num_rays_per_batch=rays, eval_num_rays_per_batch=4096
            ),
            model=model,
        ),
        optimizers={"fields": adam(field_lr), "encodings": adam(table_lr), "codec": adam(codec_lr)},
        viewer=ViewerConfig(num_rays_per_chunk=1 << 13),
        vis="viewer",
    )


shacira = MethodSpecification(
    config=shacira_trainer_config(),
    description="SHACIRA: hash grid from entropy-coded integer latents (annealed rounding), LOD streaming; CPU-sized.",
)

shacira_paper = MethodSpecification(
    config=shacira_trainer_config(
        "shacira-paper", max_steps=30000, rays=1 << 14, num_levels=16, max_res=2048, log2_hashmap_size=19,
        occupancy_resolution=128, render_steps=1024,
    ),
    description="SHACIRA at Instant-NGP scale (16 levels, T=2^19, max res 2048; for GPU runs).",
)
