"""The CPU-fast VM sampling backward against nerfstudio's grid_sample formulation (gsplat-style twin test)."""

import pytest
import torch
from nerfstudio.field_components.encodings import TensorVMEncoding

from nscodec.tensorf.field import ResizableVMEncoding
from nscodec.tensorf.vm_sample import _VMFeatures, vm_features, vm_features_reference


@pytest.mark.parametrize("n,c,inside", [(17, 4, True), (32, 16, True), (9, 3, False)])
def test_fast_backward_matches_grid_sample(n, c, inside):
    g = torch.Generator().manual_seed(n * c)
    plane = torch.randn(3, c, n, n, generator=g, requires_grad=True)
    line = torch.randn(3, c, n, 1, generator=g, requires_grad=True)
    x = torch.rand(4000, 3, generator=g) * 2 - 1
    if not inside:  # zeros padding outside the box, and points exactly on the borders / nodes
        x = x * 1.3
        x[:8] = torch.tensor([-1.0, 1.0, 0.0])
    x[8:16] = torch.linspace(-1, 1, n)[torch.randint(0, n, (8, 3), generator=g)]
    ref = vm_features_reference(plane, line, x)
    out = _VMFeatures.apply(plane, line, x)
    assert torch.equal(out, ref)  # same grid_sample forward
    w = torch.randn(ref.shape, generator=g)
    gp_ref, gl_ref = torch.autograd.grad((ref * w).sum(), (plane, line))
    gp, gl = torch.autograd.grad((out * w).sum(), (plane, line))
    assert gp.shape == plane.shape and gl.shape == line.shape
    torch.testing.assert_close(gp, gp_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gl, gl_ref, rtol=1e-5, atol=1e-4)
    # a broken corner weight or index (e.g. swapped W/H) would be far off: the gradients are not trivially small
    assert gp_ref.abs().max() > 1.0


def test_encoding_forward_equals_nerfstudio():
    enc = ResizableVMEncoding(resolution=12, num_components=5)
    stock = TensorVMEncoding(resolution=12, num_components=5)
    stock.load_state_dict(enc.state_dict())
    x = torch.rand(2, 7, 3) * 2 - 1
    assert torch.equal(enc(x), stock(x))
    torch.autograd.grad(enc(x).sum(), enc.plane_coef)  # differentiable wrt the planes


def test_non_leaf_planes_get_gradients():
    """ECTensoRF feeds decoder outputs (non-leaf tensors) as planes."""
    latent = torch.randn(3, 2, 8, 8, requires_grad=True)
    plane = torch.nn.functional.interpolate(latent, size=(15, 15), mode="bilinear", align_corners=True)
    line = torch.randn(3, 2, 15, 1)
    x = torch.rand(500, 3) * 2 - 1
    (g_fast,) = torch.autograd.grad(vm_features(plane, line, x).sum(), latent)
    (g_ref,) = torch.autograd.grad(vm_features_reference(plane, line, x).sum(), latent)
    torch.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-5)
