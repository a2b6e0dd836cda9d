"""Packed rendering ops: torch twin against plain per-ray loops, and against nerfacc's CUDA kernels (CUDA only)."""

from __future__ import annotations

import pytest
import torch

from nscodec.render import _torch_impl as ref
from nscodec.render import _wrapper as fast


def _packed(n_rays=7, max_k=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, max_k, (n_rays,), generator=g)
    counts[2] = 0  # a ray with no samples
    ray_idx = torch.repeat_interleave(torch.arange(n_rays), counts)
    t0 = torch.rand(ray_idx.numel(), generator=g)
    t1 = t0 + 0.1 * torch.rand(ray_idx.numel(), generator=g)
    sigma = 5 * torch.rand(ray_idx.numel(), generator=g)
    return ray_idx, t0, t1, sigma, n_rays


def test_weights_match_per_ray_loop():
    ray_idx, t0, t1, sigma, n = _packed()
    w, trans, alpha = ref.render_weight_from_density(t0, t1, sigma, ray_idx, n)
    for r in range(n):
        sel = ray_idx == r
        tau = sigma[sel] * (t1[sel] - t0[sel])
        T = torch.exp(-(torch.cumsum(tau, 0) - tau))
        torch.testing.assert_close(trans[sel], T)
        torch.testing.assert_close(w[sel], T * (1 - torch.exp(-tau)))


def test_an_infinite_density_stays_within_its_own_ray_and_gives_finite_gradients():
    """trunc_exp overflows to an infinite density past ~88; the packed prefix sum used to turn it into NaN for every
    later ray of the batch (inf - inf), and the NaN gradient into NaN weights (a vqad training on flower died of it)."""
    ray_idx, t0, t1, sigma, n = _packed(n_rays=20, max_k=9, seed=3)
    first = int((ray_idx == 0).nonzero()[0])
    clean = ref.render_weight_from_density(t0, t1, sigma, ray_idx, n)
    x = torch.log(sigma).clone().requires_grad_(True)
    from nerfstudio.field_components.activations import trunc_exp

    boosted = torch.where(torch.arange(x.numel()) == first, x + 200.0, x)  # exp(200) = inf in float32
    sig = trunc_exp(boosted)
    assert torch.isinf(sig[first])
    w, trans, alpha = ref.render_weight_from_density(t0, t1, sig, ray_idx, n)
    assert torch.isfinite(w).all() and torch.isfinite(trans).all() and torch.isfinite(alpha).all()
    later = ray_idx != 0
    torch.testing.assert_close(w[later], clean[0][later], rtol=0, atol=1e-6)  # other rays: as without it
    assert w[first] == trans[first] and alpha[first] == 1.0  # the sample takes what is left of its ray
    assert (w[(ray_idx == 0) & (torch.arange(x.numel()) > first)] < 1e-40).all()  # nothing passes it
    (g,) = torch.autograd.grad(w.sum(), x)
    assert torch.isfinite(g).all()


def test_exclusive_sum_is_independent_of_preceding_rays():
    """A ray's transmittance must not depend on how much optical depth came before it in the packed array."""
    ray_idx, t0, t1, sigma, n = _packed(n_rays=50, max_k=40, seed=1)
    sigma = sigma * 1e4  # huge running sums
    excl = ref.exclusive_sum_packed(sigma, ray_idx, n)
    last = ray_idx == n - 1
    torch.testing.assert_close(excl[last], torch.cumsum(sigma[last], 0) - sigma[last])


def test_accumulate_matches_loop():
    ray_idx, t0, t1, sigma, n = _packed()
    vals = torch.randn(ray_idx.numel(), 3)
    w = torch.rand(ray_idx.numel())
    out = ref.accumulate_along_rays(w, vals, ray_idx, n)
    for r in range(n):
        sel = ray_idx == r
        torch.testing.assert_close(out[r], (w[sel, None] * vals[sel]).sum(0))


def test_march_keeps_exactly_the_occupied_samples():
    g = torch.Generator().manual_seed(3)
    origins = torch.tensor([[-3.0, 0.1, 0.2], [0.05, -3.0, -0.1], [0.0, 0.0, 3.0], [5.0, 5.0, 5.0]])
    dirs = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])  # last ray misses
    aabb = torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])
    occ = torch.rand((16, 16, 16), generator=g) > 0.5
    step = 0.05
    ray_idx, ts, te = ref.march_rays_dense(origins, dirs, aabb, occ, aabb, step, jitter=None, chunk_elements=37)
    assert torch.all(ray_idx[1:] >= ray_idx[:-1]), "packed samples must be sorted by ray"
    assert not (ray_idx == 3).any()
    for r in range(3):
        tn, tf, _ = ref.ray_aabb_intersect(origins[r : r + 1], dirs[r : r + 1], aabb)
        expected = []
        k = 0
        while True:
            t = float(tn) + (k + 0.5) * step
            if t >= float(tf):
                break
            p = origins[r] + dirs[r] * t
            c = ((p + 1.5) / 3.0 * 16).long().clamp(0, 15)
            if occ[c[0], c[1], c[2]]:
                expected.append(t)
            k += 1
        got = (0.5 * (ts + te))[ray_idx == r]
        torch.testing.assert_close(got, torch.tensor(expected), rtol=0, atol=1e-5)
        torch.testing.assert_close(te - ts, torch.full_like(ts, step))


