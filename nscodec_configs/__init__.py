"""nerfstudio method registrations of nscodec: configs as wiring, the code lives in :mod:`nscodec`.

Each ``nerfstudio.method_configs`` entry point of ``pyproject.toml`` names an attribute of this package,
``nscodec_configs:<method name with _>``; it is the ``MethodSpecification`` of that method, built on first access
from its declaration in :mod:`nscodec.core.methods` (description) and its preset (:mod:`nscodec_configs.presets`).
"""

from __future__ import annotations

from typing import Any


def __getattr__(name: str) -> Any:
    """``ectensorf_paper`` → the ``MethodSpecification`` of ``ectensorf-paper`` (PEP 562; what nerfstudio's entry
    point loads)."""
    from nscodec.core.methods import METHODS

    for m in METHODS.values():
        if m.entry_point.split(":")[1] == name:
            from nerfstudio.plugins.types import MethodSpecification

            import nscodec.compat  # noqa: F401  (torch.load weights_only fix, applied as soon as methods are discovered)

            spec = MethodSpecification(config=m.trainer_config(), description=m.description)
            globals()[name] = spec
            return spec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
