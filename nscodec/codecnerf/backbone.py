"""Optional frozen ViT feature backbone for the CodecNeRF encoder, loaded from a local weights file.

CodecNeRF extracts per-view 2D features with a pretrained DINO ViT (Kang et al., AAAI 2025, Sec. 3.2 and
Sec. 4.2; DINO: Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021). nscodec's
default is a small CNN trained with the codec (:class:`nscodec.codecnerf.encoder.FeatureCNN`); this module is the
opt-in alternative. The transformer is torchvision's :class:`~torchvision.models.VisionTransformer` — only the
weights come from the user's file; nothing is downloaded, and no torchvision ``weights=`` API is used.

Two state-dict layouts are read:

* torchvision's own ViT layout (``class_token``, ``conv_proj.*``, ``encoder.pos_embedding``,
  ``encoder.layers.encoder_layer_{i}.*``, ``encoder.ln.*``; a ``heads.*`` classifier is ignored);
* the official DINO layout (``cls_token``, ``pos_embed``, ``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,
  attn.proj,norm2,mlp.fc1,mlp.fc2}.*``, ``norm.*``), also inside a ``teacher`` / ``student`` / ``state_dict`` /
  ``model`` wrapper and with ``module.`` / ``backbone.`` prefixes (DINO training checkpoints).

The ViT stays frozen (``requires_grad`` off, always in eval mode); a 1×1 convolution trained with the codec
projects its patch tokens to the encoder's feature channels. Inside a codec-model file the ViT weights are stored
with the rest of the codec, so decoding never needs the original weights file.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nscodec.errors import NscError

#: ImageNet normalisation that DINO / torchvision ViTs were trained with (RGB, inputs in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: heads of the common ViT widths (DINO ViT-S/16: 384 → 6, ViT-B/16: 768 → 12); otherwise width // 64.
_KNOWN_HEADS = {192: 3, 384: 6, 768: 12, 1024: 16}

_DINO_BLOCK = {
    "norm1.weight": "ln_1.weight", "norm1.bias": "ln_1.bias",
    "attn.qkv.weight": "self_attention.in_proj_weight", "attn.qkv.bias": "self_attention.in_proj_bias",
    "attn.proj.weight": "self_attention.out_proj.weight", "attn.proj.bias": "self_attention.out_proj.bias",
    "norm2.weight": "ln_2.weight", "norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.0.weight", "mlp.fc1.bias": "mlp.0.bias",
    "mlp.fc2.weight": "mlp.3.weight", "mlp.fc2.bias": "mlp.3.bias",
}
_DINO_TOP = {
    "cls_token": "class_token", "pos_embed": "encoder.pos_embedding",
    "patch_embed.proj.weight": "conv_proj.weight", "patch_embed.proj.bias": "conv_proj.bias",
    "norm.weight": "encoder.ln.weight", "norm.bias": "encoder.ln.bias",
}


def _unwrap(obj: Any) -> Dict[str, Tensor]:
    """The tensor dict inside a (possibly wrapped) checkpoint, with ``module.`` / ``backbone.`` prefixes removed."""
    for key in ("teacher", "student", "state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise TypeError(f"expected a dict of tensors, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not torch.is_tensor(v):
            continue
        for prefix in ("module.", "backbone."):
            if k.startswith(prefix):
                k = k[len(prefix):]
        out[k] = v
    return out


def to_torchvision_layout(state: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Re-key a DINO-layout ViT state dict to torchvision's module names (a torchvision-layout dict is returned
    with its ``heads.*`` classifier dropped). Unknown keys (e.g. DINO's projection ``head.*``) are dropped.

    Raises:
        KeyError: neither layout is recognised (no ``cls_token`` nor ``class_token``).
    """
    if "class_token" in state:
        return {k: v for k, v in state.items() if not k.startswith("heads.")}
    if "cls_token" not in state:
        raise KeyError("neither a DINO ('cls_token', 'blocks.*') nor a torchvision ('class_token', 'encoder.*') ViT layout")
    out = {}
    for k, v in state.items():
        if k in _DINO_TOP:
            out[_DINO_TOP[k]] = v
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", k)
        if m and m.group(2) in _DINO_BLOCK:
            out[f"encoder.layers.encoder_layer_{m.group(1)}.{_DINO_BLOCK[m.group(2)]}"] = v
    return out


