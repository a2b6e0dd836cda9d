"""A pytest plugin of the test suite (``tests/conftest.py`` loads it): every test's failure is reported as that
test's failure, whatever its traceback holds."""

from __future__ import annotations

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """A failure whose traceback pytest cannot format is still reported as that test's failure, with Python's own
    rendering of the traceback, instead of an ``INTERNALERROR`` that ends the run. (An exception a signal handler
    raises — pytest-timeout's SIGALRM on a loaded machine — can carry a frame without a line number, ``tb_lineno``
    None, which pytest's formatter does not handle.)"""
    try:
        return (yield)
    except Exception as err:  # noqa: BLE001 - only while turning a test's own failure into a report
        if call.excinfo is None:
            raise
        import traceback

        from _pytest.reports import TestReport

        text = "".join(traceback.format_exception(call.excinfo.value))
        return TestReport(item.nodeid, item.location, {k: 1 for k in item.keywords}, "failed",
                          f"{text}\n(pytest could not format this traceback: {type(err).__name__}: {err})", call.when,
                          duration=call.duration, start=call.start, stop=call.stop)
