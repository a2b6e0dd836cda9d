"""Real captures: scene contraction, contracted marching, the generated capture scenes, the LLFF dataparser, and every
codec trained → exported → decoded on a generated unbounded capture (nerfstudio-data) and a forward-facing one (LLFF)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch

from nscodec.render._torch_impl import march_rays_contracted
from nscodec.render.contraction import MAX_CONTRACTED_RADIUS, Contraction
from tests.helpers import render, train
from tests.test_conformance import CONFORMANCE

BOX = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 0.0, 1.5]])  # an off-centre, anisotropic scene box


def test_contraction_keeps_the_box_and_maps_all_of_space_into_the_field_box():
    c = Contraction(BOX)
    inside = BOX[0] + torch.rand(500, 3) * (BOX[1] - BOX[0])
    assert torch.equal(c(inside), inside)
    far = torch.randn(500, 3) * torch.logspace(0, 4, 500)[:, None]
    y = c(far)
    field = Contraction.field_aabb(BOX)
    assert bool(((y >= field[0] - 1e-5) & (y <= field[1] + 1e-5)).all())
    back = c.inverse(y)
    ok = ((far - c.center) / c.half_extent).abs().amax(-1) < 100  # beyond that, float32 loses the world position
    assert torch.allclose(back[ok], far[ok], rtol=1e-3, atol=1e-3)


def test_fast_linf_contraction_matches_nerfstudios_scene_contraction():
    """contract_linf is nerfstudio's SceneContraction(order=inf) with a cheaper L∞ norm: same values and gradients,
    identity (bit-exact) inside the unit cube, finite gradients at the origin."""
    from nerfstudio.field_components.spatial_distortions import SceneContraction

    from nscodec.render.contraction import contract_linf

    torch.manual_seed(0)
    x = torch.randn(4000, 3) * torch.logspace(-2, 3, 4000)[:, None]
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = contract_linf(xa), SceneContraction(order=float("inf"))(xb)
    assert torch.allclose(ya, yb, rtol=1e-6, atol=1e-6)
    w = torch.randn_like(ya)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert torch.allclose(xa.grad, xb.grad, rtol=1e-5, atol=1e-6)
    inside = x[x.abs().amax(-1) <= 1]
    assert inside.shape[0] > 100 and torch.equal(contract_linf(inside), inside)
    zero = torch.zeros(1, 3, requires_grad=True)
    contract_linf(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_world_step_factor_is_the_radial_derivative_of_the_inverse():
    c = Contraction(BOX)
    y = c.center + c.half_extent * torch.tensor([[1.5, 0.2, -0.3], [0.1, -1.9, 0.4], [0.3, 0.2, 0.1]])
    radial = (y - c.center) / ((y - c.center) / c.half_extent).abs().amax(-1, keepdim=True)  # d r_c = 1 per unit
    eps = 1e-4
    dw = (c.inverse(y + eps * radial) - c.inverse(y - eps * radial)).norm(dim=-1) / (2 * eps * radial.norm(dim=-1))
    assert torch.allclose(c.world_step_factor(y), dw, rtol=1e-2)
    assert float(c.world_step_factor(y)[2]) == 1.0


def test_ray_spacing_is_invertible_and_bounded():
    c = Contraction(BOX)
    t = torch.tensor([0.0, 0.3, 1.0, 3.0, 50.0, 900.0])
    assert torch.allclose(c.t_of_s(c.s_of_t(t)), t, rtol=1e-4)
    assert float(c.s_of_t(torch.tensor(1e3))) < 2.0 and float(c.s_of_t(torch.tensor(1e9))) <= 2.0
    assert float(c.t_of_s(torch.tensor(2.0))) == pytest.approx(c.ray_scale / (2.0 - MAX_CONTRACTED_RADIUS), rel=1e-4)


def _grid(occupied: torch.Tensor):
    field = Contraction.field_aabb(BOX).reshape(6)
    return occupied, field, Contraction(BOX)


def test_contracted_marching_tiles_the_ray_and_keeps_only_occupied_cells():
    g = 16
    full, field, c = _grid(torch.ones(g, g, g, dtype=torch.bool))
    o = torch.tensor([[0.0, -1.0, 0.5], [0.2, -1.5, 0.0]])
    d = torch.nn.functional.normalize(torch.tensor([[1.0, 0.2, 0.1], [-0.3, 1.0, 0.5]]), dim=-1)
    ray, t0, t1 = march_rays_contracted(o, d, full, field, c, 0.05, 0.05, 1000.0)
    for r in range(2):
        a, b = t0[ray == r], t1[ray == r]
        assert float(a[0]) == pytest.approx(0.05) and float(b[-1]) == pytest.approx(1000.0, rel=1e-3)
        assert torch.allclose(a[1:], b[:-1])  # contiguous intervals, in depth order
        assert bool(((b - a)[1:] >= (b - a)[:-1] - 1e-6).all())  # steps never shrink with distance
    # a grid with one occupied cell: every kept sample's midpoint lies in it
    occ = torch.zeros(g, g, g, dtype=torch.bool)
    occ[12, 5, 9] = True
    _, field, c = _grid(occ)
    ray, t0, t1 = march_rays_contracted(o, d, occ, field, c, 0.01, 0.05, 1000.0, jitter=torch.rand(2))
    mid = c(o[ray] + d[ray] * (0.5 * (t0 + t1))[:, None])
    cell = ((mid - field[:3]) / (field[3:] - field[:3]) * g).int()
    assert bool((cell == torch.tensor([12, 5, 9], dtype=torch.int32)).all())
    empty = march_rays_contracted(o, d, torch.zeros(g, g, g, dtype=torch.bool), field, c, 0.05, 0.05, 1000.0)
    assert empty[0].numel() == 0


@pytest.fixture(scope="session")
def capture(tmp_path_factory) -> Path:
    """A generated unbounded capture, nerfstudio-data layout, 48×36, 18 views."""
    from nscodec.scenes.captures import generate_capture_scene

    return generate_capture_scene(tmp_path_factory.mktemp("capture") / "unbounded", "unbounded", width=48, height=36, n_views=18)


@pytest.fixture(scope="session")
def forward_capture(tmp_path_factory) -> Path:
    """A generated forward-facing capture, LLFF layout, 48×36, 17 views."""
    from nscodec.scenes.captures import generate_capture_scene

    return generate_capture_scene(tmp_path_factory.mktemp("capture") / "forward", "forward", width=48, height=36, n_views=17)


def test_the_generated_capture_is_nerfstudio_data_without_alpha(capture):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
    from PIL import Image

    meta = json.loads((capture / "transforms.json").read_text())
    assert len(meta["frames"]) == 18 and meta["w"] == 48 and meta["h"] == 36
    img = np.asarray(Image.open(capture / meta["frames"][0]["file_path"]))
    assert img.shape == (36, 48, 3)
    assert img.reshape(-1, 3).std(0).min() > 10  # ground, sky and objects: no flat background
    out = NerfstudioDataParserConfig(data=capture).setup().get_dataparser_outputs("train")
    assert len(out.image_filenames) == int(np.ceil(18 * 0.9))  # nerfstudio's default 90 % train split


def test_the_llff_dataparser_reads_a_forward_facing_capture(forward_capture):
    from nscodec.llff import LLFFDataParserConfig

    parser = LLFFDataParserConfig(data=forward_capture).setup()
    train_out, test_out = parser.get_dataparser_outputs("train"), parser.get_dataparser_outputs("test")
    assert len(train_out.image_filenames) == 14 and len(test_out.image_filenames) == 3  # every 8th held out
    c2w = train_out.cameras.camera_to_worlds
    view = -c2w[:, :, 2]  # all cameras look the same way
    assert float((view @ view.mean(0)).min() / view.mean(0).norm()) > 0.99
    box = train_out.scene_box.aabb
    assert float(box.abs().max()) == pytest.approx(1.0) and train_out.metadata["llff_layout"] == "forward"
    # the box is fitted to the views' frusta from the nearest bound on: cameras in front of it, the near ends of
    # their optical axes inside it
    rows_scaled = np.load(forward_capture / "poses_bounds.npy")[:, 15] * train_out.dataparser_scale
    near_pts = c2w[:, :, 3] - c2w[:, :, 2] * float(rows_scaled.min() * 1.01)
    assert bool(((near_pts > box[0]) & (near_pts < box[1])).all())
    assert not bool(((c2w[:, :, 3] > box[0]) & (c2w[:, :, 3] < box[1])).all(-1).any())
    assert float(train_out.cameras.fx[0]) == pytest.approx(0.5 * 48 / np.tan(0.5))
    # near / far from the views' depth bounds: every pixel ray's stretch of scene depth lies between them
    rows = np.load(forward_capture / "poses_bounds.npy") * np.r_[np.ones(15), [train_out.dataparser_scale] * 2]
    near, far = train_out.metadata["near_plane"], train_out.metadata["far_plane"]
    assert (near, far) == (test_out.metadata["near_plane"], test_out.metadata["far_plane"])
    bundle = train_out.cameras.generate_rays(camera_indices=0)
    cos = (bundle.directions.reshape(-1, 3) @ -c2w[0, :, 2]).numpy()  # unit directions · optical axis
    assert 0 < near < rows[:, 15].min() and rows[:, 16].max() / cos.min() < far < 2 * rows[:, 16].max() / cos.min()


@pytest.mark.parametrize("edit, message", [
    (lambda rows: rows[:, :16], "must hold an \\[N, 17\\] array"),
    (lambda rows: np.where(np.arange(17) == 3, np.nan, rows), "row 0 holds a non-finite value"),
    (lambda rows: np.concatenate([rows[:, :15], rows[:, 16:17], rows[:, 15:16]], 1), "0 < near < far"),
    (lambda rows: rows[:-1], "holds 17 images but poses_bounds.npy 16 rows"),
])
def test_a_broken_llff_capture_is_one_clear_error(forward_capture, tmp_path, edit, message):
    import shutil

    from nscodec.data import NscDataError
    from nscodec.llff import LLFFDataParserConfig

    bad = tmp_path / "bad"
    shutil.copytree(forward_capture, bad)
    np.save(bad / "poses_bounds.npy", edit(np.load(bad / "poses_bounds.npy")))
    with pytest.raises(NscDataError, match=message):
        LLFFDataParserConfig(data=bad).setup().get_dataparser_outputs("train")


def _on(parser_name: str, codec: str, ctx: Dict[str, Any]):
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    config, steps, overrides = CONFORMANCE[codec](ctx)
    config = copy.deepcopy(config)
    config.pipeline.datamanager.dataparser = copy.deepcopy(all_dataparsers[parser_name])
    return config, steps, overrides


@pytest.fixture(scope="module")
def ctx(codec_model):
    return {"codec_model": codec_model[0]}


@pytest.mark.parametrize("codec", sorted(CONFORMANCE))
def test_every_codec_trains_exports_and_decodes_a_capture(codec, ctx, capture, tmp_path):
    """On an unbounded capture every codec contracts space, trains on a random background, and its file records the
    contraction: the decoded model renders bit-identically (also rays that leave the scene box), and ns-eval's setup
    of the file reads the capture with the dataparser it was trained with."""
    from nscodec.coding.container import read_nsc
    from nscodec.data import training_meta
    from nscodec.io import export_model, load_model
    from nscodec.pipeline import nsc_eval_setup
    from tests.helpers import rays

    torch.manual_seed(0)
    config, steps, overrides = _on("nerfstudio-data", codec, ctx)
    _, trainer = train(config, capture, tmp_path, steps, 256, **overrides)
    model = trainer.pipeline.model
    assert model.config.scene_contraction == "on" and model.config.background_color == "random"
    assert model.occupancy.contraction is not None
    assert torch.allclose(model.scene_box.aabb, 2 * model.world_box.aabb)
    assert model.config.train_samples_per_ray == type(model.config).capture_samples_per_ray in (8, 12)
    resolved = model.config.train_samples_per_ray
    train_rays = trainer.pipeline.datamanager.next_train(0)[0]
    counts = {}
    model.train()
    for k in (0, 2):  # the tiny run keeps ~5 samples per ray: a cap of 2 resamples most rays
        model.config.train_samples_per_ray = k
        torch.manual_seed(1)
        counts[k] = float(model.get_outputs(train_rays)["num_samples"])
    model.config.train_samples_per_ray = resolved
    assert counts[2] <= 2 * len(train_rays) < counts[0], counts
    model.eval()
    path = tmp_path / "capture.nsc"
    export_model(model, path, meta=training_meta(trainer.pipeline.config))
    config = read_nsc(path).config
    assert config["model"]["scene_contraction"] == "on"
    assert torch.allclose(torch.tensor(config["scene_box"]), model.world_box.aabb)
    decoded, _ = load_model(path)
    assert decoded.occupancy.contraction is not None
    bundle = rays(128, eye=(0.0, 0.0, 0.2), towards=(1.0, 0.3, 0.0))  # from inside the box out to the horizon
    stored = model.finalized_copy()
    a, b = render(stored, bundle), render(decoded, bundle)
    assert torch.equal(a, b)
    assert (a > 0.05).any(), "rays towards the horizon should meet the modelled environment"
    _, pipeline, _, _ = nsc_eval_setup(path, test_mode="test")
    assert type(pipeline.datamanager.dataparser).__name__ == "Nerfstudio"


def test_a_forward_facing_capture_trains_and_decodes(ctx, forward_capture, tmp_path):
    from nscodec.io import export_model, load_model
    from tests.helpers import rays

    torch.manual_seed(0)
    config, steps, overrides = _on("llff-data", "nscodec-tensorf", ctx)
    _, trainer = train(config, forward_capture, tmp_path, steps, 256, **overrides)
    model = trainer.pipeline.model
    assert model.config.scene_contraction == "on"
    meta = trainer.pipeline.datamanager.train_dataset.metadata
    assert (model.config.near_plane, model.config.far_plane) == (meta["near_plane"], meta["far_plane"]) != (0.05, 1000.0)
    assert (model.occupancy.near, model.occupancy.far) == (meta["near_plane"], meta["far_plane"])
    path = tmp_path / "forward.nsc"
    export_model(model, path)
    decoded, _ = load_model(path)  # without the capture: the file records the resolved planes
    assert (decoded.config.near_plane, decoded.config.far_plane) == (meta["near_plane"], meta["far_plane"])
    bundle = rays(64, eye=(0.0, 0.0, 0.0), towards=(0.0, 0.0, -1.0))
    assert torch.equal(render(model.finalized_copy(), bundle), render(decoded, bundle))


def test_near_and_far_planes_come_from_the_config_then_the_data_then_the_defaults():
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.tensorf.model import NscTensoRFModelConfig

    def planes(metadata, **config):
        cfg = NscTensoRFModelConfig(scene_contraction="on", init_resolution=8, final_resolution=8, occupancy_resolution=8,
                                    **config)
        model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.0] * 3, [1.0] * 3])), num_train_data=2,
                          metadata=metadata)
        assert (model.occupancy.near, model.occupancy.far) == (cfg.near_plane, cfg.far_plane)
        return cfg.near_plane, cfg.far_plane

    assert planes({}) == (0.05, 1000.0)
    assert planes({"near_plane": 0.4, "far_plane": 9.0}) == (0.4, 9.0)
    assert planes({"near_plane": 0.4, "far_plane": 9.0}, near_plane=0.1) == (0.1, 9.0)
    with pytest.raises(ValueError, match="dataparser's far_plane must be a positive finite number, got inf"):
        planes({"far_plane": float("inf")})
    with pytest.raises(ValueError, match="near_plane 5.0 must be below far_plane 2.0"):
        planes({"near_plane": 5.0, "far_plane": 2.0})


def test_a_file_written_before_contraction_decodes_bounded(tmp_path, scene):
    """Files from before scene contraction have no ``scene_contraction`` in their config: they decode bounded."""
    from nscodec.coding.container import read_nsc
    from nscodec.io import export_model, load_model
    from nscodec_configs.method_configs import tensorf_trainer_config
    from tests.test_conformance import _pack, _split

    _, trainer = train(tensorf_trainer_config(max_steps=4), scene, tmp_path, 4, 128, occupancy_resolution=16,
                       init_resolution=16, final_resolution=16, upsampling_iters=())
    path = tmp_path / "new.nsc"
    export_model(trainer.pipeline.model, path)
    header, payload = _split(path.read_bytes())
    config = header["config"]["model"]
    assert config["scene_contraction"] == "off" and config["background_color"] == "white"
    for key in ("scene_contraction", "near_plane", "far_plane", "alpha_threshold", "contraction_inner_radius",
                "train_samples_per_ray", "resample_padding"):
        config.pop(key)
    config["background_color"] = "white"
    old = tmp_path / "old.nsc"
    old.write_bytes(_pack(header, payload))
    model, _ = load_model(old)
    assert model.occupancy.contraction is None and model.config.background == "white"
    assert read_nsc(old).config == header["config"]


def _masked_copy(capture: Path, out: Path, paint) -> int:
    """A copy of ``capture`` whose frames carry ``mask_path`` (left half of every image masked out) with the
    masked-out pixels painted ``paint``; returns the image width."""
    import shutil

    from PIL import Image

    shutil.copytree(capture, out)
    meta = json.loads((out / "transforms.json").read_text())
    (out / "masks").mkdir()
    for fr in meta["frames"]:
        img = np.asarray(Image.open(out / fr["file_path"])).copy()
        h, w = img.shape[:2]
        keep = np.zeros((h, w), dtype=np.uint8)
        keep[:, w // 2:] = 255
        img[:, : w // 2] = paint
        Image.fromarray(img).save(out / fr["file_path"])
        fr["mask_path"] = "masks/" + Path(fr["file_path"]).name
        Image.fromarray(keep).save(out / fr["mask_path"])
    (out / "transforms.json").write_text(json.dumps(meta))
    return w


def test_a_capture_with_masks_trains_and_evaluates_only_the_masked_in_pixels(capture, tmp_path):
    """nerfstudio's ``mask_path``: training draws rays only from masked-in pixels (nerfstudio's pixel sampler), and
    evaluation (``nscodec eval`` / ``ns-eval``) scores only them: repainting the masked-out pixels of the ground truth
    changes no metric, while the unmasked metric of the same render moves."""
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from nscodec.tools.evaluate import evaluate_model
    from nscodec.core.metrics import ImageMetrics
    from nscodec_configs.method_configs import tensorf_trainer_config

    a, b = tmp_path / "a", tmp_path / "b"
    w = _masked_copy(capture, a, (255, 0, 255))
    _masked_copy(capture, b, (0, 255, 0))
    config = tensorf_trainer_config(max_steps=20)
    config.pipeline.datamanager.dataparser = NerfstudioDataParserConfig()
    torch.manual_seed(0)
    _, trainer = train(config, a, tmp_path / "run", 20, 256, occupancy_resolution=16, init_resolution=16,
                       final_resolution=16, upsampling_iters=())
    dm = trainer.pipeline.datamanager
    for step in range(3):
        _, batch = dm.next_train(step)
        assert int(batch["indices"][:, 2].min()) >= w // 2, "a ray was drawn from a masked-out pixel"
    model = trainer.pipeline.model
    ra = evaluate_model(model, a, "test", dataparser=NerfstudioDataParserConfig(), progress=False)
    rb = evaluate_model(model, b, "test", dataparser=NerfstudioDataParserConfig(), progress=False)
    assert ra["masked"] and rb["masked"] and ra["num_views"] >= 1
    assert ra["psnr"] == pytest.approx(rb["psnr"], abs=1e-6) and ra["ssim"] == pytest.approx(rb["ssim"], abs=1e-6)
    # the unmasked metric of the same images is not the masked one
    gt = torch.rand(1, 3, 24, 32)
    pred = gt.clone()
    pred[..., :16] = 0.0
    keep = torch.zeros(1, 1, 24, 32, dtype=torch.bool)
    keep[..., 16:] = True
    metrics = ImageMetrics()
    assert metrics(gt, pred)["psnr"] < 20 and metrics(gt, pred, keep)["psnr"] > 100
    assert metrics(gt, pred, keep)["ssim"] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="keeps no pixel"):
        metrics(gt, pred, torch.zeros_like(keep))
    # ns-eval's path: the eval batch carries the mask and the model's image metrics use it
    _, eval_batch = dm.next_eval_image(0)
    assert "mask" in eval_batch
