"""Procedural synthetic scenes written in the NeRF-Synthetic ("Blender") layout.

This module renders small analytic scenes (a union of signed-distance-function
primitives) with a pure-torch sphere tracer and writes them exactly like the
NeRF-Synthetic datasets, so that nerfstudio's stock ``blender-data`` dataparser
(:class:`nerfstudio.data.dataparsers.blender_dataparser.BlenderDataParserConfig`)
loads them without any download.

Conventions
-----------
* **World frame**: right-handed, **+z is up** (as in NeRF-Synthetic). Units are
  arbitrary "scene units"; every scene fits inside a sphere of radius
  :data:`SCENE_RADIUS` (1.2) around the origin, hence inside nerfstudio's
  ``[-1.5, 1.5]^3`` Blender scene box.
* **Cameras**: 4x4 camera-to-world matrices in the Blender/OpenGL convention:
  the camera looks down its local **-z** axis, local **+y** is image-up and
  local **+x** is image-right. Column 3 holds the camera centre in world units.
* **Intrinsics**: pinhole, square pixels, principal point at the image centre,
  ``focal = 0.5 * W / tan(0.5 * camera_angle_x)`` pixels (``camera_angle_x`` is
  the full horizontal field of view in radians). Pixel ``(row i, col j)`` covers
  ``[j, j+1) x [i, i+1)`` in image coordinates, its centre is ``(j+0.5, i+0.5)``
  (same as nerfstudio's ray generation).
* **Images**: RGBA uint8 PNG, straight (non-premultiplied) alpha; alpha is the
  anti-aliased pixel coverage, RGB is 0 where alpha is 0.

Layout written by :func:`generate_blender_scene`::

    out_dir/
      transforms_train.json  transforms_val.json  transforms_test.json
      train/r_0.png ...      val/r_0.png ...      test/r_0.png ...
      scene.json             # spec + generator version, for reproducibility

Length: a self-contained scene generator (SDF primitives, textures, shading, sphere tracing, the Blender writer and
the corpus), test and demo infrastructure rather than product code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image

try:  # progress bars are optional niceties
    from tqdm.auto import tqdm as _tqdm
except Exception:  # pragma: no cover - tqdm is a nerfstudio dependency
    _tqdm = None

__all__ = [
    "GENERATOR_NAME",
    "GENERATOR_VERSION",
    "PRIMITIVE_KINDS",
    "TEXTURE_KINDS",
    "SCENE_RADIUS",
    "Texture",
    "Primitive",
    "SceneSpec",
    "camera_poses",
    "look_at_c2w",
    "render_views",
    "generate_blender_scene",
    "generate_corpus",
]

GENERATOR_NAME = "nscodec.scenes.procedural"
#: Bump whenever the rendered bytes for a given (spec, seed, settings) change.
GENERATOR_VERSION = "1.0"

#: Supported primitive kinds and the meaning of their ``size`` tuple (scene units).
PRIMITIVE_KINDS: Dict[str, str] = {
    "sphere": "(radius,)",
    "box": "(half_x, half_y, half_z)",
    "rounded_box": "(half_x, half_y, half_z, corner_radius)  # outer half extents",
    "torus": "(major_radius, minor_radius)  # ring in the local xy plane, axis = local z",
    "cylinder": "(radius, half_height)  # capped, axis = local z",
}
_SIZE_LEN = {"sphere": 1, "box": 3, "rounded_box": 4, "torus": 2, "cylinder": 2}

#: Supported procedural textures (evaluated in the primitive's local frame).
TEXTURE_KINDS: Tuple[str, ...] = ("stripes", "checker", "rings")

#: Every generated scene fits inside this radius around the origin (scene units).
SCENE_RADIUS = 1.2
#: Half-size of nerfstudio's Blender scene box.
_BLENDER_AABB_HALF = 1.5

_Vec3 = Tuple[float, float, float]


# --------------------------------------------------------------------------------------
# Scene description
# --------------------------------------------------------------------------------------


def _vec3(v: Sequence[float], name: str) -> _Vec3:
    if len(v) != 3:
        raise ValueError(f"{name} must have 3 components, got {v!r}")
    return (float(v[0]), float(v[1]), float(v[2]))


@dataclass
class Texture:
    """A procedural two-colour texture evaluated in the primitive's *local* frame.

    Attributes:
        kind: one of :data:`TEXTURE_KINDS`:
            ``"stripes"`` (parallel slabs across local axis ``axis``),
            ``"checker"`` (3-D checkerboard), ``"rings"`` (concentric shells
            around the local origin).
        color: secondary RGB colour in ``[0, 1]`` (the primitive's ``color`` is the first).
        scale: spatial frequency in cells per scene unit (a cell is one colour band).
        axis: local axis (0=x, 1=y, 2=z) for ``"stripes"``; ignored otherwise.
    """

    kind: str = "stripes"
    color: _Vec3 = (1.0, 1.0, 1.0)
    scale: float = 6.0
    axis: int = 2

    def __post_init__(self) -> None:
        if self.kind not in TEXTURE_KINDS:
            raise ValueError(f"unknown texture kind {self.kind!r}; expected one of {TEXTURE_KINDS}")
        self.color = _vec3(self.color, "texture color")
        self.scale = float(self.scale)
        self.axis = int(self.axis)
        if not (self.scale > 0):
            raise ValueError(f"texture scale must be > 0, got {self.scale}")
        if self.axis not in (0, 1, 2):
            raise ValueError(f"texture axis must be 0, 1 or 2, got {self.axis}")


@dataclass
class Primitive:
    """One SDF primitive of a :class:`SceneSpec`.

    Attributes:
        kind: one of :data:`PRIMITIVE_KINDS` (``sphere``, ``box``, ``rounded_box``,
            ``torus``, ``cylinder``).
        size: kind-specific size parameters in scene units, see :data:`PRIMITIVE_KINDS`.
        position: world-space centre ``(x, y, z)`` in scene units (world +z is up).
        rotation_deg: intrinsic Euler angles in degrees; the local-to-world rotation is
            ``Rz(rz) @ Ry(ry) @ Rx(rx)``.
        color: base RGB albedo in ``[0, 1]`` (display/sRGB values, no gamma applied).
        texture: optional :class:`Texture`; ``None`` means a uniform colour.
    """

    kind: str
    size: Tuple[float, ...]
    position: _Vec3 = (0.0, 0.0, 0.0)
    rotation_deg: _Vec3 = (0.0, 0.0, 0.0)
    color: _Vec3 = (0.8, 0.8, 0.8)
    texture: Optional[Texture] = None

    def __post_init__(self) -> None:
        if self.kind not in PRIMITIVE_KINDS:
            raise ValueError(f"unknown primitive kind {self.kind!r}; expected one of {list(PRIMITIVE_KINDS)}")
        self.size = tuple(float(s) for s in self.size)
        if len(self.size) != _SIZE_LEN[self.kind]:
            raise ValueError(f"{self.kind} expects size {PRIMITIVE_KINDS[self.kind]}, got {self.size!r}")
        if not all(s > 0 for s in self.size):
            raise ValueError(f"{self.kind} size parameters must be > 0, got {self.size!r}")
        if self.kind == "rounded_box" and self.size[3] >= min(self.size[:3]):
            raise ValueError("rounded_box corner_radius must be smaller than every half extent")
        if self.kind == "torus" and self.size[1] >= self.size[0]:
            raise ValueError("torus minor_radius must be smaller than major_radius")
        self.position = _vec3(self.position, "position")
        self.rotation_deg = _vec3(self.rotation_deg, "rotation_deg")
        self.color = _vec3(self.color, "color")
        if isinstance(self.texture, dict):
            self.texture = Texture(**self.texture)

    def bounding_radius(self) -> float:
        """Radius (scene units) of a sphere around :attr:`position` that contains the primitive."""
        s = self.size
        if self.kind == "sphere":
            return s[0]
        if self.kind in ("box", "rounded_box"):
            return math.sqrt(s[0] ** 2 + s[1] ** 2 + s[2] ** 2)
        if self.kind == "torus":
            return s[0] + s[1]
        return math.sqrt(s[0] ** 2 + s[1] ** 2)  # cylinder

    def rotation_matrix(self) -> np.ndarray:
        """Local-to-world rotation, float64 ``[3, 3]`` (columns are the local axes in world)."""
        return _euler_xyz_deg(self.rotation_deg)

    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        d = asdict(self)
        d["size"] = list(self.size)
        return d

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "Primitive":
        """Build from :meth:`to_dict` output."""
        d = dict(d)
        tex = d.pop("texture", None)
        return cls(texture=Texture(**tex) if tex is not None else None, **d)


def _euler_xyz_deg(angles: Sequence[float]) -> np.ndarray:
    rx, ry, rz = (math.radians(a) for a in angles)
    cx, sx, cy, sy, cz, sz = math.cos(rx), math.sin(rx), math.cos(ry), math.sin(ry), math.cos(rz), math.sin(rz)
    Rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    Ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    Rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


def _hsv_to_rgb(h: float, s: float, v: float) -> _Vec3:
    i = int(h * 6.0) % 6
    f = h * 6.0 - math.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return (round(r, 4), round(g, 4), round(b, 4))


@dataclass
class SceneSpec:
    """A procedural scene: a union of SDF :class:`Primitive` s lit by one directional light.

    Attributes:
        primitives: the objects; the scene surface is the zero level set of
            ``min_k sdf_k(x)``. Overlapping / interpenetrating objects are fine.
        light_dir: world-space direction *towards* the light (normalised on use).
        ambient: ambient light fraction in ``[0, 1]``; shading is
            ``albedo * (ambient * hemi(n) + (1 - ambient) * max(0, n . l))`` with a
            mild sky/ground hemisphere factor ``hemi``, and no shadows.
        name: free-form label stored in ``scene.json``.

    Hand-written specs are not forced inside radius :data:`SCENE_RADIUS` (random and
    demo specs are), but :meth:`validate` checks that every primitive fits in
    nerfstudio's ``[-1.5, 1.5]^3`` Blender scene box.
    """

    primitives: List[Primitive] = field(default_factory=list)
    light_dir: _Vec3 = (0.4, -0.3, 0.85)
    ambient: float = 0.3
    name: str = "custom"

    def __post_init__(self) -> None:
        self.primitives = [Primitive.from_dict(p) if isinstance(p, dict) else p for p in self.primitives]
        self.light_dir = _vec3(self.light_dir, "light_dir")
        self.ambient = float(self.ambient)

    # ---- (de)serialisation --------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return {
            "name": self.name,
            "light_dir": list(self.light_dir),
            "ambient": self.ambient,
            "primitives": [p.to_dict() for p in self.primitives],
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "SceneSpec":
        """Build from :meth:`to_dict` output (e.g. the ``"spec"`` entry of ``scene.json``)."""
        return cls(
            primitives=[Primitive.from_dict(p) for p in d["primitives"]],
            light_dir=tuple(d.get("light_dir", (0.4, -0.3, 0.85))),
            ambient=float(d.get("ambient", 0.3)),
            name=str(d.get("name", "custom")),
        )

    # ---- geometry helpers ---------------------------------------------------------
    def bounding_radius(self) -> float:
        """Radius (scene units) of an origin-centred sphere containing every primitive."""
        if not self.primitives:
            return 0.0
        return max(float(np.linalg.norm(p.position)) + p.bounding_radius() for p in self.primitives)

    def validate(self) -> None:
        """Raise ``ValueError`` if the spec is empty, the light is degenerate, or any
        primitive's bounding sphere leaves the ``[-1.5, 1.5]^3`` Blender scene box."""
        if not self.primitives:
            raise ValueError("SceneSpec has no primitives")
        if float(np.linalg.norm(self.light_dir)) < 1e-8:
            raise ValueError("light_dir must be non-zero")
        if not (0.0 <= self.ambient <= 1.0):
            raise ValueError(f"ambient must be in [0, 1], got {self.ambient}")
        for i, p in enumerate(self.primitives):
            r = p.bounding_radius()
            if any(abs(c) + r > _BLENDER_AABB_HALF for c in p.position):
                raise ValueError(
                    f"primitive {i} ({p.kind} at {p.position}, bounding radius {r:.3f}) "
                    f"leaves the Blender scene box [-{_BLENDER_AABB_HALF}, {_BLENDER_AABB_HALF}]^3"
                )

    # ---- factories ----------------------------------------------------------------
    @classmethod
    def demo(cls) -> "SceneSpec":
        """A fixed, recognisable demo scene (5 objects, 3 of them textured).

        A red sphere sits at the origin, a blue/white checkered box to its -x side, a
        green torus leaning on it from +y, a yellow/orange striped cylinder at +x and a
        purple rounded box stacked on top. Everything fits within radius ~1.2.
        """
        prims = [
            Primitive("sphere", (0.42,), (0.0, 0.0, 0.0), color=(0.85, 0.15, 0.12)),
            Primitive(
                "box",
                (0.28, 0.28, 0.28),
                (-0.62, -0.25, -0.2),
                rotation_deg=(0.0, 0.0, 25.0),
                color=(0.15, 0.3, 0.85),
                texture=Texture("checker", (0.95, 0.95, 0.95), scale=5.0),
            ),
            Primitive(
                "torus",
                (0.32, 0.1),
                (0.1, 0.62, -0.15),
                rotation_deg=(60.0, 0.0, 10.0),
                color=(0.15, 0.7, 0.25),
            ),
            Primitive(
                "cylinder",
                (0.2, 0.38),
                (0.62, -0.3, -0.08),
                rotation_deg=(0.0, 15.0, 0.0),
                color=(0.95, 0.8, 0.1),
                texture=Texture("stripes", (0.9, 0.4, 0.05), scale=7.0, axis=2),
            ),
            Primitive(
                "rounded_box",
                (0.22, 0.18, 0.12, 0.05),
                (0.05, -0.05, 0.5),
                rotation_deg=(0.0, 0.0, -20.0),
                color=(0.55, 0.2, 0.7),
                texture=Texture("rings", (0.9, 0.75, 0.95), scale=12.0),
            ),
        ]
        return cls(primitives=prims, light_dir=(0.45, -0.35, 0.82), ambient=0.3, name="demo")

    @classmethod
    def random(cls, seed: int, n_objects: Union[int, Tuple[int, int]] = (3, 6)) -> "SceneSpec":
        """A random multi-object arrangement, deterministic in ``seed``.

        Args:
            seed: any integer; the same seed always yields the same spec.
            n_objects: exact object count, or an inclusive ``(min, max)`` range.

        Objects get random kinds, sizes (~0.12-0.45 units), orientations, saturated
        colours and (about half of them) a stripes/checker/rings texture. The first
        object is placed near the origin and the others around it, touching or
        overlapping it at varying heights (no ground plane); every primitive's bounding
        sphere lies within radius :data:`SCENE_RADIUS` of the origin.
        """
        rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5CE7E]))
        if isinstance(n_objects, int):
            n = n_objects
        else:
            lo, hi = int(n_objects[0]), int(n_objects[1])
            if lo < 1 or hi < lo:
                raise ValueError(f"invalid n_objects range {n_objects!r}")
            n = int(rng.integers(lo, hi + 1))
        if n < 1:
            raise ValueError("n_objects must be >= 1")
        kinds = list(PRIMITIVE_KINDS)
        hue0 = float(rng.random())
        prims: List[Primitive] = []
        for i in range(n):
            kind = kinds[int(rng.integers(len(kinds)))]
            s = float(rng.uniform(0.16, 0.42)) * (1.0 if i == 0 else 0.85)
            if kind == "sphere":
                size: Tuple[float, ...] = (s,)
            elif kind == "box":
                size = tuple(s * float(rng.uniform(0.55, 1.0)) for _ in range(3))
            elif kind == "rounded_box":
                hx, hy, hz = (s * float(rng.uniform(0.55, 1.0)) for _ in range(3))
                size = (hx, hy, hz, min(hx, hy, hz) * float(rng.uniform(0.15, 0.5)))
            elif kind == "torus":
                size = (s, s * float(rng.uniform(0.22, 0.45)))
            else:
                size = (s * float(rng.uniform(0.45, 0.8)), s * float(rng.uniform(0.6, 1.2)))
            size = tuple(round(v, 4) for v in size)
            tmp = Primitive(kind, size)
            br = tmp.bounding_radius()
            max_dist = max(0.0, SCENE_RADIUS - br - 1e-3)
            if i == 0:
                dist = min(max_dist, float(rng.uniform(0.0, 0.15)))
            else:
                # cluster around the centre: roughly touching the central object
                dist = min(max_dist, float(rng.uniform(0.35, 0.95)))
            v = rng.normal(size=3)
            v[2] *= 0.6  # flatter distribution in height
            v /= max(float(np.linalg.norm(v)), 1e-9)
            pos = tuple(round(float(c) * dist, 4) for c in v)
            rot = tuple(round(float(a), 2) for a in rng.uniform(-180.0, 180.0, size=3))
            hue = (hue0 + i / n + float(rng.uniform(-0.06, 0.06))) % 1.0
            color = _hsv_to_rgb(hue, float(rng.uniform(0.55, 0.9)), float(rng.uniform(0.65, 0.95)))
            tex = None
            if rng.random() < 0.55:
                tkind = TEXTURE_KINDS[int(rng.integers(len(TEXTURE_KINDS)))]
                tcol = _hsv_to_rgb((hue + float(rng.uniform(0.3, 0.7))) % 1.0, float(rng.uniform(0.0, 0.6)), 0.95)
                tex = Texture(tkind, tcol, scale=round(float(rng.uniform(4.0, 12.0)), 3), axis=int(rng.integers(3)))
            prims.append(Primitive(kind, size, pos, rot, color, tex))
        el = math.radians(float(rng.uniform(35.0, 75.0)))
        az = float(rng.uniform(0.0, 2.0 * math.pi))
        light = (math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el))
        light = tuple(round(c, 5) for c in light)
        spec = cls(primitives=prims, light_dir=light, ambient=round(float(rng.uniform(0.22, 0.35)), 4),
                   name=f"random-{int(seed)}")
        spec.validate()
        return spec


