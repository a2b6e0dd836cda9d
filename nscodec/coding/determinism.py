"""Bit-exact decoding across machines and thread counts.

A ``.nsc`` stores integers and exactly representable floats; what a receiver computes from them (decoder
networks: ectensorf's transposed convolutions, SHACIRA's latent decoder, CodecNeRF's decoder half) must come out
bit-identical to what the sender evaluated. CPU convolution and matrix products can differ in the last bit between
intra-op thread counts (different blocking and summation order), so every decoder network runs under
:func:`fixed_threads` — through :meth:`nscodec.core.model_base.NscModel.decoding`, on the sender's side (evaluation,
export) and the receiver's (:func:`nscodec.io.load_model`) alike.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

__all__ = ["fixed_threads", "DECODE_THREADS"]

#: intra-op threads every decoder network runs with
DECODE_THREADS = 1


@contextmanager
def fixed_threads(n: int = DECODE_THREADS) -> Iterator[None]:
    """Run a block with ``n`` torch intra-op threads, restoring the previous count afterwards (also on error)."""
    import torch

    old = torch.get_num_threads()
    if old != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != old:
            torch.set_num_threads(old)
