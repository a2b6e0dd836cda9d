"""The model ↔ ``.nsc`` contract, checked for every registered codec (``nscodec.io.CODECS``) on a generated scene.

Each codec trains a few steps with nerfstudio's Trainer (its registered preset, sized down), then: the trained model
is finalized and its file decodes bit-identically; ``compressed_bytes`` is the file's size; a file prefix decodes the
coarser levels (or is refused, for codecs without levels); decoding gives the same tensors with 1 and 2 threads;
an export in the middle of training leaves the training state bit-identical; and a set of bad files (corrupt,
truncated, and CRC-valid crafted headers) is rejected with one checked ``NscFormatError`` each.
A codec added to ``CODECS`` fails :func:`test_every_codec_is_covered` until it is added here.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Callable, Dict, Tuple

import pytest
import torch

from nscodec.coding import container
from nscodec.coding.container import PREAMBLE_SIZE
from nscodec.errors import NscFormatError
from nscodec.io import CODECS, UnvalidatedDecodeError
from tests.helpers import rays, render, train


def _tensorf(ctx):
    from nscodec_configs.method_configs import tensorf_trainer_config

    return tensorf_trainer_config(max_steps=20), 20, dict(
        init_resolution=16, final_resolution=24, upsampling_iters=(10,), occupancy_warmup=8, occupancy_update_every=8,
        occupancy_resolution=32)


def _ectensorf(ctx):
    from nscodec_configs.method_configs import ectensorf_trainer_config

    return ectensorf_trainer_config(stage1_steps=16, stage2_steps=12), 28, dict(
        init_resolution=16, final_resolution=24, upsampling_iters=(8,), occupancy_warmup=6, occupancy_update_every=6,
        occupancy_resolution=32, importance_batches=2, latent_prefit_steps=10)


def _shacira(ctx):
    from nscodec_configs.shacira_configs import shacira_trainer_config

    return shacira_trainer_config(max_steps=20, rays=256, num_levels=4, max_res=32, log2_hashmap_size=10,
                                  occupancy_resolution=32, anneal_fraction=0.5), 20, {}


def _vqad(ctx):
    from nscodec_configs.vqad_configs import vqad_trainer_config

    return vqad_trainer_config(max_steps=20), 20, dict(base_resolution=4, num_levels=3, occupancy_resolution=32,
                                                       occupancy_warmup=6, occupancy_update_every=6)


def _codecnerf(ctx):
    from nscodec_configs.codecnerf_configs import codecnerf_trainer_config

    return codecnerf_trainer_config(mode="peft_ec", max_steps=8, codec_model_path=ctx["codec_model"],
                                    occupancy_resolution=32), 8, {}


#: codec → (its registered preset, sized down for a few CPU seconds): (trainer config, steps, model overrides)
CONFORMANCE: Dict[str, Callable[[Dict[str, Any]], Tuple[Any, int, Dict[str, Any]]]] = {
    "nscodec-tensorf": _tensorf,
    "ectensorf": _ectensorf,
    "shacira": _shacira,
    "vqad": _vqad,
    "codecnerf": _codecnerf,
}


def test_every_codec_is_covered():
    assert set(CONFORMANCE) == set(CODECS)


@pytest.fixture(scope="module")
def ctx(codec_model):
    return {"codec_model": codec_model[0]}


def _run(codec, ctx, scene, work, on_step=None):
    torch.manual_seed(0)
    config, steps, overrides = CONFORMANCE[codec](ctx)
    return train(config, scene, work, steps, 256, on_step=on_step, **overrides)


_TRAINED: Dict[str, Any] = {}


@pytest.fixture(params=sorted(CONFORMANCE))
def trained(request, ctx, scene, tmp_path_factory):
    """``(codec, config_yml, trainer, exported file)`` — one training per codec, shared by the tests of this file."""
    codec = request.param
    if codec not in _TRAINED:
        from nscodec.data import training_meta
        from nscodec.io import export_model

        work = tmp_path_factory.mktemp(codec)
        config_yml, trainer = _run(codec, ctx, scene, work)
        path = work / "scene.nsc"
        export_model(trainer.pipeline.model, path, meta=training_meta(trainer.pipeline.config))
        _TRAINED[codec] = (codec, config_yml, trainer, path)
    return _TRAINED[codec]


def test_the_file_carries_the_training_cameras(trained):
    from nscodec.cameras import CAMERAS_SECTION, MAX_STORED_CAMERAS, decode_cameras
    from nscodec.coding.container import read_nsc
    from nscodec.coding.lod import lod_table

    _, _, trainer, path = trained
    nsc = read_nsc(path)
    assert nsc.index[0].name == CAMERAS_SECTION  # level 0: a prefix that decodes anything also opens in a viewer
    cams, view = decode_cameras(nsc.sections[CAMERAS_SECTION])
    train = trainer.pipeline.datamanager.train_dataset.cameras
    assert len(cams) == min(len(train), MAX_STORED_CAMERAS)
    assert torch.allclose(cams.camera_to_worlds, train.camera_to_worlds[: len(cams)].float(), atol=1e-6)
    centre_dir = torch.nn.functional.normalize(-cams.camera_to_worlds[view, :, 3], dim=0)  # scene centred at 0
    assert float((centre_dir * -cams.camera_to_worlds[view, :, 2]).sum()) > 0.9  # it looks at the scene
    assert lod_table(nsc)[-1]["bytes"] == path.stat().st_size


def test_trained_model_is_finalized_and_its_file_decodes_bit_identically(trained):
    from nscodec.io import load_model

    codec, _, trainer, path = trained
    model = trainer.pipeline.model
    assert model.finalized == model.finalize_at_last_step  # the last step rounded it in place (post-hoc codecs: not)
    stored = model.finalized_copy()
    assert (stored is model) == model.finalize_at_last_step
    decoded, nsc = load_model(path)
    assert nsc.method == codec and decoded.finalized
    bundle = rays(256)
    a, b = render(stored, bundle), render(decoded, bundle)
    assert torch.equal(a, b)
    assert (a < 0.98).any(), "rays aimed at the scene should hit something"


def test_a_decoded_model_exports_the_same_file(trained, tmp_path):
    """Re-exporting a decoded file gives back its bytes (a decoded model does not carry the trained entropy models,
    so re-encoding it could only be worse)."""
    from nscodec.coding.container import read_nsc
    from nscodec.io import export_model, load_model

    _, _, _, path = trained
    model, nsc = load_model(path)
    export_model(model, tmp_path / "again.nsc", meta=nsc.meta)
    assert (tmp_path / "again.nsc").read_bytes() == path.read_bytes()


def test_the_checkpoint_reloads_the_model_it_saved(trained):
    """What `ns-export compressed` / `ns-eval` / `ns-viewer` load (nerfstudio's eval_setup on the run's checkpoint)
    is the trained model: finalized as it was, rendering the same bits."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, config_yml, trainer, _ = trained
    _, pipeline, _, _ = eval_setup(config_yml, test_mode="inference")
    model = trainer.pipeline.model
    assert pipeline.model.finalized == model.finalized
    bundle = rays(128, seed=5)
    assert torch.equal(render(pipeline.model, bundle), render(model, bundle))


