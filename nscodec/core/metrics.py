"""Image metrics shared by all nscodec models: PSNR (dB), SSIM, and LPIPS when available offline."""

from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor


class ImageMetrics(torch.nn.Module):
    """PSNR / SSIM (torchmetrics) and LPIPS only when its weights are local (:func:`nscodec.compat.make_lpips`).

    Call with ``gt``, ``pred``: ``[1, 3, H, W]`` in [0, 1], and optionally ``mask [1, 1, H, W]`` (bool or {0, 1}: the
    pixels that count, a nerfstudio ``mask_path`` image). Returns floats: ``psnr`` (dB), ``ssim``, and ``lpips``
    only when LPIPS could be built offline. With a mask, PSNR is that of the mean squared error over the masked-in
    pixels, SSIM the mean of the SSIM map over them, and LPIPS that of the whole image: both on images whose
    masked-out pixels are black in the ground truth and the prediction alike (as nerfstudio's splatfacto masks
    them), so nothing in the masked-out pixels, rendered or captured, changes a metric.

    Raises:
        ValueError: a mask of another size than the images, or one that keeps no pixel.
    """

    def __init__(self) -> None:
        super().__init__()
        from torchmetrics.functional import structural_similarity_index_measure
        from torchmetrics.image import PeakSignalNoiseRatio

        from nscodec.compat import make_lpips

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = structural_similarity_index_measure
        self.lpips = make_lpips()

    def forward(self, gt: Tensor, pred: Tensor, mask: Optional[Tensor] = None) -> Dict[str, float]:
        if mask is None:
            out = {"psnr": float(self.psnr(gt, pred).item()), "ssim": float(self.ssim(gt, pred).item())}
            if self.lpips is not None:
                out["lpips"] = float(self.lpips(gt, pred).item())
            return out
        if tuple(mask.shape[-2:]) != tuple(gt.shape[-2:]):
            raise ValueError(f"mask is {tuple(mask.shape[-2:])} pixels, the image {tuple(gt.shape[-2:])}")
        keep = mask.reshape(1, 1, *gt.shape[-2:]).to(gt.device).bool()
        if not bool(keep.any()):
            raise ValueError("the mask keeps no pixel of the image")
        sel = keep.expand_as(gt)
        mse = ((gt - pred)[sel] ** 2).mean()
        gt_in, pred_in = gt * keep, pred * keep
        _, ssim_map = self.ssim(gt_in, pred_in, return_full_image=True)
        out = {"psnr": float(-10.0 * torch.log10(mse.clamp_min(1e-20))), "ssim": float(ssim_map[sel].mean())}
        if self.lpips is not None:
            out["lpips"] = float(self.lpips(gt_in, pred_in).item())
        return out
