"""Evaluate a decoded ``.nsc`` file (or any nerfstudio model) on a dataset split: PSNR (dB), SSIM, bytes.

Images come from nerfstudio's own dataparser through :func:`nscodec.data.load_split` (so downscaling and alpha
blending match training, and a broken dataset is one clear error); rendering uses the model's
``get_outputs_for_camera``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from tqdm import tqdm

from nscodec.errors import NscError
from nscodec.data import load_split


@torch.no_grad()
def evaluate_model(
    model: torch.nn.Module,
    data: Path,
    split: str = "test",
    scale_factor: float = 1.0,
    every: int = 1,
    limit: Optional[int] = None,
    dataparser: Any = "blender",
    progress: bool = True,
) -> Dict[str, Any]:
    """Render every ``every``-th view of ``split`` and compare with the ground truth.

    Where the dataset has masks (nerfstudio's ``mask_path``) the metrics count only the masked-in pixels
    (:class:`nscodec.core.metrics.ImageMetrics`), as they do in training, where nerfstudio's pixel sampler draws rays from
    those pixels only.

    Returns:
        dict with ``psnr`` / ``ssim`` (means; ``lpips`` when available), ``num_views``, ``per_view`` list,
        ``render_seconds`` (wall clock of all renders), image size, ``masked`` (whether masks were applied).
    """
    cameras, dataset = load_split(data, split, scale_factor, dataparser)
    idx: List[int] = list(range(0, len(dataset), every))[: limit or None]
    from nscodec.core.metrics import ImageMetrics

    metrics = getattr(model, "image_metrics", None)
    if not isinstance(metrics, ImageMetrics):  # stock nerfstudio models: use ours (LPIPS only if offline-able)
        metrics = ImageMetrics().to(model.device)
    model.eval()
    per_view = []
    t_render = 0.0
    for i in tqdm(idx, desc=f"eval {split}", disable=not progress, leave=False):
        cam = cameras[i : i + 1].to(model.device)
        t0 = time.perf_counter()
        out = model.get_outputs_for_camera(cam)
        t_render += time.perf_counter() - t0
        gt = model.renderer_rgb.blend_background(dataset.get_image_float32(i).to(model.device))
        pred = out["rgb"].clamp(0, 1)
        mask = view_mask(dataset, i)
        m = metrics(torch.moveaxis(gt, -1, 0)[None], torch.moveaxis(pred, -1, 0)[None],
                    None if mask is None else torch.moveaxis(mask, -1, 0)[None])
        per_view.append({"index": i, **m})
    keys = per_view[0].keys() - {"index"} if per_view else []
    result: Dict[str, Any] = {k: sum(v[k] for v in per_view) / len(per_view) for k in keys}
    result.update(
        split=split,
        num_views=len(per_view),
        width=int(cameras.width[0]),
        height=int(cameras.height[0]),
        render_seconds=t_render,
        per_view=per_view,
        masked=dataset._dataparser_outputs.mask_filenames is not None,
    )
    return result


def view_mask(dataset: Any, index: int) -> Optional[torch.Tensor]:
    """``[H, W, 1]`` bool mask of view ``index`` of a nerfstudio dataset with masks (``mask_path``), None without.

    Raises:
        NscDataError: the mask image cannot be read or is not the image's size (naming the file)."""
    names = dataset._dataparser_outputs.mask_filenames
    if names is None:
        return None
    from nerfstudio.data.utils.data_utils import get_image_mask_tensor_from_path

    from nscodec.data import NscDataError

    try:
        mask = get_image_mask_tensor_from_path(filepath=names[index], scale_factor=dataset.scale_factor)
    except (OSError, ValueError, SyntaxError) as err:
        raise NscDataError(f"mask {names[index]} cannot be read ({type(err).__name__}: {err})") from None
    want = (int(dataset.cameras.height[index]), int(dataset.cameras.width[index]))
    if tuple(mask.shape[:2]) != want:
        raise NscDataError(f"mask {names[index]} is {mask.shape[1]}x{mask.shape[0]}, its image {want[1]}x{want[0]}")
    return mask.bool()


def evaluate_nsc(
    path: Path,
    data: Optional[Path] = None,
    split: str = "test",
    scale_factor: Optional[float] = None,
    lod: Optional[int] = None,
    **kw,
) -> Dict[str, Any]:
    """Decode ``path`` and evaluate it; ``data`` / ``scale_factor`` default to what the file says it was
    trained on. Adds ``bytes`` (``os.path.getsize``), ``decode_seconds`` (reading and decoding the file into a
    model; module imports excluded) and, when ``lod`` is given, ``lod`` and ``lod_bytes`` (the prefix bytes
    actually read and decoded) to the result. Evaluating on a dataset other than the recorded one warns, naming both
    (``dataset_warning`` in the result).

    Raises:
        NscError: no dataset recorded and none given; FileNotFoundError / NscFormatError from decoding.
    """
    from nscodec.data import warn_if_other_dataset
    from nscodec.io import load_model, preload, read_model_file, train_record

    preload(read_model_file(path, lod=0 if lod is not None else None).method)  # imports, before the clock
    t0 = time.perf_counter()
    model, nsc = load_model(path, lod=lod)
    decode_s = time.perf_counter() - t0
    train = train_record(nsc)
    if data is None:
        if not train.get("data"):
            raise NscError("the .nsc does not record its dataset: pass --data")
        data = Path(train["data"])
    if scale_factor is None:
        scale_factor = float(train.get("camera_res_scale_factor", 1.0))
    warning = warn_if_other_dataset(train, data)
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    from nscodec.data import dataparser_from_record

    dp = dataparser_from_record(train, BlenderDataParserConfig())  # the parser (and options) it was trained with
    res = evaluate_model(model, Path(data), split, scale_factor, dataparser=dp, **kw)
    res.update(bytes=Path(path).stat().st_size, decode_seconds=decode_s, codec=nsc.method)
    if warning:
        res["dataset_warning"] = warning
    if lod is not None:
        from nscodec.coding.lod import available_lod

        res.update(lod=available_lod(nsc), lod_bytes=nsc.available_bytes)
    return res
