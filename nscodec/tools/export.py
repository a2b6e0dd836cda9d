"""``ns-export compressed``: write a trained nscodec model as a ``.nsc`` file.

nerfstudio 1.1.5's exporter has no plugin hook; :mod:`nscodec._startup.hook` calls
:func:`register_with_exporter` when ``nerfstudio.scripts.exporter`` is imported, which appends this subcommand
to its ``Commands`` union. The same export is available as ``nscodec export --load-config ... --output-dir ...``
(and as :func:`export_from_config` in Python).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from nerfstudio.scripts.exporter import Exporter

from nscodec.data import training_meta


def load_run(load_config: Path, load_step: Optional[int] = None, test_mode: str = "inference") -> Tuple[Any, Any]:
    """``(config, pipeline)`` of a training run's checkpoint, via nerfstudio's ``eval_setup``, after checking that it
    exists. ``load_step``: the step of the checkpoint (``step-<load_step>.ckpt``, as nerfstudio names them; a run
    saved with ``--save-only-latest-checkpoint False`` keeps several); None loads the latest.

    Raises:
        NscError: the config file does not exist, is not a nerfstudio training config, or its run has no checkpoint
            (or none of step ``load_step``, listing the steps it has).
    """
    from nerfstudio.utils.eval_utils import eval_setup

    from nscodec.errors import NscError

    load_config = Path(load_config)
    if not load_config.is_file():
        raise NscError(f"training config not found: {load_config}")
    ckpt_dir = _checkpoint_dir(load_config)
    if not any(ckpt_dir.glob("step-*.ckpt")):
        raise NscError(
            f"no checkpoint (step-*.ckpt) in {ckpt_dir} — nerfstudio resolves it from the config's output_dir, "
            "relative to the current directory: run from where you trained, or train first"
        )
    if load_step is not None and not (ckpt_dir / f"step-{int(load_step):09d}.ckpt").is_file():
        have = sorted(int(p.stem.split("-")[1]) for p in ckpt_dir.glob("step-*.ckpt"))
        raise NscError(f"no checkpoint of step {load_step} in {ckpt_dir}; its steps are {have}")

    def at_step(config: Any) -> Any:
        if load_step is not None:
            config.load_step = int(load_step)
        return config

    config, pipeline, _, _ = eval_setup(load_config, test_mode=test_mode, update_config_callback=at_step)
    return config, pipeline


def export_from_config(
    load_config: Path, output_path: Path, overwrite: bool = False, quiet: bool = False, load_step: Optional[int] = None,
    model_overrides: Optional[Dict[str, str]] = None,
) -> int:
    """Load a checkpoint of the training run a ``config.yml`` names (:func:`load_run`; ``load_step`` None = the
    latest) and write ``output_path`` (.nsc). Returns bytes.

    ``model_overrides``: model config fields set before export, ``{name: value}`` with the name as on the command
    line (``codec-scheme``) or as the field (``codec_scheme``), the value a string converted to the field's type —
    for settings that only the export reads (``nscodec-tensorf``'s post-hoc codec ``codec-scheme`` / ``codec-bits``).

    Raises:
        NscError: the errors of :func:`load_run`, the model has no ``.nsc`` codec, or an override names no field of
            the model config or has a value of the wrong type.
        FileExistsError: ``output_path`` exists and ``overwrite`` is False.
    """
    from nerfstudio.utils.rich_utils import CONSOLE

    from nscodec.errors import NscError
    from nscodec.io import export_model

    if not Path(load_config).is_file():  # before the overwrite check: a missing config is the first thing to say
        raise NscError(f"training config not found: {load_config}")
    if Path(output_path).exists() and not overwrite:
        raise FileExistsError(f"{output_path} already exists; pass --overwrite to replace it")
    config, pipeline = load_run(load_config, load_step)
    for key, value in (model_overrides or {}).items():
        _override(pipeline.model.config, key, value)
    meta = training_meta(config.pipeline)
    size = export_model(pipeline.model, output_path, meta=meta, overwrite=overwrite)
    if not quiet:
        CONSOLE.print(f"[bold green]Wrote {output_path} ({size:,} bytes)")
    return size


def _override(cfg: Any, key: str, value: Any) -> None:
    """Set field ``key`` of the model config ``cfg`` to ``value`` (a string is converted to the field's type)."""
    from nscodec.errors import NscError

    name = key.replace("-", "_")
    if not hasattr(cfg, name):
        raise NscError(f"export: the model config {type(cfg).__name__} has no field {key!r}")
    current = getattr(cfg, name)
    if isinstance(value, str) and not isinstance(current, str) and current is not None:
        try:
            if isinstance(current, bool):
                if value not in ("True", "False"):
                    raise ValueError
                value = value == "True"
            else:
                value = type(current)(value)
        except (TypeError, ValueError):
            raise NscError(f"export: bad value {value!r} for {key} (expected {type(current).__name__})") from None
    setattr(cfg, name, value)


def _checkpoint_dir(load_config: Path) -> Path:
    """The checkpoint directory a training config.yml refers to. Raises NscError if it is not such a config."""
    import yaml

    from nscodec.errors import NscError

    try:
        config = yaml.load(load_config.read_text(), Loader=yaml.Loader)  # nerfstudio's own format (trusted file)
    except Exception as err:
        raise NscError(f"{load_config} is not a readable nerfstudio config: {type(err).__name__}") from None
    if not hasattr(config, "get_checkpoint_dir"):
        raise NscError(f"{load_config} is not a nerfstudio training config")
    return Path(config.get_checkpoint_dir())  # exactly what nerfstudio's eval_setup loads from


@dataclass
class ExportCompressed(Exporter):
    """Write the trained model as a compressed ``.nsc`` file (nscodec methods)."""

    filename: str = "scene.nsc"
    """Name of the file written inside output_dir."""
    overwrite: bool = False
    """Replace an existing file of that name."""
    load_step: Optional[int] = None
    """Step of the checkpoint to export (default: the latest)."""

    def main(self) -> None:
        from nscodec.errors import NscError

        target = self.output_dir / self.filename
        if target.exists() and not self.overwrite:
            raise SystemExit(f"ns-export compressed: error: {target} already exists; pass --overwrite to replace it")
        self.output_dir.mkdir(parents=True, exist_ok=True)
        try:
            export_from_config(self.load_config, target, overwrite=self.overwrite, load_step=self.load_step)
        except (NscError, FileExistsError) as err:
            raise SystemExit(f"ns-export compressed: error: {err}") from None


def register_with_exporter(module: Optional[Any] = None) -> None:
    """Append ``compressed`` to ``nerfstudio.scripts.exporter.Commands`` (idempotent)."""
    import typing

    import tyro
    from typing_extensions import Annotated

    if module is None:
        import nerfstudio.scripts.exporter as module  # type: ignore[no-redef]
    if getattr(module, "_nscodec_registered", False):
        return
    commands = module.Commands
    # Commands = FlagConversionOff[Union[Annotated[...], ...]]  ->  unwrap, extend, re-wrap
    inner = typing.get_args(commands)[0] if typing.get_origin(commands) is Annotated else commands
    members = list(typing.get_args(inner)) + [Annotated[ExportCompressed, tyro.conf.subcommand(name="compressed")]]
    module.Commands = tyro.conf.FlagConversionOff[typing.Union[tuple(members)]]  # type: ignore[valid-type]
    module._nscodec_registered = True


register_with_exporter()  # the exporter module is loaded by now (imported above); idempotent
