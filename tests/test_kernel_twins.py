"""Every C++ kernel against its plain-torch twin: values and gradients (gsplat's layout: a kernel is trusted only as far
as it matches the reference). Also how the kernels are chosen: ``NSCODEC_KERNELS`` and a failed build."""

from __future__ import annotations

import shutil

import pytest
import torch

from nscodec import _backend
from nscodec.coding.entropy_models import FactorizedPrior, _rate_kernel
from nscodec.errors import NscError
from nscodec.grid import HashLevels, _torch_impl, _wrapper
from nscodec.optim import FusedSparseAdam, _sparse_adam_kernel


@pytest.fixture(scope="module")
def kernels():
    """The compiled kernels; where a C++ compiler exists they must build (a failed build is a failure, not a skip)."""
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("no C++ compiler on this machine: the torch twins run (tested elsewhere)")
    mods = {"grid": _wrapper.cpu_kernel(), "rate": _rate_kernel(), "adam": _sparse_adam_kernel(),
            "vm": _wrapper.vm_kernel()}
    assert all(m is not None for m in mods.values()), f"a kernel did not build: {_backend._build.cache_info()}"
    return mods


def _levels(T: int = 1 << 10) -> HashLevels:
    """Four levels: two dense (9^3, 10^3 vertices fit T), two hashed."""
    res = torch.tensor([8, 9, 24, 40])
    verts = torch.where((res + 1) ** 3 <= T, res + 1, torch.zeros_like(res)).to(torch.int32)
    sizes = torch.where(verts > 0, (res + 1) ** 3, torch.full_like(res, T))
    offset = torch.cat([torch.zeros(1, dtype=torch.int64), torch.cumsum(sizes, 0)[:-1]])
    return HashLevels(res.float(), offset, verts, T), int(sizes.sum())


def _points(n: int = 3000) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 3, generator=g)
    x[:8] = torch.tensor([[0.0, 0, 0], [1, 1, 1], [0.5, 0.25, 1.0], [1, 0, 0.3], [0.125, 0.375, 0.625],
                          [1 - 1e-7, 0.5, 1e-7], [0.25, 0.25, 0.25], [1, 1, 0]])  # corners, lattice points, edges
    return x


@pytest.mark.parametrize("active", [4, 2, 0])
def test_hash_encoding_kernel_matches_the_torch_twin(kernels, active):
    levels, rows = _levels()
    x = _points()
    table = torch.randn(rows, 2, generator=torch.Generator().manual_seed(1), requires_grad=True)
    ref = _torch_impl.hash_encode(x, table, levels, active)
    out = _wrapper._HashEncodeCpp.apply(table, x, levels, active, kernels["grid"])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    assert (out[:, active:] == 0).all()
    g = torch.randn_like(ref)
    (g_ref,) = torch.autograd.grad(ref, table, g)
    (g_out,) = torch.autograd.grad(out, table, g)
    torch.testing.assert_close(g_out, g_ref, rtol=1e-5, atol=1e-5)
    assert g_out.abs().sum() > 0 if active else g_out.abs().sum() == 0


