"""Exception hierarchy of the nscodec coding core.

Every error that the coding core raises on *bad input* (a malformed ``.nsc`` file, an invalid CDF table,
an undecodable entropy-coded stream, a non-JSON-safe config, an unknown coder name, ...) is an
:class:`NscError`. Callers (the ``nscodec`` CLI, nerfstudio integration) catch this one base class and print
its message; they never need to show a traceback for a user-facing problem.

:class:`NscError` subclasses :class:`ValueError`, so code that already guards against ``ValueError`` keeps
working.
"""

from __future__ import annotations

__all__ = ["NscError", "NscFormatError", "EntropyCodingError"]


class NscError(ValueError):
    """Base class of every user-facing error raised by :mod:`nscodec.coding`.

    Raised directly for invalid arguments (unknown quantization mode, unknown coder name, a config that
    is not JSON-safe, symbols that do not match a CDF table's channel count, ...). The message names the
    offending argument, key or value.
    """


class NscFormatError(NscError):
    """A malformed or unsupported ``.nsc`` file, or a malformed serialized structure inside one.

    This is THE exception that every malformed input raises: truncated or over-long files, bad magic,
    unsupported format version, header CRC or JSON errors, section offsets out of range or overlapping,
    section CRC mismatches (the section is named), missing or unexpected sections, and garbage bytes
    passed to :meth:`nscodec.coding.cdf_tables.IntegerCDFTable.from_bytes`.
    """


class EntropyCodingError(NscError):
    """An entropy-coded stream could not be encoded or decoded consistently.

    Raised when a coded stream is truncated, carries trailing garbage, declares a symbol count that does
    not match the caller's channel index array, or leaves the entropy coder in an inconsistent final state
    (which is how corrupted ANS streams are detected).
    """
