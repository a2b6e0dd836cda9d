"""CodecNeRF's optional frozen ViT backbone: DINO / torchvision weight layouts, positional-embedding resizing,
clear errors on bad weights files, frozen weights, and a tiny pretrain → codec-model file → load round trip."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from torchvision.models.vision_transformer import VisionTransformer

from nscodec.codecnerf.backbone import ViTFeatures, read_vit_weights
from nscodec.errors import NscError

# tiny ViT: patch 8, width 32, 2 blocks, 2 heads, trained token grid 2 × 2 (16 px)
PATCH, DIM, DEPTH, HEADS, MLP, GRID = 8, 32, 2, 2, 64, 2


def _reference_vit(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    vit = VisionTransformer(image_size=GRID * PATCH, patch_size=PATCH, num_layers=DEPTH, num_heads=HEADS, hidden_dim=DIM, mlp_dim=MLP)
    with torch.no_grad():  # torchvision zero-initialises some of these; make every tensor informative
        for p in vit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return vit.eval()


def _to_dino(state):
    """torchvision → official DINO key names (the inverse of what the loader does, written independently)."""
    top = {"class_token": "cls_token", "encoder.pos_embedding": "pos_embed", "conv_proj.weight": "patch_embed.proj.weight",
           "conv_proj.bias": "patch_embed.proj.bias", "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias"}
    block = {"ln_1": "norm1", "self_attention.in_proj_weight": "attn.qkv.weight", "self_attention.in_proj_bias": "attn.qkv.bias",
             "self_attention.out_proj": "attn.proj", "ln_2": "norm2", "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    out = {}
    for k, v in state.items():
        if k.startswith("heads."):
            continue
        if k in top:
            out[top[k]] = v
            continue
        i, rest = re.fullmatch(r"encoder\.layers\.encoder_layer_(\d+)\.(.+)", k).groups()
        for a, b in block.items():
            if rest.startswith(a):
                out[f"blocks.{i}.{b}{rest[len(a):]}"] = v
                break
        else:
            raise AssertionError(k)
    out["head.mlp.0.weight"] = torch.zeros(4, DIM)  # DINO's projection head: not part of the backbone, ignored
    return out


def _reference_tokens(vit: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch tokens from torchvision's own forward path (trained input size only)."""
    x = vit._process_input(images)
    x = torch.cat([vit.class_token.expand(x.shape[0], -1, -1), x], dim=1)
    x = vit.encoder(x)
    h = images.shape[-1] // PATCH
    return x[:, 1:].transpose(1, 2).reshape(x.shape[0], DIM, h, h)


def _features(path) -> ViTFeatures:
    state, arch = read_vit_weights(path, heads=HEADS)
    feats = ViTFeatures(8, **arch)
    feats.load_vit(state, str(path))
    return feats


@pytest.mark.parametrize("layout", ["dino", "dino-wrapped", "torchvision"])
def test_weights_load_and_reproduce_the_vit(tmp_path, layout):
    vit = _reference_vit()
    state = vit.state_dict()
    if layout == "dino":
        state = _to_dino(state)
    elif layout == "dino-wrapped":  # a DINO training checkpoint: teacher weights, DDP + backbone prefixes
        state = {"teacher": {f"module.backbone.{k}": v for k, v in _to_dino(state).items()}, "epoch": 3}
    torch.save(state, tmp_path / "vit.pth")
    assert read_vit_weights(tmp_path / "vit.pth")[1]["heads"] == 1  # width 32 does not imply the heads: give them
    s, arch = read_vit_weights(tmp_path / "vit.pth", heads=HEADS)
    assert arch == {"patch": PATCH, "dim": DIM, "depth": DEPTH, "heads": HEADS, "mlp_dim": MLP, "grid": GRID}
    feats = _features(tmp_path / "vit.pth")
    images = torch.rand(3, 3, GRID * PATCH, GRID * PATCH)
    normalised = (images - feats.mean) / feats.std
    torch.testing.assert_close(feats.tokens(images), _reference_tokens(vit, normalised), rtol=1e-5, atol=1e-5)
    out = feats(images)
    assert out.shape == (3, 8, GRID, GRID)
    torch.testing.assert_close(out[:, -3:], torch.nn.functional.avg_pool2d(images, PATCH))  # colour channels


def test_positional_embeddings_are_resized_to_the_input_grid(tmp_path):
    torch.save(_reference_vit().state_dict(), tmp_path / "vit.pth")
    feats = _features(tmp_path / "vit.pth")
    pos = feats.pos_embedding(5, 3)
    assert pos.shape == (1, 1 + 15, DIM)
    torch.testing.assert_close(pos[:, 0], feats.vit.encoder.pos_embedding[:, 0])  # class token untouched
    assert feats(torch.rand(2, 3, 5 * PATCH, 3 * PATCH)).shape == (2, 8, 5, 3)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        feats(torch.rand(1, 3, 20, 16))


