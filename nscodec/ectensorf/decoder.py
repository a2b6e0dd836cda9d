"""Latent codes → TensoRF feature planes (ECTensoRF, arXiv 2406.08943, Sec. 3: "lightweight decoder").

Each VM plane stack (density or appearance) is represented by three latent codes ``Z_i`` (one per plane
``xy, xz, yz``) at 1/4 of the plane resolution; a decoder of two stride-2 transposed convolutions maps them
to the planes. There is no encoder: the latents are optimised directly (per-scene, no amortisation gap).
"""

from __future__ import annotations

import math

from torch import Tensor, nn


def latent_size(resolution: int, factor: int = 4) -> int:
    """Latent side length for a plane of ``resolution`` (ceil, so the decoded plane covers it; odd sizes OK)."""
    return max(1, math.ceil(resolution / factor))


class LatentPlaneDecoder(nn.Module):
    """Two transposed convolutions: ``[P, C_lat, h, w] -> [P, C_out, f·h, f·w]``, cropped to ``N``.

    ``f = upsample``: 4 as in the paper (two stride-2 layers, kernel 4), or 2 (the first layer is a stride-1,
    kernel-3 transposed convolution: latents at half the plane resolution, 4× as many latent locations).

    Args:
        latent_channels: ``C_lat``.
        out_channels: ``C_out`` (VM components of the stack, e.g. 16 for density, 48 for appearance).
        hidden: channels between the two layers.
        upsample: ``f``, 4 or 2.

    Shapes: input latents ``[P, C_lat, h, w]`` with ``h = w = ceil(N / f)``; output planes ``[P, C_out, N, N]``.

    Raises:
        ValueError: ``upsample`` is not 2 or 4.
    """

    def __init__(self, latent_channels: int, out_channels: int, hidden: int = 32, upsample: int = 4) -> None:
        super().__init__()
        if upsample not in (2, 4):
            raise ValueError(f"LatentPlaneDecoder: upsample must be 2 or 4, got {upsample}")
        self.upsample = upsample
        if upsample == 4:
            self.up1 = nn.ConvTranspose2d(latent_channels, hidden, kernel_size=4, stride=2, padding=1)
        else:
            self.up1 = nn.ConvTranspose2d(latent_channels, hidden, kernel_size=3, stride=1, padding=1)
        self.act = nn.GELU()
        self.up2 = nn.ConvTranspose2d(hidden, out_channels, kernel_size=4, stride=2, padding=1)

    def forward(self, latents: Tensor, resolution: int) -> Tensor:
        """Decode ``latents [P, C_lat, h, w]`` to planes ``[P, C_out, resolution, resolution]``.

        Raises:
            ValueError: the latents are too small to cover ``resolution``.
        """
        h, w = latents.shape[-2:]
        f = self.upsample
        if f * h < resolution or f * w < resolution:
            raise ValueError(f"latents {h}x{w} decode to {f * h}x{f * w} < plane resolution {resolution}")
        planes = self.up2(self.act(self.up1(latents)))
        return planes[..., :resolution, :resolution]
