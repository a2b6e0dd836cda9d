"""The .nsc container and the array <-> section codecs."""

from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest

from nscodec.coding import container
from nscodec.coding.cdf_tables import IntegerCDFTable
from nscodec.coding.container import PREAMBLE_SIZE, Section, read_nsc, write_nsc
from nscodec.errors import NscError, NscFormatError
from nscodec.coding.tensor_codec import decode_section, entropy_section, raw_section, zlib_section

PRE = struct.Struct("<4sHHQII")


def _sections():
    return [
        Section("coarse", b"\x01\x02\x03", "uint8", (3,), "raw", {"level": 0}),
        Section("mid", bytes(range(200)), "uint8", (200,), "raw"),
        Section("fine", b"x" * 1000, "uint8", (10, 100), "raw", {"level": 2}),
    ]


@pytest.fixture
def nsc_bytes(tmp_path):
    path = tmp_path / "a.nsc"
    write_nsc(path, "ectensorf", {"resolution": [128, 128], "lr": 0.01}, _sections(), meta={"scene": "lego"})
    return path.read_bytes()


def _parts(data: bytes):
    magic, major, minor, total, hlen, hcrc = PRE.unpack_from(data)
    header = json.loads(data[PREAMBLE_SIZE : PREAMBLE_SIZE + hlen])
    return header, data[PREAMBLE_SIZE + hlen :]


def _repack(header, payload: bytes, major=1, minor=1, header_raw=None) -> bytes:
    """A file with this header and payload and a valid checksum: what a buggy writer or a crafted file produces."""
    raw = json.dumps(header).encode() if header_raw is None else header_raw
    total = PREAMBLE_SIZE + len(raw) + len(payload)
    head = PRE.pack(b"NSC\x00", major, minor, total, len(raw), 0)
    return head[:20] + struct.pack("<I", container.header_crc(head, raw, minor)) + raw + payload


def test_roundtrip(tmp_path):
    path = tmp_path / "a.nsc"
    n = write_nsc(path, "ectensorf", {"resolution": [128, 128], "nested": {"x": None}}, _sections(), meta={"psnr": 31.5})
    assert n == path.stat().st_size
    f = read_nsc(path)
    assert f.method == "ectensorf" and f.complete and f.total_bytes == n
    assert f.config == {"resolution": [128, 128], "nested": {"x": None}} and f.meta == {"psnr": 31.5}
    assert list(f.sections) == ["coarse", "mid", "fine"]
    for orig in _sections():
        got = f.sections[orig.name]
        assert (got.payload, got.dtype, got.shape, got.coder, got.meta) == (
            orig.payload, orig.dtype, orig.shape, orig.coder, orig.meta
        )
    assert read_nsc(path.read_bytes()).sections["fine"].payload == b"x" * 1000
    f.require(["coarse", "mid", "fine"])


def test_prefix_read_returns_whole_sections_only(nsc_bytes):
    header, _ = _parts(nsc_bytes)
    base = len(nsc_bytes) - sum(s["nbytes"] for s in header["sections"])
    ends = {s["name"]: base + s["offset"] + s["nbytes"] for s in header["sections"]}
    for cut in (base, ends["coarse"] - 1, ends["coarse"], ends["mid"] + 5, len(nsc_bytes) - 1):
        with pytest.raises(NscFormatError, match="truncated"):
            read_nsc(nsc_bytes[:cut])
        f = read_nsc(nsc_bytes[:cut], allow_prefix=True)
        assert not f.complete and f.available_bytes == cut and f.total_bytes == len(nsc_bytes)
        assert list(f.sections) == [name for name, end in ends.items() if end <= cut]
        assert [s.present for s in f.index] == [end <= cut for end in ends.values()]
    full = read_nsc(nsc_bytes, allow_prefix=True)
    assert full.complete and len(full.sections) == 3
    with pytest.raises(NscFormatError, match="missing section.*'fine'.*incomplete prefix"):
        read_nsc(nsc_bytes[: ends["mid"]], allow_prefix=True).require(["coarse", "mid", "fine"])


def test_prefix_without_complete_header_is_rejected(nsc_bytes):
    with pytest.raises(NscFormatError, match="truncated header"):
        read_nsc(nsc_bytes[: PREAMBLE_SIZE + 5], allow_prefix=True)


# --- malformed files: one NscFormatError each, naming the problem ------------------------------------
def test_shorter_than_preamble(nsc_bytes):
    with pytest.raises(NscFormatError, match="too short"):
        read_nsc(nsc_bytes[:10])


