"""What a method is, declared once: one :class:`Method` per ``ns-train`` method nscodec registers.

Everything that needs to know the methods reads :data:`METHODS`:

* ``nscodec_configs`` builds the ``MethodSpecification`` each ``nerfstudio.method_configs`` entry point loads (the
  entry-point names in ``pyproject.toml`` are checked against this list by ``tests/test_registry.py``);
* :data:`nscodec.io.CODECS` — the allow-list of ``.nsc`` codecs a file may name, and the config class each builds;
* ``nscodec rd`` (:mod:`nscodec.rd.spec`) — rate knobs, default sweep, export-time settings, the uncompressed base
  each method is compared with, series labels;
* the viewer and ``nscodec info`` — whether a method's files have levels of detail.

Adding a method: its folder (``nscodec/<method>/``: config, model, codec), one :class:`Method` here, its trainer
config in ``nscodec_configs``, an entry point line in ``pyproject.toml`` and a line in ``tests/test_conformance.py``.

This module imports nothing heavy (no torch, no nerfstudio): classes and trainer configs are named by
``"module:attribute"`` strings and imported on use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Method", "METHODS", "method", "codecs", "resolve"]


@dataclass(frozen=True)
class Method:
    """One ``ns-train`` method of nscodec.

    Attributes:
        name: the ``ns-train`` method name (and the ``nerfstudio.method_configs`` entry point).
        description: the line ``ns-train --help`` shows.
        trainer: ``"module:function"`` returning its ``TrainerConfig`` (in ``nscodec_configs``: configs as wiring).
        codec: the ``.nsc`` codec its files name in their header (methods of one model share it).
        model_config: ``"module:Class"`` of its model config: what a file of ``codec`` is decoded with.
        knobs: its rate knobs, the settings a rate–distortion curve sweeps (``nscodec rd --set``).
        default_grid: the sweep when ``--set`` names none of its knobs, ``{setting: values}``.
        export_keys: settings applied at export, not in training (every point differing only in them shares a
            training).
        base: ``(method, settings)`` of its own uncompressed base, trained on the same rays; None when it has none.
        base_inherits: model settings the base takes from this method's preset, so that it trains as this method's
            pretraining stage does (ectensorf: the sample spacing and plane upsampling of its stage 1).
        posthoc_of_base: the sweep also exports its base with the post-hoc codecs (``nscodec rd --posthoc``).
        uncompressed_when: export settings under which this method's file is an uncompressed base
            (``nscodec-tensorf``'s fp32 scheme); its other export settings are post-hoc codecs of that base.
        is_base: every point of this method is an uncompressed base (``codecnerf-scratch``).
        label: series label in plots and tables.
        base_label: the label of this method's points when they are another method's base.
        export_labels: ``(setting, {value: label})``: series labels by an export setting.
        unused: ``(setting, values, dropped)``: under these values of ``setting``, ``dropped`` does not apply (the
            sweep drops it, so such points are one).
        lod: its files store levels of detail (a prefix decodes a coarser level).
        needs_codec_model: it builds on a pretrained codec-model file (``--pipeline.model.codec-model-path``).
        paper: the work it implements (short citation).
        status: ``available`` (trains, exports and decodes on the CPU budget) or ``gpu-scale`` (a paper-scale preset
            for GPU runs: it works on CPU but takes hours).
    """

    name: str
    description: str
    trainer: str
    codec: str
    model_config: str
    knobs: Tuple[str, ...] = ()
    default_grid: Dict[str, Tuple[str, ...]] = field(default_factory=dict)
    export_keys: Tuple[str, ...] = ()
    base: Optional[Tuple[str, Dict[str, str]]] = None
    base_inherits: Tuple[str, ...] = ()
    posthoc_of_base: bool = False
    uncompressed_when: Dict[str, str] = field(default_factory=dict)
    is_base: bool = False
    label: str = ""
    base_label: str = ""
    export_labels: Optional[Tuple[str, Dict[str, str]]] = None
    unused: Tuple[Tuple[str, Tuple[str, ...], str], ...] = ()
    lod: bool = False
    needs_codec_model: bool = False
    paper: str = ""
    status: str = "available"

    @property
    def entry_point(self) -> str:
        """The ``pyproject.toml`` entry-point value: ``nscodec_configs:<name with _>``."""
        return f"nscodec_configs:{self.name.replace('-', '_')}"

    def trainer_config(self) -> Any:
        """A fresh ``TrainerConfig`` of the method's preset (imports ``nscodec_configs``)."""
        return resolve(self.trainer)()


def resolve(path: str) -> Any:
    """The object ``"module:attribute"`` names (imported on use)."""
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


#: shacira's fp32 hash-grid baseline: ``compress False``, and the table learning rate its config function gives an
#: uncompressed table (``field_lr``, as Instant-NGP; ``shacira_trainer_config`` picks it when the config is built, so a
#: plain ``--pipeline.model.compress False`` would keep the latents' rate)
_SHACIRA_FP32 = {"compress": "False", "optimizers.encodings.optimizer.lr": "1e-2",
                 "optimizers.encodings.scheduler.lr-final": "1e-3"}

_TENSORF = "nscodec.tensorf.model:NscTensoRFModelConfig"
_ECTENSORF = "nscodec.ectensorf.model:ECTensoRFModelConfig"
_SHACIRA = "nscodec.shacira.model:ShaciraModelConfig"
_VQAD = "nscodec.vqad.model:VQADModelConfig"
_CODECNERF = "nscodec.codecnerf.model:CodecNeRFModelConfig"
_CFG = "nscodec_configs.presets:"

#: every method nscodec registers with ``ns-train`` (module docstring)
METHODS: Dict[str, Method] = {m.name: m for m in [
    Method("nscodec-tensorf", "TensoRF-VM, CPU-fast (occupancy skipping, early termination, packed samples); uncompressed base.",
           _CFG + "nscodec_tensorf", "nscodec-tensorf", _TENSORF, knobs=("codec-scheme", "codec-bits"),
           default_grid={"codec-scheme": ("fp32", "fp16-zstd", "uniform", "kmeans"), "codec-bits": ("8",)},
           export_keys=("codec-scheme", "codec-bits"), uncompressed_when={"codec-scheme": "fp32"}, label="nscodec-tensorf",
           unused=(("codec-scheme", ("fp32", "fp16-zstd"), "codec-bits"),),
           export_labels=("codec-scheme", {"fp32": "nscodec-tensorf fp32 (uncompressed base)", "fp16-zstd": "post-hoc fp16 + zstd",
                                           "uniform": "post-hoc uniform + EC", "kmeans": "post-hoc k-means VQ + EC"}),
           paper="TensoRF (Chen et al., ECCV 2022)"),
    Method("ectensorf", "ECTensoRF (Neural NeRF Compression): TensoRF-VM planes -> entropy-coded latents, CPU-sized.",
           _CFG + "ectensorf", "ectensorf", _ECTENSORF, knobs=("rate-lambda",), default_grid={"rate-lambda": ("3e-5",)},
           base=("nscodec-tensorf", {"codec-scheme": "fp32"}), base_inherits=("step-ratio", "upsampling-iters"),
           posthoc_of_base=True, label="ectensorf",
           paper="Neural NeRF Compression (Pham et al., ICML 2024)"),
    Method("ectensorf-paper", "ECTensoRF with the paper-scale schedule (for GPU runs).",
           _CFG + "ectensorf_paper", "ectensorf", _ECTENSORF, knobs=("rate-lambda",), default_grid={"rate-lambda": ("3e-5",)},
           base=("nscodec-tensorf", {"codec-scheme": "fp32"}), base_inherits=("step-ratio", "upsampling-iters"),
           posthoc_of_base=True, label="ectensorf-paper",
           paper="Neural NeRF Compression (Pham et al., ICML 2024)", status="gpu-scale"),
    Method("shacira", "SHACIRA: hash grid from entropy-coded integer latents (STE rounding on CPU), LOD streaming; CPU-sized.",
           _CFG + "shacira", "shacira", _SHACIRA, knobs=("lambda-i", "log2-hashmap-size"), default_grid={"lambda-i": ("1e-4",)},
           base=("shacira", _SHACIRA_FP32), label="shacira", base_label="shacira fp32 hash grid (uncompressed)", lod=True,
           paper="SHACIRA (Girish et al., ICCV 2023)"),
    Method("shacira-paper", "SHACIRA at Instant-NGP scale (16 levels, T=2^19, max res 2048; for GPU runs).",
           _CFG + "shacira_paper", "shacira", _SHACIRA, knobs=("lambda-i", "log2-hashmap-size"),
           default_grid={"lambda-i": ("1e-4",)}, base=("shacira-paper", _SHACIRA_FP32), label="shacira-paper",
           base_label="shacira-paper fp32 hash grid (uncompressed)", lod=True,
           paper="SHACIRA (Girish et al., ICCV 2023)", status="gpu-scale"),
    Method("vqad", "VQ-AD (Variable Bitrate Neural Fields): learned b-bit codebook indices, streaming LODs; CPU-sized.",
           _CFG + "vqad", "vqad", _VQAD, knobs=("bits",), default_grid={"bits": ("4",)}, base=("vqad", {"grid-mode": "float"}),
           label="vqad", base_label="vqad float grid (uncompressed)", lod=True,
           paper="Variable Bitrate Neural Fields (Takikawa et al., SIGGRAPH 2022)"),
    Method("codecnerf", "CodecNeRF: feed-forward encoding + PEFT (rank-4 plane deltas, LoRA) with entropy-coded deltas (PEFT++).",
           _CFG + "codecnerf", "codecnerf", _CODECNERF, knobs=("rate-lambda",), default_grid={"rate-lambda": ("2e-3",)},
           base=("codecnerf-scratch", {}), label="codecnerf", needs_codec_model=True,
           paper="CodecNeRF (Kang et al., AAAI 2025)"),
    Method("codecnerf-peft", "CodecNeRF with PEFT only (float32 deltas, no entropy coding).",
           _CFG + "codecnerf_peft", "codecnerf", _CODECNERF, base=("codecnerf-scratch", {}), label="codecnerf-peft",
           needs_codec_model=True,
           paper="CodecNeRF (Kang et al., AAAI 2025)"),
    Method("codecnerf-scratch", "Per-scene triplanes from scratch with the CodecNeRF renderer (the paper's 'Triplanes' baseline).",
           _CFG + "codecnerf_scratch", "codecnerf", _CODECNERF, is_base=True, label="codecnerf-scratch (uncompressed triplanes)",
           paper="CodecNeRF (Kang et al., AAAI 2025)"),
]}


def method(name: str) -> Method:
    """The :class:`Method` called ``name``.

    Raises:
        KeyError: no such method (the message lists them)."""
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r} (nscodec has: {', '.join(METHODS)})")
    return METHODS[name]


def codecs() -> Dict[str, str]:
    """``{codec: "module:ModelConfigClass"}`` of every ``.nsc`` codec (the methods sharing a codec agree on its class)."""
    out: Dict[str, str] = {}
    for m in METHODS.values():
        if out.setdefault(m.codec, m.model_config) != m.model_config:
            raise RuntimeError(f"methods of codec {m.codec!r} name two model configs")  # a wrong table: a bug here
    return out


def lod_codecs() -> List[str]:
    """The codecs whose files store levels of detail."""
    return sorted({m.codec for m in METHODS.values() if m.lod})
