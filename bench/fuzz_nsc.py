"""Fuzz the ``.nsc`` decode path: mutated copies of real files of every codec, each case in a forked process with a
time and memory cap, counted by outcome and mutation class.

    python bench/fuzz_nsc.py --cases 10000 --decode-cases 1000         # the full run (docs/benchmarks.md)
    python bench/fuzz_nsc.py --cases 300 --decode-cases 40 --name fuzz_nsc_smoke   # pipeline check

Sources: one small file per codec of ``nscodec.io.CODECS``, trained for a few steps on a generated scene (cached in
``bench/runs/fuzz``). Two kinds of cases:

* **container cases** (``--cases``): ``read_nsc`` + ``decode_section`` of every section (what ``nscodec info`` and
  every decoder read first);
* **decode cases** (``--decode-cases``): ``nscodec.io.load_model`` of the mutated bytes, then a render of 16 rays.

Mutation classes: ``bitflip`` (1–8 random bits anywhere), ``truncate``, ``insert`` / ``delete`` (bytes at a random
offset), ``payload`` (random bytes over part of one section's payload), ``preamble`` (a version, length or CRC field),
and CRC-recomputed header edits — what a buggy writer or a crafted file produces: ``header_value`` (a random JSON
value replaced by a hostile one: huge, negative, non-finite, of another type), ``header_key`` (a key removed or an
unknown one added), ``header_section`` (a section entry's shape/dtype/coder/offset/nbytes), ``header_meta`` (a
section's metadata), ``header_config`` (a model-config field set out of its range), ``header_deep`` (deep nesting).

``header_multi`` applies 2–4 header edits at once, among them size-bearing combinations: several of a codec's sized
config fields (``nsc_limits``) at or near their upper bounds together, each within its own range (what a per-field
check cannot see, only the derived decode-bytes limit).

Every "ok" is verified against the decode of the unmutated file (a reference computed once per codec and kind):
container cases compare every decoded section array, decode cases a render of 64 rays (also checked finite). Each
mutation says what a correct decoder must do with it: refuse it (``must_fail``), decode it to exactly the unmutated
result (``same``: free-form metadata, keys a decoder ignores), or either (a valid edit that may change the model).

Outcomes: ``nsc_error`` (one NscFormatError/NscError), ``ok_identical`` (decoded to the reference), ``ok_changed``
(decoded, finite, different, from an edit allowed to change it), ``other_exception`` (any other exception, or an error
caught only by the decoder's safety net, ``UnvalidatedDecodeError``), ``crash`` (killed by a signal or exiting without
a report), ``hang`` (over the time cap), ``silent_wrong`` (decoded although it must fail; or a non-finite render; or a
``same`` edit that changed the result). Target: all of the last four 0. Each case also reports the peak resident
memory it added (``peak_mb``, VmHWM after resetting it at the case's start); target ≤ 1 GB.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import resource
import select
import signal
import struct
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from bench.common import ROOT, git_commit, record, update_doc_section  # noqa: E402

RUNS = ROOT / "bench" / "runs" / "fuzz"
HOSTILE = [0, -1, 1, 7, 2**31, 2**63, 2**64, -(2**63), 1e300, -1e300, 1e-300, 0.5, -0.5, "", "forty", None, True, False,
           [], {}, [1, 2], [[1e300]], {"a": 1}]


# ----------------------------------------------------------------------------------------------------- sources
def make_sources() -> Dict[str, Path]:
    """One small ``.nsc`` per codec (trained a few steps on a generated scene); cached."""
    RUNS.mkdir(parents=True, exist_ok=True)
    out = {codec: RUNS / f"{codec}.nsc" for codec in _codecs()}
    if all(p.is_file() for p in out.values()):
        return out
    import subprocess

    subprocess.run([sys.executable, __file__, "--make-sources"], check=True)
    return out


def _codecs() -> List[str]:
    from nscodec.io import CODECS

    return sorted(CODECS)


def _train_sources() -> None:
    import torch

    from nscodec.codecnerf.pretrain import find_scenes, pretrain
    from nscodec.codecnerf.network import CodecArch
    from nscodec.tools.demo import train_in_process
    from nscodec.io import export_model
    from nscodec.data import training_meta
    from nscodec.scenes import generate_blender_scene
    from nscodec.scenes.procedural import generate_corpus
    from nscodec_configs.codecnerf_configs import codecnerf_trainer_config
    from nscodec_configs.method_configs import ectensorf_trainer_config, tensorf_trainer_config
    from nscodec_configs.shacira_configs import shacira_trainer_config
    from nscodec_configs.vqad_configs import vqad_trainer_config

    torch.set_num_threads(1)
    scene = RUNS / "scene"
    if not (scene / "transforms_test.json").exists():
        generate_blender_scene(scene, resolution=48, n_train=16, n_val=2, n_test=3, progress=False, overwrite=True)
    cnm = RUNS / "codec.cnm"
    if not cnm.exists():
        generate_corpus(RUNS / "corpus", 2, seed=3, resolution=24, n_train=8, n_val=1, n_test=1, progress=False, overwrite=True)
        arch = CodecArch(enc_image_size=32, enc_views=6, feat_channels=8, volume_res=16, volume_channels=8, latent_dim=4,
                         codebook_size=32, up_channels=8, plane_channels=8, plane_resolutions=(16, 32), generator_hidden=8,
                         mlp_hidden=16, density_hidden=16)
        pretrain(find_scenes(RUNS / "corpus"), cnm, steps=4, rays=64, samples=16, arch=arch, progress=False)
    small = dict(occupancy_resolution=32)
    plans = {
        "nscodec-tensorf": (tensorf_trainer_config(max_steps=40), 40, dict(init_resolution=16, final_resolution=24,
                                                                            upsampling_iters=(10,), **small)),
        "ectensorf": (ectensorf_trainer_config(stage1_steps=20, stage2_steps=20), 40, dict(
            init_resolution=16, final_resolution=24, upsampling_iters=(8,), importance_batches=2, latent_prefit_steps=10,
            use_mask=True, **small)),
        "shacira": (shacira_trainer_config(max_steps=30, rays=256, num_levels=4, max_res=32, log2_hashmap_size=10, **small), 30, {}),
        "vqad": (vqad_trainer_config(max_steps=30), 30, dict(base_resolution=4, num_levels=3, **small)),
        "codecnerf": (codecnerf_trainer_config(mode="peft_ec", max_steps=8, codec_model_path=cnm, **small), 8, {}),
    }
    for codec, (cfg, steps, overrides) in plans.items():
        target = RUNS / f"{codec}.nsc"
        if target.exists():
            continue
        _, trainer, _ = train_in_process(scene, RUNS / "train" / codec, steps=steps, rays=256, progress=False,
                                         trainer_config=cfg, **overrides)
        export_model(trainer.pipeline.model, target, meta=training_meta(trainer.pipeline.config))
        print(f"[fuzz] source {target} ({target.stat().st_size:,} bytes)", flush=True)


# --------------------------------------------------------------------------------------------------- mutations
PRE = struct.Struct("<4sHHQII")


def split_file(data: bytes) -> Tuple[Dict[str, Any], bytes]:
    _, _, _, _, hlen, _ = PRE.unpack_from(data)
    return json.loads(data[24:24 + hlen]), data[24 + hlen:]


def pack(header: Any, payload: bytes, raw: Optional[bytes] = None) -> bytes:
    from nscodec.coding.container import header_crc

    raw = json.dumps(header).encode() if raw is None else raw
    head = PRE.pack(b"NSC\x00", 1, 1, 24 + len(raw) + len(payload), len(raw), 0)
    return head[:20] + struct.pack("<I", header_crc(head, raw, 1)) + raw + payload


def _paths(v: Any, prefix: Tuple = ()) -> List[Tuple]:
    out = [prefix]
    if isinstance(v, dict):
        for k, x in v.items():
            out += _paths(x, prefix + (k,))
    elif isinstance(v, list) and len(v) <= 64:
        for i, x in enumerate(v):
            out += _paths(x, prefix + (i,))
    elif isinstance(v, list):
        for i in (0, len(v) - 1):
            out += _paths(v[i], prefix + (i,))
    return out


def _get(h, path):
    for k in path:
        h = h[k]
    return h


def _set(h, path, value):
    _get(h, path[:-1])[path[-1]] = value


def _config_limits(codec: str) -> Dict[str, Tuple[float, float]]:
    from nscodec.io import codec_config_class

    return codec_config_class(codec)().nsc_limits()


#: section-meta keys a codec reads and validates (a change to a hostile value must be refused)
VALIDATED_META = {"lod", "resolution", "grid_aabb", "bbox", "exp", "lo", "step", "shape", "plane_resolution", "count",
                  "quantizer", "sha256", "version"}


def mutate(rng: random.Random, codec: str, data: bytes, kind: str) -> Tuple[Optional[bytes], str, Optional[bool], str]:
    """``(mutated bytes, mutation class, must_fail, description)``; ``must_fail`` True when the decoder of this
    ``kind`` must refuse the result (container cases: the container's own fields; decode cases: also the model's
    config and section metadata), None when it may decode (a valid edit, or a prefix of a streamable file)."""
    out = _mutate(rng, codec, data, kind)
    return out if len(out) == 4 else (*out, "")


def _mutate(rng: random.Random, codec: str, data: bytes, kind: str):
    n = len(data)
    header, payload = split_file(data)
    lod = header["method"] in ("shacira", "vqad")
    cls = rng.choice(["bitflip", "truncate", "insert", "delete", "payload", "preamble", "header_value", "header_key",
                      "header_section", "header_meta", "header_config", "header_deep", "header_multi", "header_multi"]
                     if kind == "decode" else
                     ["bitflip", "bitflip", "truncate", "insert", "delete", "payload", "preamble", "header_value",
                      "header_key", "header_section", "header_meta", "header_deep"])
    if cls == "bitflip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(n)
            b[i] ^= 1 << rng.randrange(8)
        return (bytes(b), cls, True) if bytes(b) != data else (None, cls, None)
    if cls == "truncate":
        k = rng.randrange(n)
        return data[:k], cls, (None if (lod and kind == "decode") else True), f"first {k} of {n} bytes"
    if cls == "insert":
        i = rng.randrange(n + 1)
        return data[:i] + bytes(rng.randrange(256) for _ in range(rng.randint(1, 16))) + data[i:], cls, True
    if cls == "delete":
        i, k = rng.randrange(n), rng.randint(1, 16)
        # shorter than declared: a streamable file's decoder reads it as a prefix (whole sections only)
        return data[:i] + data[i + k:], cls, (None if (lod and kind == "decode") else True), f"{k} bytes at {i} of {n}"
    if cls == "payload":
        base = n - len(payload)
        sec = rng.choice([s for s in header["sections"] if s["nbytes"]])
        a = base + sec["offset"] + rng.randrange(sec["nbytes"])
        k = rng.randint(1, min(64, base + sec["offset"] + sec["nbytes"] - a))
        new = bytes(rng.randrange(256) for _ in range(k))
        out = data[:a] + new + data[a + k:]
        return (out, cls, True) if out != data else (None, cls, None)
    if cls == "preamble":
        b = bytearray(data)
        field = rng.choice([(4, "<H"), (6, "<H"), (8, "<Q"), (16, "<I"), (20, "<I")])
        off, fmt = field
        old = struct.unpack_from(fmt, b, off)[0]
        new = rng.choice([0, 1, 2, old + 1, old - 1 if old else 3, 4096, (1 << (8 * struct.calcsize(fmt))) - 1])
        struct.pack_into(fmt, b, off, new & ((1 << (8 * struct.calcsize(fmt))) - 1))
        return (bytes(b), cls, True) if bytes(b) != data else (None, cls, None)
    h = copy.deepcopy(header)
    if cls == "header_multi":
        return _multi(rng, codec, h, payload, kind)
    if cls == "header_deep":
        raw = json.dumps(h).encode()
        depth = rng.choice([40, 200, 1000, 5000])
        return pack(None, payload, raw[:-1] + b',"deep":' + b"[" * depth + b"]" * depth + b"}"), cls, True
    if cls == "header_key":
        paths = [p for p in _paths(h) if p and isinstance(_get(h, p[:-1]), dict)]
        p = rng.choice(paths)
        if rng.random() < 0.5:
            del _get(h, p[:-1])[p[-1]]
            must, what = _required_key(p, kind), f"del {p}"
        else:
            _get(h, p[:-1])["nscodec_fuzz_unknown"] = 1
            # an unknown config field must be refused when decoding; elsewhere unknown keys are ignored
            if kind == "decode" and p[:2] == ("config", "model") and len(p) == 3:
                must = True
            else:
                must = "same" if p[0] == "meta" or (kind == "container" and p[0] == "config") else None
            what = f"add key under {p[:-1]}"
        return pack(h, payload), cls, must, what
    if cls == "header_section":
        i = rng.randrange(len(h["sections"]))
        key = rng.choice(["shape", "dtype", "coder", "offset", "nbytes", "crc32", "name"])
        old = h["sections"][i][key]
        new = rng.choice({"shape": [[2**64], [-1], [0], [1 << 40], [3, 1 << 30], old + [1] if isinstance(old, list) else [1], "x"],
                          "dtype": ["int16", "float64", "bool", "uint8", "int64", "object", 5],
                          "coder": ["raw", "zlib", "zstd", "ans", "ctx3d", "bogus", None],
                          "offset": [0, 1, -1, 2**62], "nbytes": [0, 1, -1, 2**62], "crc32": [0, 1, -1],
                          "name": ["", "occupancy", "x", 5]}[key])
        if new == old:
            return None, cls, None
        entropy = h["sections"][i]["coder"] not in ("raw", "zlib", "zstd", "ctx3d")
        empty = h["sections"][i]["nbytes"] == 0 and isinstance(h["sections"][i]["shape"], list) and 0 in h["sections"][i]["shape"]
        if key == "dtype" and kind == "container" and empty and new in ("int64", "bool", "int16", "float64"):
            h["sections"][i][key] = new  # an empty section of another dtype: the container cannot tell
            return pack(h, payload), cls, None, f"sections[{i}].dtype: {old} -> {new} (empty section)"
        if key == "dtype" and kind == "container" and isinstance(new, str) and (
                (_itemsize(new) == _itemsize(old) and not entropy and new in ("int16", "uint8", "int64", "float64", "bool"))
                or (entropy and {old, new} <= {"int32", "int64"})):
            h["sections"][i][key] = new  # a retype the container allows; the codec's decoder must refuse it
            return pack(h, payload), cls, None, f"sections[{i}].dtype: {old} -> {new}"
        if key == "shape" and kind == "container" and isinstance(new, list) and isinstance(old, list) and \
                all(isinstance(d, int) and d >= 0 for d in new) and math.prod(new) == math.prod(old):
            h["sections"][i][key] = new  # a reshape: a valid container; the codec's decoder must refuse it
            return pack(h, payload), cls, None, f"sections[{i}].shape: {old} -> {new}"
        h["sections"][i][key] = new
        # a renamed section is a valid container (names are free) that no codec may accept
        must = True if key != "name" or kind == "decode" or not isinstance(new, str) or new == "" else None
        if key == "name" and kind == "container" and isinstance(new, str) and new in {s["name"] for s in h["sections"][:i] + h["sections"][i + 1:]}:
            must = True  # a duplicate name
        return pack(h, payload), cls, must, f"sections[{i}].{key}: {old!r} -> {new!r}"
    if cls == "header_meta":
        secs = [s for s in h["sections"] if s["meta"]]
        if not secs:
            return None, cls, None
        sec = rng.choice(secs)
        paths = [p for p in _paths(sec["meta"]) if p]
        p = rng.choice(paths)
        new = rng.choice(HOSTILE)
        old = _get(sec["meta"], p)
        if new == old and type(new) is type(old):
            return None, cls, None
        _set(sec["meta"], p, new)
        hostile = not _harmless_same_type(old, new)
        must = True if (kind == "decode" and p[0] in VALIDATED_META and hostile) else None
        return pack(h, payload), cls, must, f"{sec['name']}.meta{list(p)}: {str(old)[:40]} -> {new!r}"
    if cls == "header_config":
        cfg = h["config"]["model"]
        limits = _config_limits(codec)
        key = rng.choice(sorted(limits))
        lo, hi = limits[key]
        cfg[key] = rng.choice([hi * 4 + 1, -1 - abs(lo), 1e300, "forty", None, [1], lo - 1 if lo > 0 else -5])
        return pack(h, payload), cls, True, f"config.model.{key} = {cfg[key]!r}"
    # header_value: any value anywhere in the header replaced by a hostile one
    paths = [p for p in _paths(h) if p]
    p = rng.choice(paths)
    old = _get(h, p)
    new = rng.choice(HOSTILE)
    if new == old and type(new) is type(old):
        return None, cls, None
    _set(h, p, new)
    return pack(h, payload), cls, _must_fail_value(codec, p, old, new, kind), f"{list(p)}: {str(old)[:40]} -> {new!r}"


def _multi(rng: random.Random, codec: str, h: Dict[str, Any], payload: bytes, kind: str):
    """2–4 edits at once: a size-bearing combination (sized config fields near their upper bounds together, each in
    range) or hostile values at random places. Must fail when any single edit must; ``same`` when all are ``same``."""
    cfg, limits = h["config"]["model"], _config_limits(codec)
    what, musts = [], []
    if rng.random() < 0.5:  # size-bearing: every chosen field stays inside its own range
        sized = [k for k, (lo, hi) in sorted(limits.items()) if isinstance(cfg.get(k), int) and not isinstance(cfg.get(k), bool)
                 and hi >= 2 and k in cfg]
        for key in rng.sample(sized, min(len(sized), rng.randint(2, 4))):
            lo, hi = limits[key]
            cfg[key] = int(rng.choice([hi, hi, max(lo, hi // 2), max(lo, int(hi ** 0.5))]))
            what.append(f"config.model.{key} = {cfg[key]}")
        return pack(h, payload), "header_multi", None, "; ".join(what)
    paths = [p for p in _paths(h) if p]
    for p in rng.sample(paths, min(len(paths), rng.randint(2, 4))):
        try:
            old = _get(h, p)
        except (KeyError, IndexError, TypeError):  # an earlier edit replaced a parent
            continue
        new = rng.choice(HOSTILE)
        if new == old and type(new) is type(old):
            continue
        _set(h, p, new)
        musts.append(_must_fail_value(codec, p, old, new, kind))
        what.append(f"{list(p)}: {str(old)[:30]} -> {new!r}")
    if not what:
        return None, "header_multi", None
    must = True if True in musts else ("same" if all(m == "same" for m in musts) else None)
    return pack(h, payload), "header_multi", must, "; ".join(what)


def _itemsize(dtype: Any) -> int:
    return {"bool": 1, "int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "float16": 2, "int32": 4, "uint32": 4,
            "float32": 4, "int64": 8, "uint64": 8, "float64": 8}.get(dtype, -1)


def _harmless_same_type(old: Any, new: Any) -> bool:
    """Whether ``new`` is a plausible value where the file had ``old``: the same JSON kind (numbers are one kind for
    float fields), finite and within float32 (float fields) or 2^24 (int fields). A valid crafted edit may still
    change the decoded model; only values that are not plausible must be refused."""
    num = (int, float)
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, int):
        return isinstance(new, int) and abs(new) <= 1 << 24
    if isinstance(old, float):
        return isinstance(new, num) and math.isfinite(new) and abs(new) <= 3.4e38
    if old is None:
        return True
    return type(old) is type(new) and not isinstance(new, (list, dict))


def _required_key(p: Tuple, kind: str) -> Optional[bool]:
    if p[0] in ("method", "config", "sections", "meta") and len(p) == 1:
        return True
    if p[0] == "sections" and len(p) == 3:  # a key of a section entry
        return True
    if kind == "container":
        return None
    if p[0] == "config" and len(p) == 2 and p[1] in ("model", "scene_box", "num_train_data"):
        return True
    if p[0] == "sections" and len(p) >= 4 and p[3] in VALIDATED_META:
        return True
    return None


def _must_fail_value(codec: str, p: Tuple, old: Any, new: Any, kind: str) -> Optional[bool]:
    """Whether replacing header value ``p`` (``old`` → ``new``) must be refused by a decoder of ``kind``."""
    if p[0] == "sections" and len(p) >= 3 and p[2] == "name" and kind == "container":
        return True if not isinstance(new, str) or new == "" else None
    if p[0] == "meta":  # free-form file metadata: no decoder reads it (ns-viewer, nscodec eval check what they use)
        return True if len(p) == 1 else "same"
    if p[0] in ("method", "sections") and (len(p) <= 3 and not (len(p) == 3 and p[2] == "meta")):
        if p[0] == "method" and kind == "container":
            return True if not isinstance(new, str) or new == "" else None
        return True
    if kind == "container":
        return None  # the model's config and section metadata are the codec's to check
    if p[0] == "sections" and len(p) >= 4:  # section metadata
        return True if (p[3] in VALIDATED_META and not _harmless_same_type(old, new)) else None
    if p[:2] == ("config", "scene_box") or p[:2] == ("config", "num_train_data"):
        return True if not _harmless_same_type(old, new) else None
    if p[:2] == ("config", "model") and len(p) >= 3:
        if new is None:
            return None  # valid for Optional fields (the config's types decide; header_config covers the rest)
        if type(old) is not type(new) and not (isinstance(old, float) and isinstance(new, int) and not isinstance(new, bool)):
            return True  # another JSON type than the field's
        limits = _config_limits(codec)
        if p[2] in limits and isinstance(new, (int, float)) and not isinstance(new, bool):
            lo, hi = limits[p[2]]
            return True if not lo <= new <= hi else None
        if isinstance(new, float) and not math.isfinite(new):
            return True
    if p[0] in ("config",) and len(p) == 1:
        return True
    return None


# ------------------------------------------------------------------------------------------------------- cases
def _status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def run_case(kind: str, data: bytes) -> Dict[str, Any]:
    """Runs in the forked child: decode, report the outcome (no exception escapes) and, when it decoded, a digest of
    what it decoded (every section's array, or a render of 64 rays) and whether that is finite."""
    import hashlib

    import numpy as np

    from nscodec.errors import NscError
    from nscodec.io import UnvalidatedDecodeError

    digest, finite = hashlib.sha256(), True
    try:
        if kind == "container":
            from nscodec.coding.container import read_nsc
            from nscodec.coding.tensor_codec import decode_section

            nsc = read_nsc(data)
            for sec in nsc.sections.values():
                try:
                    arr = decode_section(sec)
                except NscError as err:
                    if "was coded with a mask" not in str(err):
                        raise
                    arr = np.frombuffer(sec.payload, dtype=np.uint8)  # masked entropy sections: their bytes
                digest.update(sec.name.encode() + str(arr.dtype).encode() + str(arr.shape).encode() + arr.tobytes())
                if arr.dtype.kind == "f":
                    finite &= bool(np.isfinite(arr).all())
        else:
            import torch
            from nerfstudio.cameras.rays import RayBundle

            from nscodec.io import load_model

            model, _ = load_model(data)
            g = torch.Generator().manual_seed(0)
            o = torch.randn(64, 3, generator=g) * 0.1 + torch.tensor([0.0, -4.0, 0.5])
            d = torch.nn.functional.normalize(torch.tensor([0.0, 1.0, -0.1]) + 0.2 * torch.randn(64, 3, generator=g), dim=-1)
            with torch.no_grad():
                out = model.get_outputs(RayBundle(origins=o, directions=d, pixel_area=torch.ones(64, 1)))
            for key in ("rgb", "accumulation", "depth"):
                t = out[key].detach().cpu().contiguous()
                finite &= bool(torch.isfinite(t).all())
                digest.update(key.encode() + t.numpy().tobytes())
        return {"outcome": "ok", "digest": digest.hexdigest(), "finite": finite}
    except UnvalidatedDecodeError as err:
        return {"outcome": "other_exception", "error": f"UnvalidatedDecodeError: {err}"[:400]}
    except NscError as err:
        return {"outcome": "nsc_error", "error": str(err)[:200]}
    except BaseException as err:  # noqa: BLE001  (what we are counting)
        return {"outcome": "other_exception", "error": f"{type(err).__name__}: {err}"[:400]}


def forked(kind: str, data: bytes, seconds: float, mem_mb: int) -> Dict[str, Any]:
    """Run one case in a forked child under ``RLIMIT_AS`` = current size + ``mem_mb`` and a wall-clock cap."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            limit = (_status_kb("VmSize") + mem_mb * 1024) * 1024
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
            try:  # VmHWM := VmRSS now, so the peak below is this case's
                with open("/proc/self/clear_refs", "w") as fh:
                    fh.write("5")
            except OSError:
                pass
            base = _status_kb("VmRSS")
            res = run_case(kind, data)
            res["peak_mb"] = round(max(0, _status_kb("VmHWM") - base) / 1024, 1)
            os.write(w, json.dumps(res).encode()[:60000])
        finally:
            os._exit(0)
    os.close(w)
    t0 = time.monotonic()
    chunks = []
    while True:
        left = seconds - (time.monotonic() - t0)
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(r)
            return {"outcome": "hang"}
        ready, _, _ = select.select([r], [], [], left)
        if ready:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        return {"outcome": "crash", "error": f"signal {os.WTERMSIG(status)}"}
    try:
        return json.loads(b"".join(chunks))
    except ValueError:
        return {"outcome": "crash", "error": f"no report (exit {os.WEXITSTATUS(status)})"}


OUTCOMES = ("nsc_error", "ok_identical", "ok_changed", "other_exception", "crash", "hang", "silent_wrong")
BAD = ("other_exception", "crash", "hang", "silent_wrong")


def classify(res: Dict[str, Any], must: Any, reference: str) -> str:
    """The outcome of a case (module docstring) from the child's report, what the mutation demands (True: refuse;
    ``"same"``: decode to the reference; None: either) and the unmutated decode's digest."""
    outcome = res["outcome"]
    if outcome != "ok":
        return outcome
    if must is True or not res.get("finite", False):
        return "silent_wrong"
    if res.get("digest") == reference:
        return "ok_identical"
    return "silent_wrong" if must == "same" else "ok_changed"