def test_truncated(nsc_bytes):
    with pytest.raises(NscFormatError, match=f"truncated file: declared {len(nsc_bytes)} bytes, got {len(nsc_bytes) - 1}"):
        read_nsc(nsc_bytes[:-1])


def test_trailing_bytes(nsc_bytes):
    with pytest.raises(NscFormatError, match="1 trailing bytes"):
        read_nsc(nsc_bytes + b"\x00")


def test_bad_magic(nsc_bytes):
    with pytest.raises(NscFormatError, match="not an .nsc file"):
        read_nsc(b"PK\x03\x04" + nsc_bytes[4:])


def test_bad_version(nsc_bytes):
    bad = nsc_bytes[:4] + struct.pack("<HH", 2, 3) + nsc_bytes[8:]
    with pytest.raises(NscFormatError, match=r"unsupported .nsc format version 2\.3 \(this reader supports 1\.x\)"):
        read_nsc(bad)
    header, payload = _parts(nsc_bytes)
    assert read_nsc(_repack(header, payload, minor=7)).version == (1, 7)  # newer minor: accepted


@pytest.mark.parametrize("delta", [+1, -1])
def test_wrong_declared_length(nsc_bytes, delta):
    total = PRE.unpack_from(nsc_bytes)[3]
    bad = nsc_bytes[:8] + struct.pack("<Q", total + delta) + nsc_bytes[16:]
    with pytest.raises(NscFormatError, match="truncated" if delta > 0 else "trailing bytes"):
        read_nsc(bad)


def test_header_crc_mismatch(nsc_bytes):
    bad = bytearray(nsc_bytes)
    bad[PREAMBLE_SIZE + 3] ^= 0x20
    with pytest.raises(NscFormatError, match="header CRC mismatch"):
        read_nsc(bytes(bad))


def test_header_not_json_or_missing_keys(nsc_bytes):
    header, payload = _parts(nsc_bytes)
    with pytest.raises(NscFormatError, match="not valid UTF-8 JSON"):
        read_nsc(_repack(header, payload, header_raw=b"{not json"))
    for key in ("method", "config", "meta", "sections"):
        h = dict(header)
        del h[key]
        with pytest.raises(NscFormatError, match=f"missing key '{key}'"):
            read_nsc(_repack(h, payload))
    h = json.loads(json.dumps(header))
    del h["sections"][1]["crc32"]
    with pytest.raises(NscFormatError, match="section entry 1 is missing key 'crc32'"):
        read_nsc(_repack(h, payload))


def test_section_out_of_range_or_overlapping(nsc_bytes):
    header, payload = _parts(nsc_bytes)
    h = json.loads(json.dumps(header))
    h["sections"][2]["nbytes"] += 10
    with pytest.raises(NscFormatError, match="section 'fine': 1010 payload bytes, shape and dtype need 1000"):
        read_nsc(_repack(h, payload))
    h["sections"][2]["shape"] = [10, 101]
    with pytest.raises(NscFormatError, match="section 'fine'.*extends past the end"):
        read_nsc(_repack(h, payload))
    h = json.loads(json.dumps(header))
    h["sections"][1]["offset"] = 1
    with pytest.raises(NscFormatError, match="section 'mid'.*overlaps"):
        read_nsc(_repack(h, payload))
    h = json.loads(json.dumps(header))
    h["sections"][2]["nbytes"] -= 10
    h["sections"][2]["shape"] = [10, 99]
    with pytest.raises(NscFormatError, match="10 unreferenced bytes"):
        read_nsc(_repack(h, payload))


def test_section_crc_mismatch_names_section(nsc_bytes):
    bad = bytearray(nsc_bytes)
    bad[-500] ^= 0xFF  # inside 'fine'
    with pytest.raises(NscFormatError, match="section 'fine' CRC mismatch"):
        read_nsc(bytes(bad))


def test_require_missing_and_extra(nsc_bytes):
    f = read_nsc(nsc_bytes)
    with pytest.raises(NscFormatError, match="missing section.*'codebook'"):
        f.require(["coarse", "mid", "fine", "codebook"])
    with pytest.raises(NscFormatError, match="unexpected section.*'fine'"):
        f.require(["coarse", "mid"])
    f.require(["coarse", "mid"], optional=["fine", "other"])


def test_nonexistent_path(tmp_path):
    path = tmp_path / "nope.nsc"
    with pytest.raises(FileNotFoundError, match="nope.nsc"):
        read_nsc(path)


