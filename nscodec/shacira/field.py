"""SHACIRA radiance field: an Instant-NGP multi-resolution hash grid whose tables are decoded from integer latents.

Girish, Shrivastava, Gupta 2023, "SHACIRA" (ICCV), Sec. 3.1–3.2, Eqs. 1–3 and 6–8: level ``l`` has a table
``Z_l ∈ R^{T_l×F}``, ``T_l = min((R_l+1)^3, T)``; a point's feature is the trilinear interpolation of the 8
surrounding table rows (Eq. 2), levels are concatenated and fed to a tiny MLP (Eq. 3). With compression on,
``Z = d_θ(Q)`` where ``Q ∈ Z^{T_l×D}`` are integer latents and ``d_θ`` is ONE linear map ``R^D → R^F`` shared by
all levels (Eq. 7); with compression off the tables are plain fp32 parameters — the uncompressed Instant-NGP
baseline of the same configuration.

Hashing and interpolation are nerfstudio's :class:`~nerfstudio.field_components.encodings.HashEncoding` torch
path (we subclass it: same primes, same corner weights, same ``[0, 1]^3`` input convention), with two changes:
the table is an argument (so it can be ``d_θ(Q)``), and coarse levels whose ``(R_l+1)^3`` vertices fit in ``T``
are indexed densely (no collisions, ``T_l`` rows only) as in Instant-NGP — ``dense_coarse_levels=False``
reproduces nerfstudio's "hash every level into ``T`` rows" exactly. The lookup is the shared grid core
(:func:`nscodec.grid.hash_encode`: a fused C++ kernel on CPU, its torch twin elsewhere), tested against
nerfstudio's ``pytorch_fwd`` (``tests/test_shacira.py``) and kernel against twin (``tests/test_kernel_twins.py``).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding, SHEncoding
from torch import Tensor, nn

from nscodec.errors import NscError
from nscodec.grid import HashLevels, hash_encode
from nscodec.grid.hashing import spatial_hash
from nscodec.shacira.latents import discretize


class ShaciraHashEncoding(HashEncoding):
    """Multi-resolution hash encoding with an external table (decoded latents or fp32 parameters).

    Args:
        num_levels: ``L``. min_res, max_res: resolutions ``R_0``, ``R_{L-1}`` (geometric growth, nerfstudio's
            ``scalings = floor(min_res · b^l)``).
        log2_hashmap_size: ``log2 T`` (max rows per level).
        features_per_level: ``F``.
        latent_dim: ``D`` (latent values per table row) when ``compress``.
        compress: True → parameters are latents ``Q̂ [ΣT_l, D]`` + decoder ``Linear(D, F)``; False → an fp32
            table ``[ΣT_l, F]`` (the uncompressed baseline).
        dense_coarse_levels: index levels with ``(R_l+1)^3 ≤ T`` densely (``T_l = (R_l+1)^3``).
        latent_init_scale: ``Q̂`` starts ``U(-s, s)``; table init ``U(-1e-4, 1e-4)`` (Instant-NGP) otherwise.
        decoder_init_scale: std of the decoder weights ``θ`` (feature units per latent unit).

    Raises:
        NscError: non-positive sizes.
    """

    def __init__(
        self,
        num_levels: int = 12,
        min_res: int = 16,
        max_res: int = 256,
        log2_hashmap_size: int = 15,
        features_per_level: int = 2,
        latent_dim: int = 2,
        compress: bool = True,
        dense_coarse_levels: bool = True,
        latent_init_scale: float = 0.5,
        decoder_init_scale: float = 0.05,
    ) -> None:
        if min(num_levels, min_res, max_res, log2_hashmap_size, features_per_level, latent_dim) < 1:
            raise NscError("ShaciraHashEncoding: every size must be a positive int")
        super().__init__(
            num_levels=num_levels, min_res=min_res, max_res=max_res, log2_hashmap_size=log2_hashmap_size,
            features_per_level=features_per_level, implementation="torch",
        )
        del self.hash_table  # nerfstudio's [L*T, F] table: replaced by table() below
        self.hash_table = torch.empty(0)
        self.compress = compress
        self.latent_dim = latent_dim
        T = self.hash_table_size
        res = self.scalings.to(torch.int64)
        verts = (res + 1) ** 3
        dense = (verts <= T) if dense_coarse_levels else torch.zeros(num_levels, dtype=torch.bool)
        sizes = torch.where(dense, verts, torch.full_like(verts, T))
        self.level_sizes: List[int] = [int(s) for s in sizes]
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(sizes, 0)[:-1]])
        self.register_buffer("level_dense", dense, persistent=False)
        self.register_buffer("level_offsets", offsets, persistent=False)
        self.register_buffer("level_res", res, persistent=False)
        self.hash_offset = offsets  # used by hash_fn (nerfstudio's reference path)
        self._levels: Optional[HashLevels] = None
        rows = int(sizes.sum())
        if compress:
            self.latents = nn.Parameter(torch.empty(rows, latent_dim).uniform_(-latent_init_scale, latent_init_scale))
            self.decoder = nn.Linear(latent_dim, features_per_level)
            with torch.no_grad():
                self.decoder.weight.normal_(0.0, decoder_init_scale)
                self.decoder.bias.zero_()
        else:
            self.table = nn.Parameter(torch.empty(rows, features_per_level).uniform_(-1e-4, 1e-4))

    # ------------------------------------------------------------------------------------------ tables
    @property
    def num_rows(self) -> int:
        """``ΣT_l``: rows of the concatenated table."""
        return int(sum(self.level_sizes))

    def level_slices(self) -> List[slice]:
        """Row range of each level in the concatenated table, coarse to fine."""
        offs = [int(o) for o in self.level_offsets]
        return [slice(o, o + n) for o, n in zip(offs, self.level_sizes)]

    def decode(self, q: Tensor) -> Tensor:
        """``Z = d_θ(Q)`` (Eq. 7): latents ``[N, D]`` → table rows ``[N, F]``."""
        return self.decoder(q)

    def get_table(self, mode: str = "round", tau: float = 1.0) -> Tensor:
        """The concatenated table ``[ΣT_l, F]``: ``d_θ(discretize(Q̂))`` (``mode`` as
        :func:`~nscodec.shacira.latents.discretize`) or the fp32 parameters when uncompressed."""
        if not self.compress:
            return self.table
        return self.decode(discretize(self.latents, mode, tau))

    # ------------------------------------------------------------------------------------------ indexing
    def hash_fn(self, in_tensor: Tensor) -> Tensor:
        """Row index ``[*bs, L]`` of integer grid vertices ``[*bs, L, 3]`` (nerfstudio's signature).

        Hashed levels: nerfstudio's ``(x·1 ⊕ y·2654435761 ⊕ z·805459861) mod T``; dense levels:
        ``x + y(R+1) + z(R+1)^2``. Plus the level's row offset."""
        v = in_tensor.to(torch.int64)
        h = spatial_hash(v[..., 0], v[..., 1], v[..., 2], self.hash_table_size)
        n = (self.level_res + 1).to(v.device)
        d = v[..., 0] + v[..., 1] * n + v[..., 2] * n * n
        return torch.where(self.level_dense.to(v.device), d, h) + self.level_offsets.to(v.device)

    def grid_levels(self) -> HashLevels:
        """The levels as the grid core takes them (built once, moved with the module's buffers)."""
        dev = self.level_res.device
        if self._levels is None or self._levels.scale.device != dev:
            verts = torch.where(self.level_dense, self.level_res + 1, torch.zeros_like(self.level_res)).to(torch.int32)
            self._levels = HashLevels(self.scalings.to(dev, torch.float32).contiguous(), self.level_offsets.clone(),
                                      verts, self.hash_table_size)
        return self._levels

    def encode(self, x: Tensor, table: Tensor, lod: Optional[int] = None) -> Tensor:
        """Concatenated level features ``[N, L·F]`` (Eqs. 2–3) for positions ``x [N, 3]`` in ``[0, 1]^3``.

        Args:
            table: ``[ΣT_l, F]`` (e.g. :meth:`get_table`).
            lod: render at level of detail ``lod`` (levels ``> lod`` contribute zeros, SHACIRA Sec. 4.5);
                None = all levels.
        """
        if x.shape[0] == 0:
            return x.new_zeros((0, self.num_levels * self.features_per_level))
        active = None if lod is None else lod + 1
        return hash_encode(x, table, self.grid_levels(), active).reshape(x.shape[0], -1)

    def reference_forward(self, x: Tensor, table: Tensor) -> Tensor:
        """nerfstudio's own ``HashEncoding.pytorch_fwd`` on ``table`` (for tests; slow). ``x [N, 3] → [N, L·F]``."""
        self.hash_table = table.view(table.shape)  # a plain tensor attribute (never a registered Parameter)
        try:
            return super().pytorch_fwd(x)
        finally:
            self.hash_table = torch.empty(0)

    def forward(self, in_tensor: Tensor) -> Tensor:  # nerfstudio Encoding interface
        return self.encode(in_tensor.reshape(-1, 3), self.get_table("round")).reshape(*in_tensor.shape[:-1], -1)


class ShaciraField(nn.Module):
    """Instant-NGP radiance field on :class:`ShaciraHashEncoding` (flat sample lists, world coordinates).

    Density: ``σ = trunc_exp(MLP_base(f(x))[0])`` (1 / world unit); colour: ``sigmoid(MLP_head(geo, SH_4(d)))``.

    Args:
        aabb: ``[2, 3]`` scene box; positions are mapped to ``[0, 1]^3`` inside it (clamped).
        encoding: the hash encoding.
        hidden_dim, geo_feat_dim, hidden_dim_color, num_layers_color: MLP sizes (paper Sec. 4.1: 2 hidden layers).
    """

    def __init__(
        self,
        aabb: Tensor,
        encoding: ShaciraHashEncoding,
        hidden_dim: int = 64,
        geo_feat_dim: int = 15,
        hidden_dim_color: int = 64,
        num_layers_color: int = 2,
    ) -> None:
        super().__init__()
        self.register_buffer("aabb", aabb.detach().clone().float())
        self.encoding = encoding
        self.geo_feat_dim = geo_feat_dim
        self.mlp_base = nn.Sequential(
            nn.Linear(encoding.get_out_dim(), hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, 1 + geo_feat_dim)
        )
        self.direction_encoding = SHEncoding(levels=4, implementation="torch")
        layers: List[nn.Module] = []
        width = geo_feat_dim + self.direction_encoding.get_out_dim()
        for _ in range(num_layers_color):
            layers += [nn.Linear(width, hidden_dim_color), nn.ReLU()]
            width = hidden_dim_color
        layers += [nn.Linear(width, 3), nn.Sigmoid()]
        self.mlp_head = nn.Sequential(*layers)
        self.lod: Optional[int] = None
        """Render level of detail (None = all levels); set by the model / viewer."""

    def normalize(self, positions: Tensor) -> Tensor:
        """World ``[S, 3]`` → ``[0, 1]^3`` box coordinates (clamped)."""
        lo, hi = self.aabb[0], self.aabb[1]
        return ((positions - lo) / (hi - lo)).clamp(0.0, 1.0)

    def density_and_geo(self, positions: Tensor, table: Tensor) -> Tuple[Tensor, Tensor]:
        """``σ [S]`` (1 / world unit) and geometry features ``[S, geo_feat_dim]`` at world ``positions [S, 3]``."""
        h = self.mlp_base(self.encoding.encode(self.normalize(positions), table, self.lod))
        return trunc_exp(h[:, 0]), h[:, 1:]

    def density_at(self, positions: Tensor, table: Optional[Tensor] = None) -> Tensor:
        """``σ [S]`` at world positions ``[S, 3]`` with the evaluation table (rounded latents) unless given."""
        if table is None:
            table = self.encoding.get_table("round")
        return self.density_and_geo(positions, table)[0]

    def rgb_from_geo(self, geo: Tensor, directions: Tensor) -> Tensor:
        """Colour ``[S, 3]`` in [0, 1] from geometry features ``[S, G]`` and unit ``directions [S, 3]``."""
        if geo.shape[0] == 0:
            return geo.new_zeros((0, 3))
        return self.mlp_head(torch.cat([geo, self.direction_encoding(directions)], dim=-1))


def fp32_table_bytes(encoding: ShaciraHashEncoding) -> int:
    """Bytes of the uncompressed fp32 table of ``encoding``'s configuration (``ΣT_l · F · 4``)."""
    return int(np.int64(encoding.num_rows) * encoding.features_per_level * 4)
