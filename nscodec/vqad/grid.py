"""Multi-resolution feature grid with vector-quantized vertices (VQ-AD, Takikawa et al. 2022, Sec. 4.3).

Each level ``l`` is a dense lattice of ``(N_l + 1)^3`` vertices over the scene box (``N_l = base * 2^l`` cells
per axis). What a vertex stores depends on the grid's ``mode``:

* ``"vq"`` (the method): training keeps softened index logits ``C_l [m_l, 2^b]`` and a codebook
  ``D_l [2^b, k]``; the forward pass reads ``D_l[argmax C_l]`` (Eq. 8), the backward pass is that of
  ``softmax(C_l) D_l`` (Eq. 9) — a straight-through estimator (:func:`straight_through_vq`). Only the b-bit
  indices and the codebook are stored.
* ``"float"``: the uncompressed feature grid ``Z_l [m_l, k]`` of the same configuration (NGLOD-style baseline;
  k-means VQ of it is the post-hoc baseline, :func:`nscodec.coding.posthoc.kmeans_quantize`).
* ``"hash"``: fixed (not learned) indices from a spatial hash into a codebook of ``2^hash_bits`` rows
  (Instant-NGP-like, the "random indices" baseline of paper Sec. 5.4 / Table 3); nothing per vertex is stored.

Dense storage instead of NGLOD's sparse octree: on CPU a dense lattice makes every lookup one flat gather
(no tree traversal); the octree's memory saving is not needed at the resolutions used here (finest 128^3,
2.1M vertices), and the *file* is still restricted to occupied space: only vertices of feature cells that touch
an occupied cell of the occupancy grid are stored (:func:`vertex_mask`), exactly the vertices rendering can
read. Gradients into the per-vertex tables are sparse (``embedding(sparse=True)``) so the optimizer step costs
what the batch touched, not the grid size.
"""

from __future__ import annotations

from typing import Dict, List, Literal, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nscodec.grid import dense_level_forward, dense_level_vertex_grads
from nscodec.grid.hashing import spatial_hash

GridMode = Literal["vq", "float", "hash"]


class _StraightThroughVQ(torch.autograd.Function):
    """Forward: ``D[argmax C]`` exactly. Backward: the gradient of ``softmax(C) @ D`` (paper Eqs. 8–9)."""

    @staticmethod
    def forward(ctx, logits: Tensor, codebook: Tensor) -> Tensor:  # noqa: D401
        probs = torch.softmax(logits, dim=-1)
        ctx.save_for_backward(probs, codebook)
        return codebook[logits.argmax(dim=-1)]

    @staticmethod
    def backward(ctx, grad_out: Tensor):  # noqa: D401
        probs, codebook = ctx.saved_tensors
        grad_codebook = probs.t() @ grad_out  # d/dD of sum(g * (P D))
        g_p = grad_out @ codebook.t()  # [N, K]
        grad_logits = probs * (g_p - (probs * g_p).sum(dim=-1, keepdim=True))  # softmax Jacobian
        return grad_logits, grad_codebook


class _InterpVQ(torch.autograd.Function):
    """Fused trilinear lookup of one VQ level with the straight-through estimator.

    Forward: ``out[s] = sum_c w[s,c] * D[idx[s,c]]`` with ``idx = argmax C`` (Eq. 8, exact).
    Backward: that of ``sum_c w[s,c] * softmax(C[v_c]) @ D`` (Eq. 9). The chain rule is applied per
    *unique* vertex (feature gradients are first summed over the samples reading a vertex), so the softmax and
    its Jacobian cost O(unique vertices × 2^b); the logits gradient is sparse, one coalesced row per vertex.
    ``touched(u)`` is told the rows that receive a gradient (the grid refreshes their indices after the step).
    """

    @staticmethod
    def forward(ctx, table: Tensor, codebook: Tensor, x: Tensor, res: int, indices: Tensor, touched) -> Tensor:  # noqa: D401
        ctx.save_for_backward(table, codebook, x)
        ctx.meta = (res, touched)
        return dense_level_forward(x, codebook, res, indices)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: D401
        table, codebook, x = ctx.saved_tensors
        res, touched = ctx.meta
        u, grads = dense_level_vertex_grads(g.contiguous(), x, res)  # dL/dz_v  [U, k]
        probs = torch.softmax(table[u], dim=-1)  # [U, K]
        grad_codebook = probs.t() @ grads
        g_p = grads @ codebook.t()
        grad_rows = probs * (g_p - (probs * g_p).sum(dim=-1, keepdim=True))
        touched(u)
        grad_table = torch.sparse_coo_tensor(u[None], grad_rows, table.shape, is_coalesced=True)
        return grad_table, grad_codebook, None, None, None, None


