"""What a viewer needs travels in the file: the training cameras, a default viewpoint, and a datamanager that serves
them without a dataset — so ``ns-viewer``, ``ns-render`` and ``nscodec render`` open a ``.nsc`` on a machine that has
only the file.

* :func:`cameras_section` / :func:`decode_cameras` — the optional section ``viewer.cameras``: up to
  :data:`MAX_STORED_CAMERAS` training cameras (nerfstudio ``camera_to_worlds`` [N, 3, 4], fx, fy, cx, cy in pixels,
  image sizes, camera types) and the index of the default view (a training view that looks at the scene centre).
  The scene box and background are in the file's config already. It is a container-level section: codecs never see
  it (:func:`split_viewer_sections`).
* :class:`CamerasDataManagerConfig` / :class:`CamerasDataManager` — a nerfstudio ``DataManager`` whose datasets
  are those cameras with placeholder images: enough for the viewer (frustums), ``ns-render`` (camera paths,
  interpolation, spiral) and the decoded model (scene box, image count).
* :func:`orbit_cameras` — the default video path of ``nscodec render``: a circle around the scene centre at the
  training cameras' mean distance and height, looking at the centre.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.data.scene_box import SceneBox
from torch import Tensor

from nscodec.coding.container import NscFile, Section
from nscodec.errors import NscError, NscFormatError

__all__ = [
    "CAMERAS_SECTION",
    "MAX_STORED_CAMERAS",
    "cameras_section",
    "decode_cameras",
    "split_viewer_sections",
    "default_view",
    "orbit_cameras",
    "CamerasDataManagerConfig",
    "CamerasDataManager",
]

CAMERAS_SECTION = "viewer.cameras"
#: training cameras stored at most (evenly spaced over the split): enough for the viewer's frustums, a default view
#: and ns-render's interpolated paths, at ~1.5 KB
MAX_STORED_CAMERAS = 24
#: cameras a file may hold at most (what a reader accepts)
MAX_FILE_CAMERAS = 1024
_MAX_SIDE = 1 << 15


def default_view(cameras: Cameras, scene_box: SceneBox) -> int:
    """Index of the training camera that looks most directly at the scene-box centre (OpenGL: the camera looks
    down its -z axis)."""
    c2w = cameras.camera_to_worlds.float()
    centre = scene_box.aabb.float().mean(dim=0).to(c2w.device)
    to_centre = torch.nn.functional.normalize(centre - c2w[:, :, 3], dim=-1)
    forward = -c2w[:, :, 2]
    return int(torch.argmax((to_centre * forward).sum(-1)))


def cameras_section(cameras: Cameras, scene_box: SceneBox) -> Section:
    """The ``viewer.cameras`` section of up to :data:`MAX_STORED_CAMERAS` of ``cameras`` (evenly spaced): float32
    ``[N, 16]`` rows = ``camera_to_worlds`` (12, row-major) + fx, fy, cx, cy (pixels), DEFLATE-coded; meta: ``width``,
    ``height``, ``camera_type`` (one int when all cameras agree, else a list) and ``default_view``.

    Raises:
        NscError: no cameras, or non-finite values.
    """
    from nscodec.coding.tensor_codec import zlib_section

    n = len(cameras)
    if n == 0:
        raise NscError("viewer cameras: none to store")
    keep = np.unique(np.linspace(0, n - 1, min(n, MAX_STORED_CAMERAS)).round().astype(int))
    cams = cameras[torch.from_numpy(keep)]
    rows = torch.cat([cams.camera_to_worlds.reshape(len(keep), 12), cams.fx.reshape(-1, 1), cams.fy.reshape(-1, 1),
                      cams.cx.reshape(-1, 1), cams.cy.reshape(-1, 1)], dim=1).float().cpu().numpy()
    if not np.isfinite(rows).all():
        raise NscError("viewer cameras: non-finite pose or intrinsics")
    def ints(t: Tensor):  # one int when every camera has the same value (the usual case), else a list
        v = [int(x) for x in t.reshape(-1)]
        return v[0] if len(set(v)) == 1 else v

    meta = {"width": ints(cams.width), "height": ints(cams.height), "camera_type": ints(cams.camera_type),
            "default_view": default_view(cams, scene_box)}
    return zlib_section(CAMERAS_SECTION, rows, "float32", meta=meta)


def decode_cameras(sec: Section) -> Tuple[Cameras, int]:
    """``(cameras, default view index)`` of a ``viewer.cameras`` section.

    Raises:
        NscFormatError: a shape other than ``[N ≤ 1024, 16]``, non-finite values, image sizes outside
            ``[1, 32768]``, unknown camera types, or a default view out of range.
    """
    from nscodec.coding.sections import meta_int
    from nscodec.coding.tensor_codec import decode_section

    shape = tuple(sec.shape)
    if len(shape) != 2 or shape[1] != 16 or not 1 <= shape[0] <= MAX_FILE_CAMERAS:
        raise NscFormatError(f"section {sec.name!r}: shape {list(shape)}, expected [N ≤ {MAX_FILE_CAMERAS}, 16]")
    n = shape[0]
    rows = decode_section(sec, dtype=("float32",))
    if not np.isfinite(rows).all() or np.abs(rows).max() > 1e7:
        raise NscFormatError(f"section {sec.name!r}: non-finite or out-of-range camera values")
    valid_types = {int(t.value) for t in CameraType}
    ints = {}
    for key, lo, hi in (("width", 1, _MAX_SIDE), ("height", 1, _MAX_SIDE), ("camera_type", min(valid_types), max(valid_types))):
        v = sec.meta.get(key)
        v = [v] * n if isinstance(v, int) and not isinstance(v, bool) else v
        if not (isinstance(v, list) and len(v) == n and all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)):
            raise NscFormatError(f"section {sec.name!r}: meta.{key} must be an int or {n} ints in [{lo}, {hi}]")
        ints[key] = torch.tensor(v, dtype=torch.long)[:, None]
    if not set(ints["camera_type"].reshape(-1).tolist()) <= valid_types:
        raise NscFormatError(f"section {sec.name!r}: unknown camera type in {sorted(set(ints['camera_type'].reshape(-1).tolist()))}")
    view = meta_int(sec, "default_view", 0, n - 1)
    t = torch.from_numpy(rows)
    cams = Cameras(camera_to_worlds=t[:, :12].reshape(n, 3, 4), fx=t[:, 12:13], fy=t[:, 13:14], cx=t[:, 14:15],
                   cy=t[:, 15:16], width=ints["width"], height=ints["height"], camera_type=ints["camera_type"])
    return cams, view


def split_viewer_sections(nsc: NscFile) -> Tuple[NscFile, Optional[Section]]:
    """``(the file without its viewer sections, the cameras section or None)``: what a codec decodes, and what the
    viewer reads. The codec's view keeps every other section and index entry (offsets are unchanged)."""
    import dataclasses
    from collections import OrderedDict

    if not any(info.name == CAMERAS_SECTION for info in nsc.index):
        return nsc, None
    sections = OrderedDict((k, v) for k, v in nsc.sections.items() if k != CAMERAS_SECTION)
    index = [info for info in nsc.index if info.name != CAMERAS_SECTION]
    return dataclasses.replace(nsc, sections=sections, index=index), nsc.sections.get(CAMERAS_SECTION)