def test_hash_encoding_backward_does_not_depend_on_the_thread_count(kernels):
    levels, rows = _levels()
    x = _points(20000)
    table = torch.randn(rows, 2, requires_grad=True)
    grads = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        out = _wrapper.hash_encode(x, table, levels)
        grads.append(torch.autograd.grad(out, table, torch.ones_like(out))[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize("res", [1, 5, 16, 70])  # 70: 71^3 vertices, above the bitmap threshold, not a multiple of 64
def test_dense_level_kernels_match_the_torch_twin(kernels, res):
    mod = kernels["grid"]
    x = _points()
    m = (res + 1) ** 3
    lin_t, w_t = _torch_impl.dense_corners(x, res)
    lin_k, w_k = mod.dense_level_corners(x, res)
    assert torch.equal(lin_k, lin_t)
    torch.testing.assert_close(w_k, w_t, rtol=0, atol=1e-7)
    table = torch.randn(m, 5)
    out = torch.zeros(x.shape[0], 5)
    mod.dense_level_forward_(out, x, table, torch.empty(0, dtype=torch.int64), res)
    torch.testing.assert_close(out, _torch_impl.dense_level_forward(x, table, res), rtol=0, atol=1e-6)
    codebook = torch.randn(16, 5)
    idx = torch.randint(0, 16, (m,))
    out = torch.zeros(x.shape[0], 5)
    mod.dense_level_forward_(out, x, codebook, idx, res)
    torch.testing.assert_close(out, _torch_impl.dense_level_forward(x, codebook, res, idx), rtol=0, atol=1e-6)
    g = torch.randn(x.shape[0], 5)
    u_t, G_t = _torch_impl.dense_level_vertex_grads(g, x, res)
    u_k, G_k = mod.dense_level_vertex_grads(g, x, res)
    assert torch.equal(u_k, u_t)
    torch.testing.assert_close(G_k, G_t, rtol=1e-5, atol=1e-5)


def test_non_finite_and_outside_positions_read_inside_the_tables_in_kernel_and_twin(kernels):
    """A NaN / inf / out-of-box sample reads the grid at its clamped position, NaN as 0, in the kernels as in the
    twins, never outside a table (a NaN used to become an arbitrary vertex id in the C++ kernels)."""
    mod = kernels["grid"]
    bad = torch.tensor([[float("nan"), 0.5, 0.5], [0.5, float("inf"), 0.5], [0.5, 0.5, -float("inf")],
                        [1.5, -0.2, 0.5], [float("nan")] * 3, [1e30, -1e30, 2.0]])
    clamped = torch.tensor([[0.0, 0.5, 0.5], [0.5, 1.0, 0.5], [0.5, 0.5, 0.0], [1.0, 0.0, 0.5], [0.0] * 3,
                            [1.0, 0.0, 1.0]])
    for res in (5, 70):
        lin_k, w_k = mod.dense_level_corners(bad, res)
        lin_t, w_t = _torch_impl.dense_corners(bad, res)
        assert torch.equal(lin_k, lin_t) and torch.equal(lin_k, mod.dense_level_corners(clamped, res)[0])
        assert int(lin_k.min()) >= 0 and int(lin_k.max()) < (res + 1) ** 3 and torch.isfinite(w_k).all()
        torch.testing.assert_close(w_k, w_t, rtol=0, atol=1e-7)
    levels, rows = _levels()
    table = torch.randn(rows, 2)
    out = _wrapper._HashEncodeCpp.apply(table, bad, levels, 4, kernels["grid"])
    torch.testing.assert_close(out, _torch_impl.hash_encode(bad, table, levels, 4), rtol=0, atol=1e-6)
    torch.testing.assert_close(out, _torch_impl.hash_encode(clamped, table, levels, 4), rtol=0, atol=1e-6)
    idx, _ = _torch_impl.hash_corners(bad, levels)
    assert int(idx.min()) >= 0 and int(idx.max()) < rows


@pytest.mark.parametrize("mode", ["vq", "float", "hash"])
def test_vq_grid_lookups_and_gradients_match_between_kernel_and_twin(kernels, monkeypatch, mode):
    from nscodec.vqad.grid import MultiLevelVQGrid

    torch.manual_seed(0)
    grid = MultiLevelVQGrid([2, 4, 8], feature_dim=4, mode=mode, bits=3, hash_bits=6)
    x = _points(500)
    results = []
    for impl in ("cpp", "torch"):
        monkeypatch.setenv("NSCODEC_KERNELS", impl)
        grid.zero_grad(set_to_none=True)
        out = grid(x, 2)
        out.pow(2).sum().backward()
        grads = [p.grad.to_dense() if p.grad is not None and p.grad.is_sparse else p.grad for p in grid.parameters()]
        results.append((out.detach(), grads))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1]):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_vq_indices_refreshed_row_by_row_equal_a_full_argmax(kernels):
    """After each lazy-Adam step only the rows with a gradient are re-indexed; the cache must equal argmax of the
    whole table (it would keep stale indices if the optimizer's in-place write went unnoticed)."""
    from nscodec.vqad.grid import MultiLevelVQGrid

    torch.manual_seed(0)
    grid = MultiLevelVQGrid([2, 4, 8], feature_dim=4, mode="vq", bits=3)
    opt = FusedSparseAdam(list(grid.tables), lr=0.5)
    for step in range(6):
        for level in range(grid.num_levels):
            grid.hard_indices(level)  # a valid cache, as after the forward of a training step
        x = torch.rand(300, 3)
        grid(x, 2).pow(2).sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        grid.refresh_touched_indices()
        for level in range(grid.num_levels):
            cached = grid._index_cache[level]
            assert cached is not None and cached[0][1] == grid.tables[level]._version  # the incremental path ran
            assert torch.equal(grid.hard_indices(level), grid.tables[level].argmax(dim=-1))


