"""Method specifications of CodecNeRF (``codecnerf`` = PEFT++, ``codecnerf-peft``, ``codecnerf-scratch``).

The shared codec model comes from ``nscodec codecnerf-pretrain``; give it with
``--pipeline.model.codec-model-path FILE`` (or ``$NSCODEC_CODECNERF_MODEL``).
"""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.plugins.types import MethodSpecification

import nscodec.compat  # noqa: F401
from nscodec.codecnerf.model import CodecNeRFModelConfig
from nscodec.pipeline import NscPipelineConfig
from nscodec_configs.method_configs import default_device_type


def _opt(lr: float, lr_final: float, max_steps: int) -> dict:
    return {
        "optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
        "scheduler": ExponentialDecaySchedulerConfig(lr_final=lr_final, max_steps=max_steps),
    }


def codecnerf_trainer_config(method_name: str = "codecnerf", mode: str = "peft_ec", max_steps: int = 2000, **model_kwargs) -> TrainerConfig:
    """TrainerConfig of per-scene CodecNeRF encoding (``mode``: peft_ec / peft / scratch)."""
    if mode == "scratch":
        optimizers = {"planes": _opt(2e-2, 2e-3, max_steps), "mlp": _opt(5e-3, 5e-4, max_steps)}
    else:
        optimizers = {"deltas": _opt(1e-2, 1e-3, max_steps), "lora": _opt(2e-3, 2e-4, max_steps)}
        if mode == "peft_ec":
            optimizers["prior"] = _opt(1e-3, 1e-4, max_steps)
    return TrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_eval_image=1000,
        steps_per_save=1000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=NscPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=BlenderDataParserConfig(), train_num_rays_per_batch=2048, eval_num_rays_per_batch=4096
            ),
            model=CodecNeRFModelConfig(mode=mode, **model_kwargs),
        ),
        optimizers=optimizers,
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14),
        vis="viewer",
    )


codecnerf = MethodSpecification(
    config=codecnerf_trainer_config(),
    description="CodecNeRF: feed-forward encoding + PEFT (rank-4 plane deltas, LoRA) with entropy-coded deltas (PEFT++).",
)
codecnerf_peft = MethodSpecification(
    config=codecnerf_trainer_config("codecnerf-peft", "peft"),
    description="CodecNeRF with PEFT only (float32 deltas, no entropy coding).",
)
codecnerf_scratch = MethodSpecification(
    config=codecnerf_trainer_config("codecnerf-scratch", "scratch"),
    description="Per-scene triplanes from scratch with the CodecNeRF renderer (the paper's 'Triplanes' baseline).",
)
