"""Method specifications of CodecNeRF (``codecnerf`` = PEFT++, ``codecnerf-peft``, ``codecnerf-scratch``).

The shared codec model comes from ``nscodec codecnerf-pretrain``; give it with
``--pipeline.model.codec-model-path FILE`` (or ``$NSCODEC_CODECNERF_MODEL``).
"""

from __future__ import annotations

from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.engine.trainer import TrainerConfig

import nscodec.compat  # noqa: F401
from nscodec.codecnerf.model import CodecNeRFModelConfig
from nscodec.optim import FusedAdamOptimizerConfig
from nscodec_configs.method_configs import nscodec_trainer_config


def _opt(lr: float, lr_final: float, max_steps: int) -> dict:
    return {
        "optimizer": FusedAdamOptimizerConfig(lr=lr, eps=1e-15),
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
    return nscodec_trainer_config(
        method_name, CodecNeRFModelConfig(mode=mode, **model_kwargs), optimizers, max_steps, rays=2048
    )
