"""Helpers shared by the test files (not tests themselves)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable, Optional

import torch

from nscodec.codecnerf.network import CodecArch

#: a CodecNeRF codec small enough to pretrain in a second on CPU
TINY_CODEC = CodecArch(enc_image_size=32, enc_views=6, feat_channels=8, volume_res=16, volume_channels=8, latent_dim=4,
                       codebook_size=32, up_channels=8, plane_channels=8, plane_resolutions=(16, 32), generator_hidden=8,
                       mlp_hidden=16, density_hidden=16)


def rays(n: int = 256, seed: int = 1, eye=(0.0, -4.0, 0.5), towards=(0.0, 1.0, -0.1)):
    """A fixed bundle of ``n`` rays from around ``eye`` aimed at the scene centre."""
    from nerfstudio.cameras.rays import RayBundle

    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor(eye)
    d = torch.nn.functional.normalize(torch.tensor(towards) + 0.2 * torch.randn(n, 3, generator=g), dim=-1)
    return RayBundle(origins=o, directions=d, pixel_area=torch.ones(n, 1))


def render(model, bundle) -> torch.Tensor:
    """``rgb [R, 3]`` of ``model`` in eval mode (its training mode restored)."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.get_outputs(bundle)["rgb"]
    finally:
        model.train(was)


def train(config, data: Path, work: Path, steps: int, rays_per_batch: int = 256,
          on_step: Optional[Callable[[Any, int], None]] = None, **model_overrides):
    """Train ``config`` (a TrainerConfig, copied) in-process with nerfstudio's Trainer, as ``ns-train`` does, for
    ``steps`` steps; ``on_step(trainer, step)`` runs after each step. Returns ``(config_yml, trainer)``."""
    from nscodec.tools.demo import train_in_process

    config_yml, trainer, _ = train_in_process(data, work, steps=steps, rays=rays_per_batch, progress=False,
                                              trainer_config=copy.deepcopy(config), on_step=on_step, **model_overrides)
    return config_yml, trainer


def decoded_digest(model) -> str:
    """SHA-256 of what a file decodes to: every parameter and persistent buffer of the model but the entropy models'
    (name, dtype, shape, bytes, in ``state_dict`` order) and what its decoder networks compute (``decoded_tensors``)."""
    import hashlib
    import re

    h = hashlib.sha256()
    tensors = list(model.state_dict().items()) + sorted(model.decoded_tensors().items())
    for name, t in tensors:
        if re.search(r"(^|\.)prior(_\w+)?\.", name):  # entropy models' training parameters: the file holds CDF tables
            continue
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode() + t.numpy().tobytes())
    return h.hexdigest()
