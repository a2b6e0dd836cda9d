"""ECTensoRF: decoder shapes, importance maps, init-from a stock tensorf checkpoint, the masked entropy model's file,
learned latent steps, the stage-2 occupancy bound, stage-2 checkpoints and schedules (generated scene; the default
preset's train → export → decode identity is in test_conformance.py)."""

from __future__ import annotations

import os

import pytest
import torch

from nscodec.ectensorf.decoder import LatentPlaneDecoder, latent_size
from nscodec.ectensorf.importance import splat_plane_weights


@pytest.mark.parametrize("factor", [4, 2])
@pytest.mark.parametrize("res", [5, 17, 63, 64, 127, 160])
def test_decoder_shapes_at_odd_resolutions(res, factor):
    dec = LatentPlaneDecoder(latent_channels=4, out_channels=16, hidden=8, upsample=factor)
    h = latent_size(res, factor)
    assert factor * h >= res > factor * (h - 1)
    out = dec(torch.randn(3, 4, h, h), res)
    assert out.shape == (3, 16, res, res)
    with pytest.raises(ValueError, match="decode to"):  # one latent row short cannot cover the plane
        dec(torch.zeros(3, 4, h - 1, h - 1), res)


def test_decoder_upsample_factor_sets_receptive_field():
    """One latent moves 10 plane rows at factor 4 (k4/s2 twice: 4 hidden rows → 2·4 + 2) and 8 at factor 2
    (k3/s1 → 3 hidden rows → 2·3 + 2), where each plane row holds 4 resp. 2 latent rows' worth of detail.
    Bad factors are one clear error."""
    for factor, span in ((4, 10), (2, 8)):
        dec = LatentPlaneDecoder(latent_channels=2, out_channels=3, hidden=4, upsample=factor)
        z = torch.randn(1, 2, 8, 8)
        z2 = z.clone()
        z2[0, :, 4, 4] += 1.0
        n = 8 * factor
        changed = (dec(z2, n) - dec(z, n)).abs().sum(dim=(0, 1)) > 0
        rows = changed.any(dim=1).nonzero().flatten()
        assert rows.numel() == span and int(rows[-1] - rows[0]) == span - 1, (factor, rows)
    with pytest.raises(ValueError, match="upsample must be 2 or 4"):
        LatentPlaneDecoder(2, 3, upsample=3)


def test_importance_splat_conserves_mass_and_lands_where_read():
    n = 9
    coords = torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [0.125, -0.5]])
    w = torch.tensor([1.0, 2.0, 3.0, 4.0])
    m = splat_plane_weights(coords, w, n)
    torch.testing.assert_close(m.sum(), w.sum())
    assert m[0, 0] == 1.0 and m[-1, -1] == 2.0 and m[4, 4] == 3.0  # corners and centre (align_corners=True)
    # the splat is the transpose of bilinear lookup: <splat(w), F> == sum_i w_i * lookup(F, x_i)
    feat = torch.randn(1, 1, n, n)
    look = torch.nn.functional.grid_sample(feat, coords.view(1, -1, 1, 2), align_corners=True).view(-1)
    torch.testing.assert_close((m * feat[0, 0]).sum(), (w * look).sum())


def _stock_tensorf_checkpoint(path, monkeypatch):
    """A checkpoint in stock nerfstudio tensorf layout, made with nerfstudio's own TensoRFModel."""
    import torchmetrics.image.lpip as lp
    from nerfstudio.data.scene_box import SceneBox
    from nerfstudio.models.tensorf import TensoRFModelConfig

    class NoLPIPS(torch.nn.Module):  # stock models would download AlexNet here
        def __init__(self, *a, **k):
            super().__init__()

    monkeypatch.setattr(lp, "LearnedPerceptualImagePatchSimilarity", NoLPIPS)
    from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig

    cfg = TensoRFModelConfig(init_resolution=24, final_resolution=24, camera_optimizer=CameraOptimizerConfig(mode="off"))
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=20)
    torch.save({"step": 10, "pipeline": {"_model." + k: v for k, v in model.state_dict().items()}}, path)
    return model


