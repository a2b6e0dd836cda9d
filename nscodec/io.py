"""Write a trained model to ``.nsc`` and rebuild a renderable model from one.

A ``.nsc`` header (see :mod:`nscodec.coding.container`) names the *codec* (``method``) and carries, as plain
JSON, everything needed to rebuild the model: the model config's fields, the scene box and the number of
training images. No pickle or YAML is involved, so opening a file never runs code from it; codecs are looked
up in an allow-list (:data:`CODECS`), never imported by a name taken from the file.

A model class takes part by implementing two methods:

* ``nsc_sections(self) -> list[Section]`` — encode its parameters (its compression);
* ``load_nsc_sections(self, nsc: NscFile) -> None`` — decode them into an already-built model.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from nscodec import __version__
from nscodec.coding.container import NscFile, read_nsc, write_nsc
from nscodec.coding.errors import NscError, NscFormatError

#: codec name (``.nsc`` header ``method``) -> "module:ModelConfigClass". An allow-list: a file can only
#: select one of these.
CODECS: Dict[str, str] = {
    "nscodec-tensorf": "nscodec.tensorf.model:NscTensoRFModelConfig",
    "ectensorf": "nscodec.ectensorf.model:ECTensoRFModelConfig",
    "codecnerf": "nscodec.codecnerf.model:CodecNeRFModelConfig",
    "shacira": "nscodec.shacira.model:ShaciraModelConfig",
    "vqad": "nscodec.vqad.model:VQADModelConfig",
}


def codec_config_class(codec: str) -> type:
    """The ModelConfig class registered for ``codec``; raises :class:`NscFormatError` if unknown."""
    if codec not in CODECS:
        raise NscFormatError(f"unknown codec {codec!r} in .nsc header (this nscodec knows: {', '.join(sorted(CODECS))})")
    module, name = CODECS[codec].split(":")
    return getattr(importlib.import_module(module), name)


def config_to_json(cfg: Any) -> Dict[str, Any]:
    """Dataclass config → JSON-safe dict of its public fields (tuples → lists, Paths → str, nested → dict)."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return config_to_json(v)
        if isinstance(v, (list, tuple)):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {str(k): conv(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise NscError(f"config value {v!r} of type {type(v).__name__} cannot be stored in a .nsc header")

    return {f.name: conv(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if not f.name.startswith("_")}


def config_from_json(cls: type, data: Dict[str, Any], where: str = "config") -> Any:
    """Inverse of :func:`config_to_json`: defaults of ``cls`` overridden by ``data``.

    Raises:
        NscFormatError: ``data`` is not a dict or names a field ``cls`` does not have.
    """
    if not isinstance(data, dict):
        raise NscFormatError(f"{where}: expected an object, got {type(data).__name__}")
    cfg = cls()
    names = {f.name for f in dataclasses.fields(cfg) if not f.name.startswith("_")}
    for key, value in data.items():
        if key not in names:
            raise NscFormatError(f"{where}: unknown field {key!r} for {cls.__name__} (file from another nscodec version?)")
        default = getattr(cfg, key)
        if dataclasses.is_dataclass(default):
            value = config_from_json(type(default), value, f"{where}.{key}")
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        elif isinstance(default, Path) and isinstance(value, str):
            value = Path(value)
        setattr(cfg, key, value)
    return cfg


def codec_name_of(model: torch.nn.Module) -> str:
    """The registered codec whose config class matches ``model.config`` (exact class)."""
    for name in CODECS:
        if type(model.config) is codec_config_class(name):
            return name
    raise NscError(f"{type(model).__name__} has no registered .nsc codec (known: {', '.join(sorted(CODECS))})")


def export_model(
    model: torch.nn.Module, path: Path | str, meta: Optional[Dict[str, Any]] = None, overwrite: bool = False
) -> int:
    """Compress ``model`` into the ``.nsc`` file ``path`` (atomic write). Returns the file size in bytes.

    Raises:
        NscError: the model has no codec, or its config is not JSON-storable.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if not hasattr(model, "nsc_sections"):
        raise NscError(f"{type(model).__name__} cannot be exported to .nsc (no nsc_sections method)")
    codec = codec_name_of(model)
    config = {
        "model": config_to_json(model.config),
        "scene_box": model.scene_box.aabb.detach().cpu().tolist(),
        "num_train_data": int(model.num_train_data),
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            sections = model.nsc_sections()
    finally:
        model.train(was_training)
    full_meta = {"nscodec_version": __version__, **(meta or {})}
    return write_nsc(path, codec, config, sections, meta=full_meta, overwrite=overwrite)


def load_model(
    path: Path | str | bytes, device: str | torch.device = "cpu", lod: Optional[int] = None
) -> Tuple[torch.nn.Module, NscFile]:
    """Rebuild the model stored in a ``.nsc`` file, in eval mode on ``device``.

    Args:
        path: the file (or its bytes; bytes may be a prefix of a streamed LOD file).
        device: where the model goes.
        lod: read only the file prefix that level of detail ``lod`` needs (see :mod:`nscodec.lod`); the model
            decodes what is present. ``None`` reads the whole file.

    Returns:
        ``(model, nsc)``; ``nsc.total_bytes`` is the file size, ``nsc.available_bytes`` the bytes read.

    Raises:
        FileNotFoundError: no such file.
        NscFormatError: malformed file, unknown codec, bad config, missing/extra sections.
    """
    from nerfstudio.data.scene_box import SceneBox

    if isinstance(path, (bytes, bytearray, memoryview)):
        nsc = read_nsc(path, allow_prefix=True)
    elif lod is not None:
        from nscodec.lod import read_lod_prefix

        nsc = read_lod_prefix(path, lod)
    else:
        nsc = read_nsc(path)
    cls = codec_config_class(nsc.method)
    header = nsc.config
    for key in ("model", "scene_box", "num_train_data"):
        if key not in header:
            raise NscFormatError(f".nsc config lacks {key!r}")
    cfg = config_from_json(cls, header["model"], "config.model")
    try:
        aabb = torch.tensor(header["scene_box"], dtype=torch.float32).reshape(2, 3)
    except Exception:
        raise NscFormatError(f".nsc config.scene_box must be 2x3 numbers, got {header['scene_box']!r}") from None
    model = cfg.setup(scene_box=SceneBox(aabb=aabb), num_train_data=int(header["num_train_data"]), metadata={})
    if not nsc.complete and not getattr(model, "supports_lod", False):
        raise NscFormatError(
            f".nsc file is truncated ({nsc.available_bytes} of {nsc.total_bytes} bytes) and codec {nsc.method!r} "
            "has no levels of detail to decode from a prefix"
        )
    model.load_nsc_sections(nsc)
    return model.to(device).eval(), nsc


def compressed_size(model: torch.nn.Module, meta: Optional[Dict[str, Any]] = None) -> int:
    """Bytes on disk of ``model`` exported as ``.nsc`` with ``meta`` (a real file, written to a temporary directory).

    Raises:
        NscError: as :func:`export_model`.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nscodec-size-") as tmp:
        return export_model(model, Path(tmp) / "model.nsc", meta=meta)
