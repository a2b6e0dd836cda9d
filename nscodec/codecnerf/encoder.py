"""CodecNeRF encoder: 2D features → unprojection into a V³ volume → 3D aggregation → axis-pooled planes →
VQ compression (CodecNeRF, Kang et al. AAAI 2025, Sec. 3.2–3.3, Eqs. 1–4).

Conventions used everywhere in :mod:`nscodec.codecnerf`:

* world box ``aabb [2, 3]`` (scene units); the volume has ``V`` voxels per axis, voxel ``(i, j, k)`` (x, y, z
  order) has its centre at ``lo + (idx + 0.5) · (hi - lo) / V``;
* a volume is ``[C, X, Y, Z]``; the three planes are ``xy``, ``yz``, ``xz`` (:data:`PLANE_AXES`), each stored
  ``[C, dim_b, dim_a]`` for axes ``(a, b)`` so that ``grid_sample`` with grid ``(p_a, p_b)`` normalised to
  ``[-1, 1]`` over the box (``align_corners=False``) reads pixel centres exactly at voxel centres;
* cameras are nerfstudio/Blender OpenGL camera-to-world ``[N, 3, 4]`` (camera looks down −z, +y up), pixel
  ``(row i, col j)`` has its centre at ``(u, v) = (j + 0.5, i + 0.5)``.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: plane index -> (first axis, second axis); 0 = x, 1 = y, 2 = z.
PLANE_AXES: Tuple[Tuple[int, int], ...] = ((0, 1), (1, 2), (0, 2))


def voxel_centers(aabb: Tensor, res: int) -> Tensor:
    """World coordinates of the voxel centres, ``[V, V, V, 3]`` indexed ``[i_x, i_y, i_z]``.

    Args:
        aabb: ``[2, 3]`` box (scene units). res: ``V``.
    """
    lo, hi = aabb[0].float(), aabb[1].float()
    lin = (torch.arange(res, dtype=torch.float32, device=aabb.device) + 0.5) / res
    gx, gy, gz = torch.meshgrid(lin, lin, lin, indexing="ij")
    return lo + torch.stack([gx, gy, gz], dim=-1) * (hi - lo)


def project_points(points: Tensor, c2w: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Pinhole projection of world points into each camera.

    Args:
        points: ``[P, 3]`` world points. c2w: ``[N, 3, 4]`` (OpenGL). fx, fy, cx, cy: ``[N]`` pixels.

    Returns:
        ``(u [N, P], v [N, P], depth [N, P])``: pixel coordinates (column, row; pixel centres at +0.5) and the
        distance in front of the camera (> 0 for visible points), scene units.
    """
    rot, t = c2w[:, :3, :3], c2w[:, :3, 3]
    pc = torch.einsum("npk,nkj->npj", points[None] - t[:, None, :], rot)  # R^T (p - t) as row vectors
    depth = -pc[..., 2]
    d = depth.clamp_min(1e-6)
    u = cx[:, None] + fx[:, None] * pc[..., 0] / d
    v = cy[:, None] - fy[:, None] * pc[..., 1] / d
    return u, v, depth


def unproject_features(
    feats: Tensor, c2w: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, width: float, height: float, aabb: Tensor, res: int,
    to_world: Optional[Callable[[Tensor], Tensor]] = None,
) -> Tuple[Tensor, Tensor]:
    """``unproj`` of Eq. 1: bilinear look-up of every view's feature map at each voxel centre's projection.

    Args:
        feats: ``[N, C, h, w]`` feature maps covering the whole image (any ``h, w``; the image is
            ``width × height`` pixels, intrinsics are in those pixels).
        c2w, fx, fy, cx, cy: cameras as in :func:`project_points`.
        width, height: image size in pixels of the intrinsics.
        aabb: ``[2, 3]`` volume box. res: ``V``.
        to_world: maps the box's coordinates ``[P, 3]`` to world positions (a contracted scene's inverse
            contraction); None: the box is in world coordinates.

    Returns:
        ``(volumes [N, C, V, V, V], valid [N, 1, V, V, V])`` — ``valid`` is 1 where the voxel centre lies in front
        of the camera and inside the image, else 0 (features there are zero).
    """
    n, c = feats.shape[:2]
    pts = voxel_centers(aabb, res).reshape(-1, 3)
    if to_world is not None:
        pts = to_world(pts)
    u, v, depth = project_points(pts, c2w, fx, fy, cx, cy)
    gx = u / width * 2.0 - 1.0
    gy = v / height * 2.0 - 1.0
    valid = ((depth > 1e-4) & (gx.abs() <= 1.0) & (gy.abs() <= 1.0)).float()
    grid = torch.stack([gx, gy], dim=-1).reshape(n, 1, -1, 2)
    sampled = F.grid_sample(feats, grid, mode="bilinear", padding_mode="border", align_corners=False)  # [N, C, 1, P]
    sampled = sampled.reshape(n, c, res, res, res) * valid.reshape(n, 1, res, res, res)
    return sampled, valid.reshape(n, 1, res, res, res)


