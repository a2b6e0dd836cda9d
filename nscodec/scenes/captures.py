"""Procedural *captures*: scenes that fill their cameras' views to the horizon, written as a phone capture would be.

:mod:`nscodec.scenes.procedural` renders objects on an empty background (the NeRF-Synthetic layout). A real capture
has no empty background: every pixel sees something, near or far. This module surrounds the same SDF objects with an
environment and writes RGB images (no alpha):

* ``unbounded`` — the objects on a textured ground plane that runs far beyond the cameras, under a distant textured
  sky shell (radius :data:`SKY_RADIUS`); cameras on a ring around the objects, looking at them (a 360° capture).
  Written in the **nerfstudio-data** layout (``transforms.json`` + ``images/``), what ``ns-process-data`` writes:
  load it with ``ns-train <method> nerfstudio-data --data DIR``.
* ``forward`` — the objects in front of a textured back wall, cameras on a small patch all looking the same way
  (a forward-facing, LLFF-style capture). Written in the **LLFF** layout (``poses_bounds.npy`` + ``images/``).

Either kind can be written in either layout (``layout``): a 360° capture in LLFF's format is what LLFF's
``imgs2poses`` writes for cameras around an object, and ``llff-data`` reads both.

World frame, camera convention and pixel centres are those of :mod:`nscodec.scenes.procedural` (+z up, OpenGL
cameras looking down -z). Output bytes are a deterministic function of the arguments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, Optional, Tuple

import numpy as np
import torch
from PIL import Image

from nscodec.scenes.procedural import (
    GENERATOR_NAME,
    GENERATOR_VERSION,
    SceneSpec,
    _CompiledScene,
    _sphere_trace,
    look_at_c2w,
    write_atomically,
)

__all__ = ["generate_capture_scene", "render_capture_views", "capture_poses", "SKY_RADIUS", "GROUND_Z"]

#: height of the ground plane (scene units): just below every scene's bounding sphere (radius 1.2)
GROUND_Z = -1.25
#: extent of the ground (a disc of this radius) and radius of the sky shell, scene units
GROUND_RADIUS = 16.0
SKY_RADIUS = 40.0
#: the forward-facing scene's back wall: the plane y = WALL_Y
WALL_Y = 5.0


def capture_poses(kind: str, n: int, seed: int = 0, radius: float = 3.2) -> torch.Tensor:
    """Camera-to-world ``[n, 4, 4]`` (float32, OpenGL) of a procedural capture.

    ``unbounded``: a ring of ``radius`` around the origin at 8–25° elevation, evenly spaced azimuths with seeded
    jitter, looking at a point jittered around the origin. ``forward``: a 4:3 patch (1.0 × 0.6 units) of cameras at
    ``y = -radius``, all looking along +y (rotations jittered by up to 2°), as a hand-held forward-facing capture.

    Raises:
        ValueError: unknown ``kind`` or ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"a capture needs at least one view, got n={n}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xCA97]))
    poses = []
    if kind == "unbounded":
        az0 = float(rng.uniform(0, 2 * math.pi))
        for i in range(n):
            az = az0 + 2 * math.pi * (i + float(rng.uniform(-0.3, 0.3))) / n
            el = math.radians(float(rng.uniform(8.0, 25.0)))
            eye = (radius * math.cos(el) * math.cos(az), radius * math.cos(el) * math.sin(az), radius * math.sin(el))
            target = tuple(float(v) for v in rng.uniform(-0.15, 0.15, size=3))
            poses.append(look_at_c2w(eye, target))
    elif kind == "forward":
        cols = max(1, int(round(math.sqrt(n * 4 / 3))))
        for i in range(n):
            u, v = (i % cols + 0.5) / cols, ((i // cols) + 0.5) / math.ceil(n / cols)
            eye = np.array([-0.5 + u, -radius, -0.3 + 0.6 * v]) + rng.uniform(-0.02, 0.02, size=3)
            look = np.array([0.0, 1.0, 0.0]) + rng.uniform(-0.035, 0.035, size=3)
            poses.append(look_at_c2w(eye.tolist(), (eye + look).tolist()))
    else:
        raise ValueError(f"capture kind must be 'unbounded' or 'forward', got {kind!r}")
    return torch.stack(poses)


def _checker(a: torch.Tensor, b: torch.Tensor, size: float) -> torch.Tensor:
    return torch.remainder(torch.floor(a / size) + torch.floor(b / size), 2.0) >= 1.0


def _environment(kind: str, origins: torch.Tensor, dirs: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Colour ``[M, 3]`` and distance ``[M]`` of what rays ``[M, 3]`` meet beyond the objects: ground plane and sky
    shell (``unbounded``), or the back wall (``forward``; rays that miss it see a plain far colour at ``inf``)."""
    m = origins.shape[0]
    col = torch.empty(m, 3)
    dist = torch.full((m,), float("inf"))
    if kind == "forward":
        t = (WALL_Y - origins[:, 1]) / dirs[:, 1].clamp_min(1e-6)
        p = origins + dirs * t[:, None]
        odd = _checker(p[:, 0], p[:, 2], 0.6)
        rings = 0.5 + 0.5 * torch.cos(2.0 * p[:, 0]) * torch.cos(1.5 * p[:, 2])
        base = torch.stack([0.75 - 0.25 * rings, 0.55 + 0.2 * rings, 0.35 + 0.3 * rings], -1)
        col[:] = torch.where(odd[:, None], base, 0.7 * base)
        hit = dirs[:, 1] > 1e-6
        dist = torch.where(hit, t, dist)
        col[~hit] = torch.tensor([0.6, 0.7, 0.8])
        return col, dist
    # sky shell: colour by direction of the point where the ray leaves the shell
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - SKY_RADIUS ** 2
    t_sky = -b + torch.sqrt((b * b - c).clamp_min(0.0))
    q = (origins + dirs * t_sky[:, None]) / SKY_RADIUS
    elev = torch.asin(q[:, 2].clamp(-1, 1))
    az = torch.atan2(q[:, 1], q[:, 0])
    band = (0.5 + 0.5 * torch.sin(6.0 * az)) * torch.exp(-((elev - 0.08) / 0.12) ** 2)  # distant "hills"
    sky = torch.stack([0.45 + 0.3 * elev.clamp(0, 1), 0.65 + 0.2 * elev.clamp(0, 1), 0.95 * torch.ones_like(elev)], -1)
    hills = torch.tensor([0.35, 0.5, 0.3])
    col[:] = sky * (1 - band[:, None]) + hills * band[:, None]
    dist = t_sky
    # ground: a checker disc at z = GROUND_Z
    t_g = (GROUND_Z - origins[:, 2]) / torch.where(dirs[:, 2] < -1e-6, dirs[:, 2], torch.full_like(dirs[:, 2], -1e-6))
    p = origins + dirs * t_g[:, None]
    on = (dirs[:, 2] < -1e-6) & (p[:, :2].norm(dim=-1) < GROUND_RADIUS)
    odd = _checker(p[:, 0], p[:, 1], 0.5)
    shade = 0.85 - 0.25 * (p[:, :2].norm(dim=-1) / GROUND_RADIUS)
    ground = torch.where(odd[:, None], torch.tensor([0.62, 0.5, 0.36]), torch.tensor([0.4, 0.52, 0.3])) * shade[:, None]
    col = torch.where(on[:, None], ground, col)
    dist = torch.where(on, t_g, dist)
    return col, dist


def render_capture_views(
    kind: str, spec: SceneSpec, c2w: torch.Tensor, width: int, height: int, focal: float, supersample: int = 2,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render RGB images of the objects of ``spec`` in the ``kind`` environment (pure torch, CPU, 1 thread).

    Args:
        kind: ``unbounded`` or ``forward``.
        c2w: ``[N, 4, 4]`` OpenGL camera-to-world (world units).
        width, height: image size (pixels); ``focal`` in pixels, principal point at the centre.
        supersample: ``S × S`` sub-pixel rays per pixel, box-filtered.

    Returns:
        ``(images uint8 [N, H, W, 3], depth_range float64 [N, 2])``: per view the smallest and largest z-depth
        (scene units along the optical axis, as LLFF's ``imgs2poses`` bounds) of any surface a ray meets (the sky
        shell counts).
    """
    scene = _CompiledScene(spec)
    s = int(supersample)
    sub = (torch.arange(s, dtype=torch.float64) + 0.5) / s
    xs = (torch.arange(width, dtype=torch.float64)[:, None] + sub[None, :]).reshape(-1)
    ys = (torch.arange(height, dtype=torch.float64)[:, None] + sub[None, :]).reshape(-1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    d_cam = torch.stack([(gx - 0.5 * width) / focal, -(gy - 0.5 * height) / focal, -torch.ones_like(gx)], dim=-1)
    d_cam = (d_cam / d_cam.norm(dim=-1, keepdim=True)).reshape(-1, 3).float()
    out = np.zeros((c2w.shape[0], height, width, 3), dtype=np.uint8)
    bounds = np.zeros((c2w.shape[0], 2))
    prev = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical output for any machine's thread count
    try:
        with torch.no_grad():
            for v in range(c2w.shape[0]):
                rot = c2w[v, :3, :3].float()
                dirs = (rot[None, :, :] * d_cam[:, None, :]).sum(-1)
                axial = -d_cam[:, 2]  # z-depth per unit of ray length (cos of the angle to the optical axis)
                origins = c2w[v, :3, 3].float().expand_as(dirs).contiguous()
                hit, t = _sphere_trace(scene, origins, dirs)
                rgb, dist = _environment(kind, origins, dirs)
                hidx = hit.nonzero().squeeze(-1)
                if hidx.numel():
                    obj = hidx[t[hidx] < dist[hidx]]  # the object is in front of the environment there
                    rgb[obj] = scene.shade(origins[obj] + dirs[obj] * t[obj, None])
                    dist[obj] = t[obj]
                img = rgb.reshape(height, s, width, s, 3).mean(dim=(1, 3))
                out[v] = torch.round(img.clamp(0, 1) * 255).to(torch.uint8).numpy()
                finite = (dist * axial)[torch.isfinite(dist)]
                bounds[v] = (float(finite.min()), float(finite.max())) if finite.numel() else (0.1, 100.0)
    finally:
        torch.set_num_threads(prev)
    return out, bounds


def generate_capture_scene(
    out_dir: str | Path,
    kind: Literal["unbounded", "forward"] = "unbounded",
    spec: Optional[SceneSpec] = None,
    width: int = 64,
    height: int = 48,
    n_views: int = 30,
    seed: int = 0,
    camera_angle_x: float = 1.0,
    supersample: int = 2,
    overwrite: bool = False,
    layout: Optional[Literal["nerfstudio", "llff"]] = None,
) -> Path:
    """Render a procedural capture (module docstring) and write it at ``out_dir``.

    ``layout="nerfstudio"`` (the default of ``unbounded``) writes nerfstudio-data: ``transforms.json`` (``fl_x, fl_y,
    cx, cy, w, h`` in pixels, frames with ``file_path`` ``images/frame_00001.png`` and OpenGL ``transform_matrix``)
    and RGB PNGs. ``layout="llff"`` (the default of ``forward``) writes LLFF as ``imgs2poses`` does:
    ``poses_bounds.npy`` (``[N, 17]``: each row a ``3 × 5`` matrix — rotation columns down, right, back; camera
    centre; ``(H, W, focal)`` — then 0.9 × the smallest and 1.1 × the largest z-depth a view sees) and ``images/``.
    Both also write ``scene.json`` (generator, spec, settings).

    Args:
        kind: ``unbounded`` or ``forward``.
        spec: the objects; None: :meth:`SceneSpec.demo`.
        width, height: image size, pixels. n_views: number of images. seed: camera seed.
        camera_angle_x: horizontal field of view, radians. supersample: anti-aliasing per axis.
        overwrite: replace a non-empty ``out_dir``.
        layout: ``nerfstudio`` or ``llff`` (None: the kind's default, above).

    Raises:
        ValueError: bad ``kind``, ``layout``, sizes or view count. FileExistsError: ``out_dir`` is not empty (no ``overwrite``).
    """
    if width < 2 or height < 2 or supersample < 1:
        raise ValueError(f"image size must be at least 2×2 and supersample ≥ 1, got {width}×{height}, {supersample}")
    layout = layout or ("nerfstudio" if kind == "unbounded" else "llff")
    if layout not in ("nerfstudio", "llff"):
        raise ValueError(f"capture layout must be 'nerfstudio' or 'llff', got {layout!r}")
    spec = SceneSpec.demo() if spec is None else spec
    spec.validate()
    poses = capture_poses(kind, n_views, seed)
    focal = 0.5 * width / math.tan(0.5 * camera_angle_x)
    out = Path(out_dir).expanduser().resolve()

    def build(tmp: Path) -> None:
        images, bounds = render_capture_views(kind, spec, poses, width, height, focal, supersample)
        (tmp / "images").mkdir()
        names = [f"images/frame_{i + 1:05d}.png" for i in range(n_views)]
        for name, img in zip(names, images):
            Image.fromarray(img, mode="RGB").save(tmp / name, format="PNG", compress_level=6)
        if layout == "nerfstudio":
            meta = {"camera_model": "OPENCV", "fl_x": focal, "fl_y": focal, "cx": 0.5 * width, "cy": 0.5 * height,
                    "w": width, "h": height, "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
                    "frames": [{"file_path": n, "transform_matrix": p.tolist()} for n, p in zip(names, poses)]}
            (tmp / "transforms.json").write_text(json.dumps(meta, indent=2) + "\n")
        else:
            rot = poses[:, :3, :3].double().numpy()
            llff = np.concatenate([-rot[:, :, 1:2], rot[:, :, 0:1], rot[:, :, 2:3]], axis=2)  # down, right, back
            hwf = np.broadcast_to(np.array([height, width, focal], dtype=np.float64)[None, :, None], (n_views, 3, 1))
            mats = np.concatenate([llff, poses[:, :3, 3:4].double().numpy(), hwf], axis=2)  # [N, 3, 5]
            rows = np.concatenate([mats.reshape(n_views, 15), bounds * np.array([0.9, 1.1])], axis=1)
            np.save(tmp / "poses_bounds.npy", rows)
        info = {"generator": GENERATOR_NAME + ".captures", "version": GENERATOR_VERSION, "kind": kind,
                "seed": int(seed), "width": int(width), "height": int(height), "n_views": int(n_views),
                "camera_angle_x": float(camera_angle_x), "supersample": int(supersample), "layout": layout,
                "world_up": [0.0, 0.0, 1.0],
                "spec": spec.to_dict()}
        (tmp / "scene.json").write_text(json.dumps(info, indent=2) + "\n")

    write_atomically(out, overwrite, build)
    return out
