"""Datasets for every nscodec method and tool: nerfstudio's dataparsers and ``InputDataset``, with the checks a
broken capture needs, so a bad dataset stops with one error that names the file, frame or split.

* :class:`NscDataManagerConfig` / :class:`NscDataManager` — nerfstudio's ``VanillaDataManager`` (what every
  nscodec method trains with) that checks each split before parsing it (:func:`check_split`: the split exists and
  has frames, every pose is finite, every image file exists) and after (finite cameras), and loads images through
  :class:`NscInputDataset` (an unreadable, truncated or wrongly sized image names its file);
* :func:`load_split` — the same for evaluation (``nscodec eval``) and :func:`load_views` for CodecNeRF pretraining;
* :func:`dataset_fingerprint` — what a ``.nsc`` records of its training data, so evaluating it on another scene
  warns (:func:`warn_if_other_dataset`).

Everything here goes through nerfstudio's parsers: scene scale, orientation, alpha blending and downscaling are
nerfstudio's. Nothing in site-packages is changed.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Tuple, Type

import numpy as np
import torch
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManager, VanillaDataManagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from torch import Tensor

from nscodec.errors import NscDataError, NscError  # NscDataError: defined there, exported here too

__all__ = [
    "NscDataError",
    "NscDataManagerConfig",
    "NscDataManager",
    "NscInputDataset",
    "check_split",
    "load_split",
    "dataparser_config",
    "load_views",
    "SceneViews",
    "dataset_fingerprint",
    "warn_if_other_dataset",
    "training_meta",
    "dataparser_options",
    "dataparser_from_record",
]


# ------------------------------------------------------------------------------------------------ split checks
def _layout(data: Path, parser: str) -> Tuple[Optional[Path], str]:
    """``(transforms file, kind)`` for a dataparser name: Blender ``transforms_<split>.json`` or nerfstudio /
    instant-ngp ``transforms.json`` (``data`` may be that file itself); ``(None, "")`` for other parsers."""
    if parser.startswith("Blender") or parser == "blender":
        return None, "blender"
    if parser.startswith(("Nerfstudio", "InstantNGP")) or parser in ("nerfstudio", "instant-ngp"):
        return (data if data.suffix == ".json" else data / "transforms.json"), "transforms"
    return None, ""


def check_split(data: Path | str, split: str, parser: str = "blender") -> None:
    """Check a split before nerfstudio parses it: the transforms file exists and is JSON, the split has frames,
    every frame's ``transform_matrix`` is a 4×4 of finite numbers, every image file exists and has a readable
    header (Blender: all of one size; the first one, which nerfstudio's parser decodes, is decoded whole).

    Args:
        data: the dataset directory (or, for nerfstudio data, its ``transforms.json``).
        split: ``train`` / ``val`` / ``test``.
        parser: the dataparser (config class name or ``blender`` / ``nerfstudio`` / ``instant-ngp``); other parsers
            are left to nerfstudio's own checks and :meth:`NscDataManager` 's camera check.

    Raises:
        NscDataError: naming the file, the split and the frame.
    """
    data = Path(data)
    if not data.exists():
        raise NscDataError(f"data directory not found: {data}")
    path, kind = _layout(data, parser)
    if kind == "blender":
        path = data / f"transforms_{split}.json"
    if not kind:
        return
    if not path.is_file():
        raise NscDataError(f"split {split!r} not found: {path} does not exist")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise NscDataError(f"{path} is not readable JSON ({type(err).__name__}: {err})") from None
    frames = meta.get("frames") if isinstance(meta, dict) else None
    if not isinstance(frames, list) or not frames:
        raise NscDataError(f"{path}: no frames (an empty {split!r} split)" if kind == "blender" else f"{path}: no frames")
    base = path.parent
    first_size = None
    for i, fr in enumerate(frames):
        name = fr.get("file_path", f"#{i}") if isinstance(fr, dict) else f"#{i}"
        where = f"{path.name}, frame {i} ({name})"
        m = fr.get("transform_matrix") if isinstance(fr, dict) else None
        ok = isinstance(m, list) and len(m) == 4 and all(isinstance(r, list) and len(r) == 4 for r in m)
        ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for r in m for x in r)
        if not ok:
            raise NscDataError(f"{where}: transform_matrix must be a 4x4 list of numbers")
        if not all(math.isfinite(x) for r in m for x in r):
            raise NscDataError(f"{where}: camera pose has non-finite values (NaN or inf)")
        if not isinstance(name, str):
            raise NscDataError(f"{where}: file_path must be a string")
        img = base / name.replace("./", "", 1) if name.startswith("./") else base / name
        if kind == "blender" and not img.suffix:
            img = img.with_name(img.name + ".png")
        mask = fr.get("mask_path") if kind == "transforms" else None
        if mask is not None:
            mpath = base / mask if isinstance(mask, str) else None
            if mpath is None or not (mpath.is_file() or _downscaled_exists(mpath)):
                raise NscDataError(f"{where}: mask file {mpath or mask!r} does not exist")
        if not img.is_file():
            if kind == "transforms" and _downscaled_exists(img):
                continue
            raise NscDataError(f"{where}: image file {img} does not exist")
        size = _image_size(img, where, decode=i == 0)  # nerfstudio's Blender parser decodes the first image itself
        if kind == "blender":
            first_size = first_size or size
            if size != first_size:
                raise NscDataError(f"{where}: image {img} is {size[0]}x{size[1]}, the split's first image is "
                                   f"{first_size[0]}x{first_size[1]} (all images of a split must have one size)")


def _image_size(img: Path, where: str, decode: bool) -> Tuple[int, int]:
    """``(width, height)`` from the image header (the whole image when ``decode``). Raises NscDataError."""
    from PIL import Image

    try:
        with Image.open(img) as im:
            if decode:
                im.load()
            return im.size
    except (OSError, ValueError, SyntaxError) as err:  # not an image, truncated, bad header
        raise NscDataError(f"{where}: image {img} cannot be read ({type(err).__name__}: {err})") from None


def _downscaled_exists(img: Path) -> bool:
    """nerfstudio data may hold only ``images_<k>/`` copies of an image."""
    return any((img.parent.parent / f"{img.parent.name}_{k}" / img.name).is_file() for k in (2, 4, 8))


def check_cameras(outputs: Any, split: str) -> None:
    """After parsing: the split has cameras and every camera pose and intrinsic is finite.

    Raises:
        NscDataError: naming the frame's image file.
    """
    cams = outputs.cameras
    if len(outputs.image_filenames) == 0 or cams.camera_to_worlds.shape[0] == 0:
        raise NscDataError(f"the {split!r} split has no images")
    values = torch.cat([cams.camera_to_worlds.reshape(len(cams), -1), cams.fx.reshape(len(cams), -1),
                        cams.fy.reshape(len(cams), -1), cams.cx.reshape(len(cams), -1), cams.cy.reshape(len(cams), -1)], dim=1)
    bad = (~torch.isfinite(values)).any(dim=1).nonzero().reshape(-1)
    if bad.numel():
        i = int(bad[0])
        raise NscDataError(f"{split!r} frame {i} ({outputs.image_filenames[i]}): camera pose or intrinsics are not finite")


# ---------------------------------------------------------------------------------------------- image loading
class NscInputDataset(InputDataset):
    """nerfstudio's ``InputDataset`` whose image loading names the file when an image is missing, unreadable,
    truncated or not the size its camera says."""

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        fname = self._dataparser_outputs.image_filenames[image_idx]
        try:
            image = super().get_numpy_image(image_idx)
        except (OSError, ValueError, SyntaxError) as err:  # PIL: missing, unreadable, truncated, bad header
            raise NscDataError(f"image {fname} cannot be read ({type(err).__name__}: {err})") from None
        cam = self.cameras
        want = (int(cam.height[image_idx]), int(cam.width[image_idx]))
        if tuple(image.shape[:2]) != want:
            raise NscDataError(
                f"image {fname} is {image.shape[1]}x{image.shape[0]} (after scale {self.scale_factor:g}); its camera "
                f"says {want[1]}x{want[0]}: all images of a split must match their cameras"
            )
        return image

    def get_data(self, image_idx: int, image_type: Literal["uint8", "float32"] = "float32") -> Dict:
        """nerfstudio's ``get_data``; a mask (``mask_path``) that cannot be read or is not its image's size names
        its file (nerfstudio asserts)."""
        try:
            return super().get_data(image_idx, image_type)
        except (AssertionError, OSError, ValueError, SyntaxError) as err:
            masks = self._dataparser_outputs.mask_filenames
            if masks is None:
                raise
            raise NscDataError(f"mask {masks[image_idx]} of image {self._dataparser_outputs.image_filenames[image_idx]} "
                               f"cannot be used ({type(err).__name__}: {err or 'not the size of its image'})") from None


@dataclass
class NscDataManagerConfig(VanillaDataManagerConfig):
    """nerfstudio's ``VanillaDataManagerConfig`` with the dataset checks of :class:`NscDataManager`."""

    _target: Type = field(default_factory=lambda: NscDataManager)


class NscDataManager(VanillaDataManager[NscInputDataset]):
    """``VanillaDataManager`` that checks every split it loads (:func:`check_split` before parsing,
    :func:`check_cameras` after) and reads images through :class:`NscInputDataset`.

    Raises:
        NscDataError: a bad dataset (one message naming what is wrong).
    """

    def __init__(self, config: NscDataManagerConfig, *args, **kwargs):
        data = Path(config.data if config.data is not None else config.dataparser.data)
        parser = type(config.dataparser).__name__
        test_mode = kwargs.get("test_mode", args[1] if len(args) > 1 else "val")
        check_split(data, "train", parser)
        if test_mode != "inference":
            check_split(data, "test" if test_mode == "test" else "val", parser)
        super().__init__(config, *args, **kwargs)
        check_cameras(self.train_dataparser_outputs, "train")

    def create_eval_dataset(self) -> NscInputDataset:
        dataset = super().create_eval_dataset()
        check_cameras(dataset._dataparser_outputs, self.test_split)
        return dataset


# ---------------------------------------------------------------------------------------- evaluation splits
def dataparser_config(dataparser: Any, data: Path):
    """A fresh nerfstudio dataparser config reading ``data``: ``dataparser`` is a config instance (copied, its options
    kept), a registered name (``blender-data``, ``nerfstudio-data``, ``instant-ngp-data``, ``llff-data``, ...), a short
    alias (``blender``, ``nerfstudio``, ``instant-ngp``, ``llff``) or a config class name (what a ``.nsc`` records).

    Raises:
        NscDataError: an unknown dataparser, listing the registered ones.
    """
    import copy

    from nerfstudio.configs.dataparser_configs import all_dataparsers

    if not isinstance(dataparser, str):
        parser = copy.deepcopy(dataparser)
    else:
        by_class = {type(c).__name__: c for c in all_dataparsers.values()}
        found = all_dataparsers.get(dataparser) or all_dataparsers.get(f"{dataparser}-data") or by_class.get(dataparser)
        if found is None:
            raise NscDataError(f"unknown dataparser {dataparser!r}; registered: {', '.join(sorted(all_dataparsers))}")
        parser = copy.deepcopy(found)
    parser.data = Path(data)
    return parser


def load_split(data: Path | str, split: str, scale_factor: float = 1.0, dataparser: Any = "blender"):
    """``(cameras, dataset)`` of ``split`` via nerfstudio's dataparser (see :func:`dataparser_config` for the forms
    ``dataparser`` takes), checked (:func:`check_split`, :func:`check_cameras`; images through
    :class:`NscInputDataset`).

    Raises:
        NscDataError: unknown dataparser, missing data directory or split, empty split, bad pose or image.
    """
    data = Path(data)
    config = dataparser_config(dataparser, data)
    check_split(data, split, type(config).__name__)
    parser = config.setup()
    outputs = parser.get_dataparser_outputs(split=split)
    check_cameras(outputs, split)
    dataset = NscInputDataset(outputs, scale_factor=scale_factor)
    return dataset.cameras, dataset


@dataclass
class SceneViews:
    """One split of a scene as tensors: ``images [N, H, W, 3]`` (RGB in [0, 1], alpha composited on the
    background), ``c2w [N, 3, 4]`` (OpenGL, as nerfstudio), intrinsics ``fx, fy, cx, cy [N]`` in pixels of
    ``width × height``."""

    name: str
    images: Tensor
    c2w: Tensor
    fx: Tensor
    fy: Tensor
    cx: Tensor
    cy: Tensor
    width: int
    height: int


def load_views(scene: Path | str, split: str = "train", image_size: Optional[int] = None,
               background: Literal["white", "black"] = "white") -> SceneViews:
    """A Blender-format split as :class:`SceneViews` (via :func:`load_split`), optionally resized to
    ``image_size²`` (area filter; intrinsics scaled with it).

    Raises:
        NscDataError: as :func:`load_split`.
    """
    import torch.nn.functional as F

    cams, ds = load_split(Path(scene), split)
    bg = torch.tensor([1.0, 1.0, 1.0] if background == "white" else [0.0, 0.0, 0.0])
    imgs = []
    for i in range(len(ds)):
        img = ds.get_numpy_image(i).astype(np.float32) / 255.0
        rgb = img[..., :3] * img[..., 3:] + bg.numpy() * (1.0 - img[..., 3:]) if img.shape[-1] == 4 else img[..., :3]
        imgs.append(torch.from_numpy(np.ascontiguousarray(rgb)))
    images = torch.stack(imgs)
    h, w = images.shape[1:3]
    sx = sy = 1.0
    if image_size is not None and (h, w) != (image_size, image_size):
        images = F.interpolate(images.permute(0, 3, 1, 2), size=(image_size, image_size), mode="area").permute(0, 2, 3, 1)
        sx, sy = image_size / w, image_size / h
        h = w = image_size
    flat = lambda t, s: t.reshape(-1).float() * s  # noqa: E731
    return SceneViews(Path(scene).name, images.contiguous(), cams.camera_to_worlds.float(), flat(cams.fx, sx),
                      flat(cams.fy, sy), flat(cams.cx, sx), flat(cams.cy, sy), int(w), int(h))


# ------------------------------------------------------------------------------------------------ provenance
def dataset_fingerprint(data: Path | str) -> Optional[str]:
    """SHA-256 (hex, 16 digits) of a dataset's camera files (``transforms*.json`` and LLFF's ``poses_bounds.npy``,
    sorted by name): the same scene copied elsewhere keeps it, another scene does not. None when there are no such
    files."""
    data = Path(data)
    files = [data] if data.is_file() else (sorted([*data.glob("transforms*.json"), *data.glob("poses_bounds.npy")])
                                           if data.is_dir() else [])
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def warn_if_other_dataset(recorded: Dict[str, Any], data: Path | str) -> Optional[str]:
    """Warn (and return the warning) when ``data`` is not the dataset a file records (``meta.train``: its
    ``data`` path and ``fingerprint``); None when it is, when the file records no fingerprint, or when ``data`` has
    no camera files to compare (loading it then fails with its own error)."""
    want = recorded.get("fingerprint") if isinstance(recorded, dict) else None
    if not want:
        return None
    got = dataset_fingerprint(data)
    if got is None or got == want:  # no camera files there: the dataset's own error says what is wrong
        return None
    msg = (f"warning: evaluating on {data}, which is not the dataset this file was trained on "
           f"({recorded.get('data')!r}; camera files differ: fingerprint {got} vs {want})")
    import sys

    print(f"nscodec: {msg}", file=sys.stderr)
    return msg


# ------------------------------------------------------------------------------------ the record in a file
def training_meta(pipeline_config: Any) -> Dict[str, Any]:
    """The ``.nsc`` metadata recording where a model was trained: dataset path, dataparser, camera scale, and the
    fingerprint of its camera files (:func:`nscodec.data.dataset_fingerprint`).

    A function of the pipeline config only, so ``ns-export compressed`` and ``ns-eval``'s ``compressed_bytes``
    (:class:`nscodec.pipeline.NscPipeline`) write byte-identical files.
    """
    dm = pipeline_config.datamanager
    parser = dm.dataparser
    data = getattr(parser, "data", "")
    train = {
        "data": str(data),
        "dataparser": type(parser).__name__,
        "camera_res_scale_factor": float(getattr(dm, "camera_res_scale_factor", 1.0)),
    }
    options = dataparser_options(parser)
    if options:
        train["dataparser_options"] = options
    fingerprint = dataset_fingerprint(data) if data else None
    if fingerprint:
        train["fingerprint"] = fingerprint
    return {"train": train}


def dataparser_options(parser: Any) -> Dict[str, Any]:
    """The options of a dataparser config that differ from its class's defaults (numbers, strings, booleans; the
    data path excluded), so a file reopens its test split as it was trained (e.g. ``eval_mode interval``), and those
    its class names in ``nsc_recorded_options`` whatever their value (``llff-data``'s ``layout``: files recorded
    without it were trained on an earlier frame, :func:`dataparser_from_record`)."""
    import dataclasses

    if not dataclasses.is_dataclass(parser):
        return {}
    default = type(parser)()
    always = set(getattr(type(parser), "nsc_recorded_options", ()))
    out: Dict[str, Any] = {}
    for f in dataclasses.fields(parser):
        if f.name in ("data", "_target"):
            continue
        value = getattr(parser, f.name, None)
        if isinstance(value, (bool, int, float, str)) and (value != getattr(default, f.name, None) or f.name in always):
            out[f.name] = value
    return out


def dataparser_from_record(train: Dict[str, Any], fallback: Any) -> Any:
    """The dataparser config a file's ``meta.train`` records (class name + :func:`dataparser_options`), built from
    nerfstudio's registered dataparsers; ``fallback`` (the method's default) when the record names none, or names
    the fallback's own class.

    Raises:
        NscError: the recorded dataparser is not registered here (NscDataError, listing the registered ones), an
            option is not one of its fields, or the record lacks an option its class always records
            (``nsc_recorded_options``: the file was trained in a frame this version no longer builds).
    """
    import copy
    import dataclasses

    name = train.get("dataparser")
    options = train.get("dataparser_options") or {}
    if not isinstance(options, dict):
        raise NscError(f"meta.train.dataparser_options must be a mapping, got {type(options).__name__}")
    parser = copy.deepcopy(fallback)
    if name and name != type(fallback).__name__:  # the registry lookup by class name (NscDataError if unknown)
        parser = dataparser_config(name, getattr(fallback, "data", Path()))
    fields = {f.name: f for f in dataclasses.fields(parser)}
    for key, value in options.items():
        if key not in fields or key in ("data", "_target") or not isinstance(value, (bool, int, float, str)):
            raise NscError(f"meta.train.dataparser_options: {key!r} is not an option of {type(parser).__name__}")
        setattr(parser, key, value)
    missing = [k for k in getattr(type(parser), "nsc_recorded_options", ()) if k not in options]
    if name and missing:
        raise NscError(f"this file records {type(parser).__name__} without {', '.join(missing)}: it was trained on the "
                       f"frame an earlier nscodec built for that dataparser, so its test views cannot be placed (the "
                       f"file still opens in ns-viewer / nscodec render with its own cameras)")
    return parser
