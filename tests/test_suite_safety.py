"""The test suite's own safety net (:mod:`tests.pytest_safety`)."""

from __future__ import annotations

import os
from pathlib import Path

pytest_plugins = ["pytester"]
ROOT = Path(__file__).resolve().parents[1]


def test_a_failure_pytest_cannot_format_is_that_tests_failure_not_an_internal_error(pytester, monkeypatch):
    """A traceback entry without a line number (what a signal-raised timeout can carry) made pytest's formatter raise
    and end the run with INTERNALERROR; with the plugin the test fails with its own message and the run goes on."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pytester.makepyfile(test_inner="""
import _pytest._code.code as code

def test_boom(monkeypatch):
    monkeypatch.setattr(code.TracebackEntry, "lineno", property(lambda self: None - 1))
    raise RuntimeError("the real failure")

def test_next():
    pass
""")
    res = pytester.runpytest_subprocess("-p", "tests.pytest_safety", "-p", "no:cacheprovider")
    out = res.stdout.str()
    assert "INTERNALERROR" not in out, out
    res.assert_outcomes(failed=1, passed=1)
    assert "RuntimeError: the real failure" in out and "could not format this traceback" in out
