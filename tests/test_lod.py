"""Level-of-detail prefixes of .nsc files (nscodec.coding.lod) — the streaming contract shared by shacira and vqad."""

from __future__ import annotations

import io

import numpy as np
import pytest

from nscodec.coding.container import read_nsc, write_nsc
from nscodec.errors import NscFormatError
from nscodec.coding.tensor_codec import decode_section, raw_section
from nscodec.coding.lod import available_lod, lod_prefix_bytes, lod_table, read_lod_prefix


def _write(path, lods, sizes):
    rng = np.random.default_rng(0)
    secs = []
    for i, (lod, n) in enumerate(zip(lods, sizes)):
        meta = {} if lod is None else {"lod": lod}
        secs.append(raw_section(f"s{i}", rng.integers(0, 255, n).astype(np.uint8), meta=meta))
    write_nsc(path, "test-lod", {}, secs)
    return secs


def test_table_is_cumulative_and_prefixes_decode_exactly_their_levels(tmp_path):
    path = tmp_path / "lod.nsc"
    secs = _write(path, [None, 0, 1, 1, 2], [10, 20, 30, 40, 50])
    full = read_nsc(path)
    table = lod_table(full)
    assert [r["lod"] for r in table] == [0, 1, 2]
    b = [r["bytes"] for r in table]
    assert b[0] < b[1] < b[2] == full.total_bytes == path.stat().st_size
    assert b[1] - b[0] == 70 and b[2] - b[1] == 50  # payload bytes of levels 1 and 2
    assert available_lod(full) == 2
    for lod in (0, 1, 2):
        f = read_lod_prefix(path, lod)
        assert f.available_bytes == b[lod] == lod_prefix_bytes(full, lod)
        assert available_lod(f) == lod
        present = [n for n in f.sections]
        assert present == [s.name for s, l in zip(secs, [0, 0, 1, 1, 2]) if l <= lod]
        for name in present:  # CRC-checked, bit-exact payloads
            assert np.array_equal(decode_section(f.sections[name]), decode_section(full.sections[name]))
    assert read_lod_prefix(path, 99).complete


def test_prefix_between_boundaries_decodes_the_coarser_level(tmp_path):
    path = tmp_path / "lod.nsc"
    _write(path, [0, 1, 2], [16, 16, 16])
    data = path.read_bytes()
    b = [r["bytes"] for r in lod_table(read_nsc(path))]
    assert available_lod(read_nsc(data[: b[1] + 5], allow_prefix=True)) == 1
    with pytest.raises(NscFormatError, match="coarsest level"):
        available_lod(read_nsc(data[: b[0] - 1], allow_prefix=True))


def test_unsorted_levels_are_rejected(tmp_path):
    path = tmp_path / "bad.nsc"
    _write(path, [1, 0], [8, 8])
    with pytest.raises(NscFormatError, match="coarse to fine"):
        lod_table(read_nsc(path))
    path2 = tmp_path / "bad2.nsc"
    _write(path2, [0, "x"], [8, 8])
    with pytest.raises(NscFormatError, match="meta.lod"):
        lod_table(read_nsc(path2))


def test_file_without_levels_is_one_level(tmp_path):
    path = tmp_path / "flat.nsc"
    _write(path, [None, None], [8, 8])
    f = read_nsc(path)
    assert lod_table(f) == [{"lod": 0, "bytes": f.total_bytes, "sections": 2}]
    assert available_lod(f) == 0


def test_info_prints_lod_table(tmp_path):
    import argparse

    from nscodec.cli import info_command

    path = tmp_path / "lod.nsc"
    _write(path, [0, 1, 2], [16, 16, 16])
    out = io.StringIO()
    info_command(argparse.Namespace(file=str(path)), out=out)
    text = out.getvalue()
    assert "levels of detail" in text
    for r in lod_table(read_nsc(path)):
        assert str(r["bytes"]) in text


def test_truncated_file_of_codec_without_lod_is_one_clear_error(tmp_path):
    """A prefix of a codec that has no levels must not decode into a silently wrong model."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    from nscodec.io import export_model, load_model
    from nscodec.tensorf.model import NscTensoRFModelConfig

    torch.manual_seed(0)
    cfg = NscTensoRFModelConfig(init_resolution=16, final_resolution=16)
    model = cfg.setup(scene_box=SceneBox(aabb=torch.tensor([[-1.5] * 3, [1.5] * 3])), num_train_data=1, metadata={})
    path = tmp_path / "m.nsc"
    export_model(model, path)
    data = path.read_bytes()
    with pytest.raises(NscFormatError, match="truncated"):
        load_model(data[: len(data) - 10])
