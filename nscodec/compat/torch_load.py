"""Let ``torch.load(weights_only=True)`` (the default from torch 2.6) read nerfstudio checkpoints.

nerfstudio's trainer saves ``{"step", "pipeline", "optimizers", "schedulers", "scalers"}``; the scheduler and
scaler states hold numpy scalars, which the weights-only unpickler refuses ("Unsupported global:
numpy.core.multiarray.scalar"). Instead of turning ``weights_only`` off (which would let a checkpoint run
arbitrary code), we add the few numpy reconstruction helpers and dtype classes to torch's allow-list.
This covers ``ns-eval``, ``ns-viewer``, ``ns-export`` and ``ns-train --load-dir`` as soon as our plugin is
imported (nerfstudio imports it when it discovers methods or reads a config that names our classes).
"""

from __future__ import annotations

_DONE = False


def _numpy_globals() -> list:
    import numpy as np

    out: list = []
    try:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct, scalar
    except ImportError:  # numpy 2.x
        from numpy._core.multiarray import _reconstruct, scalar  # type: ignore[no-redef]
    out += [scalar, _reconstruct, np.ndarray, np.dtype]
    for name in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
        t = getattr(np, name)
        out.append(t)
        out.append(type(np.dtype(t)))  # numpy.dtypes.Float64DType etc.
    return out


def register_checkpoint_globals() -> bool:
    """Allow-list the numpy types found in nerfstudio checkpoints for ``torch.load(weights_only=True)``.

    Returns:
        True if registered (or already), False when this torch has no ``add_safe_globals`` (torch < 2.4,
        which does not default to ``weights_only`` either, so nothing is needed).
    """
    global _DONE
    if _DONE:
        return True
    import torch.serialization as ser

    if not hasattr(ser, "add_safe_globals"):
        return False
    ser.add_safe_globals(_numpy_globals())
    _DONE = True
    return True