def test_bad_weight_files_give_one_clear_error(tmp_path):
    good = _to_dino(_reference_vit().state_dict())
    with pytest.raises(NscError, match="file not found"):
        read_vit_weights(tmp_path / "missing.pth")
    (tmp_path / "garbage.pth").write_bytes(b"not a torch file at all")
    with pytest.raises(NscError, match="garbage.pth: not a readable torch weights file"):
        read_vit_weights(tmp_path / "garbage.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "cnn.pth")
    with pytest.raises(NscError, match="cnn.pth: not a usable ViT state dict .*neither a DINO"):
        read_vit_weights(tmp_path / "cnn.pth")
    missing = {k: v for k, v in good.items() if k != "blocks.1.mlp.fc2.weight"}
    torch.save(missing, tmp_path / "missing_key.pth")
    state, arch = read_vit_weights(tmp_path / "missing_key.pth")
    with pytest.raises(NscError, match=r"missing_key.pth: do not fit .*encoder_layer_1\.mlp\.3\.weight"):
        ViTFeatures(8, **arch).load_vit(state, str(tmp_path / "missing_key.pth"))
    bad = dict(good)
    bad["pos_embed"] = torch.zeros(1, 6, DIM)  # 5 patch tokens: not a square grid
    torch.save(bad, tmp_path / "bad_shape.pth")
    with pytest.raises(NscError, match="bad_shape.pth: not a usable ViT state dict .*inconsistent shapes"):
        read_vit_weights(tmp_path / "bad_shape.pth")


def test_vit_is_frozen_and_only_the_projection_trains(tmp_path):
    torch.save(_reference_vit().state_dict(), tmp_path / "vit.pth")
    feats = _features(tmp_path / "vit.pth").train()
    assert not feats.vit.training  # frozen: stays in eval mode
    feats(torch.rand(2, 3, 16, 16)).sum().backward()
    assert all(p.grad is None and not p.requires_grad for p in feats.vit.parameters())
    assert feats.proj.weight.grad is not None and feats.proj.weight.grad.abs().sum() > 0


def test_vit_codec_pretrains_saves_and_loads(tmp_path):
    from nscodec.coding.determinism import fixed_threads
    from nscodec.codecnerf.network import file_sha256, load_codec_model
    from nscodec.codecnerf.pretrain import find_scenes, pretrain
    from nscodec.scenes.procedural import generate_corpus
    from tests.test_codecnerf import TINY

    vit = _reference_vit()
    torch.save(_to_dino(vit.state_dict()), tmp_path / "dino.pth")
    generate_corpus(tmp_path / "corpus", 1, seed=5, resolution=32, n_train=6, n_val=1, n_test=1, progress=False)
    with fixed_threads(1):
        meta = pretrain(find_scenes(tmp_path / "corpus"), tmp_path / "codec.cnm", steps=2, rays=64, samples=16,
                        arch=TINY, progress=False, backbone_weights=tmp_path / "dino.pth",
                        backbone_heads=HEADS)
    assert meta["backbone_weights_sha256"] == file_sha256(tmp_path / "dino.pth")
    (tmp_path / "dino.pth").unlink()  # the codec-model file is self-contained
    net, _ = load_codec_model(tmp_path / "codec.cnm", meta["sha256"])
    assert net.arch == dataclasses.replace(TINY, backbone="vit", vit_patch=PATCH, vit_dim=DIM, vit_depth=DEPTH,
                                           vit_heads=HEADS, vit_mlp_dim=MLP, vit_grid=GRID)
    for k, v in vit.state_dict().items():  # the frozen ViT is carried unchanged through pretraining
        if not k.startswith("heads."):
            assert torch.equal(net.encoder.features.vit.state_dict()[k], v), k
    images = torch.rand(6, 3, 32, 32)
    c2w = torch.eye(4)[:3].expand(6, 3, 4).clone()
    c2w[:, 2, 3] = 3.0
    f = torch.full((6,), 40.0)
    idx = net.encode(images, c2w, f, f, torch.full((6,), 16.0), torch.full((6,), 16.0), torch.tensor([[-1.5] * 3, [1.5] * 3]))
    assert idx.shape == (3, TINY.volume_res // 2, TINY.volume_res // 2)
    assert [lvl.shape[-1] for lvl in net.decode(idx)] == list(TINY.plane_resolutions)
    with pytest.raises(NscError, match="resumed codec keeps its backbone"):
        pretrain(find_scenes(tmp_path / "corpus"), tmp_path / "c2.cnm", steps=0, progress=False,
                 resume=tmp_path / "codec.cnm", backbone_weights=tmp_path / "codec.cnm")