def test_compressed_bytes_is_the_file_size(trained):
    _, _, trainer, path = trained
    assert trainer.pipeline.compressed_bytes() == os.path.getsize(path)


def test_a_prefix_decodes_the_coarser_levels(trained):
    from nscodec.coding.container import read_nsc
    from nscodec.io import load_model
    from nscodec.coding.lod import lod_table

    _, _, trainer, path = trained
    model = trainer.pipeline.model.finalized_copy()
    data = path.read_bytes()
    if not model.supports_lod:
        with pytest.raises(NscFormatError, match="truncated"):
            load_model(data[:-1])
        return
    table = lod_table(read_nsc(path))
    assert [r["lod"] for r in table] == list(range(model.num_lods)) and table[-1]["bytes"] == len(data)
    from nscodec.io import lod_bytes

    assert lod_bytes(model) == [r["bytes"] for r in table]
    bundle = rays(128)
    for row in table:
        decoded, nsc = load_model(data[: row["bytes"]])
        assert decoded.lod == decoded.decoded_lod == row["lod"] and nsc.available_bytes == row["bytes"]
        assert lod_bytes(decoded) == lod_bytes(model)  # the level table travels in the header
        model.set_lod(row["lod"])
        assert torch.equal(render(decoded, bundle), render(model, bundle))
    with pytest.raises(ValueError):
        model.set_lod(model.num_lods)


