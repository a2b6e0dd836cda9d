"""What an ``nscodec rd`` sweep runs: the methods it knows (with each one's rate knob and uncompressed baseline),
and the expansion of methods × settings × scenes × seeds into :class:`Point` s with stable keys.

A *setting* is a field of the method's ``ns-train`` config, named as on the ``ns-train`` command line without the
leading ``--`` and, for model fields, without ``pipeline.model.`` (``rate-lambda`` = ``--pipeline.model.rate-lambda``;
``max-num-iterations``, ``pipeline.datamanager.train-num-rays-per-batch`` and any other dotted path work too).
A value with spaces is several tokens (``upsampling-iters=100 200``). Keys in a method's ``export_keys``
(``nscodec-tensorf``'s ``codec-scheme`` / ``codec-bits``) are applied at export: every point that differs only in
them shares one training.

Everything is checked by :func:`build_sweep` before anything runs; a bad input raises :class:`SpecError` naming it.

Length: the whole of a sweep's validation before anything runs (methods, settings against the ns-train configs, scenes
and their dataparsers, spec files) — one place decides what a sweep is.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
import typing
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from nscodec.errors import SpecError  # defined there, exported here too
from nscodec.core.methods import METHODS as ALL_METHODS
from nscodec.core.methods import Method

__all__ = ["SpecError", "METHODS", "Point", "Scene", "Sweep", "build_sweep", "parse_scene", "detect_dataparser",
           "parse_set", "parse_posthoc", "load_spec_file", "scene_views"]


Settings = Tuple[Tuple[str, str], ...]  # sorted (key, value) pairs: hashable, stable


#: the methods ``nscodec rd`` sweeps: every method nscodec registers, as declared in :mod:`nscodec.core.methods` (rate
#: knobs, default sweep, export-time settings, uncompressed base, labels)
METHODS: Dict[str, Method] = ALL_METHODS


@dataclass(frozen=True)
class Point:
    """One point of a sweep: a method at one setting, on one scene, with one seed.

    Attributes:
        method: ``ns-train`` method name.
        settings: what the sweep chose (knobs and explicit overrides), sorted ``(key, value)`` pairs.
        scene: dataset directory (absolute).
        seed: ``--machine.seed``.
        role: ``"method"`` (a point of a method's curve), ``"baseline"`` (an uncompressed base) or ``"posthoc"``
            (a post-hoc codec of ``nscodec-tensorf``'s base, added as a baseline of ectensorf).
        series: label of its curve / point in the plot and table.
        train_flags: the resolved ``ns-train`` flags after the method name, data and output flags excluded.
        export_settings: settings applied at export, sorted ``(key, value)`` pairs.
        scale: camera resolution scale factor.
        test_views: ``"all"`` or how many evenly spaced test views are evaluated.
        baseline_key: key of the baseline point this point is compared with in the table (None: none).
    """

    method: str
    settings: Settings
    scene: str
    seed: int
    role: str
    series: str
    train_flags: Tuple[str, ...]
    export_settings: Settings
    scale: float
    test_views: str
    baseline_key: Optional[str] = None
    dataparser: Tuple[str, ...] = ()
    scene_name: str = ""

    @property
    def name(self) -> str:
        """The scene's name in tables and keys (its :class:`Scene` name, else the directory's)."""
        return self.scene_name or Path(self.scene).name

    @property
    def dataparser_flags(self) -> List[str]:
        """The ``ns-train`` dataparser subcommand and its flags (last on the command line); [] for the method's own."""
        return list(self.dataparser)

    @property
    def train_key(self) -> str:
        """Stable id of the training this point needs (points differing only in export settings share it)."""
        ident = [self.scene, self.method, list(self.train_flags), self.seed, self.scale]
        blob = json.dumps(ident + [list(self.dataparser)] if self.dataparser else ident)
        return f"{_slug(self.method)}-{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    @property
    def key(self) -> str:
        """Stable id of the point: readable prefix (scene, method, settings, seed) + a hash of everything that
        defines it (the same point on a re-run has the same key; any change of flags gives another)."""
        blob = json.dumps([self.train_key, list(self.export_settings), self.test_views])
        text = "_".join(f"{k}={v}" for k, v in self.settings if k not in ("max-num-iterations", "upsampling-iters"))
        readable = _slug(f"{self.name}-{self.method}-{text}-seed{self.seed}")[:80]
        return f"{readable}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"

    def to_dict(self) -> Dict[str, Any]:
        """JSON-safe form (for the records and for shipping a point to a Ray task)."""
        return {"key": self.key, "train_key": self.train_key, "method": self.method, "settings": dict(self.settings),
                "scene": self.scene, "seed": self.seed, "role": self.role, "series": self.series,
                "train_flags": list(self.train_flags), "export_settings": dict(self.export_settings),
                "scale": self.scale, "test_views": self.test_views, "baseline_key": self.baseline_key,
                "dataparser": list(self.dataparser), "scene_name": self.name}


@dataclass
class Sweep:
    """A validated sweep: its points (deduplicated, in run order: points sharing a training are adjacent) and the
    options the runner needs."""

    points: List[Point]
    workdir: Path
    rays: Optional[int] = None
    steps: Optional[int] = None


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "_", text).strip("_")