# --- writing ----------------------------------------------------------------------------------------
def _no_files(directory):
    return sorted(os.listdir(directory)) == []


@pytest.mark.parametrize(
    "config, meta, match",
    [
        ({"model": {"lr": np.float32(0.1)}}, None, r"config\['model'\]\['lr'\] has non-JSON-safe type numpy.float32"),
        ({"x": float("nan")}, None, r"config\['x'\] is nan"),
        ({1: "a"}, None, "non-string key 1"),
        ({}, {"arr": np.zeros(3)}, r"meta\['arr'\] has non-JSON-safe type numpy.ndarray"),
    ],
)
def test_non_json_safe_config_leaves_no_file(tmp_path, config, meta, match):
    with pytest.raises(NscError, match=match):
        write_nsc(tmp_path / "a.nsc", "m", config, _sections(), meta=meta)
    assert _no_files(tmp_path)


def test_bad_sections_rejected(tmp_path):
    with pytest.raises(NscError, match="duplicate section name 'mid'"):
        write_nsc(tmp_path / "a.nsc", "m", {}, _sections() + [Section("mid", b"", "uint8", (0,), "raw")])
    for bad in ("", "a b", "\x1b[2J", "lone\ud800", ".hidden", "x" * 129):
        with pytest.raises(NscError, match="section name must match"):
            Section(bad, b"", "uint8", (0,), "raw")
    with pytest.raises(NscError, match="coder must match"):
        Section("a", b"", "uint8", (0,), "r\naw")
    with pytest.raises(NscError, match="shape"):
        Section("a", b"", "uint8", (-1,), "raw")
    assert _no_files(tmp_path)


@pytest.mark.parametrize("unnamed", [True, False])
@pytest.mark.parametrize("fails", ["fsync", "replace"])
def test_failed_write_leaves_no_partial_or_temp_file(tmp_path, monkeypatch, fails, unnamed):
    def boom(*args):
        raise OSError("disk full")

    if not unnamed:
        monkeypatch.delattr(container.os, "O_TMPFILE", raising=False)
    monkeypatch.setattr(container.os, fails, boom)
    with pytest.raises(OSError, match="disk full"):
        write_nsc(tmp_path / "a.nsc", "m", {}, _sections(), overwrite=fails == "replace")
    assert _no_files(tmp_path)


def test_refuses_to_overwrite_unless_asked(tmp_path):
    path = tmp_path / "a.nsc"
    write_nsc(path, "first", {}, _sections())
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="refusing to overwrite.*overwrite=True"):
        write_nsc(path, "second", {}, _sections())
    assert path.read_bytes() == before
    write_nsc(path, "second", {}, _sections(), overwrite=True)
    assert read_nsc(path).method == "second"
    assert sorted(os.listdir(tmp_path)) == ["a.nsc"]


# --- array codecs ------------------------------------------------------------------------------------
def test_raw_and_zlib_sections_roundtrip_exactly(tmp_path):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 5, 6)).astype(np.float32)
    secs = [
        raw_section("w16", w, "float16"),
        raw_section("w32", w),
        zlib_section("idx", rng.integers(0, 7, (100,)), "uint8"),
        raw_section("flags", w > 0),
    ]
    write_nsc(tmp_path / "a.nsc", "m", {}, secs)
    f = read_nsc(tmp_path / "a.nsc")
    np.testing.assert_array_equal(decode_section(f.sections["w16"]), w.astype(np.float16))
    np.testing.assert_array_equal(decode_section(f.sections["w32"]), w)
    assert decode_section(f.sections["w16"]).dtype == np.float16
    np.testing.assert_array_equal(decode_section(f.sections["idx"]), decode_section(secs[2]))
    np.testing.assert_array_equal(decode_section(f.sections["flags"]), w > 0)
    assert f.sections["w16"].nbytes == w.size * 2


def test_raw_section_rejects_lossy_casts():
    with pytest.raises(NscError, match="overflow float16"):
        raw_section("a", np.array([1e5], dtype=np.float32), "float16")
    with pytest.raises(NscError, match="do not fit uint8"):
        raw_section("a", np.array([300]), "uint8")
    with pytest.raises(NscError, match="refusing to cast float"):
        raw_section("a", np.array([1.5]), "int32")


def _table(C=3):
    k = np.arange(-20, 21)
    p = np.exp(-np.abs(k) / 2.0)
    probs = np.tile(np.concatenate([p, [1e-4]]), (C, 1))
    return IntegerCDFTable.from_probabilities(probs, np.full(C, 42), np.full(C, -20), 16)


