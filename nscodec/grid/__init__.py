"""The grid core shared by the grid methods: multi-resolution hash levels (SHACIRA, Instant-NGP) and dense vertex
levels (VQ-AD), with trilinear interpolation and its table gradient; and TensoRF's vector-matrix factors
(:func:`vm_encode`, the TensoRF base of ectensorf).

Layout as gsplat's: :mod:`._torch_impl` is the plain-torch reference, ``nscodec/csrc/grid_encode.cpp`` and ``vm_encode.cpp`` the
fused CPU kernels, :mod:`._wrapper` the public functions that dispatch between them (``NSCODEC_KERNELS``, :mod:`nscodec._backend`);
``tests/test_kernel_twins.py`` compares the two. :mod:`.hashing` holds the spatial hash (Instant-NGP, Eq. 4).
"""

from nscodec.grid._torch_impl import HashLevels
from nscodec.grid._wrapper import (
    dense_level_forward,
    dense_level_vertex_grads,
    hash_encode,
    implementation,
    vm_encode,
)
from nscodec.grid.hashing import HASH_PRIMES, spatial_hash

__all__ = [
    "HASH_PRIMES", "HashLevels", "dense_level_forward", "dense_level_vertex_grads", "hash_encode",
    "implementation", "spatial_hash", "vm_encode",
]