class _InterpFloat(torch.autograd.Function):
    """Fused trilinear lookup of a float level ``sum_c w[s,c] * Z[v_c]`` with a sparse, coalesced table
    gradient (one row per vertex read)."""

    @staticmethod
    def forward(ctx, table: Tensor, x: Tensor, res: int) -> Tensor:  # noqa: D401
        ctx.save_for_backward(x)
        ctx.meta = (res, table.shape)
        return dense_level_forward(x, table, res)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: D401
        (x,) = ctx.saved_tensors
        res, shape = ctx.meta
        u, grads = dense_level_vertex_grads(g.contiguous(), x, res)
        return torch.sparse_coo_tensor(u[None], grads, shape, is_coalesced=True), None, None


class _InterpCodebook(torch.autograd.Function):
    """Trilinear lookup of a level with fixed per-vertex rows ``idx`` into a learned codebook (``"hash"`` mode):
    ``sum_c w[s,c] * D[idx[v_c]]``; the codebook gradient sums each vertex's feature gradient into its row."""

    @staticmethod
    def forward(ctx, codebook: Tensor, x: Tensor, res: int, indices: Tensor) -> Tensor:  # noqa: D401
        ctx.save_for_backward(x, indices)
        ctx.meta = (res, codebook.shape)
        return dense_level_forward(x, codebook, res, indices)

    @staticmethod
    def backward(ctx, g: Tensor):  # noqa: D401
        x, indices = ctx.saved_tensors
        res, shape = ctx.meta
        u, grads = dense_level_vertex_grads(g.contiguous(), x, res)
        return torch.zeros(shape, dtype=g.dtype, device=g.device).index_add_(0, indices[u], grads), None, None, None


def straight_through_vq(logits: Tensor, codebook: Tensor) -> Tensor:
    """Straight-through vector quantization (VQ-AD, Sec. 4.3, Eq. 8 forward / Eq. 9 backward).

    Args:
        logits: ``[N, 2^b]`` softened index rows ``C[i]`` of the vertices being read.
        codebook: ``[2^b, k]`` codebook ``D``.

    Returns:
        ``[N, k]`` features; the values are exactly ``codebook[logits.argmax(-1)]`` (bitwise), the gradient
        w.r.t. ``logits`` and ``codebook`` is that of ``softmax(logits) @ codebook``.

    Raises:
        ValueError: ``logits.shape[-1] != codebook.shape[0]``.
    """
    if logits.shape[-1] != codebook.shape[0]:
        raise ValueError(f"logits have {logits.shape[-1]} columns but the codebook has {codebook.shape[0]} rows")
    return _StraightThroughVQ.apply(logits, codebook)


