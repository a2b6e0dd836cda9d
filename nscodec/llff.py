"""``llff-data``: a nerfstudio dataparser for forward-facing captures in the LLFF layout (Mildenhall et al. 2019).

A forward-facing capture (``imgs2poses.py`` of LLFF, or :func:`nscodec.scenes.captures.generate_capture_scene`
with ``kind="forward"``) is a folder with ``poses_bounds.npy`` and ``images/`` (optionally downscaled copies in
``images_<k>/``). Each row of ``poses_bounds.npy`` holds a ``3 × 5`` matrix — the camera-to-world rotation with
columns (down, right, back), the camera centre, and ``(H, W, focal)`` of the full-size image — then the view's near
and far scene depth. nerfstudio 1.1.5 has no parser for it; this one, registered through nerfstudio's
``nerfstudio.dataparser_configs`` entry point, makes ``ns-train <method> llff-data --data DIR`` work.

The poses are converted to nerfstudio's OpenGL convention, oriented and centred with nerfstudio's
``auto_orient_and_center_poses``, and scaled so that the median near bound becomes ``near_target`` (the role of
LLFF's ``bd_factor``): the foreground then sits inside the scene box ``[-1, 1]^3`` and the far background in the
contracted shell around it (nscodec models contract space for every dataparser but Blender's). The views' depth
bounds give the rays' near and far planes (:func:`near_far_from_bounds`, dataparser metadata ``near_plane`` /
``far_plane``). Every ``eval_interval``-th image is held out (LLFF's ``llffhold = 8``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Type

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

__all__ = ["LLFFDataParserConfig", "LLFFDataParser", "llff_dataparser", "read_poses_bounds", "near_far_from_bounds"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclass
class LLFFDataParserConfig(DataParserConfig):
    """Options of :class:`LLFFDataParser` (module docstring)."""

    _target: Type = field(default_factory=lambda: LLFFDataParser)
    data: Path = Path()
    """The capture folder (``poses_bounds.npy`` + ``images/``)."""
    downscale_factor: Optional[int] = None
    """Read ``images_<k>/`` instead of ``images/`` (intrinsics scaled to it); None: ``images/``."""
    near_target: float = 0.5
    """Scene units of the median near bound after scaling."""
    scene_scale: float = 1.0
    """Half extent of the scene box (the uncontracted region)."""
    eval_interval: int = 8
    """Every ``eval_interval``-th image (0, 8, 16, ...) is a test/val image, the others train."""
    orientation_method: str = "up"
    """nerfstudio's ``auto_orient_and_center_poses`` method (``up``, ``pca``, ``vertical``, ``none``)."""


