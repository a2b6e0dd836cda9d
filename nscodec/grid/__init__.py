"""Multi-resolution grid encodings shared by the grid methods (SHACIRA's hash grid, VQ-AD's vertex grid).

:mod:`.hashing` holds the spatial hash both use (Instant-NGP, Müller et al. 2022, Eq. 4).
"""

from nscodec.grid.hashing import HASH_PRIMES, spatial_hash

__all__ = ["HASH_PRIMES", "spatial_hash"]
