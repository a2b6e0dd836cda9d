"""The pipeline every nscodec method uses, and ``ns-eval`` / ``ns-viewer`` on a ``.nsc`` file.

* :class:`NscPipelineConfig` / :class:`NscPipeline` — nerfstudio's ``VanillaPipeline`` plus one thing:
  ``get_average_eval_image_metrics`` (what ``ns-eval`` reports) adds ``compressed_bytes``, the size in bytes
  of a real ``.nsc`` written from the model being evaluated (or of the ``.nsc`` file it was decoded from).
  Rate is never estimated.
* :func:`nsc_eval_setup` — nerfstudio's ``eval_setup`` for a ``.nsc`` file: decodes the model, builds the
  training method's pipeline (datamanager from the dataset the file records) around it.
  :func:`eval_setup_any` dispatches on the path, and the start-up hook (:mod:`nscodec._startup.hook`) binds it
  into ``nerfstudio.scripts.eval`` and ``nerfstudio.scripts.viewer.run_viewer``, so
  ``ns-eval --load-config scene.nsc`` and ``ns-viewer --load-config scene.nsc`` work. The dataset path stored in
  the file can be overridden with the environment variable ``NSCODEC_DATA``.
"""

from __future__ import annotations

import copy
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Literal, Optional, Tuple, Type

import torch
from nerfstudio.models.base_model import ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig

from nscodec.errors import NscError

__all__ = ["NscPipelineConfig", "NscPipeline", "nsc_eval_setup", "eval_setup_any", "is_nsc_path"]

DATA_ENV = "NSCODEC_DATA"


@dataclass
class NscPipelineConfig(VanillaPipelineConfig):
    """VanillaPipelineConfig whose evaluation also reports ``compressed_bytes`` (bytes of a real ``.nsc``)."""

    _target: Type = field(default_factory=lambda: NscPipeline)


class NscPipeline(VanillaPipeline):
    """VanillaPipeline + ``compressed_bytes`` in ``get_average_eval_image_metrics`` (``ns-eval``'s output).

    The evaluation of a model that is not finalized yet (an evaluation during training) runs on a finalized copy
    (:meth:`nscodec.core.model_base.NscModel.finalized_copy`): the PSNR and the bytes are those of the same file, and the
    training state (parameters, optimizer, RNG) is untouched.

    Attributes:
        nsc_path: the ``.nsc`` the model was decoded from (set by :func:`nsc_eval_setup`), else None.
    """

    nsc_path: Optional[Path] = None

    def __init__(self, config: NscPipelineConfig, *args, **kwargs) -> None:
        from nscodec.core.model_base import NscModelConfig

        if isinstance(config.model, NscModelConfig):  # `auto` contraction / background, from the run's dataparser
            config.model.resolve_for_data(getattr(config.datamanager, "dataparser", None))
        super().__init__(config, *args, **kwargs)
        from nscodec.data import training_meta
        from nscodec.core.model_base import NscModel

        if isinstance(self._model, NscModel):
            from nscodec.viewer import attach_lod_controls

            attach_lod_controls(self._model)  # the level-of-detail slider, for the viewer of a run or of a file
        if isinstance(self._model, NscModel) and not self._model.decoded_from_file:
            # what `ns-export compressed` will record, so the model's own byte counts match the exported file's
            self._model.export_meta = training_meta(self.config)
            train = getattr(self.datamanager, "train_dataset", None)
            if train is not None and len(train):
                self._model.viewer_cameras = train.cameras.to("cpu")

    def _stored_model(self):
        """The model as its file decodes (a finalized copy, or the model itself), or None when it cannot be stored
        yet (e.g. an ``ectensorf`` run still in stage 1; a console note says why)."""
        from nscodec.core.model_base import NscModel

        model = self._model
        if not isinstance(model, NscModel):
            return None
        try:
            return model.finalized_copy()
        except NscError as err:
            from nerfstudio.utils.rich_utils import CONSOLE

            CONSOLE.print(f"[yellow]nscodec: compressed_bytes not available: {err}")
            return None

    def compressed_bytes(self, model=None) -> Optional[int]:
        """Bytes on disk of the model as ``.nsc``: the source file's size when decoded from one, else the size of
        a fresh export (of ``model``, default this pipeline's) to a temporary file. None when not exportable yet."""
        if self.nsc_path is not None:
            return os.path.getsize(self.nsc_path)
        model = model if model is not None else self._stored_model()
        if model is None:
            return None
        from nscodec.data import training_meta
        from nscodec.io import compressed_size

        # the same metadata as `ns-export compressed` writes: the same bytes
        return compressed_size(model, meta=training_meta(self.config))

    def get_average_eval_image_metrics(self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False):
        """nerfstudio's per-image average metrics of the model as stored, plus ``compressed_bytes`` (int, bytes)."""
        live = self._model
        stored = self._stored_model() if self.nsc_path is None else None
        try:
            if stored is not None and stored is not live:
                self._model = stored
            metrics: Dict[str, Any] = super().get_average_eval_image_metrics(step, output_path, get_std)
        finally:
            self._model = live
        size = self.compressed_bytes(stored) if (self.nsc_path is not None or stored is not None) else None
        if size is not None:
            metrics["compressed_bytes"] = int(size)
        return metrics