def test_occupancy_grid_update_and_bbox():
    grid = fast.OccupancyGrid(torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]), resolution=32)
    frac = grid.update(lambda p: (p.norm(dim=-1) < 0.5).float() * 50.0, step_size=0.05)
    assert 0 < frac < 0.1
    assert torch.all(grid.bbox[:3] > -0.8) and torch.all(grid.bbox[3:] < 0.8)
    assert torch.all(grid.bbox[:3] < -0.4) and torch.all(grid.bbox[3:] > 0.4)
    assert int(grid.num_updates) == 1


def test_occupancy_update_only_carves_inside_its_bound():
    """With ``bound``, density outside it never marks a cell occupied (ectensorf's stage-2 grid), and inside it the
    update is the plain one."""
    aabb = torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5])
    fog = lambda p: torch.full(p.shape[:1], 50.0)  # noqa: E731  (density everywhere)
    plain = fast.OccupancyGrid(aabb, resolution=16)
    assert plain.update(fog, step_size=0.05) == 1.0
    bound = torch.zeros((16,) * 3, dtype=torch.bool)
    bound[4:9, 5:12, 6:10] = True
    grid = fast.OccupancyGrid(aabb, resolution=16)
    frac = grid.update(fog, step_size=0.05, bound=bound)
    assert torch.equal(grid.occupied, bound) and frac == float(bound.float().mean())
    cell = 3.0 / 16
    torch.testing.assert_close(grid.bbox[:3], aabb[:3] + torch.tensor([4.0, 5.0, 6.0]) * cell)
    torch.testing.assert_close(grid.bbox[3:], aabb[:3] + torch.tensor([9.0, 12.0, 10.0]) * cell)
    sphere = lambda p: (p.norm(dim=-1) < 0.5).float() * 50.0  # noqa: E731
    grid.update(sphere, step_size=0.05, bound=bound)
    plain.update(sphere, step_size=0.05)
    assert torch.equal(grid.occupied, plain.occupied & bound)


@pytest.mark.cuda
@pytest.mark.skipif(not fast.nerfacc_cuda_available(), reason="needs CUDA and nerfacc's CUDA extension")
def test_cuda_twins_match_torch():  # pragma: no cover - runs only where CUDA exists
    ray_idx, t0, t1, sigma, n = _packed(n_rays=300, max_k=64, seed=5)
    vals = torch.randn(ray_idx.numel(), 3)
    w_ref, T_ref, a_ref = ref.render_weight_from_density(t0, t1, sigma, ray_idx, n)
    w, T, a = fast.render_weight_from_density(t0.cuda(), t1.cuda(), sigma.cuda(), ray_idx.cuda(), n)
    torch.testing.assert_close(w.cpu(), w_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(T.cpu(), T_ref, rtol=1e-4, atol=1e-6)
    acc = fast.accumulate_along_rays(w.cuda(), vals.cuda(), ray_idx.cuda(), n)
    torch.testing.assert_close(acc.cpu(), ref.accumulate_along_rays(w_ref, vals, ray_idx, n), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("seed,density,step", [(0, 0.02, 0.011), (1, 0.2, 0.023), (2, 0.002, 0.0047), (3, 0.05, 0.3)])
def test_two_level_march_equals_dense_march(seed, density, step):
    """The block-skipping march must return exactly the dense march's samples (it may only skip empty space)."""
    g = torch.Generator().manual_seed(seed)
    n = 300
    origins = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1) * 4.0
    target = 0.8 * (torch.rand(n, 3, generator=g) - 0.5)
    dirs = torch.nn.functional.normalize(target - origins, dim=-1)
    grid_aabb = torch.tensor([-1.5, -1.2, -1.0, 1.5, 1.2, 1.0])  # non-cubic on purpose
    occ = torch.rand((64, 64, 64), generator=g) < density
    occ[20:30, 30:40, 25:45] = True  # a solid object plus scattered floaters
    bbox = torch.tensor([-1.3, -1.0, -0.9, 1.2, 1.1, 0.8])
    jitter = torch.rand(n, generator=g)
    a = ref.march_rays_dense(origins, dirs, bbox, occ, grid_aabb, step, jitter)
    b = ref.march_rays(origins, dirs, bbox, occ, grid_aabb, step, jitter, factor=4)
    assert a[0].numel() > 0
    assert torch.equal(a[0], b[0])
    torch.testing.assert_close(a[1], b[1], rtol=0, atol=1e-6)
