"""``llff-data`` against conventions we did not write: LLFF's ``imgs2poses`` file format, nerfstudio's own
``nerfstudio-data`` parser, a real LLFF capture (``../shared/data/llff/flower``), and the pixel a generated capture
draws a known point on.

The capture writers here follow the documented formats from COLMAP cameras (world-to-camera, OpenCV axes: x right,
y down, z forward), independently of :mod:`nscodec.llff` and :mod:`nscodec.scenes.captures`:

* LLFF (``imgs2poses.py`` → ``pose_utils.load_colmap_data`` / ``save_poses``): camera-to-world ``[R | c]`` with its
  rotation columns reordered from COLMAP's ``[r, -u, t]`` to ``[-u, r, -t]`` (down, right, back), an ``(H, W, f)``
  column, flattened row-major, then the 0.1 and 99.9 percentiles of the z-depths of the points a view sees;
* nerfstudio-data (``ns-process-data`` → ``colmap_utils.colmap_to_json``): camera-to-world with the y and z camera
  axes negated (OpenGL) and the world's axes permuted as nerfstudio does, ``fl_x, fl_y, cx, cy, w, h``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import shared_path

W, H, F = 40, 32, 36.0  # full-size images of the written captures: width, height, focal (pixels)


# ------------------------------------------------------------------------------------- independent writers
def colmap_cameras(kind: str, n: int, seed: int = 0):
    """World-to-camera ``(R [n, 3, 3], t [n, 3])`` in COLMAP's convention (x right, y down, z forward), in an
    arbitrary world frame (a random rotation, offset and scale, as a COLMAP reconstruction has): ``forward``, a
    hand-held patch all looking one way; ``360``, a ring around the origin looking at it."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    world = q * np.sign(np.linalg.det(q))  # a random proper rotation of the world frame
    offset, scale = rng.normal(size=3) * 3, 7.3
    rs, ts = [], []
    for i in range(n):
        if kind == "forward":
            eye = np.array([rng.uniform(-0.4, 0.4), -3.0, rng.uniform(-0.3, 0.3)])
            target = eye + np.array([0, 1.0, 0]) + rng.uniform(-0.05, 0.05, 3)
        else:
            az = 2 * math.pi * i / n
            eye = np.array([3 * math.cos(az), 3 * math.sin(az), rng.uniform(0.3, 1.0)])
            target = rng.uniform(-0.1, 0.1, 3)
        fwd = (target - eye) / np.linalg.norm(target - eye)
        right = np.cross(fwd, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        r_c2w = world @ np.stack([right, down, fwd], axis=1)  # camera axes in the COLMAP world frame
        c = scale * (world @ eye) + offset
        rs.append(r_c2w.T)
        ts.append(-r_c2w.T @ c)
    return np.stack(rs), np.stack(ts), (world, offset, scale)


def scene_points(kind: str, frame, n: int = 4000, seed: int = 1) -> np.ndarray:
    """``[n, 3]`` points of a scene in the COLMAP world frame ``frame`` (what a reconstruction's points3D holds)."""
    world, offset, scale = frame
    rng = np.random.default_rng(seed)
    if kind == "forward":
        pts = np.stack([rng.uniform(-2.5, 2.5, n), rng.uniform(-1.0, 6.0, n), rng.uniform(-2.0, 2.0, n)], axis=1)
    else:
        pts = rng.uniform(-1.0, 1.0, (n, 3))
    return scale * pts @ world.T + offset


def project(r, t, pts):
    """``(u, v, z, visible)`` of ``pts [M, 3]`` in every camera: pixel coordinates (COLMAP: the top-left pixel's
    centre is (0.5, 0.5)), z-depth, and whether the point lies in front of the camera inside the image."""
    cam = np.einsum("nij,mj->nmi", r, pts) + t[:, None, :]
    z = cam[..., 2]
    u, v = F * cam[..., 0] / z + W / 2, F * cam[..., 1] / z + H / 2
    return u, v, z, (z > 1e-6) & (u > 0) & (u < W) & (v > 0) & (v < H)


def write_images(folder: Path, n: int, w: int, h: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((h, w, 3), 10 * i, dtype=np.uint8)).save(folder / f"frame_{i + 1:05d}.png")


def write_llff(out: Path, r, t, pts, downscale: int = 4) -> np.ndarray:
    """LLFF's ``poses_bounds.npy`` as ``imgs2poses`` writes it (module docstring) + ``images/`` and ``images_<k>/``;
    returns the rows."""
    c2w = np.concatenate([np.transpose(r, (0, 2, 1)), (-np.transpose(r, (0, 2, 1)) @ t[..., None])], axis=2)  # [n,3,4]
    hwf = np.broadcast_to(np.array([H, W, F])[None, :, None], (len(r), 3, 1))
    poses = np.concatenate([c2w, hwf], axis=2)  # [n, 3, 5]: columns r, d, f (COLMAP), c, hwf
    poses = np.concatenate([poses[:, :, 1:2], poses[:, :, 0:1], -poses[:, :, 2:3], poses[:, :, 3:5]], axis=2)
    _, _, z, vis = project(r, t, pts)
    rows = []
    for i in range(len(r)):
        zs = z[i][vis[i]]
        rows.append(np.concatenate([poses[i].ravel(), [np.percentile(zs, 0.1), np.percentile(zs, 99.9)]]))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "poses_bounds.npy", np.array(rows))
    write_images(out / "images", len(r), W, H)
    write_images(out / f"images_{downscale}", len(r), W // downscale, H // downscale)
    return np.array(rows)


def write_nerfstudio(out: Path, r, t, downscale: int = 4) -> None:
    """nerfstudio-data as ``colmap_to_json`` writes it (module docstring) + ``images/`` and ``images_<k>/``."""
    frames = []
    for i in range(len(r)):
        c2w = np.eye(4)
        c2w[:3, :3], c2w[:3, 3] = r[i].T, -r[i].T @ t[i]
        c2w[0:3, 1:3] *= -1
        c2w = c2w[np.array([1, 0, 2, 3]), :]
        c2w[2, :] *= -1
        frames.append({"file_path": f"images/frame_{i + 1:05d}.png", "transform_matrix": c2w.tolist()})
    meta = {"camera_model": "OPENCV", "fl_x": F, "fl_y": F, "cx": W / 2, "cy": H / 2, "w": W, "h": H,
            "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0, "frames": frames}
    out.mkdir(parents=True, exist_ok=True)
    (out / "transforms.json").write_text(json.dumps(meta))
    write_images(out / "images", len(r), W, H)
    write_images(out / f"images_{downscale}", len(r), W // downscale, H // downscale)


def similarity(a: np.ndarray, b: np.ndarray):
    """``(s, R, t)`` with ``a ≈ s R b + t`` in the least-squares sense (Umeyama 1991), for ``a, b [N, 3]``."""
    ma, mb = a.mean(0), b.mean(0)
    cov = (a - ma).T @ (b - mb) / len(a)
    u, d, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    s = float(np.trace(np.diag(d) @ sign) / ((b - mb) ** 2).sum(1).mean())
    return s, rot, ma - s * rot @ mb


def pixel_rays(outputs):
    """``(origins, directions)`` ``[N·H·W, 3]`` (float64) of every pixel of every camera of dataparser outputs."""
    o, d = [], []
    for i in range(len(outputs.cameras)):
        bundle = outputs.cameras.generate_rays(camera_indices=i)
        o.append(bundle.origins.reshape(-1, 3))
        d.append(bundle.directions.reshape(-1, 3))
    return torch.cat(o).double().numpy(), torch.cat(d).double().numpy()


# ------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("kind", ["forward", "360"])
@pytest.mark.parametrize("downscale", [None, 4])
def test_llff_and_nerfstudio_data_of_one_capture_give_the_same_pixel_rays(kind, downscale, tmp_path):
    """One COLMAP reconstruction written as LLFF and as nerfstudio-data: ``llff-data`` and nerfstudio's own
    ``nerfstudio-data`` give every pixel the same ray, up to one similarity transform of the world."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from nscodec.llff import LLFFDataParserConfig

    r, t, frame = colmap_cameras(kind, 17)
    write_llff(tmp_path / "llff", r, t, scene_points(kind, frame))
    write_nerfstudio(tmp_path / "ns", r, t)
    ours = LLFFDataParserConfig(data=tmp_path / "llff", downscale_factor=downscale).setup()
    theirs = NerfstudioDataParserConfig(data=tmp_path / "ns", eval_mode="interval", eval_interval=8,
                                        downscale_factor=downscale or 1).setup()
    for split in ("train", "test"):
        a, b = ours.get_dataparser_outputs(split), theirs.get_dataparser_outputs(split)
        assert [p.name for p in a.image_filenames] == [p.name for p in b.image_filenames]
        assert a.metadata["llff_layout"] == kind
        (oa, da), (ob, db) = pixel_rays(a), pixel_rays(b)
        assert oa.shape == ob.shape == (len(a.image_filenames) * (H // (downscale or 1)) * (W // (downscale or 1)), 3)
        s, rot, shift = similarity(a.cameras.camera_to_worlds[:, :, 3].double().numpy(),
                                   b.cameras.camera_to_worlds[:, :, 3].double().numpy())
        assert np.abs(da - db @ rot.T).max() < 1e-4, "pixel ray directions differ beyond a rotation"
        assert np.abs(oa - (s * ob @ rot.T + shift)).max() < 1e-4 * max(1.0, np.abs(oa).max())


@pytest.mark.parametrize("kind", ["forward", "360"])
def test_llff_poses_intrinsics_and_bounds_put_every_scene_point_on_its_pixel_between_near_and_far(kind, tmp_path):
    """Every point of the reconstruction, mapped by the parser's own transform and scale, lies on the ray of the
    pixel COLMAP projects it to (poses and intrinsics), between the near and far planes the bounds give (units)."""
    from nscodec.llff import LLFFDataParserConfig

    r, t, frame = colmap_cameras(kind, 9, seed=2)
    pts = scene_points(kind, frame, n=600)
    write_llff(tmp_path, r, t, pts)
    parser = LLFFDataParserConfig(data=tmp_path, eval_interval=100).setup()  # view 0 held out, 1..8 train
    out = parser.get_dataparser_outputs("train")
    tf = out.dataparser_transform.double().numpy()
    world = out.dataparser_scale * (pts @ tf[:, :3].T + tf[:, 3])
    u, v, _, vis = project(r, t, pts)
    near, far = out.metadata["near_plane"], out.metadata["far_plane"]
    checked = 0
    for cam in range(len(out.cameras)):
        i = cam + 1
        idx = np.nonzero(vis[i])[0]
        coords = torch.from_numpy(np.stack([v[i, idx], u[i, idx]], axis=1)).float()
        bundle = out.cameras.generate_rays(camera_indices=cam, coords=coords)
        o, d = bundle.origins.double().numpy(), bundle.directions.double().numpy()
        rel = world[idx] - o
        along = (rel * d).sum(1)
        off = np.linalg.norm(rel - along[:, None] * d, axis=1)
        assert off.max() < 1e-4 * along.max(), f"view {i}: a point is {off.max():.2e} off its pixel's ray"
        assert (along > near).all() and (along < far).all(), (along.min(), along.max(), near, far)
        checked += len(idx)
    assert checked > 1000


def test_the_generated_forward_capture_draws_a_point_where_its_llff_pose_projects_it(tmp_path):
    """The generated forward-facing capture, read with LLFF's documented convention (not our parser): the centre of
    a small red sphere lands on the pixel its poses and intrinsics project it to, in every view."""
    from nscodec.scenes.captures import generate_capture_scene
    from nscodec.scenes.procedural import Primitive, SceneSpec

    centre = np.array([0.35, 0.2, 0.15])
    spec = SceneSpec([Primitive("sphere", (0.15,), tuple(centre), color=(1.0, 0.0, 0.0)),
                      Primitive("box", (0.3, 0.3, 0.3), (-0.5, 0.6, -0.2), color=(0.1, 0.9, 0.9))])
    out = generate_capture_scene(tmp_path / "fwd", "forward", spec, width=96, height=72, n_views=6, supersample=3)
    rows = np.load(out / "poses_bounds.npy")
    for i, img_path in enumerate(sorted((out / "images").iterdir())):
        img = np.asarray(Image.open(img_path)).astype(np.float64) / 255
        red = (img[..., 0] > 0.05) & (img[..., 1] < 0.08) & (img[..., 2] < 0.08)  # albedo (1, 0, 0), any shading
        assert red.sum() > 10, f"view {i}: the sphere is not in the image"
        ys, xs = np.nonzero(red)
        m = rows[i, :15].reshape(3, 5)
        down, right, back, c = m[:, 0], m[:, 1], m[:, 2], m[:, 3]
        h, w, f = m[:, 4]
        assert (h, w) == (72, 96)
        rel = centre - c
        z = -rel @ back
        u, v = w / 2 + f * (rel @ right) / z, h / 2 + f * (rel @ down) / z
        assert abs((xs + 0.5).mean() - u) < 0.5 and abs((ys + 0.5).mean() - v) < 0.5, (i, u, v)
        # bounds are z-depths of what the view sees: the sphere's front lies between them
        assert rows[i, 15] < z - 0.15 < rows[i, 16]


def test_a_360_capture_in_llff_format_is_read_around_its_focus(tmp_path):
    """A 360° capture in LLFF's format (cameras around the scene) resolves to the ``360`` layout: centred on the
    focus of the optical axes with the cameras inside ``[-1, 1]^3``, and gives the same rays as its nerfstudio-data
    twin up to a similarity."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from nscodec.llff import LLFFDataParserConfig
    from nscodec.scenes.captures import generate_capture_scene

    llff = generate_capture_scene(tmp_path / "llff", "unbounded", width=32, height=24, n_views=12, layout="llff")
    ns = generate_capture_scene(tmp_path / "ns", "unbounded", width=32, height=24, n_views=12, layout="nerfstudio")
    a = LLFFDataParserConfig(data=llff).setup().get_dataparser_outputs("train")
    b = NerfstudioDataParserConfig(data=ns, eval_mode="interval", eval_interval=8).setup().get_dataparser_outputs("train")
    assert a.metadata["llff_layout"] == "360"
    centres = a.cameras.camera_to_worlds[:, :, 3]
    assert float(centres.abs().max()) == pytest.approx(1.0, abs=1e-5)
    axes_to_origin = torch.nn.functional.cosine_similarity(-a.cameras.camera_to_worlds[:, :, 2], -centres, dim=-1)
    assert float(axes_to_origin.min()) > 0.97  # every camera looks at (near) the origin
    (oa, da), (ob, db) = pixel_rays(a), pixel_rays(b)
    s, rot, shift = similarity(centres.double().numpy(), b.cameras.camera_to_worlds[:, :, 3].double().numpy())
    assert np.abs(da - db @ rot.T).max() < 1e-4
    assert np.abs(oa - (s * ob @ rot.T + shift)).max() < 1e-4


@pytest.mark.slow
def test_nscodec_tensorf_learns_the_real_flower_capture(tmp_path):
    """On the real LLFF flower capture (imgs2poses output we did not make), 300 steps at 126×94 take the training
    PSNR far above what a model that learned nothing scores (the images' mean colour everywhere)."""
    from nscodec.llff import LLFFDataParserConfig
    from nscodec_configs.method_configs import tensorf_trainer_config
    from tests.helpers import train

    data = shared_path("data/llff/flower")
    config = tensorf_trainer_config(max_steps=300)
    config.pipeline.datamanager.dataparser = LLFFDataParserConfig(downscale_factor=8)
    config.pipeline.datamanager.camera_res_scale_factor = 0.25
    torch.manual_seed(0)
    _, trainer = train(config, data, tmp_path, 300, 1024, upsampling_iters=(100, 200), final_resolution=96)
    pipeline = trainer.pipeline
    ds = pipeline.datamanager.train_dataset
    images = torch.stack([ds.get_image_float32(i) for i in range(len(ds))])
    constant = float(-10 * torch.log10(((images - images.mean((0, 1, 2))) ** 2).mean()))
    pipeline.model.train()
    psnrs = []
    with torch.no_grad():
        for step in range(4):
            bundle, batch = pipeline.datamanager.next_train(step)
            outputs = pipeline.model(bundle)
            psnrs.append(float(pipeline.model.get_metrics_dict(outputs, batch)["psnr"]))
    train_psnr = float(np.mean(psnrs))
    assert train_psnr > constant + 6.0, (train_psnr, constant)


def test_a_file_records_the_llff_layout_and_one_from_the_earlier_frame_is_refused_for_evaluation():
    """``layout`` is always recorded; a record without it (a file trained in the frame of an earlier nscodec) is one
    clear error for evaluation, not test views placed in the wrong frame."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig

    from nscodec.errors import NscError
    from nscodec.data import dataparser_from_record, dataparser_options
    from nscodec.llff import LLFFDataParserConfig

    options = dataparser_options(LLFFDataParserConfig(downscale_factor=8))
    assert options == {"downscale_factor": 8, "layout": "auto"}
    parser = dataparser_from_record({"dataparser": "LLFFDataParserConfig", "dataparser_options": options},
                                    BlenderDataParserConfig())
    assert isinstance(parser, LLFFDataParserConfig) and parser.downscale_factor == 8
    with pytest.raises(NscError, match="without layout: it was trained on the frame an earlier nscodec built"):
        dataparser_from_record({"dataparser": "LLFFDataParserConfig", "dataparser_options": {"downscale_factor": 8}},
                               BlenderDataParserConfig())


def test_a_360_capture_in_llff_format_trains_through_llff_data(tmp_path):
    """The generated 360° capture written as LLFF trains through ``llff-data`` (contracted, random background): after
    a short run the training PSNR is well above what the images' mean colour scores."""
    from nscodec.llff import LLFFDataParserConfig
    from nscodec.scenes.captures import generate_capture_scene
    from nscodec_configs.method_configs import tensorf_trainer_config
    from tests.helpers import train

    data = generate_capture_scene(tmp_path / "ring", "unbounded", width=40, height=30, n_views=16, layout="llff")
    config = tensorf_trainer_config(max_steps=120)
    config.pipeline.datamanager.dataparser = LLFFDataParserConfig()
    torch.manual_seed(0)
    _, trainer = train(config, data, tmp_path / "run", 120, 512, upsampling_iters=(), init_resolution=32,
                       final_resolution=32, occupancy_resolution=32)
    pipeline = trainer.pipeline
    assert pipeline.model.config.scene_contraction == "on"
    assert pipeline.datamanager.train_dataparser_outputs.metadata["llff_layout"] == "360"
    ds = pipeline.datamanager.train_dataset
    images = torch.stack([ds.get_image_float32(i) for i in range(len(ds))])
    constant = float(-10 * torch.log10(((images - images.mean((0, 1, 2))) ** 2).mean()))
    with torch.no_grad():
        bundle, batch = pipeline.datamanager.next_train(0)
        psnr = float(pipeline.model.get_metrics_dict(pipeline.model(bundle), batch)["psnr"])
    assert psnr > constant + 3.0, (psnr, constant)
