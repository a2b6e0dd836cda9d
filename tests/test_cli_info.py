"""``nscodec info``: section table output and clean exit code 2 on bad files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nscodec.cli import main
from nscodec.coding.container import Section, write_nsc
from nscodec.coding.tensor_codec import raw_section

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def nsc_path(tmp_path):
    path = tmp_path / "scene.nsc"
    sections = [
        raw_section("density.planes", np.zeros((3, 16, 16), dtype=np.float32), "float16"),
        Section("mlp.weights", b"w" * 3000, "float32", (750,), "zlib"),
    ]
    write_nsc(path, "ectensorf", {"grid": [128, 128, 128], "model": {"a": 1, "b": 2}}, sections)
    return path


def test_info_lists_sections(nsc_path, capsys):
    assert main(["info", str(nsc_path)]) == 0
    out = capsys.readouterr().out
    size = nsc_path.stat().st_size
    assert "ectensorf" in out and "1.0" in out and str(size) in out
    assert "complete:    True" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip().startswith(("density", "mlp"))}
    assert lines["density.planes"][1:5] == ["raw", "float16", "3x16x16", str(3 * 16 * 16 * 2)]
    assert lines["mlp.weights"][1:5] == ["zlib", "float32", "750", "3000"]
    assert lines["mlp.weights"][5] == f"{100 * 3000 / size:.1f}%"
    assert "grid" in out and "{2 keys}" in out  # config summary


def test_info_on_prefix_reports_incomplete(nsc_path, tmp_path, capsys):
    cut = tmp_path / "cut.nsc"
    cut.write_bytes(nsc_path.read_bytes()[:-10])
    assert main(["info", str(cut)]) == 0
    out = capsys.readouterr().out
    assert "complete:    False" in out and "missing" in out


@pytest.mark.parametrize(
    "content, message",
    [(b"definitely not an nsc file", "not an .nsc file"), (None, "trailing bytes")],
)
def test_info_corrupt_file_exits_2_with_one_line(nsc_path, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.nsc"
    bad.write_bytes(content if content is not None else nsc_path.read_bytes() + b"junk")
    assert main(["info", str(bad)]) == 2
    captured = capsys.readouterr()
    err_lines = captured.err.strip().splitlines()
    assert len(err_lines) == 1 and err_lines[0].startswith("nscodec: error: ") and message in err_lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_info_missing_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "missing.nsc"
    assert main(["info", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nscodec: error: ") and "missing.nsc" in err and len(err.strip().splitlines()) == 1


def test_cli_subprocess_has_no_traceback(tmp_path):
    bad = tmp_path / "bad.nsc"
    bad.write_bytes(b"NSC\x00" + b"\x00" * 30)
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run(
        [sys.executable, "-m", "nscodec.cli", "info", str(bad)], capture_output=True, text=True, env=env, cwd=REPO
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("nscodec: error: ") and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def _fresh(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)


def test_info_does_not_import_torch(nsc_path):
    r = _fresh(f"import sys\nfrom nscodec.cli import main\nrc = main(['info', {str(nsc_path)!r}])\n"
               "print('RESULT', rc, 'torch' in sys.modules)")
    assert "RESULT 0 False" in r.stdout, r.stdout + r.stderr


def test_export_to_an_existing_target_fails_before_importing_nerfstudio(tmp_path):
    (tmp_path / "config.yml").write_text("x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "scene.nsc").write_bytes(b"x")
    r = _fresh("import sys\nfrom nscodec.cli import main\n"
               f"rc = main(['export', '--load-config', {str(tmp_path / 'config.yml')!r}, '--output-dir', {str(tmp_path / 'out')!r}])\n"
               "print('RESULT', rc, 'nerfstudio' in sys.modules or 'torch' in sys.modules)")
    assert "RESULT 2 False" in r.stdout and "already exists" in r.stderr, r.stdout + r.stderr


def test_info_escapes_everything_unprintable_a_file_carries(tmp_path):
    """Keys and values of a file's config and meta are printed escaped: no escape code reaches the terminal, and a
    lone surrogate does not crash the output (run with a strict UTF-8 stdout, as a terminal has)."""
    import json

    from tests.test_container import _parts, _repack

    path = tmp_path / "evil.nsc"
    write_nsc(path, "ectensorf", {"\x1b[2J": "\x1b]0;pwned\x07", "k": ["SURROGATE"]}, [Section("a", b"x", "uint8", (1,), "raw")],
              meta={"note\n": "\u202etxt.exe"})
    header, payload = _parts(path.read_bytes())  # a crafted file: JSON carries a lone surrogate as an escape
    path.write_bytes(_repack(header, payload, header_raw=json.dumps(header).replace("SURROGATE", "\\ud800").encode()))
    out = subprocess.run([sys.executable, "-m", "nscodec.cli", "info", str(path)], capture_output=True,
                         env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, cwd=REPO)
    assert out.returncode == 0, out.stderr.decode()
    text = out.stdout.decode("utf-8")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\ud800" in text