def test_decoding_gives_the_same_tensors_with_1_and_2_threads(trained):
    from nscodec.io import load_model

    _, _, _, path = trained
    old = torch.get_num_threads()
    got = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            torch.manual_seed(0)  # parts a file does not store (e.g. a training-only prior) start alike
            model, _ = load_model(path)
            got.append({**{k: v.clone() for k, v in model.state_dict().items()},
                        **{f"decoded:{k}": v.clone() for k, v in model.decoded_tensors().items()}})
    finally:
        torch.set_num_threads(old)
    assert got[0].keys() == got[1].keys()
    for k in got[0]:
        assert torch.equal(got[0][k], got[1][k]), k


def _state(trainer) -> Dict[str, torch.Tensor]:
    """Every parameter and buffer of the model and every optimizer state tensor, flat."""
    out = {f"model:{k}": v.detach().clone() for k, v in trainer.pipeline.model.state_dict().items()}
    for group, opt in trainer.optimizers.optimizers.items():
        for i, st in enumerate(opt.state_dict()["state"].values()):
            for k, v in st.items():
                if torch.is_tensor(v):
                    out[f"opt:{group}:{i}:{k}"] = v.detach().clone()
    return out


def test_an_export_mid_training_leaves_the_training_state_untouched(trained, ctx, scene, tmp_path):
    """Export (and ns-eval's metrics with compressed_bytes) in the middle of a run: the rest of the run is
    bit-identical to the same run without it."""
    from nscodec.io import export_model, load_model

    codec, _, reference, _ = trained
    _, steps, _ = CONFORMANCE[codec](ctx)
    mid = {"ectensorf": 20}.get(codec, steps // 2)  # ectensorf: inside stage 2, where export rounds a copy
    seen = {}

    def export_midway(trainer, step):
        if step == mid:
            model = trainer.pipeline.model
            seen["size"] = export_model(model, tmp_path / "mid.nsc", meta=model.export_meta)
            seen["metrics"] = trainer.pipeline.get_average_eval_image_metrics()
            seen["decoded"], _ = load_model(tmp_path / "mid.nsc")
            seen["stored"] = render(model.finalized_copy(), rays(64))

    _, run = _run(codec, ctx, scene, tmp_path / "run", on_step=export_midway)
    assert seen["metrics"]["compressed_bytes"] == seen["size"] == os.path.getsize(tmp_path / "mid.nsc")
    assert torch.equal(render(seen["decoded"], rays(64)), seen["stored"])  # PSNR and bytes of the same model
    a, b = _state(reference), _state(run)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# ---------------------------------------------------------------------------------------------------- bad files
def _split(data: bytes):
    _, _, minor, total, hlen, _ = struct.unpack_from("<4sHHQII", data)
    return json.loads(data[PREAMBLE_SIZE:PREAMBLE_SIZE + hlen]), data[PREAMBLE_SIZE + hlen:]


def _pack(header, payload: bytes, header_raw: bytes | None = None) -> bytes:
    """A file with a valid checksum around ``header``: what a buggy writer or a crafted file produces."""
    raw = json.dumps(header).encode() if header_raw is None else header_raw
    head = struct.pack("<4sHHQII", b"NSC\x00", 1, 1, PREAMBLE_SIZE + len(raw) + len(payload), len(raw), 0)
    return head[:20] + struct.pack("<I", container.header_crc(head, raw, 1)) + raw + payload


def _edit(fn):
    """A mutation that edits the parsed header (``fn`` returns False when the file has nothing it applies to)."""
    def mutate(data: bytes):
        header, payload = _split(data)
        if fn(header) is False:
            return None
        return _pack(header, payload)
    return mutate


def _section(header, pred):
    return next((s for s in header["sections"] if pred(s)), None)


def _retype_float(header):
    """A raw float section declared as the integer type of the same width (a buggy writer): must not be reinterpreted."""
    sec = _section(header, lambda s: s["coder"] == "raw" and s["dtype"] in ("float16", "float32"))
    sec["dtype"] = {"float16": "int16", "float32": "int32"}[sec["dtype"]]


def _occupancy_meta(**kw):
    def fn(header):
        sec = _section(header, lambda s: s["name"] == "occupancy")
        if sec is None:  # codecnerf recomputes its grid: no occupancy section
            return False
        for k, v in kw.items():
            if v is None:
                sec["meta"].pop(k)
            else:
                sec["meta"][k] = v
    return fn


def _deep(data: bytes) -> bytes:
    header, payload = _split(data)
    raw = json.dumps(header).encode()
    return _pack(None, payload, raw[:-1] + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}")


def _payload_edit(pred, fn):
    """Replace the payload of the first section matching ``pred`` by ``fn(payload)``, with its length, CRC and the
    later offsets recomputed: a file whose every checksum holds."""
    import zlib

    def mutate(data: bytes):
        header, payload = _split(data)
        sec = _section(header, pred)
        if sec is None:
            return None
        parts, pos = [], 0
        for s in header["sections"]:
            body = payload[s["offset"]:s["offset"] + s["nbytes"]]
            if s is sec:
                body = fn(body)
                s.update(nbytes=len(body), crc32=zlib.crc32(body))
            s["offset"] = pos
            pos += len(body)
            parts.append(body)
        return _pack(header, b"".join(parts))
    return mutate


def _meta_everywhere(key, value):
    """Set ``meta[key] = value`` on every section that has ``key`` (False when none has it)."""
    def fn(header):
        hit = [s for s in header["sections"] if key in s["meta"]]
        for s in hit:
            s["meta"][key] = value
        return bool(hit) or False
    return fn


def _finest_lod(value):
    """Set ``meta.lod = value`` on the last section that has a level (False when none has one)."""
    def fn(header):
        hit = [s for s in header["sections"] if "lod" in s["meta"]]
        if hit:
            hit[-1]["meta"]["lod"] = value
        return bool(hit) or False
    return fn


def _model_fields(**values):
    """Set model config fields, only where this codec's config has all of them (False otherwise)."""
    def fn(header):
        model = header["config"]["model"]
        if not all(k in model for k in values):
            return False
        model.update(values)
    return fn


def _first_entropy_int64(header):
    sec = _section(header, lambda s: s["coder"] == "ans")
    if sec is None:
        return False
    sec["dtype"] = "int64"


def _reshape(header):
    sec = _section(header, lambda s: s["coder"] == "raw" and len(s["shape"]) >= 1)
    sec["shape"] = sec["shape"] + [1]


def _rename(header):
    header["sections"][-1]["name"] = "renamed"


def _preamble(offset, fmt, delta):
    def mutate(data: bytes):
        b = bytearray(data)
        struct.pack_into(fmt, b, offset, struct.unpack_from(fmt, b, offset)[0] + delta)
        return bytes(b)
    return mutate


#: crafted and corrupt files that every decoder must refuse with one checked NscFormatError. The second group is the
#: fixed corpus of cases bench/fuzz_nsc.py found or that a validator once missed (decoded silently or failed inside).
BAD_FILES = {
    "payload bit flip": lambda d: d[:-5] + bytes([d[-5] ^ 0x10]) + d[-4:],
    "trailing bytes": lambda d: d + b"\x00",
    "unknown codec": _edit(lambda h: h.update(method="bogus")),
    "unknown enum value": _edit(lambda h: h["config"]["model"].update(background_color="bogus")),
    "string for an int": _edit(lambda h: h["config"].update(num_train_data="forty")),
    "huge occupancy grid": _edit(lambda h: h["config"]["model"].update(occupancy_resolution=4096)),
    "non-finite scene box": _edit(lambda h: h["config"].update(scene_box=[[-1.5] * 3, [1e300] * 3])),
    "scene box of the wrong length": _edit(lambda h: h["config"].update(scene_box=[[-1.5] * 3, [1.5, 1.5]])),
    "huge section shape": _edit(lambda h: h["sections"][0].update(shape=[2**64])),
    "float read as int": _edit(_retype_float),
    "occupancy box missing": _edit(_occupancy_meta(bbox=None)),
    "occupancy box at 1e300": _edit(_occupancy_meta(bbox=[0, 0, 0, 1e300, 1, 1])),
    "header nested 2000 deep": _deep,
    # --- the fuzz corpus
    "minor version flipped (under the header CRC)": _preamble(6, "<H", 4095),
    "declared length one short": _preamble(8, "<Q", -1),
    "section reshaped to the same element count": _edit(_reshape),
    "entropy section declared int64": _edit(_first_entropy_int64),
    "section renamed": _edit(_rename),
    "unknown config field": _edit(lambda h: h["config"]["model"].update(nscodec_fuzz_unknown=1)),
    "float for an int config field": _edit(lambda h: h["config"]["model"].update(occupancy_resolution=32.5)),
    "meta resolution 2**64": _edit(_meta_everywhere("resolution", 2**64)),
    "meta count off by one": _edit(_meta_everywhere("count", -1)),
    "finest level's meta.lod 2**31": _edit(_finest_lod(2**31)),
    "power-of-two exponent out of range": _edit(_meta_everywhere("exp", [400])),
    "plane resolution 10**6": _edit(_meta_everywhere("plane_resolution", 10**6)),
    "zlib stream with trailing bytes": _payload_edit(lambda s: s["coder"] == "zlib", lambda b: b + b"\x00\x00"),
    "ctx3d stream with a trailing word": _payload_edit(lambda s: s["coder"] == "ctx3d", lambda b: b + b"\x00" * 4),
    "ans stream with a trailing word": _payload_edit(lambda s: s["coder"] == "ans", lambda b: b + b"\x00" * 4),
    "viewer default view out of range": _edit(_meta_everywhere("default_view", 10**6)),
    "viewer image sizes of the wrong count": _edit(_meta_everywhere("width", [48, 48])),
    "viewer cameras as float16": _edit(lambda h: _section(h, lambda s: s["name"] == "viewer.cameras").update(dtype="float16", shape=[1, 16])),
    # --- scene contraction (captures)
    "scene contraction of an unknown kind": _edit(lambda h: h["config"]["model"].update(scene_contraction="maybe")),
    "near plane beyond the far plane": _edit(lambda h: h["config"]["model"].update(scene_contraction="on", near_plane=10.0,
                                                                                 far_plane=1.0)),
    "far plane 1e300": _edit(lambda h: h["config"]["model"].update(scene_contraction="on", far_plane=1e300)),
    "near plane null (unresolved)": _edit(lambda h: h["config"]["model"].update(scene_contraction="on", near_plane=None)),
    "negative contraction radius": _edit(lambda h: h["config"]["model"].update(scene_contraction="on",
                                                                              contraction_inner_radius=-1.0)),
    "training samples per ray 2**40": _edit(lambda h: h["config"]["model"].update(train_samples_per_ray=2**40)),
    # --- allocation bombs inside the per-field limits, schedules, non-finite weights
    "6 GB of planes inside every per-field limit": _edit(_model_fields(final_resolution=1024, num_den_components=512,
                                                                       num_color_components=512)),
    "occupancy grid at its 512 limit": _edit(lambda h: h["config"]["model"].update(occupancy_resolution=512)),
    "upsampling step 2**64": _edit(_model_fields(upsampling_iters=[2**64])),
    "upsampling at the stage switch": _edit(_model_fields(upsampling_iters=[900], stage1_steps=600)),
    "stage 1 of -1 steps": _edit(_model_fields(stage1_steps=-1)),
    "a schedule of 10**5 steps": _edit(_model_fields(upsampling_iters=list(range(1, 10**5)))),
    "NaN in a stored float": _payload_edit(lambda s: s["coder"] == "raw" and s["dtype"] == "float16",
                                           lambda b: b"\x00\x7e" + b[2:]),
    "inf in a stored float": _payload_edit(lambda s: s["coder"] == "raw" and s["dtype"] == "float16",
                                           lambda b: b"\x00\x7c" + b[2:]),
    "training samples per ray as text": _edit(lambda h: h["config"]["model"].update(train_samples_per_ray="12")),
}


def test_train_metadata_of_the_wrong_type_is_refused_where_it_is_read(trained):
    """``meta`` is free-form, but what ns-viewer / nscodec eval read from ``meta.train`` is checked there."""
    from nscodec.coding.container import read_nsc
    from nscodec.io import train_record

    _, _, _, path = trained
    assert train_record(read_nsc(path))["data"]
    for key, value in (("data", -1e300), ("camera_res_scale_factor", None), ("camera_res_scale_factor", 0.0),
                       ("fingerprint", 1)):
        bad = _edit(lambda h: h["meta"]["train"].update({key: value}))(path.read_bytes())
        with pytest.raises(NscFormatError, match=f"meta.train.{key}"):
            train_record(read_nsc(bad))


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_are_rejected_with_one_checked_error(trained, case):
    from nscodec.io import load_model

    codec, _, _, path = trained
    bad = BAD_FILES[case](path.read_bytes())
    if bad is None:
        pytest.skip(f"{codec} files have nothing {case!r} applies to")
    try:
        load_model(bad)
    except UnvalidatedDecodeError as err:  # caught only by the safety net: a check is missing
        pytest.fail(f"{case}: no explicit check caught it: {err}")
    except NscFormatError:
        return
    pytest.fail(f"{case}: decoded without an error")


def _tensor_bytes(model: torch.nn.Module) -> int:
    """Bytes of every tensor a model holds: parameters, buffers and plain tensor attributes (e.g. decoded planes)."""
    seen, total = set(), 0
    for mod in model.modules():
        for t in [*mod._parameters.values(), *mod._buffers.values(), *(v for v in vars(mod).values() if isinstance(v, torch.Tensor))]:
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
    return total


def test_the_declared_decode_bytes_bound_what_a_decoded_model_holds(trained):
    """``nsc_decode_bytes`` (what validate_config sums against the decode limit) is an upper bound of the tensors
    of the model a file decodes to, rendered once (caches filled)."""
    from nscodec.io import load_model

    _, _, _, path = trained
    model, _ = load_model(path)
    render(model, rays(64))
    declared = sum(model.config.nsc_decode_bytes().values())
    assert _tensor_bytes(model) <= declared, (_tensor_bytes(model), model.config.nsc_decode_bytes())


def test_the_decode_limit_refuses_a_config_before_building_and_can_be_raised(trained, monkeypatch):
    from nscodec.coding.container import read_nsc
    from nscodec.io import MAX_DECODE_BYTES_ENV, build_model

    _, _, _, path = trained
    need = sum(build_model(read_nsc(path)).config.nsc_decode_bytes().values())
    monkeypatch.setenv(MAX_DECODE_BYTES_ENV, str(need - 1))
    with pytest.raises(NscFormatError, match=f"decoding would allocate {need:,} bytes .* over the limit of {need - 1:,}"):
        build_model(read_nsc(path))
    monkeypatch.setenv(MAX_DECODE_BYTES_ENV, str(need))
    build_model(read_nsc(path))
    monkeypatch.setenv(MAX_DECODE_BYTES_ENV, "lots")
    with pytest.raises(Exception, match="must be a positive number of bytes"):
        build_model(read_nsc(path))


@pytest.mark.parametrize("codec", sorted(CONFORMANCE))
def test_every_numeric_config_field_is_bounded_or_declared_unread(codec):
    """A decoder reads a config field only within the range its class declares; a field no decoder reads is declared
    so (``nsc_unread_fields``, checked below). Adding a numeric field forces that choice."""
    import dataclasses

    from nscodec.io import codec_config_class

    cfg = codec_config_class(codec)()
    for name in ("near_plane", "far_plane", "alpha_threshold", "train_samples_per_ray", "contraction_inner_radius"):
        setattr(cfg, name, 1)  # optional fields: bounded once they hold a value
    limits, unread = cfg.nsc_limits(), type(cfg).nsc_unread_fields
    open_fields = []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        numeric = isinstance(value, (int, float, list, tuple)) and not isinstance(value, bool)
        if numeric and not f.name.startswith("_") and f.name not in limits and f.name not in unread:
            open_fields.append(f.name)
    assert open_fields == [], f"{codec}: numeric fields neither bounded nor declared unread: {open_fields}"
    assert not (set(limits) & set(unread))


def test_fields_declared_unread_do_not_change_what_a_file_decodes_to(trained):
    """Every ``nsc_unread_fields`` entry at an extreme value of its type: the file decodes to the same render."""
    from nscodec.io import load_model

    codec, _, _, path = trained
    model, _ = load_model(path)
    bundle = rays(64, seed=3)
    want = render(model, bundle)
    extreme = {}
    for name in type(model.config).nsc_unread_fields:
        value = getattr(model.config, name)
        extreme[name] = 2**62 if isinstance(value, int) and not isinstance(value, bool) else -1e300
    assert extreme, f"{codec} declares no unread field"
    other, _ = load_model(_edit(lambda h: h["config"]["model"].update(extreme))(path.read_bytes()))
    assert torch.equal(render(other, bundle), want)


def test_a_level_of_detail_model_gets_the_viewer_slider_and_its_bytes(trained):
    """The one control of every level-of-detail method (:func:`nscodec.viewer.attach_lod_controls`): a slider over
    the levels and a text with the chosen level's cumulative bytes, which follows the rendered level."""
    from nscodec.io import load_model, lod_bytes
    from nscodec.viewer import attach_lod_controls, lod_label

    _, _, trainer, path = trained
    decoded, _ = load_model(path)
    if not (decoded.supports_lod and decoded.num_lods > 1):
        attach_lod_controls(decoded)
        assert getattr(decoded, "viewer_lod", None) is None
        return
    attach_lod_controls(decoded)
    table = lod_bytes(decoded)
    assert (decoded.viewer_lod.min, decoded.viewer_lod.max) == (0, decoded.num_lods - 1)
    decoded.set_lod(0)
    assert decoded.viewer_lod_bytes.value == lod_label(decoded, 0) == f"level 0/{decoded.num_lods - 1}: {table[0]:,} bytes"
    decoded.set_lod(decoded.num_lods - 1)
    assert decoded.viewer_lod_bytes.value.endswith(f"{table[-1]:,} bytes")
    live = trainer.pipeline.model  # a training run's model: the pipeline attached them
    assert live.viewer_lod is not None and live.viewer_lod_bytes is not None