def test_init_from_stock_tensorf_checkpoint(tmp_path, monkeypatch):
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.ectensorf.model import ECTensoRFModelConfig

    stock = _stock_tensorf_checkpoint(tmp_path / "step-000000010.ckpt", monkeypatch)
    model = ECTensoRFModelConfig(init_resolution=16, init_from=tmp_path / "step-000000010.ckpt", latent_prefit_steps=0).setup(
        scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=20
    )
    model.load_pretrained(tmp_path / "step-000000010.ckpt")
    assert model.field.density_encoding.resolution == 24
    for name in ("density_encoding.plane_coef", "color_encoding.line_coef", "B.weight", "mlp_head.layers.0.weight"):
        got = dict(model.field.named_parameters())[name]
        ref = dict(stock.field.named_parameters())[name]
        assert torch.equal(got, ref), name
    model.enter_stage2(None)
    assert model.stage2 and model.codec.latents_density.shape[-1] == latent_size(24, model.config.latent_downsample)
    assert torch.equal(model.codec.target_density, stock.field.density_encoding.plane_coef.detach())
    # the field renders the decoded planes right after the switch (occupancy updates read them), not zeros
    model.eval()
    with torch.no_grad():
        assert torch.equal(model.field.density_encoding.plane_coef, model.decode_planes()["density"])
    model.train()
    # zero latents decode to planes far from the target; the plane-only prefit moves them towards it (these
    # targets are near-random 10-step planes, which 6x6 latents cannot fit closely)
    with torch.no_grad():
        before = model.plane_rate_distortion(model.decode_planes())[1].item()
    history = model.prefit_latents(60)
    model.eval()
    with torch.no_grad():
        after = model.plane_rate_distortion(model.decode_planes())[1].item()
    assert after < 0.9 * before, (before, after)
    assert history[-1] < history[0]
    with pytest.raises(FileNotFoundError):
        model.load_pretrained(tmp_path / "missing.ckpt")


@pytest.fixture(scope="module")
def trained_ec(scene, tmp_path_factory):
    from nscodec.tools.demo import train_in_process
    from nscodec_configs.method_configs import ectensorf_trainer_config

    work = tmp_path_factory.mktemp("ectensorf")
    torch.manual_seed(0)
    cfg = ectensorf_trainer_config(stage1_steps=60, stage2_steps=60)
    config_yml, trainer, _ = train_in_process(
        scene, work, steps=120, rays=1024, progress=False, trainer_config=cfg,
        init_resolution=24, final_resolution=32, upsampling_iters=(30,), occupancy_warmup=20, occupancy_update_every=20,
        importance_batches=4,
        use_mask=True,  # the paper's masked entropy model (ectensorf-paper); the default's plain prior is its subset
    )
    return config_yml, trainer, work


def test_masked_stage2_compresses_and_decodes_bit_identically(trained_ec, scene):
    from nerfstudio.cameras.rays import RayBundle

    from nscodec.tools.evaluate import evaluate_model
    from nscodec.io import export_model, load_model

    _, trainer, work = trained_ec
    model = trainer.pipeline.model
    assert model.stage2
    path = work / "scene.nsc"
    size = export_model(model, path)
    assert size == os.path.getsize(path)
    decoded, nsc = load_model(path)
    assert nsc.method == "ectensorf" and nsc.total_bytes == size
    # dense weights: dense_bits-bit power-of-two symbols, entropy-coded; biases float16
    for name in ("decoder_color.up1.weight", "mlp.layers.0.weight", "lines.color", "basis.weight"):
        sec = nsc.sections[name]
        assert sec.coder == "ans" and sec.meta["quantizer"] == "pow2" and sec.meta["bits"] == model.config.dense_bits, name
    assert nsc.sections["decoder_color.up1.bias"].dtype == "float16"
    fp32 = sum(v.numel() * 4 for k, v in model.state_dict().items() if "target" not in k and "importance" not in k)
    assert size < fp32 / 4, (size, fp32)
    g = torch.Generator().manual_seed(1)
    o = torch.randn(512, 3, generator=g) * 0.1 + torch.tensor([0.0, -4.0, 0.5])
    d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, -0.1]) + 0.2 * torch.randn(512, 3, generator=g), dim=-1)
    rb = RayBundle(origins=o, directions=d, pixel_area=torch.ones(512, 1))
    model.eval()
    with torch.no_grad():
        a = model.get_outputs(rb)["rgb"]
        b = decoded.get_outputs(rb)["rgb"]
    assert (a - b).abs().max().item() == 0.0
    ev_a = evaluate_model(model, scene, "test", progress=False)
    ev_b = evaluate_model(decoded, scene, "test", progress=False)
    assert ev_a["psnr"] == ev_b["psnr"]


