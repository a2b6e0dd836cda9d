"""Files written by earlier versions keep decoding to exactly what they decoded to when they were written.

``tests/fixtures/v0.1/`` holds one small ``.nsc`` per codec (each trained a few steps on a generated scene, as
``bench/fuzz_nsc.py`` makes its sources, at git a454191, format 1.1) and ``decoded.json``: the digest of what each decoded
to then (:func:`tests.helpers.decoded_digest`: every parameter and buffer, and what the decoder networks compute).
``codecnerf-codec.cnm`` is the shared codec its CodecNeRF file was finetuned from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import decoded_digest

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "v0.1"
EXPECTED = json.loads((FIXTURES / "decoded.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_file_from_an_earlier_version_decodes_to_the_same_model(name, monkeypatch):
    from nscodec.io import load_model

    monkeypatch.setenv("NSCODEC_CODECNERF_MODEL", str(FIXTURES / "codecnerf-codec.cnm"))
    path = FIXTURES / name
    assert path.stat().st_size == EXPECTED[name]["bytes"]
    model, nsc = load_model(path)
    assert nsc.method == EXPECTED[name]["method"]
    assert decoded_digest(model) == EXPECTED[name]["decoded_sha256"]


def test_every_codec_has_a_fixture():
    from nscodec.io import CODECS

    assert {v["method"] for v in EXPECTED.values()} == set(CODECS)