def read_poses_bounds(path: Path) -> np.ndarray:
    """``[N, 17]`` float64 rows of an LLFF ``poses_bounds.npy``, checked.

    Raises:
        NscDataError: the file is missing or unreadable, not ``[N, 17]`` with ``N ≥ 1``, holds a non-finite value,
            a non-positive near bound or a far bound not beyond it (naming the row).
    """
    from nscodec.data import NscDataError  # here: nscodec.data imports nerfstudio's datamanagers, which import us
    if not path.is_file():
        raise NscDataError(f"LLFF capture: {path} not found (a forward-facing capture needs poses_bounds.npy)")
    try:
        rows = np.load(path, allow_pickle=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is one clear error
        raise NscDataError(f"LLFF capture: {path} is not a readable .npy array ({err})") from None
    if rows.ndim != 2 or rows.shape[0] < 1 or rows.shape[1] != 17:
        raise NscDataError(f"LLFF capture: {path} must hold an [N, 17] array, got shape {list(rows.shape)}")
    rows = rows.astype(np.float64)
    for i, row in enumerate(rows):
        if not np.isfinite(row).all():
            raise NscDataError(f"LLFF capture: {path} row {i} holds a non-finite value")
        if not 0 < row[15] < row[16]:
            raise NscDataError(f"LLFF capture: {path} row {i}: bounds must be 0 < near < far, got {row[15:].tolist()}")
        if (row[[4, 9, 14]] <= 0).any():
            raise NscDataError(f"LLFF capture: {path} row {i}: H, W, focal must be positive, got {row[[4, 9, 14]].tolist()}")
    return rows


class LLFFDataParser(DataParser):
    """nerfstudio dataparser of an LLFF forward-facing capture (module docstring)."""

    config: LLFFDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        from nscodec.data import NscDataError

        cfg = self.config
        data = Path(cfg.data)
        rows = read_poses_bounds(data / "poses_bounds.npy")
        folder = data / (f"images_{cfg.downscale_factor}" if cfg.downscale_factor else "images")
        if not folder.is_dir():
            raise NscDataError(f"LLFF capture: image folder {folder} not found")
        images = sorted(p for p in folder.iterdir() if p.suffix in _IMAGE_SUFFIXES)
        if len(images) != rows.shape[0]:
            raise NscDataError(f"LLFF capture: {folder} holds {len(images)} images but poses_bounds.npy {rows.shape[0]} rows")
        if cfg.eval_interval < 2 or rows.shape[0] < 2:
            raise NscDataError(f"LLFF capture: needs eval_interval ≥ 2 and at least 2 images, got {cfg.eval_interval}, {rows.shape[0]}")
        from PIL import Image

        try:
            with Image.open(images[0]) as im:
                width, height = im.size
        except Exception as err:  # noqa: BLE001
            raise NscDataError(f"LLFF capture: cannot read image {images[0]} ({err})") from None
        mats = rows[:, :15].reshape(-1, 3, 5)
        h_full, w_full, focal = mats[0, :, 4]
        c2w = np.concatenate([mats[:, :, 1:2], -mats[:, :, 0:1], mats[:, :, 2:3], mats[:, :, 3:4]], axis=2)  # OpenGL
        poses = torch.from_numpy(np.concatenate([c2w, np.tile([[[0, 0, 0, 1.0]]], (len(c2w), 1, 1))], axis=1)).float()
        poses, transform = camera_utils.auto_orient_and_center_poses(poses, method=cfg.orientation_method, center_method="poses")
        scale = cfg.near_target / float(np.median(rows[:, 15]))
        poses[:, :3, 3] *= scale
        held = np.arange(len(images)) % cfg.eval_interval == 0
        idx = np.nonzero(~held if split == "train" else held)[0]
        sx, sy = width / w_full, height / h_full
        n = len(idx)
        cameras = Cameras(
            camera_to_worlds=poses[idx, :3, :4], fx=torch.full((n, 1), focal * sx), fy=torch.full((n, 1), focal * sy),
            cx=torch.full((n, 1), width / 2.0), cy=torch.full((n, 1), height / 2.0),
            width=torch.full((n, 1), width, dtype=torch.long), height=torch.full((n, 1), height, dtype=torch.long),
            camera_type=CameraType.PERSPECTIVE,
        )
        s = cfg.scene_scale
        near, far = near_far_from_bounds(rows[:, 15:17] * scale, float(np.hypot(w_full, h_full) / (2 * focal)))
        return DataparserOutputs(
            image_filenames=[images[i] for i in idx], cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-s, -s, -s], [s, s, s]], dtype=torch.float32)),
            dataparser_transform=transform, dataparser_scale=scale,
            metadata={"near_plane": near, "far_plane": far},
        )


def near_far_from_bounds(bounds: np.ndarray, corner_tan: float, margin: float = 0.1) -> tuple:
    """``(near, far)`` distances along the rays of a capture (scene units) from the depth bounds ``[N, 2]`` of its
    views (LLFF's per-view near and far z-depth, already scaled). A ray at angle θ off the optical axis reaches
    z-depth ``z`` at distance ``z / cos θ``: near is ``(1 - margin)`` × the smallest near bound (the axis ray), far is
    ``(1 + margin)`` × the largest far bound / cos θ of the image corner, ``corner_tan`` = tan θ (half diagonal /
    focal length). Every view is used, held-out ones included, so train and test rays span the same range. nscodec
    models read these as ``near_plane`` / ``far_plane`` (:class:`nscodec.model_base.NscModelConfig`)."""
    near = float(bounds[:, 0].min()) * (1.0 - margin)
    far = float(bounds[:, 1].max()) * float(np.sqrt(1.0 + corner_tan**2)) * (1.0 + margin)
    return near, far


llff_dataparser = DataParserSpecification(
    config=LLFFDataParserConfig(), description="Forward-facing LLFF capture (poses_bounds.npy + images/), by nscodec"
)