def test_closed_masks_code_nothing(trained_ec):
    """Mask 0 everywhere: no latent bits and the planes no longer depend on the latents (decoder of zeros)."""
    _, trainer, _ = trained_ec
    model = trainer.pipeline.model
    model.eval()
    saved = {s: getattr(model.codec, f"prior_{s}").mask_logits.detach().clone() for s in ("density", "color")}
    try:
        with torch.no_grad():
            model.decode_planes()  # open masks decode (cache filled) before closing them
            for s in saved:
                getattr(model.codec, f"prior_{s}").mask_logits.fill_(-5.0)
            closed = model.decode_planes()
            for s in saved:  # closed masks: no latent is coded (only the mask bits remain)
                prior = getattr(model.codec, f"prior_{s}")
                _, _, info = prior(getattr(model.codec, f"latents_{s}"), mode="round", stochastic=False)
                assert info["latent_bits"] == 0 and info["mask_bits"] > 0
            for s in saved:
                z = getattr(model.codec, f"latents_{s}")
                zeros = torch.zeros(3, z.shape[0] // 3, *z.shape[1:])
                assert torch.equal(closed[s], getattr(model.codec, f"decoder_{s}")(zeros, model.plane_resolution))
    finally:
        with torch.no_grad():
            for s, v in saved.items():
                getattr(model.codec, f"prior_{s}").mask_logits.copy_(v)
        model._decoded_cache = None


def test_learned_latent_steps_get_gradients_and_fold_exactly(trained_ec):
    """The per-channel quantization steps are trained with the latents (a rate–distortion gradient reaches them)
    and folding them into the decoders leaves the decoded planes unchanged, with the steps reset to 1. A checkpoint
    from before the learned steps (no ``log_step`` keys) loads with unit steps."""
    import copy

    _, trainer, _ = trained_ec
    ref = trainer.pipeline.model
    assert all(torch.count_nonzero(getattr(ref.codec, f"log_step_{s}")) == 0 for s in ("density", "color"))  # folded
    latent_group = trainer.optimizers.optimizers["latents"].param_groups[0]["params"]
    assert any(p is ref.codec.log_step_color for p in latent_group)

    model = copy.deepcopy(ref)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for s in ("density", "color"):
            getattr(model.codec, f"log_step_{s}").copy_(torch.empty_like(getattr(model.codec, f"log_step_{s}")).uniform_(-1.5, 0.5, generator=g))
    model.train()
    model._step = model._stage2_start()
    rate, rec = model.plane_rate_distortion(model.decode_planes())
    (rate + rec).backward()
    for s in ("density", "color"):
        grad = getattr(model.codec, f"log_step_{s}").grad
        assert grad is not None and torch.count_nonzero(grad) > 0, s
    model.eval()
    with torch.no_grad():
        before = {k: v.clone() for k, v in model.decode_planes().items()}
        model.fold_latent_steps()
        after = model.decode_planes()
    for s in ("density", "color"):
        assert torch.count_nonzero(getattr(model.codec, f"log_step_{s}")) == 0
        assert torch.allclose(after[s], before[s], atol=1e-5 * before[s].abs().max().item()), s
    assert after["rate_bits"] == before["rate_bits"]  # the same symbols

    old = {k: v for k, v in ref.state_dict().items() if "log_step" not in k}
    model.load_state_dict(old)
    assert all(torch.count_nonzero(getattr(model.codec, f"log_step_{s}")) == 0 for s in ("density", "color"))


def test_stage2_occupancy_updates_never_add_cells_outside_the_stage1_grid(trained_ec):
    """The decoded planes may hold density where the importance maps are ~0 (empty space); stage-2 occupancy
    updates must not mark it occupied. The bound is the grid refreshed at the switch: a proper subset of the
    grid, and it travels in checkpoints."""
    _, trainer, _ = trained_ec
    model = trainer.pipeline.model
    bound = model.codec.occupancy_bound
    assert bound.dtype == torch.bool and 0 < int(bound.sum()) < bound.numel()
    assert torch.equal(model.occupancy.occupied & ~bound, torch.zeros_like(bound))
    saved = {k: v.clone() for k, v in model.occupancy.state_dict().items()}
    try:
        model.field.density_at = lambda p: torch.full(p.shape[:1], 1e3)  # fog everywhere
        model.update_occupancy()
        assert torch.equal(model.occupancy.occupied, bound & model.occupancy.visible)
        model.config.bound_stage2_occupancy = False  # ectensorf-paper: the grid follows the decoded planes alone
        model.update_occupancy()
        assert model.occupancy_bound() is None
        assert int((model.occupancy.occupied & ~bound).sum()) > 0
    finally:
        model.config.bound_stage2_occupancy = True
        del model.field.density_at  # back to the class's method
        model.occupancy.load_state_dict(saved)
    assert "codec.occupancy_bound" in model.state_dict()


def test_stage2_checkpoint_loads_via_eval_setup(trained_ec):
    """ns-eval / ns-viewer / ns-export load a stage-2 checkpoint (the codec structure is rebuilt on load) and
    render exactly what the trained model renders (the final step quantized the dense parts before saving, and
    export's quantization of them again is idempotent)."""
    from nerfstudio.cameras.rays import RayBundle
    from nerfstudio.utils.eval_utils import eval_setup

    config_yml, trainer, _ = trained_ec
    _, pipeline, _, step = eval_setup(config_yml, test_mode="inference")
    loaded = pipeline.model
    assert step == 119 and loaded.stage2
    ref = trainer.pipeline.model
    assert torch.equal(loaded.codec.latents_color, ref.codec.latents_color)
    assert torch.equal(loaded.codec.occupancy_bound, ref.codec.occupancy_bound)
    g = torch.Generator().manual_seed(2)
    o = torch.randn(256, 3, generator=g) * 0.1 + torch.tensor([0.0, -4.0, 0.5])
    d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, -0.1]) + 0.2 * torch.randn(256, 3, generator=g), dim=-1)
    rb = RayBundle(origins=o, directions=d, pixel_area=torch.ones(256, 1))
    ref.eval()
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(ref.get_outputs(rb)["rgb"], loaded.get_outputs(rb)["rgb"])