# ---------------------------------------------------------------------------------------------------------------
# parsing


def parse_set(items: Sequence[str], methods: Sequence[str]) -> Dict[str, Dict[str, List[str]]]:
    """``--set METHOD:KEY=V1,V2`` items → ``{method: {key: [values]}}`` (``METHOD:`` may be left out when the sweep
    has one method; ``*:`` applies to every method).

    Raises:
        SpecError: malformed item, or a method not in the sweep.
    """
    out: Dict[str, Dict[str, List[str]]] = {}
    for item in items:
        m = re.fullmatch(r"(?:([A-Za-z0-9_*-]+):)?([A-Za-z0-9_.-]+)=(.+)", item.strip())
        if not m:
            raise SpecError(f"--set {item!r}: expected METHOD:KEY=VALUE[,VALUE...] (e.g. ectensorf:rate-lambda=1e-5,3e-5)")
        method, key, values = m.groups()
        if method is None:
            if len(methods) != 1:
                raise SpecError(f"--set {item!r}: name the method (METHOD:{key}=...) when the sweep has several")
            method = methods[0]
        targets = list(methods) if method == "*" else [method]
        if method != "*" and method not in methods:
            raise SpecError(f"--set {item!r}: method {method!r} is not in --methods ({', '.join(methods)})")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        for t in targets:
            out.setdefault(t, {})[key.lstrip("-")] = vals
    return out


def parse_posthoc(text: str) -> List[Dict[str, str]]:
    """``fp16-zstd,uniform8,kmeans6`` → nscodec-tensorf export settings per post-hoc codec.

    Raises:
        SpecError: an unknown codec (allowed: fp32, fp16-zstd, uniform<bits>, kmeans<bits>).
    """
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"(uniform|kmeans)(\d+)", item)
        if m:
            out.append({"codec-scheme": m.group(1), "codec-bits": m.group(2)})
        elif item in ("fp32", "fp16-zstd"):
            out.append({"codec-scheme": item})
        else:
            raise SpecError(f"--posthoc: unknown codec {item!r} (allowed: fp32, fp16-zstd, uniform<bits>, kmeans<bits>)")
    return out