def orbit_cameras(cameras: Cameras, scene_box: SceneBox, frames: int = 120, view: int = 0) -> Cameras:
    """A circular camera path of ``frames`` poses around the scene-box centre, in the plane of the training cameras'
    mean up vector, at their mean distance and height, looking at the centre, with the intrinsics of ``view``.

    Raises:
        ValueError: ``frames < 1``.
    """
    from nerfstudio.cameras.camera_utils import viewmatrix

    if frames < 1:
        raise ValueError(f"an orbit needs at least one frame, got {frames}")
    c2w = cameras.camera_to_worlds.float().cpu()
    centre = scene_box.aabb.float().mean(dim=0)
    up = torch.nn.functional.normalize(c2w[:, :, 1].mean(dim=0), dim=0)  # the cameras' mean up (OpenGL +y)
    rel = c2w[:, :, 3] - centre
    height = float((rel @ up).mean())
    radial = rel - (rel @ up)[:, None] * up
    radius = float(radial.norm(dim=-1).mean())
    e0 = torch.nn.functional.normalize(radial[view] if radial[view].norm() > 1e-6 else torch.tensor([1.0, 0.0, 0.0]), dim=0)
    e1 = torch.cross(up, e0, dim=0)
    poses = []
    for k in range(frames):
        a = 2.0 * math.pi * k / frames
        pos = centre + up * height + radius * (math.cos(a) * e0 + math.sin(a) * e1)
        # viewmatrix's third axis is the camera's +z; an OpenGL camera looks down -z, so +z points away from the centre
        poses.append(viewmatrix(pos - centre, up, pos))
    ref = cameras[view : view + 1]
    n = len(poses)
    return Cameras(camera_to_worlds=torch.stack(poses), fx=ref.fx.expand(n, 1).clone(), fy=ref.fy.expand(n, 1).clone(),
                   cx=ref.cx.expand(n, 1).clone(), cy=ref.cy.expand(n, 1).clone(), width=ref.width.expand(n, 1).clone(),
                   height=ref.height.expand(n, 1).clone(), camera_type=ref.camera_type.expand(n, 1).clone())


