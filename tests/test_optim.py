"""FusedAdamOptimizerConfig: the fused kernel is the same Adam as torch's default path, and it falls back where
torch has no fused kernel."""

import torch

from nscodec.optim import FusedAdamOptimizerConfig


def _train(opt_factory, steps=25):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(64, 32))
    b = torch.nn.Parameter(torch.zeros(32))
    x, y = torch.randn(128, 64), torch.randn(128, 32)
    opt = opt_factory([w, b])
    for _ in range(steps):
        opt.zero_grad()
        ((x @ w + b - y) ** 2).mean().backward()
        opt.step()
    return opt, w.detach(), b.detach()


def test_fused_adam_matches_default_adam_on_cpu():
    cfg = FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15)
    opt, w, b = _train(cfg.setup)
    assert opt.defaults["fused"] is True
    _, w_ref, b_ref = _train(lambda p: torch.optim.Adam(p, lr=1e-2, eps=1e-15))
    assert not torch.equal(w, torch.zeros_like(w))
    torch.testing.assert_close(w, w_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(b, b_ref, rtol=1e-5, atol=1e-6)


def test_fused_adam_falls_back_without_a_fused_kernel():
    """Parameters on a device without a fused Adam kernel (here ``meta``) get torch's default Adam."""
    p = torch.nn.Parameter(torch.empty(4, device="meta"))
    opt = FusedAdamOptimizerConfig(lr=1e-3).setup([p])
    assert not opt.defaults["fused"]
    assert FusedAdamOptimizerConfig(lr=1e-3).setup([torch.nn.Parameter(torch.zeros(3))]).defaults["fused"] is True
