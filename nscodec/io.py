"""Write a trained model to ``.nsc`` and rebuild a renderable model from one.

A ``.nsc`` header (see :mod:`nscodec.coding.container`) names the *codec* (``method``) and carries, as plain
JSON, everything needed to rebuild the model: the model config's fields, the scene box and the number of
training images. No pickle or YAML is involved, so opening a file never runs code from it; codecs are looked
up in an allow-list (:data:`CODECS`), never imported by a name taken from the file.

A model takes part by implementing the contract of :class:`nscodec.core.model_base.NscModel` (``nsc_sections``,
``load_nsc_sections``, ``finalize_for_storage``, the level-of-detail API). Export encodes a finalized copy, never
the live model (:meth:`~nscodec.core.model_base.NscModel.encode`).

Decoding validates before it allocates: :func:`validate_config` checks every config value of the header against the
config class (types, enums, finite numbers) and the bounds the class declares for values that size tensors
(:meth:`~nscodec.core.model_base.NscModelConfig.nsc_limits`), in one place, before the model is built; each codec checks
its sections' declared shapes and metadata against the built model before decoding them. Every problem is one
:class:`~nscodec.errors.NscFormatError` naming the field and the bad value.

Length: the file around a model — header config (typed, bounded), decode-size limits, export, decode, level table and
viewer cameras — one owner of what a .nsc holds.
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

from nscodec import __version__
from nscodec.cameras import CAMERAS_SECTION, cameras_section, decode_cameras, split_viewer_sections
from nscodec.coding.container import NscFile, read_nsc, write_nsc
from nscodec.coding.lod import lod_table, read_lod_prefix
from nscodec.core.methods import codecs
from nscodec.errors import NscError, NscFormatError, UnvalidatedDecodeError

#: codec name (``.nsc`` header ``method``) -> "module:ModelConfigClass", from the method declarations
#: (:data:`nscodec.core.methods.METHODS`). An allow-list: a file can only select one of these.
CODECS: Dict[str, str] = codecs()


def preload(codec: str) -> None:
    """Import everything decoding a file of ``codec`` needs (its model module, the metrics the model builds, the
    entropy coder, the section readers), so a timed decode measures decoding, not Python imports.

    Raises:
        NscFormatError: unknown codec.
    """
    codec_config_class(codec)
    for module in ("torchmetrics", "constriction", "nscodec.coding.sections", "nscodec.coding.tensor_codec",
                   "nscodec.cameras", "nscodec.coding.lod", "nscodec.core.metrics"):
        importlib.import_module(module)


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
    """Inverse of :func:`config_to_json`: defaults of ``cls`` overridden by ``data``, each value checked against the
    field's type (bool / int / finite float / str / ``Literal`` choices / tuples / dicts / paths / nested configs).
    Fields in ``cls.nsc_retired_fields`` (written by older versions) are ignored; a field absent from ``data`` takes
    its ``cls.nsc_absent_field_values`` entry where it has one (a file written before the field existed), else the
    default.

    Raises:
        NscFormatError: ``data`` is not a dict, names a field ``cls`` does not have, or holds a value of the wrong
            type (naming the field and the value).
    """
    if not isinstance(data, dict):
        raise NscFormatError(f"{where}: expected an object, got {type(data).__name__}")
    cfg = cls()
    for name, value in getattr(cls, "nsc_absent_field_values", {}).items():  # what files without the field held
        setattr(cfg, name, value)
    fields = {f.name: f for f in dataclasses.fields(cfg) if not f.name.startswith("_")}
    hints = _type_hints(cls)
    retired = getattr(cls, "nsc_retired_fields", frozenset())
    for key, value in data.items():
        if key not in fields:
            if key in retired:
                continue
            raise NscFormatError(f"{where}: unknown field {key!r} for {cls.__name__} (file from another nscodec version?)")
        default = getattr(cfg, key)
        if dataclasses.is_dataclass(default):
            value = config_from_json(type(default), value, f"{where}.{key}")
        else:
            value = _typed_value(value, hints.get(key, Any), f"{where}.{key}")
        setattr(cfg, key, value)
    return cfg


def _type_hints(cls: type) -> Dict[str, Any]:
    import typing

    try:
        return typing.get_type_hints(cls)
    except Exception:  # an annotation that does not resolve: those fields are checked for JSON-safety only
        return {}


def _typed_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` (parsed JSON) as the Python value of a field annotated ``hint``; NscFormatError if it cannot be."""
    import math
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> NscFormatError:
        text = repr(value)
        return NscFormatError(f"{where}: expected {expected}, got {text if len(text) <= 60 else text[:57] + '...'}")

    if hint is Any or hint is type or origin is type:
        return value
    if origin is typing.Union:
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _typed_value(value, arg, where)
            except NscFormatError:
                continue
        raise bad(" or ".join(getattr(a, "__name__", str(a)) for a in args))
    if origin is typing.Literal:
        if value in args and type(value) in {type(a) for a in args}:
            return value
        raise bad("one of " + ", ".join(map(repr, args)))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise bad("true or false")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad("an integer")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise bad("a finite number")
    if hint is str:
        if isinstance(value, str):
            return value
        raise bad("a string")
    if hint is Path:
        if isinstance(value, str):
            return Path(value)
        raise bad("a path string")
    if origin in (tuple, list):
        if not isinstance(value, list):
            raise bad("a list")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad(f"a list of {len(args)} items")
            return tuple(_typed_value(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [_typed_value(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or hint is dict:
        if not isinstance(value, dict):
            raise bad("an object")
        vt = args[1] if len(args) == 2 else Any
        return {k: _typed_value(v, vt, f"{where}[{k!r}]") for k, v in value.items()}
    return value  # other annotations: any JSON value (the container checked it is JSON)


#: bounds of the header values outside the model config
MAX_SCENE_EXTENT = 1e6
MAX_TRAIN_IMAGES = 1 << 24
#: longest list a config field of a decodable file may hold (e.g. an upsampling schedule)
MAX_CONFIG_SEQUENCE = 64
#: what a decode may allocate for the model (sum of :meth:`~nscodec.core.model_base.NscModelConfig.nsc_decode_bytes`)
#: unless ``$NSCODEC_MAX_DECODE_BYTES`` (or ``nscodec --max-decode-bytes``) says otherwise: 2 GiB
DEFAULT_MAX_DECODE_BYTES = 2 << 30
MAX_DECODE_BYTES_ENV = "NSCODEC_MAX_DECODE_BYTES"


def max_decode_bytes() -> int:
    """The largest model (bytes of parameters and buffers) a decode may build: ``$NSCODEC_MAX_DECODE_BYTES`` (an
    integer, optionally with a K/M/G suffix, powers of 1024) or :data:`DEFAULT_MAX_DECODE_BYTES`.

    Raises:
        NscError: the variable is set to something else than a positive size.
    """
    import os

    text = os.environ.get(MAX_DECODE_BYTES_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_DECODE_BYTES
    return parse_byte_size(text, MAX_DECODE_BYTES_ENV)


def parse_byte_size(text: str, what: str) -> int:
    """``"512M"`` → 536870912: an integer number of bytes, optionally with a K, M or G suffix (powers of 1024).

    Raises:
        NscError: not a positive size (naming ``what``)."""
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    body, unit = (text[:-1], text[-1].upper()) if text and text[-1].upper() in "KMG" else (text, "")
    try:
        value = int(body) * units[unit]
    except ValueError:
        value = 0
    if value <= 0:
        raise NscError(f"{what} must be a positive number of bytes (e.g. 4G, 512M, 1000000), got {text!r}")
    return value

def validate_config(cfg: Any) -> None:
    """Check the config of a file against the bounds its class declares for values that size tensors or loops
    (:meth:`~nscodec.core.model_base.NscModelConfig.nsc_limits`; for a list, each entry and its length), then the derived
    sizes of :meth:`~nscodec.core.model_base.NscModelConfig.nsc_derived_limits`, then the bytes a decode allocates
    (:meth:`~nscodec.core.model_base.NscModelConfig.nsc_decode_bytes`) against :func:`max_decode_bytes` — before anything
    is allocated.

    Raises:
        NscFormatError: naming the field, the bad value and the allowed range.
    """
    def number_in(v: Any, lo: float, hi: float) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= hi

    for name, (lo, hi) in cfg.nsc_limits().items():
        v = getattr(cfg, name)
        if isinstance(v, (list, tuple)):  # a schedule: every entry in range, and not too many
            if len(v) > MAX_CONFIG_SEQUENCE or not all(number_in(x, lo, hi) for x in v):
                text = repr(list(v)) if len(repr(list(v))) <= 60 else repr(list(v))[:57] + "..."
                raise NscFormatError(f"config.model.{name} = {text} must hold at most {MAX_CONFIG_SEQUENCE} values in "
                                     f"[{lo:g}, {hi:g}]")
        elif not number_in(v, lo, hi):
            raise NscFormatError(f"config.model.{name} = {v!r} is outside the decodable range [{lo:g}, {hi:g}]")
    for what, value, hi in cfg.nsc_derived_limits():
        if value > hi:
            raise NscFormatError(f"config.model: {what} = {value:,} exceeds the decodable limit {hi:,}")
    parts = cfg.nsc_decode_bytes()
    total, limit = sum(parts.values()), max_decode_bytes()
    if total > limit:
        big = max(parts, key=parts.get)
        raise NscFormatError(f"config.model: decoding would allocate {total:,} bytes (of which {big}: {parts[big]:,}), "
                             f"over the limit of {limit:,} bytes (${MAX_DECODE_BYTES_ENV} or nscodec --max-decode-bytes "
                             f"raise it)")


def _scene_box(value: Any):
    """``[[x, y, z], [x, y, z]]`` → ``[2, 3]`` float32 tensor of a non-empty, finite, bounded box."""
    import math

    ok = isinstance(value, list) and len(value) == 2 and all(isinstance(r, list) and len(r) == 3 for r in value)
    ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) <= MAX_SCENE_EXTENT
                    for r in value for x in r)
    ok = ok and all(value[0][i] < value[1][i] for i in range(3))
    if not ok:
        text = repr(value)
        raise NscFormatError(f".nsc config.scene_box must be [[xmin, ymin, zmin], [xmax, ymax, zmax]] of finite numbers "
                             f"with min < max and |x| ≤ {MAX_SCENE_EXTENT:g}, got {text if len(text) <= 80 else text[:77] + '...'}")
    return torch.tensor(value, dtype=torch.float32)


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

    The sections come from :meth:`~nscodec.core.model_base.NscModel.encode`: a finalized copy of the model unless it is
    finalized already; ``model`` (parameters, buffers, training mode) and the global RNG are left as they were. When
    the model knows its training cameras (``viewer_cameras``), the file carries them (``viewer.cameras``).

    Raises:
        NscError: the model has no codec, cannot be exported yet, its config is not JSON-storable, or it is outside
            what a decoder opens (:func:`validate_config`; nothing is written then).
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    from nscodec.core.model_base import NscModel

    if not isinstance(model, NscModel):
        raise NscError(f"{type(model).__name__} cannot be exported to .nsc (not an nscodec model)")
    if Path(path).exists() and not overwrite:
        raise FileExistsError(f"refusing to overwrite existing file {str(path)!r} (pass overwrite=True)")
    try:  # a file that load_model would refuse is never written
        validate_config(model.config)
    except NscFormatError as e:
        raise NscError(f"refusing to write a .nsc that no decoder would open: {e}") from None
    codec = codec_name_of(model)
    config = {
        "model": config_to_json(model.config),
        "scene_box": getattr(model, "world_box", model.scene_box).aabb.detach().cpu().tolist(),
        "num_train_data": int(model.num_train_data),
    }
    sections = model.encode()
    if getattr(model, "viewer_cameras", None) is not None:  # first: level 0, before any level-of-detail section
        sections.insert(0, cameras_section(model.viewer_cameras, getattr(model, "world_box", model.scene_box)))
    full_meta = {"nscodec_version": __version__, **(meta or {})}
    return write_nsc(path, codec, config, sections, meta=full_meta, overwrite=overwrite)


def read_model_file(path: Path | str | bytes, lod: Optional[int] = None) -> NscFile:
    """Read (and structurally validate) a ``.nsc`` file, its bytes, or only the prefix level ``lod`` needs."""
    if isinstance(path, (bytes, bytearray, memoryview)):
        return read_nsc(path, allow_prefix=True)
    if lod is not None:
        return read_lod_prefix(path, lod)
    return read_nsc(path)


def build_model(nsc: NscFile) -> torch.nn.Module:
    """Validate the header of ``nsc`` (:func:`validate_config`, scene box, image count) and build its model, empty.

    Raises:
        NscFormatError: unknown codec, bad config, or a header value outside its decodable range.
    """
    from nerfstudio.data.scene_box import SceneBox

    cls = codec_config_class(nsc.method)
    header = nsc.config
    for key in ("model", "scene_box", "num_train_data"):
        if key not in header:
            raise NscFormatError(f".nsc config lacks {key!r}")
    cfg = config_from_json(cls, header["model"], "config.model")
    validate_config(cfg)
    occupancy = next((s for s in nsc.index if s.name == "occupancy"), None)
    if occupancy is not None and occupancy.meta.get("resolution") != cfg.occupancy_resolution:  # before it is allocated
        raise NscFormatError(f"section 'occupancy': meta.resolution {occupancy.meta.get('resolution')!r}, the config's "
                             f"occupancy_resolution is {cfg.occupancy_resolution}")
    aabb = _scene_box(header["scene_box"])
    n = header["num_train_data"]
    if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_TRAIN_IMAGES:
        raise NscFormatError(f".nsc config.num_train_data must be an int in [0, {MAX_TRAIN_IMAGES}], got {n!r}")
    # fields no decoder reads (initial scales, training weights) are ignored: the model is built with the class's
    # defaults and keeps the file's values only as a record (what exporting it again writes)
    recorded = {name: getattr(cfg, name) for name in getattr(cls, "nsc_unread_fields", ())}
    defaults = cls()
    for name in recorded:
        setattr(cfg, name, getattr(defaults, name))
    model = cfg.setup(scene_box=SceneBox(aabb=aabb), num_train_data=n, metadata={})
    for name, value in recorded.items():
        setattr(model.config, name, value)
    return model


def load_model(
    path: Path | str | bytes, device: str | torch.device = "cpu", lod: Optional[int] = None
) -> Tuple[torch.nn.Module, NscFile]:
    """Rebuild the model stored in a ``.nsc`` file, in eval mode on ``device``.

    Args:
        path: the file (or its bytes; bytes may be a prefix of a streamed LOD file).
        device: where the model goes.
        lod: read only the file prefix that level of detail ``lod`` needs (see :mod:`nscodec.coding.lod`); the model
            decodes what is present. ``None`` reads the whole file.

    Returns:
        ``(model, nsc)``; ``nsc.total_bytes`` is the file size, ``nsc.available_bytes`` the bytes read.

    Raises:
        FileNotFoundError: no such file.
        NscFormatError: malformed file, unknown codec, bad config, missing/extra/malformed sections (the viewer's
            ``viewer.cameras`` among them).
    """
    nsc = read_model_file(path, lod)
    codec_part, _ = split_viewer_sections(nsc)  # the viewer's cameras are the container's, not the codec's
    # building and decoding initialise modules: opening a file leaves the caller's random stream as it was, and what
    # the file does not determine (e.g. an entropy model's training parameters) starts from one seed everywhere
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_model(nsc)
        if not nsc.complete and not model.supports_lod:
            raise NscFormatError(
                f".nsc file is truncated ({nsc.available_bytes} of {nsc.total_bytes} bytes) and codec {nsc.method!r} "
                "has no levels of detail to decode from a prefix"
            )
        with model.decoding():
            try:
                model.load_nsc_sections(codec_part)
            except (NscError, FileNotFoundError):
                raise
            except Exception as err:  # a check is missing somewhere: still one clear error, marked as such
                raise UnvalidatedDecodeError(
                    f".nsc decode of codec {nsc.method!r} failed on an unchecked value: {type(err).__name__}: {err}"
                ) from err
        model.on_decoded([sec for name, sec in nsc.sections.items() if name != CAMERAS_SECTION],
                         [int(r["bytes"]) for r in lod_table(nsc)])
        if CAMERAS_SECTION in nsc.sections:  # the file's own cameras: it opens in a viewer without its dataset
            model.viewer_cameras, model.viewer_default_view = decode_cameras(nsc.sections[CAMERAS_SECTION])
    return model.to(device).eval(), nsc


#: types of the ``meta.train`` record (where a file was trained, :func:`nscodec.data.training_meta`)
_TRAIN_FIELDS = {"data": str, "dataparser": str, "camera_res_scale_factor": float, "fingerprint": str,
                 "method_name": str, "step": int}


def train_record(nsc: NscFile) -> Dict[str, Any]:
    """The file's ``meta.train`` record (dataset path, dataparser, camera scale, fingerprint, method, step), each
    present value checked for its type ({} when the file has none).

    Raises:
        NscFormatError: a value of the wrong type, or a camera scale that is not a positive finite number.
    """
    import math

    train = nsc.meta.get("train", {}) if isinstance(nsc.meta, dict) else {}
    if not isinstance(train, dict):
        raise NscFormatError(f".nsc meta.train must be an object, got {type(train).__name__}")
    for key, typ in _TRAIN_FIELDS.items():
        if key not in train:
            continue
        v = train[key]
        ok = isinstance(v, typ) and not isinstance(v, bool) if typ is not float else (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v <= 64)
        if not ok:
            raise NscFormatError(f".nsc meta.train.{key} = {v!r} is not a valid {typ.__name__}")
    return train


def compressed_size(model: torch.nn.Module, meta: Optional[Dict[str, Any]] = None) -> int:
    """Bytes on disk of ``model`` exported as ``.nsc`` with ``meta`` (a real file, written to a temporary directory).

    Raises:
        NscError: as :func:`export_model`.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="nscodec-size-") as tmp:
        return export_model(model, Path(tmp) / "model.nsc", meta=meta)


def lod_bytes(model: torch.nn.Module) -> List[int]:
    """Cumulative ``.nsc`` bytes (preamble and header included) needed to decode each level of detail of ``model``: a
    decoded file's level table, else that of a file exported from a finalized copy (with the model's ``export_meta``,
    so the counts are the exported file's), kept until the next training step.

    Raises:
        NscError: the model cannot be exported yet.
    """
    import tempfile

    known = model.lod_bytes_cached()
    if known is not None:
        return known
    with tempfile.TemporaryDirectory(prefix="nscodec-lod-") as tmp:
        export_model(model, Path(tmp) / "m.nsc", meta=model.export_meta)
        table = [int(r["bytes"]) for r in lod_table(read_nsc(Path(tmp) / "m.nsc"))]
    model.remember_lod_bytes(table)
    return table
