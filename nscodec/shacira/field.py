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
reproduces nerfstudio's "hash every level into ``T`` rows" exactly. Our vectorised evaluation of the 8 corners is
tested against nerfstudio's ``pytorch_fwd`` (``tests/test_shacira.py``). On CUDA with tiny-cuda-nn present, the
uncompressed baseline could use tcnn's HashGrid; the compressed path needs the table as a tensor, so it always
runs this torch code (tcnn's grid owns its parameters).
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import torch
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.encodings import HashEncoding, SHEncoding
from torch import Tensor, nn

from nscodec.coding.errors import NscError
from nscodec.grid.hashing import spatial_hash
from nscodec.shacira.latents import discretize


class _InterpolateRows(torch.autograd.Function):
    """``out[n, l] = Σ_k wt[n, l, k] · table[idx[n, l, k]]`` with a scatter-add backward for the table.

    ``table [R, F]``, ``idx [N, L, 8]`` int, ``wt [N, L, 8]`` → ``[N, L, F]``. The backward's ``index_add_`` is
    faster on CPU than autograd's embedding backward; no gradient flows to ``wt`` (positions are data).
    """

    @staticmethod
    def forward(ctx, table: Tensor, idx: Tensor, wt: Tensor) -> Tensor:  # type: ignore[override]
        n, l, k = idx.shape
        f = table.shape[1]
        rows = table.index_select(0, idx.reshape(-1)).reshape(n * l, k, f)
        ctx.save_for_backward(idx, wt)
        ctx.num_rows = table.shape[0]
        return torch.bmm(wt.reshape(n * l, 1, k), rows).reshape(n, l, f)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        idx, wt = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None
        g = (wt[..., None] * grad[:, :, None, :]).reshape(-1, grad.shape[-1])
        out = torch.zeros(ctx.num_rows, grad.shape[-1], dtype=grad.dtype, device=grad.device)
        out.index_add_(0, idx.reshape(-1), g)
        return out, None, None


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

    def corner_indices_and_weights(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        """Rows ``[N, L, 8]`` (int64) and trilinear weights ``[N, L, 8]`` of the 8 vertices around each point.

        Same vertices, hash and weights as nerfstudio's ``pytorch_fwd``; the hash is computed in wrapping int32
        arithmetic and reduced with ``& (T-1)``, which gives the same low bits as nerfstudio's int64 ``mod T``
        because ``T`` is a power of two.

        Args:
            x: ``[N, 3]`` positions in ``[0, 1]^3``.
        """
        scaled = x[:, None, :] * self.scalings.to(x)[None, :, None]  # [N, L, 3]
        lo = torch.floor(scaled)
        off = scaled - lo
        c = torch.stack([lo.to(torch.int32), torch.ceil(scaled).to(torch.int32)], dim=-1)  # [N, L, 3, 2]
        k = int(self.level_dense.sum())  # dense levels come first (resolutions grow)
        parts = []
        if k > 0:
            cd = c[:, :k]
            n = (self.level_res[:k] + 1).to(torch.int32)[None, :, None]
            dx, dy, dz = cd[:, :, 0], cd[:, :, 1] * n, cd[:, :, 2] * (n * n)
            parts.append(dx[..., :, None, None] + dy[..., None, :, None] + dz[..., None, None, :])
        if k < self.num_levels:
            ch = c[:, k:]
            hx, hy, hz = ch[:, :, 0], ch[:, :, 1], ch[:, :, 2]
            parts.append(spatial_hash(hx[..., :, None, None], hy[..., None, :, None], hz[..., None, None, :], self.hash_table_size))
        idx = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        idx = (idx + self.level_offsets.to(torch.int32)[None, :, None, None, None]).reshape(x.shape[0], self.num_levels, 8)
        idx = idx.to(torch.int64)  # index_select / index_add_ are much faster with int64 indices on CPU
        w = torch.stack([1.0 - off, off], dim=-1)  # [N, L, 3, 2]
        wt = (w[..., 0, :, None, None] * w[..., 1, None, :, None] * w[..., 2, None, None, :]).reshape(idx.shape)
        return idx, wt

    def encode(self, x: Tensor, table: Tensor, lod: Optional[int] = None) -> Tensor:
        """Concatenated level features ``[N, L·F]`` (Eqs. 2–3) for positions ``x [N, 3]`` in ``[0, 1]^3``.

        Args:
            table: ``[ΣT_l, F]`` (e.g. :meth:`get_table`).
            lod: render at level of detail ``lod`` (levels ``> lod`` contribute zeros, SHACIRA Sec. 4.5);
                None = all levels.
        """
        if x.shape[0] == 0:
            return x.new_zeros((0, self.num_levels * self.features_per_level))
        idx, wt = self.corner_indices_and_weights(x)
        out = _InterpolateRows.apply(table, idx, wt)  # [N, L, F]
        if lod is not None and lod < self.num_levels - 1:
            keep = (torch.arange(self.num_levels, device=x.device) <= lod).to(out.dtype)
            out = out * keep[None, :, None]
        return out.reshape(x.shape[0], -1)

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
