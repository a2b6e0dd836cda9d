"""Image metrics shared by all nscodec models: PSNR (dB), SSIM, and LPIPS when available offline."""

from __future__ import annotations

from typing import Dict

import torch
from torch import Tensor


class ImageMetrics(torch.nn.Module):
    """PSNR / SSIM (torchmetrics) and LPIPS only when its weights are local (:func:`nscodec.compat.make_lpips`).

    Call with ``gt``, ``pred``: ``[1, 3, H, W]`` in [0, 1]. Returns floats: ``psnr`` (dB), ``ssim``, and
    ``lpips`` only when LPIPS could be built offline.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.functional import structural_similarity_index_measure
        from torchmetrics.image import PeakSignalNoiseRatio

        from nscodec.compat import make_lpips

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = structural_similarity_index_measure
        self.lpips = make_lpips()

    def forward(self, gt: Tensor, pred: Tensor) -> Dict[str, float]:
        out = {
            "psnr": float(self.psnr(gt, pred).item()),
            "ssim": float(self.ssim(gt, pred).item()),
        }
        if self.lpips is not None:
            out["lpips"] = float(self.lpips(gt, pred).item())
        return out