# ------------------------------------------------------------------------------------------------ datamanager
class _CamerasDataset(InputDataset):
    """The file's cameras as a dataset with placeholder images (mid grey): the viewer's frustums and ns-render's
    camera paths need cameras, not pictures."""

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        cam = self.cameras[image_idx]
        return np.full((int(cam.height), int(cam.width), 3), 128, dtype=np.uint8)


@dataclass
class CamerasDataManagerConfig(DataManagerConfig):
    """A datamanager serving a decoded file's cameras (no dataset on disk)."""

    _target: Type = field(default_factory=lambda: CamerasDataManager)
    cameras: Optional[Cameras] = None
    scene_box: Optional[SceneBox] = None
    source: Path = Path("scene.nsc")
    """The file the cameras come from (what ``get_datapath`` reports)."""


class CamerasDataManager(DataManager):
    """nerfstudio ``DataManager`` of a file's cameras: ``train_dataset`` and ``eval_dataset`` are the cameras (with
    placeholder images), ``eval_dataloader`` gives their cameras. Training or evaluating against images is refused
    with one clear error."""

    def __init__(self, config: CamerasDataManagerConfig, device="cpu", test_mode="inference", world_size=1, local_rank=0, **kwargs):
        from nerfstudio.data.utils.dataloaders import FixedIndicesEvalDataloader

        self.config = config
        self.device = device
        self.test_mode = "inference"  # nothing to set up: no rays are sampled from images
        cams = config.cameras
        outputs = DataparserOutputs(image_filenames=[Path(f"{config.source.name}#{i}") for i in range(len(cams))],
                                    cameras=cams, scene_box=config.scene_box)
        self.train_dataparser_outputs = outputs
        self.train_dataset = _CamerasDataset(outputs)
        self.eval_dataset = _CamerasDataset(outputs)
        super().__init__()
        self.eval_dataloader = FixedIndicesEvalDataloader(input_dataset=self.eval_dataset, device=device)
        self.fixed_indices_eval_dataloader = self.eval_dataloader

    def _no_images(self, *_: Any, **__: Any):
        raise NscError(f"{self.config.source} is viewed without its dataset: there are no images to train or evaluate "
                       "on (point NSCODEC_DATA at the dataset to evaluate it)")

    setup_train = setup_eval = lambda self: None  # noqa: E731
    next_train = next_eval = next_eval_image = _no_images

    def get_train_rays_per_batch(self) -> int:
        return 0

    def get_datapath(self) -> Path:
        return self.config.source

    def get_param_groups(self) -> Dict[str, List[Tensor]]:
        return {}
