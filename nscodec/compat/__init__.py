"""Fixes for nerfstudio 1.1.5 traps, applied from our plugin (never by editing site-packages).

* :func:`register_checkpoint_globals` — torch >= 2.6 loads with ``weights_only=True`` and rejects nerfstudio
  checkpoints (numpy scalars in optimizer/scheduler state); we allow-list exactly those numpy types.
* :func:`make_lpips` — torchmetrics' LPIPS downloads AlexNet weights when constructed; we build it only when
  the weights are already on disk and otherwise report LPIPS as unavailable, once.
"""

from nscodec.compat.lpips import lpips_weights_path, make_lpips
from nscodec.compat.torch_load import register_checkpoint_globals

register_checkpoint_globals()

__all__ = ["make_lpips", "lpips_weights_path", "register_checkpoint_globals"]
