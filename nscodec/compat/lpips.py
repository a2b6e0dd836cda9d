"""LPIPS without a network: build torchmetrics' LPIPS only when AlexNet's weights are already local.

torchmetrics' ``LearnedPerceptualImagePatchSimilarity(net_type="alex")`` calls torchvision's
``alexnet(weights=IMAGENET1K_V1)``, which downloads ``alexnet-owt-7be5be79.pth`` into the torch hub cache when
it is missing — offline, building any stock nerfstudio model then crashes. :func:`make_lpips` returns the metric
when that file exists (``$TORCH_HOME/hub/checkpoints``; users can copy it there), else ``None`` after one
clear warning; our models then report LPIPS as unavailable instead of failing.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

_LOG = logging.getLogger("nscodec")
_WARNED = False
_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


def lpips_weights_path() -> Path:
    """Where torchvision looks for AlexNet's ImageNet weights (``<torch hub dir>/checkpoints/<file>``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET_FILE


def make_lpips() -> Optional["object"]:
    """Return ``LearnedPerceptualImagePatchSimilarity(normalize=True)`` if buildable offline, else ``None``.

    Inputs of the returned metric: two ``[B, 3, H, W]`` images in [0, 1]. Never downloads. Set
    ``NSCODEC_DISABLE_LPIPS=1`` to skip it even when the weights exist.
    """
    global _WARNED
    path = lpips_weights_path()
    if not os.environ.get("NSCODEC_DISABLE_LPIPS") and path.is_file():
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        return LearnedPerceptualImagePatchSimilarity(normalize=True)
    if not _WARNED:
        _WARNED = True
        _LOG.warning(
            "LPIPS unavailable: AlexNet weights not found at %s (nothing is downloaded); "
            "metrics will omit lpips. Copy %s there to enable it.",
            path,
            _ALEXNET_FILE,
        )
    return None
