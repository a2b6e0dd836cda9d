"""Shared compression core of nscodec.

Training path (torch, imported lazily on first access):
    :class:`FactorizedPrior`, :class:`MaskedFactorizedPrior`, :func:`quantize`, :func:`to_symbols`.
Coding path (numpy only):
    :class:`IntegerCDFTable` (exported entropy model), :class:`EntropyCoder` / :func:`get_coder`
    (``"ans"`` via constriction, optional ``"torchac"``), :func:`raw_section` / :func:`entropy_section` /
    :func:`decode_section`, and the ``.nsc`` container :func:`write_nsc` / :func:`read_nsc`.
Errors: :class:`NscError` (base, a ValueError), :class:`NscFormatError` (every malformed input),
:class:`EntropyCodingError`.

Typical export::

    y_sym = to_symbols(latents)                         # int32 [C, H, W]
    table = prior.build_cdf_table(precision=16, symbols=y_sym)
    sec = entropy_section("latents", y_sym, table)      # coder "ans"
    write_nsc("scene.nsc", "ectensorf", config, [sec])
    y_dec = decode_section(read_nsc("scene.nsc").sections["latents"])
"""

from __future__ import annotations

from typing import Any

from .cdf_tables import IntegerCDFTable
from .coders import ConstrictionCoder, EntropyCoder, TorchacCoder, available_coders, get_coder, register_coder
from .container import FORMAT_VERSION, NscFile, Section, SectionInfo, read_nsc, write_nsc
from nscodec.errors import EntropyCodingError, NscError, NscFormatError
from .tensor_codec import decode_section, entropy_section, raw_section, zlib_section, zstd_section

_LAZY = {
    "FactorizedPrior": "entropy_models",
    "MaskedFactorizedPrior": "entropy_models",
    "quantize": "quantization",
    "to_symbols": "quantization",
}

__all__ = [
    "NscError",
    "NscFormatError",
    "EntropyCodingError",
    "IntegerCDFTable",
    "EntropyCoder",
    "ConstrictionCoder",
    "TorchacCoder",
    "get_coder",
    "register_coder",
    "available_coders",
    "FORMAT_VERSION",
    "Section",
    "SectionInfo",
    "NscFile",
    "write_nsc",
    "read_nsc",
    "raw_section",
    "zlib_section",
    "zstd_section",
    "entropy_section",
    "decode_section",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    """Import torch-dependent names on first use, so the container/CLI stay fast to import (PEP 562)."""
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