def lod_probabilities(num_levels: int) -> Tensor:
    """Sampling distribution over levels of detail (VQ-AD supplement 7.3): ``p_l ∝ 2^l``, each finer level
    twice as likely as the previous one. Returns ``[num_levels]`` float64 summing to 1.

    Raises:
        ValueError: ``num_levels < 1``.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    w = 2.0 ** torch.arange(num_levels, dtype=torch.float64)
    return w / w.sum()


def hash_indices(coords: Tensor, table_size: int, res: int) -> Tensor:
    """Fixed vertex → row map for ``mode="hash"``: linear index when the level has at most ``table_size``
    vertices, else Instant-NGP's spatial hash ``(x·1 ⊕ y·2654435761 ⊕ z·805459861) mod table_size``.

    Args:
        coords: ``[N, 3]`` integer vertex coordinates in ``[0, res]``.
        table_size: codebook rows ``T``.
        res: cells per axis (``res + 1`` vertices).

    Returns:
        ``[N]`` int64 rows in ``[0, T)``.
    """
    c = coords.long()
    if (res + 1) ** 3 <= table_size:
        return (c[:, 0] * (res + 1) + c[:, 1]) * (res + 1) + c[:, 2]
    return spatial_hash(c[:, 0], c[:, 1], c[:, 2], table_size)


class MultiLevelVQGrid(nn.Module):
    """Multi-resolution vertex grid, features of levels ``0..lod`` summed (a Laplacian pyramid, VQ-AD Sec. 4.3).

    Args:
        resolutions: cells per axis of each level, coarse to fine (``[L]``).
        feature_dim: ``k`` features per vertex.
        mode: ``"vq"``, ``"float"`` or ``"hash"`` (see the module docstring).
        bits: ``b`` index bits (``"vq"``: codebook of ``2^b`` rows per level).
        hash_bits: ``"hash"`` mode codebook rows ``2^hash_bits`` per level (fewer if the level is smaller).
        init_std: std of the normal init of features / codebooks (paper: 0.01).
        logit_init_std: std of the normal init of the index logits.

    Positions are normalised box coordinates in ``[0, 1]^3`` (clamped).
    """

    def __init__(
        self,
        resolutions: Sequence[int],
        feature_dim: int = 16,
        mode: GridMode = "vq",
        bits: int = 4,
        hash_bits: int = 12,
        init_std: float = 0.01,
        logit_init_std: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in ("vq", "float", "hash"):
            raise ValueError(f"unknown grid mode {mode!r}")
        if not 1 <= bits <= 8:
            raise ValueError(f"bits must be in 1..8, got {bits}")
        self.resolutions = [int(r) for r in resolutions]
        self.feature_dim = feature_dim
        self.mode = mode
        self.bits = bits
        self.hash_bits = hash_bits
        self.tables = nn.ParameterList()  # vq: logits [m, 2^b]; float: features [m, k]; hash: unused
        self.codebooks = nn.ParameterList()  # vq: [2^b, k]; hash: [T, k]
        for res in self.resolutions:
            m = (res + 1) ** 3
            if mode == "vq":
                self.tables.append(nn.Parameter(torch.randn(m, 1 << bits) * logit_init_std))
                self.codebooks.append(nn.Parameter(torch.randn(1 << bits, feature_dim) * init_std))
            elif mode == "float":
                self.tables.append(nn.Parameter(torch.randn(m, feature_dim) * init_std))
            else:
                self.codebooks.append(nn.Parameter(torch.randn(min(1 << hash_bits, m), feature_dim) * init_std))
        self._index_cache: List[Optional[tuple]] = [None] * len(self.resolutions)
        self._pending: Dict[int, Tuple[int, Tensor]] = {}

    @property
    def num_levels(self) -> int:
        return len(self.resolutions)

    def num_vertices(self, level: int) -> int:
        """``(N_l + 1)^3``."""
        return (self.resolutions[level] + 1) ** 3

    # ------------------------------------------------------------------------------------------ indices
    @torch.no_grad()
    def hard_indices(self, level: int) -> Tensor:
        """``[m_l]`` int64 b-bit indices ``argmax C_l`` (``"vq"``) or the hash rows (``"hash"``), cached
        until the logits change. Raises ValueError in ``"float"`` mode."""
        if self.mode == "float":
            raise ValueError("a float grid has no indices")
        if self.mode == "hash":
            res = self.resolutions[level]
            key = ("hash", res)
            if self._index_cache[level] is None or self._index_cache[level][0] != key:
                lin = torch.arange(res + 1, device=self.codebooks[level].device)
                ijk = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
                self._index_cache[level] = (key, hash_indices(ijk, self.codebooks[level].shape[0], res))
            return self._index_cache[level][1]
        t = self.tables[level]
        key = (t.data_ptr(), t._version)
        if self._index_cache[level] is None or self._index_cache[level][0] != key:
            self._index_cache[level] = (key, t.argmax(dim=-1))
        return self._index_cache[level][1]

    def _touched(self, level: int, rows: Tensor) -> None:
        """Backward hook of a VQ level: ``rows`` received a logits gradient at the current table version."""
        t = self.tables[level]
        cache = self._index_cache[level]
        if cache is not None and cache[0] == (t.data_ptr(), t._version):
            self._pending[level] = (t._version, rows)

    @torch.no_grad()
    def refresh_touched_indices(self) -> None:
        """After an optimizer step that changed only the logits rows with a gradient (SparseAdam, the preset's
        optimizer: a sparse gradient updates exactly its rows), recompute ``argmax`` for those rows only instead of
        the whole level (``[m_l, 2^b]``, 2.1M rows at 128³, every step). A level whose table changed otherwise, or
        whose cache was dropped, is recomputed in full at its next read as before."""
        for level, (version, rows) in self._pending.items():
            t = self.tables[level]
            cache = self._index_cache[level]
            if cache is None or cache[0] != (t.data_ptr(), version) or t._version == version:
                continue
            idx = cache[1]
            idx[rows] = t[rows].argmax(dim=-1)
            self._index_cache[level] = ((t.data_ptr(), t._version), idx)
        self._pending.clear()

    @torch.no_grad()
    def set_indices(self, level: int, indices: Tensor, codebook: Tensor) -> None:
        """Load hard ``indices [m_l]`` and ``codebook [2^b, k]`` into a ``"vq"`` level (logits become one-hot,
        so ``argmax`` returns ``indices``). Raises ValueError on shape/range mismatch or another mode."""
        if self.mode != "vq":
            raise ValueError(f"set_indices needs a vq grid, this one is {self.mode!r}")
        t = self.tables[level]
        if indices.shape != (t.shape[0],) or int(indices.min()) < 0 or int(indices.max()) >= t.shape[1]:
            raise ValueError(f"level {level}: indices must be [{t.shape[0]}] in [0, {t.shape[1]})")
        if codebook.shape != self.codebooks[level].shape:
            raise ValueError(f"level {level}: codebook shape {tuple(codebook.shape)} != {tuple(self.codebooks[level].shape)}")
        t.zero_()
        t.scatter_(1, indices.long().view(-1, 1), 1.0)
        self.codebooks[level].copy_(codebook)
        self._index_cache[level] = None

    # ------------------------------------------------------------------------------------------- lookup
    def level_features(self, x: Tensor, level: int) -> Tensor:
        """Trilinearly interpolated features of one level (paper Eq. 6 ``interp``).

        Args:
            x: ``[S, 3]`` positions in ``[0, 1]^3``.
            level: level index.

        Returns:
            ``[S, k]``. With gradients enabled, ``"vq"`` levels use :class:`_InterpVQ` (straight-through),
            ``"float"`` levels :class:`_InterpFloat`; both give sparse gradients to the per-vertex table. The lookup
            is the shared grid core (:func:`nscodec.grid.dense_level_forward`: the C++ kernel on CPU).
        """
        res = self.resolutions[level]
        x = x.contiguous()
        if self.mode == "float":
            table = self.tables[level]
            if torch.is_grad_enabled() and table.requires_grad:
                return _InterpFloat.apply(table, x, res)
            return dense_level_forward(x, table, res)
        idx = self.hard_indices(level)
        cb = self.codebooks[level]
        if self.mode == "vq" and torch.is_grad_enabled() and self.tables[level].requires_grad:
            return _InterpVQ.apply(self.tables[level], cb, x, res, idx, lambda u, lv=level: self._touched(lv, u))
        if self.mode == "hash" and torch.is_grad_enabled() and cb.requires_grad:
            return _InterpCodebook.apply(cb, x, res, idx)
        return dense_level_forward(x, cb, res, idx)

    def forward(self, x: Tensor, lod: int) -> Tensor:
        """Summed features of levels ``0..lod`` at ``x [S, 3]`` (``[0, 1]^3``) → ``[S, k]``.

        Raises:
            ValueError: ``lod`` outside ``[0, L)``.
        """
        if not 0 <= lod < self.num_levels:
            raise ValueError(f"lod {lod} outside [0, {self.num_levels})")
        out = self.level_features(x, 0)
        for level in range(1, lod + 1):
            out = out + self.level_features(x, level)
        return out

    def all_lods(self, x: Tensor) -> List[Tensor]:
        """Cumulative features ``[S, k]`` for every LOD ``0..L-1`` (one lookup per level)."""
        outs, acc = [], None
        for level in range(self.num_levels):
            f = self.level_features(x, level)
            acc = f if acc is None else acc + f
            outs.append(acc)
        return outs


@torch.no_grad()
def vertex_mask(occupied: Tensor, res: int, dilation: int = 1) -> Tensor:
    """Vertices of a ``res``-cell level that rendering can read, given a boolean occupancy grid.

    A feature cell is live when it overlaps an occupied occupancy cell (both grids span the same box),
    dilated by ``dilation`` cells (guards against float rounding at cell borders); a vertex is needed when any
    of its 8 adjacent cells is live. Samples are only taken in occupied cells, so every vertex outside the
    mask is never read.

    Args:
        occupied: ``[G, G, G]`` bool occupancy (x-major).
        res: cells per axis ``N`` of the level.

    Returns:
        ``[(N+1)^3]`` bool (x-major vertex order, as :class:`MultiLevelVQGrid`).
    """
    occ = occupied.float()[None, None]
    g = occupied.shape[0]
    if res <= g:
        cells = F.adaptive_max_pool3d(occ, res)
    else:
        cells = F.interpolate(occ, size=(res,) * 3, mode="nearest")
    if dilation > 0:
        cells = F.max_pool3d(cells, 2 * dilation + 1, stride=1, padding=dilation)
    cells = F.pad(cells, (1, 1, 1, 1, 1, 1))
    verts = F.max_pool3d(cells, 2, stride=1)
    return (verts[0, 0] > 0).reshape(-1)
