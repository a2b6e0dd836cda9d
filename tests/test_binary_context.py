"""Context-adaptive coding of binary grids (occupancy): exact round trips, fewer bytes than DEFLATE on coherent
grids, one clear error on corrupt payloads."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from nscodec.coding.binary_context import decode_binary_grid, encode_binary_grid
from nscodec.errors import NscError, NscFormatError


def _blobs(shape=(64, 60, 56), seed=0) -> np.ndarray:
    """Thresholded smooth noise (about 10% occupied, irregular surfaces): spatially coherent like an occupancy
    grid, not a shape a run-length coder finds trivial."""
    import torch

    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 1, 12, 12, 12, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=shape, mode="trilinear", align_corners=False)[0, 0]
    field = smooth + 0.15 * torch.randn(shape, generator=g)
    return (field > torch.quantile(field.reshape(-1)[::7], 0.9)).numpy()


@pytest.mark.parametrize("shape", [(1, 1, 1), (3, 1, 5), (7, 6, 2)])
def test_random_grids_round_trip(shape):
    g = np.random.default_rng(1).random(shape) < 0.4
    assert np.array_equal(decode_binary_grid(encode_binary_grid(g)), g)
    for const in (np.zeros(shape, bool), np.ones(shape, bool)):
        assert np.array_equal(decode_binary_grid(encode_binary_grid(const)), const)


def test_coherent_grid_round_trips_in_fewer_bytes_than_deflate():
    g = _blobs()
    payload = encode_binary_grid(g)
    assert np.array_equal(decode_binary_grid(payload), g)
    deflate = len(zlib.compress(np.packbits(g.reshape(-1)).tobytes(), 9))
    assert len(payload) < 0.8 * deflate, (len(payload), deflate)


def test_bad_input_and_corrupt_payloads_raise_one_clear_error():
    with pytest.raises(NscError, match="3-D"):
        encode_binary_grid(np.zeros((4, 4), bool))
    with pytest.raises(NscError, match="0/1"):
        encode_binary_grid(np.full((2, 2, 2), 3))
    payload = encode_binary_grid(_blobs((12, 12, 12)))
    with pytest.raises(NscFormatError, match="shorter"):
        decode_binary_grid(payload[:5])
    with pytest.raises(NscFormatError, match="layout"):
        decode_binary_grid(bytes([9]) + payload[1:])
    with pytest.raises(NscFormatError, match="table"):
        decode_binary_grid(payload[:17] + b"\x00" * 8 + payload[25:])


def test_occupancy_section_ctx3d_round_trip(tmp_path):
    import torch

    from nscodec.coding.container import read_nsc, write_nsc
    from nscodec.render import OccupancyGrid
    from nscodec.coding.sections import load_occupancy_section, occupancy_section

    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    src = OccupancyGrid(aabb, 16)
    src.occupied.copy_(torch.from_numpy(_blobs((16, 16, 16)).reshape(src.occupied.shape)))
    secs = [occupancy_section(src, coder="ctx3d")]
    assert secs[0].coder == "ctx3d"
    write_nsc(tmp_path / "o.nsc", "test", {}, secs)
    dst = OccupancyGrid(aabb, 16)
    load_occupancy_section(dst, read_nsc(tmp_path / "o.nsc"))
    assert torch.equal(dst.occupied, src.occupied)
    with pytest.raises(NscError, match="coder"):
        occupancy_section(src, coder="lzma")