# ---------------------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", type=int, default=10000, help="container cases")
    ap.add_argument("--decode-cases", type=int, default=600, help="full-decode cases")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=30.0, help="time cap per case")
    ap.add_argument("--mem-mb", type=int, default=1024, help="extra address space per case (MB)")
    ap.add_argument("--name", default="fuzz_nsc")
    ap.add_argument("--make-sources", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_sources:
        _train_sources()
        return
    import torch

    torch.set_num_threads(1)  # forked children inherit no thread pool
    sources = {c: p.read_bytes() for c, p in make_sources().items()}
    import nscodec.io  # noqa: F401  (imports before forking: each case then costs only its decode)
    for codec in sources:
        nscodec.io.codec_config_class(codec)
    nscodec.io.load_model(sources["nscodec-tensorf"])  # warm: first-use imports and one-time notices happen here
    from nscodec._backend import preload_kernels

    preload_kernels()  # built (or loaded) here: a child killed at its time cap mid-build would leave torch's lock behind
    from nerfstudio.cameras.rays import RayBundle  # noqa: F401

    reference = {}
    for codec, data in sources.items():  # what the unmutated files decode to: every "ok" is compared with it
        for kind in ("container", "decode"):
            res = forked(kind, data, args.seconds * 4, args.mem_mb)
            if res.get("outcome") != "ok" or not res.get("finite"):
                raise SystemExit(f"the unmutated {codec} file does not decode ({kind}): {res}")
            reference[codec, kind] = res["digest"]
    rng = random.Random(args.seed)
    counts: Dict[str, Counter] = {"container": Counter(), "decode": Counter()}
    peaks: Dict[str, List[float]] = {"container": [], "decode": []}
    by_class: Dict[str, Counter] = {}
    failures: List[Dict[str, Any]] = []
    t0 = time.time()
    plan = [("container", args.cases), ("decode", args.decode_cases)]
    done = 0
    total = args.cases + args.decode_cases
    for kind, n_cases in plan:
        i = 0
        while i < n_cases:
            codec = rng.choice(sorted(sources))
            data, cls, must_fail, what = mutate(rng, codec, sources[codec], kind)
            if data is None:
                continue
            res = forked(kind, data, args.seconds, args.mem_mb)
            outcome = classify(res, must_fail, reference[codec, kind])
            if "peak_mb" in res:
                peaks[kind].append(res["peak_mb"])
            counts[kind][outcome] += 1
            by_class.setdefault(cls, Counter())[outcome] += 1
            if outcome in BAD and len(failures) < 200:
                failures.append({"kind": kind, "codec": codec, "class": cls, "mutation": what, "outcome": outcome,
                                 "must": must_fail, "error": res.get("error", ""), "peak_mb": res.get("peak_mb")})
            i += 1
            done += 1
            if done % 250 == 0:
                bad = sum(counts[k][o] for k in counts for o in BAD)
                print(f"[fuzz] {done}/{total} cases, {time.time() - t0:.0f}s, {bad} bad", flush=True)
    summary = {o: counts["container"][o] + counts["decode"][o] for o in OUTCOMES}
    command = "python bench/fuzz_nsc.py " + " ".join(sys.argv[1:])

    def peak(kind: str) -> Dict[str, float]:
        v = sorted(peaks[kind]) or [0.0]
        return {"max": v[-1], "p99": v[min(len(v) - 1, int(0.99 * len(v)))], "median": v[len(v) // 2]}

    row = {"cases": args.cases + args.decode_cases, "container_cases": args.cases, "decode_cases": args.decode_cases,
           **summary, "verified_ok": summary["ok_identical"] + summary["ok_changed"], "seconds": round(time.time() - t0, 1),
           "seed": args.seed, "mem_cap_mb": args.mem_mb,
           "container": {o: counts["container"][o] for o in OUTCOMES}, "decode": {o: counts["decode"][o] for o in OUTCOMES},
           "peak_mb": {"container": peak("container"), "decode": peak("decode")},
           "by_class": {c: dict(v) for c, v in sorted(by_class.items())},
           "sources": {c: len(d) for c, d in sources.items()}}
    path = record(args.name, [row], command, extra={"failures": failures})
    print(json.dumps({k: row[k] for k in ("cases", "decode_cases", *OUTCOMES, "peak_mb", "seconds")}, indent=2))
    print(f"wrote {path}")
    if args.name == "fuzz_nsc":
        outcomes = OUTCOMES
        lines = [f"`{command}` (git {git_commit()}): {row['cases']:,} cases ({args.cases:,} container, "
                 f"{args.decode_cases:,} full decodes), each in a forked process (cap {args.seconds:g} s, +{args.mem_mb} MB "
                 f"of address space). Every ok is compared with the unmutated file's decode.", "",
                 "| outcome | container | decode |", "|---|---:|---:|"]
        lines += [f"| {o} | {counts['container'][o]:,} | {counts['decode'][o]:,} |" for o in outcomes]
        lines += [f"| peak memory per case, MB (median / p99 / max) | " + " | ".join(
            f"{row['peak_mb'][k]['median']:g} / {row['peak_mb'][k]['p99']:g} / {row['peak_mb'][k]['max']:g}"
            for k in ("container", "decode")) + " |"]
        lines += ["", "| mutation class | " + " | ".join(outcomes) + " |", "|---|" + "---:|" * len(outcomes)]
        lines += [f"| {c} | " + " | ".join(f"{by_class[c][o]:,}" for o in outcomes) + " |" for c in sorted(by_class)]
        update_doc_section("fuzz_nsc", "\n".join(lines))


if __name__ == "__main__":
    main()
