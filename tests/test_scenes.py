"""Tests for nscodec.scenes (procedural NeRF-Synthetic/Blender scene generator)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

try:
    import nscodec.scenes  # noqa: F401
except ImportError:  # running plain `pytest` without the repo root on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nscodec.scenes import procedural
from nscodec.scenes import (
    Primitive,
    SceneSpec,
    Texture,
    camera_poses,
    generate_blender_scene,
    generate_corpus,
    render_views,
)

CAMERA_ANGLE_X = 0.6911


def _load_split(path: Path, split: str):
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    return BlenderDataParserConfig(data=path).setup().get_dataparser_outputs(split)


def _read_rgba(p: Path) -> np.ndarray:
    im = Image.open(p)
    assert im.mode == "RGBA"
    return np.array(im)


# ------------------------------------------------------------------------------------
# Scene loads with nerfstudio's stock blender dataparser
# ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_scene(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "scene"
    return generate_blender_scene(out, resolution=32, n_train=4, n_val=2, n_test=3, seed=0, progress=False)


def test_layout_and_nerfstudio_load(demo_scene: Path):
    counts = {"train": 4, "val": 2, "test": 3}
    for split, n in counts.items():
        meta = json.loads((demo_scene / f"transforms_{split}.json").read_text())
        assert meta["camera_angle_x"] == pytest.approx(CAMERA_ANGLE_X)
        assert [f["file_path"] for f in meta["frames"]] == [f"./{split}/r_{i}" for i in range(n)]
        for fr in meta["frames"]:
            m = np.array(fr["transform_matrix"])
            assert m.shape == (4, 4)
            np.testing.assert_allclose(m[3], [0, 0, 0, 1])
            np.testing.assert_allclose(m[:3, :3] @ m[:3, :3].T, np.eye(3), atol=1e-5)

        out = _load_split(demo_scene, split)
        assert len(out.image_filenames) == n
        assert out.cameras.camera_to_worlds.shape == (n, 3, 4)
        assert int(out.cameras.width[0]) == 32 and int(out.cameras.height[0]) == 32
        assert float(out.cameras.fx[0]) == pytest.approx(0.5 * 32 / math.tan(0.5 * CAMERA_ANGLE_X), rel=1e-5)
        # scene inside the Blender box
        assert torch.allclose(out.scene_box.aabb.abs(), torch.full((2, 3), 1.5))
        for fn in out.image_filenames:
            img = _read_rgba(fn)
            assert img.shape == (32, 32, 4) and img.dtype == np.uint8
            a = img[..., 3]
            assert (a == 0).any(), "background must be transparent"
            assert (a == 255).any(), "object must be visible"
            assert (img[..., :3][a == 0] == 0).all(), "RGB must be 0 where alpha is 0"

    info = json.loads((demo_scene / "scene.json").read_text())
    assert info["version"] == procedural.GENERATOR_VERSION
    assert SceneSpec.from_dict(info["spec"]).to_dict() == SceneSpec.demo().to_dict()


def test_split_poses_distinct_and_on_hemisphere(demo_scene: Path):
    poses = {}
    for split in ("train", "val", "test"):
        meta = json.loads((demo_scene / f"transforms_{split}.json").read_text())
        poses[split] = np.array([f["transform_matrix"] for f in meta["frames"]])
    allp = np.concatenate(list(poses.values()))
    centres = allp[:, :3, 3]
    np.testing.assert_allclose(np.linalg.norm(centres, axis=-1), 4.0, rtol=1e-5)
    assert (centres[:, 2] > 0).all(), "cameras must be on the upper (+z) hemisphere"
    # every camera's -z axis points at the origin
    fwd = -allp[:, :3, 2]
    np.testing.assert_allclose(fwd, -centres / 4.0, atol=1e-5)
    # no two views share a pose
    d = np.linalg.norm(centres[:, None] - centres[None], axis=-1) + np.eye(len(centres)) * 10
    assert d.min() > 1e-3


# ------------------------------------------------------------------------------------
# Geometric consistency of the camera convention
# ------------------------------------------------------------------------------------


def _project(c2w: np.ndarray, fx: float, cx: float, cy: float, X: np.ndarray):
    """Blender/OpenGL pinhole projection -> (u, v) pixel coordinates (col, row), depth."""
    R, t = c2w[:3, :3], c2w[:3, 3]
    xc = R.T @ (X - t)
    depth = -xc[2]
    return fx * xc[0] / depth + cx, -fx * xc[1] / depth + cy, depth


def test_projection_matches_rendering(tmp_path: Path):
    marker = np.array([0.85, 0.3, 0.35])
    spec = SceneSpec(
        primitives=[
            Primitive("sphere", (0.3,), (0.0, 0.0, 0.0), color=(0.9, 0.2, 0.2)),
            Primitive("sphere", (0.18,), tuple(marker), color=(0.2, 0.9, 0.2)),
        ],
        name="convention-test",
    )
    res = 48
    path = generate_blender_scene(tmp_path / "conv", spec=spec, resolution=res, n_train=10, n_val=1, n_test=1,
                                  seed=3, progress=False)
    out = _load_split(path, "train")
    cams = out.cameras
    fx, cx, cy = float(cams.fx[0]), float(cams.cx[0]), float(cams.cy[0])
    assert fx == pytest.approx(0.5 * res / math.tan(0.5 * CAMERA_ANGLE_X), rel=1e-5)
    r_origin_px = 0.3 / 4.0 * fx
    r_marker_px = 0.18 / 3.0 * fx  # generous: marker is at least ~3 units from the camera
    checked_x = checked_y = 0
    for i, fn in enumerate(out.image_filenames):
        c2w = cams.camera_to_worlds[i].double().numpy()
        a = _read_rgba(fn)[..., 3]

        # scene centre projects to the image centre and is covered by the central sphere
        u0, v0, z0 = _project(c2w, fx, cx, cy, np.zeros(3))
        assert z0 > 0 and abs(u0 - res / 2) < 0.5 and abs(v0 - res / 2) < 0.5
        assert a[int(v0), int(u0)] == 255

        # the off-centre marker lands where the projection says
        um, vm, zm = _project(c2w, fx, cx, cy, marker)
        assert zm > 0 and 0 <= um < res and 0 <= vm < res
        assert a[int(vm), int(um)] >= 250, f"view {i}: marker not at its projected pixel"

        # nerfstudio's own ray for that pixel passes through the marker centre
        ray = cams.generate_rays(camera_indices=i, coords=torch.tensor([[vm, um]], dtype=torch.float32))
        o, d = ray.origins[0].double().numpy(), ray.directions[0].double().numpy()
        dist = np.linalg.norm(np.cross(marker - o, d)) / np.linalg.norm(d)
        assert dist < 1e-3

        # mirrored locations (what a flipped x or y axis would give) must be empty,
        # whenever they are clear of both projected spheres
        def clear(u, v):
            return (math.hypot(u - u0, v - v0) > r_origin_px + 3 and math.hypot(u - um, v - vm) > r_marker_px + 3
                    and 0 <= u < res and 0 <= v < res)

        if clear(res - um, vm):
            assert a[int(vm), int(res - um)] == 0, f"view {i}: x-mirrored marker position is opaque"
            checked_x += 1
        if clear(um, res - vm):
            assert a[int(res - vm), int(um)] == 0, f"view {i}: y-mirrored marker position is opaque"
            checked_y += 1
    assert checked_x >= 2 and checked_y >= 2


def test_camera_poses_convention():
    poses = camera_poses(16, radius=4.0, seed=7, elevation_range_deg=(10, 70))
    assert poses.shape == (16, 4, 4) and poses.dtype == torch.float32
    c = poses[:, :3, 3]
    el = torch.rad2deg(torch.asin(c[:, 2] / c.norm(dim=-1)))
    assert (el >= 10 - 1e-3).all() and (el <= 70 + 1e-3).all()
    # camera +y (image up) has a positive world-z component (no upside-down views)
    assert (poses[:, 2, 1] > 0).all()
    assert not torch.allclose(poses, camera_poses(16, seed=8))
    assert torch.equal(poses, camera_poses(16, radius=4.0, seed=7))


def test_render_views_shapes_and_coverage():
    spec = SceneSpec(primitives=[Primitive("box", (0.4, 0.4, 0.4), texture=Texture("checker", scale=4.0))])
    c2w = camera_poses(2, seed=1)
    img = render_views(spec, c2w, 20, CAMERA_ANGLE_X, supersample=3, progress=False)
    assert img.shape == (2, 20, 20, 4) and img.dtype == np.uint8
    a = img[..., 3]
    assert (a == 0).any() and (a == 255).any()
    # anti-aliased edges: some partially covered pixels
    assert ((a > 0) & (a < 255)).any()
    assert (img[..., :3][a == 0] == 0).all()


# ------------------------------------------------------------------------------------
# Determinism
# ------------------------------------------------------------------------------------


def _tree_bytes(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_determinism(tmp_path: Path):
    kw = dict(resolution=24, n_train=2, n_val=1, n_test=1, seed=5, progress=False)
    a = generate_blender_scene(tmp_path / "a", spec=SceneSpec.random(11), **kw)
    b = generate_blender_scene(tmp_path / "b", spec=SceneSpec.random(11), **kw)
    ta, tb = _tree_bytes(a), _tree_bytes(b)
    assert len([k for k in ta if k.endswith(".png")]) == 4
    assert ta == tb

    assert SceneSpec.random(11).to_dict() == SceneSpec.random(11).to_dict()
    assert SceneSpec.random(11).to_dict() != SceneSpec.random(12).to_dict()
    c = generate_blender_scene(tmp_path / "c", spec=SceneSpec.random(12), **kw)
    assert _tree_bytes(c)["train/r_0.png"] != ta["train/r_0.png"]


def test_random_specs_fit_and_vary():
    kinds = set()
    for s in range(20):
        spec = SceneSpec.random(s)
        assert 3 <= len(spec.primitives) <= 6
        assert spec.bounding_radius() <= procedural.SCENE_RADIUS + 1e-6
        spec.validate()
        kinds |= {p.kind for p in spec.primitives}
        assert SceneSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).to_dict() == spec.to_dict()
    assert kinds == set(procedural.PRIMITIVE_KINDS)
    assert len(SceneSpec.random(0, n_objects=2).primitives) == 2


def test_corpus(tmp_path: Path):
    paths = generate_corpus(tmp_path / "corpus", 2, seed=1, resolution=16, n_train=1, n_val=1, n_test=1,
                            progress=False)
    assert [p.name for p in paths] == ["scene_0000", "scene_0001"]
    specs = [json.loads((p / "scene.json").read_text())["spec"] for p in paths]
    assert specs[0] != specs[1]
    for p in paths:
        assert (p / "train" / "r_0.png").is_file() and (p / "transforms_test.json").is_file()
    assert (tmp_path / "corpus" / "corpus.json").is_file()


# ------------------------------------------------------------------------------------
# Overwrite protection / atomicity
# ------------------------------------------------------------------------------------

_TINY = dict(resolution=12, n_train=1, n_val=1, n_test=1, progress=False)


def test_overwrite_refusal(tmp_path: Path):
    out = tmp_path / "scene"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite"):
        generate_blender_scene(out, **_TINY)
    assert (out / "keep.txt").read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]

    generate_blender_scene(out, overwrite=True, **_TINY)
    assert not (out / "keep.txt").exists()
    assert (out / "transforms_train.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]

    # an existing *empty* directory is fine without overwrite
    empty = tmp_path / "empty"
    empty.mkdir()
    generate_blender_scene(empty, **_TINY)
    assert (empty / "scene.json").is_file()


def test_no_partial_directory_on_failure(tmp_path: Path, monkeypatch):
    real = procedural.render_views
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # fail while rendering the second split
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(procedural, "render_views", flaky)
    out = tmp_path / "scene"
    with pytest.raises(RuntimeError, match="boom"):
        generate_blender_scene(out, **_TINY)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [], "temporary build directory was left behind"

    # failure while overwriting keeps the previous scene intact
    monkeypatch.setattr(procedural, "render_views", real)
    generate_blender_scene(out, **_TINY)
    before = _tree_bytes(out)
    calls["n"] = 0
    monkeypatch.setattr(procedural, "render_views", flaky)
    with pytest.raises(RuntimeError, match="boom"):
        generate_blender_scene(out, overwrite=True, spec=SceneSpec.random(3), **_TINY)
    assert _tree_bytes(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene"]