def axis_pool(volume: Tensor) -> Tensor:
    """Eq. 2: average-pool a volume ``[C, X, Y, Z]`` along each axis into planes ``[3, C, V, V]`` (order
    :data:`PLANE_AXES`; plane ``(a, b)`` stored ``[C, dim_b, dim_a]``). Requires ``X = Y = Z``."""
    planes = []
    for a, b in PLANE_AXES:
        other = 3 - a - b
        p = volume.mean(dim=1 + other)  # remaining dims in increasing axis order: (a, b)
        planes.append(p.transpose(1, 2))  # [C, dim_b, dim_a]
    return torch.stack(planes)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


class FeatureCNN(nn.Module):
    """``feat_θ``: a small 2D CNN (the default, trained with the codec; the paper uses DINO, Sec. 3.2).

    ``[N, 3, s, s]`` images in [0, 1] → ``[N, C_f, s/2, s/2]`` features (the last 3 channels are the
    downsampled colours themselves, so colour reaches the volume even before the CNN has learned anything).
    """

    def __init__(self, out_channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            _conv(3, 24), nn.ReLU(), _conv(24, 32, stride=2), nn.ReLU(), _conv(32, 32), nn.ReLU(), _conv(32, out_channels - 3, 1)
        )

    def forward(self, images: Tensor) -> Tensor:
        return torch.cat([self.net(images), F.avg_pool2d(images, 2)], dim=1)


class VolumeAggregator(nn.Module):
    """``agg_ϕ`` of Eq. 1: per-voxel mean and variance over the views that see it (+ the seen fraction), then
    a 1×1×1, a 3×3×3 and a 1×1×1 convolution (CPU-sized). ``[N, C, V, V, V]`` + valid ``[N, 1, V, V, V]`` →
    ``[C_out, V, V, V]``."""

    def __init__(self, in_channels: int, hidden: int = 16, out_channels: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv3d(2 * in_channels + 1, hidden, 1), nn.ReLU(),
            nn.Conv3d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv3d(hidden, out_channels, 1),
        )

    def forward(self, volumes: Tensor, valid: Tensor) -> Tensor:
        count = valid.sum(0)
        mean = volumes.sum(0) / count.clamp_min(1.0)
        var = (valid * (volumes - mean[None]) ** 2).sum(0) / count.clamp_min(1.0)
        frac = count / volumes.shape[0]
        return self.net(torch.cat([mean, var, frac], dim=0)[None])[0]


