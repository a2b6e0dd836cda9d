"""``llff-data``: a nerfstudio dataparser for captures in the LLFF layout (Mildenhall et al. 2019), forward-facing
or 360°.

An LLFF capture (``imgs2poses.py`` of LLFF, or :func:`nscodec.scenes.captures.generate_capture_scene` with
``layout="llff"``) is a folder with ``poses_bounds.npy`` and ``images/`` (optionally downscaled copies in
``images_<k>/``). Each row of ``poses_bounds.npy`` holds a ``3 × 5`` matrix — the camera-to-world rotation with
columns (down, right, back), the camera centre, and ``(H, W, focal)`` of the full-size image — then the view's near
and far z-depth (the 0.1 and 99.9 percentiles of the depths of the points it sees). nerfstudio 1.1.5 has no parser
for it; this one, registered through nerfstudio's ``nerfstudio.dataparser_configs`` entry point, makes
``ns-train <method> llff-data --data DIR`` work.

The poses are converted to nerfstudio's OpenGL convention (:func:`llff_to_opengl`) and oriented with nerfstudio's
``auto_orient_and_center_poses``. The scene box — the region nscodec models leave uncontracted (they contract the
rest of space into a shell around it for every dataparser but Blender's) — depends on the layout:

* ``forward`` (cameras facing one way): the box holding every view's frustum between the nearest near bound and
  ``foreground_depth`` × the median near bound (:func:`forward_box`), centred at the origin and scaled so its
  longest half extent is 1. The cameras sit in front of it; the far background lies in the contracted shell.
* ``360`` (cameras around the scene): centred on the focus of the optical axes (nerfstudio's ``focus``) and scaled
  so the cameras fill ``[-1, 1]^3``, as nerfstudio's ``nerfstudio-data`` parser scales its poses.

The views' depth bounds give the rays' near and far planes (:func:`near_far_from_bounds`, dataparser metadata
``near_plane`` / ``far_plane``). Every ``eval_interval``-th image is held out (LLFF's ``llffhold = 8``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras import camera_utils
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.plugins.registry_dataparser import DataParserSpecification

__all__ = ["LLFFDataParserConfig", "LLFFDataParser", "llff_dataparser", "read_poses_bounds", "near_far_from_bounds",
           "llff_to_opengl", "forward_box", "optical_axis_resultant", "FORWARD_MIN_RESULTANT"]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


@dataclass
class LLFFDataParserConfig(DataParserConfig):
    """Options of :class:`LLFFDataParser` (module docstring)."""

    _target: Type = field(default_factory=lambda: LLFFDataParser)
    data: Path = Path()
    """The capture folder (``poses_bounds.npy`` + ``images/``)."""
    downscale_factor: Optional[int] = None
    """Read ``images_<k>/`` instead of ``images/`` (intrinsics scaled to it); None: ``images/``."""
    layout: Literal["auto", "forward", "360"] = "auto"
    """``forward``: cameras facing one way (the scene box is fitted to the views' frusta, :func:`forward_box`);
    ``360``: cameras around the scene (centred on the focus of their optical axes, :func:`layout_360`); ``auto``:
    ``forward`` when the views' optical axes have a mean resultant length of at least :data:`FORWARD_MIN_RESULTANT`
    (all within about ±45° of their mean), else ``360``."""
    foreground_depth: float = 2.0
    """``forward``: z-depth, in multiples of the median near bound, up to which the scene box reaches; beyond it
    space is contracted. 2: the box holds the nearer half of the disparity range (where LLFF's NDC rays put half
    their samples). A geometric choice, not tuned by a recorded run."""
    scene_scale: float = 1.0
    """Scale of the scene box: ``forward``, a factor on the fitted box; ``360``, its half extent (cameras fill
    ``[-1, 1]^3``, as nerfstudio's ``auto_scale_poses``)."""
    eval_interval: int = 8
    """Every ``eval_interval``-th image (0, 8, 16, ...) is a test/val image, the others train."""
    orientation_method: Literal["up", "pca", "vertical", "none"] = "up"
    """nerfstudio's ``auto_orient_and_center_poses`` method (``up``, ``pca``, ``vertical``, ``none``)."""

    #: options a ``.nsc`` always records (:func:`nscodec.data.dataparser_options`): ``layout`` marks the frame of
    #: this version (files from before it, trained in another frame, are refused by ``nscodec eval``)
    nsc_recorded_options: ClassVar[Tuple[str, ...]] = ("layout",)


#: ``layout=auto``: the mean resultant length of the views' unit optical axes at or above which a capture is
#: forward-facing (1: all parallel; a 90° arc of inward-looking cameras gives 0.90, a full ring about 0)
FORWARD_MIN_RESULTANT = 0.9


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


def llff_to_opengl(rows: np.ndarray) -> np.ndarray:
    """Camera-to-world ``[N, 4, 4]`` (float64, nerfstudio's OpenGL convention: x right, y up, camera looking down -z)
    of checked ``poses_bounds.npy`` rows ``[N, 17]``.

    Each row is LLFF's ``3 × 5`` matrix flattened row-major (``imgs2poses`` / ``pose_utils.save_poses``): rotation
    columns (down, right, back) — COLMAP's camera-to-world (right, down, forward) reordered to ``[-u, r, -t]`` — the
    camera centre, and ``(H, W, focal)``; then the near and far z-depth."""
    mats = rows[:, :15].reshape(-1, 3, 5)
    c2w = np.concatenate([mats[:, :, 1:2], -mats[:, :, 0:1], mats[:, :, 2:3], mats[:, :, 3:4]], axis=2)
    bottom = np.tile([[[0.0, 0.0, 0.0, 1.0]]], (len(c2w), 1, 1))
    return np.concatenate([c2w, bottom], axis=1)


def optical_axis_resultant(c2w: np.ndarray) -> float:
    """Mean resultant length in ``[0, 1]`` of the unit viewing directions (``-z`` axes) of ``c2w [N, 3|4, 4]``."""
    fwd = -c2w[:, :3, 2]
    fwd = fwd / np.linalg.norm(fwd, axis=1, keepdims=True)
    return float(np.linalg.norm(fwd.mean(axis=0)))


def forward_box(c2w: np.ndarray, z_near: float, z_far: float, tan_x: float, tan_y: float) -> Tuple[np.ndarray, np.ndarray]:
    """``(centre [3], half extents [3])`` of the axis-aligned box holding every view's frustum between z-depths
    ``z_near`` and ``z_far`` (world units): the corners of each frustum at both depths, for cameras ``c2w [N, 3|4, 4]``
    (OpenGL) with image half-width / half-height over focal ``tan_x`` / ``tan_y``."""
    sx, sy = np.meshgrid([-tan_x, tan_x], [-tan_y, tan_y])
    pts = []
    for z in (z_near, z_far):
        cam = np.stack([sx.ravel() * z, sy.ravel() * z, -np.full(4, z)], axis=1)  # [4, 3] camera frame
        pts.append(np.einsum("nij,kj->nki", c2w[:, :3, :3], cam) + c2w[:, None, :3, 3])
    pts = np.concatenate(pts, axis=1).reshape(-1, 3)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    return 0.5 * (lo + hi), 0.5 * (hi - lo)


class LLFFDataParser(DataParser):
    """nerfstudio dataparser of an LLFF capture, forward-facing or 360° (module docstring)."""

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
        if not (cfg.scene_scale > 0 and np.isfinite(cfg.scene_scale)):
            raise NscDataError(f"LLFF capture: scene_scale must be positive, got {cfg.scene_scale}")
        if not (cfg.foreground_depth > 1 and np.isfinite(cfg.foreground_depth)):
            raise NscDataError(f"LLFF capture: foreground_depth must exceed 1 (multiples of the near bound), got {cfg.foreground_depth}")
        from PIL import Image

        try:
            with Image.open(images[0]) as im:
                width, height = im.size
        except Exception as err:  # noqa: BLE001
            raise NscDataError(f"LLFF capture: cannot read image {images[0]} ({err})") from None
        h_full, w_full, focal = rows[0, [4, 9, 14]]
        tan_x, tan_y = w_full / (2 * focal), h_full / (2 * focal)
        c2w = llff_to_opengl(rows)
        layout = cfg.layout
        if layout == "auto":
            layout = "forward" if optical_axis_resultant(c2w) >= FORWARD_MIN_RESULTANT else "360"
        poses, transform = camera_utils.auto_orient_and_center_poses(
            torch.from_numpy(c2w).float(), method=cfg.orientation_method,
            center_method="poses" if layout == "forward" else "focus")
        poses = poses.double().numpy()
        transform = transform.double().numpy()
        if layout == "forward":
            near_med = float(np.median(rows[:, 15]))
            centre, half = forward_box(poses, float(rows[:, 15].min()), cfg.foreground_depth * near_med, tan_x, tan_y)
            scale = 1.0 / float(half.max())
            half = half * scale * cfg.scene_scale
        else:
            centre = np.zeros(3)
            scale = 1.0 / float(np.abs(poses[:, :3, 3]).max())
            half = np.full(3, cfg.scene_scale)
        poses[:, :3, 3] = (poses[:, :3, 3] - centre) * scale
        transform[:, 3] -= centre
        held = np.arange(len(images)) % cfg.eval_interval == 0
        idx = np.nonzero(~held if split == "train" else held)[0]
        if abs(height - h_full * width / w_full) > 1.0:
            raise NscDataError(f"LLFF capture: images of {folder} are {width}x{height}, not a downscale of the "
                               f"{w_full:g}x{h_full:g} poses_bounds.npy records")
        f_px = focal * width / w_full  # square pixels: one factor, as LLFF's loader scales focal by 1 / factor
        n = len(idx)
        cameras = Cameras(
            camera_to_worlds=torch.from_numpy(poses[idx, :3, :4]).float(),
            fx=torch.full((n, 1), f_px), fy=torch.full((n, 1), f_px),
            cx=torch.full((n, 1), width / 2.0), cy=torch.full((n, 1), height / 2.0),
            width=torch.full((n, 1), width, dtype=torch.long), height=torch.full((n, 1), height, dtype=torch.long),
            camera_type=CameraType.PERSPECTIVE,
        )
        near, far = near_far_from_bounds(rows[:, 15:17] * scale, float(np.hypot(tan_x, tan_y)))
        box = torch.from_numpy(np.stack([-half, half])).float()
        return DataparserOutputs(
            image_filenames=[images[i] for i in idx], cameras=cameras, scene_box=SceneBox(aabb=box),
            dataparser_transform=torch.from_numpy(transform).float(), dataparser_scale=scale,
            metadata={"near_plane": near, "far_plane": far, "llff_layout": layout},
        )


def near_far_from_bounds(bounds: np.ndarray, corner_tan: float, margin: float = 0.1) -> tuple:
    """``(near, far)`` distances along the rays of a capture (scene units) from the depth bounds ``[N, 2]`` of its
    views (LLFF's per-view near and far z-depth, already scaled). A ray at angle θ off the optical axis reaches
    z-depth ``z`` at distance ``z / cos θ``: near is ``(1 - margin)`` × the smallest near bound (the axis ray), far is
    ``(1 + margin)`` × the largest far bound / cos θ of the image corner, ``corner_tan`` = tan θ (half diagonal /
    focal length). Every view is used, held-out ones included, so train and test rays span the same range. nscodec
    models read these as ``near_plane`` / ``far_plane`` (:class:`nscodec.core.model_base.NscModelConfig`)."""
    near = float(bounds[:, 0].min()) * (1.0 - margin)
    far = float(bounds[:, 1].max()) * float(np.sqrt(1.0 + corner_tan**2)) * (1.0 + margin)
    return near, far


llff_dataparser = DataParserSpecification(
    config=LLFFDataParserConfig(), description="LLFF capture, forward-facing or 360° (poses_bounds.npy + images/), by nscodec"
)