def vit_arch(state: Dict[str, Tensor], heads: Optional[int] = None) -> Dict[str, int]:
    """ViT hyper-parameters read off a torchvision-layout state dict: ``{patch, dim, depth, heads, mlp_dim, grid}``
    (``grid`` = side of the positional-embedding token grid, e.g. 14 for 224-pixel training at patch 16).

    Raises:
        KeyError / ValueError: a required tensor is missing or has an impossible shape.
    """
    conv = state["conv_proj.weight"]  # [D, 3, p, p]
    pos = state["encoder.pos_embedding"]  # [1, 1 + g², D]
    dim, patch = int(conv.shape[0]), int(conv.shape[-1])
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.layers.encoder_layer_")})
    if depth == 0:
        raise KeyError("no transformer blocks")
    mlp_dim = int(state["encoder.layers.encoder_layer_0.mlp.0.weight"].shape[0])
    grid = math.isqrt(int(pos.shape[1]) - 1)
    if conv.ndim != 4 or conv.shape[1] != 3 or pos.ndim != 3 or pos.shape[-1] != dim or grid * grid != pos.shape[1] - 1:
        raise ValueError(f"inconsistent shapes: patch conv {tuple(conv.shape)}, positional embedding {tuple(pos.shape)}")
    heads = int(heads or _KNOWN_HEADS.get(dim, max(1, dim // 64)))
    if dim % heads:
        raise ValueError(f"width {dim} is not divisible by {heads} heads")
    return {"patch": patch, "dim": dim, "depth": depth, "heads": heads, "mlp_dim": mlp_dim, "grid": grid}


def read_vit_weights(path: Path | str, heads: Optional[int] = None) -> Tuple[Dict[str, Tensor], Dict[str, int]]:
    """Load a local ViT weights file (``torch.load(weights_only=True)``, no code runs) in torchvision layout.

    Args:
        path: ``.pth`` / ``.pt`` file (DINO or torchvision layout, see the module docstring).
        heads: attention heads, if the width does not imply them (see :data:`_KNOWN_HEADS`).

    Returns:
        ``(state_dict, arch)`` — torchvision-layout tensors and :func:`vit_arch`'s hyper-parameters.

    Raises:
        NscError: the file is missing or unreadable, or holds no usable ViT (the message names the file and why).
    """
    path = Path(path)
    if not path.is_file():
        raise NscError(f"ViT backbone weights {path}: file not found (the backbone is only read from a local file)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem means "not a weights file"
        raise NscError(f"ViT backbone weights {path}: not a readable torch weights file ({type(err).__name__})") from None
    try:
        state = to_torchvision_layout(_unwrap(raw))
        return state, vit_arch(state, heads)
    except (KeyError, ValueError, TypeError, IndexError) as err:
        raise NscError(f"ViT backbone weights {path}: not a usable ViT state dict ({err})") from None


class ViTFeatures(nn.Module):
    """``feat_θ`` with a frozen ViT: ``[N, 3, s, s]`` images in [0, 1] → ``[N, C_f, s/p, s/p]`` features.

    The patch tokens (class token dropped; positional embeddings bicubically resized to the ``s/p`` token grid
    when ``s`` differs from the training size ``grid · p``) go through a trained 1×1 convolution to ``C_f - 3``
    channels; the last 3 channels are the colours average-pooled to the token grid, as in
    :class:`~nscodec.codecnerf.encoder.FeatureCNN`.

    Args:
        out_channels: ``C_f`` (≥ 4). patch, dim, depth, heads, mlp_dim, grid: the ViT (see :func:`vit_arch`).

    Raises:
        ValueError: in :meth:`forward`, when the image side is not a multiple of the patch size.
    """

    def __init__(self, out_channels: int, patch: int, dim: int, depth: int, heads: int, mlp_dim: int, grid: int) -> None:
        super().__init__()
        from torchvision.models.vision_transformer import VisionTransformer

        self.vit = VisionTransformer(image_size=grid * patch, patch_size=patch, num_layers=depth, num_heads=heads,
                                     hidden_dim=dim, mlp_dim=mlp_dim)
        self.vit.heads = nn.Identity()  # the classifier is not part of a feature backbone
        self.vit.requires_grad_(False)
        self.patch, self.grid = patch, grid
        self.proj = nn.Conv2d(dim, out_channels - 3, 1)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)

    def load_vit(self, state: Dict[str, Tensor], source: str = "state dict") -> None:
        """Load torchvision-layout ViT weights (from :func:`read_vit_weights`).

        Raises:
            NscError: missing / unexpected keys or shape mismatches, naming ``source``.
        """
        try:
            self.vit.load_state_dict(state, strict=True)
        except RuntimeError as err:
            msg = " ".join(str(err).split())
            raise NscError(f"ViT backbone weights {source}: do not fit the ViT they describe ({msg[:400]})") from None

    def train(self, mode: bool = True) -> "ViTFeatures":
        super().train(mode)
        self.vit.eval()  # frozen: dropout off, whatever the codec's mode
        return self

    def pos_embedding(self, h: int, w: int) -> Tensor:
        """Positional embeddings ``[1, 1 + h·w, D]`` for an ``h × w`` token grid (bicubic resize of the trained grid)."""
        pos = self.vit.encoder.pos_embedding
        if h == self.grid and w == self.grid:
            return pos
        cls, grid = pos[:, :1], pos[:, 1:]
        d = grid.shape[-1]
        grid = grid.reshape(1, self.grid, self.grid, d).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls, grid.permute(0, 2, 3, 1).reshape(1, h * w, d)], dim=1)

    def tokens(self, images: Tensor) -> Tensor:
        """Patch-token features ``[N, D, s/p, s/p]`` of the frozen ViT (last layer norm applied, no gradient)."""
        if images.shape[-1] % self.patch or images.shape[-2] % self.patch:
            raise ValueError(f"ViT backbone: image size {tuple(images.shape[-2:])} is not a multiple of the patch size {self.patch}")
        vit = self.vit
        with torch.no_grad():
            x = vit.conv_proj((images - self.mean) / self.std)  # [N, D, h, w]
            n, d, h, w = x.shape
            x = torch.cat([vit.class_token.expand(n, -1, -1), x.flatten(2).transpose(1, 2)], dim=1)
            x = vit.encoder.ln(vit.encoder.layers(vit.encoder.dropout(x + self.pos_embedding(h, w))))
            return x[:, 1:].transpose(1, 2).reshape(n, d, h, w)

    def forward(self, images: Tensor) -> Tensor:
        tok = self.tokens(images)
        return torch.cat([self.proj(tok), F.adaptive_avg_pool2d(images, tok.shape[-2:])], dim=1)
