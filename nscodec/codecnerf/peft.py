"""Parameter-efficient finetuning (CodecNeRF Sec. 3.6–3.7): rank-R tensor-factorized plane deltas (Eq. 10) and
LoRA (Hu et al. 2021) on the renderer's MLP layers.
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn import Parameter

from nscodec.coding.quantization import quantize


class PlaneDeltas(nn.Module):
    """Eq. 10: ``ΔF_k^s = Σ_r v_r^s ∘ M_{k,r}^s`` for every plane ``k`` and level ``s``.

    Parameters per level ``s``: ``vectors_s [R, C]`` (zero-initialised, shared by the three planes, so every delta
    is exactly 0 at step 0) and ``matrices_s [3·R, V_s, V_s]`` (channel ``k·R + r`` is ``M_{k,r}``; random
    normal init, std ``init_std``).

    With ``quantized=True`` (PEFT++ with entropy coding, Sec. 3.7) the matrices used are ``round(M)`` (integer
    symbols, straight-through gradient while training): what the ``.nsc`` entropy-codes. Otherwise they are used
    as they are (PEFT, stored as float32).

    Args:
        channels: ``C``. resolutions: ``V_s`` per level. rank: ``R`` (paper: 4).
    """

    def __init__(self, channels: int, resolutions: Sequence[int], rank: int = 4, init_std: float = 1.0, quantized: bool = False) -> None:
        super().__init__()
        self.rank, self.channels, self.quantized = int(rank), int(channels), bool(quantized)
        self.resolutions = tuple(int(r) for r in resolutions)
        self.vectors = nn.ParameterList([Parameter(torch.zeros(rank, channels)) for _ in self.resolutions])
        self.matrices = nn.ParameterList([Parameter(torch.randn(3 * rank, r, r) * init_std) for r in self.resolutions])

    def used_matrices(self, level: int) -> Tensor:
        """The matrices entering Eq. 10 at ``level``: ``[3R, V, V]`` (rounded when ``quantized``)."""
        m = self.matrices[level]
        if not self.quantized:
            return m
        return quantize(m, "ste") if self.training else torch.round(m)

    def delta(self, level: int) -> Tensor:
        """``ΔF`` at ``level``: ``[3, C, V, V]``."""
        m = self.used_matrices(level)
        v = self.vectors[level]
        return torch.einsum("rc,krhw->kchw", v, m.reshape(3, self.rank, *m.shape[1:]))

    def apply(self, base: Sequence[Tensor]) -> List[Tensor]:
        """``F + ΔF`` for every level (``base``: ``[3, C, V_s, V_s]`` per level)."""
        return [b + self.delta(i) for i, b in enumerate(base)]


class LoRALinear(nn.Module):
    """``y = x (W + (α/r) B A)^T + b`` with the pretrained ``W, b`` frozen, ``A [r, in]`` Kaiming-uniform and
    ``B [out, r]`` zero-initialised (so the layer starts exactly as the pretrained one). Hu et al. 2021."""

    def __init__(self, base: nn.Linear, rank: int = 4, alpha: Optional[float] = None) -> None:
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = int(rank)
        self.scale = float(alpha if alpha is not None else rank) / self.rank
        self.lora_a = Parameter(torch.empty(rank, base.in_features))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.lora_b = Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.base.weight + self.scale * (self.lora_b @ self.lora_a), self.base.bias)


def add_lora(module: nn.Module, rank: int = 4) -> List[LoRALinear]:
    """Replace every ``nn.Linear`` inside ``module`` (recursively) by a :class:`LoRALinear` around it; returns the
    new layers in module order."""
    added: List[LoRALinear] = []
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            layer = LoRALinear(child, rank)
            setattr(module, name, layer)
            added.append(layer)
        elif not isinstance(child, LoRALinear):
            added += add_lora(child, rank)
    return added


def lora_parameters(module: nn.Module) -> List[Parameter]:
    """The trainable LoRA factors (``lora_a``, ``lora_b``) inside ``module``."""
    return [p for n, p in module.named_parameters() if n.endswith("lora_a") or n.endswith("lora_b")]
