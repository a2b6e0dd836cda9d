"""The shared CodecNeRF network (encoder, compressor, triplane generator, renderer) and the codec-model file.

The codec model is shared by every scene, so it is never part of a scene's ``.nsc``: the ``.nsc`` names it by
content hash (SHA-256 of the file) and format version, and decoding with another codec model fails with
:class:`~nscodec.errors.NscFormatError`.

Codec-model file (``*.cnm``): ``torch.save`` of a dict holding only strings, numbers, lists, dicts and tensors, so
it loads with ``torch.load(weights_only=True)`` (no code runs on load)::

    {"format": "nscodec-codecnerf-model", "version": 1, "arch": {CodecArch fields}, "meta": {...},
     "state_dict": {name: tensor}}
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from nscodec.codecnerf.encoder import CodecEncoder, PlaneCompressor
from nscodec.codecnerf.triplane import TriplaneGenerator, TriplaneRenderer
from nscodec.errors import NscFormatError

FORMAT = "nscodec-codecnerf-model"
VERSION = 1
#: environment variable overriding the codec-model path recorded in a config / ``.nsc`` header.
CODEC_MODEL_ENV = "NSCODEC_CODECNERF_MODEL"


@dataclass
class CodecArch:
    """Architecture of :class:`CodecNeRFNet` (CPU-sized defaults; the paper uses C = 32, levels 64/128, K = 8192,
    C' = 32, 6-layer MLPs with 64 hidden units and a DINO ViT feature extractor — Sec. 4.2)."""

    enc_image_size: int = 64
    """Encoder input views are resized to ``s × s`` pixels."""
    enc_views: int = 16
    """Input views per scene (paper: 16)."""
    feat_channels: int = 16
    volume_res: int = 32
    """``V`` of the unprojected volume and of the pooled planes."""
    volume_channels: int = 16
    latent_dim: int = 8
    """``C'`` (codeword dimension); latents are ``[3, C', V/2, V/2]``."""
    codebook_size: int = 256
    """``K`` (≤ 65536; indices are stored as uint8 when ≤ 256, else uint16)."""
    up_channels: int = 32
    plane_channels: int = 16
    """``C`` of every triplane level."""
    plane_resolutions: Tuple[int, ...] = (64, 128)
    """``V_1, V_2`` of the multi-resolution triplanes."""
    generator_hidden: int = 32
    mlp_hidden: int = 64
    density_hidden: int = 32
    dir_freqs: int = 2
    density_bias: float = -1.0
    backbone: str = "cnn"
    """2D feature extractor: ``cnn`` (small CNN trained with the codec) or ``vit`` (frozen ViT from a local weights
    file, :mod:`nscodec.codecnerf.backbone`; the ``vit_*`` fields then describe it and its weights are stored in
    the codec-model file)."""
    vit_patch: int = 16
    vit_dim: int = 384
    vit_depth: int = 12
    vit_heads: int = 6
    vit_mlp_dim: int = 1536
    vit_grid: int = 14
    """Side of the ViT's trained positional-embedding token grid (224 px / patch 16 = 14)."""

    def to_json(self) -> Dict[str, Any]:
        """JSON-safe dict of the fields (tuples → lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "CodecArch":
        """Inverse of :meth:`to_json`. Raises NscFormatError on unknown fields."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise NscFormatError(f"codec model: unknown architecture fields {sorted(unknown)}")
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()}
        return cls(**kw)