def is_nsc_path(path: Path | str) -> bool:
    """True when ``path`` names a ``.nsc`` file (by suffix, or by magic bytes for other names)."""
    p = Path(path)
    if p.suffix == ".nsc":
        return True
    if p.is_file() and p.suffix not in (".yml", ".yaml"):
        with open(p, "rb") as fh:
            return fh.read(4) == b"NSC\x00"
    return False


def nsc_eval_setup(
    path: Path | str,
    eval_num_rays_per_chunk: Optional[int] = None,
    test_mode: str = "test",
    update_config_callback: Optional[Callable[[Any], Any]] = None,
    data: Optional[Path | str] = None,
    source: Literal["dataset", "cameras", "any"] = "dataset",
) -> Tuple[Any, NscPipeline, Path, int]:
    """``eval_setup`` for a ``.nsc`` file: ``(trainer_config, pipeline, path, step)``, pipeline in eval mode.

    The trainer config is the registered method's (``meta.train.method_name``, else the codec name); its model is
    the decoded one (built once). Its datamanager reads either the dataset (the one the file records, ``data``, or
    ``$NSCODEC_DATA``) or, with no dataset at all, the training cameras stored in the file
    (:class:`nscodec.cameras.CamerasDataManager`: enough to view and render, no images to evaluate against).

    Args:
        path: the ``.nsc`` file.
        eval_num_rays_per_chunk: rays per forward pass when rendering (default: the model config's).
        test_mode: nerfstudio datamanager mode ("test", "val" or "inference").
        update_config_callback: applied to the trainer config before the pipeline is built.
        data: dataset directory; default ``$NSCODEC_DATA``, else the path recorded in the file.
        source: ``"dataset"`` (needs images: ``ns-eval``), ``"cameras"`` (the file's cameras even when the dataset is
            there: ``ns-viewer``), ``"any"`` (the dataset when found, else the file's cameras: ``ns-render``).

    Raises:
        FileNotFoundError / NscFormatError: the file is missing or malformed.
        NscError: the recorded method is not registered, or the source asked for is not there (the message says how
            to point at the dataset).
    """
    from nerfstudio.configs.method_configs import all_methods

    from nscodec.cameras import CamerasDataManagerConfig
    from nscodec.io import load_model, train_record

    path = Path(path)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, nsc = load_model(path, device=device)
    train = train_record(nsc)
    method = train.get("method_name") or nsc.method
    if method not in all_methods:
        raise NscError(f"{path}: method {method!r} is not registered with nerfstudio (is its plugin installed?)")
    config = copy.deepcopy(all_methods[method])
    data = data or os.environ.get(DATA_ENV) or train.get("data")
    have_data = bool(data) and Path(data).exists()
    have_cameras = model.viewer_cameras is not None
    use_cameras = have_cameras and (source == "cameras" or (source == "any" and not have_data))
    if not use_cameras and not have_data:
        why = ("it stores no viewer cameras (written before they travelled in the file)" if not have_cameras
               else "evaluating needs the images")
        raise NscError(f"{path}: dataset {data!r} not found and {why}; set {DATA_ENV}=/path/to/scene (or pass data=...)")
    if use_cameras:
        config.pipeline.datamanager = CamerasDataManagerConfig(cameras=model.viewer_cameras, scene_box=model.world_box,
                                                               source=path)
        config.data = None
    else:
        from nscodec.data import dataparser_from_record

        dm = config.pipeline.datamanager
        dm.dataparser = dataparser_from_record(train, dm.dataparser)
        dm.data = Path(data)
        dm.dataparser.data = Path(data)
        if "camera_res_scale_factor" in train and hasattr(dm, "camera_res_scale_factor"):
            dm.camera_res_scale_factor = float(train["camera_res_scale_factor"])
    config.pipeline.model = copy.deepcopy(model.config)
    if eval_num_rays_per_chunk:
        config.pipeline.model.eval_num_rays_per_chunk = eval_num_rays_per_chunk
        model.config.eval_num_rays_per_chunk = eval_num_rays_per_chunk
    config.output_dir = Path(tempfile.mkdtemp(prefix="nscodec-view-"))
    config.experiment_name = path.stem
    config.set_timestamp()
    config.get_base_dir().mkdir(parents=True, exist_ok=True)  # the viewer writes its log there
    if update_config_callback is not None:
        config = update_config_callback(config)
    if not isinstance(config.pipeline, NscPipelineConfig):
        config.pipeline = NscPipelineConfig(**{f: getattr(config.pipeline, f) for f in ("datamanager", "model")})
    model_config = config.pipeline.model
    config.pipeline.model = _Prebuilt(model=model.to(device))  # the pipeline takes the decoded model as it is
    try:
        pipeline = config.pipeline.setup(device=device, test_mode=test_mode)
    finally:
        config.pipeline.model = model_config
    pipeline.nsc_path = path
    pipeline.eval()
    from nerfstudio.utils.rich_utils import CONSOLE

    where = "its own cameras, no dataset" if use_cameras else f"dataset {data}"
    CONSOLE.print(f":white_check_mark: Done decoding {path} ({nsc.total_bytes:,} bytes, codec {nsc.method}; {where})")
    return config, pipeline, path, int(train.get("step", 0))