def test_stage2_learning_rates_anneal_to_their_final_values_at_the_last_step(trained_ec):
    """Stage 2 restarts every schedule at the switch and decays it over the steps left (60 of 120 here): at the
    last step each group is at its configured final rate, not part-way (as a schedule spanning the run would be)."""
    _, trainer, _ = trained_ec
    for group in ("latents", "codec", "encodings", "fields"):
        sched_cfg = trainer.optimizers.config[group]["scheduler"]
        lr = trainer.optimizers.optimizers[group].param_groups[0]["lr"]
        assert lr == pytest.approx(sched_cfg.lr_final, rel=1e-3), (group, lr, sched_cfg.lr_final)


@pytest.mark.parametrize("kwargs,match", [({"dense_bits": 1}, "dense_bits"), ({"dense_bits": 17}, "dense_bits"),
                                          ({"latent_downsample": 3}, "latent_downsample"),
                                          ({"stage1_steps": 100, "upsampling_iters": (50, 100)}, "upsampling")])
def test_bad_config_fails_at_setup_naming_the_field(kwargs, match):
    """A bad preset fails when the model is built, not at the last training step."""
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.ectensorf.model import ECTensoRFModelConfig

    cfg = ECTensoRFModelConfig(init_resolution=16, final_resolution=16, **kwargs)
    with pytest.raises(ValueError, match=match):
        cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=1, metadata={})