class CodecNeRFNet(nn.Module):
    """Everything shared by all scenes (Fig. 1): ``feat_θ`` + ``agg_ϕ`` (:class:`CodecEncoder`), ``comp_χ``
    (:class:`PlaneCompressor`), ``triplane_ψ`` (:class:`TriplaneGenerator`) and ``MLP_ω`` (:class:`TriplaneRenderer`).
    """

    def __init__(self, arch: Optional[CodecArch] = None) -> None:
        super().__init__()
        self.arch = arch = arch or CodecArch()
        if arch.backbone not in ("cnn", "vit"):
            raise NscFormatError(f"codecnerf: unknown feature backbone {arch.backbone!r} (cnn or vit)")
        features = None
        if arch.backbone == "vit":
            from nscodec.codecnerf.backbone import ViTFeatures

            features = ViTFeatures(arch.feat_channels, arch.vit_patch, arch.vit_dim, arch.vit_depth, arch.vit_heads,
                                   arch.vit_mlp_dim, arch.vit_grid)
        self.encoder = CodecEncoder(arch.feat_channels, arch.volume_res, arch.volume_channels, features)
        self.compressor = PlaneCompressor(arch.volume_channels, arch.latent_dim, arch.codebook_size, arch.up_channels)
        self.generator = TriplaneGenerator(arch.up_channels, arch.plane_channels, arch.plane_resolutions, arch.generator_hidden)
        self.renderer = TriplaneRenderer(
            arch.plane_channels * len(arch.plane_resolutions), arch.mlp_hidden, arch.density_hidden, arch.dir_freqs, arch.density_bias
        )

    def encode(self, images: Tensor, c2w: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, aabb: Tensor,
               to_world=None) -> Tensor:
        """Sender side, one forward pass: views (see :meth:`CodecEncoder.forward`, also for ``to_world``) → VQ
        indices ``[3, V/2, V/2]``."""
        planes = self.encoder(images, c2w, fx, fy, cx, cy, aabb, to_world)
        return self.compressor.vq.nearest(self.compressor.encode(planes))

    def decode(self, indices: Tensor) -> List[Tensor]:
        """Receiver side: indices ``[3, V/2, V/2]`` → triplane levels ``[3, C, V_s, V_s]``."""
        return self.generator(self.compressor.decode(indices))

    def forward_train(self, images, c2w, fx, fy, cx, cy, aabb) -> Tuple[List[Tensor], Tensor, Tensor]:
        """Pretraining path (straight-through VQ): ``(levels, indices, vq_loss)``."""
        planes = self.encoder(images, c2w, fx, fy, cx, cy, aabb)
        up, idx, vq_loss = self.compressor(planes)
        return self.generator(up), idx, vq_loss


def file_sha256(path: Path | str) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_codec_model(net: CodecNeRFNet, path: Path | str, meta: Optional[Dict[str, Any]] = None) -> str:
    """Write the codec-model file (atomic rename); returns its SHA-256 (hex)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "arch": net.arch.to_json(), "meta": dict(meta or {}), "state_dict": state}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return file_sha256(path)


def resolve_codec_model_path(configured: Optional[Path | str]) -> Path:
    """The codec-model path to use: ``$NSCODEC_CODECNERF_MODEL`` when set, else ``configured``.

    Raises:
        NscFormatError: neither is given, or the file does not exist.
    """
    env = os.environ.get(CODEC_MODEL_ENV)
    p = Path(env) if env else (Path(configured) if configured not in (None, "") else None)
    if p is None:
        raise NscFormatError(
            f"codecnerf needs its shared codec model: set --pipeline.model.codec-model-path or ${CODEC_MODEL_ENV} "
            "(make one with `nscodec codecnerf-pretrain`)"
        )
    if not p.is_file():
        raise NscFormatError(f"codecnerf codec model not found: {p} (set ${CODEC_MODEL_ENV} to its location)")
    return p


def load_codec_model(path: Path | str, expected_sha256: Optional[str] = None) -> Tuple[CodecNeRFNet, Dict[str, Any]]:
    """Load a codec-model file (``weights_only``) and check it.

    Returns:
        ``(net, info)`` with ``info = {"sha256", "version", "path", "meta"}``.

    Raises:
        NscFormatError: not a codec-model file, unsupported version, or its SHA-256 differs from
            ``expected_sha256`` (decoding a ``.nsc`` made with another codec model).
    """
    path = Path(path)
    digest = file_sha256(path)
    if expected_sha256 and digest != expected_sha256:
        raise NscFormatError(
            f"codec model mismatch: this .nsc was encoded with codec model sha256 {expected_sha256[:16]}…, but {path} has "
            f"sha256 {digest[:16]}… — decode with the same codec model (set ${CODEC_MODEL_ENV})"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling problem is a format error here
        raise NscFormatError(f"{path} is not a codecnerf codec-model file ({type(err).__name__}: {err})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NscFormatError(f"{path} is not a codecnerf codec-model file (format tag missing)")
    if payload.get("version") != VERSION:
        raise NscFormatError(f"{path}: codec-model version {payload.get('version')!r} unsupported (this nscodec reads {VERSION})")
    net = CodecNeRFNet(CodecArch.from_json(payload["arch"]))
    try:
        net.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise NscFormatError(f"{path}: weights do not match its architecture ({err})") from None
    return net, {"sha256": digest, "version": VERSION, "path": str(path), "meta": payload.get("meta", {})}