# --------------------------------------------------------------------------------------
# SDF evaluation (torch)
# --------------------------------------------------------------------------------------


class _CompiledScene:
    """Torch tensors for a :class:`SceneSpec` (float32, CPU)."""

    def __init__(self, spec: SceneSpec, dtype: torch.dtype = torch.float32):
        spec.validate()
        self.spec = spec
        self.dtype = dtype
        self.kinds = [p.kind for p in spec.primitives]
        self.centers = [torch.tensor(p.position, dtype=dtype) for p in spec.primitives]
        # rows of x_local = (x - c) @ R  where R = local-to-world rotation
        self.rots = [torch.tensor(p.rotation_matrix(), dtype=dtype) for p in spec.primitives]
        self.sizes = [torch.tensor(p.size, dtype=dtype) for p in spec.primitives]
        self.colors = [torch.tensor(p.color, dtype=dtype) for p in spec.primitives]
        self.textures = [p.texture for p in spec.primitives]
        l = torch.tensor(spec.light_dir, dtype=dtype)
        self.light = l / l.norm()
        self.ambient = float(spec.ambient)
        self.radius = spec.bounding_radius()

    def local(self, k: int, x: torch.Tensor) -> torch.Tensor:
        d = x - self.centers[k]
        R = self.rots[k]  # explicit 3x3 product: avoids BLAS so results are bit-stable
        return d[:, 0:1] * R[0] + d[:, 1:2] * R[1] + d[:, 2:3] * R[2]

    def sdf_k(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """Signed distance of primitive ``k`` at world points ``x`` ``[M, 3]`` -> ``[M]``."""
        p = self.local(k, x)
        kind, s = self.kinds[k], self.sizes[k]
        if kind == "sphere":
            return p.norm(dim=-1) - s[0]
        if kind in ("box", "rounded_box"):
            r = s[3] if kind == "rounded_box" else None
            b = s[:3] - r if r is not None else s
            q = p.abs() - b
            d = q.clamp_min(0.0).norm(dim=-1) + q.amax(dim=-1).clamp_max(0.0)
            return d - r if r is not None else d
        if kind == "torus":
            qx = p[:, :2].norm(dim=-1) - s[0]
            return torch.sqrt(qx * qx + p[:, 2] * p[:, 2]) - s[1]
        # capped cylinder along local z
        dx = p[:, :2].norm(dim=-1) - s[0]
        dz = p[:, 2].abs() - s[1]
        outside = torch.sqrt(dx.clamp_min(0.0) ** 2 + dz.clamp_min(0.0) ** 2)
        return outside + torch.maximum(dx, dz).clamp_max(0.0)

    def sdf(self, x: torch.Tensor) -> torch.Tensor:
        """Union SDF ``min_k sdf_k`` at ``x`` ``[M, 3]`` -> ``[M]``."""
        d = self.sdf_k(0, x)
        for k in range(1, len(self.kinds)):
            d = torch.minimum(d, self.sdf_k(k, x))
        return d

    def object_id(self, x: torch.Tensor) -> torch.Tensor:
        """Index of the closest primitive at each point ``[M, 3]`` -> ``[M]`` (int64)."""
        return torch.stack([self.sdf_k(k, x) for k in range(len(self.kinds))], dim=-1).argmin(dim=-1)

    def normal(self, x: torch.Tensor, h: float = 5e-4) -> torch.Tensor:
        """Unit outward normals from a tetrahedral finite difference of the union SDF."""
        ks = torch.tensor([[1, -1, -1], [-1, -1, 1], [-1, 1, -1], [1, 1, 1]], dtype=x.dtype)
        n = torch.zeros_like(x)
        for kv in ks:
            n = n + kv * self.sdf(x + h * kv).unsqueeze(-1)
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def albedo(self, k: int, x: torch.Tensor) -> torch.Tensor:
        """RGB albedo of primitive ``k`` at world points ``x`` ``[M, 3]`` -> ``[M, 3]``."""
        base = self.colors[k].expand(x.shape[0], 3)
        tex = self.textures[k]
        if tex is None:
            return base
        p = self.local(k, x) * tex.scale + 0.1234  # offset keeps faces off cell boundaries
        if tex.kind == "stripes":
            sel = torch.floor(p[:, tex.axis])
        elif tex.kind == "checker":
            sel = torch.floor(p).sum(dim=-1)
        else:  # rings
            sel = torch.floor((p - 0.1234).norm(dim=-1))
        odd = torch.remainder(sel, 2.0) >= 1.0
        second = torch.tensor(tex.color, dtype=x.dtype).expand(x.shape[0], 3)
        return torch.where(odd.unsqueeze(-1), second, base)

    def shade(self, x: torch.Tensor) -> torch.Tensor:
        """Lambertian + hemispheric ambient colour at surface points ``[M, 3]`` -> ``[M, 3]`` in [0, 1]."""
        n = self.normal(x)
        ids = self.object_id(x)
        alb = torch.empty_like(x)
        for k in range(len(self.kinds)):
            m = ids == k
            if bool(m.any()):
                alb[m] = self.albedo(k, x[m])
        lam = (n * self.light).sum(dim=-1).clamp_min(0.0)
        hemi = 0.8 + 0.2 * n[:, 2]
        light = self.ambient * hemi + (1.0 - self.ambient) * lam
        return (alb * light.unsqueeze(-1)).clamp(0.0, 1.0)


def _sphere_trace(
    scene: _CompiledScene,
    origins: torch.Tensor,
    dirs: torch.Tensor,
    max_steps: int = 96,
    eps: float = 1e-3,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Sphere-trace rays against the union SDF.

    Args:
        origins, dirs: ``[M, 3]`` ray origins and *unit* directions (world).
    Returns:
        ``(hit [M] bool, t [M] float)``: whether the ray hit a surface and the distance to it.
    """
    m = origins.shape[0]
    # clip rays to the scene's bounding sphere (plus margin)
    R = scene.radius + 0.05
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - R * R
    disc = b * b - c
    sq = disc.clamp_min(0.0).sqrt()
    t = (-b - sq).clamp_min(0.0)
    t_far = -b + sq
    hit = torch.zeros(m, dtype=torch.bool)
    idx = torch.nonzero((disc > 0) & (t_far > 0)).squeeze(-1)
    for _ in range(max_steps):
        if idx.numel() == 0:
            break
        ti = t[idx]
        d = scene.sdf(origins[idx] + dirs[idx] * ti.unsqueeze(-1))
        ti = ti + d
        t[idx] = ti
        done = d < eps
        hit[idx[done]] = True
        idx = idx[~done & (ti < t_far[idx])]
    if idx.numel() > 0:  # out of steps: accept rays that ended very close to a surface
        d = scene.sdf(origins[idx] + dirs[idx] * t[idx].unsqueeze(-1))
        hit[idx[d < 10 * eps]] = True
    return hit, t


# --------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------


def look_at_c2w(eye: Sequence[float], target: Sequence[float] = (0.0, 0.0, 0.0),
                up: Sequence[float] = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """Blender/OpenGL camera-to-world ``[4, 4]`` (float32) for a camera at ``eye`` looking at ``target``.

    The camera's local -z points at ``target``, local +y is as close to ``up`` as possible.
    """
    eye_ = np.asarray(eye, dtype=np.float64)
    z = eye_ - np.asarray(target, dtype=np.float64)
    z /= np.linalg.norm(z)
    x = np.cross(np.asarray(up, dtype=np.float64), z)
    if np.linalg.norm(x) < 1e-8:  # looking straight along `up`
        x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = x, y, z, eye_
    return torch.from_numpy(m).float()


def camera_poses(
    n: int,
    radius: float = 4.0,
    seed: int = 0,
    elevation_range_deg: Tuple[float, float] = (10.0, 70.0),
) -> torch.Tensor:
    """Camera-to-world poses on the upper hemisphere, all looking at the origin.

    Cameras sit on a sphere of ``radius`` scene units (world +z up). Azimuths follow a
    golden-angle spiral with a seed-dependent random start; elevations are stratified
    (equal-area in ``sin(elevation)``) across ``elevation_range_deg`` with seeded jitter
    and a seeded shuffle, so any ``n`` views cover the band evenly and different seeds
    give different (distinct) poses -- use different seeds for train/val/test.

    Args:
        n: number of poses.
        radius: distance from the origin (scene units). Must exceed the scene radius.
        seed: integer seed; output is a deterministic function of all arguments.
        elevation_range_deg: ``(min, max)`` elevation above the xy-plane, degrees, in ``[-90, 90]``.

    Returns:
        ``torch.float32 [n, 4, 4]`` camera-to-world matrices, Blender/OpenGL convention
        (camera looks down its local -z, +y up), last row ``[0, 0, 0, 1]``.
    """
    if n < 0:
        raise ValueError("n must be >= 0")
    lo, hi = float(elevation_range_deg[0]), float(elevation_range_deg[1])
    if not (-90.0 <= lo <= hi <= 90.0):
        raise ValueError(f"invalid elevation_range_deg {elevation_range_deg!r}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xCA3E7A]))
    az0 = float(rng.uniform(0.0, 2.0 * math.pi))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    s_lo, s_hi = math.sin(math.radians(lo)), math.sin(math.radians(hi))
    u = (np.arange(n) + rng.uniform(0.0, 1.0, size=n)) / max(n, 1)
    u = u[rng.permutation(n)]
    poses = []
    for i in range(n):
        az = az0 + i * golden
        el = math.asin(s_lo + (s_hi - s_lo) * float(u[i]))
        eye = (radius * math.cos(el) * math.cos(az), radius * math.cos(el) * math.sin(az), radius * math.sin(el))
        poses.append(look_at_c2w(eye))
    if not poses:
        return torch.zeros(0, 4, 4)
    return torch.stack(poses)


def _focal(width: int, camera_angle_x: float) -> float:
    return 0.5 * width / math.tan(0.5 * camera_angle_x)


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------


def render_views(
    spec: SceneSpec,
    c2w: torch.Tensor,
    resolution: int,
    camera_angle_x: float,
    supersample: int = 2,
    progress: bool = True,
    *,
    max_steps: int = 96,
    chunk_rays: int = 1 << 18,
    num_threads: Optional[int] = 1,
    desc: str = "render",
) -> np.ndarray:
    """Render RGBA images of ``spec`` by sphere tracing the union SDF (pure torch, CPU).

    Args:
        spec: the scene.
        c2w: ``[N, 4, 4]`` (or ``[N, 3, 4]``) camera-to-world, Blender/OpenGL convention
            (camera looks down local -z, local +y is image-up), world units.
        resolution: image width = height in pixels.
        camera_angle_x: full horizontal field of view in radians;
            ``focal = 0.5 * resolution / tan(0.5 * camera_angle_x)`` pixels, principal
            point at the image centre.
        supersample: ``S``; each pixel is the box-filtered mean of an ``S x S`` grid of
            sub-pixel rays (anti-aliased edges and textures).
        progress: show a tqdm progress bar (per view).
        max_steps: sphere-tracing step bound per ray (rays exit early on hit/escape).
        chunk_rays: approximate number of rays traced together (whole views are batched).
        num_threads: torch intra-op threads while rendering (the previous setting is
            restored afterwards); ``None`` leaves torch's setting alone. The default of 1
            is fastest in practice: per-step tensors are small and multi-threaded torch
            slows down badly on busy/shared CPUs. Output bytes do not depend on it.
        desc: progress-bar label.

    Returns:
        ``np.uint8 [N, H, W, 4]`` RGBA, row 0 = top of the image. Alpha is the fraction of
        sub-pixel rays that hit a surface (0 = background, 255 = fully covered); RGB is the
        mean colour of the hitting sub-rays (straight alpha), 0 where alpha is 0.
    """
    if resolution < 1 or supersample < 1:
        raise ValueError("resolution and supersample must be >= 1")
    c2w = torch.as_tensor(c2w, dtype=torch.float32)
    if c2w.ndim != 3 or c2w.shape[1:] not in ((4, 4), (3, 4)):
        raise ValueError(f"c2w must be [N, 4, 4] or [N, 3, 4], got {tuple(c2w.shape)}")
    scene = _CompiledScene(spec)
    n_views = c2w.shape[0]
    H = W = int(resolution)
    S = int(supersample)
    f = _focal(W, camera_angle_x)
    # sub-pixel sample positions in pixel units (row-major over the H*S x W*S grid)
    sub = (torch.arange(S, dtype=torch.float64) + 0.5) / S
    xs = (torch.arange(W, dtype=torch.float64)[:, None] + sub[None, :]).reshape(-1)
    ys = (torch.arange(H, dtype=torch.float64)[:, None] + sub[None, :]).reshape(-1)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    d_cam = torch.stack([(gx - 0.5 * W) / f, -(gy - 0.5 * H) / f, -torch.ones_like(gx)], dim=-1)
    d_cam = (d_cam / d_cam.norm(dim=-1, keepdim=True)).reshape(-1, 3).float()  # [HS*WS, 3]
    rays_per_view = d_cam.shape[0]
    views_per_chunk = max(1, chunk_rays // rays_per_view)

    out = np.zeros((n_views, H, W, 4), dtype=np.uint8)
    bar = None
    if progress and _tqdm is not None and n_views > 0:
        bar = _tqdm(total=n_views, desc=desc, unit="view", leave=False)
    prev_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(int(num_threads))
    try:
        with torch.no_grad():
            for v0 in range(0, n_views, views_per_chunk):
                cams = c2w[v0 : v0 + views_per_chunk]
                nv = cams.shape[0]
                rot = cams[:, :3, :3]
                # elementwise rotate (no BLAS, so bit-identical for any thread count)
                dirs = (rot[:, None, :, :] * d_cam[None, :, None, :]).sum(-1).reshape(-1, 3)
                origins = cams[:, :3, 3][:, None, :].expand(nv, rays_per_view, 3).reshape(-1, 3)
                hit, t = _sphere_trace(scene, origins, dirs, max_steps=max_steps)
                rgb = torch.zeros(dirs.shape[0], 3)
                hidx = torch.nonzero(hit).squeeze(-1)
                if hidx.numel() > 0:
                    pts = origins[hidx] + dirs[hidx] * t[hidx].unsqueeze(-1)
                    rgb[hidx] = scene.shade(pts)
                cov = hit.float().reshape(nv, H, S, W, S).mean(dim=(2, 4))
                prem = rgb.reshape(nv, H, S, W, S, 3).mean(dim=(2, 4))
                col = torch.where(cov.unsqueeze(-1) > 0, prem / cov.clamp_min(1e-8).unsqueeze(-1), torch.zeros_like(prem))
                rgba = torch.cat([col.clamp(0, 1), cov.unsqueeze(-1)], dim=-1)
                img = torch.round(rgba * 255.0).to(torch.uint8).numpy()
                img[..., :3][img[..., 3] == 0] = 0
                out[v0 : v0 + nv] = img
                if bar is not None:
                    bar.update(nv)
    finally:
        if num_threads is not None:
            torch.set_num_threads(prev_threads)
        if bar is not None:
            bar.close()
    return out


# --------------------------------------------------------------------------------------
# Dataset writing
# --------------------------------------------------------------------------------------

_SPLITS = ("train", "val", "test")


def _split_seed(seed: int, split_index: int) -> int:
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x5B117, split_index]).generate_state(1)[0])


def _is_nonempty_dir(p: Path) -> bool:
    return p.is_dir() and any(p.iterdir())


def write_atomically(out: Path, overwrite: bool, build: Callable[[Path], None]) -> None:
    """Run ``build(tmp)`` on a hidden temporary sibling of ``out`` and rename it into place only when complete, so a
    failure never leaves a partial dataset behind (the temporary directory is removed on any error).

    Raises:
        FileExistsError: ``out`` is a file, or a non-empty directory and ``overwrite`` is False (checked before and
            after building).
    """
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if _is_nonempty_dir(out) and not overwrite:
        raise FileExistsError(f"refusing to write scene into non-empty directory {out}; pass overwrite=True to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()  # (unlike tempfile.mkdtemp this honours the umask, so the final dir is not 0700)
    try:
        build(tmp)
        if out.exists():
            if _is_nonempty_dir(out) and not overwrite:  # appeared while we were rendering
                raise FileExistsError(f"{out} became non-empty during generation; not overwriting")
            trash = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
            out.rename(trash)
            try:
                tmp.rename(out)
            except BaseException:
                trash.rename(out)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def generate_blender_scene(
    out_dir: Union[str, os.PathLike],
    spec: Optional[SceneSpec] = None,
    resolution: int = 100,
    n_train: int = 40,
    n_val: int = 5,
    n_test: int = 10,
    seed: int = 0,
    camera_angle_x: float = 0.6911,
    overwrite: bool = False,
    progress: bool = True,
    *,
    supersample: int = 2,
    camera_radius: float = 4.0,
    elevation_range_deg: Tuple[float, float] = (10.0, 70.0),
) -> Path:
    """Render ``spec`` and write it as a NeRF-Synthetic/Blender dataset at ``out_dir``.

    Writes ``transforms_{train,val,test}.json`` (``camera_angle_x`` in radians and
    ``frames[{"file_path": "./<split>/r_<i>", "rotation": 0.0, "transform_matrix": 4x4
    camera-to-world}]``), RGBA PNGs at ``<split>/r_<i>.png`` (``resolution`` x
    ``resolution``), and ``scene.json`` (generator name/version, spec, seed and
    settings). Loadable with nerfstudio's
    ``BlenderDataParserConfig(data=out_dir)`` / ``ns-train ... blender-data``.

    Camera poses come from :func:`camera_poses` with a distinct seed per split derived
    from ``seed``, so train/val/test views never coincide. Output bytes are a
    deterministic function of the arguments.

    Args:
        out_dir: target directory. Must not exist or be empty, unless ``overwrite``.
        spec: scene to render; ``None`` means :meth:`SceneSpec.demo`.
        resolution: image side in pixels.
        n_train, n_val, n_test: views per split (each >= 1, nerfstudio needs an image per split).
        seed: camera seed.
        camera_angle_x: horizontal field of view in radians (NeRF-Synthetic uses 0.6911).
        overwrite: replace an existing non-empty ``out_dir``.
        progress: show progress bars.
        supersample: anti-aliasing factor per axis (see :func:`render_views`).
        camera_radius: camera distance from the origin in scene units.
        elevation_range_deg: camera elevation band in degrees.

    Returns:
        ``out_dir`` as a resolved :class:`pathlib.Path`.

    Raises:
        FileExistsError: ``out_dir`` is a non-empty directory (or a file) and ``overwrite`` is False.

    The dataset is built in a hidden temporary sibling directory and renamed into place
    only when complete, so a failure never leaves a partial scene behind.
    """
    out = Path(out_dir).expanduser().resolve()
    spec = SceneSpec.demo() if spec is None else spec
    spec.validate()
    counts = {"train": int(n_train), "val": int(n_val), "test": int(n_test)}
    if any(c < 1 for c in counts.values()):
        raise ValueError(f"every split needs at least one view, got {counts}")
    if camera_radius <= spec.bounding_radius() + 0.1:
        raise ValueError(f"camera_radius {camera_radius} is inside/too close to the scene (radius {spec.bounding_radius():.3f})")

    def build(tmp: Path) -> None:
        for si, split in enumerate(_SPLITS):
            poses = camera_poses(counts[split], radius=camera_radius, seed=_split_seed(seed, si),
                                 elevation_range_deg=elevation_range_deg)
            images = render_views(spec, poses, resolution, camera_angle_x, supersample=supersample,
                                  progress=progress, desc=f"{out.name}/{split}")
            (tmp / split).mkdir()
            frames = []
            for i in range(counts[split]):
                Image.fromarray(images[i], mode="RGBA").save(tmp / split / f"r_{i}.png", format="PNG", compress_level=6)
                frames.append({
                    "file_path": f"./{split}/r_{i}",
                    "rotation": 0.0,
                    "transform_matrix": [[float(v) for v in row] for row in poses[i].tolist()],
                })
            meta = {"camera_angle_x": float(camera_angle_x), "frames": frames}
            (tmp / f"transforms_{split}.json").write_text(json.dumps(meta, indent=4) + "\n")
        info = {
            "generator": GENERATOR_NAME,
            "version": GENERATOR_VERSION,
            "seed": int(seed),
            "resolution": int(resolution),
            "supersample": int(supersample),
            "camera_angle_x": float(camera_angle_x),
            "camera_radius": float(camera_radius),
            "elevation_range_deg": [float(elevation_range_deg[0]), float(elevation_range_deg[1])],
            "splits": counts,
            "world_up": [0.0, 0.0, 1.0],
            "spec": spec.to_dict(),
        }
        (tmp / "scene.json").write_text(json.dumps(info, indent=2) + "\n")

    write_atomically(out, overwrite, build)
    return out


def generate_corpus(
    out_dir: Union[str, os.PathLike],
    n_scenes: int,
    seed: int = 0,
    **kw: Any,
) -> List[Path]:
    """Write ``n_scenes`` random Blender-layout scenes under ``out_dir/scene_XXXX``.

    Scene ``i`` uses ``SceneSpec.random(s_i)`` and camera seed ``s_i`` where ``s_i`` is
    derived deterministically from ``(seed, i)``; the per-scene seeds are stored in each
    ``scene.json`` and in ``out_dir/corpus.json``.

    Args:
        out_dir: parent directory (created if missing).
        n_scenes: number of scenes.
        seed: corpus seed.
        **kw: forwarded to :func:`generate_blender_scene` (e.g. ``resolution``,
            ``n_train``, ``overwrite``, ``progress``); ``n_objects`` is forwarded to
            :meth:`SceneSpec.random` instead.

    Returns:
        The scene directories, in order.
    """
    root = Path(out_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    n_objects = kw.pop("n_objects", (3, 6))
    if "spec" in kw or "seed" in kw:
        raise TypeError("generate_corpus chooses spec and seed per scene; do not pass them")
    paths: List[Path] = []
    entries = []
    for i in range(int(n_scenes)):
        s_i = int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC0435, i]).generate_state(1)[0]) & 0x7FFFFFFF
        spec = SceneSpec.random(s_i, n_objects=n_objects)
        p = generate_blender_scene(root / f"scene_{i:04d}", spec=spec, seed=s_i, **kw)
        paths.append(p)
        entries.append({"dir": p.name, "seed": s_i, "n_objects": len(spec.primitives)})
    index = {"generator": GENERATOR_NAME, "version": GENERATOR_VERSION, "seed": int(seed), "scenes": entries}
    (root / "corpus.json").write_text(json.dumps(index, indent=2) + "\n")
    return paths


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``python -m nscodec.scenes.procedural OUT [--random SEED] [--corpus N] ...``"""
    ap = argparse.ArgumentParser(description="Write a procedural NeRF-Synthetic (Blender) scene.")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--random", type=int, default=None, metavar="SPEC_SEED",
                    help="use SceneSpec.random(SPEC_SEED) instead of the demo scene")
    ap.add_argument("--corpus", type=int, default=None, metavar="N", help="write N random scenes instead")
    ap.add_argument("--resolution", type=int, default=100)
    ap.add_argument("--n-train", type=int, default=40)
    ap.add_argument("--n-val", type=int, default=5)
    ap.add_argument("--n-test", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--supersample", type=int, default=2)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    kw = dict(resolution=a.resolution, n_train=a.n_train, n_val=a.n_val, n_test=a.n_test,
              overwrite=a.overwrite, progress=not a.no_progress, supersample=a.supersample)
    if a.corpus is not None:
        for p in generate_corpus(a.out_dir, a.corpus, a.seed, **kw):
            print(p)
    else:
        spec = SceneSpec.random(a.random) if a.random is not None else SceneSpec.demo()
        print(generate_blender_scene(a.out_dir, spec=spec, seed=a.seed, **kw))


if __name__ == "__main__":  # pragma: no cover
    main()