class VectorQuantizer(nn.Module):
    """Eqs. 3–4: nearest-codeword quantization against a learned codebook ``e [K, D]``.

    ``forward(l [B, D, H, W]) -> (l_st, indices [B, H, W] int64, loss)`` where ``l_st = l + sg(l̄ − l)`` (value of
    the quantized ``l̄``, gradient straight through to ``l``) and ``loss = ||sg[l] − l̄||² + λ_commit ||sg[l̄] − l||²``
    (means over elements; Eq. 4, λ_commit = ``commitment``).
    """

    def __init__(self, codebook_size: int = 256, dim: int = 8, commitment: float = 0.25) -> None:
        super().__init__()
        self.codebook = nn.Parameter(torch.randn(codebook_size, dim) * 0.1)
        self.commitment = commitment

    def nearest(self, l: Tensor) -> Tensor:
        """Indices ``[B, H, W]`` of the nearest codewords (L2) of ``l [B, D, H, W]``."""
        flat = l.permute(0, 2, 3, 1).reshape(-1, l.shape[1])
        d = (flat**2).sum(1, keepdim=True) - 2 * flat @ self.codebook.t() + (self.codebook**2).sum(1)[None]
        return d.argmin(1).reshape(l.shape[0], l.shape[2], l.shape[3])

    def lookup(self, indices: Tensor) -> Tensor:
        """``l̄ [B, D, H, W]`` from indices ``[B, H, W]`` (the decoder side: only indices are transmitted)."""
        return self.codebook[indices].permute(0, 3, 1, 2).contiguous()

    def forward(self, l: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        idx = self.nearest(l.detach())
        lq = self.lookup(idx)
        loss = F.mse_loss(lq, l.detach()) + self.commitment * F.mse_loss(l, lq.detach())
        return l + (lq - l).detach(), idx, loss


class PlaneCompressor(nn.Module):
    """``comp_χ`` (Sec. 3.3): downsampling CNN → :class:`VectorQuantizer` → upsampling CNN.

    Planes ``[3, C, V, V]`` → latents ``[3, D, V/2, V/2]`` → quantized → ``[3, C_up, V, V]``.
    """

    def __init__(self, in_channels: int, latent_dim: int = 8, codebook_size: int = 256, up_channels: int = 32) -> None:
        super().__init__()
        self.down = nn.Sequential(_conv(in_channels, 32, stride=2), nn.ReLU(), _conv(32, 32), nn.ReLU(), _conv(32, latent_dim, 1))
        self.vq = VectorQuantizer(codebook_size, latent_dim)
        self.up = nn.Sequential(
            _conv(latent_dim, 32), nn.ReLU(), nn.ConvTranspose2d(32, 32, 4, stride=2, padding=1), nn.ReLU(), _conv(32, up_channels)
        )

    def encode(self, planes: Tensor) -> Tensor:
        """Continuous latents ``l [3, D, V/2, V/2]``."""
        return self.down(planes)

    def forward(self, planes: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """Training path: ``(upsampled [3, C_up, V, V], indices [3, V/2, V/2], vq_loss)``."""
        lq, idx, loss = self.vq(self.encode(planes))
        return self.up(lq), idx, loss

    def decode(self, indices: Tensor) -> Tensor:
        """Decoder path from transmitted indices ``[3, V/2, V/2]`` → ``[3, C_up, V, V]``."""
        return self.up(self.vq.lookup(indices))


class CodecEncoder(nn.Module):
    """Eq. 1–2: views → per-view features → volume ``[C, V, V, V]`` → planes ``[3, C, V, V]``."""

    def __init__(self, feat_channels: int = 16, volume_res: int = 32, volume_channels: int = 16,
                 features: Optional[nn.Module] = None) -> None:
        """``features``: the 2D feature extractor (``[N, 3, s, s] → [N, feat_channels, h, w]``); default
        :class:`FeatureCNN` (a frozen ViT: :class:`nscodec.codecnerf.backbone.ViTFeatures`)."""
        super().__init__()
        self.volume_res = volume_res
        self.features = features if features is not None else FeatureCNN(feat_channels)
        self.aggregate = VolumeAggregator(feat_channels, 16, volume_channels)

    def forward(self, images: Tensor, c2w: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, aabb: Tensor,
                to_world: Optional[Callable[[Tensor], Tensor]] = None) -> Tensor:
        """Args: images ``[N, 3, s, s]`` in [0, 1] with intrinsics in pixels of that ``s × s`` image; ``to_world``
        as :func:`unproject_features`. Returns planes ``[3, C, V, V]``."""
        s_h, s_w = images.shape[-2:]
        feats = self.features(images)
        vols, valid = unproject_features(feats, c2w, fx, fy, cx, cy, float(s_w), float(s_h), aabb, self.volume_res, to_world)
        return axis_pool(self.aggregate(vols, valid))


def prepare_views(images: Tensor, c2w: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, width: float, height: float, size: int):
    """Resize full images ``[N, H, W, 3]`` (RGB in [0, 1], background already composited) to the encoder's
    ``size × size`` and rescale the intrinsics to it. Returns ``(images [N, 3, s, s], c2w, fx, fy, cx, cy)``."""
    img = images.permute(0, 3, 1, 2).float()
    img = F.interpolate(img, size=(size, size), mode="area")
    sx, sy = size / float(width), size / float(height)
    flat = lambda t: t.reshape(-1).float()  # noqa: E731
    return img, c2w[:, :3, :4].float(), flat(fx) * sx, flat(fy) * sy, flat(cx) * sx, flat(cy) * sy