def test_fused_sparse_adam_matches_torch_sparse_adam_and_bumps_versions(kernels):
    torch.manual_seed(0)
    p_ref = torch.nn.Parameter(torch.randn(500, 6))
    p_new = torch.nn.Parameter(p_ref.detach().clone())
    ref = torch.optim.SparseAdam([p_ref], lr=0.05, betas=(0.8, 0.99), eps=1e-8)
    new = FusedSparseAdam([p_new], lr=0.05, betas=(0.8, 0.99), eps=1e-8)
    for _ in range(5):
        idx = torch.randint(0, 500, (200,))  # repeats: an uncoalesced gradient
        w = torch.randn(200, 6)
        for p in (p_ref, p_new):
            (torch.nn.functional.embedding(idx, p, sparse=True) * w).sum().backward()
        version = p_new._version
        ref.step()
        new.step()
        assert p_new._version > version
        ref.zero_grad()
        new.zero_grad()
    torch.testing.assert_close(p_new, p_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(new.state[p_new]["exp_avg_sq"], ref.state[p_ref]["exp_avg_sq"], rtol=1e-5, atol=1e-8)


def test_sparse_adam_skips_the_sort_only_for_rows_already_in_order():
    """A gradient whose rows are strictly increasing (as the grid kernels emit them) is taken as coalesced without a
    sort; one with repeated or unordered rows is still summed and sorted."""
    from nscodec.optim import _coalesced

    vals = torch.randn(4, 3)
    in_order = torch.sparse_coo_tensor(torch.tensor([[1, 4, 7, 9]]), vals, (10, 3))
    out = _coalesced(in_order)
    assert out.is_coalesced() and torch.equal(out._values(), vals) and torch.equal(out.to_dense(), in_order.to_dense())
    for rows in ([4, 1, 4, 9], [1, 4, 4, 9], [9, 7, 4, 1]):
        bad = torch.sparse_coo_tensor(torch.tensor([rows]), vals, (10, 3))
        out = _coalesced(bad)
        assert out.is_coalesced() and out._nnz() == len(set(rows))
        torch.testing.assert_close(out.to_dense(), bad.to_dense())


@pytest.mark.parametrize("channels", [16, 5])
def test_vm_encoding_kernel_matches_nerfstudios_tensor_vm_encoding(kernels, channels):
    """The fused VM kernel against nerfstudio's TensorVMEncoding.forward (grid_sample) and our torch twin: features and
    both factor gradients, at grid points, edges, outside the grid (zero padding) and at a non-multiple of the SIMD
    width; a non-finite position reads zeros; the gradients do not depend on the thread count."""
    from nerfstudio.field_components.encodings import TensorVMEncoding

    torch.manual_seed(0)
    enc = TensorVMEncoding(resolution=23, num_components=channels)
    x = torch.rand(2000, 3) * 2.4 - 1.2  # some samples beyond the grid on every side
    x[:6] = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [0.0, 0.0, 0.0], [1.0, -1.0, 0.5],
                          [1 + 1e-6, 0.3, -0.2], [-1.09, 0.999, 0.0]])
    ref = enc(x)
    out = _wrapper._VMEncodeCpp.apply(enc.plane_coef, enc.line_coef, x, kernels["vm"])
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    torch.testing.assert_close(_torch_impl.vm_encode(x, enc.plane_coef, enc.line_coef), ref, rtol=0, atol=1e-7)
    assert (out[1000:] != 0).any() and (ref.abs().amax(-1) == 0).any()  # the padding is exercised
    g = torch.randn_like(ref)
    g_ref = torch.autograd.grad(ref, [enc.plane_coef, enc.line_coef], g)
    g_out = torch.autograd.grad(out, [enc.plane_coef, enc.line_coef], g)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = torch.autograd.grad(_wrapper.vm_encode(x, enc.plane_coef, enc.line_coef), [enc.plane_coef], g)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, g_out[0])
    bad = torch.tensor([[float("nan"), 0.0, 0.0], [0.0, float("inf"), 0.0]])
    assert (kernels["vm"].vm_encode_forward(enc.plane_coef.detach().permute(0, 2, 3, 1).contiguous(),
                                            enc.line_coef.detach()[..., 0].permute(0, 2, 1).contiguous(), bad) == 0).all()
    with pytest.raises(ValueError, match="lines must be"):
        _wrapper.vm_encode(x, enc.plane_coef, enc.line_coef[:, :, :-1])


