"""Pretraining of the shared CodecNeRF codec over many scenes (CodecNeRF Sec. 3.5, Eq. 9) → a codec-model file.

    nscodec codecnerf-pretrain --corpus outputs/cnerf_corpus --generate 32 --output outputs/codecnerf.cnm --minutes 10

The corpus is any directory of Blender-format scenes (``transforms_train.json`` + images, one scene per
sub-directory, or the directory itself is one scene). ``--generate N`` first writes N procedural multi-object
scenes there (:func:`nscodec.scenes.procedural.generate_corpus`). Each step takes one scene: ``enc_views`` of its
training views go through the encoder (straight-through VQ), the generated triplanes render a batch of rays from
the scene's other training views (stratified samples inside the box, white background, the shared packed renderer
of :mod:`nscodec.render`) and the loss is
``L_rgb + L_vq + λ_tv L_tv`` (+ ``λ_lpips`` LPIPS on a rendered patch only when LPIPS weights are local,
:func:`nscodec.compat.make_lpips`; off by default).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from nscodec.codecnerf.encoder import prepare_views
from nscodec.codecnerf.network import CodecArch, CodecNeRFNet, file_sha256, load_codec_model, save_codec_model
from nscodec.codecnerf.triplane import TriplaneRenderer, normalize_points, sample_triplanes, tv_loss_planes
from nscodec.errors import NscError
from nscodec.data import SceneViews, load_views
from nscodec.render import OccupancyGrid, accumulate_along_rays, render_weight_from_density

#: the Blender dataparser's scene box (nerfstudio ``BlenderDataParserConfig``: ±1.5 with scale factor 1).
DEFAULT_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))


def find_scenes(corpus: Path | str) -> List[Path]:
    """Scene directories under ``corpus`` (those with ``transforms_train.json``; ``corpus`` itself if it is one)."""
    corpus = Path(corpus)
    if (corpus / "transforms_train.json").exists():
        return [corpus]
    return sorted(p for p in corpus.iterdir() if (p / "transforms_train.json").exists()) if corpus.is_dir() else []


def render_rays(levels: Sequence[Tensor], renderer: TriplaneRenderer, origins: Tensor, dirs: Tensor, aabb: Tensor,
                samples: int, jitter: bool) -> Tensor:
    """Volume-render rays through triplanes with the packed-sample ops every nscodec model renders with
    (:mod:`nscodec.render`): samples every ``|box diagonal| / samples`` along each ray inside ``aabb [2, 3]``
    (stratified when ``jitter``), nothing skipped (the codec renders scenes it has not seen, so there is no occupancy
    to skip by), white background. Returns ``rgb [R, 3]``."""
    n = origins.shape[0]
    box = OccupancyGrid(aabb.reshape(6), 1).to(origins.device)  # one cell, occupied: every sample in the box
    step = float((aabb[1] - aabb[0]).norm()) / samples
    ray_idx, t0, t1 = box.march(origins, dirs, step, torch.rand(n, device=origins.device) if jitter else None)
    pos = origins[ray_idx] + dirs[ray_idx] * (0.5 * (t0 + t1))[:, None]
    pn = normalize_points(pos, aabb)
    feats = sample_triplanes(levels, pn)
    weights, _, _ = render_weight_from_density(t0, t1, renderer.density(feats, pn), ray_idx, n)
    comp = accumulate_along_rays(weights, renderer.rgb(feats, dirs[ray_idx]), ray_idx, n)
    return comp + (1.0 - accumulate_along_rays(weights, None, ray_idx, n))


def camera_rays(v: SceneViews, view: Tensor, rows: Tensor, cols: Tensor):
    """World rays through pixel centres: ``(origins [R, 3], unit directions [R, 3])``."""
    x = (cols.float() + 0.5 - v.cx[view]) / v.fx[view]
    y = -(rows.float() + 0.5 - v.cy[view]) / v.fy[view]
    d_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
    rot = v.c2w[view, :3, :3]
    d = torch.einsum("rij,rj->ri", rot, d_cam)
    return v.c2w[view, :3, 3], d / d.norm(dim=-1, keepdim=True)


class _Scene:
    def __init__(self, views: SceneViews, arch: CodecArch) -> None:
        from nscodec.codecnerf.model import CodecNeRFModel

        self.views = views
        ids = CodecNeRFModel.select_views(views.images.shape[0], arch.enc_views)
        sel = torch.tensor(ids)
        self.enc = prepare_views(views.images[sel], views.c2w[sel], views.fx[sel], views.fy[sel], views.cx[sel], views.cy[sel],
                                 views.width, views.height, arch.enc_image_size)
        rest = [i for i in range(views.images.shape[0]) if i not in ids]
        self.supervise = torch.tensor(rest if len(rest) >= 4 else list(range(views.images.shape[0])))


def _init_codebook(net: CodecNeRFNet, scenes: Sequence[_Scene], aabb: Tensor, gen: torch.Generator) -> None:
    """Data-dependent codebook init: K latents drawn from the encoder outputs of a few scenes (+ small noise)."""
    with torch.no_grad():
        lat = []
        for sc in scenes[: min(8, len(scenes))]:
            planes = net.encoder(*sc.enc, aabb)
            l = net.compressor.encode(planes)
            lat.append(l.permute(0, 2, 3, 1).reshape(-1, l.shape[1]))
        lat = torch.cat(lat)
        k = net.compressor.vq.codebook.shape[0]
        pick = torch.randint(0, lat.shape[0], (k,), generator=gen)
        net.compressor.vq.codebook.copy_(lat[pick] + 0.01 * lat.std() * torch.randn(k, lat.shape[1], generator=gen))


def pretrain(
    scene_dirs: Sequence[Path | str],
    output: Path | str,
    steps: int = 1000,
    minutes: Optional[float] = None,
    rays: int = 1024,
    samples: int = 64,
    lr: float = 1e-3,
    grad_clip: float = 1.0,
    tv_weight: float = 1e-2,
    lpips_weight: float = 0.0,
    image_size: Optional[int] = None,
    arch: Optional[CodecArch] = None,
    seed: int = 0,
    log_every: int = 50,
    progress: bool = True,
    resume: Optional[Path | str] = None,
    backbone_weights: Optional[Path | str] = None,
    backbone_heads: Optional[int] = None,
) -> Dict[str, Any]:
    """Train the codec (Eq. 9 objective) and write the codec-model file.

    Args:
        scene_dirs: Blender-format scene directories (≥ 1).
        output: codec-model file to write. steps: maximum steps (one scene per step).
        minutes: optional wall-clock budget; training stops at whichever of ``steps`` / ``minutes`` comes first.
        rays, samples: rays per step and stratified samples per ray. lr: Adam learning rate (cosine decay).
        grad_clip: gradient-norm clipping (steps with a non-finite loss are skipped and counted).
        tv_weight: λ_tv (Eq. 8). lpips_weight: λ_lpips (only used when :func:`nscodec.compat.make_lpips` returns a
            metric; rays are then one square patch).
        image_size: resize every scene's images to this square size first (None: keep).
        resume: continue from this codec-model file (its architecture and weights; ``arch`` is ignored, the codebook
            is not re-initialised, Adam and the learning-rate schedule start afresh). The returned ``steps`` / ``train_seconds`` count this run only; ``total_steps``
            / ``total_train_seconds`` add the resumed file's.
        backbone_weights: a local ViT weights file (DINO or torchvision layout): the encoder's 2D features come
            from this frozen ViT (``arch.backbone = "vit"``, its shape read from the file) instead of the small CNN.
            Its weights are stored in the codec-model file; its SHA-256 is recorded in ``meta``.
        backbone_heads: attention heads of that ViT when its width does not imply them.

    Returns:
        A summary dict (also stored as the codec model's ``meta``): steps, seconds, scenes, sha256, final psnr.

    Raises:
        ValueError: no scenes.
        NscFormatError: ``resume`` is not a readable codec-model file.
        NscError: ``backbone_weights`` is missing, unreadable or not a ViT, or is given together with ``resume``.
    """
    if not scene_dirs:
        raise ValueError("codecnerf pretraining needs at least one Blender-format scene")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    prior: Dict[str, Any] = {}
    if resume is not None:
        net, info = load_codec_model(resume)
        arch = net.arch
        prior = {"resumed_from": str(resume), "resumed_sha256": info["sha256"],
                 "prior_steps": int(info["meta"].get("total_steps", info["meta"].get("steps", 0))),
                 "prior_train_seconds": float(info["meta"].get("total_train_seconds", info["meta"].get("train_seconds", 0.0)))}
        prior.update({k: v for k, v in info["meta"].items() if k.startswith("backbone_weights")})
        if backbone_weights is not None:
            raise NscError("codecnerf pretraining: --backbone-weights starts a new codec; a resumed codec keeps its backbone")
    elif backbone_weights is not None:
        from nscodec.codecnerf.backbone import read_vit_weights

        state, vit = read_vit_weights(backbone_weights, backbone_heads)
        arch = dataclasses.replace(arch or CodecArch(), backbone="vit", **{f"vit_{k}": v for k, v in vit.items()})
        net = CodecNeRFNet(arch)
        net.encoder.features.load_vit(state, str(backbone_weights))
        prior = {"backbone_weights": str(backbone_weights), "backbone_weights_sha256": file_sha256(backbone_weights)}
    else:
        arch = arch or CodecArch()
        net = CodecNeRFNet(arch)
    aabb = torch.tensor(DEFAULT_AABB, dtype=torch.float32)
    t_load = time.perf_counter()
    scenes = [_Scene(load_views(p, "train", image_size), arch) for p in scene_dirs]
    load_s = time.perf_counter() - t_load
    if resume is None:
        _init_codebook(net, scenes, aabb, gen)
    lpips = None
    if lpips_weight > 0:
        from nscodec.compat import make_lpips

        lpips = make_lpips()
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    usage = torch.zeros(arch.codebook_size)
    t0 = time.perf_counter()
    history: List[Dict[str, float]] = []
    psnr_ema = None
    step = 0
    skipped = 0
    for step in range(steps):
        if minutes is not None and time.perf_counter() - t0 > minutes * 60:
            break
        for g in opt.param_groups:
            g["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, steps))))
        sc = scenes[rng.randrange(len(scenes))]
        v = sc.views
        levels, idx, vq_loss = net.forward_train(*sc.enc, aabb)
        usage += torch.bincount(idx.reshape(-1), minlength=arch.codebook_size).float()
        if lpips is not None:
            p = min(32, v.height, v.width)
            view = sc.supervise[torch.randint(0, len(sc.supervise), (1,), generator=gen)].expand(p * p)
            r0 = int(torch.randint(0, v.height - p + 1, (1,), generator=gen))
            c0 = int(torch.randint(0, v.width - p + 1, (1,), generator=gen))
            rows, cols = torch.meshgrid(torch.arange(r0, r0 + p), torch.arange(c0, c0 + p), indexing="ij")
            rows, cols = rows.reshape(-1), cols.reshape(-1)
        else:
            view = sc.supervise[torch.randint(0, len(sc.supervise), (rays,), generator=gen)]
            rows = torch.randint(0, v.height, (rays,), generator=gen)
            cols = torch.randint(0, v.width, (rays,), generator=gen)
        origins, dirs = camera_rays(v, view, rows, cols)
        rgb = render_rays(levels, net.renderer, origins, dirs, aabb, samples, jitter=True)
        gt = v.images[view, rows, cols]
        mse = F.mse_loss(rgb, gt)
        loss = mse + vq_loss + tv_weight * tv_loss_planes(levels)
        if lpips is not None:
            to_img = lambda x: x.reshape(p, p, 3).permute(2, 0, 1)[None].clamp(0, 1)  # noqa: E731
            loss = loss + lpips_weight * lpips(to_img(rgb), to_img(gt))
        opt.zero_grad(set_to_none=True)
        if not torch.isfinite(loss):  # skip a diverging batch instead of poisoning the weights
            skipped += 1
            continue
        loss.backward()
        if not torch.isfinite(torch.nn.utils.clip_grad_norm_(net.parameters(), grad_clip)):
            skipped += 1
            continue
        opt.step()
        psnr = float(-10 * torch.log10(mse.detach().clamp_min(1e-10)))
        psnr_ema = psnr if psnr_ema is None else 0.95 * psnr_ema + 0.05 * psnr
        if (step + 1) % 200 == 0:  # restart dead codewords at random current latents (keeps the codebook in use)
            with torch.no_grad():
                dead = (usage == 0).nonzero().squeeze(-1)
                if dead.numel():
                    lat = net.compressor.encode(net.encoder(*sc.enc, aabb)).permute(0, 2, 3, 1).reshape(-1, arch.latent_dim)
                    net.compressor.vq.codebook[dead] = lat[torch.randint(0, lat.shape[0], (dead.numel(),), generator=gen)]
            usage.zero_()
        if progress and (step % log_every == 0 or step == steps - 1):
            el = time.perf_counter() - t0
            print(f"[codecnerf-pretrain] step {step:5d}  {el:7.1f}s  loss {float(loss):.4f}  vq {float(vq_loss):.4f}  "
                  f"psnr(ema) {psnr_ema:.2f} dB  scene {v.name}", flush=True)
            history.append({"step": step, "seconds": round(el, 1), "psnr_ema": round(psnr_ema, 3), "vq_loss": float(vq_loss)})
    seconds = time.perf_counter() - t0
    done = step + 1 if steps else 0
    meta = {
        "steps": done,
        "train_seconds": round(seconds, 1),
        "load_seconds": round(load_s, 1),
        "num_scenes": len(scenes),
        "scenes": [str(Path(p)) for p in scene_dirs][:200],
        "rays_per_step": rays,
        "samples_per_ray": samples,
        "final_train_psnr_ema": round(psnr_ema or 0.0, 3),
        "skipped_nonfinite_steps": skipped,
        "lr": lr,
        "threads": torch.get_num_threads(),
        "history": history,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        **prior,
        "total_steps": prior.get("prior_steps", 0) + done,
        "total_train_seconds": round(prior.get("prior_train_seconds", 0.0) + seconds, 1),
    }
    meta["sha256"] = save_codec_model(net, output, meta)
    meta["output"] = str(output)
    return meta


def pretrain_command(args: argparse.Namespace) -> int:
    """Entry of ``nscodec codecnerf-pretrain``."""
    if args.threads:
        torch.set_num_threads(args.threads)
    corpus = Path(args.corpus)
    if args.generate:
        from nscodec.scenes.procedural import generate_corpus

        generate_corpus(corpus, args.generate, seed=args.seed, resolution=args.resolution, n_train=args.n_train, n_val=1,
                        n_test=4, overwrite=True, progress=False)
    scenes = find_scenes(corpus)
    if not scenes:
        raise NscError(f"no Blender-format scenes (transforms_train.json) under {corpus}")
    meta = pretrain(scenes, args.output, steps=args.steps, minutes=args.minutes, rays=args.rays, samples=args.samples, lr=args.lr,
                    lpips_weight=args.lpips_weight, image_size=args.image_size, seed=args.seed, resume=args.resume,
                    arch=CodecArch(enc_image_size=args.enc_image_size) if args.enc_image_size else None,
                    backbone_weights=args.backbone_weights, backbone_heads=args.backbone_heads)
    meta.pop("history", None)
    meta.pop("scenes", None)
    print(json.dumps(meta, indent=2))
    return 0