def test_entropy_section_roundtrip_axis_and_mask(tmp_path):
    rng = np.random.default_rng(1)
    sym = np.round(rng.laplace(0, 2, (5, 3, 7))).astype(np.int32)
    sym[0, 0, 0] = 10**6
    mask = rng.random(sym.shape) < 0.4
    secs = [
        entropy_section("lat", sym, _table(), channel_axis=1),
        entropy_section("masked", sym, _table(), channel_axis=-2, mask=mask),
    ]
    write_nsc(tmp_path / "a.nsc", "m", {}, secs)
    f = read_nsc(tmp_path / "a.nsc")
    out = decode_section(f.sections["lat"])
    assert out.dtype == np.int32 and out.shape == sym.shape
    np.testing.assert_array_equal(out, sym)
    np.testing.assert_array_equal(decode_section(f.sections["masked"], mask=mask), np.where(mask, sym, 0))
    assert secs[1].nbytes < secs[0].nbytes
    with pytest.raises(NscError, match="pass the same mask"):
        decode_section(f.sections["masked"])
    with pytest.raises(NscError, match="5 channels on axis 0 but the table has 3"):
        entropy_section("x", sym, _table(3), channel_axis=0)


def test_corrupt_entropy_payload_raises_format_error():
    rng = np.random.default_rng(2)
    sym = np.round(rng.laplace(0, 2, (3, 50))).astype(np.int32)
    sec = entropy_section("lat", sym, _table())
    for i in (2, 9, len(sec.payload) // 2, len(sec.payload) - 3):
        bad = bytearray(sec.payload)
        bad[i] ^= 0x41
        with pytest.raises(NscFormatError, match="section 'lat'"):
            decode_section(Section("lat", bytes(bad), sec.dtype, sec.shape, sec.coder))
    with pytest.raises(NscFormatError, match="section 'lat'"):
        decode_section(Section("lat", sec.payload[:-2], sec.dtype, sec.shape, sec.coder))
    with pytest.raises(NscFormatError, match="unknown coder 'lzma'"):
        decode_section(Section("lat", sec.payload, sec.dtype, sec.shape, "lzma"))
    with pytest.raises(NscFormatError, match="do not match shape"):
        decode_section(Section("w", b"\x00" * 7, "float32", (2,), "raw"))


def _killed_writer(target, patch: str) -> None:
    """A process writing ``target`` with ``patch`` applied, killed (SIGKILL) once it prints ``writing``."""
    import signal
    import subprocess
    import sys

    code = (
        "import os, time, sys\n"
        "from nscodec.coding import container\n"
        "from nscodec.coding.container import Section, write_nsc\n"
        f"{patch}\n"
        f"write_nsc({str(target)!r}, 'm', {{}}, [Section('a', b'x' * 100000, 'uint8', (100000,), 'raw')])\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_write_killed_midway_leaves_nothing_behind(tmp_path):
    """kill -9 while the data is being written: the file has no name yet (O_TMPFILE), so nothing is left."""
    if getattr(os, "O_TMPFILE", None) is None:
        pytest.skip("no O_TMPFILE on this platform: the named temp file path is tested below")
    target = tmp_path / "scene.nsc"
    _killed_writer(target, "container.os.fsync = lambda fd: (print('writing', flush=True), time.sleep(60))")
    assert list(tmp_path.iterdir()) == []


def test_a_named_temp_of_a_killed_write_is_removed_by_the_next_read_or_write_in_its_folder(tmp_path):
    """Where the temp file has a name (no O_TMPFILE), kill -9 between writing and renaming leaves it; the next
    nscodec read or write of any file in that folder removes it (a live writer's temp is left alone)."""
    target = tmp_path / "scene.nsc"
    _killed_writer(target, "del container.os.O_TMPFILE\n"
                           "container.os.replace = lambda a, b: (print('writing', flush=True), time.sleep(60))")
    stale = list(tmp_path.glob(".scene.nsc.*.nsc-partial"))
    assert len(stale) == 1 and not target.exists()
    live = tmp_path / f".other.nsc.{os.getppid()}.nsc-partial"  # a writer that is still running
    live.write_bytes(b"in progress")
    with pytest.raises(FileNotFoundError):
        read_nsc(tmp_path / "another.nsc")  # a command on another file of the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]
    _killed_writer(target, "del container.os.O_TMPFILE\n"
                           "container.os.replace = lambda a, b: (print('writing', flush=True), time.sleep(60))")
    write_nsc(tmp_path / "b.nsc", "m", {}, _sections())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["b.nsc", live.name])


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_written_files_respect_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        write_nsc(tmp_path / "a.nsc", "m", {}, _sections())
    finally:
        os.umask(old)
    assert (tmp_path / "a.nsc").stat().st_mode & 0o777 == 0o666 & ~umask


def test_header_nesting_and_huge_shapes_are_refused(nsc_bytes):
    header, payload = _parts(nsc_bytes)
    raw = json.dumps(header).encode()
    deep = raw[:-1] + b',"x":' + b"[" * 5000 + b"]" * 5000 + b"}"
    with pytest.raises(NscFormatError, match="nests"):
        read_nsc(_repack(None, payload, header_raw=deep))
    h = json.loads(json.dumps(header))
    h["sections"][0]["shape"] = [2**64]
    with pytest.raises(NscFormatError, match="shape must be a list"):
        read_nsc(_repack(h, payload))
    h["sections"][0]["shape"] = [1 << 20, 1 << 20]
    with pytest.raises(NscFormatError, match="elements"):
        read_nsc(_repack(h, payload))


def test_version_and_lengths_are_under_the_header_checksum(nsc_bytes):
    assert read_nsc(nsc_bytes).version == (1, 1)
    for offset, fmt, delta in ((6, "<H", 4096), (6, "<H", -1), (16, "<I", 0)):
        bad = bytearray(nsc_bytes)
        struct.pack_into(fmt, bad, offset, struct.unpack_from(fmt, bad, offset)[0] + delta)
        if bytes(bad) == nsc_bytes:
            continue
        with pytest.raises(NscFormatError):
            read_nsc(bytes(bad))
    # a file of the original layout (1.0: the CRC covers the header only) still reads
    header, payload = _parts(nsc_bytes)
    assert read_nsc(_repack(header, payload, minor=0)).version == (1, 0)


def test_dtype_must_be_one_the_coder_produces(nsc_bytes):
    header, payload = _parts(nsc_bytes)
    h = json.loads(json.dumps(header))
    h["sections"][0]["coder"] = "ans"
    with pytest.raises(NscFormatError, match="not one coder 'ans' produces"):
        read_nsc(_repack(h, payload))


def test_zlib_stream_with_trailing_bytes_is_refused():
    sec = zlib_section("z", np.arange(100, dtype=np.int32))
    assert np.array_equal(decode_section(sec), np.arange(100))
    bad = Section("z", sec.payload + b"\x00", sec.dtype, sec.shape, "zlib")
    with pytest.raises(NscFormatError, match="after the end of the zlib stream"):
        decode_section(bad)
    with pytest.raises(NscFormatError, match="dtype 'int32', expected 'float16'"):
        decode_section(sec, dtype=("float16",))


@pytest.mark.parametrize("where", ["method", "section", "coder"])
@pytest.mark.parametrize("name", ["\x1b[2J\x1b[H", "lone\ud800", "a\nb", "", " x", "x" * 200])
def test_names_outside_the_documented_charset_are_refused_at_read(nsc_bytes, where, name):
    """A method, section or coder name a terminal could interpret (escape codes, newlines), a lone surrogate (which
    cannot even be printed) or an over-long one is one NscFormatError, before anything prints it."""
    header, payload = _parts(nsc_bytes)
    if where == "method":
        header["method"] = name
    else:
        header["sections"][1]["name" if where == "section" else "coder"] = name
    raw = json.dumps(header).encode()  # ensure_ascii: the surrogate travels as \\ud800, as a crafted file would
    with pytest.raises(NscFormatError, match="NAME|name|coder") as err:
        read_nsc(_repack(header, payload, header_raw=raw))
    assert "\x1b" not in str(err.value) and "\n" not in str(err.value)
    str(err.value).encode("utf-8")  # printable: no lone surrogate in the message


def test_a_json_number_that_overflows_to_infinity_is_refused_like_the_infinity_literal(nsc_bytes):
    header, payload = _parts(nsc_bytes)
    raw = json.dumps(header).replace('"lr": 0.01', '"lr": 1e999').encode()
    assert b"1e999" in raw
    with pytest.raises(NscFormatError, match="1e999 is not a finite double"):
        read_nsc(_repack(header, payload, header_raw=raw))
    with pytest.raises(NscFormatError, match="non-standard JSON constant Infinity"):
        read_nsc(_repack(header, payload, header_raw=raw.replace(b"1e999", b"Infinity")))