def test_kernels_are_built_with_openmp_and_share_torchs_runtime(kernels):
    """ATen's parallel_for is inline OpenMP: a kernel compiled without -fopenmp runs on one thread whatever
    torch.get_num_threads() says. Every kernel must call into OpenMP, and the ``libgomp.so.1`` they need must resolve
    to the one torch loaded, not to a second copy with its own thread pool (other wheels, e.g. rawpy, may bring
    their own runtime under a different name; that is theirs)."""
    from pathlib import Path

    for name, mod in kernels.items():
        assert b"GOMP_parallel" in Path(mod.__file__).read_bytes(), f"kernel {name} was built without OpenMP"
    maps = Path("/proc/self/maps")
    if maps.exists():
        paths = {line.split()[-1] for line in maps.read_text().splitlines() if "/libgomp.so" in line}
        assert len(paths) == 1, f"more than one libgomp.so.1 loaded: {sorted(paths)}"


@pytest.mark.parametrize("upstream", [1.0, 0.37, -2.0])
def test_factorized_rate_kernel_matches_the_likelihood_path(kernels, upstream):
    torch.manual_seed(0)
    prior = FactorizedPrior(3)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    y = torch.randn(3, 1001) * 4  # not a multiple of the SIMD width: the tail lanes are masked
    y[0, :4] = torch.tensor([0.0, 60.0, -60.0, 0.5])  # far tails: likelihoods at the lower bound
    y.requires_grad_(True)
    params = [y] + [p for n, p in prior.named_parameters() if n != "quantiles"]
    ref = FactorizedPrior.rate_bits(prior.likelihood(y))
    out = prior.rate(y)
    assert out.grad_fn is not None and "FactorizedRate" in type(out.grad_fn).__name__
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-3)
    g_ref = torch.autograd.grad(ref * upstream, params)
    g_out = torch.autograd.grad(out * upstream, params)
    for a, b in zip(g_out, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-6)
    with torch.no_grad():
        torch.testing.assert_close(prior.rate(y), ref.detach(), rtol=1e-5, atol=1e-3)


