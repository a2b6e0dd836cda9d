"""The spatial hash of Instant-NGP (Müller et al. 2022, Eq. 4; primes of Teschner et al. 2003), as nerfstudio's
``HashEncoding.hash_fn`` computes it: ``h(x) = (x·π₁ ⊕ y·π₂ ⊕ z·π₃) mod T``."""

from __future__ import annotations

from torch import Tensor
import torch

__all__ = ["HASH_PRIMES", "spatial_hash"]

#: π₁, π₂, π₃ (π₁ = 1 keeps neighbouring x in neighbouring rows, for cache coherence)
HASH_PRIMES = (1, 2654435761, 805459861)

# the primes as wrapping int32 values: int32 arithmetic has the same low 32 bits as int64
_PRIMES_INT32 = tuple((p + 2**31) % 2**32 - 2**31 for p in HASH_PRIMES)


def spatial_hash(x: Tensor, y: Tensor, z: Tensor, table_size: int) -> Tensor:
    """Hash integer vertex coordinates into ``[0, table_size)``.

    Args:
        x, y, z: integer tensors of broadcastable shapes ``[*]`` (int64, or int32 for the faster wrapping form).
        table_size: ``T`` rows. With int32 inputs ``T`` must be a power of two (the hash is reduced with
            ``& (T - 1)``, which equals int64 ``mod T`` on the same low bits).

    Returns:
        Row indices of the broadcast shape, dtype of the inputs.

    Raises:
        ValueError: int32 inputs with a ``table_size`` that is not a power of two, or a non-integer dtype.
    """
    if x.dtype == torch.int32:
        if table_size & (table_size - 1):
            raise ValueError(f"spatial_hash: int32 coordinates need a power-of-two table size, got {table_size}")
        p = _PRIMES_INT32
        return ((x * p[0]) ^ (y * p[1]) ^ (z * p[2])) & (table_size - 1)
    if x.dtype != torch.int64:
        raise ValueError(f"spatial_hash: integer coordinates expected (int32 or int64), got {x.dtype}")
    p = HASH_PRIMES
    return ((x * p[0]) ^ (y * p[1]) ^ (z * p[2])) % table_size
