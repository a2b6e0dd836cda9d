"""Importance resampling of packed samples (``nscodec.render.importance_resample_packed``) and the training path
that caps the samples per ray with it (``NscModelConfig.train_samples_per_ray``)."""

from __future__ import annotations

import pytest
import torch

from nscodec.render import accumulate_along_rays, importance_resample_packed, render_weight_from_density


def _gapped_rays(n_rays: int = 5, per_ray: int = 40, seed: int = 0):
    """Packed intervals of ``per_ray`` samples per ray (ray 2 has none), with gaps where cells were skipped."""
    g = torch.Generator().manual_seed(seed)
    rays, t0s, t1s = [], [], []
    for r in range(n_rays):
        if r == 2:
            continue
        step = 0.05 * (1 + r)
        starts = torch.arange(per_ray, dtype=torch.float32) * step
        starts = starts + (torch.rand(per_ray, generator=g) < 0.2).float().cumsum(0) * 0.3  # gaps
        rays.append(torch.full((per_ray,), r))
        t0s.append(0.1 + starts)
        t1s.append(0.1 + starts + step)
    return torch.cat(rays), torch.cat(t0s), torch.cat(t1s)


def test_every_ray_with_samples_gets_k_sorted_samples_inside_its_intervals():
    ray_idx, t0, t1 = _gapped_rays()
    w = torch.rand(t0.shape, generator=torch.Generator().manual_seed(1))
    r, a, b = importance_resample_packed(ray_idx, t0, t1, w, 5, 7, jitter=torch.rand(4, 7))
    assert torch.equal(r, torch.tensor([0, 1, 3, 4]).repeat_interleave(7))
    mid = 0.5 * (a + b)
    for ray in (0, 1, 3, 4):
        m, old = mid[r == ray], ray_idx == ray
        assert bool((m.diff() > 0).all())
        inside = ((m[:, None] >= t0[old][None] - 1e-5) & (m[:, None] <= t1[old][None] + 1e-5)).any(dim=1)
        assert bool(inside.all()), "a resampled point lies in a gap the occupancy grid skipped"
    # all mass on one interval and no padding: every sample lands in it
    peak = torch.zeros_like(w)
    hit = (ray_idx == 3).nonzero()[17]
    peak[hit] = 1.0
    r, a, b = importance_resample_packed(ray_idx, t0, t1, peak, 5, 9, padding=0.0)
    m = 0.5 * (a + b)[r == 3]
    assert bool(((m >= t0[hit]) & (m <= t1[hit])).all())


def test_weights_proportional_to_length_give_equal_intervals_that_keep_each_rays_opacity():
    ray_idx, t0, t1 = _gapped_rays()
    r, a, b = importance_resample_packed(ray_idx, t0, t1, t1 - t0, 5, 6, jitter=torch.rand(4, 6))
    sigma = 0.7
    w, _, _ = render_weight_from_density(t0, t1, torch.full(t0.shape, sigma), ray_idx, 5)
    w_new, _, _ = render_weight_from_density(a, b, torch.full(a.shape, sigma), r, 5)
    torch.testing.assert_close(accumulate_along_rays(w_new, None, r, 5), accumulate_along_rays(w, None, ray_idx, 5))
    for ray in (0, 1, 3, 4):
        occupied = float((t1 - t0)[ray_idx == ray].sum())
        torch.testing.assert_close((b - a)[r == ray], torch.full((6,), occupied / 6), rtol=1e-5, atol=1e-6)


def _soft_surface(per_ray: int = 400):
    ray_idx, t0, t1 = _gapped_rays(per_ray=per_ray)
    t0, t1 = t0 / 10, t1 / 10
    density = lambda t: 30.0 * torch.exp(-((t - 0.9) / 0.05) ** 2) + 0.2  # noqa: E731 (a soft surface at t = 0.9)
    return ray_idx, t0, t1, density


def test_the_optical_depth_estimate_is_unbiased():
    ray_idx, t0, t1, density = _soft_surface()
    mid = 0.5 * (t0 + t1)
    sigma = density(mid)
    fine = t0[:, None] + (t1 - t0)[:, None] * (torch.arange(64) + 0.5) / 64  # [S, 64]: ∫ density per interval
    depth = torch.zeros(5).index_add_(0, ray_idx, density(fine).mean(1) * (t1 - t0))[[0, 1, 3, 4]]
    w, _, _ = render_weight_from_density(t0, t1, sigma, ray_idx, 5)
    g = torch.Generator().manual_seed(3)
    draws = 1000
    est = torch.zeros(4)
    for _ in range(draws):
        r, a, b = importance_resample_packed(ray_idx, t0, t1, w, 5, 4, jitter=torch.rand(4, 4, generator=g))
        est += torch.zeros(5).index_add_(0, r, density(0.5 * (a + b)) * (b - a))[[0, 1, 3, 4]]
    torch.testing.assert_close(est / draws, depth, rtol=0.03, atol=0.0)


def test_resampled_rendering_converges_to_the_dense_one():
    ray_idx, t0, t1, density = _soft_surface()
    mid = 0.5 * (t0 + t1)
    colour = lambda t: torch.stack([torch.sin(5 * t), torch.cos(3 * t), t], -1)  # noqa: E731
    w, _, _ = render_weight_from_density(t0, t1, density(mid), ray_idx, 5)
    ref = accumulate_along_rays(w, colour(mid), ray_idx, 5)
    errs = []
    for k in (4, 16, 64):
        r, a, b = importance_resample_packed(ray_idx, t0, t1, w, 5, k)
        m = 0.5 * (a + b)
        w_k, _, _ = render_weight_from_density(a, b, density(m), r, 5)
        errs.append(float((accumulate_along_rays(w_k, colour(m), r, 5) - ref).abs().max()))
    assert errs[2] < errs[1] < errs[0] and errs[2] < 0.03, errs


@pytest.mark.parametrize("k, padding", [(0, 0.01), (4, -0.1), (4, 1.5)])
def test_bad_arguments_are_one_error(k, padding):
    ray_idx, t0, t1 = _gapped_rays()
    with pytest.raises(ValueError, match="num_samples >= 1 and padding"):
        importance_resample_packed(ray_idx, t0, t1, torch.ones_like(t0), 5, k, padding)


def test_no_samples_give_no_samples():
    e = torch.zeros(0)
    r, a, b = importance_resample_packed(torch.zeros(0, dtype=torch.long), e, e, e, 3, 8)
    assert r.numel() == a.numel() == b.numel() == 0


def test_the_cap_resolves_per_method_and_scene_kind():
    """``train_samples_per_ray=None`` resolves to the method's bounded-scene cap on Blender-layout data (vqad: its
    early fog is capped; the others: off) and to its capture cap on every other dataparser; an explicit value wins."""
    from nerfstudio.data.dataparsers.blender_dataparser import BlenderDataParserConfig
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    from nscodec.shacira.model import ShaciraModelConfig
    from nscodec.tensorf.model import NscTensoRFModelConfig
    from nscodec.vqad.model import VQADModelConfig

    for cls, bounded in ((VQADModelConfig, 48), (ShaciraModelConfig, 0), (NscTensoRFModelConfig, 0)):
        for parser, want in ((BlenderDataParserConfig(), bounded), (NerfstudioDataParserConfig(), cls.capture_samples_per_ray)):
            cfg = cls()
            cfg.resolve_for_data(parser)
            assert cfg.train_samples_per_ray == want, (cls.__name__, type(parser).__name__)
        cfg = cls(train_samples_per_ray=5)
        cfg.resolve_for_data(BlenderDataParserConfig())
        assert cfg.train_samples_per_ray == 5