def test_tabulated_rate_kernel_matches_its_twin_for_any_thread_count(kernels):
    from nscodec.coding.entropy_models import _tabulated_rate_torch

    g = torch.Generator().manual_seed(0)
    C, K, N = 3, 64, 70001  # N spans several blocks of the kernel and is not a multiple of one
    lo, h = torch.tensor([-4.0, -1.0, 0.5]), torch.tensor([0.125, 0.03125, 0.0625])
    v = lo[:, None] + torch.rand(C, N, generator=g) * (h[:, None] * (K - 1))
    v[:, :3] = torch.stack([lo, lo + h * (K - 1), lo + 7 * h], 1)  # both ends and a knot exactly
    f, df = torch.rand(C, K, generator=g) * 8, torch.randn(C, K, generator=g)
    ref = _tabulated_rate_torch(v, f, df, lo, 1.0 / h, True)
    threads = torch.get_num_threads()
    try:
        outs = []
        for n in (1, 2):
            torch.set_num_threads(n)
            outs.append(kernels["rate"].tabulated_rate(v, f, df, lo, 1.0 / h, True))
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(outs[0][0], ref[0], rtol=1e-6, atol=1e-3)
    torch.testing.assert_close(outs[0][1], ref[1], rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(outs[0][2], ref[2], rtol=1e-5, atol=1e-4)
    assert all(torch.equal(a, b) for a, b in zip(outs[0], outs[1]))  # blocks summed in order: thread-independent
    vt = v.t().contiguous().t()  # the channel-first view of channel-last latents [N, C], as shacira's
    out_t = kernels["rate"].tabulated_rate(vt, f, df, lo, 1.0 / h, True)
    assert all(torch.equal(a, b) for a, b in zip(out_t, outs[0])) and out_t[2].stride() == vt.stride()
    assert float(ref[1].sum()) == pytest.approx(C * N, rel=1e-6)  # every latent spreads a weight of 1 over 2 knots
    assert len(kernels["rate"].tabulated_rate(v, f, df, lo, 1.0 / h, False)) == 1


@pytest.mark.parametrize("kernel_choice", ["cpp", "torch"])
def test_tabulated_rate_matches_the_exact_rate_and_its_gradients(kernels, monkeypatch, kernel_choice):
    """The training rate through knots: the value and every gradient within interpolation error of the exact rate;
    too wide a spread of latents, too few latents, or no gradient take the exact path."""
    monkeypatch.setenv("NSCODEC_KERNELS", kernel_choice)
    torch.manual_seed(0)
    prior = FactorizedPrior(2)
    with torch.no_grad():
        for p in prior.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    y = (torch.randn(2, 60000) * 3).requires_grad_(True)
    params = [y] + [p for n, p in prior.named_parameters() if n != "quantiles"]
    exact = prior.rate(y)
    tab = prior.rate(y, knots=4096)
    assert "TabulatedRate" in type(tab.grad_fn).__name__
    torch.testing.assert_close(tab, exact, rtol=1e-5, atol=0.0)
    g_exact = torch.autograd.grad(exact, params)
    g_tab = torch.autograd.grad(tab, params)
    rel = [float((a - b).norm() / b.norm()) for a, b in zip(g_tab, g_exact)]
    assert max(rel) < 1e-4, rel
    wide = y.detach().clone()
    wide[0, 0] = 1e4  # a spread of 1e4 over 4096 knots: spacing 2.4 > 1/32
    for exact_path in (prior.rate(wide.requires_grad_(True), knots=4096), prior.rate(y[:, :1000], knots=4096)):
        assert "TabulatedRate" not in type(exact_path.grad_fn).__name__
    with torch.no_grad():
        assert float(prior.rate(y, knots=4096)) == float(prior.rate(y))


@pytest.mark.parametrize("mode", ["mixed", "round"])
def test_open_masked_prior_takes_the_fused_rate_and_matches_the_likelihood_path(kernels, mode):
    """A deterministic, fully open mask (ectensorf with use_mask off) rates through FactorizedPrior.rate: the same
    bits and gradients as masking per-latent likelihoods; a partly closed mask keeps the likelihood path."""
    from nscodec.coding.entropy_models import MaskedFactorizedPrior

    torch.manual_seed(0)
    masked = MaskedFactorizedPrior(4, 9, 7, init_mask_logit=30.0)
    y = (torch.randn(4, 9, 7) * 3).requires_grad_(True)
    torch.manual_seed(1)
    y_hat, bits, info = masked(y, mode=mode, stochastic=False)
    assert "FactorizedRate" in type(info["latent_bits"].grad_fn).__name__
    torch.manual_seed(1)
    ref_hat, lik = masked.prior(y, mode)
    ref = -torch.log2(lik).sum()
    torch.testing.assert_close(info["latent_bits"], ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(y_hat, ref_hat * 1.0)
    params = ([y] if mode == "mixed" else []) + [p for n, p in masked.prior.named_parameters() if n != "quantiles"]
    for a, b in zip(torch.autograd.grad(bits, params), torch.autograd.grad(ref + info["mask_bits"], params)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-6)
    with torch.no_grad():
        masked.mask_logits[0] = -30.0  # channel 0 closed: only the other channels' latents cost bits
    _, _, info = masked(y, mode="round", stochastic=False)
    _, lik = masked.prior(y, "round")
    torch.testing.assert_close(info["latent_bits"], -torch.log2(lik[1:]).sum(), rtol=1e-5, atol=1e-3)


def test_kernel_choice_rejects_unknown_values(monkeypatch):
    monkeypatch.setenv("NSCODEC_KERNELS", "fast")
    with pytest.raises(NscError, match="NSCODEC_KERNELS"):
        _backend.kernel_choice()


def test_a_failed_build_falls_back_to_the_twin_with_one_warning_or_fails_when_cpp_is_required(monkeypatch):
    monkeypatch.setattr(_backend, "_build", lambda name, source, simd: (None, "CalledProcessError: no compiler"))
    _backend._warn_once.cache_clear()
    monkeypatch.setenv("NSCODEC_KERNELS", "auto")
    levels, rows = _levels()
    x = _points(100)
    table = torch.randn(rows, 2)
    with pytest.warns(RuntimeWarning, match="no compiler"):
        out = _wrapper.hash_encode(x, table, levels)
    torch.testing.assert_close(out, _torch_impl.hash_encode(x, table, levels, 4))
    assert _wrapper.implementation("cpu") == "torch"
    monkeypatch.setenv("NSCODEC_KERNELS", "cpp")
    with pytest.raises(NscError, match="did not build.*no compiler"):
        _wrapper.hash_encode(x, table, levels)
    monkeypatch.setenv("NSCODEC_KERNELS", "torch")
    assert _wrapper.implementation("cpu") == "torch"


@pytest.mark.parametrize("error, builds", [("fatal error: omp.h: No such file or directory", 2),
                                           ("error: 'foo' was not declared in this scope", 1)])
def test_a_build_is_retried_without_openmp_only_when_openmp_failed(monkeypatch, error, builds):
    from torch.utils import cpp_extension

    calls = []

    def load(name, sources, extra_cflags, verbose, extra_ldflags=()):
        calls.append("-fopenmp" in extra_cflags)
        if "-fopenmp" in extra_cflags:
            raise RuntimeError(f"Error building extension '{name}': {error}")
        return "module"

    monkeypatch.setattr(cpp_extension, "load", load)
    monkeypatch.setattr(_backend, "_build_dir", lambda name: None)
    mod, why = _backend._build.__wrapped__("nscodec_test_retry", "nowhere.cpp", False)  # uncached: real kernels stay
    assert calls == [True, False][:builds]
    built = _backend.build_name("nscodec_test_retry", "nowhere.cpp", ["-O3", "-ffp-contract=off", "-fno-math-errno"])
    assert (mod, why) == (("module", "") if builds == 2 else (None, f"RuntimeError: Error building extension "
                                                                  f"'{built}': {error}"))


def test_two_checkouts_never_share_a_kernel_build_folder(tmp_path):
    """A shared folder made ninja rebuild whenever the other checkout had built last (its build.ninja names the other
    source path), so every process start of alternating checkouts paid a compile."""
    a, b = tmp_path / "a" / "grid_encode.cpp", tmp_path / "b" / "grid_encode.cpp"
    flags = ["-O3"]
    assert _backend.build_name("nscodec_grid_encode", str(a), flags) == _backend.build_name("nscodec_grid_encode", str(a), flags)
    assert _backend.build_name("nscodec_grid_encode", str(a), flags) != _backend.build_name("nscodec_grid_encode", str(b), flags)
    assert _backend.build_name("nscodec_grid_encode", str(a), flags) != _backend.build_name("nscodec_grid_encode", str(a), ["-O2"])
    assert _backend.build_name("nscodec_grid_encode", str(a), flags).startswith("nscodec_grid_encode_")


def test_a_lock_left_by_a_killed_build_is_removed_once_stale_and_a_live_one_is_waited_for(tmp_path):
    import os
    import time

    build = tmp_path / "nscodec_grid_encode"
    build.mkdir()
    (build / "build.ninja").write_text("rule cxx\n")
    lock = build / "lock"
    assert not _backend.clear_stale_lock(build, stale_after=60.0)  # no lock: nothing to wait for
    lock.touch()
    old = time.time() - 3600
    for f in build.iterdir():
        os.utime(f, (old, old))
    with pytest.warns(RuntimeWarning, match="removed the lock"):
        assert _backend.clear_stale_lock(build, stale_after=60.0)
    assert not lock.exists() and (build / "build.ninja").exists()
    lock.touch()  # a build that is alive: waited for until its files stop changing for stale_after
    t0 = time.perf_counter()
    with pytest.warns(RuntimeWarning, match="removed the lock"):
        assert _backend.clear_stale_lock(build, stale_after=0.4, poll=0.05)
    assert time.perf_counter() - t0 >= 0.3


def test_a_lock_released_by_its_build_is_left_alone(tmp_path):
    import threading
    import warnings

    build = tmp_path / "ext"
    build.mkdir()
    lock = build / "lock"
    lock.touch()
    threading.Timer(0.2, lock.unlink).start()  # the other process finishes its build
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _backend.clear_stale_lock(build, stale_after=30.0, poll=0.05)