@dataclass
class _Prebuilt(ModelConfig):
    """A model config whose ``setup`` returns an already built model (the decoded one)."""

    model: Any = None

    def setup(self, **kwargs) -> Any:
        return self.model


def eval_setup_any(config_path: Path, *args, source: Literal["dataset", "cameras", "any"] = "dataset", **kwargs):
    """nerfstudio's ``eval_setup`` for ``config.yml`` paths, :func:`nsc_eval_setup` for ``.nsc`` files (``source``:
    where a file's pipeline takes its cameras from, see there)."""
    if is_nsc_path(config_path):
        return nsc_eval_setup(config_path, *args, source=source, **kwargs)
    from nerfstudio.utils.eval_utils import eval_setup

    return eval_setup(config_path, *args, **kwargs)


def eval_setup_view(config_path: Path, *args, **kwargs):
    """:func:`eval_setup_any` for viewing: a ``.nsc`` opens on its own cameras (no dataset read)."""
    return eval_setup_any(config_path, *args, source="cameras", **kwargs)


def eval_setup_render(config_path: Path, *args, **kwargs):
    """:func:`eval_setup_any` for rendering: a ``.nsc`` uses its dataset when found, else its own cameras."""
    return eval_setup_any(config_path, *args, source="any", **kwargs)


def add_data_option(module: Any) -> None:
    """Give ``ns-eval`` (``nerfstudio.scripts.eval.ComputePSNR``) a ``--data`` option: the dataset a ``.nsc`` file is
    evaluated on when it is not where the file says (the same as ``NSCODEC_DATA``). Called by the start-up hook."""
    base = module.ComputePSNR
    if getattr(base, "_nscodec_data_option", False):
        return

    @dataclass
    class ComputePSNR(base):  # type: ignore[valid-type, misc]
        __doc__ = base.__doc__
        data: Optional[Path] = None
        """Dataset of a .nsc file (default: the one it records, or $NSCODEC_DATA); ignored for a config.yml."""

        def main(self) -> None:
            if self.data is not None:
                os.environ[DATA_ENV] = str(self.data)
            super().main()

    ComputePSNR._nscodec_data_option = True
    ComputePSNR.__module__ = base.__module__
    module.ComputePSNR = ComputePSNR
