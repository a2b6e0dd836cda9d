"""Every user-facing error nscodec raises, in one module at the bottom of the house (it imports nothing of nscodec).

A problem with what a user gave — a malformed or crafted ``.nsc`` file, a broken dataset, a bad sweep spec, an
argument out of range — is one exception of this family with a message naming what is wrong; the ``nscodec`` CLI, the
nerfstudio integration and ``nscodec rd`` catch :class:`NscError` and print that message, never a traceback.
:class:`NscError` subclasses :class:`ValueError`, so code that already guards against ``ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = ["NscError", "NscFormatError", "EntropyCodingError", "UnvalidatedDecodeError", "NscDataError", "SpecError"]


class NscError(ValueError):
    """Base class of every user-facing error of nscodec.

    Raised directly for invalid arguments (unknown quantization mode, unknown coder name, a config that is not
    JSON-safe, symbols that do not match a CDF table's channel count, ...). The message names the offending
    argument, key or value.
    """


class NscFormatError(NscError):
    """A malformed or unsupported ``.nsc`` file, or a malformed serialized structure inside one.

    This is THE exception that every malformed input raises: truncated or over-long files, bad magic, unsupported
    format version, header CRC or JSON errors, section offsets out of range or overlapping, section CRC mismatches
    (the section is named), missing or unexpected sections, a config outside its decodable range, and garbage bytes
    passed to :meth:`nscodec.coding.cdf_tables.IntegerCDFTable.from_bytes`.
    """


class EntropyCodingError(NscError):
    """An entropy-coded stream could not be encoded or decoded consistently.

    Raised when a coded stream is truncated, carries trailing garbage, declares a symbol count that does not match
    the caller's channel index array, or leaves the entropy coder in an inconsistent final state (which is how
    corrupted ANS streams are detected).
    """


class UnvalidatedDecodeError(NscFormatError):
    """A malformed file that no explicit check caught (the decoder failed inside). Users see one clear message;
    the fuzz bench (``bench/fuzz_nsc.py``) counts these apart, as checks to add."""


class NscDataError(NscError):
    """A dataset nscodec cannot train or evaluate on: a missing split or image, an empty split, a non-finite pose,
    an unreadable or wrongly sized image or mask. The message names the file and frame."""


class SpecError(NscError):
    """A bad sweep specification (unknown method, unknown or ill-typed setting, missing scene, ...); the message
    names what is wrong. Raised before anything is trained or written."""
