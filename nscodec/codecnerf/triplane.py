"""Multi-resolution triplane generator and triplane renderer (CodecNeRF Sec. 3.4, Eqs. 5–8).

Triplanes are a list over levels ``s`` of tensors ``[3, C, V_s, V_s]`` (planes in
:data:`~nscodec.codecnerf.encoder.PLANE_AXES` order, layout as documented in :mod:`.encoder`).
"""

from __future__ import annotations

from typing import List, Sequence

import torch
import torch.nn.functional as F
from nerfstudio.field_components.activations import trunc_exp
from torch import Tensor, nn

from nscodec.codecnerf.encoder import PLANE_AXES


def rolled_out(planes: Tensor) -> Tensor:
    """``[3, C, H, W]`` → ``[1, C, H, 3W]`` (the three planes side by side, "rolled-out" triplane)."""
    return torch.cat(list(planes), dim=-1)[None]


def roll_in(x: Tensor) -> Tensor:
    """Inverse of :func:`rolled_out`: ``[1, C, H, 3W]`` → ``[3, C, H, W]``."""
    return torch.stack(torch.chunk(x[0], 3, dim=-1))


class RolledConv(nn.Module):
    """3×3 convolution over the rolled-out triplane plus, for cross-plane interaction, each plane's row/column
    means broadcast from the planes it shares an axis with (a light form of the 3D-aware block the paper cites)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2 * cin, cout, 3, padding=1)

    def forward(self, planes: Tensor) -> Tensor:
        # plane p (a, b) stored [C, b, a]; axis-mean of another plane over its other axis, broadcast on shared axis
        xy, yz, xz = planes[0], planes[1], planes[2]
        ctx_xy = xz.mean(1)[:, None, :] + yz.mean(1)[:, :, None]  # x from xz (cols), y from yz (cols=y) -> rows
        ctx_yz = xy.mean(2)[:, None, :] + xz.mean(2)[:, :, None]  # y from xy rows -> cols; z from xz rows -> rows
        ctx_xz = xy.mean(1)[:, None, :] + yz.mean(2)[:, :, None]  # x from xy cols -> cols; z from yz rows -> rows
        ctx = torch.stack([ctx_xy, ctx_yz, ctx_xz]) * 0.5
        return roll_in(self.conv(rolled_out(torch.cat([planes, ctx], dim=1))))


class TriplaneGenerator(nn.Module):
    """``triplane_ψ`` (Eq. 5): ``[3, C_in, V, V]`` → levels ``[3, C, V_s, V_s]`` for ``V_s`` in ``resolutions``
    (each a power-of-two multiple of ``V``; features are upsampled bilinearly between levels)."""

    def __init__(self, in_channels: int, channels: int = 16, resolutions: Sequence[int] = (64, 128), hidden: int = 32) -> None:
        super().__init__()
        self.resolutions = tuple(int(r) for r in resolutions)
        self.stem = RolledConv(in_channels, hidden)
        self.blocks = nn.ModuleList([RolledConv(hidden, hidden) for _ in self.resolutions])
        self.heads = nn.ModuleList([nn.Conv2d(hidden, channels, 1) for _ in self.resolutions])

    def forward(self, planes: Tensor) -> List[Tensor]:
        x = F.relu(self.stem(planes))
        out = []
        for res, block, head in zip(self.resolutions, self.blocks, self.heads):
            if x.shape[-1] != res:
                x = F.interpolate(x, size=(res, res), mode="bilinear", align_corners=False)
            x = F.relu(block(x))
            out.append(head(x))
        return out


def normalize_points(points: Tensor, aabb: Tensor) -> Tensor:
    """World ``[S, 3]`` → ``[-1, 1]³`` over ``aabb [2, 3]``."""
    return (points - aabb[0]) / (aabb[1] - aabb[0]) * 2.0 - 1.0


def sample_triplanes(levels: Sequence[Tensor], pn: Tensor) -> Tensor:
    """Eq. 6: ``f_tri(p) = Σ_k concat_s itp(F_k^s, p_k)``.

    Args:
        levels: triplanes ``[3, C, V_s, V_s]`` per level. pn: ``[S, 3]`` points normalised to ``[-1, 1]``.

    Returns:
        ``[S, L·C]`` features (bilinear, ``align_corners=False``, border padding).
    """
    grid = torch.stack([pn[:, [a, b]] for a, b in PLANE_AXES]).unsqueeze(2)  # [3, S, 1, 2]
    feats = [F.grid_sample(lv, grid, mode="bilinear", padding_mode="border", align_corners=False).sum(0)[:, :, 0] for lv in levels]
    return torch.cat(feats, dim=0).t()


def lattice_plane_features(levels: Sequence[Tensor], axes: Tensor) -> List[Tensor]:
    """Triplane features on a regular lattice, plane by plane: a triplane feature is a sum of three 2-D lookups, so on
    the lattice ``axes[0] × axes[1] × axes[2]`` each plane is sampled once on its own 2-D lattice instead of once per
    3-D point (``n²`` lookups per plane instead of ``n³``).

    Args:
        levels: triplanes ``[3, C, V_s, V_s]`` per level (:data:`~nscodec.codecnerf.encoder.PLANE_AXES` order).
        axes: ``[3, n]`` normalised coordinates (``[-1, 1]``) of the lattice along x, y, z.

    Returns:
        per plane ``(a, b)``, the features of every level stacked ``[L·C, n, n]`` indexed ``[:, i_a, i_b]`` (bilinear,
        ``align_corners=False``, border padding, as :func:`sample_triplanes`).
    """
    n = axes.shape[1]
    out = []
    for k, (a, b) in enumerate(PLANE_AXES):
        ua, ub = torch.meshgrid(axes[a], axes[b], indexing="ij")  # [n, n]: i_a, i_b
        grid = torch.stack([ua, ub], dim=-1).reshape(1, n * n, 1, 2)
        feats = [F.grid_sample(lv[k : k + 1], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, :, 0] for lv in levels]
        out.append(torch.cat(feats, dim=0).reshape(-1, n, n))
    return out


def tv_loss_planes(levels: Sequence[Tensor]) -> Tensor:
    """Eq. 8: squared differences of neighbouring plane features, summed, divided by the total feature count
    ``T = 3C Σ_s V_s²`` (scalar)."""
    total = sum(lv.numel() for lv in levels)
    tv = sum(((lv[..., 1:, :] - lv[..., :-1, :]) ** 2).sum() + ((lv[..., :, 1:] - lv[..., :, :-1]) ** 2).sum() for lv in levels)
    return tv / total


def dir_encoding(d: Tensor, freqs: int = 2) -> Tensor:
    """``PE(d)``: ``[S, 3]`` unit directions → ``[S, 3 + 6·freqs]`` (identity + sin/cos at 2^k)."""
    out = [d]
    for k in range(freqs):
        out += [torch.sin((2.0**k) * torch.pi * d), torch.cos((2.0**k) * torch.pi * d)]
    return torch.cat(out, dim=-1)


class TriplaneRenderer(nn.Module):
    """Eq. 7 MLP heads: density from ``(f_tri, p)`` and colour from ``(f_tri, PE(d))``.

    ``density(f [S, F], pn [S, 3]) -> sigma [S]`` (1/scene-unit, ``trunc_exp``);
    ``rgb(f, d [S, 3]) -> [S, 3]`` in (0, 1). Every layer is an ``nn.Linear`` so LoRA can wrap it
    (:func:`nscodec.codecnerf.peft.add_lora`).
    """

    def __init__(self, feat_dim: int, hidden: int = 64, density_hidden: int = 32, dir_freqs: int = 2, density_bias: float = -1.0) -> None:
        super().__init__()
        self.dir_freqs = dir_freqs
        self.density_bias = density_bias
        self.density_mlp = nn.Sequential(nn.Linear(feat_dim + 3, density_hidden), nn.ReLU(), nn.Linear(density_hidden, 1))
        din = 3 + 6 * dir_freqs
        self.color_mlp = nn.Sequential(
            nn.Linear(feat_dim + din, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)
        )

    def density(self, f: Tensor, pn: Tensor) -> Tensor:
        return trunc_exp(self.density_mlp(torch.cat([f, pn], dim=-1))[:, 0] + self.density_bias)

    def rgb(self, f: Tensor, d: Tensor) -> Tensor:
        return torch.sigmoid(self.color_mlp(torch.cat([f, dir_encoding(d, self.dir_freqs)], dim=-1)))