def load_spec_file(path: Path) -> Dict[str, Any]:
    """A sweep spec file (JSON, or YAML when the name ends in .yml/.yaml): a mapping with any of the keys
    ``methods`` (list), ``set`` (``{method: {key: [values]}}``), ``scenes``, ``seeds``, ``steps``, ``budget``, ``rays``, ``scale``,
    ``test_views``, ``posthoc``, ``baselines`` (bool). Setting values become strings as on the command line (a number
    through ``str``: write ``"1e-5"`` to keep that spelling in the point's key and command, 1e-5 gives ``1e-05``).

    Raises:
        SpecError: the file is missing, unreadable, or has an unknown key.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file not found: {path}")
    try:
        if path.suffix in (".yml", ".yaml"):
            import yaml

            data = yaml.safe_load(path.read_text())
        else:
            data = json.loads(path.read_text())
    except Exception as err:
        raise SpecError(f"spec file {path} is not valid {'YAML' if path.suffix in ('.yml', '.yaml') else 'JSON'}: {err}") from None
    allowed = {"methods", "set", "scenes", "seeds", "steps", "budget", "rays", "scale", "test_views", "posthoc", "baselines"}
    if not isinstance(data, dict) or set(data) - allowed:
        bad = sorted(set(data) - allowed) if isinstance(data, dict) else "not a mapping"
        raise SpecError(f"spec file {path}: unknown keys {bad} (allowed: {', '.join(sorted(allowed))})")
    return data


def scene_views(scene: Path, split: str) -> Optional[int]:
    """Number of views of ``split`` in a Blender-layout scene (``transforms_<split>.json``); None otherwise."""
    f = Path(scene) / f"transforms_{split}.json"
    if not f.is_file():
        return None
    try:
        return len(json.loads(f.read_text())["frames"])
    except Exception:
        return None


@dataclass(frozen=True)
class Scene:
    """One scene of a sweep: a dataset directory and how ``ns-train`` reads it.

    Attributes:
        data: the dataset directory (absolute).
        dataparser: the ``ns-train`` dataparser subcommand and its flags (e.g. ``("llff-data", "--downscale-factor",
            "8")``); () for the method's own (Blender data).
        scale: camera resolution scale factor of this scene (None: the sweep's ``--scale``).
        name: its name in tables and point keys (default: the directory's).
    """

    data: str
    dataparser: Tuple[str, ...] = ()
    scale: Optional[float] = None
    name: str = ""


def detect_dataparser(data: Path) -> Tuple[str, ...]:
    """The dataparser a dataset directory's layout asks for: () for Blender (``transforms_train.json``; the methods'
    own), ``instant-ngp-data`` for a ``transforms.json`` with ``aabb_scale``, ``nerfstudio-data`` for another
    ``transforms.json``, ``llff-data`` for ``poses_bounds.npy`` (with ``--downscale-factor k`` when only
    ``images_<k>/`` folders exist: the smallest k).

    Raises:
        SpecError: none of these layouts.
    """
    if (data / "transforms_train.json").is_file():
        return ()
    if (data / "transforms.json").is_file():
        try:
            meta = json.loads((data / "transforms.json").read_text())
        except (OSError, ValueError) as err:
            raise SpecError(f"{data}/transforms.json is not readable JSON ({err})") from None
        return ("instant-ngp-data",) if isinstance(meta, dict) and "aabb_scale" in meta else ("nerfstudio-data",)
    if (data / "poses_bounds.npy").is_file():
        if (data / "images").is_dir():
            return ("llff-data",)
        ks = sorted(int(m.group(1)) for p in data.iterdir() if (m := re.fullmatch(r"images_(\d+)", p.name)) and p.is_dir())
        if not ks:
            raise SpecError(f"{data}: an LLFF capture without images/ or images_<k>/")
        return ("llff-data", "--downscale-factor", str(ks[0]))
    raise SpecError(f"{data} is not a scene (no transforms_train.json, transforms.json or poses_bounds.npy)")


def _check_dataparser(flags: Tuple[str, ...], where: str) -> None:
    """``flags[0]`` is a registered dataparser and the rest parse as its options (tyro, as ``ns-train``)."""
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    if flags[0] not in all_dataparsers:
        raise SpecError(f"{where}: unknown dataparser {flags[0]!r} (registered: {', '.join(sorted(all_dataparsers))})")
    import contextlib
    import io

    import tyro

    config = copy.deepcopy(all_dataparsers[flags[0]])
    try:
        with contextlib.redirect_stderr(io.StringIO()) as err, contextlib.redirect_stdout(io.StringIO()):
            tyro.cli(type(config), default=config, args=list(flags[1:]))
    except SystemExit:
        lines = [ln.strip(" │|╭╮╰╯+-─") for ln in err.getvalue().splitlines()]
        lines = [ln for ln in lines if ln and not ln.startswith("For full helptext")]
        why = lines[1] if len(lines) > 1 else "not its options"  # tyro's box: a title, then the reason
        raise SpecError(f"{where}: bad options for {flags[0]}: {' '.join(flags[1:])!r} ({why})") from None


def parse_scene(item: Any) -> Scene:
    """A :class:`Scene` from a directory (its dataparser detected from the layout, :func:`detect_dataparser`) or a
    spec-file mapping ``{data, dataparser, args, scale, name}`` (``args``: a string or list of the dataparser's
    flags; ``dataparser`` without ``args`` keeps its defaults).

    Raises:
        SpecError: a missing directory, an unknown layout, dataparser or option, a bad key or scale.
    """
    if isinstance(item, Scene):
        return item
    if isinstance(item, (str, Path)):
        item = {"data": str(item)}
    if not isinstance(item, dict) or "data" not in item:
        raise SpecError(f"a scene must be a directory or a mapping with 'data', got {item!r}")
    unknown = set(item) - {"data", "dataparser", "args", "scale", "name"}
    if unknown:
        raise SpecError(f"scene {item.get('data')!r}: unknown keys {sorted(unknown)} (allowed: data, dataparser, args, scale, name)")
    data = Path(str(item["data"])).expanduser().resolve()
    if not data.is_dir():
        raise SpecError(f"scene directory not found: {item['data']}")
    if item.get("dataparser"):
        args = item.get("args") or []
        args = args.split() if isinstance(args, str) else [str(a) for a in args]
        flags = (str(item["dataparser"]), *args)
        if flags[0] in ("blender-data",) and not args:
            flags = ()
    else:
        if item.get("args"):
            raise SpecError(f"scene {item['data']!r}: 'args' needs a 'dataparser'")
        flags = detect_dataparser(data)
    if flags:
        _check_dataparser(flags, f"scene {item['data']!r}")
    scale = item.get("scale")
    if scale is not None:
        try:
            scale = float(scale)
            if not 0 < scale <= 1e3:
                raise ValueError
        except (TypeError, ValueError):
            raise SpecError(f"scene {item['data']!r}: scale must be a positive number, got {item.get('scale')!r}") from None
    return Scene(str(data), tuple(flags), scale, str(item.get("name") or ""))


# ---------------------------------------------------------------------------------------------------------------
# config introspection (validates keys and values against the registered ns-train configs)


def _preset(method: str) -> Any:
    from nerfstudio.configs.method_configs import all_methods

    if method not in all_methods:
        raise SpecError(f"method {method!r} is not registered with ns-train")
    return all_methods[method]


def _resolve(config: Any, key: str, method: str) -> Tuple[str, Any, Any, str]:
    """``(full dashed path, current value, parent object, attribute)`` of setting ``key`` in ``config``."""
    candidates = [key] if "." in key else [f"pipeline.model.{key}", key, f"pipeline.datamanager.{key}"]
    for cand in candidates:
        obj: Any = config
        parent, attr = None, ""
        for part in cand.replace("-", "_").split("."):
            parent, attr = obj, part
            if isinstance(obj, dict) and part in obj:
                obj = obj[part]
            elif not isinstance(obj, dict) and is_dataclass(obj) and part in {f.name for f in fields(obj)}:
                obj = getattr(obj, part)
            else:
                break
        else:
            return cand, obj, parent, attr
    raise SpecError(f"{method}: unknown setting {key!r} (not a field of its ns-train config; tried "
                    + ", ".join(f"--{c}" for c in candidates) + ")")


def _check_value(method: str, key: str, value: str, current: Any, parent: Any, attr: str) -> None:
    hint = None
    if is_dataclass(parent):
        try:
            hint = typing.get_type_hints(type(parent)).get(attr)
        except Exception:
            hint = None
    tokens = value.split()
    bad = SpecError(f"{method}: bad value {value!r} for {key}")
    choices = [a for a in typing.get_args(hint)] if typing.get_origin(hint) is typing.Literal else None
    if choices is not None:
        if value not in [str(c) for c in choices]:
            raise SpecError(f"{method}: bad value {value!r} for {key} (allowed: {', '.join(map(str, choices))})")
        return
    try:
        if isinstance(current, bool):
            if value not in ("True", "False"):
                raise ValueError
        elif isinstance(current, int):
            int(value)
        elif isinstance(current, float):
            float(value)
        elif isinstance(current, (tuple, list)) and current and isinstance(current[0], (int, float)):
            [type(current[0])(t) for t in tokens]
    except ValueError:
        raise bad from None


# step-dependent settings of the tensorf family (scaled with --steps unless set explicitly)
def _scaled(iters: Sequence[int], factor: float) -> str:
    return " ".join(str(max(1, int(round(i * factor)))) for i in iters)


def _resolve_train(method: str, settings: Dict[str, str], steps: Optional[int], rays: Optional[int]) -> Tuple[List[str], Dict[str, str]]:
    """The ``ns-train`` flags of ``method`` at ``settings`` (export keys excluded) and the export settings.

    ``--steps`` (``max-num-iterations``) also rescales what the preset ties to its step count: every optimizer
    schedule that ends at the preset's last step ends at the new one (as ``*_trainer_config(max_steps=...)`` does),
    ``nscodec-tensorf``'s plane upsampling steps, and ``ectensorf``'s stage switch (2:1 as the preset, with its
    upsampling steps). Settings given explicitly are never changed.
    """
    spec = METHODS[method]
    preset = _preset(method)
    train: Dict[str, str] = {}
    export: Dict[str, str] = {}
    for key, value in settings.items():
        full, current, parent, attr = _resolve(preset, key, method)
        _check_value(method, key, value, current, parent, attr)
        short = full[len("pipeline.model."):] if full.startswith("pipeline.model.") else full
        if short in spec.export_keys:
            export[short] = value
        else:
            train[full] = value
    total = int(train.get("max-num-iterations", steps or preset.max_num_iterations))
    if total <= 0:
        raise SpecError(f"{method}: the number of steps must be positive, got {total}")
    if total != preset.max_num_iterations:
        train.setdefault("max-num-iterations", str(total))
        for group, opt in preset.optimizers.items():
            sched = opt.get("scheduler")
            if sched is not None and getattr(sched, "max_steps", None) == preset.max_num_iterations:
                train.setdefault(f"optimizers.{group}.scheduler.max-steps", str(total))
        model = preset.pipeline.model
        if hasattr(model, "stage1_steps") and getattr(model, "init_from", None) is None:
            stage1 = int(train.get("pipeline.model.stage1-steps", round(total * model.stage1_steps / preset.max_num_iterations)))
            train.setdefault("pipeline.model.stage1-steps", str(stage1))
            train.setdefault("pipeline.model.upsampling-iters", _scaled(model.upsampling_iters, stage1 / model.stage1_steps))
        elif hasattr(model, "upsampling_iters"):
            train.setdefault("pipeline.model.upsampling-iters", _scaled(model.upsampling_iters, total / preset.max_num_iterations))
    if rays is not None:
        train.setdefault("pipeline.datamanager.train-num-rays-per-batch", str(int(rays)))
    flags: List[str] = []
    for k in sorted(train):
        flags += [f"--{k}", *train[k].split()]
    return flags, export


def _series(method: str, role: str, export: Dict[str, str]) -> str:
    spec = METHODS[method]
    if spec.export_labels is not None:  # labels by an export setting (nscodec-tensorf's post-hoc codecs)
        key, labels = spec.export_labels
        return labels.get(export.get(key, ""), spec.label)
    return (spec.base_label or spec.label) if role == "baseline" else spec.label


def _normalize(method: str, settings: Dict[str, str]) -> Dict[str, str]:
    """Drop settings that do not apply (:attr:`~nscodec.core.methods.Method.unused`: e.g. ``codec-bits`` of the fp32 /
    fp16-zstd schemes), so such points dedupe."""
    s = dict(settings)
    for key, values, dropped in METHODS[method].unused:
        if s.get(key) in values:
            s.pop(dropped, None)
    return s


def build_sweep(methods: Sequence[str], scenes: Sequence[Path], grid: Optional[Dict[str, Dict[str, List[str]]]] = None,
                seeds: Sequence[int] = (0,), steps: Optional[int] = None, rays: Optional[int] = None, scale: float = 1.0,
                test_views: str = "all", baselines: bool = True, posthoc: Sequence[Dict[str, str]] = (),
                workdir: Path = Path("outputs/rd"), budget: float = 1.0) -> Sweep:
    """Expand and validate a sweep: methods × (cartesian product of each method's ``grid``, else its default) ×
    scenes × seeds, plus (``baselines``) each method's uncompressed baseline trained with the same step budget, and
    for ectensorf the ``posthoc`` codecs of that base.

    Args:
        methods: method names (keys of :data:`METHODS`).
        scenes: dataset directories or :class:`Scene` s / spec mappings (:func:`parse_scene`).
        grid: ``{method: {setting: [values]}}`` (see :func:`parse_set`).
        steps: training steps of every point (None: each preset's own); ``rays``: rays per batch (None: preset).
        budget: a multiple of each method's own preset steps (its equal budget): 4 trains every point, and the
            baseline with it, 4× its preset's steps, schedules rescaled as with ``steps``; 1 changes nothing (and
            keeps the points' keys). Not together with ``steps``.
        scale: camera resolution scale factor; ``test_views``: ``"all"`` or a count of evenly spaced test views.
        workdir: where runs are cached (not created here).

    Returns:
        The :class:`Sweep`, points deduplicated by key, those sharing a training adjacent.

    Raises:
        SpecError: unknown method, unknown setting or ill-typed value, a missing or malformed scene directory, bad
            seeds / steps / test views / budget.
    """
    grid = {m: dict(kv) for m, kv in (grid or {}).items()}
    if not methods:
        raise SpecError("no methods given (--methods)")
    for m in methods:
        if m not in METHODS:
            raise SpecError(f"unknown method {m!r} (known: {', '.join(METHODS)})")
    for m in grid:
        if m not in methods:
            raise SpecError(f"settings given for {m!r}, which is not in the methods ({', '.join(methods)})")
    if not scenes:
        raise SpecError("no scenes given (--data DIR ...)")
    scene_list = [parse_scene(s) for s in scenes]
    if test_views != "all":
        try:
            if int(test_views) < 1:
                raise ValueError
        except ValueError:
            raise SpecError(f"--test-views must be 'all' or a positive count, got {test_views!r}") from None
        test_views = str(int(test_views))
    if steps is not None and steps < 1:
        raise SpecError(f"--steps must be positive, got {steps}")
    if not (isinstance(budget, (int, float)) and math.isfinite(budget) and 0 < budget <= 1000):
        raise SpecError(f"--budget must be a positive multiple of the presets' steps (at most 1000), got {budget!r}")
    if budget != 1:
        if steps is not None:
            raise SpecError("give --steps (the same steps for every method) or --budget (a multiple of each preset's), not both")
        for m in methods:
            if "max-num-iterations" not in grid.get(m, {}):
                total = max(1, int(round(_preset(m).max_num_iterations * budget)))
                grid[m] = {**grid.get(m, {}), "max-num-iterations": [str(total)]}
    if not seeds:
        raise SpecError("no seeds given")

    # (method, settings, role, baseline of) before scenes/seeds
    specs: List[Tuple[str, Dict[str, str], str, Optional[Tuple[str, Dict[str, str]]]]] = []
    for m in methods:
        spec = METHODS[m]
        user = grid.get(m, {})
        axes = dict(user) if any(k in spec.knobs for k in user) or not spec.default_grid else {**spec.default_grid, **user}
        keys = list(axes)
        for combo in itertools.product(*(axes[k] for k in keys)):
            settings = _normalize(m, dict(zip(keys, combo)))
            base = None
            if baselines and spec.base is not None:
                bm, bs = spec.base
                base = (bm, dict(bs))
            specs.append((m, settings, "baseline" if spec.is_base else "method", base))

    points: Dict[str, Point] = {}

    def add(point: Point) -> Point:
        old = points.get(point.key)
        if old is None or (old.role == "method" and point.role != "method"):
            points[point.key] = point
            return point
        return old

    for sc in scene_list:
        scene, sc_scale = sc.data, float(sc.scale if sc.scale is not None else scale)
        where = dict(dataparser=sc.dataparser, scene_name=sc.name)
        for seed in seeds:
            for m, settings, role, base in specs:
                flags, export = _resolve_train(m, settings, steps, rays)
                base_key = None
                if base is not None:
                    bm, bs = base
                    bflags_settings = dict(bs)
                    if METHODS[m].base_inherits:  # it trains as this method's pretraining stage does
                        vals = _flag_values(flags)
                        preset = _preset(m)
                        bflags_settings["max-num-iterations"] = vals.get("max-num-iterations", str(preset.max_num_iterations))
                        for key in METHODS[m].base_inherits:
                            value = getattr(preset.pipeline.model, key.replace("-", "_"))
                            default = " ".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)
                            bflags_settings[key] = vals.get(f"pipeline.model.{key}", default)
                    for k, v in settings.items():  # the budget carries over: steps and rays per batch
                        if k in ("max-num-iterations", "pipeline.datamanager.train-num-rays-per-batch",
                                 "train-num-rays-per-batch"):
                            bflags_settings.setdefault(k, v)
                    bflags, bexport = _resolve_train(bm, bflags_settings, steps, rays)
                    bpoint = add(Point(bm, tuple(sorted(bflags_settings.items())), scene, int(seed), "baseline",
                                       _series(bm, "baseline", bexport),
                                       tuple(bflags), tuple(sorted(bexport.items())), sc_scale, test_views, **where))
                    base_key = bpoint.key
                    if METHODS[m].posthoc_of_base:
                        for ph in posthoc:
                            ps = {**{k: v for k, v in bflags_settings.items() if k != "codec-scheme"}, **ph}
                            pflags, pexport = _resolve_train(bm, ps, steps, rays)
                            add(Point(bm, tuple(sorted(ps.items())), scene, int(seed), "posthoc", _series(bm, "posthoc", pexport),
                                      tuple(pflags), tuple(sorted(pexport.items())), sc_scale, test_views, base_key, **where))
                if METHODS[m].uncompressed_when:  # its export settings decide: the uncompressed base or a post-hoc codec
                    role = "baseline" if all(export.get(k) == v for k, v in METHODS[m].uncompressed_when.items()) else "posthoc"
                add(Point(m, tuple(sorted(settings.items())), scene, int(seed), role, _series(m, role, export), tuple(flags),
                          tuple(sorted(export.items())), sc_scale, test_views, base_key, **where))
    # points sharing a training run one after the other (one training, then its exports)
    order: Dict[str, int] = {}
    for p in points.values():
        order.setdefault(p.train_key, len(order))
    ordered = sorted(points.values(), key=lambda p: order[p.train_key])
    return Sweep(points=ordered, workdir=Path(workdir), rays=rays, steps=steps)


def _flag_values(flags: Sequence[str]) -> Dict[str, str]:
    """``["--a", "1", "2", "--b", "x"]`` → ``{"a": "1 2", "b": "x"}``."""
    out: Dict[str, List[str]] = {}
    cur = None
    for f in flags:
        if f.startswith("--"):
            cur = f[2:]
            out[cur] = []
        elif cur is not None:
            out[cur].append(f)
    return {k: " ".join(v) for k, v in out.items()}


def copy_point(point: Point, **changes: Any) -> Point:
    """A copy of ``point`` with some fields changed (tests, re-runs)."""
    d = copy.copy(point.__dict__)
    d.update(changes)
    return Point(**d)
